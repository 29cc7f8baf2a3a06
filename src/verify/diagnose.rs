//! Naming the likely cause of a failing pair from facts gathered on both nodes.
//!
//! The forward path is checked on the source node (does the route to the target go where the
//! backend says it must: the peer's node address for host-gw, the `flannel.<VNI>` device with a
//! neighbour entry and an FDB entry pointing at the peer for vxlan); then the underlay (can the
//! source node ping the peer node at all); then the reply path on the target node (its route back
//! to the source address). A pair whose small pings pass but whose MTU-sized DF pings fail is an
//! MTU problem. Pure functions: the facts come in, the cause goes out.

use super::model::{NodeFacts, NodeNet, PingResult, RouteFact};
use crate::cluster::Backend;
use serde::Serialize;
use std::fmt;
use std::net::IpAddr;

/// The likely cause of a failing pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Cause {
    /// The pair could not be tested: a node was unreachable over SSH or its probe failed.
    NotTested {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
    /// A route lookup does not lead to the peer (missing, wrong next hop, unreachable...).
    NoRoute {
        /// Node whose table is wrong.
        node: String,
        /// The address looked up.
        dst: IpAddr,
        /// The peer node the route should lead to.
        peer: String,
        /// The peer's pod subnet, when known.
        subnet: Option<String>,
        /// What the route should be.
        expected: String,
        /// What the lookup gave.
        actual: String,
        /// Whether this is the reply path (on the target node).
        reply_path: bool,
    },
    /// The overlay device has no (complete) neighbour entry for the peer's gateway address.
    NoNeighbour {
        /// Node missing the entry.
        node: String,
        /// Overlay device.
        dev: String,
        /// The next hop without an entry.
        gateway: IpAddr,
        /// The peer node.
        peer: String,
        /// Whether this is the reply path.
        reply_path: bool,
    },
    /// The overlay device has no FDB entry sending the peer's VTEP MAC to the peer's address.
    NoFdb {
        /// Node missing the entry.
        node: String,
        /// Overlay device.
        dev: String,
        /// The VTEP MAC from the neighbour entry.
        mac: String,
        /// Where the entry points, if it exists but points elsewhere.
        points_to: Option<IpAddr>,
        /// The peer node.
        peer: String,
        /// Whether this is the reply path.
        reply_path: bool,
    },
    /// The source node cannot reach the peer node's address at all (underlay).
    NodeUnreachable {
        /// The source node.
        node: String,
        /// The peer node.
        peer: String,
        /// The peer's address tried.
        addr: IpAddr,
    },
    /// Small packets pass, MTU-sized packets with DF set do not.
    Mtu {
        /// Packet size tried (payload + headers).
        packet: u32,
        /// The pod MTU that packet size comes from.
        pod_mtu: u32,
        /// A path MTU a hop reported, if any did.
        path_mtu: Option<u32>,
    },
    /// Nothing found wrong in routes and overlay entries.
    Unknown {
        /// What ping said, and where to look.
        detail: String,
    },
}

impl Cause {
    /// Short name (`no-route`, `mtu`…), for summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            Cause::NotTested { .. } => "not-tested",
            Cause::NoRoute { .. } => "no-route",
            Cause::NoNeighbour { .. } => "no-neighbour",
            Cause::NoFdb { .. } => "no-fdb",
            Cause::NodeUnreachable { .. } => "node-unreachable",
            Cause::Mtu { .. } => "mtu",
            Cause::Unknown { .. } => "unknown",
        }
    }
}

