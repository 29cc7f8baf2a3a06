//! The Kubernetes API datastore (flannel-spec §3, `--kube-subnet-mgr`): the lease is this node's
//! `spec.podCIDR`, what the node advertises lives in `flannel.alpha.coreos.com/*` annotations
//! written through the `nodes/status` subresource (the only write flannel's ClusterRole grants),
//! and peers come from a list+watch of every Node. Leases never expire and are never renewed.
//!
//! Unlike flanneld, a relist (start, `410 Gone`, reconnect after an outage) is sent as one
//! snapshot that the tracker diffs, so routes of nodes deleted while the agent was down go away
//! (flannel #2554) and routes of nodes still present are never dropped.

use super::{AcquireRequest, Datastore, DatastoreError, WatchUpdate};
use crate::agent::lease::{Lease, LeaseAttrs};
use crate::agent::log::{info, warning};
use crate::agent::netconf::{NetConf, NetConfError, parse};
use crate::kubeapi::session::error_chain;
use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Api, Client, Config};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// flannel's default annotation prefix (`--kube-annotation-prefix`).
pub const ANNOTATION_PREFIX: &str = "flannel.alpha.coreos.com";
/// What flannel's ClusterRole (kube-flannel.yml, kubeasz kube-flannel.yaml.j2) allows.
pub const FLANNEL_RBAC: &str = "pods get; nodes get, list, watch; nodes/status patch";
/// Per-request timeout of unary calls (get, patch).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of the NetworkUnavailable patch before giving up.
const COMPLETE_ATTEMPTS: u32 = 4;
/// Pause between those attempts.
const COMPLETE_RETRY: Duration = Duration::from_secs(2);
/// Watch error backoff: first pause and cap.
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(200);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// At most one watch error line per this period (the rest are counted).
const ERROR_LOG_PERIOD: Duration = Duration::from_secs(30);

/// How to reach the API server and who we are.
#[derive(Debug, Clone, Default)]
pub struct KubeSettings {
    /// kubeconfig file; None = in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// This node's name; None = env `NODE_NAME`, else the hostname.
    pub node_name: Option<String>,
    /// net-conf.json.
    pub net_conf_path: PathBuf,
}

impl KubeSettings {
    /// The kubernetes part of the agent settings.
    pub fn from_settings(s: &crate::agent::Settings) -> KubeSettings {
        KubeSettings {
            kubeconfig: s.kubeconfig.clone(),
            node_name: Some(s.node_name.clone()).filter(|n| !n.trim().is_empty()),
            net_conf_path: s.net_conf_path.clone(),
        }
    }
}

/// The annotation keys under one prefix.
#[derive(Debug, Clone)]
pub struct Annotations {
    /// `<p>/backend-type`.
    pub backend_type: String,
    /// `<p>/backend-data`.
    pub backend_data: String,
    /// `<p>/kube-subnet-manager`.
    pub subnet_manager: String,
    /// `<p>/public-ip`.
    pub public_ip: String,
    /// `<p>/public-ip-overwrite` (set by a human; read only).
    pub public_ip_overwrite: String,
}

impl Annotations {
    /// Keys under `prefix` (`flannel.alpha.coreos.com`).
    pub fn new(prefix: &str) -> Annotations {
        let p = prefix.trim_end_matches('/');
        Annotations {
            backend_type: format!("{p}/backend-type"),
            backend_data: format!("{p}/backend-data"),
            subnet_manager: format!("{p}/kube-subnet-manager"),
            public_ip: format!("{p}/public-ip"),
            public_ip_overwrite: format!("{p}/public-ip-overwrite"),
        }
    }

    /// The keys the agent writes (and `agent clean` removes).
    pub fn written(&self) -> [&str; 4] {
        [
            &self.backend_type,
            &self.backend_data,
            &self.subnet_manager,
            &self.public_ip,
        ]
    }
}

