//! Where subnets come from and where peers are found: the [`Datastore`] trait, implemented for
//! etcd (flannel-spec §4) in [`etcd`] and for the Kubernetes API (§3) in [`kube`] (podCIDR as
//! lease, node annotations as attributes, node watch as peer events).

pub mod etcd;
pub mod kube;

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
    /// net-conf.json cannot be read or parsed (Kubernetes mode: fatal, as in flanneld).
    #[error("{message} (file {path})")]
    NetConfFile {
        /// The file.
        path: String,
        /// flannel's wording: "failed to read net conf: …" / "error parsing subnet config: …".
        message: String,
    },
    /// No usable client configuration (kubeconfig or in-cluster).
    #[error("cannot load the Kubernetes client config from {source_name}: {error}")]
    KubeConfig {
        /// The kubeconfig file, or which in-cluster source.
        source_name: String,
        /// Why.
        error: String,
    },
    /// This node's name cannot be determined.
    #[error("{0}")]
    NodeName(String),
    /// Our Node object does not exist (yet): kubelet has not registered it.
    #[error(
        "node {name:?} not found in the Kubernetes API (has its kubelet registered it? is the \
         node name right? set node_name in the agent config or NODE_NAME)"
    )]
    NodeNotFound {
        /// The node name.
        name: String,
    },
    /// The node has no podCIDR (§3; flanneld's wording first).
    #[error(
        "node \"{name}\" pod cidr not assigned (run kube-controller-manager with \
         --allocate-node-cidrs=true and --cluster-cidr, or set spec.podCIDR on the node)"
    )]
    PodCidrNotAssigned {
        /// The node name.
        name: String,
    },
    /// The node's podCIDR(s) cannot be used.
    #[error("node \"{name}\": {why}")]
    PodCidrInvalid {
        /// The node name.
        name: String,
        /// Why.
        why: String,
    },
    /// The podCIDR is outside the configured Network (§3; flanneld's wording first).
    #[error(
        "subnet \"{network}\" specified in the flannel net config doesn't contain \"{pod_cidr}\" \
         PodCIDR of the \"{name}\" node (make Network in net-conf.json cover the cluster CIDR \
         kube-controller-manager allocates from)"
    )]
    PodCidrOutsideNetwork {
        /// `Network`.
        network: Ipv4Net,
        /// The node's podCIDR.
        pod_cidr: Ipv4Net,
        /// The node name.
        name: String,
    },
    /// The API server answered with an error status.
    #[error(
        "kubernetes API: {verb} {resource} {name:?}: HTTP {code} {reason}: {message}{}",
        kube::rbac_hint(*.code, .verb, .resource)
    )]
    KubeApi {
        /// `get`, `patch`, `list`, `watch`.
        verb: &'static str,
        /// `nodes`, `nodes/status`.
        resource: &'static str,
        /// Object name.
        name: String,
        /// HTTP status.
        code: u16,
        /// The Status reason (`Forbidden`, `NotFound`, …).
        reason: String,
        /// The Status message.
        message: String,
    },
    /// The API server could not be reached (connection refused, TLS, timeout).
    #[error("kubernetes API: {verb} {resource} {name:?}: {error}")]
    KubeRequest {
        /// The verb.
        verb: &'static str,
        /// The resource.
        resource: &'static str,
        /// Object name.
        name: String,
        /// What went wrong.
        error: String,
    },
}

impl DatastoreError {
    /// Whether retrying may help: connection problems, timeouts, 5xx, 429, a node that is not
    /// registered yet, etcd outages. Auth (401/403), bad requests and config errors are fatal.
    pub fn is_transient(&self) -> bool {
        match self {
            DatastoreError::Etcd { .. }
            | DatastoreError::Timeout { .. }
            | DatastoreError::KubeRequest { .. }
            | DatastoreError::NodeNotFound { .. } => true,
            DatastoreError::KubeApi { code, .. } => *code >= 500 || *code == 429 || *code == 409,
            _ => false,
        }
    }
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

    /// Called once the lease is in use (subnet.env written): the Kubernetes datastore marks the
    /// node's network as available. Nothing to do by default.
    fn complete_lease(
        &self,
        lease: &Lease,
    ) -> impl Future<Output = Result<(), DatastoreError>> + Send {
        let _ = lease;
        async { Ok(()) }
    }

    /// Delete a lease (used by `agent clean`).
    fn delete_lease(
        &self,
        subnet: Ipv4Net,
    ) -> impl Future<Output = Result<(), DatastoreError>> + Send;
}