fn path_word(reply: bool) -> &'static str {
    if reply { "reply path: " } else { "" }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::NotTested { node, reason } => write!(f, "not tested: {node}: {reason}"),
            Cause::NoRoute {
                node,
                dst,
                peer,
                subnet,
                expected,
                actual,
                reply_path,
            } => {
                let subnet = subnet
                    .as_deref()
                    .map(|s| format!(" {s}"))
                    .unwrap_or_default();
                write!(
                    f,
                    "{}no route: on {node}, {dst} goes `{actual}` instead of {expected}: \
                     the route to {peer}'s pod subnet{subnet} is missing or wrong (flannel's agent programs it)",
                    path_word(*reply_path)
                )
            }
            Cause::NoNeighbour {
                node,
                dev,
                gateway,
                peer,
                reply_path,
            } => write!(
                f,
                "{}no neighbour entry: on {node}, {dev} has no ARP entry for {gateway} ({peer}'s VTEP); \
                 the agent did not program it",
                path_word(*reply_path)
            ),
            Cause::NoFdb {
                node,
                dev,
                mac,
                points_to,
                peer,
                reply_path,
            } => match points_to {
                Some(other) => write!(
                    f,
                    "{}wrong FDB entry: on {node}, {dev} sends {mac} to {other}, not to {peer}",
                    path_word(*reply_path)
                ),
                None => write!(
                    f,
                    "{}no FDB entry: on {node}, {dev} has no forwarding entry for {mac} ({peer}'s VTEP); \
                     encapsulated packets have nowhere to go",
                    path_word(*reply_path)
                ),
            },
            Cause::NodeUnreachable { node, peer, addr } => write!(
                f,
                "node unreachable: {node} cannot ping {peer} at {addr} (the node network between them is down or filtered)"
            ),
            Cause::Mtu {
                packet,
                pod_mtu,
                path_mtu,
            } => match path_mtu {
                Some(p) => write!(
                    f,
                    "MTU: {packet}-byte packets (pod MTU {pod_mtu}) with DF set do not pass; a hop reports a path MTU of {p}: \
                     lower the pod MTU (FLANNEL_MTU / backend MTU) to fit or raise the link MTU"
                ),
                None => write!(
                    f,
                    "MTU: {packet}-byte packets (pod MTU {pod_mtu}) with DF set are dropped silently while small ones pass \
                     (an MTU black hole): a link on the path has a smaller MTU than the pods assume"
                ),
            },
            Cause::Unknown { detail } => write!(f, "unknown: {detail}"),
        }
    }
}

/// One end of a pair as the classifier sees it.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// Inventory name of the node.
    pub node: &'a str,
    /// The node's addresses, pod subnet and bridge.
    pub net: &'a NodeNet,
    /// Facts gathered on that node.
    pub facts: Option<&'a NodeFacts>,
}

/// Where a failing ping came from.
#[derive(Debug, Clone, Copy)]
pub struct Failing<'a> {
    /// Source node.
    pub src: Side<'a>,
    /// Address the target saw as source (pod address, or the node address the kernel chose).
    pub src_addr: IpAddr,
    /// Target node.
    pub dst: Side<'a>,
    /// The target address.
    pub dst_addr: IpAddr,
    /// Small-packet result.
    pub reach: &'a PingResult,
    /// MTU-pass result.
    pub mtu: Option<&'a PingResult>,
    /// The pod MTU the MTU pass sized its packets from.
    pub pod_mtu: u32,
}

/// The likely cause of a failing pair (`reach` or `mtu` failed).
pub fn classify(backend: &Backend, p: &Failing<'_>) -> Cause {
    if p.reach.ok() {
        let mtu = p.mtu.filter(|m| !m.ok());
        let pod_mtu = p.pod_mtu;
        return Cause::Mtu {
            packet: mtu.map_or(pod_mtu, |m| m.size + super::ping::header_overhead(m.target)),
            pod_mtu,
            path_mtu: mtu.and_then(|m| m.path_mtu),
        };
    }
    if p.src.node != p.dst.node {
        if let Some(cause) = check_path(backend, p.src, p.dst, p.dst_addr, false) {
            return cause;
        }
        let peer_addr = p.dst.net.host_addrs.first().copied();
        if let (Some(facts), Some(addr)) = (p.src.facts, peer_addr)
            && facts.reached(addr) == Some(false)
        {
            return Cause::NodeUnreachable {
                node: p.src.node.to_string(),
                peer: p.dst.node.to_string(),
                addr,
            };
        }
        // The reply goes back to the source address: only pod-side addresses need flannel's
        // routes (a node address is reached through the node network).
        let src_is_pod_side = p.src.net.subnet.is_some_and(|n| n.contains(&p.src_addr));
        if src_is_pod_side && let Some(cause) = check_path(backend, p.dst, p.src, p.src_addr, true)
        {
            return cause;
        }
    } else if let Some(cause) = check_local(p.src, p.dst_addr) {
        return cause;
    }
    let said = if p.reach.errors.is_empty() {
        format!(
            "{}% loss without any ICMP error",
            p.reach.loss_pct().round()
        )
    } else {
        format!("ping says: {}", p.reach.errors.join("; "))
    };
    Cause::Unknown {
        detail: format!(
            "{said}; routes and overlay entries look right: check firewalls (iptables FORWARD policy) \
             and rp_filter on {} and {}",
            p.src.node, p.dst.node
        ),
    }
}