/// The node name to use: the configured one, else env `NODE_NAME`, else the hostname.
pub fn resolve_node_name(configured: Option<&str>) -> Result<String, DatastoreError> {
    if let Some(n) = configured.map(str::trim).filter(|n| !n.is_empty()) {
        return Ok(n.to_string());
    }
    if let Ok(n) = std::env::var("NODE_NAME")
        && !n.trim().is_empty()
    {
        return Ok(n.trim().to_string());
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    if host.is_empty() {
        return Err(DatastoreError::NodeName(
            "no node name: set node_name in the agent config or env NODE_NAME (the hostname is \
             empty)"
                .into(),
        ));
    }
    Ok(host.to_string())
}

/// Build a client from a kubeconfig file, or the in-cluster service account when None.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, DatastoreError> {
    let config = match kubeconfig {
        Some(path) => {
            let fail = |error: String| DatastoreError::KubeConfig {
                source_name: path.display().to_string(),
                error,
            };
            let kc = Kubeconfig::read_from(path).map_err(|e| fail(e.to_string()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| fail(e.to_string()))?
        }
        None => Config::incluster().map_err(|e| DatastoreError::KubeConfig {
            source_name: "the in-cluster service account (no kubeconfig given)".into(),
            error: format!(
                "{e}; set kubeconfig in the agent config or --kubeconfig-file when the agent \
                 does not run in a pod"
            ),
        })?,
    };
    let mut config = config;
    config.connect_timeout = Some(Duration::from_secs(10));
    // our callers retry with their own pacing and log every failure; kube's built-in retry of
    // 429/503/504 (up to 15 times, growing to minutes) would hide an outage behind a timeout
    config.default_retry = false;
    let what = match kubeconfig {
        Some(p) => p.display().to_string(),
        None => "the in-cluster config".into(),
    };
    Client::try_from(config).map_err(|e| DatastoreError::KubeConfig {
        source_name: what,
        error: e.to_string(),
    })
}

/// One API request, for error messages (`patch nodes/status "node1"`).
#[derive(Debug, Clone, Copy)]
struct Op<'a> {
    verb: &'static str,
    resource: &'static str,
    name: &'a str,
}

impl Op<'_> {
    fn error(&self, e: kube::Error) -> DatastoreError {
        match e {
            kube::Error::Api(status) => {
                if self.verb == "get" && self.resource == "nodes" && status.code == 404 {
                    return DatastoreError::NodeNotFound {
                        name: self.name.to_string(),
                    };
                }
                DatastoreError::KubeApi {
                    verb: self.verb,
                    resource: self.resource,
                    name: self.name.to_string(),
                    code: status.code,
                    reason: status.reason.clone(),
                    message: status.message.clone(),
                }
            }
            other => DatastoreError::KubeRequest {
                verb: self.verb,
                resource: self.resource,
                name: self.name.to_string(),
                error: error_chain(&other),
            },
        }
    }

    async fn run<T>(
        &self,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, DatastoreError> {
        match tokio::time::timeout(CALL_TIMEOUT, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.error(e)),
            Err(_) => Err(DatastoreError::KubeRequest {
                verb: self.verb,
                resource: self.resource,
                name: self.name.to_string(),
                error: format!("no answer within {} s", CALL_TIMEOUT.as_secs()),
            }),
        }
    }
}

/// The IPv4 pod CIDR of a node: `spec.podCIDRs`' IPv4 entry, else `spec.podCIDR`.
/// Ok(None) when none is assigned; Err with a message when present but unusable.
pub fn pod_cidr(node: &Node) -> Result<Option<Ipv4Net>, String> {
    let Some(spec) = &node.spec else {
        return Ok(None);
    };
    let mut cidrs: Vec<&str> = spec
        .pod_cidrs
        .iter()
        .flatten()
        .map(|s| s.as_str())
        .collect();
    if cidrs.is_empty()
        && let Some(c) = &spec.pod_cidr
    {
        cidrs.push(c);
    }
    if cidrs.len() > 2 {
        return Err(format!(
            "node has more than 2 podCIDRs ({}); at most one IPv4 and one IPv6 are allowed",
            cidrs.join(", ")
        ));
    }
    for c in cidrs.iter().map(|c| c.trim()).filter(|c| !c.is_empty()) {
        if c.contains(':') {
            continue; // IPv6 (not used by this agent)
        }
        let net: Ipv4Net = c
            .parse()
            .map_err(|_| format!("podCIDR {c:?} is not an IPv4 CIDR"))?;
        return Ok(Some(net.trunc()));
    }
    Ok(None)
}

