//! `--pods SELECTOR`: the existing pods to probe, listed through the Kubernetes API with the
//! `kube` client of the deploy host's [`KubeSession`] (the kubeconfig from `--kubeconfig`, else
//! `$KUBECONFIG`, else `~/.kube/config`), as `kubectl get pods -A -l SELECTOR -o wide` would
//! show them.

use crate::kubeapi::{KubeApiError, KubeSession};
use ::kube::Api;
use ::kube::api::ListParams;
use k8s_openapi::api::core::v1::Pod;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// How long the pod listing may take before it counts as failed.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// A running pod to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Pod address.
    pub ip: IpAddr,
    /// Its node's address, as the API reports it.
    pub host_ip: Option<IpAddr>,
    /// Its node's name.
    pub node_name: String,
}

/// Running, pod-network (not hostNetwork) pods matching the label `selector`, in every
/// namespace or in `namespace`, through `session`.
pub fn list_pods(
    session: &KubeSession,
    selector: &str,
    namespace: Option<&str>,
) -> Result<Vec<PodRef>, KubeApiError> {
    let (api, scope): (Api<Pod>, String) = match namespace {
        Some(ns) => (
            Api::namespaced(session.client(), ns),
            format!("in namespace {ns}"),
        ),
        None => (Api::all(session.client()), "in every namespace".to_string()),
    };
    let op = format!(
        "list pods -l {selector} {scope} (kubeconfig {})",
        session.source
    );
    let params = ListParams::default().labels(selector);
    let list = session
        // the timer must be made inside the session's runtime
        .block_on(async { tokio::time::timeout(LIST_TIMEOUT, api.list(&params)).await })
        .map_err(|_| {
            KubeApiError::Timeout(format!(
                "{op}: the API server {} did not answer within {}s",
                session.server,
                LIST_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| session.error(op, e))?;
    Ok(running_pods(list.items))
}

/// Connect with the kubeconfig `kubeconfig` (else `$KUBECONFIG`, else `~/.kube/config`) and
/// list the pods to probe, as [`list_pods`] does.
pub fn pods_for_selector(
    kubeconfig: Option<&Path>,
    selector: &str,
    namespace: Option<&str>,
) -> Result<Vec<PodRef>, KubeApiError> {
    let session = KubeSession::connect(kubeconfig)?;
    list_pods(&session, selector, namespace)
}

/// The pods that can be probed: running, with a pod-network address.
pub fn running_pods(pods: Vec<Pod>) -> Vec<PodRef> {
    pods.into_iter()
        .filter_map(|pod| {
            let spec = pod.spec?;
            let status = pod.status?;
            if spec.host_network == Some(true) || status.phase.as_deref() != Some("Running") {
                return None;
            }
            Some(PodRef {
                namespace: pod.metadata.namespace.unwrap_or_default(),
                name: pod.metadata.name.unwrap_or_default(),
                ip: status.pod_ip?.parse().ok()?,
                host_ip: status.host_ip.and_then(|h| h.parse().ok()),
                node_name: spec.node_name.unwrap_or_default(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_running_pod_network_pods() {
        let list: k8s_openapi::List<Pod> = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "PodList", "metadata": {},
            "items": [
                {"metadata": {"name": "a", "namespace": "x"}, "spec": {"containers": [], "nodeName": "n1"},
                 "status": {"phase": "Running", "podIP": "198.19.65.5", "hostIP": "198.18.0.11"}},
                {"metadata": {"name": "b", "namespace": "x"}, "spec": {"containers": [], "nodeName": "n1", "hostNetwork": true},
                 "status": {"phase": "Running", "podIP": "198.18.0.11", "hostIP": "198.18.0.11"}},
                {"metadata": {"name": "c", "namespace": "x"}, "spec": {"containers": []},
                 "status": {"phase": "Pending"}}
            ]
        }))
        .unwrap();
        let pods = running_pods(list.items);
        assert_eq!(
            pods,
            vec![PodRef {
                namespace: "x".into(),
                name: "a".into(),
                ip: "198.19.65.5".parse().unwrap(),
                host_ip: Some("198.18.0.11".parse().unwrap()),
                node_name: "n1".into(),
            }]
        );
    }
}
