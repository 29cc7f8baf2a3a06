//! Subnet leases: what a node advertises (`LeaseAttrs`), the etcd key format, subnet allocation
//! and the peer tracker that turns listings and watch events into add/remove events
//! (flannel-spec §4).

use super::netconf::NetConf;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

/// What a node publishes with its subnet: `{"PublicIP":..,"PublicIPv6":null,"BackendType":..,
/// "BackendData":..}` (§4; BackendType/BackendData omitted when empty, as flannel does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseAttrs {
    /// The node's external address peers send to.
    #[serde(rename = "PublicIP", alias = "publicip", alias = "publicIP")]
    pub public_ip: Ipv4Addr,
    /// Always null here (IPv4 only); kept so the JSON matches flannel's.
    #[serde(rename = "PublicIPv6", default)]
    pub public_ipv6: Option<Ipv6Addr>,
    /// `vxlan` or `host-gw`.
    #[serde(
        rename = "BackendType",
        alias = "backendtype",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub backend_type: String,
    /// Backend specific data (vxlan: `{"VNI":1,"VtepMAC":"…"}`).
    #[serde(
        rename = "BackendData",
        alias = "backenddata",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_data: Option<Value>,
}

impl LeaseAttrs {
    /// The vxlan `VtepMAC` in the backend data, if any.
    pub fn vtep_mac(&self) -> Option<[u8; 6]> {
        let data = self.backend_data.as_ref()?.as_object()?;
        let mac = data
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("VtepMAC"))?
            .1
            .as_str()?;
        parse_mac(mac)
    }
}

/// A subnet held by a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// The node's subnet.
    pub subnet: Ipv4Net,
    /// What it advertises.
    pub attrs: LeaseAttrs,
    /// When it expires unless renewed (None: never, e.g. a reservation).
    pub expiration: Option<Instant>,
    /// Datastore handle of the lease (etcd lease id; 0 when none).
    pub id: i64,
}

/// Parse `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Format a MAC in flannel's lower-case colon form.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A random locally administered unicast MAC (first octet `&0xfe|0x02`, §5.1).
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    for b in &mut mac {
        *b = fastrand::u8(..);
    }
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// The key name of a subnet under `<prefix>/subnets/`: `10.5.52.0-24`.
pub fn subnet_key(subnet: Ipv4Net) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix_len())
}

/// Parse a key name (`10.5.52.0-24`, optionally with a `&<ipv6>-<len>` part, which is ignored).
pub fn parse_subnet_key(name: &str) -> Option<Ipv4Net> {
    let v4 = name.split('&').next()?;
    let (ip, len) = v4.rsplit_once('-')?;
    let net = Ipv4Net::new(ip.parse().ok()?, len.parse().ok()?).ok()?;
    (net.network() == net.addr()).then_some(net)
}

/// Whether a subnet may be used under a config: the right size and inside SubnetMin..SubnetMax.
pub fn compatible(conf: &NetConf, subnet: Ipv4Net) -> bool {
    let start = u32::from(subnet.network());
    subnet.prefix_len() == conf.subnet_len
        && conf.network.contains(&subnet)
        && start >= u32::from(conf.subnet_min)
        && start <= u32::from(conf.subnet_max)
}

/// Up to `limit` subnets between SubnetMin and SubnetMax, in order, that overlap none of
/// `taken` (§4 step 3: flannel collects 100 and picks one at random).
pub fn free_subnets(conf: &NetConf, taken: &[Ipv4Net], limit: usize) -> Vec<Ipv4Net> {
    let size: u64 = 1u64 << (32 - u32::from(conf.subnet_len.min(32)));
    let mut out = Vec::new();
    let mut at = u64::from(u32::from(conf.subnet_min));
    let end = u64::from(u32::from(conf.subnet_max));
    while at <= end && out.len() < limit {
        let Ok(candidate) = Ipv4Net::new(Ipv4Addr::from(at as u32), conf.subnet_len) else {
            break;
        };
        if !taken
            .iter()
            .any(|t| t.contains(&candidate) || candidate.contains(t))
        {
            out.push(candidate);
        }
        at += size;
    }
    out
}

/// Pick one of the first 100 free subnets uniformly at random; None when the range is full.
pub fn pick_subnet(conf: &NetConf, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    let free = free_subnets(conf, taken, 100);
    if free.is_empty() {
        None
    } else {
        Some(free[fastrand::usize(..free.len())])
    }
}

