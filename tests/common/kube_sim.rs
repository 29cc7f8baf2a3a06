//! A stateful stand-in for kube-apiserver, for the end-to-end tests of the Kubernetes datastore
//! (no API server can run on this machine). It keeps objects by URL path and serves the subset
//! of the API `setup`, `clean` and the agents use, over real HTTP, shaped like the real server's
//! answers: GET, LIST and WATCH of Nodes (events as they happen), server-side apply (create,
//! no-op keeps `resourceVersion`, dry run), strategic-merge and merge patches (annotations with
//! null deletion, `status.conditions` merged by type), DELETE, and the token controller's job
//! (a `kubernetes.io/service-account-token` Secret gets `token` and `ca.crt`).
//!
//! Requests with a ServiceAccount token are held to the flannel ClusterRole (pods get; nodes
//! get/list/watch; nodes/status patch): anything else gets the API's 403 Forbidden Status, so a
//! test fails if the agent needs more RBAC than the manifest grants. Every request is recorded.
#![allow(dead_code)]

use base64::Engine;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The admin token the deploy-side kubeconfig carries.
pub const ADMIN_TOKEN: &str = "sim-admin-token";
/// A self-signed CA certificate (made once with openssl; no key kept) put into token Secrets
/// as `ca.crt`, as the token controller does with the cluster CA.
const SIM_CA_PEM: &str = include_str!("../fixtures/kube/sim-ca.pem");
/// Longest a watch stays open before the server ends it (the client re-watches).
const WATCH_HOLD: Duration = Duration::from_secs(20);

/// One request as received.
#[derive(Debug, Clone)]
pub struct SimRequest {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Content-Type header.
    pub content_type: Option<String>,
    /// Bearer token (without "Bearer ").
    pub token: Option<String>,
    /// Body text.
    pub body: String,
    /// HTTP status answered.
    pub status: u16,
}

