//! `verify ping-mesh --pods`: the pod listing through the `kube` client against a small HTTP
//! server on 127.0.0.1 standing in for the API server (no root needed). Checks the request the
//! client sends (path, label selector query, bearer token), the pods kept, and the messages
//! for refused, unreachable and unconfigured listings.

use installer::verify::kube::{PodRef, pods_for_selector};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A stand-in API server answering every request with one status and body, recording each
/// request's URL and Authorization header. Stops when dropped.
struct FakeApi {
    port: u16,
    seen: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeApi {
    fn start(status: u16, body: String) -> FakeApi {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("listen");
        let port = server.server_addr().to_ip().expect("ip").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                if let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(50)) {
                    let auth = req
                        .headers()
                        .iter()
                        .find(|h| h.field.equiv("Authorization"))
                        .map(|h| h.value.to_string())
                        .unwrap_or_default();
                    seen2.lock().unwrap().push((req.url().to_string(), auth));
                    let json = tiny_http::Header::from_bytes("Content-Type", "application/json")
                        .expect("header");
                    let _ = req.respond(
                        tiny_http::Response::from_string(body.clone())
                            .with_status_code(status)
                            .with_header(json),
                    );
                }
            }
        });
        FakeApi {
            port,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A kubeconfig whose current context talks to `server` with bearer token `token`.
fn kubeconfig(dir: &Path, server: &str, token: &str) -> PathBuf {
    let path = dir.join("config");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: lab\n\
             contexts:\n- name: lab\n  context: {{cluster: lab, user: admin}}\n\
             clusters:\n- name: lab\n  cluster: {{server: '{server}'}}\n\
             users:\n- name: admin\n  user: {{token: {token}}}\n"
        ),
    )
    .expect("write kubeconfig");
    path
}

/// A request as the API server saw it: path, query pairs, Authorization header.
type SeenRequest = (String, Vec<(String, String)>, String);

fn pod_list() -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "7"},
        "items": [
            {"metadata": {"name": "web-0", "namespace": "shop"},
             "spec": {"containers": [], "nodeName": "n1"},
             "status": {"phase": "Running", "podIP": "198.19.1.5", "hostIP": "198.18.0.11"}},
            {"metadata": {"name": "agent", "namespace": "kube-system"},
             "spec": {"containers": [], "nodeName": "n1", "hostNetwork": true},
             "status": {"phase": "Running", "podIP": "198.18.0.11", "hostIP": "198.18.0.11"}},
            {"metadata": {"name": "web-1", "namespace": "shop"},
             "spec": {"containers": [], "nodeName": "n2"},
             "status": {"phase": "Pending", "hostIP": "198.18.0.12"}},
            {"metadata": {"name": "web-2", "namespace": "shop"},
             "spec": {"containers": [], "nodeName": "n2"},
             "status": {"phase": "Running", "podIP": "198.19.2.7", "hostIP": "198.18.0.12"}}
        ]
    })
    .to_string()
}

#[test]
fn pods_listed_with_selector_and_token_keep_running_pod_network_pods() {
    let api = FakeApi::start(200, pod_list());
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = kubeconfig(
        dir.path(),
        &format!("http://127.0.0.1:{}", api.port),
        "s3cret",
    );

    let pods = pods_for_selector(Some(&kc), "app=web", None).expect("list pods");
    let names: Vec<(String, String)> = pods
        .iter()
        .map(|p| (p.namespace.clone(), p.name.clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("shop".to_string(), "web-0".to_string()),
            ("shop".to_string(), "web-2".to_string())
        ],
        "the hostNetwork pod and the Pending pod are not probed"
    );
    assert_eq!(
        pods[1],
        PodRef {
            namespace: "shop".into(),
            name: "web-2".into(),
            ip: "198.19.2.7".parse().unwrap(),
            host_ip: Some("198.18.0.12".parse().unwrap()),
            node_name: "n2".into(),
        }
    );

    pods_for_selector(Some(&kc), "app in (web,api),tier!=db", Some("shop")).expect("list pods");
    let seen: Vec<SeenRequest> = api
        .seen()
        .into_iter()
        .map(|(url, auth)| {
            let url = reqwest::Url::parse(&format!("http://api{url}")).expect("request URL");
            let query = url
                .query_pairs()
                .map(|(k, v)| (k.into(), v.into()))
                .collect();
            (url.path().to_string(), query, auth)
        })
        .collect();
    let selector = |s: &str| vec![("labelSelector".to_string(), s.to_string())];
    assert_eq!(
        seen,
        [
            (
                "/api/v1/pods".to_string(),
                selector("app=web"),
                "Bearer s3cret".to_string()
            ),
            (
                "/api/v1/namespaces/shop/pods".to_string(),
                selector("app in (web,api),tier!=db"),
                "Bearer s3cret".to_string()
            ),
        ]
    );
}

#[test]
fn forbidden_listing_names_the_operation_and_the_api_message() {
    let status = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "pods is forbidden: User \"system:serviceaccount:default:viewer\" cannot list resource \"pods\" in API group \"\" at the cluster scope",
        "reason": "Forbidden", "details": {"kind": "pods"}, "code": 403
    });
    let api = FakeApi::start(403, status.to_string());
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = kubeconfig(dir.path(), &format!("http://127.0.0.1:{}", api.port), "t");

    let err = pods_for_selector(Some(&kc), "app=web", None)
        .expect_err("a 403 answer is an error")
        .to_string();
    for part in [
        "list pods -l app=web in every namespace",
        &kc.display().to_string(),
        "403 Forbidden",
        "cannot list resource \"pods\"",
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    assert_eq!(api.seen().len(), 1);
}

#[test]
fn unreachable_api_server_names_the_operation_and_the_server() {
    // a port that was just free: nothing listens on it
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = format!("http://127.0.0.1:{port}");
    let kc = kubeconfig(dir.path(), &server, "t");

    let err = pods_for_selector(Some(&kc), "app=web", Some("shop"))
        .expect_err("nobody answers")
        .to_string();
    assert!(
        err.contains("list pods -l app=web in namespace shop"),
        "{err}"
    );
    assert!(
        err.contains(&format!("cannot talk to the API server {server}")),
        "{err}"
    );
}

#[test]
fn missing_kubeconfig_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-config");
    let err = pods_for_selector(Some(&missing), "app=web", None)
        .expect_err("no kubeconfig")
        .to_string();
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(err.contains("--kubeconfig"), "{err}");
}
