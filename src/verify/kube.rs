//! `--pods SELECTOR`: the existing pods to probe, listed through the Kubernetes API with the
//! credentials of a kubeconfig (server, CA, client certificate or bearer token of its current
//! context), as `kubectl get pods -A -l SELECTOR -o wide` would show them.

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the pods could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The API did not answer or refused.
    #[error("listing pods at {url}: {reason}")]
    Api {
        /// The request.
        url: String,
        /// What happened.
        reason: String,
    },
}

/// The parts of a kubeconfig's current context the pod listing needs.
#[derive(Debug, Clone, Default)]
pub struct KubeConfig {
    /// API server URL.
    pub server: String,
    /// CA bundle (PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate followed by its key (PEM).
    pub identity_pem: Option<Vec<u8>>,
    /// Bearer token.
    pub token: Option<String>,
    /// `insecure-skip-tls-verify`.
    pub insecure: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct File {
    #[serde(default)]
    current_context: String,
    #[serde(default)]
    contexts: Vec<Named<Context>>,
    #[serde(default)]
    clusters: Vec<Named<Cluster>>,
    #[serde(default)]
    users: Vec<Named<User>>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "context", alias = "cluster", alias = "user")]
    value: T,
}

#[derive(Deserialize, Default)]
struct Context {
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    user: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    #[serde(default)]
    server: String,
    certificate_authority: Option<PathBuf>,
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct User {
    client_certificate: Option<PathBuf>,
    client_certificate_data: Option<String>,
    client_key: Option<PathBuf>,
    client_key_data: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
}

/// The kubeconfig to use: the given path, else the first of `$KUBECONFIG`, else
/// `~/.kube/config`.
pub fn default_path(given: Option<&Path>) -> PathBuf {
    if let Some(p) = given {
        return p.to_path_buf();
    }
    if let Some(first) = std::env::var_os("KUBECONFIG")
        .and_then(|v| std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()))
    {
        return first;
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".kube").join("config")
}

impl KubeConfig {
    /// Read the current context (or `context`) of a kubeconfig file.
    pub fn load(path: &Path, context: Option<&str>) -> Result<KubeConfig, KubeError> {
        let fail = |reason: String| KubeError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(format!(
                "{e} (pass --kubeconfig PATH or set KUBECONFIG; --pods needs a reachable API server)"
            ))
        })?;
        let file: File = serde_saphyr::from_str(&text).map_err(|e| fail(e.to_string()))?;
        let wanted = context.unwrap_or(&file.current_context);
        let ctx = file
            .contexts
            .iter()
            .find(|c| c.name == wanted)
            .ok_or_else(|| fail(format!("no context {wanted:?}")))?;
        let cluster = file
            .clusters
            .iter()
            .find(|c| c.name == ctx.value.cluster)
            .ok_or_else(|| fail(format!("no cluster {:?}", ctx.value.cluster)))?;
        let user = file.users.iter().find(|u| u.name == ctx.value.user);
        let base = path.parent().unwrap_or(Path::new("."));
        let material = |inline: &Option<String>,
                        file: &Option<PathBuf>,
                        what: &str|
         -> Result<Option<Vec<u8>>, KubeError> {
            if let Some(data) = inline {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| fail(format!("{what}-data is not base64: {e}")))?;
                return Ok(Some(bytes));
            }
            match file {
                Some(f) => {
                    let p = base.join(f);
                    std::fs::read(&p)
                        .map(Some)
                        .map_err(|e| fail(format!("{what} {}: {e}", p.display())))
                }
                None => Ok(None),
            }
        };
        let c = &cluster.value;
        if c.server.is_empty() {
            return Err(fail(format!("cluster {:?} has no server", cluster.name)));
        }
        let mut cfg = KubeConfig {
            server: c.server.trim_end_matches('/').to_string(),
            ca_pem: material(
                &c.certificate_authority_data,
                &c.certificate_authority,
                "certificate-authority",
            )?,
            insecure: c.insecure_skip_tls_verify,
            ..Default::default()
        };
        if let Some(u) = user.map(|u| &u.value) {
            let cert = material(
                &u.client_certificate_data,
                &u.client_certificate,
                "client-certificate",
            )?;
            let key = material(&u.client_key_data, &u.client_key, "client-key")?;
            if let (Some(mut cert), Some(key)) = (cert, key) {
                cert.push(b'\n');
                cert.extend(key);
                cfg.identity_pem = Some(cert);
            }
            cfg.token = match (&u.token, &u.token_file) {
                (Some(t), _) => Some(t.clone()),
                (None, Some(f)) => Some(
                    std::fs::read_to_string(base.join(f))
                        .map_err(|e| fail(format!("token-file {}: {e}", f.display())))?
                        .trim()
                        .to_string(),
                ),
                (None, None) => None,
            };
        }
        Ok(cfg)
    }
}

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

