//! Credentials for the embedded agents: the manifest carries a Secret of type
//! `kubernetes.io/service-account-token` for the flannel ServiceAccount; the token controller
//! fills it with a token and the cluster CA, and setup turns those into the kubeconfig each node's
//! agent reads. The agent therefore has exactly the RBAC the manifest grants the ServiceAccount.

use super::session::{KubeApiError, KubeSession};
use crate::render::KubeObject;
use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::Value as Json;
use std::time::{Duration, Instant};

/// The Secret type the token controller fills.
pub const TOKEN_SECRET_TYPE: &str = "kubernetes.io/service-account-token";

/// Where the token Secret is, from the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSecretRef {
    /// Namespace.
    pub namespace: String,
    /// Secret name.
    pub name: String,
    /// The ServiceAccount it belongs to.
    pub service_account: String,
}

/// A filled token Secret.
#[derive(Debug, Clone)]
pub struct ServiceAccountToken {
    /// Bearer token.
    pub token: String,
    /// The cluster CA (PEM), if the Secret has one.
    pub ca_pem: Option<Vec<u8>>,
}

/// The service-account-token Secret among the manifest's objects, if any.
pub fn token_secret(objects: &[KubeObject]) -> Option<TokenSecretRef> {
    objects.iter().find_map(|o| {
        if o.api_version != "v1" || o.kind != "Secret" {
            return None;
        }
        if o.body.get("type").and_then(Json::as_str) != Some(TOKEN_SECRET_TYPE) {
            return None;
        }
        let sa = o
            .body
            .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
            .and_then(Json::as_str)?;
        Some(TokenSecretRef {
            namespace: o.namespace.clone().unwrap_or_else(|| "default".into()),
            name: o.name.clone(),
            service_account: sa.to_string(),
        })
    })
}

/// Read the Secret until the token controller has filled it (`None` if it does not exist, as
/// after a dry run).
pub fn wait_token(
    session: &KubeSession,
    secret: &TokenSecretRef,
    timeout: Duration,
) -> Result<Option<ServiceAccountToken>, KubeApiError> {
    let api: Api<Secret> = Api::namespaced(session.client(), &secret.namespace);
    let deadline = Instant::now() + timeout;
    let op = format!("read Secret {}/{}", secret.namespace, secret.name);
    loop {
        let Some(s) = session
            .block_on(api.get_opt(&secret.name))
            .map_err(|e| session.error(op.clone(), e))?
        else {
            return Ok(None);
        };
        let data = s.data.unwrap_or_default();
        if let Some(token) = data.get("token").filter(|t| !t.0.is_empty()) {
            let token =
                String::from_utf8(token.0.clone()).map_err(|_| KubeApiError::Unexpected {
                    op: op.clone(),
                    reason: "the token is not text".into(),
                })?;
            return Ok(Some(ServiceAccountToken {
                token,
                ca_pem: data.get("ca.crt").map(|c| c.0.clone()),
            }));
        }
        if Instant::now() >= deadline {
            return Err(KubeApiError::Timeout(format!(
                "Secret {}/{} has no token after {} s: is kube-controller-manager running with \
                 --service-account-private-key-file (it fills service-account-token Secrets)?",
                secret.namespace,
                secret.name,
                timeout.as_secs()
            )));
        }
        session.sleep(Duration::from_millis(500));
    }
}

/// The kubeconfig an agent uses: `server` (as the node reaches the API server), the cluster CA
/// from the Secret, the ServiceAccount's token.
pub fn agent_kubeconfig(server: &str, account: &str, token: &ServiceAccountToken) -> String {
    let cluster = match &token.ca_pem {
        Some(ca) => format!(
            "    certificate-authority-data: {}\n",
            base64::engine::general_purpose::STANDARD.encode(ca)
        ),
        None => String::new(),
    };
    format!(
        "# Written by installer setup: the flannel agent's credentials (ServiceAccount {account}).\n\
         apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: kubernetes\n  cluster:\n    server: {server}\n{cluster}\
         users:\n\
         - name: {account}\n  user:\n    token: {token}\n\
         contexts:\n\
         - name: flannel\n  context:\n    cluster: kubernetes\n    user: {account}\n\
         current-context: flannel\n",
        token = token.token
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_is_readable_by_the_kube_crate() {
        let tok = ServiceAccountToken {
            token: "abc.def".into(),
            ca_pem: Some(
                b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_vec(),
            ),
        };
        let text = agent_kubeconfig("https://198.18.0.1:6443", "flannel", &tok);
        let kc = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(kc.current_context.as_deref(), Some("flannel"));
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://198.18.0.1:6443"));
        assert!(cluster.certificate_authority_data.is_some());
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert!(user.token.is_some());
        assert!(text.contains("    token: abc.def\n"), "{text}");
    }
}