/// The target is on the same node: the route must go out the pod bridge.
fn check_local(src: Side<'_>, dst_addr: IpAddr) -> Option<Cause> {
    let route = src.facts?.route(dst_addr)?;
    let bridge = src.net.bridge.as_deref()?;
    (route.dev.as_deref() != Some(bridge) || !usable(route)).then(|| Cause::NoRoute {
        node: src.node.to_string(),
        dst: dst_addr,
        peer: src.node.to_string(),
        subnet: src.net.subnet.map(|s| s.to_string()),
        expected: format!("dev {bridge}"),
        actual: route.text.clone(),
        reply_path: false,
    })
}

fn usable(route: &RouteFact) -> bool {
    matches!(route.kind.as_str(), "unicast" | "local")
}

/// Check that `from` sends `addr` (an address on `to`'s pod side) where the backend says.
fn check_path(
    backend: &Backend,
    from: Side<'_>,
    to: Side<'_>,
    addr: IpAddr,
    reply_path: bool,
) -> Option<Cause> {
    let facts = from.facts?;
    let route = facts.route(addr)?;
    let peer_addrs = &to.net.host_addrs;
    let via_peer = route.via.is_some_and(|v| peer_addrs.contains(&v));
    let no_route = |expected: String| Cause::NoRoute {
        node: from.node.to_string(),
        dst: addr,
        peer: to.node.to_string(),
        subnet: to.net.subnet.map(|s| s.to_string()),
        expected,
        actual: route.text.clone(),
        reply_path,
    };
    let peer_list = peer_addrs
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(" or ");
    match backend {
        Backend::HostGw => {
            (!usable(route) || !via_peer).then(|| no_route(format!("`via {peer_list}`")))
        }
        Backend::Vxlan {
            vni,
            direct_routing,
            ..
        } => {
            let dev = format!("flannel.{vni}");
            if *direct_routing && via_peer && usable(route) {
                return None;
            }
            if !usable(route) || route.dev.as_deref() != Some(dev.as_str()) {
                let expected = if *direct_routing {
                    format!("`via {peer_list}` or `dev {dev}`")
                } else {
                    format!("`dev {dev}`")
                };
                return Some(no_route(expected));
            }
            let gateway = route.via.unwrap_or(addr);
            if facts.dev.as_deref() != Some(dev.as_str()) {
                return None;
            }
            let neigh = facts
                .neighbours
                .iter()
                .find(|n| n.ip == gateway)
                .and_then(|n| n.lladdr.clone());
            let Some(mac) = neigh else {
                return Some(Cause::NoNeighbour {
                    node: from.node.to_string(),
                    dev,
                    gateway,
                    peer: to.node.to_string(),
                    reply_path,
                });
            };
            match facts.fdb.iter().find(|e| e.mac == mac && e.dst.is_some()) {
                None => Some(Cause::NoFdb {
                    node: from.node.to_string(),
                    dev,
                    mac,
                    points_to: None,
                    peer: to.node.to_string(),
                    reply_path,
                }),
                Some(e) if !e.dst.is_some_and(|d| peer_addrs.contains(&d)) => Some(Cause::NoFdb {
                    node: from.node.to_string(),
                    dev,
                    mac,
                    points_to: e.dst,
                    peer: to.node.to_string(),
                    reply_path,
                }),
                Some(_) => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::model::{FdbFact, NeighFact, Pass, PingSource, ProbeInfo};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn probe(n: u8) -> ProbeInfo {
        ProbeInfo {
            id: format!("p-{n}"),
            netns: format!("installer-probe-p-{n}"),
            ifname: "eth0".into(),
            ip: ip(&format!("198.19.{}.2", 64 + n)),
            prefix_len: 24,
            gateway: Some(ip(&format!("198.19.{}.1", 64 + n))),
            mtu: 1500,
            network: "cbr0".into(),
            host_interfaces: vec!["cni0".into(), format!("veth{n}")],
            host_addrs: vec![ip(&format!("198.18.0.{}", 10 + n))],
        }
    }

    fn ping(target: IpAddr, ok: bool, pass: Pass) -> PingResult {
        PingResult {
            source: PingSource::Host,
            target,
            pass,
            size: if pass == Pass::Mtu { 1472 } else { 56 },
            df: pass == Pass::Mtu,
            sent: 3,
            received: if ok { 3 } else { 0 },
            rtt_min_ms: None,
            rtt_avg_ms: None,
            rtt_max_ms: None,
            errors: vec![],
            path_mtu: None,
        }
    }

    fn route(dst: &str, text: &str) -> RouteFact {
        crate::verify::iproute::parse_route_get(ip(dst), true, text, "")
    }

    struct Case {
        backend: Backend,
        src_facts: NodeFacts,
        dst_facts: NodeFacts,
        reach_ok: bool,
        mtu: Option<PingResult>,
    }

    fn run(c: &Case) -> Cause {
        let (p1, p3) = (probe(1), probe(3));
        let (n1, n3) = (p1.node_net(), p3.node_net());
        let reach = ping(p3.ip, c.reach_ok, Pass::Reach);
        let f = Failing {
            src: Side {
                node: "198.18.0.11",
                net: &n1,
                facts: Some(&c.src_facts),
            },
            src_addr: p1.ip,
            dst: Side {
                node: "198.18.0.13",
                net: &n3,
                facts: Some(&c.dst_facts),
            },
            dst_addr: p3.ip,
            reach: &reach,
            mtu: c.mtu.as_ref(),
            pod_mtu: 1500,
        };
        classify(&c.backend, &f)
    }

    fn good_hostgw_src() -> NodeFacts {
        NodeFacts {
            routes: vec![route(
                "198.19.67.2",
                "198.19.67.2 via 198.18.0.13 dev eth0 src 198.18.0.11 uid 0",
            )],
            reach: vec![ping(ip("198.18.0.13"), true, Pass::Reach)],
            ..Default::default()
        }
    }

    fn good_hostgw_dst() -> NodeFacts {
        NodeFacts {
            routes: vec![route(
                "198.19.65.2",
                "198.19.65.2 via 198.18.0.11 dev eth0 src 198.18.0.13 uid 0",
            )],
            ..Default::default()
        }
    }

    const VX: Backend = Backend::Vxlan {
        vni: 1,
        port: 0,
        direct_routing: false,
    };

    fn good_vxlan_src() -> NodeFacts {
        NodeFacts {
            routes: vec![route(
                "198.19.67.2",
                "198.19.67.2 via 198.19.67.0 dev flannel.1 src 198.19.65.0 uid 0",
            )],
            dev: Some("flannel.1".into()),
            dev_exists: true,
            neighbours: vec![NeighFact {
                ip: ip("198.19.67.0"),
                lladdr: Some("aa:bb:cc:dd:ee:03".into()),
                state: "PERMANENT".into(),
            }],
            fdb: vec![FdbFact {
                mac: "aa:bb:cc:dd:ee:03".into(),
                dst: Some(ip("198.18.0.13")),
            }],
            reach: vec![ping(ip("198.18.0.13"), true, Pass::Reach)],
        }
    }

    #[test]
    fn host_gw_causes() {
        // forward route missing: falls to the default route
        let mut src = good_hostgw_src();
        src.routes = vec![route(
            "198.19.67.2",
            "198.19.67.2 via 198.18.0.254 dev eth0 src 198.18.0.11 uid 0",
        )];
        let c = run(&Case {
            backend: Backend::HostGw,
            src_facts: src,
            dst_facts: good_hostgw_dst(),
            reach_ok: false,
            mtu: None,
        });
        assert_eq!(c.kind(), "no-route");
        let text = c.to_string();
        assert_eq!(
            text,
            "no route: on 198.18.0.11, 198.19.67.2 goes `198.19.67.2 via 198.18.0.254 dev eth0 src 198.18.0.11` \
             instead of `via 198.18.0.13`: the route to 198.18.0.13's pod subnet 198.19.67.0/24 is missing or wrong \
             (flannel's agent programs it)"
        );
        assert!(!text.contains("reply path"), "{text}");

        // reply route missing on the target node
        let mut dst = good_hostgw_dst();
        dst.routes = vec![route(
            "198.19.65.2",
            "198.19.65.2 via 198.18.0.254 dev eth0 src 198.18.0.13 uid 0",
        )];
        let c = run(&Case {
            backend: Backend::HostGw,
            src_facts: good_hostgw_src(),
            dst_facts: dst,
            reach_ok: false,
            mtu: None,
        });
        assert!(
            matches!(&c, Cause::NoRoute { reply_path: true, node, .. } if node == "198.18.0.13"),
            "{c:?}"
        );
        assert!(
            c.to_string()
                .starts_with("reply path: no route: on 198.18.0.13")
        );

        // unreachable route type
        let mut src = good_hostgw_src();
        src.routes = vec![crate::verify::iproute::parse_route_get(
            ip("198.19.67.2"),
            false,
            "",
            "RTNETLINK answers: Network is unreachable",
        )];
        assert_eq!(
            run(&Case {
                backend: Backend::HostGw,
                src_facts: src,
                dst_facts: good_hostgw_dst(),
                reach_ok: false,
                mtu: None
            })
            .kind(),
            "no-route"
        );

        // routes right, underlay down
        let mut src = good_hostgw_src();
        src.reach = vec![ping(ip("198.18.0.13"), false, Pass::Reach)];
        let c = run(&Case {
            backend: Backend::HostGw,
            src_facts: src,
            dst_facts: good_hostgw_dst(),
            reach_ok: false,
            mtu: None,
        });
        assert_eq!(
            c,
            Cause::NodeUnreachable {
                node: "198.18.0.11".into(),
                peer: "198.18.0.13".into(),
                addr: ip("198.18.0.13")
            }
        );

        // everything right: unknown, with the hint
        let c = run(&Case {
            backend: Backend::HostGw,
            src_facts: good_hostgw_src(),
            dst_facts: good_hostgw_dst(),
            reach_ok: false,
            mtu: None,
        });
        assert_eq!(c.kind(), "unknown");
        assert!(c.to_string().contains("FORWARD"), "{c}");
    }

    #[test]
    fn mtu_cause() {
        let mut big = ping(ip("198.19.67.2"), false, Pass::Mtu);
        big.path_mtu = Some(1400);
        let c = run(&Case {
            backend: Backend::HostGw,
            src_facts: good_hostgw_src(),
            dst_facts: good_hostgw_dst(),
            reach_ok: true,
            mtu: Some(big.clone()),
        });
        assert_eq!(
            c,
            Cause::Mtu {
                packet: 1500,
                pod_mtu: 1500,
                path_mtu: Some(1400)
            }
        );
        assert!(c.to_string().contains("path MTU of 1400"));
        big.path_mtu = None;
        let c = run(&Case {
            backend: Backend::HostGw,
            src_facts: good_hostgw_src(),
            dst_facts: good_hostgw_dst(),
            reach_ok: true,
            mtu: Some(big),
        });
        assert!(c.to_string().contains("black hole"), "{c}");
    }

    #[test]
    fn vxlan_causes() {
        let dst = NodeFacts::default();
        assert_eq!(
            run(&Case {
                backend: VX,
                src_facts: good_vxlan_src(),
                dst_facts: dst.clone(),
                reach_ok: false,
                mtu: None
            })
            .kind(),
            "unknown"
        );

        let mut src = good_vxlan_src();
        src.neighbours.clear();
        let c = run(&Case {
            backend: VX,
            src_facts: src,
            dst_facts: dst.clone(),
            reach_ok: false,
            mtu: None,
        });
        assert_eq!(c.kind(), "no-neighbour");
        assert!(
            c.to_string()
                .contains("flannel.1 has no ARP entry for 198.19.67.0"),
            "{c}"
        );

        let mut src = good_vxlan_src();
        src.fdb.clear();
        let c = run(&Case {
            backend: VX,
            src_facts: src,
            dst_facts: dst.clone(),
            reach_ok: false,
            mtu: None,
        });
        assert_eq!(c.kind(), "no-fdb");
        assert!(
            c.to_string()
                .contains("no forwarding entry for aa:bb:cc:dd:ee:03"),
            "{c}"
        );

        let mut src = good_vxlan_src();
        src.fdb[0].dst = Some(ip("198.18.0.12"));
        let c = run(&Case {
            backend: VX,
            src_facts: src,
            dst_facts: dst.clone(),
            reach_ok: false,
            mtu: None,
        });
        assert!(
            c.to_string()
                .contains("sends aa:bb:cc:dd:ee:03 to 198.18.0.12"),
            "{c}"
        );

        // a host-gw style route while the backend is vxlan: wrong device
        let c = run(&Case {
            backend: VX,
            src_facts: good_hostgw_src(),
            dst_facts: dst.clone(),
            reach_ok: false,
            mtu: None,
        });
        assert_eq!(c.kind(), "no-route");
        // ... which DirectRouting allows
        let direct = Backend::Vxlan {
            vni: 1,
            port: 0,
            direct_routing: true,
        };
        assert_eq!(
            run(&Case {
                backend: direct,
                src_facts: good_hostgw_src(),
                dst_facts: good_hostgw_dst(),
                reach_ok: false,
                mtu: None
            })
            .kind(),
            "unknown"
        );
    }
}
