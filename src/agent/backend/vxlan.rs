//! The vxlan backend (flannel-spec §5.1): device `flannel.<VNI>` on the external interface, the
//! lease's network address as a /32 on it, and per peer a PERMANENT neighbour, a `self
//! permanent` FDB entry and an onlink route. With DirectRouting, peers on the same L2 segment
//! get a plain route via their public address instead.

use super::BackendError;
use crate::agent::iface::ExtIface;
use crate::agent::lease::{Lease, LeaseAttrs, format_mac, random_mac};
use crate::agent::log::{error, info, warning};
use crate::agent::netconf::VxlanConf;
use crate::agent::netlink::{Link, Netlink, Route4, VxlanSpec, describe_route, is_vxlan};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// vxlan encapsulation overhead subtracted from the underlay MTU.
pub const ENCAP_OVERHEAD: u32 = 50;

/// What was programmed for a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Programmed {
    /// neighbour + FDB + onlink route through the device.
    Tunnel { mac: [u8; 6], public_ip: Ipv4Addr },
    /// A plain route via the peer's public address (DirectRouting).
    Direct { public_ip: Ipv4Addr },
    /// Nothing (programming failed; retried by the periodic check).
    Nothing,
}

/// The vxlan backend state.
pub struct Vxlan {
    nl: Netlink,
    network: Ipv4Net,
    conf: VxlanConf,
    ext: ExtIface,
    public_ip: Ipv4Addr,
    name: String,
    index: u32,
    mac: [u8; 6],
    mtu: u32,
    lease: Option<Lease>,
    peers: BTreeMap<Ipv4Net, (Lease, Programmed)>,
}

/// The device name for a VNI: `flannel.<VNI>`.
pub fn device_name(vni: u32) -> String {
    format!("flannel.{vni}")
}

fn compatible(link: &Link, want: &VxlanSpec) -> bool {
    let Some(x) = link.vxlan.as_ref().filter(|_| is_vxlan(link)) else {
        return false;
    };
    x.vni == want.vni
        && (x.link == 0 || x.link == want.link)
        && x.local.is_none_or(|l| l == want.local)
        && (want.port == 0 || x.port == want.port)
        && x.gbp == want.gbp
        && x.learning == want.learning
        && !x.l2miss
        && x.group.is_none()
}

impl Vxlan {
    /// Create or reuse the device (§5.1 "Existing device with same name").
    pub async fn new(
        nl: Netlink,
        network: Ipv4Net,
        conf: VxlanConf,
        ext: &ExtIface,
        public_ip: Ipv4Addr,
        stored: Option<&LeaseAttrs>,
    ) -> Result<Vxlan, BackendError> {
        let underlay = if conf.mtu > 0 { conf.mtu } else { ext.mtu };
        if underlay <= ENCAP_OVERHEAD + 68 {
            return Err(BackendError::MtuTooSmall(underlay));
        }
        let mtu = underlay - ENCAP_OVERHEAD;
        let name = device_name(conf.vni);
        let stored_mac = stored
            .filter(|a| a.backend_type == "vxlan")
            .and_then(LeaseAttrs::vtep_mac);
        let spec = VxlanSpec {
            name: name.clone(),
            vni: conf.vni,
            link: ext.index,
            local: ext.addr,
            port: conf.port,
            learning: conf.learning,
            gbp: conf.gbp,
            mtu,
            mac: stored_mac.unwrap_or_else(random_mac),
        };
        let link = match nl.link_by_name(&name).await? {
            Some(existing) if compatible(&existing, &spec) && existing.mac.len() == 6 => {
                info!(
                    "Reusing existing vxlan device {name} (MAC {})",
                    format_mac(&existing.mac)
                );
                existing
            }
            existing => {
                if let Some(old) = existing {
                    warning!(
                        "{name} exists with different attributes ({:?}); deleting and recreating it",
                        old.vxlan
                    );
                    nl.delete_link(old.index, &name).await?;
                }
                nl.create_vxlan(&spec).await?;
                let created = nl.link_by_name(&name).await?.ok_or_else(|| {
                    BackendError::Netlink(crate::agent::netlink::NetlinkError::Socket(
                        std::io::Error::other(format!("{name} vanished right after creation")),
                    ))
                })?;
                info!(
                    "Created vxlan device {name}: VNI {} dev {} local {} port {} MAC {}{}",
                    conf.vni,
                    ext.name,
                    ext.addr,
                    if conf.port == 0 {
                        "kernel default (8472)".to_string()
                    } else {
                        conf.port.to_string()
                    },
                    format_mac(&spec.mac),
                    if stored_mac.is_some() {
                        " (recovered from the previous lease)"
                    } else {
                        ""
                    }
                );
                created
            }
        };
        // the device's own MAC is what peers must learn (also when an existing device is reused)
        let mac = <[u8; 6]>::try_from(link.mac.as_slice()).unwrap_or(spec.mac);
        Ok(Vxlan {
            nl,
            network,
            conf,
            ext: ext.clone(),
            public_ip,
            name,
            index: link.index,
            mac,
            mtu,
            lease: None,
            peers: BTreeMap::new(),
        })
    }

