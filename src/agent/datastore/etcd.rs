//! The etcd v3 datastore (flannel-spec §4): config at `<prefix>/config`, leases at
//! `<prefix>/subnets/<a.b.c.d>-<len>` holding LeaseAttrs JSON and attached to an etcd lease of
//! the TTL (24 h); creation by transaction "only if absent"; renewal by a new etcd lease and a
//! re-put; a prefix watch with reconnect (100 ms → 5 s backoff) and re-list after compaction.

use super::{AcquireRequest, Datastore, DatastoreError, WatchUpdate, short_etcd_error};
use crate::agent::lease::{
    Lease, LeaseAttrs, compatible, parse_subnet_key, pick_subnet, subnet_key,
};
use crate::agent::log::{info, warning};
use crate::agent::netconf::{NetConf, parse_and_validate};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    KeyValue, PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use ipnet::Ipv4Net;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// flannel's default endpoints.
pub const DEFAULT_ENDPOINTS: [&str; 2] = ["http://127.0.0.1:4001", "http://127.0.0.1:2379"];
/// flannel's default key prefix.
pub const DEFAULT_PREFIX: &str = "/coreos.com/network";
/// Lease TTL flannel uses (24 h).
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Per-request timeout for unary calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts when creating a lease races with other nodes (§4).
const ACQUIRE_ATTEMPTS: usize = 10;

/// How to reach etcd.
#[derive(Debug, Clone, Default)]
pub struct EtcdSettings {
    /// Client URLs.
    pub endpoints: Vec<String>,
    /// Key prefix (`/coreos.com/network`).
    pub prefix: String,
    /// CA bundle for TLS.
    pub cafile: Option<PathBuf>,
    /// Client certificate.
    pub certfile: Option<PathBuf>,
    /// Client key.
    pub keyfile: Option<PathBuf>,
    /// User name (etcd auth).
    pub username: Option<String>,
    /// Password (etcd auth).
    pub password: Option<String>,
}

/// The etcd datastore.
#[derive(Clone)]
pub struct EtcdDatastore {
    client: Client,
    prefix: String,
    endpoints: String,
    ttl: Duration,
}

fn read(path: &PathBuf) -> Result<Vec<u8>, DatastoreError> {
    std::fs::read(path).map_err(|error| DatastoreError::TlsFile {
        path: path.display().to_string(),
        error,
    })
}

impl EtcdDatastore {
    /// Connect (lazily: an etcd that is down makes the calls fail, not this).
    pub async fn connect(settings: &EtcdSettings, ttl: Duration) -> Result<Self, DatastoreError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if settings.cafile.is_some() || settings.certfile.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &settings.cafile {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            // a client identity only with both halves, as flannel does
            if let (Some(cert), Some(key)) = (&settings.certfile, &settings.keyfile) {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            opts = opts.with_tls(tls);
        }
        if let (Some(user), Some(pass)) = (&settings.username, &settings.password) {
            opts = opts.with_user(user.clone(), pass.clone());
        }
        let endpoints = if settings.endpoints.is_empty() {
            DEFAULT_ENDPOINTS.iter().map(|s| s.to_string()).collect()
        } else {
            settings.endpoints.clone()
        };
        let client = Client::connect(&endpoints, Some(opts))
            .await
            .map_err(|error| DatastoreError::Etcd {
                op: format!("connect to {}", endpoints.join(",")),
                error,
            })?;
        let prefix = if settings.prefix.is_empty() {
            DEFAULT_PREFIX.to_string()
        } else {
            settings.prefix.trim_end_matches('/').to_string()
        };
        Ok(EtcdDatastore {
            client,
            prefix,
            endpoints: endpoints.join(","),
            ttl,
        })
    }

    /// `<prefix>/config`.
    pub fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    /// `<prefix>/subnets/`.
    pub fn subnets_prefix(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }

    /// The key of a subnet.
    pub fn lease_key(&self, subnet: Ipv4Net) -> String {
        format!("{}{}", self.subnets_prefix(), subnet_key(subnet))
    }

