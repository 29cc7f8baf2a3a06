//! flannel's node annotations seen from the deploy host: the proof that an embedded agent came
//! up on a node (it annotates its Node once its lease is taken), and their removal on clean.

use super::session::{KubeApiError, KubeSession};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// flannel's annotation prefix (`--kube-annotation-prefix` default).
pub const ANNOTATION_PREFIX: &str = "flannel.alpha.coreos.com/";

/// The annotations flannel (and our agent) write on a Node.
pub const FLANNEL_ANNOTATIONS: &[&str] = &[
    "backend-type",
    "backend-data",
    "kube-subnet-manager",
    "public-ip",
    "backend-v6-data",
    "public-ipv6",
];

/// A node's flannel state as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNetwork {
    /// Node name.
    pub name: String,
    /// `spec.podCIDR`.
    pub pod_cidr: Option<String>,
    /// `kube-subnet-manager` annotation is `true`.
    pub annotated: bool,
    /// `backend-type` annotation.
    pub backend_type: Option<String>,
    /// `public-ip` annotation.
    pub public_ip: Option<String>,
    /// NetworkUnavailable condition status (`"False"` once the agent is up).
    pub network_unavailable: Option<String>,
}

impl NodeNetwork {
    /// Read from a Node object.
    pub fn from_node(node: &Node) -> NodeNetwork {
        let ann = node.metadata.annotations.clone().unwrap_or_default();
        let get = |k: &str| ann.get(&format!("{ANNOTATION_PREFIX}{k}")).cloned();
        NodeNetwork {
            name: node.metadata.name.clone().unwrap_or_default(),
            pod_cidr: node.spec.as_ref().and_then(|s| s.pod_cidr.clone()),
            annotated: get("kube-subnet-manager").as_deref() == Some("true"),
            backend_type: get("backend-type"),
            public_ip: get("public-ip"),
            network_unavailable: node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "NetworkUnavailable"))
                .map(|c| c.status.clone()),
        }
    }

    /// Whether the agent finished on this node with the expected backend.
    pub fn is_up(&self, backend: &str) -> bool {
        self.annotated
            && self.backend_type.as_deref() == Some(backend)
            && self.public_ip.is_some()
            && self.pod_cidr.is_some()
    }
}

/// Why a node is not up (for the failure message).
pub fn not_up_reason(node: Option<&NodeNetwork>, backend: &str) -> String {
    match node {
        None => "no Node object with this name (is the kubelet registered under another name? set k8s_nodename)".into(),
        Some(n) if n.pod_cidr.is_none() => {
            "spec.podCIDR not assigned (kube-controller-manager --allocate-node-cidrs)".into()
        }
        Some(n) if !n.annotated => "not annotated by a flannel agent yet".into(),
        Some(n) if n.backend_type.as_deref() != Some(backend) => format!(
            "annotated with backend {:?}, expected {backend:?}",
            n.backend_type.as_deref().unwrap_or("")
        ),
        Some(_) => "public-ip annotation missing".into(),
    }
}

/// Every Node's flannel state, by name.
pub fn list(session: &KubeSession) -> Result<BTreeMap<String, NodeNetwork>, KubeApiError> {
    let api: Api<Node> = Api::all(session.client());
    let nodes = session
        .block_on(api.list(&Default::default()))
        .map_err(|e| session.error("list Nodes", e))?;
    Ok(nodes
        .items
        .iter()
        .map(NodeNetwork::from_node)
        .map(|n| (n.name.clone(), n))
        .collect())
}

/// Poll until every named node is up with `backend`, or the deadline. Returns the last view and
/// the names still not up (empty on success).
pub fn wait_up(
    session: &KubeSession,
    names: &[String],
    backend: &str,
    timeout: Duration,
) -> Result<(BTreeMap<String, NodeNetwork>, Vec<String>), KubeApiError> {
    let deadline = Instant::now() + timeout;
    loop {
        let view = list(session)?;
        let missing: Vec<String> = names
            .iter()
            .filter(|n| !view.get(*n).is_some_and(|s| s.is_up(backend)))
            .cloned()
            .collect();
        if missing.is_empty() || Instant::now() >= deadline {
            return Ok((view, missing));
        }
        session.sleep(Duration::from_millis(500));
    }
}

/// Remove flannel's annotations from the named nodes (a JSON merge patch with nulls, only for
/// keys present). Returns (node, keys removed); nodes that do not exist are skipped.
pub fn remove_annotations(
    session: &KubeSession,
    names: &[String],
    dry_run: bool,
) -> Result<Vec<(String, Vec<String>)>, KubeApiError> {
    let api: Api<Node> = Api::all(session.client());
    let mut out = Vec::new();
    for name in names {
        let Some(node) = session
            .block_on(api.get_opt(name))
            .map_err(|e| session.error(format!("get Node {name}"), e))?
        else {
            continue;
        };
        let ann = node.metadata.annotations.unwrap_or_default();
        let keys: Vec<String> = FLANNEL_ANNOTATIONS
            .iter()
            .map(|k| format!("{ANNOTATION_PREFIX}{k}"))
            .filter(|k| ann.contains_key(k))
            .collect();
        if keys.is_empty() {
            continue;
        }
        let nulls: Map<String, Json> = keys.iter().map(|k| (k.clone(), Json::Null)).collect();
        let patch = serde_json::json!({ "metadata": { "annotations": nulls } });
        let params = PatchParams {
            dry_run,
            ..PatchParams::default()
        };
        session
            .block_on(api.patch(name, &params, &Patch::Merge(&patch)))
            .map_err(|e| {
                session.error(format!("remove flannel annotations from Node {name}"), e)
            })?;
        out.push((name.clone(), keys));
    }
    Ok(out)
}
