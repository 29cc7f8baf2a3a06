//! A small typed facade over rtnetlink for what the agent programs: links (the vxlan device),
//! IPv4 addresses, IPv4 routes, ARP neighbours and vxlan FDB entries. Everything goes through
//! netlink in the agent's own network namespace; nothing runs `ip`.

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr};
use thiserror::Error;

/// A netlink request failed.
#[derive(Debug, Error)]
pub enum NetlinkError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Socket(std::io::Error),
    /// The kernel refused a request.
    #[error("{what}: {error}")]
    Request {
        /// What was asked (e.g. "add route 10.1.18.0/24 via 10.1.18.0 dev flannel.1").
        what: String,
        /// The kernel's answer.
        error: rtnetlink::Error,
    },
}

impl NetlinkError {
    /// The errno of a kernel refusal (positive), if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request {
                error: rtnetlink::Error::NetlinkError(m),
                ..
            } => Some(m.raw_code().abs()),
            _ => None,
        }
    }

    /// Whether the kernel said the object does not exist (ENOENT, ESRCH, ENODEV, EADDRNOTAVAIL).
    pub fn is_not_found(&self) -> bool {
        matches!(self.errno(), Some(2 | 3 | 19 | 99))
    }
}

type Result<T> = std::result::Result<T, NetlinkError>;

fn req<T>(what: impl FnOnce() -> String, r: std::result::Result<T, rtnetlink::Error>) -> Result<T> {
    r.map_err(|error| NetlinkError::Request {
        what: what(),
        error,
    })
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// ifindex.
    pub index: u32,
    /// Name.
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// Hardware address.
    pub mac: Vec<u8>,
    /// Administratively up.
    pub up: bool,
    /// Link kind (`vxlan`, `veth`, `bridge`…), None for physical devices.
    pub kind: Option<String>,
    /// vxlan attributes when it is a vxlan device.
    pub vxlan: Option<VxlanAttrs>,
}

/// The vxlan attributes flannel compares when it reuses a device (§5.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VxlanAttrs {
    /// VNI.
    pub vni: u32,
    /// Underlay device index (0 = none).
    pub link: u32,
    /// Local (source) address.
    pub local: Option<Ipv4Addr>,
    /// Destination UDP port.
    pub port: u16,
    /// Learning on.
    pub learning: bool,
    /// GBP on.
    pub gbp: bool,
    /// Multicast group / remote.
    pub group: Option<Ipv4Addr>,
    /// l2miss notifications on.
    pub l2miss: bool,
}

/// An IPv4 address on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr4 {
    /// ifindex.
    pub index: u32,
    /// The address.
    pub ip: Ipv4Addr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// Scope host (127.x).
    pub host_scope: bool,
    /// Permanent (not DHCP with a lifetime).
    pub permanent: bool,
    /// Deprecated.
    pub deprecated: bool,
}

/// An IPv4 route in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route4 {
    /// Destination.
    pub dst: Ipv4Net,
    /// Gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Output interface.
    pub oif: Option<u32>,
    /// Onlink flag.
    pub onlink: bool,
    /// Routing protocol (RTPROT_*).
    pub protocol: u8,
}

/// The vxlan device the agent wants.
#[derive(Debug, Clone)]
pub struct VxlanSpec {
    /// `flannel.<VNI>`.
    pub name: String,
    /// VNI.
    pub vni: u32,
    /// Underlay interface index.
    pub link: u32,
    /// Local address.
    pub local: Ipv4Addr,
    /// UDP port (0 = kernel default 8472).
    pub port: u16,
    /// Learning.
    pub learning: bool,
    /// GBP.
    pub gbp: bool,
    /// MTU.
    pub mtu: u32,
    /// MAC.
    pub mac: [u8; 6],
}

/// rtnetlink handle bound to the current network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

fn route_message_to_route4(msg: &RouteMessage) -> Option<Route4> {
    if msg.header.address_family != AddressFamily::Inet {
        return None;
    }
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    Some(Route4 {
        dst: Ipv4Net::new(dst, msg.header.destination_prefix_length).ok()?,
        gateway,
        oif,
        onlink: msg.header.flags.contains(RouteFlags::Onlink),
        protocol: u8::from(msg.header.protocol),
    })
}

fn route_table(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table))
}