/// What changed among the peers.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseEvent {
    /// A peer appeared or its attributes changed (carries the current lease).
    Added(Lease),
    /// A peer's lease went away (carries the last known lease).
    Removed(Lease),
    /// Our own lease was deleted or expired.
    Revoked,
}

/// The set of known peer leases, fed with full listings and single changes; emits only real
/// changes. Our own subnet is tracked apart: it is never a peer, and its disappearance is a
/// revocation (§4).
#[derive(Debug)]
pub struct LeaseTracker {
    own: Ipv4Net,
    known: BTreeMap<Ipv4Net, Lease>,
}

impl LeaseTracker {
    /// A tracker for the node holding `own`.
    pub fn new(own: Ipv4Net) -> Self {
        LeaseTracker {
            own,
            known: BTreeMap::new(),
        }
    }

    /// Known peers.
    pub fn peers(&self) -> impl Iterator<Item = &Lease> {
        self.known.values()
    }

    /// A complete listing (start, or after a compaction): adds for new or changed peers,
    /// removes for vanished ones; Revoked when our own subnet is not in it.
    pub fn reset(&mut self, listing: Vec<Lease>) -> Vec<LeaseEvent> {
        let mut events = Vec::new();
        let mut seen_own = false;
        let mut next = BTreeMap::new();
        for lease in listing {
            if lease.subnet == self.own {
                seen_own = true;
                continue;
            }
            next.insert(lease.subnet, lease);
        }
        for (subnet, old) in &self.known {
            if !next.contains_key(subnet) {
                events.push(LeaseEvent::Removed(old.clone()));
            }
        }
        for (subnet, lease) in &next {
            if self.known.get(subnet).map(|l| &l.attrs) != Some(&lease.attrs) {
                events.push(LeaseEvent::Added(lease.clone()));
            }
        }
        self.known = next;
        if !seen_own {
            events.push(LeaseEvent::Revoked);
        }
        events
    }

    /// A key was written.
    pub fn upsert(&mut self, lease: Lease) -> Option<LeaseEvent> {
        if lease.subnet == self.own {
            return None;
        }
        let changed = self.known.get(&lease.subnet).map(|l| &l.attrs) != Some(&lease.attrs);
        self.known.insert(lease.subnet, lease.clone());
        changed.then_some(LeaseEvent::Added(lease))
    }

