//! Backends (flannel-spec §5): they set up the local side before the lease is acquired
//! (device, advertised attributes), configure it once the lease is known, and program one set of
//! kernel entries per peer lease. Errors on one peer are logged and never stop the agent.

pub mod hostgw;
pub mod vxlan;

use super::iface::ExtIface;
use super::lease::{Lease, LeaseAttrs, LeaseEvent};
use super::log::warning;
use super::netconf::{BackendConf, NetConf};
use super::netlink::{Netlink, NetlinkError};
use std::net::Ipv4Addr;
use std::time::Duration;
use thiserror::Error;

/// A backend could not be set up.
#[derive(Debug, Error)]
pub enum BackendError {
    /// A netlink request failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// host-gw on a NAT'd public address (§5.2).
    #[error(
        "your PublicIP differs from interface IP, meaning that probably you're on a NAT, which is not supported by host-gw backend (public IP {public}, interface {iface} address {iface_addr})"
    )]
    HostGwNat {
        /// The advertised address.
        public: Ipv4Addr,
        /// The interface.
        iface: String,
        /// Its address.
        iface_addr: Ipv4Addr,
    },
    /// The underlay MTU cannot carry vxlan.
    #[error("MTU {0} is too small for vxlan (it must be above 50 + 68)")]
    MtuTooSmall(u32),
}

/// The configured backend.
pub enum Backend {
    /// vxlan (§5.1).
    Vxlan(Box<vxlan::Vxlan>),
    /// host-gw (§5.2).
    HostGw(hostgw::HostGw),
}

/// How often the backend re-checks the kernel (host-gw routes, the vxlan device).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);

impl Backend {
    /// Set up the local side for `conf` on the external interface; `stored` is the node's
    /// previous backend data (to keep the vxlan MAC across restarts).
    pub async fn new(
        nl: Netlink,
        conf: &NetConf,
        ext: &ExtIface,
        public_ip: Ipv4Addr,
        stored: Option<&LeaseAttrs>,
    ) -> Result<Backend, BackendError> {
        Ok(match &conf.backend {
            BackendConf::Vxlan(vx) => Backend::Vxlan(Box::new(
                vxlan::Vxlan::new(nl, conf.network, vx.clone(), ext, public_ip, stored).await?,
            )),
            BackendConf::HostGw => Backend::HostGw(hostgw::HostGw::new(nl, ext, public_ip)?),
        })
    }

    /// The backend type string (`vxlan`, `host-gw`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Backend::Vxlan(_) => "vxlan",
            Backend::HostGw(_) => "host-gw",
        }
    }

    /// What this node advertises in its lease.
    pub fn lease_attrs(&self) -> LeaseAttrs {
        match self {
            Backend::Vxlan(v) => v.lease_attrs(),
            Backend::HostGw(h) => h.lease_attrs(),
        }
    }

    /// `FLANNEL_MTU`.
    pub fn mtu(&self) -> u32 {
        match self {
            Backend::Vxlan(v) => v.mtu(),
            Backend::HostGw(h) => h.mtu(),
        }
    }

    /// Configure the local side for the acquired lease.
    pub async fn configure(&mut self, lease: &Lease) -> Result<(), BackendError> {
        match self {
            Backend::Vxlan(v) => v.configure(lease).await,
            Backend::HostGw(_) => Ok(()),
        }
    }

    /// Apply one peer event (errors are logged).
    pub async fn handle(&mut self, event: &LeaseEvent) {
        let lease = match event {
            LeaseEvent::Added(l) | LeaseEvent::Removed(l) => l,
            LeaseEvent::Revoked => return,
        };
        if lease.attrs.backend_type != self.type_name() {
            warning!(
                "Ignoring lease {} of {}: backend type {:?} is not {}",
                lease.subnet,
                lease.attrs.public_ip,
                lease.attrs.backend_type,
                self.type_name()
            );
            return;
        }
        let added = matches!(event, LeaseEvent::Added(_));
        match (self, added) {
            (Backend::Vxlan(v), true) => v.add_peer(lease).await,
            (Backend::Vxlan(v), false) => v.remove_peer(lease).await,
            (Backend::HostGw(h), true) => h.add_peer(lease).await,
            (Backend::HostGw(h), false) => h.remove_peer(lease).await,
        }
    }

    /// Periodic repair (host-gw: missing routes; vxlan: a deleted device).
    pub async fn check(&mut self) {
        match self {
            Backend::Vxlan(v) => v.check().await,
            Backend::HostGw(h) => h.check().await,
        }
    }
}