impl SimRequest {
    /// A query parameter.
    pub fn param(&self, key: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then(|| v.to_string())
        })
    }
    /// The body as JSON (Null when not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    rv: u64,
    node_events: Vec<(u64, &'static str, Value)>,
    requests: Vec<SimRequest>,
    sa_tokens: BTreeMap<String, String>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

/// The simulated API server; stops on drop.
pub struct KubeSim {
    shared: Arc<Shared>,
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
}

impl KubeSim {
    /// Listen on `ip` (port chosen by the kernel).
    pub fn start(ip: Ipv4Addr) -> KubeSim {
        let server = Arc::new(tiny_http::Server::http((ip, 0)).expect("listen"));
        let addr = server
            .server_addr()
            .to_ip()
            .expect("an IP listener address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let (srv, sh) = (server.clone(), shared.clone());
        std::thread::spawn(move || {
            while !sh.stop.load(Ordering::SeqCst) {
                match srv.recv_timeout(Duration::from_millis(200)) {
                    Ok(Some(req)) => {
                        let sh = sh.clone();
                        std::thread::spawn(move || handle(&sh, req));
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
        });
        KubeSim {
            shared,
            server,
            addr,
        }
    }

    /// `http://IP:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Write a kubeconfig with the admin token for this server.
    pub fn admin_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("admin.kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {}\n\
             users:\n- name: admin\n  user:\n    token: {ADMIN_TOKEN}\n\
             contexts:\n- name: sim\n  context:\n    cluster: sim\n    user: admin\n\
             current-context: sim\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// Register a Node with a podCIDR (as the kubelet and kube-controller-manager would).
    pub fn add_node(&self, name: &str, pod_cidr: &str) {
        let mut st = self.shared.state.lock().unwrap();
        st.rv += 1;
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": name, "uid": format!("uid-{name}"), "resourceVersion": st.rv.to_string(),
                "creationTimestamp": "2026-11-24T00:00:00Z",
                "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
            },
            "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
            "status": {"conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "message": "kubelet is posting ready status",
                 "lastHeartbeatTime": "2026-11-24T00:00:00Z", "lastTransitionTime": "2026-11-24T00:00:00Z"},
            ]},
        });
        let rv = st.rv;
        st.node_events.push((rv, "ADDED", node.clone()));
        st.objects.insert(format!("/api/v1/nodes/{name}"), node);
        self.shared.changed.notify_all();
    }

    /// An object by URL path.
    pub fn object(&self, path: &str) -> Option<Value> {
        self.shared.state.lock().unwrap().objects.get(path).cloned()
    }

    /// Every stored path.
    pub fn paths(&self) -> Vec<String> {
        self.shared
            .state
            .lock()
            .unwrap()
            .objects
            .keys()
            .cloned()
            .collect()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<SimRequest> {
        self.shared.state.lock().unwrap().requests.clone()
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        self.server.unblock();
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// (collection path, object name, subresource) of an object URL.
fn split_path(path: &str) -> (String, Option<String>, Option<String>) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // api/v1[/namespaces/NS]/PLURAL[/NAME[/SUB]] or apis/G/V[/namespaces/NS]/PLURAL[/NAME[/SUB]]
    let base = if parts.first() == Some(&"api") { 2 } else { 3 };
    let mut rest = &parts[base.min(parts.len())..];
    let mut prefix: Vec<&str> = parts[..base.min(parts.len())].to_vec();
    if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        prefix.extend_from_slice(&rest[..2]);
        rest = &rest[2..];
    }
    let plural = rest.first().copied().unwrap_or("");
    prefix.push(plural);
    (
        format!("/{}", prefix.join("/")),
        rest.get(1).map(|s| s.to_string()),
        rest.get(2).map(|s| s.to_string()),
    )
}

/// What the flannel ClusterRole allows a ServiceAccount token.
fn sa_allowed(method: &str, path: &str, watch: bool) -> bool {
    let (coll, name, sub) = split_path(path);
    match (method, coll.as_str(), name.is_some(), sub.as_deref()) {
        ("GET", "/api/v1/nodes", _, None) => true,
        ("PATCH", "/api/v1/nodes", true, Some("status")) => true,
        ("GET", c, true, None) if c.starts_with("/api/v1/namespaces/") && c.ends_with("/pods") => {
            !watch
        }
        _ => false,
    }
}

fn handle(sh: &Shared, mut req: tiny_http::Request) {
    let method = req.method().as_str().to_string();
    let url = req.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let (path, query) = (path.to_string(), query.to_string());
    let header = |name: &str| {
        req.headers()
            .iter()
            .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().to_string())
    };
    let content_type = header("Content-Type");
    let token = header("Authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_string));
    let mut body = String::new();
    let _ = req.as_reader().read_to_string(&mut body);
    let mut rec = SimRequest {
        method: method.clone(),
        path: path.clone(),
        query,
        content_type,
        token,
        body,
        status: 0,
    };
    let watch = matches!(rec.param("watch").as_deref(), Some("true") | Some("1"));
    let (code, answer) = {
        let mut st = sh.state.lock().unwrap();
        let sa = rec
            .token
            .as_ref()
            .and_then(|t| st.sa_tokens.get(t).cloned());
        if rec.token.as_deref() != Some(ADMIN_TOKEN) && sa.is_none() {
            (401, Some(status(401, "Unauthorized", "Unauthorized")))
        } else if let Some(sa) = sa.filter(|_| !sa_allowed(&method, &path, watch)) {
            let (coll, _, sub) = split_path(&path);
            let resource = coll.rsplit('/').next().unwrap_or("").to_string();
            let resource = match sub {
                Some(s) => format!("{resource}/{s}"),
                None => resource,
            };
            let verb = match (method.as_str(), watch) {
                ("GET", true) => "watch".to_string(),
                ("GET", false) => "get".to_string(),
                (m, _) => m.to_ascii_lowercase(),
            };
            let msg = format!(
                "{resource} is forbidden: User \"{sa}\" cannot {verb} resource \"{resource}\" in API group \"\" at the cluster scope"
            );
            (403, Some(status(403, "Forbidden", &msg)))
        } else if watch {
            (200, None)
        } else {
            serve(&mut st, &rec)
        }
    };
    sh.changed.notify_all();
    if code == 200 && answer.is_none() {
        rec.status = 200;
        let since: u64 = rec
            .param("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        sh.state.lock().unwrap().requests.push(rec);
        stream_watch(sh, req, since);
        return;
    }
    rec.status = code;
    sh.state.lock().unwrap().requests.push(rec);
    let body = answer.unwrap_or(Value::Null).to_string();
    let resp = tiny_http::Response::from_string(body)
        .with_status_code(code)
        .with_header(
            tiny_http::Header::from_bytes("Content-Type", "application/json").expect("header"),
        );
    let _ = req.respond(resp);
}

/// A watch of Nodes: events newer than `since`, then new ones as they happen, until the hold
/// time or the server stops. Written by hand as chunked HTTP so each event is flushed at once.
fn stream_watch(sh: &Shared, req: tiny_http::Request, since: u64) {
    use std::io::Write;
    let mut w = req.into_writer();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\nCache-Control: no-cache, private\r\n\r\n";
    if w.write_all(head.as_bytes())
        .and_then(|_| w.flush())
        .is_err()
    {
        return;
    }
    let deadline = Instant::now() + WATCH_HOLD;
    let mut sent = since;
    let mut st = sh.state.lock().unwrap();
    loop {
        let from = sent;
        let mut out = Vec::new();
        for (rv, kind, obj) in st.node_events.iter().filter(|(rv, _, _)| *rv > from) {
            let line = format!("{}\n", json!({"type": kind, "object": obj}));
            out.extend_from_slice(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes());
            sent = *rv;
        }
        if !out.is_empty() {
            drop(st);
            if w.write_all(&out).and_then(|_| w.flush()).is_err() {
                return;
            }
            st = sh.state.lock().unwrap();
            continue;
        }
        let now = Instant::now();
        if now >= deadline || sh.stop.load(Ordering::SeqCst) {
            break;
        }
        st = sh.changed.wait_timeout(st, deadline - now).unwrap().0;
    }
    drop(st);
    let _ = w.write_all(b"0\r\n\r\n").and_then(|_| w.flush());
}

fn serve(st: &mut State, rec: &SimRequest) -> (u16, Option<Value>) {
    let (coll, name, sub) = split_path(&rec.path);
    let dry_run = rec.param("dryRun").is_some();
    match (rec.method.as_str(), name) {
        ("GET", None) => {
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|(p, _)| p.rsplit_once('/').map(|(c, _)| c) == Some(coll.as_str()))
                .map(|(_, v)| v.clone())
                .collect();
            let kind = items
                .first()
                .and_then(|i| i["kind"].as_str())
                .map(|k| format!("{k}List"))
                .unwrap_or_else(|| "List".into());
            (
                200,
                Some(json!({"apiVersion": "v1", "kind": kind,
                            "metadata": {"resourceVersion": st.rv.to_string()}, "items": items})),
            )
        }
        ("GET", Some(name)) => match st.objects.get(&format!("{coll}/{name}")) {
            Some(o) => (200, Some(o.clone())),
            None => not_found(&coll, &name),
        },
        ("DELETE", Some(name)) => {
            let key = format!("{coll}/{name}");
            if !st.objects.contains_key(&key) {
                return not_found(&coll, &name);
            }
            if dry_run {
                return (200, st.objects.get(&key).cloned());
            }
            let obj = st.objects.remove(&key).unwrap_or(Value::Null);
            st.rv += 1;
            if coll == "/api/v1/nodes" {
                let rv = st.rv;
                st.node_events.push((rv, "DELETED", obj.clone()));
            }
            (200, Some(obj))
        }
        ("PATCH", Some(name)) => patch(st, rec, &coll, &name, sub.as_deref(), dry_run),
        _ => (
            405,
            Some(status(
                405,
                "MethodNotAllowed",
                "not served by the simulator",
            )),
        ),
    }
}

fn not_found(coll: &str, name: &str) -> (u16, Option<Value>) {
    let resource = coll.rsplit('/').next().unwrap_or("");
    (
        404,
        Some(status(
            404,
            "NotFound",
            &format!("{resource} \"{name}\" not found"),
        )),
    )
}

/// Deep merge with null deletion; lists replaced, except `conditions` merged by `type` when
/// `by_type` (strategic merge).
fn merge(into: &mut Value, patch: &Value, strategic: bool) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                if v.is_null() {
                    a.remove(k);
                } else if strategic && k == "conditions" && v.is_array() {
                    let list = a.entry(k.clone()).or_insert_with(|| json!([]));
                    for c in v.as_array().into_iter().flatten() {
                        let arr = list.as_array_mut().expect("conditions list");
                        match arr.iter_mut().find(|x| x["type"] == c["type"]) {
                            Some(x) => merge(x, c, strategic),
                            None => arr.push(c.clone()),
                        }
                    }
                } else {
                    merge(a.entry(k.clone()).or_insert(Value::Null), v, strategic);
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

fn patch(
    st: &mut State,
    rec: &SimRequest,
    coll: &str,
    name: &str,
    sub: Option<&str>,
    dry_run: bool,
) -> (u16, Option<Value>) {
    let key = format!("{coll}/{name}");
    let body = rec.json();
    let ct = rec.content_type.clone().unwrap_or_default();
    let existing = st.objects.get(&key).cloned();
    let (mut obj, created) = match (existing, ct.as_str()) {
        (Some(o), _) => (o, false),
        (None, "application/apply-patch+yaml") if sub.is_none() => (json!({}), true),
        (None, _) => return not_found(coll, name),
    };
    let before = obj.clone();
    match ct.as_str() {
        "application/apply-patch+yaml" => {
            if rec.param("fieldManager").is_none() {
                return (
                    400,
                    Some(status(
                        400,
                        "BadRequest",
                        "PATCH with apply requires fieldManager",
                    )),
                );
            }
            merge(&mut obj, &body, false);
        }
        "application/strategic-merge-patch+json" => merge(&mut obj, &body, true),
        "application/merge-patch+json" => merge(&mut obj, &body, false),
        other => {
            return (
                415,
                Some(status(
                    415,
                    "UnsupportedMediaType",
                    &format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other})"
                    ),
                )),
            );
        }
    }
    if created {
        let meta = obj["metadata"].as_object_mut().expect("metadata");
        meta.insert("uid".into(), json!(format!("uid-{name}")));
        meta.insert("creationTimestamp".into(), json!("2026-11-24T00:00:00Z"));
        // the token controller's job
        if obj["type"] == "kubernetes.io/service-account-token" {
            let sa = obj["metadata"]["annotations"]["kubernetes.io/service-account.name"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            let token = format!("sim-sa-token-{ns}-{sa}");
            let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
            obj["data"] = json!({
                "token": b64(&token),
                "ca.crt": b64(SIM_CA_PEM),
                "namespace": b64(&ns),
            });
            if !dry_run {
                st.sa_tokens
                    .insert(token, format!("system:serviceaccount:{ns}:{sa}"));
            }
        }
    }
    if !created && obj == before {
        return (200, Some(obj)); // a no-op keeps resourceVersion
    }
    if dry_run {
        return (if created { 201 } else { 200 }, Some(obj));
    }
    st.rv += 1;
    let rv = st.rv;
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.insert("resourceVersion".into(), json!(rv.to_string()));
        if let Some(mgr) = rec.param("fieldManager") {
            let mut entry = Map::new();
            entry.insert("manager".into(), json!(mgr));
            entry.insert(
                "operation".into(),
                json!(if ct.contains("apply") {
                    "Apply"
                } else {
                    "Update"
                }),
            );
            m.insert("managedFields".into(), json!([entry]));
        }
    }
    st.objects.insert(key, obj.clone());
    if coll == "/api/v1/nodes" {
        st.node_events
            .push((rv, if created { "ADDED" } else { "MODIFIED" }, obj.clone()));
    }
    (if created { 201 } else { 200 }, Some(obj))
}