/// Running, pod-network (not hostNetwork) pods matching `selector`, in every namespace or in
/// `namespace`.
pub fn list_pods(
    cfg: &KubeConfig,
    selector: &str,
    namespace: Option<&str>,
) -> Result<Vec<PodRef>, KubeError> {
    crate::artifact::ensure_crypto_provider();
    let path = match namespace {
        Some(ns) => format!("/api/v1/namespaces/{ns}/pods"),
        None => "/api/v1/pods".to_string(),
    };
    let base = format!("{}{path}", cfg.server);
    let fail = |reason: String| KubeError::Api {
        url: base.clone(),
        reason,
    };
    let url = reqwest::Url::parse_with_params(&base, &[("labelSelector", selector)])
        .map_err(|e| fail(e.to_string()))?;
    let mut builder = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .danger_accept_invalid_certs(cfg.insecure);
    if let Some(ca) = &cfg.ca_pem {
        let cert = reqwest::Certificate::from_pem(ca).map_err(|e| fail(format!("CA: {e}")))?;
        builder = builder.add_root_certificate(cert);
    }
    if let Some(pem) = &cfg.identity_pem {
        let id = reqwest::Identity::from_pem(pem)
            .map_err(|e| fail(format!("client certificate: {e}")))?;
        builder = builder.identity(id);
    }
    let client = builder.build().map_err(|e| fail(e.to_string()))?;
    let mut req = client.get(url).header("accept", "application/json");
    if let Some(t) = &cfg.token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().map_err(|e| fail(e.to_string()))?;
    let status = resp.status();
    let body = resp.text().map_err(|e| fail(e.to_string()))?;
    if !status.is_success() {
        return Err(fail(format!("HTTP {status}: {}", body.trim())));
    }
    let list: k8s_openapi::List<Pod> =
        serde_json::from_str(&body).map_err(|e| fail(format!("not a PodList: {e}")))?;
    Ok(running_pods(list.items))
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
    fn kubeconfig_current_context_with_inline_and_file_material() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), b"CA").unwrap();
        let cfg = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: b\n\
             contexts:\n- name: a\n  context: {{cluster: c1, user: u1}}\n- name: b\n  context: {{cluster: c2, user: u2}}\n\
             clusters:\n- name: c1\n  cluster: {{server: 'https://198.18.0.11:6443'}}\n\
             - name: c2\n  cluster:\n    server: https://198.18.0.12:6443/\n    certificate-authority: ca.pem\n\
             users:\n- name: u1\n  user: {{token: t1}}\n- name: u2\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            base64::engine::general_purpose::STANDARD.encode("CERT"),
            base64::engine::general_purpose::STANDARD.encode("KEY"),
        );
        let path = dir.path().join("config");
        std::fs::write(&path, cfg).unwrap();
        let k = KubeConfig::load(&path, None).unwrap();
        assert_eq!(k.server, "https://198.18.0.12:6443");
        assert_eq!(k.ca_pem.as_deref(), Some(&b"CA"[..]));
        assert_eq!(k.identity_pem.as_deref(), Some(&b"CERT\nKEY"[..]));
        assert_eq!(k.token, None);
        let k = KubeConfig::load(&path, Some("a")).unwrap();
        assert_eq!(k.token.as_deref(), Some("t1"));
        let e = KubeConfig::load(&path, Some("zz")).unwrap_err();
        assert!(e.to_string().contains("no context \"zz\""), "{e}");
        let e = KubeConfig::load(&dir.path().join("none"), None).unwrap_err();
        assert!(e.to_string().contains("--kubeconfig"), "{e}");
    }

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
