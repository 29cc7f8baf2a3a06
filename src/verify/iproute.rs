//! Reading iproute2's text output (`ip route get`, `ip neigh`, `bridge fdb`, `ip -o addr`,
//! `ip -o link`). Text rather than `-j` because nodes with old iproute2 (CentOS 7) have no JSON.

use super::model::{FdbFact, NeighFact, RouteFact};
use std::net::IpAddr;

/// Route types `ip route` prints in front of the destination.
const ROUTE_TYPES: &[&str] = &[
    "unicast",
    "local",
    "broadcast",
    "multicast",
    "unreachable",
    "blackhole",
    "prohibit",
    "throw",
    "anycast",
    "nat",
];

/// Parse `ip route get DST`: its stdout when it succeeded, else its error message.
pub fn parse_route_get(dst: IpAddr, success: bool, stdout: &str, stderr: &str) -> RouteFact {
    if !success {
        let msg = stderr.trim().trim_start_matches("RTNETLINK answers: ");
        // What the kernel answers for each route type that drops the packet.
        let kind = if msg.contains("Network is unreachable") {
            "none"
        } else if msg.contains("No route to host") {
            "unreachable"
        } else if msg.contains("Permission denied") {
            "prohibit"
        } else if msg.contains("Invalid argument") {
            "blackhole"
        } else {
            "error"
        };
        return RouteFact {
            dst,
            kind: kind.into(),
            via: None,
            dev: None,
            src: None,
            text: msg.to_string(),
        };
    }
    let line = stdout.lines().next().unwrap_or("").trim();
    // `uid 0` and the `cache` line say nothing about where the packet goes
    let line = line.split(" uid ").next().unwrap_or(line).trim();
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut kind = "unicast";
    let mut rest = &words[..];
    if let Some(first) = rest.first()
        && ROUTE_TYPES.contains(first)
    {
        kind = first;
        rest = &rest[1..];
    }
    let value = |key: &str| {
        let pos = rest.iter().position(|w| *w == key)?;
        // `via inet6 fe80::1`: skip the family word
        let mut next = rest.get(pos + 1)?;
        if matches!(*next, "inet" | "inet6") {
            next = rest.get(pos + 2)?;
        }
        Some(next.to_string())
    };
    RouteFact {
        dst,
        kind: kind.to_string(),
        via: value("via").and_then(|v| parse_ip(&v)),
        dev: value("dev"),
        src: value("src").and_then(|v| parse_ip(&v)),
        text: line.to_string(),
    }
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse().ok()
}

/// Parse `ip neigh show dev DEV`.
pub fn parse_neigh(text: &str) -> Vec<NeighFact> {
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let ip: IpAddr = words.first()?.parse().ok()?;
            let lladdr = words
                .windows(2)
                .find(|w| w[0] == "lladdr")
                .map(|w| w[1].to_ascii_lowercase());
            let state = words
                .last()
                .filter(|w| w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
                .map(|s| s.to_string())
                .unwrap_or_default();
            Some(NeighFact { ip, lladdr, state })
        })
        .collect()
}

/// Parse `bridge fdb show dev DEV`.
pub fn parse_fdb(text: &str) -> Vec<FdbFact> {
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let mac = words.first()?;
            if mac.split(':').count() != 6 {
                return None;
            }
            let dst = words
                .windows(2)
                .find(|w| w[0] == "dst")
                .and_then(|w| w[1].parse().ok());
            Some(FdbFact {
                mac: mac.to_ascii_lowercase(),
                dst,
            })
        })
        .collect()
}

/// One address from `ip -o addr show`: (interface, address, prefix length).
pub fn parse_addrs(text: &str) -> Vec<(String, IpAddr, u8)> {
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let ifname = words.get(1)?.trim_end_matches(':');
            let ifname = ifname.split('@').next().unwrap_or(ifname);
            let pos = words.iter().position(|w| *w == "inet" || *w == "inet6")?;
            let (addr, len) = words.get(pos + 1)?.split_once('/')?;
            Some((ifname.to_string(), addr.parse().ok()?, len.parse().ok()?))
        })
        .collect()
}