    /// `{"VNI":..,"VtepMAC":..}` with this device's MAC.
    pub fn lease_attrs(&self) -> LeaseAttrs {
        LeaseAttrs {
            public_ip: self.public_ip,
            public_ipv6: None,
            backend_type: "vxlan".into(),
            backend_data: Some(serde_json::json!({
                "VNI": self.conf.vni,
                "VtepMAC": format_mac(&self.mac),
            })),
        }
    }

    /// Device MTU = underlay − 50.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// Address the device with the lease's network address /32, drop other addresses of the
    /// Network, set MTU and bring it up.
    pub async fn configure(&mut self, lease: &Lease) -> Result<(), BackendError> {
        let want = Ipv4Net::new(lease.subnet.network(), 32).unwrap_or(lease.subnet);
        for a in self.nl.addresses().await? {
            if a.index == self.index
                && self.network.contains(&a.ip)
                && (a.ip != want.addr() || a.prefix_len != 32)
            {
                info!(
                    "Removing stale address {}/{} from {}",
                    a.ip, a.prefix_len, self.name
                );
                self.nl.delete_address(&a).await?;
            }
        }
        self.nl.add_address(self.index, want).await?;
        self.nl.set_mtu_up(self.index, &self.name, self.mtu).await?;
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{}/accept_ra", self.name),
            "0",
        );
        self.lease = Some(lease.clone());
        Ok(())
    }

    /// Whether the peer's public address is directly connected (one route, no gateway).
    async fn directly_reachable(&self, ip: Ipv4Addr) -> bool {
        match self.nl.route_get(ip).await {
            Ok(routes) => routes.len() == 1 && routes[0].gateway.is_none(),
            Err(e) => {
                warning!("DirectRouting: route lookup for {ip} failed: {e}");
                false
            }
        }
    }

    fn tunnel_route(&self, subnet: Ipv4Net) -> Route4 {
        Route4 {
            dst: subnet,
            gateway: Some(subnet.network()),
            oif: Some(self.index),
            onlink: true,
            protocol: 0,
        }
    }

    fn direct_route(subnet: Ipv4Net, public_ip: Ipv4Addr) -> Route4 {
        Route4 {
            dst: subnet,
            gateway: Some(public_ip),
            oif: None,
            onlink: false,
            protocol: 0,
        }
    }

    async fn unprogram_tunnel(&self, subnet: Ipv4Net, mac: [u8; 6], public_ip: Ipv4Addr) {
        if let Err(e) = self.nl.delete_fdb(self.index, &mac, public_ip).await
            && !e.is_not_found()
        {
            error!("Removing FDB entry of {subnet}: {e}");
        }
        if let Err(e) = self.nl.delete_neighbour(self.index, subnet.network()).await
            && !e.is_not_found()
        {
            error!("Removing neighbour entry of {subnet}: {e}");
        }
    }

    async fn program(&mut self, lease: &Lease) -> Programmed {
        let subnet = lease.subnet;
        let public_ip = lease.attrs.public_ip;
        if self.conf.direct_routing && self.directly_reachable(public_ip).await {
            let route = Self::direct_route(subnet, public_ip);
            return match self.nl.replace_route(&route).await {
                Ok(()) => {
                    info!("Added peer {subnet} via {public_ip} (direct routing)");
                    Programmed::Direct { public_ip }
                }
                Err(e) => {
                    error!("Adding direct route to {subnet} via {public_ip}: {e}");
                    Programmed::Nothing
                }
            };
        }
        let Some(mac) = lease.attrs.vtep_mac() else {
            error!(
                "Lease {subnet} of {public_ip} has no usable VtepMAC in its backend data {:?}; skipping it",
                lease.attrs.backend_data
            );
            return Programmed::Nothing;
        };
        // neighbour, FDB, route — undoing the earlier steps when a later one fails
        if let Err(e) = self
            .nl
            .replace_neighbour(self.index, subnet.network(), &mac)
            .await
        {
            error!("Adding neighbour {} for {subnet}: {e}", subnet.network());
            return Programmed::Nothing;
        }
        if let Err(e) = self.nl.replace_fdb(self.index, &mac, public_ip).await {
            error!("Adding FDB entry {} dst {public_ip}: {e}", format_mac(&mac));
            let _ = self.nl.delete_neighbour(self.index, subnet.network()).await;
            return Programmed::Nothing;
        }
        let route = self.tunnel_route(subnet);
        if let Err(e) = self.nl.replace_route(&route).await {
            error!("Adding route {}: {e}", describe_route(&route));
            self.unprogram_tunnel(subnet, mac, public_ip).await;
            return Programmed::Nothing;
        }
        info!(
            "Added peer {subnet} via {} dev {} (VtepMAC {}, public IP {public_ip})",
            subnet.network(),
            self.name,
            format_mac(&mac)
        );
        Programmed::Tunnel { mac, public_ip }
    }

    /// A peer appeared or changed.
    pub async fn add_peer(&mut self, lease: &Lease) {
        let previous = self.peers.get(&lease.subnet).map(|(_, p)| p.clone());
        let now = self.program(lease).await;
        // stale entries of the previous programming that the new one did not overwrite
        if let Some(Programmed::Tunnel { mac, public_ip }) = previous {
            match &now {
                Programmed::Tunnel {
                    mac: m,
                    public_ip: p,
                } if *m == mac && *p == public_ip => {}
                Programmed::Tunnel { .. } => {
                    if let Err(e) = self.nl.delete_fdb(self.index, &mac, public_ip).await
                        && !e.is_not_found()
                    {
                        warning!("Removing old FDB entry of {}: {e}", lease.subnet);
                    }
                }
                _ => self.unprogram_tunnel(lease.subnet, mac, public_ip).await,
            }
        }
        self.peers.insert(lease.subnet, (lease.clone(), now));
    }

    /// A peer went away: delete its neighbour, FDB entry and route.
    pub async fn remove_peer(&mut self, lease: &Lease) {
        let programmed = self
            .peers
            .remove(&lease.subnet)
            .map(|(_, p)| p)
            .unwrap_or(Programmed::Nothing);
        match programmed {
            Programmed::Tunnel { mac, public_ip } => {
                self.unprogram_tunnel(lease.subnet, mac, public_ip).await;
                let route = self.tunnel_route(lease.subnet);
                if let Err(e) = self.nl.delete_route(&route).await
                    && !e.is_not_found()
                {
                    error!("Removing route {}: {e}", describe_route(&route));
                }
            }
            Programmed::Direct { public_ip } => {
                let route = Self::direct_route(lease.subnet, public_ip);
                if let Err(e) = self.nl.delete_route(&route).await
                    && !e.is_not_found()
                {
                    error!("Removing route {}: {e}", describe_route(&route));
                }
            }
            Programmed::Nothing => {}
        }
        info!(
            "Removed peer {} (public IP {})",
            lease.subnet, lease.attrs.public_ip
        );
    }

    /// Recreate the device when someone deleted it (F28 does this too), re-adding every peer;
    /// retry peers whose programming failed.
    pub async fn check(&mut self) {
        match self.nl.link_by_name(&self.name).await {
            Ok(Some(link)) if link.index == self.index => {}
            Ok(_) => {
                warning!("{} is gone or was replaced; recreating it", self.name);
                if let Err(e) = self.recreate().await {
                    error!("Recreating {}: {e}", self.name);
                    return;
                }
                let peers: Vec<Lease> = self.peers.values().map(|(l, _)| l.clone()).collect();
                self.peers.clear();
                for lease in peers {
                    self.add_peer(&lease).await;
                }
                return;
            }
            Err(e) => {
                error!("Checking {}: {e}", self.name);
                return;
            }
        }
        let failed: Vec<Lease> = self
            .peers
            .values()
            .filter(|(_, p)| *p == Programmed::Nothing)
            .map(|(l, _)| l.clone())
            .collect();
        for lease in failed {
            self.add_peer(&lease).await;
        }
    }

    async fn recreate(&mut self) -> Result<(), BackendError> {
        let spec = VxlanSpec {
            name: self.name.clone(),
            vni: self.conf.vni,
            link: self.ext.index,
            local: self.ext.addr,
            port: self.conf.port,
            learning: self.conf.learning,
            gbp: self.conf.gbp,
            mtu: self.mtu,
            mac: self.mac,
        };
        if let Some(old) = self.nl.link_by_name(&self.name).await? {
            self.nl.delete_link(old.index, &self.name).await?;
        }
        self.nl.create_vxlan(&spec).await?;
        if let Some(link) = self.nl.link_by_name(&self.name).await? {
            self.index = link.index;
        }
        if let Some(lease) = self.lease.clone() {
            self.configure(&lease).await?;
        }
        Ok(())
    }
}
