//! Choosing the external interface (flannel-spec §7), with one deliberate change: without
//! `--iface`/`--iface-regex` the interface is the one holding the node's inventory address, not
//! the one of the default route, so multi-NIC nodes use the network the cluster was built on
//! (§11 "Wrong NIC"). The choice is a pure function of the kernel's links, addresses and routes.

use super::netlink::{Addr4, Link, Route4};
use regex::Regex;
use std::net::Ipv4Addr;
use thiserror::Error;

/// No usable interface.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IfaceError {
    /// `--iface`/`--iface-regex` matched nothing.
    #[error(
        "Failed to find interface to use that matches the interfaces and/or regexes provided ({asked}); interfaces here: {available}"
    )]
    NoMatch {
        /// What was asked for.
        asked: String,
        /// Every interface with its IPv4 addresses.
        available: String,
    },
    /// Neither the node address nor a default route gave an interface.
    #[error("Failed to find any valid interface to use: {reason}; interfaces here: {available}")]
    NoDefault {
        /// Why.
        reason: String,
        /// Every interface with its IPv4 addresses.
        available: String,
    },
    /// A bad `--iface-regex`.
    #[error("invalid --iface-regex {regex:?}: {error}")]
    BadRegex {
        /// The pattern.
        regex: String,
        /// The parser's message.
        error: String,
    },
    /// The interface has no usable MTU.
    #[error("interface {0} has MTU 0; cannot derive the backend MTU")]
    NoMtu(String),
}

/// What the operator asked for.
#[derive(Debug, Clone, Default)]
pub struct IfaceRequest {
    /// `--iface` values (names or IPv4 addresses), tried in order.
    pub ifaces: Vec<String>,
    /// `--iface-regex` values, tried in order after `ifaces`.
    pub regexes: Vec<String>,
    /// The node's inventory address, resolved to IPv4 addresses.
    pub node_addresses: Vec<Ipv4Addr>,
    /// `--public-ip`.
    pub public_ip: Option<Ipv4Addr>,
}

/// The chosen interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtIface {
    /// ifindex.
    pub index: u32,
    /// Name.
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// The interface address used as vxlan local address and default public address.
    pub addr: Ipv4Addr,
    /// How it was chosen (for the log).
    pub reason: String,
}

fn usable(a: &Addr4) -> bool {
    !a.host_scope && !a.ip.is_loopback() && !a.ip.is_unspecified() && !a.ip.is_multicast()
}

/// The interface's address flannel would use: global before link-local, permanent before
/// dynamic, never deprecated.
fn best_address(addrs: &[Addr4], index: u32) -> Option<Ipv4Addr> {
    addrs
        .iter()
        .filter(|a| a.index == index && usable(a) && !a.deprecated)
        .min_by_key(|a| (a.ip.is_link_local(), !a.permanent))
        .map(|a| a.ip)
}