/// The KubeDatastore: one node's view of the cluster through the API server.
pub struct KubeDatastore {
    nodes: Api<Node>,
    node_name: String,
    net_conf_path: PathBuf,
    keys: Annotations,
    /// Our lease once acquired: always part of snapshots, never deleted by the watch (flannel
    /// never gives a podCIDR back, and the tracker would read its absence as a revocation).
    own: Mutex<Option<Lease>>,
}

impl KubeDatastore {
    /// Connect (lazily: an unreachable API server makes the calls fail, not this).
    pub async fn connect(settings: &KubeSettings) -> Result<KubeDatastore, DatastoreError> {
        let client = client(settings.kubeconfig.as_deref()).await?;
        let node_name = resolve_node_name(settings.node_name.as_deref())?;
        Ok(Self::with_client(
            client,
            node_name,
            settings.net_conf_path.clone(),
        ))
    }

    /// A datastore on an existing client.
    pub fn with_client(client: Client, node_name: String, net_conf_path: PathBuf) -> Self {
        KubeDatastore {
            nodes: Api::all(client),
            node_name,
            net_conf_path,
            keys: Annotations::new(ANNOTATION_PREFIX),
            own: Mutex::new(None),
        }
    }

    /// The node this agent runs for.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The annotation keys.
    pub fn annotations(&self) -> &Annotations {
        &self.keys
    }

    /// GET our Node (404 → [`DatastoreError::NodeNotFound`]).
    pub async fn get_node(&self) -> Result<Node, DatastoreError> {
        Op {
            verb: "get",
            resource: "nodes",
            name: &self.node_name,
        }
        .run(self.nodes.get(&self.node_name))
        .await
    }

    /// Strategic-merge PATCH of `nodes/<name>/status` (annotations ride along in metadata).
    pub async fn patch_status(&self, patch: &Value) -> Result<Node, DatastoreError> {
        Op {
            verb: "patch",
            resource: "nodes/status",
            name: &self.node_name,
        }
        .run(self.nodes.patch_status(
            &self.node_name,
            &PatchParams::default(),
            &Patch::Strategic(patch),
        ))
        .await
    }

