//! A small etcd v3 client over etcd's JSON gateway (`/v3/kv/*`), for the deploy host: write
//! flannel's network config before the agents start and remove flannel's keys on clean.
//!
//! The deploy host needs no gRPC stack for three key operations; the node agent has its own
//! full client (watches, leases). Endpoints are tried in order; TLS uses the cluster CA and a
//! client certificate when the endpoint is `https://`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value as Json, json};
use std::path::PathBuf;
use std::time::Duration;

/// TLS material for `https://` endpoints.
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// CA bundle (PEM).
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// Client key (PEM).
    pub key: Option<PathBuf>,
}

/// Errors talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// A TLS file could not be read or used.
    #[error("etcd TLS: {0}")]
    Tls(String),
    /// Every endpoint failed.
    #[error("etcd {op} {key:?} failed on every endpoint: {}", failures.join("; "))]
    Unavailable {
        /// Operation.
        op: &'static str,
        /// Key.
        key: String,
        /// `endpoint: reason` for each endpoint.
        failures: Vec<String>,
    },
}

/// A client for a list of endpoints.
pub struct EtcdGateway {
    endpoints: Vec<String>,
    http: reqwest::blocking::Client,
}

impl EtcdGateway {
    /// Build a client; `tls` is used for `https://` endpoints.
    pub fn new(endpoints: &[String], tls: &EtcdTls) -> Result<Self, EtcdError> {
        crate::artifact::ensure_crypto_provider();
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| EtcdError::Tls(format!("{}: {e}", p.display())))
        };
        let mut builder = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10));
        if let Some(ca) = &tls.ca {
            let cert = reqwest::Certificate::from_pem(&read(ca)?)
                .map_err(|e| EtcdError::Tls(format!("{}: {e}", ca.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            let mut pem = read(cert)?;
            pem.extend(read(key)?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                EtcdError::Tls(format!("{} + {}: {e}", cert.display(), key.display()))
            })?;
            builder = builder.identity(id);
        }
        let http = builder.build().map_err(|e| EtcdError::Tls(e.to_string()))?;
        Ok(EtcdGateway {
            endpoints: endpoints
                .iter()
                .map(|e| e.trim_end_matches('/').to_string())
                .collect(),
            http,
        })
    }

    fn call(&self, op: &'static str, path: &str, key: &str, body: Json) -> Result<Json, EtcdError> {
        let mut failures = Vec::new();
        for ep in &self.endpoints {
            let url = format!("{ep}{path}");
            match self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
            {
                Ok(resp) if resp.status().is_success() => match resp
                    .text()
                    .map_err(|e| e.to_string())
                    .and_then(|t| serde_json::from_str::<Json>(&t).map_err(|e| e.to_string()))
                {
                    Ok(v) => return Ok(v),
                    Err(e) => failures.push(format!("{ep}: bad response: {e}")),
                },
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().unwrap_or_default();
                    failures.push(format!("{ep}: HTTP {status} {}", text.trim()));
                }
                Err(e) => failures.push(format!("{ep}: {e}")),
            }
        }
        Err(EtcdError::Unavailable {
            op,
            key: key.to_string(),
            failures,
        })
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Result<Option<String>, EtcdError> {
        let v = self.call(
            "get",
            "/v3/kv/range",
            key,
            json!({ "key": B64.encode(key) }),
        )?;
        Ok(v["kvs"]
            .as_array()
            .and_then(|kvs| kvs.first())
            .and_then(|kv| kv["value"].as_str())
            .and_then(|b| B64.decode(b).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Set `key` to `value`.
    pub fn put(&self, key: &str, value: &str) -> Result<(), EtcdError> {
        self.call(
            "put",
            "/v3/kv/put",
            key,
            json!({ "key": B64.encode(key), "value": B64.encode(value) }),
        )
        .map(|_| ())
    }

    /// Delete every key starting with `prefix`; returns how many were deleted.
    pub fn delete_prefix(&self, prefix: &str) -> Result<u64, EtcdError> {
        let end = prefix_end(prefix.as_bytes());
        let v = self.call(
            "delete",
            "/v3/kv/deleterange",
            prefix,
            json!({ "key": B64.encode(prefix), "range_end": B64.encode(end) }),
        )?;
        Ok(v["deleted"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| v["deleted"].as_u64())
            .unwrap_or(0))
    }
}

/// The smallest key greater than every key with this prefix (etcd's range_end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(
            prefix_end(b"/coreos.com/network/"),
            b"/coreos.com/network0".to_vec()
        );
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xff]), vec![0]);
    }
}