    async fn call<T, F>(&self, op: impl Into<String>, fut: F) -> Result<T, DatastoreError>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        let op = op.into();
        match tokio::time::timeout(CALL_TIMEOUT, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(error)) => Err(DatastoreError::Etcd { op, error }),
            Err(_) => Err(DatastoreError::Timeout {
                op,
                secs: CALL_TIMEOUT.as_secs(),
                endpoints: self.endpoints.clone(),
            }),
        }
    }

    fn lease_of(&self, kv: &KeyValue) -> Option<Lease> {
        let key = kv.key_str().ok()?;
        let name = key.strip_prefix(&self.subnets_prefix())?;
        let Some(subnet) = parse_subnet_key(name) else {
            warning!("Ignoring key {key}: not a subnet key");
            return None;
        };
        match serde_json::from_slice::<LeaseAttrs>(kv.value()) {
            Ok(attrs) => Some(Lease {
                subnet,
                attrs,
                expiration: None,
                id: kv.lease(),
            }),
            Err(e) => {
                warning!("Ignoring lease {key}: value is not LeaseAttrs JSON ({e})");
                None
            }
        }
    }

    /// Every lease and the revision of the listing.
    pub async fn list(&self) -> Result<(Vec<Lease>, i64), DatastoreError> {
        let mut c = self.client.clone();
        let resp = self
            .call(
                format!("list {}", self.subnets_prefix()),
                c.get(self.subnets_prefix(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok((
            resp.kvs()
                .iter()
                .filter_map(|kv| self.lease_of(kv))
                .collect(),
            rev,
        ))
    }

    async fn grant(&self) -> Result<(i64, Instant), DatastoreError> {
        let mut c = self.client.clone();
        let ttl = self.ttl.as_secs().max(1) as i64;
        let start = Instant::now();
        let resp = self
            .call(format!("grant a {ttl} s lease"), c.lease_grant(ttl, None))
            .await?;
        let granted = Duration::from_secs(resp.ttl().max(1) as u64);
        Ok((resp.id(), start + granted))
    }

    async fn revoke(&self, id: i64) {
        if id == 0 {
            return;
        }
        let mut c = self.client.clone();
        let _ = self.call("revoke lease", c.lease_revoke(id)).await;
    }

    /// Rewrite an existing key with `attrs` and a fresh TTL lease (reservations keep no lease);
    /// None when the key is gone (deleted or expired meanwhile): it is never resurrected.
    async fn update(
        &self,
        subnet: Ipv4Net,
        attrs: &LeaseAttrs,
        reservation: bool,
    ) -> Result<Option<Lease>, DatastoreError> {
        let value = serde_json::to_vec(attrs).unwrap_or_default();
        let key = self.lease_key(subnet);
        let (id, expiration) = if reservation {
            (0, None)
        } else {
            let (id, exp) = self.grant().await?;
            (id, Some(exp))
        };
        let put_opts = (id != 0).then(|| PutOptions::new().with_lease(id));
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Greater, 0)])
            .and_then([TxnOp::put(key.clone(), value, put_opts)]);
        let mut c = self.client.clone();
        let done = match self.call(format!("update {key}"), c.txn(txn)).await {
            Ok(r) => r.succeeded(),
            Err(e) => {
                self.revoke(id).await;
                return Err(e);
            }
        };
        if !done {
            self.revoke(id).await;
            return Ok(None);
        }
        Ok(Some(Lease {
            subnet,
            attrs: attrs.clone(),
            expiration,
            id,
        }))
    }

    /// Create the key only if absent; None when someone else got there first.
    async fn create(
        &self,
        subnet: Ipv4Net,
        attrs: &LeaseAttrs,
    ) -> Result<Option<Lease>, DatastoreError> {
        let key = self.lease_key(subnet);
        let value = serde_json::to_vec(attrs).unwrap_or_default();
        let (id, expiration) = self.grant().await?;
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                value,
                Some(PutOptions::new().with_lease(id)),
            )]);
        let mut c = self.client.clone();
        let resp = match self.call(format!("create {key}"), c.txn(txn)).await {
            Ok(r) => r,
            Err(e) => {
                self.revoke(id).await;
                return Err(e);
            }
        };
        if !resp.succeeded() {
            self.revoke(id).await;
            return Ok(None);
        }
        Ok(Some(Lease {
            subnet,
            attrs: attrs.clone(),
            expiration: Some(expiration),
            id,
        }))
    }

    /// Watch from `start` until an error; returns why it stopped and the last revision seen.
    async fn watch_from(&self, start: i64, tx: &mpsc::Sender<WatchUpdate>) -> WatchEnd {
        let mut c = self.client.clone();
        let opts = WatchOptions::new().with_prefix().with_start_revision(start);
        let mut stream = match self
            .call("watch", c.watch(self.subnets_prefix(), Some(opts)))
            .await
        {
            Ok(s) => s,
            Err(e) => return WatchEnd::Error(e.to_string(), start - 1, false),
        };
        let mut last = start - 1;
        let mut healthy = false;
        loop {
            let msg = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => return WatchEnd::Error("watch stream ended".into(), last, healthy),
                Err(e) => return WatchEnd::Error(short_etcd_error(&e), last, healthy),
            };
            if msg.compact_revision() > 0 {
                return WatchEnd::Compacted(msg.compact_revision());
            }
            if msg.canceled() {
                return WatchEnd::Error(
                    format!("watch canceled: {}", msg.cancel_reason()),
                    last,
                    healthy,
                );
            }
            healthy = true;
            for ev in msg.events() {
                let Some(kv) = ev.kv() else { continue };
                last = last.max(kv.mod_revision());
                let update = match ev.event_type() {
                    EventType::Put => self.lease_of(kv).map(WatchUpdate::Put),
                    EventType::Delete => kv
                        .key_str()
                        .ok()
                        .and_then(|k| k.strip_prefix(&self.subnets_prefix()))
                        .and_then(parse_subnet_key)
                        .map(WatchUpdate::Delete),
                };
                if let Some(u) = update
                    && tx.send(u).await.is_err()
                {
                    return WatchEnd::Closed;
                }
            }
            if let Some(h) = msg.header() {
                last = last.max(h.revision());
            }
        }
    }
}

