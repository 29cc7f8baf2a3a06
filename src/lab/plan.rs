//! Address and name plan of a lab: pure functions from the lab index to subnets, addresses and
//! namespace/link names, so every other part (and `lab down` after a crash) derives the same names.
//!
//! Lab index `x` (0‥15) owns:
//! - nodes: `198.18.x.0/24`; the deploy side (root namespace) is `198.18.x.1`, node `i` (1-based)
//!   is `198.18.x.(10+i)`, and `198.18.x.254` is a dead-end gateway in the bridge namespace (its
//!   forwarding is off, so a node's default route never leaks traffic off the lab);
//! - services: `198.18.(200+x).0/24`;
//! - pods: an aligned block of `/20` slots of `198.19.0.0/16` (16 slots in all), as many as the node
//!   count needs with `NODE_CIDR_LEN=24` (flannel's etcd mode leaves the first `/24` unused): 1 slot
//!   (a `/20`) for up to 15 nodes, 2 for 31, 4 for 63, 8 for 100. Slots are allocated apart from
//!   the index, so labs never overlap.
//!
//! Names (Linux interface names are at most 15 bytes): namespaces `il<x>-br` (the LAN bridge) and
//! `il<x>-n<i>` (nodes); the root-side veth `il<x>-h` (peer `il<x>-hb` in the bridge namespace);
//! node veths `il<x>n<i>b` (bridge side) and `eth0` inside the node.

use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// How many labs can exist at once (indexes `0..MAX_LABS`).
pub const MAX_LABS: u8 = 16;
/// Largest node count a lab accepts (addresses `.11`‥`.110`, pods fit in 8 slots).
pub const MAX_NODES: usize = 100;
/// TCP port of the artifact mirror on the deploy-side address.
pub const MIRROR_PORT: u16 = 8080;
/// etcd client port on the `[etcd]` node.
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// etcd peer port on the `[etcd]` node.
pub const ETCD_PEER_PORT: u16 = 2380;
/// Number of `/20` pod slots in `198.19.0.0/16`.
pub const POD_SLOTS: u8 = 16;
/// Longest accepted lab name.
pub const MAX_NAME_LEN: usize = 32;

/// Check a lab name: 1‥32 characters of `a-z`, `0-9` and `-`, starting and ending with a letter or
/// digit. Names become directory names under the state root, so nothing else is allowed.
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// The node subnet `198.18.x.0/24`.
pub fn node_subnet(index: u8) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(198, 18, index, 0), 24).unwrap_or_default()
}

/// The deploy-side address `198.18.x.1` (root namespace, also the mirror address).
pub fn deploy_ip(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, index, 1)
}

/// The nodes' default gateway `198.18.x.254`, a dead end in the bridge namespace.
pub fn gateway_ip(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, index, 254)
}

/// Address of node `i` (1-based): `198.18.x.(10+i)`.
pub fn node_ip(index: u8, node: usize) -> Ipv4Addr {
    // node ≤ MAX_NODES is checked by the caller; clamp keeps the octet valid anyway.
    Ipv4Addr::new(198, 18, index, (10 + node.min(MAX_NODES)) as u8)
}

/// The service range `198.18.(200+x).0/24`.
pub fn service_cidr(index: u8) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(198, 18, 200 + index, 0), 24).unwrap_or_default()
}

/// How many `/20` pod slots a lab of `nodes` nodes needs (a power of two).
pub fn pod_slots_needed(nodes: usize) -> u8 {
    let subnets = nodes + 1; // flannel's etcd mode skips the first subnet
    let slots = subnets.div_ceil(16).next_power_of_two();
    slots.min(POD_SLOTS as usize) as u8
}

/// The pod range of a block of `slots` slots starting at `first_slot`.
pub fn cluster_cidr(first_slot: u8, slots: u8) -> Ipv4Net {
    let prefix = 20 - slots.max(1).trailing_zeros() as u8;
    Ipv4Net::new(Ipv4Addr::new(198, 19, first_slot * 16, 0), prefix).unwrap_or_default()
}

/// First aligned free block of `slots` slots, given the blocks `(first, slots)` already in use.
pub fn allocate_pod_block(used: &[(u8, u8)], slots: u8) -> Option<u8> {
    let slots = slots.max(1);
    (0..POD_SLOTS).step_by(slots as usize).find(|&first| {
        first + slots <= POD_SLOTS
            && used
                .iter()
                .all(|&(u_first, u_slots)| first + slots <= u_first || u_first + u_slots <= first)
    })
}

/// Name of node `i` (1-based), used as hostname and `k8s_nodename`: `lab<x>-node<i>`.
pub fn node_name(index: u8, node: usize) -> String {
    format!("lab{index}-node{node}")
}

/// Prefix shared by every namespace of lab `x`: `il<x>-`.
pub fn netns_prefix(index: u8) -> String {
    format!("il{index}-")
}

/// The bridge namespace `il<x>-br`.
pub fn bridge_netns(index: u8) -> String {
    format!("il{index}-br")
}

