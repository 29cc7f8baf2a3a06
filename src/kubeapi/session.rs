//! A connection to the Kubernetes API for the deploy host's synchronous commands: where the
//! kubeconfig comes from (`--kubeconfig`, then `KUBECONFIG`, then `~/.kube/config`), a `kube`
//! client built from it, a small runtime to drive it, and API errors turned into messages that
//! name the operation, the HTTP code and the API server's own words.

use kube::config::{KubeConfigOptions, Kubeconfig};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// A Kubernetes API operation failed.
#[derive(Debug, Error)]
pub enum KubeApiError {
    /// No kubeconfig was named and none exists where one is looked for.
    #[error(
        "no kubeconfig for the Kubernetes API (looked at {}); pass --kubeconfig FILE or set KUBECONFIG",
        .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NoKubeconfig {
        /// Paths looked at.
        tried: Vec<PathBuf>,
    },
    /// The kubeconfig cannot be read or used.
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// The file (or the `KUBECONFIG` list).
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The API server answered with an error status.
    #[error("{op}: {code} {reason}: {message}")]
    Api {
        /// What was being done (`apply ConfigMap kube-system/kube-flannel-cfg`).
        op: String,
        /// HTTP status code.
        code: u16,
        /// The API's reason (`Forbidden`, `Conflict`, …).
        reason: String,
        /// The API's message, with field causes appended.
        message: String,
    },
    /// The API server could not be reached or the answer could not be read.
    #[error("{op}: cannot talk to the API server {server}: {reason}")]
    Unreachable {
        /// What was being done.
        op: String,
        /// The server URL.
        server: String,
        /// The root cause.
        reason: String,
    },
    /// A manifest object of a kind this tool does not know how to apply.
    #[error(
        "{object}: apiVersion {api_version} kind {kind} is not one installer applies (known: {known})"
    )]
    UnknownKind {
        /// The object.
        object: String,
        /// Its apiVersion.
        api_version: String,
        /// Its kind.
        kind: String,
        /// Supported kinds.
        known: String,
    },
    /// Something did not happen in time.
    #[error("{0}")]
    Timeout(String),
    /// The answer was not what the API documents.
    #[error("{op}: unexpected answer from the API server: {reason}")]
    Unexpected {
        /// What was being done.
        op: String,
        /// What was wrong.
        reason: String,
    },
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

impl KubeApiError {
    /// The HTTP status of an API error (None for transport errors).
    pub fn code(&self) -> Option<u16> {
        match self {
            KubeApiError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The kubeconfig files to use, in the order the operator expects: `explicit`, else the
/// `KUBECONFIG` list (colon separated), else `~/.kube/config`.
pub fn locate_kubeconfig(explicit: Option<&Path>) -> Result<Vec<PathBuf>, KubeApiError> {
    if let Some(p) = explicit {
        if !p.is_file() {
            return Err(KubeApiError::Kubeconfig {
                path: p.display().to_string(),
                reason: "no such file (--kubeconfig)".into(),
            });
        }
        return Ok(vec![p.to_path_buf()]);
    }
    if let Some(list) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        let named: Vec<PathBuf> = std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        let existing: Vec<PathBuf> = named.iter().filter(|p| p.is_file()).cloned().collect();
        if existing.is_empty() {
            return Err(KubeApiError::Kubeconfig {
                path: list.to_string_lossy().into_owned(),
                reason: "KUBECONFIG names no existing file".into(),
            });
        }
        return Ok(existing);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    let default = home.join(".kube/config");
    if default.is_file() {
        Ok(vec![default])
    } else {
        Err(KubeApiError::NoKubeconfig {
            tried: vec![default],
        })
    }
}

/// A client of one API server with a runtime to drive it from synchronous code.
pub struct KubeSession {
    rt: tokio::runtime::Runtime,
    client: kube::Client,
    /// The kubeconfig file(s) used, for messages.
    pub source: String,
    /// The API server URL.
    pub server: String,
}

impl KubeSession {
    /// Connect with the kubeconfig found by [`locate_kubeconfig`] (nothing is sent yet).
    pub fn connect(explicit: Option<&Path>) -> Result<KubeSession, KubeApiError> {
        let files = locate_kubeconfig(explicit)?;
        let source = files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let bad = |reason: String| KubeApiError::Kubeconfig {
            path: source.clone(),
            reason,
        };
        let mut merged: Option<Kubeconfig> = None;
        for f in &files {
            let kc = Kubeconfig::read_from(f).map_err(|e| KubeApiError::Kubeconfig {
                path: f.display().to_string(),
                reason: error_chain(&e),
            })?;
            merged = Some(match merged {
                None => kc,
                Some(m) => m.merge(kc).map_err(|e| bad(error_chain(&e)))?,
            });
        }
        let kc = merged.ok_or_else(|| bad("no kubeconfig file".into()))?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(KubeApiError::Runtime)?;
        let config = rt
            .block_on(kube::Config::from_custom_kubeconfig(
                kc,
                &KubeConfigOptions::default(),
            ))
            .map_err(|e| bad(error_chain(&e)))?;
        let server = config.cluster_url.to_string();
        let client = {
            let _guard = rt.enter();
            kube::Client::try_from(config).map_err(|e| bad(error_chain(&e)))?
        };
        Ok(KubeSession {
            rt,
            client,
            source,
            server: server.trim_end_matches('/').to_string(),
        })
    }

    /// The client (cheap to clone).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Run a future to completion.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Turn a client error into a [`KubeApiError`] for operation `op`.
    pub fn error(&self, op: impl Into<String>, e: kube::Error) -> KubeApiError {
        map_error(op.into(), &self.server, e)
    }

    /// Sleep (between polls).
    pub fn sleep(&self, d: Duration) {
        self.rt.block_on(async move { tokio::time::sleep(d).await });
    }
}

/// A client error as a [`KubeApiError`].
pub fn map_error(op: String, server: &str, e: kube::Error) -> KubeApiError {
    match e {
        kube::Error::Api(status) => {
            let mut message = status.message.clone();
            if let Some(details) = &status.details {
                for cause in &details.causes {
                    if !cause.field.is_empty() && !message.contains(&cause.field) {
                        message.push_str(&format!("; {}: {}", cause.field, cause.message));
                    }
                }
            }
            KubeApiError::Api {
                op,
                code: status.code,
                reason: status.reason.clone(),
                message,
            }
        }
        other => KubeApiError::Unreachable {
            op,
            server: server.to_string(),
            reason: error_chain(&other),
        },
    }
}

/// An error and its sources in one line, without repeating text already said.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