    /// The annotations this node should carry for `attrs` (public-ip-overwrite wins).
    pub fn desired_annotations(
        &self,
        attrs: &LeaseAttrs,
        current: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let data = attrs.backend_data.clone().unwrap_or(Value::Null);
        let public_ip = match current
            .get(&self.keys.public_ip_overwrite)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            Some(over) => over.to_string(),
            None => attrs.public_ip.to_string(),
        };
        BTreeMap::from([
            (self.keys.backend_type.clone(), attrs.backend_type.clone()),
            (self.keys.backend_data.clone(), data.to_string()),
            (self.keys.subnet_manager.clone(), "true".to_string()),
            (self.keys.public_ip.clone(), public_ip),
        ])
    }

    /// A node's lease as peers see it; Ok(None) for nodes that are not (yet) flannel nodes,
    /// Err(reason) for flannel nodes whose annotations cannot be used.
    pub fn lease_of(&self, node: &Node) -> Result<Option<Lease>, String> {
        let empty = BTreeMap::new();
        let ann = node.metadata.annotations.as_ref().unwrap_or(&empty);
        if ann.get(&self.keys.subnet_manager).map(String::as_str) != Some("true") {
            return Ok(None);
        }
        let Some(subnet) = pod_cidr(node)? else {
            return Ok(None);
        };
        let ip_text = ann.get(&self.keys.public_ip).map(String::as_str);
        let public_ip: Ipv4Addr = ip_text
            .unwrap_or_default()
            .trim()
            .parse()
            .map_err(|_| format!("public-ip annotation {ip_text:?} is not an IPv4 address"))?;
        let backend_data = match ann.get(&self.keys.backend_data) {
            None => None,
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Null) => None,
                Ok(v) => Some(v),
                Err(e) => return Err(format!("backend-data annotation {text:?} is not JSON: {e}")),
            },
        };
        Ok(Some(Lease {
            subnet,
            attrs: LeaseAttrs {
                public_ip,
                public_ipv6: None,
                backend_type: ann
                    .get(&self.keys.backend_type)
                    .cloned()
                    .unwrap_or_default(),
                backend_data,
            },
            expiration: None,
            id: 0,
        }))
    }

    fn own_lease(&self) -> Option<Lease> {
        self.own.lock().ok().and_then(|g| g.clone())
    }

    fn node_lease(&self, node: &Node) -> Option<Lease> {
        match self.lease_of(node) {
            Ok(l) => l,
            Err(why) => {
                warning!(
                    "Skipping node {}: {why}",
                    node.metadata.name.as_deref().unwrap_or("?")
                );
                None
            }
        }
    }

    fn snapshot(&self, nodes: Vec<Node>, subnets: &mut BTreeMap<String, Ipv4Net>) -> Vec<Lease> {
        subnets.clear();
        let own = self.own_lease();
        let mut leases = Vec::new();
        for node in &nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            if own.is_some() && name == self.node_name {
                continue;
            }
            if let Some(l) = self.node_lease(node) {
                subnets.insert(name, l.subnet);
                leases.push(l);
            }
        }
        leases.extend(own);
        leases
    }

    /// Turn one watcher event into updates (mutating the name → subnet map).
    fn updates(
        &self,
        event: watcher::Event<Node>,
        init: &mut Option<Vec<Node>>,
        subnets: &mut BTreeMap<String, Ipv4Net>,
    ) -> Vec<WatchUpdate> {
        let own_known = self.own_lease().is_some();
        match event {
            watcher::Event::Init => {
                *init = Some(Vec::new());
                Vec::new()
            }
            watcher::Event::InitApply(node) => {
                init.get_or_insert_with(Vec::new).push(node);
                Vec::new()
            }
            watcher::Event::InitDone => {
                let nodes = init.take().unwrap_or_default();
                vec![WatchUpdate::Snapshot(self.snapshot(nodes, subnets))]
            }
            watcher::Event::Apply(node) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                if own_known && name == self.node_name {
                    return Vec::new();
                }
                let mut out = Vec::new();
                match self.node_lease(&node) {
                    Some(lease) => {
                        if let Some(old) = subnets.insert(name, lease.subnet)
                            && old != lease.subnet
                        {
                            out.push(WatchUpdate::Delete(old));
                        }
                        out.push(WatchUpdate::Put(lease));
                    }
                    None => {
                        if let Some(old) = subnets.remove(&name) {
                            info!("Node {name} no longer carries flannel annotations");
                            out.push(WatchUpdate::Delete(old));
                        }
                    }
                }
                out
            }
            watcher::Event::Delete(node) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                if own_known && name == self.node_name {
                    warning!("This node's Node object {name} was deleted; keeping its subnet");
                    return Vec::new();
                }
                match subnets.remove(&name) {
                    Some(old) => vec![WatchUpdate::Delete(old)],
                    None => Vec::new(),
                }
            }
        }
    }
}

/// Log watch errors at most once per period, counting the rest.
struct ErrorLog {
    last: Option<Instant>,
    suppressed: u32,
}

impl ErrorLog {
    fn log(&mut self, e: &watcher::Error, backoff: Duration) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < ERROR_LOG_PERIOD)
        {
            self.suppressed += 1;
            return;
        }
        let more = if self.suppressed > 0 {
            format!(" ({} more errors since the last message)", self.suppressed)
        } else {
            String::new()
        };
        warning!(
            "Watching nodes: {}{more}; retrying in {backoff:?} (peers stay as they are)",
            watch_error_text(e)
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}

fn watch_error_text(e: &watcher::Error) -> String {
    let status = match e {
        watcher::Error::WatchError(s) => Some(s.as_ref()),
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.as_ref()),
        _ => None,
    };
    match status {
        Some(s) if s.code == 410 => format!(
            "the watch expired (HTTP 410 {}: {}); listing nodes again",
            s.reason, s.message
        ),
        Some(s) => {
            let verb = if matches!(e, watcher::Error::InitialListFailed(_)) {
                "list"
            } else {
                "watch"
            };
            format!(
                "HTTP {} {}: {}{}",
                s.code,
                s.reason,
                s.message,
                rbac_hint(s.code, verb, "nodes")
            )
        }
        None => error_chain(e),
    }
}

/// The RBAC hint for a 403.
pub fn rbac_hint(code: u16, verb: &str, resource: &str) -> String {
    if code == 403 {
        format!(
            " (RBAC: this needs `{verb}` on `{resource}`; the flannel ClusterRole grants: \
             {FLANNEL_RBAC} — check the ClusterRole and its binding to the agent's user)"
        )
    } else {
        String::new()
    }
}