fn link_from_message(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mtu: 0,
        mac: Vec::new(),
        up: msg.header.flags.contains(LinkFlags::Up),
        kind: None,
        vxlan: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Address(a) => link.mac = a.clone(),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(k) => link.kind = Some(k.to_string()),
                        LinkInfo::Data(InfoData::Vxlan(v)) => {
                            let mut x = VxlanAttrs::default();
                            for a in v {
                                match a {
                                    InfoVxlan::Id(id) => x.vni = *id,
                                    InfoVxlan::Link(l) => x.link = *l,
                                    InfoVxlan::Local(ip) => x.local = Some(*ip),
                                    InfoVxlan::Port(p) => x.port = *p,
                                    InfoVxlan::Learning(b) => x.learning = *b,
                                    InfoVxlan::Gbp => x.gbp = true,
                                    InfoVxlan::Group(ip) if !ip.is_unspecified() => {
                                        x.group = Some(*ip)
                                    }
                                    InfoVxlan::L2Miss(b) => x.l2miss = *b,
                                    _ => {}
                                }
                            }
                            link.vxlan = Some(x);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

impl Netlink {
    /// Open a netlink socket; its connection task runs on the current tokio runtime.
    pub fn connect() -> Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// Every interface.
    pub async fn links(&self) -> Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> = req(
            || "list links".into(),
            self.handle.link().get().execute().try_collect().await,
        )?;
        Ok(msgs.iter().map(link_from_message).collect())
    }

    /// An interface by name.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let r: std::result::Result<Vec<LinkMessage>, _> = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_collect()
            .await;
        match r {
            Ok(msgs) => Ok(msgs.first().map(link_from_message)),
            Err(e) => {
                let err = NetlinkError::Request {
                    what: format!("get link {name}"),
                    error: e,
                };
                if err.is_not_found() {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Every IPv4 address.
    pub async fn addresses(&self) -> Result<Vec<Addr4>> {
        let msgs: Vec<AddressMessage> = req(
            || "list addresses".into(),
            self.handle.address().get().execute().try_collect().await,
        )?;
        let mut out = Vec::new();
        for m in msgs {
            if m.header.family != AddressFamily::Inet {
                continue;
            }
            let mut ip = None;
            let mut flags = AddressFlags::empty();
            for a in &m.attributes {
                match a {
                    AddressAttribute::Local(IpAddr::V4(v)) => ip = Some(*v),
                    AddressAttribute::Address(IpAddr::V4(v)) if ip.is_none() => ip = Some(*v),
                    AddressAttribute::Flags(f) => flags = *f,
                    _ => {}
                }
            }
            if let Some(ip) = ip {
                out.push(Addr4 {
                    index: m.header.index,
                    ip,
                    prefix_len: m.header.prefix_len,
                    host_scope: m.header.scope == AddressScope::Host,
                    permanent: flags.contains(AddressFlags::Permanent),
                    deprecated: flags.contains(AddressFlags::Deprecated),
                });
            }
        }
        Ok(out)
    }

    /// Create the vxlan device (down; [`Netlink::set_up`] brings it up after addressing).
    pub async fn create_vxlan(&self, spec: &VxlanSpec) -> Result<()> {
        let mut b = LinkVxlan::new(&spec.name, spec.vni)
            .dev(spec.link)
            .local(spec.local)
            .learning(spec.learning)
            .l2miss(false)
            .l3miss(false)
            .mtu(spec.mtu)
            .address(spec.mac.to_vec());
        if spec.port != 0 {
            b = b.port(spec.port);
        }
        if spec.gbp {
            b = b.gbp();
        }
        req(
            || format!("create vxlan device {}", spec.name),
            self.handle.link().add(b.build()).execute().await,
        )
    }

    /// Delete a link.
    pub async fn delete_link(&self, index: u32, name: &str) -> Result<()> {
        req(
            || format!("delete link {name}"),
            self.handle.link().del(index).execute().await,
        )
    }

    /// Set MTU and bring a link up.
    pub async fn set_mtu_up(&self, index: u32, name: &str, mtu: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).up().build();
        req(
            || format!("set {name} mtu {mtu} up"),
            self.handle.link().change(msg).execute().await,
        )
    }

    /// Add an IPv4 address (already present is fine).
    pub async fn add_address(&self, index: u32, net: Ipv4Net) -> Result<()> {
        let r = self
            .handle
            .address()
            .add(index, IpAddr::V4(net.addr()), net.prefix_len())
            .replace()
            .execute()
            .await;
        req(|| format!("add address {net} to ifindex {index}"), r)
    }

    /// Delete an IPv4 address.
    pub async fn delete_address(&self, addr: &Addr4) -> Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = addr.prefix_len;
        msg.header.index = addr.index;
        msg.attributes
            .push(AddressAttribute::Local(IpAddr::V4(addr.ip)));
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(addr.ip)));
        req(
            || format!("delete address {}/{}", addr.ip, addr.prefix_len),
            self.handle.address().del(msg).execute().await,
        )
    }

    /// IPv4 routes of the main table.
    pub async fn routes(&self) -> Result<Vec<Route4>> {
        let filter = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let msgs: Vec<RouteMessage> = req(
            || "list routes".into(),
            self.handle
                .route()
                .get(filter)
                .execute()
                .try_collect()
                .await,
        )?;
        Ok(msgs
            .iter()
            .filter(|m| route_table(m) == u32::from(RouteHeader::RT_TABLE_MAIN))
            .filter(|m| m.header.kind == RouteType::Unicast)
            .filter_map(route_message_to_route4)
            .collect())
    }

    /// `ip route get <ip>`: the routes the kernel would use.
    pub async fn route_get(&self, ip: Ipv4Addr) -> Result<Vec<Route4>> {
        let mut msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(ip, 32)
            .build();
        // a lookup, not a route: no protocol, scope or type of its own
        msg.header.protocol = RouteProtocol::Unspec;
        msg.header.kind = RouteType::Unspec;
        msg.header.table = 0;
        let msgs: Vec<RouteMessage> = req(
            || format!("route get {ip}"),
            self.handle.route().get(msg).execute().try_collect().await,
        )?;
        Ok(msgs.iter().filter_map(route_message_to_route4).collect())
    }

    fn route_message(route: &Route4) -> RouteMessage {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(route.dst.network(), route.dst.prefix_len())
            .scope(RouteScope::Universe);
        if let Some(gw) = route.gateway {
            b = b.gateway(gw);
        }
        if let Some(oif) = route.oif {
            b = b.output_interface(oif);
        }
        if route.onlink {
            b = b.onlink();
        }
        b.build()
    }

    /// `ip route replace`.
    pub async fn replace_route(&self, route: &Route4) -> Result<()> {
        let r = self
            .handle
            .route()
            .add(Self::route_message(route))
            .replace()
            .execute()
            .await;
        req(|| format!("replace route {}", describe_route(route)), r)
    }

    /// `ip route del` (matching destination, gateway and device when given).
    pub async fn delete_route(&self, route: &Route4) -> Result<()> {
        let mut msg = Self::route_message(route);
        msg.header.protocol = RouteProtocol::Unspec;
        msg.header.scope = RouteScope::NoWhere;
        let r = self.handle.route().del(msg).execute().await;
        req(|| format!("delete route {}", describe_route(route)), r)
    }

    /// `ip neigh replace <ip> lladdr <mac> dev <index> nud permanent`.
    pub async fn replace_neighbour(&self, index: u32, ip: Ipv4Addr, mac: &[u8]) -> Result<()> {
        let r = self
            .handle
            .neighbours()
            .add(index, IpAddr::V4(ip))
            .link_layer_address(mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await;
        req(|| format!("replace neighbour {ip} on ifindex {index}"), r)
    }

    /// `ip neigh del <ip> dev <index>`.
    pub async fn delete_neighbour(&self, index: u32, ip: Ipv4Addr) -> Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = index;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        let r = self.handle.neighbours().del(msg).execute().await;
        req(|| format!("delete neighbour {ip} on ifindex {index}"), r)
    }

    /// `bridge fdb replace <mac> dev <index> dst <ip> self permanent`.
    pub async fn replace_fdb(&self, index: u32, mac: &[u8], dst: Ipv4Addr) -> Result<()> {
        let r = self
            .handle
            .neighbours()
            .add_bridge(index, mac)
            .destination(IpAddr::V4(dst))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await;
        req(
            || {
                format!(
                    "replace fdb {} dst {dst} on ifindex {index}",
                    super::lease::format_mac(mac)
                )
            },
            r,
        )
    }

    /// `bridge fdb del <mac> dev <index> dst <ip> self`.
    pub async fn delete_fdb(&self, index: u32, mac: &[u8], dst: Ipv4Addr) -> Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = index;
        msg.header.flags = NeighbourFlags::Own;
        msg.header.state = NeighbourState::Permanent;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
        let r = self.handle.neighbours().del(msg).execute().await;
        req(
            || format!("delete fdb {} dst {dst}", super::lease::format_mac(mac)),
            r,
        )
    }
}

/// `10.1.18.0/24 via 10.1.18.0 dev #7 onlink` (for logs and errors).
pub fn describe_route(r: &Route4) -> String {
    let mut s = r.dst.to_string();
    if let Some(gw) = r.gateway {
        s.push_str(&format!(" via {gw}"));
    }
    if let Some(oif) = r.oif {
        s.push_str(&format!(" dev #{oif}"));
    }
    if r.onlink {
        s.push_str(" onlink");
    }
    s
}

/// The kind string of a vxlan link as the kernel reports it.
pub fn is_vxlan(link: &Link) -> bool {
    link.kind.as_deref() == Some(&InfoKind::Vxlan.to_string())
}
