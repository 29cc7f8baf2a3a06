//! The host-gw backend (flannel-spec §5.2): per peer a route `subnet via public-IP dev <ext>`.
//! Routes the kernel refuses (peer not on a connected network) are logged, remembered and
//! retried; every check re-adds remembered routes that went missing ("Route recovered").

use super::BackendError;
use crate::agent::iface::ExtIface;
use crate::agent::lease::{Lease, LeaseAttrs};
use crate::agent::log::{error, info};
use crate::agent::netlink::{Netlink, Route4, describe_route};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The host-gw backend state.
pub struct HostGw {
    nl: Netlink,
    ext: ExtIface,
    public_ip: Ipv4Addr,
    /// Remembered routes and the last error seen adding each (to log a repeated failure once).
    routes: BTreeMap<Ipv4Net, (Route4, Option<String>)>,
}

impl HostGw {
    /// Refuses a public address that is not the interface's (NAT).
    pub fn new(nl: Netlink, ext: &ExtIface, public_ip: Ipv4Addr) -> Result<HostGw, BackendError> {
        if public_ip != ext.addr {
            return Err(BackendError::HostGwNat {
                public: public_ip,
                iface: ext.name.clone(),
                iface_addr: ext.addr,
            });
        }
        Ok(HostGw {
            nl,
            ext: ext.clone(),
            public_ip,
            routes: BTreeMap::new(),
        })
    }

    /// `BackendType: host-gw`, no backend data.
    pub fn lease_attrs(&self) -> LeaseAttrs {
        LeaseAttrs {
            public_ip: self.public_ip,
            public_ipv6: None,
            backend_type: "host-gw".into(),
            backend_data: None,
        }
    }

    /// The interface MTU (no encapsulation).
    pub fn mtu(&self) -> u32 {
        self.ext.mtu
    }

    fn route_for(&self, lease: &Lease) -> Route4 {
        Route4 {
            dst: lease.subnet,
            gateway: Some(lease.attrs.public_ip),
            oif: Some(self.ext.index),
            onlink: false,
            protocol: 0,
        }
    }

    /// Install (or re-point) a remembered route; logs a failure once per distinct error.
    async fn install(&mut self, subnet: Ipv4Net, recovered: bool) {
        let Some((route, last_error)) = self.routes.get(&subnet).cloned() else {
            return;
        };
        match self.nl.replace_route(&route).await {
            Ok(()) => {
                let via = route.gateway.map(|g| g.to_string()).unwrap_or_default();
                if recovered {
                    info!("Route recovered {subnet} via {via} dev {}", self.ext.name);
                } else {
                    info!("Added peer {subnet} via {via} dev {}", self.ext.name);
                }
                self.routes.insert(subnet, (route, None));
            }
            Err(e) => {
                let text = e.to_string();
                if last_error.as_deref() != Some(text.as_str()) {
                    error!(
                        "Error adding route to {} via {} dev {}: {text}",
                        subnet,
                        route.gateway.map(|g| g.to_string()).unwrap_or_default(),
                        self.ext.name
                    );
                }
                self.routes.insert(subnet, (route, Some(text)));
            }
        }
    }

    /// A peer appeared or moved.
    pub async fn add_peer(&mut self, lease: &Lease) {
        let route = self.route_for(lease);
        if let Some((old, _)) = self.routes.get(&lease.subnet)
            && old.gateway != route.gateway
        {
            let _ = self.nl.delete_route(old).await;
        }
        self.routes.insert(lease.subnet, (route, None));
        self.install(lease.subnet, false).await;
    }

    /// A peer went away.
    pub async fn remove_peer(&mut self, lease: &Lease) {
        let route = self
            .routes
            .remove(&lease.subnet)
            .map(|(r, _)| r)
            .unwrap_or_else(|| self.route_for(lease));
        match self.nl.delete_route(&route).await {
            Ok(()) => info!("Removed peer {} ({})", lease.subnet, describe_route(&route)),
            Err(e) if e.is_not_found() => {
                info!("Removed peer {} (route was already gone)", lease.subnet)
            }
            Err(e) => error!("Removing route {}: {e}", describe_route(&route)),
        }
    }

    /// Re-add remembered routes missing from the kernel (every 10 s, §5.2).
    pub async fn check(&mut self) {
        let present = match self.nl.routes().await {
            Ok(r) => r,
            Err(e) => {
                error!("Listing routes for the route check: {e}");
                return;
            }
        };
        let missing: Vec<Ipv4Net> = self
            .routes
            .iter()
            .filter(|(_, (want, _))| {
                !present
                    .iter()
                    .any(|r| r.dst == want.dst && r.gateway == want.gateway && r.oif == want.oif)
            })
            .map(|(subnet, _)| *subnet)
            .collect();
        for subnet in missing {
            self.install(subnet, true).await;
        }
    }
}