impl Datastore for KubeDatastore {
    async fn network_config(&self) -> Result<NetConf, DatastoreError> {
        let path = self.net_conf_path.display().to_string();
        let text = std::fs::read_to_string(&self.net_conf_path).map_err(|e| {
            DatastoreError::NetConfFile {
                path: path.clone(),
                message: format!("failed to read net conf: {e}"),
            }
        })?;
        parse(&text)
            .and_then(|raw| raw.for_kubernetes())
            .map_err(|e: NetConfError| DatastoreError::NetConfFile {
                path,
                message: e.to_string(),
            })
    }

    async fn stored_lease(&self, public_ip: Ipv4Addr) -> Result<Option<Lease>, DatastoreError> {
        let node = self.get_node().await?;
        let empty = BTreeMap::new();
        let ann = node.metadata.annotations.as_ref().unwrap_or(&empty);
        let Some(data) = ann.get(&self.keys.backend_data) else {
            return Ok(None);
        };
        let Ok(data) = serde_json::from_str::<Value>(data) else {
            return Ok(None);
        };
        let subnet = pod_cidr(&node).ok().flatten().unwrap_or_default();
        Ok(Some(Lease {
            subnet,
            attrs: LeaseAttrs {
                public_ip,
                public_ipv6: None,
                backend_type: ann
                    .get(&self.keys.backend_type)
                    .cloned()
                    .unwrap_or_default(),
                backend_data: (!data.is_null()).then_some(data),
            },
            expiration: None,
            id: 0,
        }))
    }