/// Why a watch stopped.
enum WatchEnd {
    /// The receiver is gone.
    Closed,
    /// The start revision was compacted away: re-list.
    Compacted(i64),
    /// A connection or server error; resume after the revision; whether it had worked.
    Error(String, i64, bool),
}

impl Datastore for EtcdDatastore {
    async fn network_config(&self) -> Result<NetConf, DatastoreError> {
        let key = self.config_key();
        let mut c = self.client.clone();
        let resp = self
            .call(format!("get {key}"), c.get(key.clone(), None))
            .await?;
        let Some(kv) = resp.kvs().first() else {
            return Err(DatastoreError::ConfigNotFound { key });
        };
        Ok(parse_and_validate(&String::from_utf8_lossy(kv.value()))?)
    }

    async fn stored_lease(&self, public_ip: Ipv4Addr) -> Result<Option<Lease>, DatastoreError> {
        let (leases, _) = self.list().await?;
        Ok(leases.into_iter().find(|l| l.attrs.public_ip == public_ip))
    }

    async fn acquire_lease(&self, req: AcquireRequest<'_>) -> Result<Lease, DatastoreError> {
        for _ in 0..ACQUIRE_ATTEMPTS {
            let (leases, _) = self.list().await?;
            // 1. a lease of this public address: reuse it when it fits the config
            if let Some(mine) = leases
                .iter()
                .find(|l| l.attrs.public_ip == req.attrs.public_ip)
            {
                if compatible(req.conf, mine.subnet) {
                    let Some(lease) = self.update(mine.subnet, req.attrs, mine.id == 0).await?
                    else {
                        continue; // it expired meanwhile
                    };
                    // the key moved to the new etcd lease; the old one holds nothing now
                    if mine.id != lease.id {
                        self.revoke(mine.id).await;
                    }
                    info!(
                        "Found lease ({}) for current IP ({}), reusing",
                        mine.subnet, req.attrs.public_ip
                    );
                    return Ok(lease);
                }
                info!(
                    "Found lease ({}) for current IP ({}) but not compatible with the current config, deleting",
                    mine.subnet, req.attrs.public_ip
                );
                self.delete_lease(mine.subnet).await?;
                continue;
            }
            let taken: Vec<Ipv4Net> = leases.iter().map(|l| l.subnet).collect();
            let overlaps = |s: Ipv4Net| taken.iter().any(|t| t.contains(&s) || s.contains(t));
            // 2. the previous subnet from subnet.env, when still free and valid
            let candidate = match req.previous_subnet {
                Some(prev) if compatible(req.conf, prev) && !overlaps(prev) => {
                    info!("Trying the previous subnet {prev} from the subnet file");
                    prev
                }
                _ => pick_subnet(req.conf, &taken).ok_or(DatastoreError::OutOfSubnets)?,
            };
            // 3. create it unless someone else did meanwhile
            if let Some(lease) = self.create(candidate, req.attrs).await? {
                return Ok(lease);
            }
            info!("Subnet {candidate} was taken meanwhile; retrying");
        }
        Err(DatastoreError::MaxRetries)
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<Lease, DatastoreError> {
        if lease.expiration.is_none() {
            return Ok(lease.clone());
        }
        let renewed = self
            .update(lease.subnet, &lease.attrs, false)
            .await?
            .ok_or(DatastoreError::LeaseGone {
                subnet: lease.subnet,
            })?;
        // the key moved to the new etcd lease; drop the old one
        self.revoke(lease.id).await;
        Ok(renewed)
    }

    async fn watch_leases(&self, tx: mpsc::Sender<WatchUpdate>) {
        const MIN: Duration = Duration::from_millis(100);
        const MAX: Duration = Duration::from_secs(5);
        let mut backoff = MIN;
        let mut resume: Option<i64> = None;
        loop {
            if tx.is_closed() {
                return;
            }
            let start = match resume {
                Some(rev) => rev,
                None => match self.list().await {
                    Ok((leases, rev)) => {
                        if tx.send(WatchUpdate::Snapshot(leases)).await.is_err() {
                            return;
                        }
                        rev + 1
                    }
                    Err(e) => {
                        warning!("Listing leases failed: {e}; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX);
                        continue;
                    }
                },
            };
            match self.watch_from(start, &tx).await {
                WatchEnd::Closed => return,
                WatchEnd::Compacted(rev) => {
                    warning!(
                        "Watch revision {start} was compacted (now {rev}); listing leases again"
                    );
                    resume = None;
                }
                WatchEnd::Error(e, last, worked) => {
                    if worked {
                        backoff = MIN;
                    }
                    warning!(
                        "Watch of {} failed: {e}; reconnecting in {backoff:?}",
                        self.subnets_prefix()
                    );
                    resume = Some(last + 1);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX);
                }
            }
        }
    }

    async fn delete_lease(&self, subnet: Ipv4Net) -> Result<(), DatastoreError> {
        let key = self.lease_key(subnet);
        let mut c = self.client.clone();
        self.call(format!("delete {key}"), c.delete(key.clone(), None))
            .await?;
        Ok(())
    }
}