/// `lo 127.0.0.1/8, eth0 198.18.0.11/24, eth1 (no IPv4)` for error messages.
pub fn describe_interfaces(links: &[Link], addrs: &[Addr4]) -> String {
    links
        .iter()
        .map(|l| {
            let ips: Vec<String> = addrs
                .iter()
                .filter(|a| a.index == l.index)
                .map(|a| format!("{}/{}", a.ip, a.prefix_len))
                .collect();
            if ips.is_empty() {
                format!("{} (no IPv4)", l.name)
            } else {
                format!("{} {}", l.name, ips.join(" "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn make(link: &Link, addr: Ipv4Addr, reason: String) -> Result<ExtIface, IfaceError> {
    if link.mtu == 0 {
        return Err(IfaceError::NoMtu(link.name.clone()));
    }
    Ok(ExtIface {
        index: link.index,
        name: link.name.clone(),
        mtu: link.mtu,
        addr,
        reason,
    })
}

fn link_holding<'a>(links: &'a [Link], addrs: &[Addr4], ip: Ipv4Addr) -> Option<&'a Link> {
    let a = addrs.iter().find(|a| a.ip == ip)?;
    links.iter().find(|l| l.index == a.index)
}

/// Choose the external interface (§7 order: `--iface` values, then `--iface-regex` values;
/// without either: the node address, then the `--public-ip` owner, then the default route).
pub fn select(
    links: &[Link],
    addrs: &[Addr4],
    routes: &[Route4],
    req: &IfaceRequest,
) -> Result<ExtIface, IfaceError> {
    let mut links: Vec<Link> = links.to_vec();
    links.sort_by_key(|l| l.index);
    let links = &links[..];
    if !req.ifaces.is_empty() || !req.regexes.is_empty() {
        for want in &req.ifaces {
            if let Ok(ip) = want.parse::<Ipv4Addr>() {
                if let Some(link) = link_holding(links, addrs, ip) {
                    return make(link, ip, format!("--iface {want}"));
                }
            } else if let Some(link) = links.iter().find(|l| &l.name == want)
                && let Some(ip) = best_address(addrs, link.index)
            {
                return make(link, ip, format!("--iface {want}"));
            }
        }
        for pattern in &req.regexes {
            let re = Regex::new(pattern).map_err(|e| IfaceError::BadRegex {
                regex: pattern.clone(),
                error: e.to_string(),
            })?;
            for link in links {
                if let Some(a) = addrs
                    .iter()
                    .find(|a| a.index == link.index && usable(a) && re.is_match(&a.ip.to_string()))
                {
                    return make(link, a.ip, format!("--iface-regex {pattern} (address)"));
                }
            }
            for link in links {
                if re.is_match(&link.name)
                    && let Some(ip) = best_address(addrs, link.index)
                {
                    return make(link, ip, format!("--iface-regex {pattern} (name)"));
                }
            }
        }
        let mut asked: Vec<String> = req.ifaces.iter().map(|i| format!("--iface {i}")).collect();
        asked.extend(req.regexes.iter().map(|r| format!("--iface-regex {r}")));
        return Err(IfaceError::NoMatch {
            asked: asked.join(", "),
            available: describe_interfaces(links, addrs),
        });
    }
    for ip in &req.node_addresses {
        if let Some(link) = link_holding(links, addrs, *ip) {
            return make(link, *ip, format!("it holds the node address {ip}"));
        }
    }
    if let Some(ip) = req.public_ip
        && let Some(link) = link_holding(links, addrs, ip)
    {
        return make(link, ip, format!("it holds --public-ip {ip}"));
    }
    let default = routes
        .iter()
        .filter(|r| r.dst.prefix_len() == 0 && r.oif.is_some())
        .find_map(|r| links.iter().find(|l| Some(l.index) == r.oif));
    match default {
        Some(link) => match best_address(addrs, link.index) {
            Some(ip) => {
                let why = if req.node_addresses.is_empty() {
                    "it has the default route".to_string()
                } else {
                    format!(
                        "it has the default route (no interface holds the node address {})",
                        req.node_addresses
                            .iter()
                            .map(|i| i.to_string())
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                };
                make(link, ip, why)
            }
            None => Err(IfaceError::NoDefault {
                reason: format!("default route interface {} has no IPv4 address", link.name),
                available: describe_interfaces(links, addrs),
            }),
        },
        None => Err(IfaceError::NoDefault {
            reason: if req.node_addresses.is_empty() {
                "no node address configured and no default route".into()
            } else {
                format!(
                    "no interface holds the node address ({}) and there is no default route",
                    req.node_addresses
                        .iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            },
            available: describe_interfaces(links, addrs),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            mtu: 1500,
            mac: vec![2, 0, 0, 0, 0, index as u8],
            up: true,
            kind: None,
            vxlan: None,
        }
    }

    fn addr(index: u32, ip: [u8; 4], len: u8) -> Addr4 {
        Addr4 {
            index,
            ip: Ipv4Addr::from(ip),
            prefix_len: len,
            host_scope: ip[0] == 127,
            permanent: true,
            deprecated: false,
        }
    }

    /// lo, eth0 (NAT, default route), eth1 (cluster network, the inventory address).
    fn world() -> (Vec<Link>, Vec<Addr4>, Vec<Route4>) {
        let links = vec![link(1, "lo"), link(2, "eth0"), link(3, "eth1")];
        let addrs = vec![
            addr(1, [127, 0, 0, 1], 8),
            addr(2, [10, 0, 2, 15], 24),
            addr(3, [192, 168, 56, 11], 24),
        ];
        let routes = vec![Route4 {
            dst: "0.0.0.0/0".parse().unwrap(),
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            oif: Some(2),
            onlink: false,
            protocol: 3,
        }];
        (links, addrs, routes)
    }

    #[test]
    fn spec11_node_address_wins_over_default_route() {
        let (l, a, r) = world();
        let req = IfaceRequest {
            node_addresses: vec![Ipv4Addr::new(192, 168, 56, 11)],
            ..Default::default()
        };
        let ext = select(&l, &a, &r, &req).unwrap();
        assert_eq!(
            (ext.name.as_str(), ext.addr),
            ("eth1", Ipv4Addr::new(192, 168, 56, 11))
        );
    }

    #[test]
    fn spec7_default_route_without_node_address() {
        let (l, a, r) = world();
        let ext = select(&l, &a, &r, &IfaceRequest::default()).unwrap();
        assert_eq!(ext.name, "eth0");
        // a node address no interface holds falls back to the default route and says so
        let req = IfaceRequest {
            node_addresses: vec![Ipv4Addr::new(203, 0, 113, 9)],
            ..Default::default()
        };
        let ext = select(&l, &a, &r, &req).unwrap();
        assert_eq!(ext.name, "eth0");
        assert!(ext.reason.contains("203.0.113.9"), "{}", ext.reason);
    }

    #[test]
    fn spec7_public_ip_owner_is_used_when_no_node_address_matches() {
        let (l, a, r) = world();
        let req = IfaceRequest {
            public_ip: Some(Ipv4Addr::new(192, 168, 56, 11)),
            ..Default::default()
        };
        assert_eq!(select(&l, &a, &r, &req).unwrap().name, "eth1");
    }

    #[test]
    fn spec7_iface_by_name_or_ip_in_order() {
        let (l, a, r) = world();
        let req = IfaceRequest {
            ifaces: vec!["nope".into(), "10.0.2.15".into(), "eth1".into()],
            node_addresses: vec![Ipv4Addr::new(192, 168, 56, 11)],
            ..Default::default()
        };
        let ext = select(&l, &a, &r, &req).unwrap();
        assert_eq!(
            (ext.name.as_str(), ext.addr),
            ("eth0", Ipv4Addr::new(10, 0, 2, 15))
        );
    }

    #[test]
    fn spec7_regex_matches_address_before_name() {
        let (l, a, r) = world();
        let req = IfaceRequest {
            regexes: vec![r"^192\.168\.".into()],
            ..Default::default()
        };
        assert_eq!(select(&l, &a, &r, &req).unwrap().name, "eth1");
        let req = IfaceRequest {
            regexes: vec!["^eth".into()],
            ..Default::default()
        };
        assert_eq!(select(&l, &a, &r, &req).unwrap().name, "eth0");
    }

    #[test]
    fn spec7_nothing_matches_lists_interfaces() {
        let (l, a, r) = world();
        let req = IfaceRequest {
            ifaces: vec!["wlan0".into()],
            regexes: vec!["^bond".into()],
            ..Default::default()
        };
        let e = select(&l, &a, &r, &req).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "Failed to find interface to use that matches the interfaces and/or regexes provided"
            ),
            "{e}"
        );
        assert!(e.contains("--iface wlan0, --iface-regex ^bond"), "{e}");
        assert!(e.contains("eth1 192.168.56.11/24"), "{e}");
        let e = select(&l, &a, &[], &IfaceRequest::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("Failed to find any valid interface to use"),
            "{e}"
        );
        let req = IfaceRequest {
            regexes: vec!["(".into()],
            ..Default::default()
        };
        assert!(matches!(
            select(&l, &a, &r, &req),
            Err(IfaceError::BadRegex { .. })
        ));
    }
}