/// The namespace of node `i`: `il<x>-n<i>`.
pub fn node_netns(index: u8, node: usize) -> String {
    format!("il{index}-n{node}")
}

/// The root-namespace end of the deploy-side veth: `il<x>-h`.
pub fn host_link(index: u8) -> String {
    format!("il{index}-h")
}

/// The bridge-namespace end of the deploy-side veth: `il<x>-hb`.
pub fn host_link_peer(index: u8) -> String {
    format!("il{index}-hb")
}

/// The bridge-side end of node `i`'s veth: `il<x>n<i>b`.
pub fn node_link_bridge_side(index: u8, node: usize) -> String {
    format!("il{index}n{node}b")
}

/// The node-side end of node `i`'s veth before it is renamed `eth0`: `il<x>n<i>a`.
pub fn node_link_node_side(index: u8, node: usize) -> String {
    format!("il{index}n{node}a")
}

/// Interface alias that records the lab name on its links, so `lab down` can find a lab whose
/// state file is gone.
pub fn link_alias(name: &str) -> String {
    format!("installer-lab:{name}")
}

/// Parse a namespace or link name of any lab and return its index (`il12-n3` → 12).
pub fn index_of_name(name: &str) -> Option<u8> {
    let rest = name.strip_prefix("il")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() || digits.len() > 2 {
        return None;
    }
    let tail = &rest[digits.len()..];
    if !(tail.starts_with('-') || tail.starts_with('n')) {
        return None;
    }
    digits.parse::<u8>().ok().filter(|&x| x < MAX_LABS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_interface_limit() {
        let x = MAX_LABS - 1;
        for name in [
            host_link(x),
            host_link_peer(x),
            node_link_bridge_side(x, MAX_NODES),
            node_link_node_side(x, MAX_NODES),
        ] {
            assert!(name.len() <= 15, "{name} is longer than 15 bytes");
        }
    }

    #[test]
    fn addresses_stay_in_benchmark_range() {
        let range: Ipv4Net = "198.18.0.0/15".parse().unwrap();
        for x in 0..MAX_LABS {
            assert!(range.contains(&node_subnet(x)));
            assert!(range.contains(&service_cidr(x)));
            assert!(range.contains(&node_ip(x, MAX_NODES)));
            assert!(node_subnet(x).contains(&node_ip(x, MAX_NODES)));
            assert!(node_subnet(x).contains(&gateway_ip(x)));
            assert_ne!(node_ip(x, MAX_NODES), gateway_ip(x));
            for y in 0..MAX_LABS {
                assert!(!node_subnet(x).contains(&service_cidr(y).network()));
            }
        }
        for first in 0..POD_SLOTS {
            assert!(range.contains(&cluster_cidr(first, 1)));
        }
    }

    #[test]
    fn pod_blocks_hold_the_nodes() {
        for nodes in 1..=MAX_NODES {
            let slots = pod_slots_needed(nodes);
            let cidr = cluster_cidr(0, slots);
            // /24 subnets in the block, minus the one flannel skips
            let subnets = 1usize << (24 - cidr.prefix_len());
            assert!(subnets > nodes, "{nodes} nodes do not fit {cidr}");
        }
        assert_eq!(cluster_cidr(0, 1).to_string(), "198.19.0.0/20");
        assert_eq!(cluster_cidr(2, 2).to_string(), "198.19.32.0/19");
        assert_eq!(pod_slots_needed(15), 1);
        assert_eq!(pod_slots_needed(16), 2);
        assert_eq!(pod_slots_needed(100), 8);
    }

    #[test]
    fn pod_blocks_do_not_overlap() {
        assert_eq!(allocate_pod_block(&[], 1), Some(0));
        assert_eq!(allocate_pod_block(&[(0, 1)], 1), Some(1));
        assert_eq!(allocate_pod_block(&[(0, 1)], 2), Some(2));
        assert_eq!(allocate_pod_block(&[(0, 1), (2, 2)], 1), Some(1));
        assert_eq!(allocate_pod_block(&[(0, 1), (8, 8)], 8), None);
        let full: Vec<(u8, u8)> = (0..POD_SLOTS).map(|s| (s, 1)).collect();
        assert_eq!(allocate_pod_block(&full, 1), None);
    }

    #[test]
    fn names_round_trip_to_index() {
        assert_eq!(index_of_name(&bridge_netns(3)), Some(3));
        assert_eq!(index_of_name(&node_netns(12, 7)), Some(12));
        assert_eq!(index_of_name(&host_link(15)), Some(15));
        assert_eq!(index_of_name("il99-br"), None);
        assert_eq!(index_of_name("ilx-br"), None);
        assert_eq!(index_of_name("eth0"), None);
    }

    #[test]
    fn lab_names() {
        assert!(valid_name("default"));
        assert!(valid_name("a-1"));
        for bad in ["", "-a", "a-", "A", "a/b", "..", "a b", &"x".repeat(33)] {
            assert!(!valid_name(bad), "{bad:?} accepted");
        }
    }
}