/// The `mtu N` of `ip -o link show dev DEV`.
pub fn parse_link_mtu(text: &str) -> Option<u32> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "mtu")
        .and_then(|w| w[1].parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn route_get_shapes() {
        let r = parse_route_get(
            ip("198.19.66.2"),
            true,
            "198.19.66.2 via 198.18.0.12 dev eth0 src 198.18.0.11 uid 0 \n    cache \n",
            "",
        );
        assert_eq!(r.kind, "unicast");
        assert_eq!(r.via, Some(ip("198.18.0.12")));
        assert_eq!(r.dev.as_deref(), Some("eth0"));
        assert_eq!(r.src, Some(ip("198.18.0.11")));
        assert_eq!(
            r.text,
            "198.19.66.2 via 198.18.0.12 dev eth0 src 198.18.0.11"
        );

        let r = parse_route_get(
            ip("198.19.65.5"),
            true,
            "198.19.65.5 dev cni0 src 198.19.65.1 uid 0\n    cache\n",
            "",
        );
        assert_eq!((r.via, r.dev.as_deref()), (None, Some("cni0")));

        let r = parse_route_get(
            ip("198.18.0.11"),
            true,
            "local 198.18.0.11 dev lo src 198.18.0.11 uid 0\n",
            "",
        );
        assert_eq!(r.kind, "local");

        let r = parse_route_get(
            ip("fd00::2"),
            true,
            "fd00::2 from :: via fe80::1 dev eth0 proto kernel src fd00::1 metric 1024 pref medium\n",
            "",
        );
        assert_eq!(r.via, Some(ip("fe80::1")));
        let r = parse_route_get(
            ip("198.19.66.2"),
            true,
            "198.19.66.2 via inet6 fe80::1 dev eth0 src 198.18.0.11\n",
            "",
        );
        assert_eq!(r.via, Some(ip("fe80::1")));

        for (err, kind) in [
            ("RTNETLINK answers: Network is unreachable\n", "none"),
            ("RTNETLINK answers: No route to host\n", "unreachable"),
            ("RTNETLINK answers: Invalid argument\n", "blackhole"),
            ("RTNETLINK answers: Permission denied\n", "prohibit"),
            ("something else\n", "error"),
        ] {
            let r = parse_route_get(ip("198.19.66.2"), false, "", err);
            assert_eq!(r.kind, kind, "{err}");
            assert!(!r.text.starts_with("RTNETLINK"));
        }
    }

    #[test]
    fn neighbours_fdb_addrs_mtu() {
        let n = parse_neigh(
            "198.19.66.0 lladdr 7E:5a:11:22:33:44 PERMANENT\n198.19.67.0 FAILED\ngarbage\n",
        );
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].lladdr.as_deref(), Some("7e:5a:11:22:33:44"));
        assert_eq!(n[0].state, "PERMANENT");
        assert_eq!(
            (n[1].lladdr.as_deref(), n[1].state.as_str()),
            (None, "FAILED")
        );

        let f = parse_fdb(
            "7e:5a:11:22:33:44 dst 198.18.0.12 self permanent\n33:33:00:00:00:01 self permanent\n",
        );
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].dst, Some(ip("198.18.0.12")));
        assert_eq!(f[1].dst, None);

        let a = parse_addrs(
            "2: eth0    inet 198.18.0.11/24 brd 198.18.0.255 scope global eth0\\       valid_lft forever preferred_lft forever\n\
             3: cni0    inet6 fd00::1/64 scope global \\       valid_lft forever\n\
             4: eth0@if9    inet 198.19.65.2/24 brd 198.19.65.255 scope global eth0\n",
        );
        assert_eq!(
            a,
            vec![
                ("eth0".to_string(), ip("198.18.0.11"), 24),
                ("cni0".to_string(), ip("fd00::1"), 64),
                ("eth0".to_string(), ip("198.19.65.2"), 24),
            ]
        );
        assert_eq!(
            parse_link_mtu(
                "2: eth0@if5: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue state UP"
            ),
            Some(1450)
        );
        assert_eq!(parse_link_mtu("nothing"), None);
    }
}
