//! Where subnets come from and where peers are found: the [`Datastore`] trait, implemented for
//! etcd (flannel-spec §4) in [`etcd`]; the Kubernetes API datastore (§3) implements the same
//! trait (podCIDR as lease, node annotations as attributes, node watch as peer events).

pub mod etcd;

use super::lease::{Lease, LeaseAttrs};
use super::netconf::{NetConf, NetConfError};
use ipnet::Ipv4Net;
use std::future::Future;
use std::net::Ipv4Addr;
use thiserror::Error;
use tokio::sync::mpsc;

/// A datastore operation failed.
#[derive(Debug, Error)]
pub enum DatastoreError {
    /// The network config is invalid (retried every second in etcd mode, §2).
    #[error(transparent)]
    Config(#[from] NetConfError),
    /// No `<prefix>/config` key (§2's wording).
    #[error(
        "flannel config not found in etcd store. Did you create your config using etcdv3 API? (key {key})"
    )]
    ConfigNotFound {
        /// The key that was read.
        key: String,
    },
    /// An etcd request failed.
    #[error("etcd {op}: {}", short_etcd_error(.error))]
    Etcd {
        /// What was being done.
        op: String,
        /// The client's error.
        error: etcd_client::Error,
    },
    /// An etcd request took too long (etcd down or unreachable).
    #[error("etcd {op}: no answer within {secs} s from {endpoints}")]
    Timeout {
        /// What was being done.
        op: String,
        /// The timeout.
        secs: u64,
        /// The endpoints tried.
        endpoints: String,
    },
    /// A TLS file could not be read.
    #[error("cannot read etcd TLS file {path}: {error}")]
    TlsFile {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// Every subnet between SubnetMin and SubnetMax is taken.
    #[error("out of subnets (every subnet between SubnetMin and SubnetMax is leased)")]
    OutOfSubnets,
    /// Creation kept racing with other nodes.
    #[error("max retries reached trying to acquire a subnet")]
    MaxRetries,
    /// Our own lease disappeared (deleted or expired) before it could be renewed.
    #[error("the lease of {subnet} is gone")]
    LeaseGone {
        /// The subnet.
        subnet: Ipv4Net,
    },
    /// Not implemented yet.
    #[error("{0}")]
    Unsupported(String),
}

/// An etcd client error in one line: gRPC message, code and root cause instead of the nested
/// debug dump tonic's Display gives.
pub fn short_etcd_error(e: &etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(status) = e else {
        return e.to_string();
    };
    let mut text = format!("{} ({:?})", status.message(), status.code());
    let mut source = std::error::Error::source(status);
    let mut root = None;
    while let Some(s) = source {
        root = Some(s.to_string());
        source = s.source();
    }
    if let Some(root) = root
        && !text.contains(&root)
    {
        text.push_str(": ");
        text.push_str(&root);
    }
    text
}

/// What the agent asks for when it acquires its lease.
#[derive(Debug, Clone)]
pub struct AcquireRequest<'a> {
    /// The validated network config.
    pub conf: &'a NetConf,
    /// What this node advertises.
    pub attrs: &'a LeaseAttrs,
    /// `FLANNEL_SUBNET` of the previous run's subnet.env (host bits masked), if any.
    pub previous_subnet: Option<Ipv4Net>,
}

/// One change seen by the peer watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchUpdate {
    /// A complete listing (at start, and again after a compaction made resuming impossible).
    Snapshot(Vec<Lease>),
    /// A lease key was written.
    Put(Lease),
    /// A lease key was deleted or expired.
    Delete(Ipv4Net),
}

/// A subnet datastore (async; every method may be called from a spawned task).
pub trait Datastore: Send + Sync + 'static {
    /// Read (and validate) the network configuration.
    fn network_config(&self) -> impl Future<Output = Result<NetConf, DatastoreError>> + Send;

    /// The attributes this node published last time (same public address), if the datastore
    /// still has them — used to keep the vxlan MAC across restarts.
    fn stored_lease(
        &self,
        public_ip: Ipv4Addr,
    ) -> impl Future<Output = Result<Option<Lease>, DatastoreError>> + Send;

    /// Acquire (or take back) this node's subnet.
    fn acquire_lease(
        &self,
        req: AcquireRequest<'_>,
    ) -> impl Future<Output = Result<Lease, DatastoreError>> + Send;

    /// Extend the lease; returns it with its new expiration.
    fn renew_lease(
        &self,
        lease: &Lease,
    ) -> impl Future<Output = Result<Lease, DatastoreError>> + Send;

    /// Send a snapshot of every lease, then changes, to `tx` until it is closed; reconnects
    /// (with backoff) and re-lists by itself, so it only returns when `tx` is closed.
    fn watch_leases(&self, tx: mpsc::Sender<WatchUpdate>) -> impl Future<Output = ()> + Send;

    /// Delete a lease (used by `agent clean`).
    fn delete_lease(
        &self,
        subnet: Ipv4Net,
    ) -> impl Future<Output = Result<(), DatastoreError>> + Send;
}