    async fn acquire_lease(&self, req: AcquireRequest<'_>) -> Result<Lease, DatastoreError> {
        let node = self.get_node().await?;
        let subnet = match pod_cidr(&node) {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(DatastoreError::PodCidrNotAssigned {
                    name: self.node_name.clone(),
                });
            }
            Err(why) => {
                return Err(DatastoreError::PodCidrInvalid {
                    name: self.node_name.clone(),
                    why,
                });
            }
        };
        if !req.conf.network.contains(&subnet) {
            return Err(DatastoreError::PodCidrOutsideNetwork {
                network: req.conf.network,
                pod_cidr: subnet,
                name: self.node_name.clone(),
            });
        }
        let current = node.metadata.annotations.clone().unwrap_or_default();
        let desired = self.desired_annotations(req.attrs, &current);
        let differs = desired.iter().any(|(k, v)| current.get(k) != Some(v));
        if differs {
            let patch = json!({"metadata": {"annotations": desired}});
            self.patch_status(&patch).await?;
            info!(
                "Annotated node {} (backend {}, public-ip {})",
                self.node_name, req.attrs.backend_type, desired[&self.keys.public_ip]
            );
        }
        let mut attrs = req.attrs.clone();
        if let Ok(ip) = desired[&self.keys.public_ip].parse() {
            attrs.public_ip = ip;
        }
        let lease = Lease {
            subnet,
            attrs,
            expiration: None,
            id: 0,
        };
        if let Ok(mut own) = self.own.lock() {
            *own = Some(lease.clone());
        }
        Ok(lease)
    }

    async fn complete_lease(&self, _lease: &Lease) -> Result<(), DatastoreError> {
        let mut last = None;
        for attempt in 1..=COMPLETE_ATTEMPTS {
            let now = jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            let patch = network_available_patch(&now);
            match self.patch_status(&patch).await {
                Ok(_) => {
                    info!(
                        "Set condition NetworkUnavailable=False (FlannelIsUp) on node {}",
                        self.node_name
                    );
                    return Ok(());
                }
                Err(e) => {
                    if attempt < COMPLETE_ATTEMPTS {
                        warning!(
                            "Setting NetworkUnavailable=False on node {} failed (attempt \
                             {attempt}/{COMPLETE_ATTEMPTS}): {e}; retrying in {COMPLETE_RETRY:?}",
                            self.node_name
                        );
                        tokio::time::sleep(COMPLETE_RETRY).await;
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(DatastoreError::Unsupported("no attempt made".into())))
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<Lease, DatastoreError> {
        Ok(lease.clone())
    }

    async fn watch_leases(&self, tx: mpsc::Sender<WatchUpdate>) {
        let mut stream = watcher(self.nodes.clone(), watcher::Config::default()).boxed();
        let mut init: Option<Vec<Node>> = None;
        let mut subnets: BTreeMap<String, Ipv4Net> = BTreeMap::new();
        let mut backoff = WATCH_BACKOFF_MIN;
        let mut errors = ErrorLog {
            last: None,
            suppressed: 0,
        };
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                _ = tx.closed() => return,
            };
            match item {
                None => return, // the watcher never ends by itself
                Some(Ok(event)) => {
                    // Init follows every failed list: only real progress resets the backoff
                    if !matches!(event, watcher::Event::Init | watcher::Event::InitApply(_)) {
                        backoff = WATCH_BACKOFF_MIN;
                    }
                    for update in self.updates(event, &mut init, &mut subnets) {
                        if tx.send(update).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Err(e)) => {
                    errors.log(&e, backoff);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = tx.closed() => return,
                    }
                    backoff = (backoff * 2).min(WATCH_BACKOFF_MAX);
                }
            }
        }
    }

    async fn delete_lease(&self, _subnet: Ipv4Net) -> Result<(), DatastoreError> {
        let nulls: Map<String, Value> = self
            .keys
            .written()
            .iter()
            .map(|k| (k.to_string(), Value::Null))
            .collect();
        self.patch_status(&json!({"metadata": {"annotations": nulls}}))
            .await?;
        Ok(())
    }
}

/// The strategic-merge patch that marks the node's network as available (§3), with `now` as
/// both timestamps.
pub fn network_available_patch(now: &str) -> Value {
    json!({
        "status": {
            "conditions": [{
                "type": "NetworkUnavailable",
                "status": "False",
                "reason": "FlannelIsUp",
                "message": "Flannel is running on this node",
                "lastTransitionTime": now,
                "lastHeartbeatTime": now,
            }]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use kube::api::ObjectMeta;

    fn node(name: &str, cidr: Option<&str>, ann: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: Some(
                    ann.iter()
                        .map(|(k, v)| (format!("{ANNOTATION_PREFIX}/{k}"), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(String::from),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn ds() -> KubeDatastore {
        // a client that is never used: the URL is not contacted by these tests
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = Config::new("http://127.0.0.1:9".parse().unwrap());
        KubeDatastore::with_client(
            Client::try_from(config).unwrap(),
            "node-a".into(),
            "/nonexistent".into(),
        )
    }

    const FLANNEL: [(&str, &str); 4] = [
        ("kube-subnet-manager", "true"),
        ("public-ip", "192.168.1.12"),
        ("backend-type", "vxlan"),
        ("backend-data", r#"{"VNI":1,"VtepMAC":"0a:00:00:00:00:02"}"#),
    ];

    #[test]
    fn pod_cidr_prefers_the_ipv4_entry_of_pod_cidrs() {
        let mut n = node("b", Some("10.1.18.0/24"), &[]);
        assert_eq!(pod_cidr(&n).unwrap(), Some("10.1.18.0/24".parse().unwrap()));
        n.spec.as_mut().unwrap().pod_cidrs =
            Some(vec!["fd00:1::/64".into(), "10.1.19.0/24".into()]);
        assert_eq!(pod_cidr(&n).unwrap(), Some("10.1.19.0/24".parse().unwrap()));
        n.spec.as_mut().unwrap().pod_cidrs = Some(vec!["a".into(), "b".into(), "c".into()]);
        assert!(pod_cidr(&n).unwrap_err().contains("more than 2"));
        assert_eq!(pod_cidr(&node("c", None, &[])).unwrap(), None);
        assert!(pod_cidr(&node("d", Some("10.1/x"), &[])).is_err());
    }

    #[tokio::test]
    async fn lease_of_needs_subnet_manager_cidr_and_public_ip() {
        let ds = ds();
        let l = ds
            .lease_of(&node("b", Some("10.1.18.0/24"), &FLANNEL))
            .unwrap()
            .unwrap();
        assert_eq!(l.subnet.to_string(), "10.1.18.0/24");
        assert_eq!(l.attrs.public_ip, Ipv4Addr::new(192, 168, 1, 12));
        assert_eq!(l.attrs.vtep_mac(), Some([0x0a, 0, 0, 0, 0, 2]));
        assert_eq!(
            ds.lease_of(&node("b", Some("10.1.18.0/24"), &FLANNEL[1..])),
            Ok(None)
        );
        assert_eq!(ds.lease_of(&node("b", None, &FLANNEL)), Ok(None));
        let mut bad = FLANNEL;
        bad[1] = ("public-ip", "nat.example");
        let e = ds
            .lease_of(&node("b", Some("10.1.18.0/24"), &bad))
            .unwrap_err();
        assert!(e.contains("nat.example"), "{e}");
        let mut hostgw = FLANNEL;
        hostgw[2] = ("backend-type", "host-gw");
        hostgw[3] = ("backend-data", "null");
        let l = ds
            .lease_of(&node("b", Some("10.1.18.0/24"), &hostgw))
            .unwrap()
            .unwrap();
        assert_eq!(l.attrs.backend_data, None);
    }

    #[tokio::test]
    async fn desired_annotations_copy_public_ip_overwrite() {
        let ds = ds();
        let attrs = LeaseAttrs {
            public_ip: Ipv4Addr::new(192, 168, 1, 11),
            public_ipv6: None,
            backend_type: "host-gw".into(),
            backend_data: None,
        };
        let d = ds.desired_annotations(&attrs, &BTreeMap::new());
        let get =
            |m: &BTreeMap<String, String>, k: &str| m[&format!("{ANNOTATION_PREFIX}/{k}")].clone();
        assert_eq!(get(&d, "backend-data"), "null");
        assert_eq!(get(&d, "public-ip"), "192.168.1.11");
        assert_eq!(get(&d, "kube-subnet-manager"), "true");
        let cur = BTreeMap::from([(
            format!("{ANNOTATION_PREFIX}/public-ip-overwrite"),
            "203.0.113.7".to_string(),
        )]);
        assert_eq!(
            get(&ds.desired_annotations(&attrs, &cur), "public-ip"),
            "203.0.113.7"
        );
    }

    #[tokio::test]
    async fn watch_updates_track_names_and_subnets() {
        let ds = ds();
        let mut init = None;
        let mut subnets = BTreeMap::new();
        let b = node("b", Some("10.1.18.0/24"), &FLANNEL);
        let plain = node("c", Some("10.1.19.0/24"), &[]);
        assert!(
            ds.updates(watcher::Event::Init, &mut init, &mut subnets)
                .is_empty()
        );
        ds.updates(
            watcher::Event::InitApply(b.clone()),
            &mut init,
            &mut subnets,
        );
        ds.updates(watcher::Event::InitApply(plain), &mut init, &mut subnets);
        let snap = ds.updates(watcher::Event::InitDone, &mut init, &mut subnets);
        let WatchUpdate::Snapshot(leases) = &snap[0] else {
            panic!("{snap:?}")
        };
        assert_eq!(leases.len(), 1);
        // podCIDR changed: delete the old subnet, put the new one
        let moved = node("b", Some("10.1.20.0/24"), &FLANNEL);
        let up = ds.updates(
            watcher::Event::Apply(moved.clone()),
            &mut init,
            &mut subnets,
        );
        assert_eq!(up.len(), 2);
        assert_eq!(up[0], WatchUpdate::Delete("10.1.18.0/24".parse().unwrap()));
        assert!(matches!(&up[1], WatchUpdate::Put(l) if l.subnet.to_string() == "10.1.20.0/24"));
        let gone = ds.updates(watcher::Event::Delete(moved), &mut init, &mut subnets);
        assert_eq!(
            gone,
            vec![WatchUpdate::Delete("10.1.20.0/24".parse().unwrap())]
        );
        // deleting an unknown node emits nothing
        assert!(
            ds.updates(watcher::Event::Delete(b), &mut init, &mut subnets)
                .is_empty()
        );
    }

    #[test]
    fn network_available_patch_shape() {
        let p = network_available_patch("2026-01-02T03:04:05Z");
        let c = &p["status"]["conditions"][0];
        assert_eq!(c["type"], "NetworkUnavailable");
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "FlannelIsUp");
        assert_eq!(c["lastHeartbeatTime"], "2026-01-02T03:04:05Z");
    }
}