    /// A key was deleted (or its lease expired).
    pub fn remove(&mut self, subnet: Ipv4Net) -> Option<LeaseEvent> {
        if subnet == self.own {
            return Some(LeaseEvent::Revoked);
        }
        self.known.remove(&subnet).map(LeaseEvent::Removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::netconf::parse_and_validate;

    fn conf(text: &str) -> NetConf {
        parse_and_validate(text).unwrap()
    }

    fn lease(subnet: &str, ip: [u8; 4]) -> Lease {
        Lease {
            subnet: subnet.parse().unwrap(),
            attrs: LeaseAttrs {
                public_ip: Ipv4Addr::from(ip),
                public_ipv6: None,
                backend_type: "host-gw".into(),
                backend_data: None,
            },
            expiration: None,
            id: 0,
        }
    }

    #[test]
    fn spec4_key_format_round_trips() {
        let net: Ipv4Net = "10.5.52.0/24".parse().unwrap();
        assert_eq!(subnet_key(net), "10.5.52.0-24");
        assert_eq!(parse_subnet_key("10.5.52.0-24"), Some(net));
        assert_eq!(parse_subnet_key("10.5.52.0-24&fd00::-64"), Some(net));
        assert_eq!(parse_subnet_key("10.5.52.1-24"), None);
        assert_eq!(parse_subnet_key("garbage"), None);
    }

    #[test]
    fn spec4_lease_value_json_matches_flannel() {
        let attrs = LeaseAttrs {
            public_ip: Ipv4Addr::new(192, 168, 64, 3),
            public_ipv6: None,
            backend_type: "vxlan".into(),
            backend_data: Some(serde_json::json!({"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"})),
        };
        assert_eq!(
            serde_json::to_string(&attrs).unwrap(),
            r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#
        );
        assert_eq!(attrs.vtep_mac(), parse_mac("c6:d2:32:6f:8f:44"));
        let hostgw = LeaseAttrs {
            backend_type: "host-gw".into(),
            backend_data: None,
            ..attrs
        };
        assert_eq!(
            serde_json::to_string(&hostgw).unwrap(),
            r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"host-gw"}"#
        );
        // F10 values (no PublicIPv6, VtepMAC only) still parse
        let old: LeaseAttrs = serde_json::from_str(
            r#"{"PublicIP":"10.0.0.2","BackendType":"vxlan","BackendData":{"VtepMAC":"02:00:00:00:00:01"}}"#,
        )
        .unwrap();
        assert_eq!(old.vtep_mac(), Some([2, 0, 0, 0, 0, 1]));
    }

    #[test]
    fn random_mac_is_local_unicast() {
        for _ in 0..100 {
            let mac = random_mac();
            assert_eq!(mac[0] & 0x01, 0, "multicast bit set");
            assert_eq!(mac[0] & 0x02, 0x02, "not locally administered");
            assert_eq!(parse_mac(&format_mac(&mac)), Some(mac));
        }
    }

    #[test]
    fn spec4_allocation_skips_taken_and_stays_in_range() {
        let c = conf(r#"{"Network":"10.5.0.0/22","SubnetLen":24,"Backend":{"Type":"host-gw"}}"#);
        // SubnetMin = 10.5.1.0, SubnetMax = 10.5.3.0
        let all: Vec<String> = free_subnets(&c, &[], 100)
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(all, ["10.5.1.0/24", "10.5.2.0/24", "10.5.3.0/24"]);
        let taken = ["10.5.2.0/24".parse().unwrap()];
        let free: Vec<String> = free_subnets(&c, &taken, 100)
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(free, ["10.5.1.0/24", "10.5.3.0/24"]);
        // an overlapping bigger lease blocks the subnets inside it
        let big = ["10.5.0.0/23".parse().unwrap()];
        assert_eq!(free_subnets(&c, &big, 100).len(), 2);
        for _ in 0..50 {
            let p = pick_subnet(&c, &taken).unwrap();
            assert!(compatible(&c, p) && p != taken[0], "{p}");
        }
        let full: Vec<Ipv4Net> = all.iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(pick_subnet(&c, &full), None);
    }

    #[test]
    fn spec4_allocation_limit_is_100() {
        let c = conf(r#"{"Network":"10.0.0.0/8","Backend":{"Type":"host-gw"}}"#);
        let free = free_subnets(&c, &[], 100);
        assert_eq!(free.len(), 100);
        assert_eq!(free[0].to_string(), "10.0.1.0/24");
        assert_eq!(free[99].to_string(), "10.0.100.0/24");
    }

    #[test]
    fn compatibility_checks_size_and_range() {
        let c = conf(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}"#);
        assert!(compatible(&c, "10.5.7.0/24".parse().unwrap()));
        assert!(
            !compatible(&c, "10.5.0.0/24".parse().unwrap()),
            "SubnetMin skips the first"
        );
        assert!(!compatible(&c, "10.5.7.0/25".parse().unwrap()));
        assert!(!compatible(&c, "10.6.7.0/24".parse().unwrap()));
    }

    #[test]
    fn tracker_emits_only_changes_and_detects_revocation() {
        let own: Ipv4Net = "10.5.1.0/24".parse().unwrap();
        let mut t = LeaseTracker::new(own);
        let a = lease("10.5.2.0/24", [192, 168, 0, 2]);
        let b = lease("10.5.3.0/24", [192, 168, 0, 3]);
        let me = lease("10.5.1.0/24", [192, 168, 0, 1]);
        let ev = t.reset(vec![me.clone(), a.clone(), b.clone()]);
        assert_eq!(
            ev,
            vec![LeaseEvent::Added(a.clone()), LeaseEvent::Added(b.clone())]
        );
        assert_eq!(t.upsert(a.clone()), None, "unchanged");
        assert_eq!(t.upsert(me.clone()), None, "own lease is not a peer");
        let mut a2 = a.clone();
        a2.attrs.public_ip = Ipv4Addr::new(192, 168, 0, 9);
        assert_eq!(t.upsert(a2.clone()), Some(LeaseEvent::Added(a2.clone())));
        // relist after compaction: b vanished, c is new
        let c = lease("10.5.4.0/24", [192, 168, 0, 4]);
        let ev = t.reset(vec![me.clone(), a2.clone(), c.clone()]);
        assert_eq!(
            ev,
            vec![LeaseEvent::Removed(b), LeaseEvent::Added(c.clone())]
        );
        assert_eq!(t.remove(c.subnet), Some(LeaseEvent::Removed(c.clone())));
        assert_eq!(t.remove(c.subnet), None);
        assert_eq!(t.remove(own), Some(LeaseEvent::Revoked));
        assert_eq!(t.reset(vec![a2]), vec![LeaseEvent::Revoked]);
    }
}
