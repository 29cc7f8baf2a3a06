//! `ipaddr` / `ipv4` / `ipv6`: the ansible.utils IP filters (netaddr semantics).
//!
//! Old kubeasz releases (2.x) compute the cluster DNS address as
//! `SERVICE_CIDR | ipaddr('net') | ipaddr(2) | ipaddr('address')`. The filter returns
//! `False` for anything that is not an address or network, the original value for
//! membership-style queries, `None` when a query does not apply, and strings/ints
//! otherwise, exactly as ansible.utils 2.9 with netaddr 1.3 does (see the fixture cases).

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Error, ErrorKind, State};
use std::net::{Ipv4Addr, Ipv6Addr};

use super::args::{bind, ensure_defined, opt_int};
use super::pyfmt::py_str;

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

/// An `IPNetwork`: an address plus a prefix length (host bits are kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Net {
    v6: bool,
    ip: u128,
    prefix: u32,
}

impl Net {
    fn width(&self) -> u32 {
        if self.v6 { 128 } else { 32 }
    }
    fn version(&self) -> i64 {
        if self.v6 { 6 } else { 4 }
    }
    fn hostmask(&self) -> u128 {
        let bits = self.width() - self.prefix;
        if bits >= 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        }
    }
    fn netmask(&self) -> u128 {
        let all = if self.v6 {
            u128::MAX
        } else {
            u128::from(u32::MAX)
        };
        all & !self.hostmask()
    }
    fn network(&self) -> u128 {
        self.ip & !self.hostmask()
    }
    fn last(&self) -> u128 {
        self.network() | self.hostmask()
    }
    /// Number of addresses, saturating at u128::MAX for an IPv6 /0.
    fn size(&self) -> u128 {
        self.hostmask().saturating_add(1)
    }
    fn broadcast(&self) -> Option<u128> {
        (self.width() - self.prefix > 1).then(|| self.last())
    }
    fn fmt_ip(&self, ip: u128) -> String {
        if self.v6 {
            Ipv6Addr::from(ip).to_string()
        } else {
            Ipv4Addr::from(ip as u32).to_string()
        }
    }
    fn ip_str(&self) -> String {
        self.fmt_ip(self.ip)
    }
    fn with_prefix(&self, ip: u128) -> String {
        format!("{}/{}", self.fmt_ip(ip), self.prefix)
    }
    fn contains_net(&self, other: &Net) -> bool {
        self.v6 == other.v6
            && other.prefix >= self.prefix
            && (other.ip & !self.hostmask()) == self.network()
    }
}

fn parse_mask(s: &str, v6: bool) -> Option<u32> {
    if let Ok(p) = s.parse::<u32>() {
        let ok = if v6 { p <= 128 } else { p <= 32 } && !s.starts_with('+');
        return ok.then_some(p);
    }
    if v6 {
        return None;
    }
    let m = u32::from(s.parse::<Ipv4Addr>().ok()?);
    // a netmask (ones then zeros) or a hostmask (zeros then ones)
    if m.leading_ones() + m.trailing_zeros() == 32 {
        Some(m.leading_ones())
    } else if m.leading_zeros() + m.trailing_ones() == 32 {
        Some(m.leading_zeros())
    } else {
        None
    }
}

/// `netaddr.IPNetwork(text)`: strict dotted-quad / RFC 4291 text, optional `/prefix`,
/// `/netmask` or `/hostmask`.
fn parse_net(text: &str) -> Option<Net> {
    let (addr, mask) = match text.split_once('/') {
        Some((a, m)) => (a, Some(m)),
        None => (text, None),
    };
    let (v6, ip) = if let Ok(a) = addr.parse::<Ipv4Addr>() {
        (false, u128::from(u32::from(a)))
    } else if let Ok(a) = addr.parse::<Ipv6Addr>() {
        (true, u128::from(a))
    } else {
        return None;
    };
    let prefix = match mask {
        None => {
            if v6 {
                128
            } else {
                32
            }
        }
        Some(m) => parse_mask(m, v6)?,
    };
    Some(Net { v6, ip, prefix })
}

fn from_int(n: u128, prefix: Option<u32>, version: Option<i64>) -> Option<Net> {
    let try_v4 = version != Some(6);
    if try_v4 && n <= u128::from(u32::MAX) && prefix.is_none_or(|p| p <= 32) {
        return Some(Net {
            v6: false,
            ip: n,
            prefix: prefix.unwrap_or(32),
        });
    }
    if prefix.is_none_or(|p| p <= 128) {
        return Some(Net {
            v6: true,
            ip: n,
            prefix: prefix.unwrap_or(128),
        });
    }
    None
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum VType {
    Address,
    Network,
}

/// The ansible.utils `ipaddr(value, query, version)` core, without the type check.
fn ipaddr_value(value: &Value, query: &str, version: Option<i64>) -> Result<Value, Error> {
    let no = || Ok(Value::from(false));
    if matches!(value.kind(), ValueKind::Seq | ValueKind::Iterable) {
        let mut out = Vec::new();
        for item in value.try_iter()? {
            let r = ipaddr_value(&item, query, version)?;
            if r.is_true() {
                out.push(r);
            }
        }
        return Ok(Value::from(out));
    }
    if !value.is_true() || (value.kind() == ValueKind::Bool) {
        return no();
    }
    let text = py_str(value);
    let (v, vtype) = if !text.is_empty() && text.bytes().all(|c| c.is_ascii_digit()) {
        match text
            .parse::<u128>()
            .ok()
            .and_then(|n| from_int(n, None, version))
        {
            Some(n) => (n, VType::Address),
            None => return no(),
        }
    } else if let Some(n) = parse_net(&text) {
        let vt = if text.split('/').count() == 2 {
            VType::Network
        } else {
            VType::Address
        };
        (n, vt)
    } else {
        // a numerical CIDR such as "167772160/8"
        let parsed = text.split_once('/').and_then(|(a, p)| {
            let a = a.parse::<u128>().ok()?;
            let p = p.parse::<u32>().ok()?;
            from_int(a, Some(p), None)
        });
        match parsed {
            Some(n) => (n, VType::Network),
            None => return no(),
        }
    };

    let mut lookup: Option<Net> = None;
    if !query.is_empty()
        && (!is_known_query(query) || query == "cidr_lookup")
        && !query.bytes().all(|c| c.is_ascii_digit())
        && ipaddr_value(&Value::from(query), "network", None)?.is_true()
    {
        lookup = parse_net(query).map(|n| Net {
            ip: n.network(),
            ..n
        });
    }
    if let Some(want) = version
        && v.version() != want
    {
        return no();
    }
    if let Some(set) = lookup {
        return Ok(if set.contains_net(&v) {
            value.clone()
        } else {
            Value::from(())
        });
    }
    run_query(&v, vtype, value, query)
}

const QUERIES: &[&str] = &[
    "",
    "6to4",
    "address",
    "address/prefix",
    "bool",
    "broadcast",
    "cidr",
    "cidr_lookup",
    "first_usable",
    "gateway",
    "gw",
    "host",
    "host/prefix",
    "hostmask",
    "hostnet",
    "int",
    "ip",
    "ip/prefix",
    "ip_netmask",
    "ipv4",
    "ipv6",
    "last_usable",
    "link-local",
    "lo",
    "loopback",
    "multicast",
    "net",
    "next_usable",
    "netmask",
    "network",
    "network_id",
    "network/prefix",
    "network_netmask",
    "network_wildcard",
    "peer",
    "prefix",
    "previous_usable",
    "private",
    "public",
    "range_usable",
    "revdns",
    "router",
    "size",
    "size_usable",
    "subnet",
    "type",
    "unicast",
    "v4",
    "v6",
    "version",
    "wildcard",
    "wrap",
];

fn is_known_query(q: &str) -> bool {
    QUERIES.contains(&q)
}

fn run_query(v: &Net, vtype: VType, value: &Value, query: &str) -> Result<Value, Error> {
    let none = Value::from(());
    let s = |x: String| Value::from(x);
    let size = v.size();
    let usable = || -> Option<(u128, u128)> {
        match size {
            2 => Some((v.network(), v.last())),
            n if n > 1 => Some((v.network() + 1, v.last() - 1)),
            _ => None,
        }
    };
    let need_network = || -> Result<(), Error> {
        if vtype == VType::Address {
            Err(invalid(format!("ipaddr('{query}'): Not a network address")))
        } else {
            Ok(())
        }
    };
    Ok(match query {
        "" => match vtype {
            VType::Address => s(v.ip_str()),
            VType::Network => s(v.with_prefix(v.ip)),
        },
        "address" | "ip" => {
            if size == 1 || v.ip != v.network() || v.broadcast().is_none() || v.v6 {
                s(v.ip_str())
            } else {
                none
            }
        }
        "address/prefix" | "gateway" | "gw" | "host/prefix" | "hostnet" | "router" => {
            if size > 2 && (v.ip == v.network() || Some(v.ip) == v.broadcast()) {
                Value::from(false)
            } else {
                s(v.with_prefix(v.ip))
            }
        }
        "bool" => Value::from(true),
        "broadcast" => match v.broadcast() {
            Some(b) if size > 2 => s(v.fmt_ip(b)),
            _ => none,
        },
        "cidr" => s(v.with_prefix(v.ip)),
        "first_usable" => {
            need_network()?;
            usable().map(|(f, _)| s(v.fmt_ip(f))).unwrap_or(none)
        }
        "last_usable" => {
            need_network()?;
            usable().map(|(_, l)| s(v.fmt_ip(l))).unwrap_or(none)
        }
        "next_usable" | "previous_usable" => {
            need_network()?;
            match usable() {
                Some((first, last)) => {
                    let cand = if query == "next_usable" {
                        v.ip.checked_add(1)
                    } else {
                        v.ip.checked_sub(1)
                    };
                    match cand {
                        Some(c) if c >= first && c <= last => s(v.fmt_ip(c)),
                        _ => none,
                    }
                }
                None => none,
            }
        }
        "range_usable" => {
            need_network()?;
            usable()
                .map(|(f, l)| s(format!("{}-{}", v.fmt_ip(f), v.fmt_ip(l))))
                .unwrap_or(none)
        }
        "host" => {
            if size == 1 || v.ip != v.network() || v.broadcast().is_none() {
                s(v.with_prefix(v.ip))
            } else {
                none
            }
        }
        "hostmask" | "wildcard" => s(v.fmt_ip(v.hostmask())),
        "int" => match vtype {
            VType::Address => Value::from(v.ip),
            VType::Network => s(format!("{}/{}", v.ip, v.prefix)),
        },
        "ip/prefix" => {
            if size == 2 || (size > 1 && v.ip != v.network()) {
                s(v.with_prefix(v.ip))
            } else {
                none
            }
        }
        "ip_netmask" => {
            if size == 2 || (size > 1 && v.ip != v.network()) {
                s(format!("{} {}", v.ip_str(), v.fmt_ip(v.netmask())))
            } else {
                none
            }
        }
        "ipv4" | "v4" => {
            if !v.v6 {
                value.clone()
            } else {
                let four = if v.ip <= u128::from(u32::MAX) {
                    Some(v.ip)
                } else if (0xffff_0000_0000..=0xffff_ffff_ffff).contains(&v.ip) {
                    Some(v.ip - 0xffff_0000_0000)
                } else {
                    None
                };
                match (four, v.prefix.checked_sub(96)) {
                    (Some(ip), Some(p)) => s(format!("{}/{}", Ipv4Addr::from(ip as u32), p)),
                    _ => Value::from(false),
                }
            }
        }
        "ipv6" | "v6" => {
            if v.v6 {
                value.clone()
            } else {
                s(format!(
                    "{}/{}",
                    Ipv6Addr::from(0xffff_0000_0000 | v.ip),
                    v.prefix + 96
                ))
            }
        }
        "link-local" => {
            let (net, bits) = if v.v6 {
                (0xfe80u128 << 112, 10)
            } else {
                (0xa9fe_0000, 16)
            };
            let ll = Net {
                v6: v.v6,
                ip: net,
                prefix: bits,
            };
            if ll.contains_net(&Net {
                prefix: v.width(),
                ..*v
            }) {
                value.clone()
            } else {
                none
            }
        }
        "lo" | "loopback" => {
            let lo = if v.v6 { v.ip == 1 } else { v.ip >> 24 == 127 };
            if lo { value.clone() } else { none }
        }
        "multicast" | "unicast" => {
            let mc = if v.v6 {
                v.ip >> 120 == 0xff
            } else {
                v.ip >> 28 == 0xe
            };
            if mc == (query == "multicast") {
                value.clone()
            } else {
                none
            }
        }
        "net" => {
            if size > 1 && v.ip == v.network() {
                s(v.with_prefix(v.network()))
            } else {
                none
            }
        }
        "netmask" => s(v.fmt_ip(v.netmask())),
        "network" | "network_id" => s(v.fmt_ip(v.network())),
        "network/prefix" | "subnet" => s(v.with_prefix(v.network())),
        "network_netmask" => s(format!(
            "{} {}",
            v.fmt_ip(v.network()),
            v.fmt_ip(v.netmask())
        )),
        "network_wildcard" => s(format!(
            "{} {}",
            v.fmt_ip(v.network()),
            v.fmt_ip(v.hostmask())
        )),
        "peer" => {
            need_network()?;
            match size {
                2 => s(v.fmt_ip(v.ip ^ 1)),
                4 if v.ip.is_multiple_of(4) => {
                    return Err(invalid(
                        "ipaddr('peer'): Network address of /30 has no peer",
                    ));
                }
                4 if v.ip % 4 == 3 => {
                    return Err(invalid(
                        "ipaddr('peer'): Broadcast address of /30 has no peer",
                    ));
                }
                4 => s(v.fmt_ip(v.ip ^ 3)),
                _ => return Err(invalid("ipaddr('peer'): Not a point-to-point network")),
            }
        }
        "prefix" => Value::from(v.prefix),
        "revdns" => s(reverse_dns(v)),
        "size" => Value::from(size),
        "size_usable" => Value::from(match size {
            1 => 0,
            2 => 2,
            n => n - 2,
        }),
        "type" => s(if size == 1 || v.ip != v.network() {
            "address"
        } else {
            "network"
        }
        .into()),
        "version" => Value::from(v.version()),
        "wrap" => {
            if !v.v6 {
                value.clone()
            } else if vtype == VType::Address {
                s(format!("[{}]", v.ip_str()))
            } else {
                s(format!("[{}]/{}", v.ip_str(), v.prefix))
            }
        }
        "6to4" | "private" | "public" => {
            return Err(invalid(format!(
                "ipaddr('{query}') is not supported by this tool"
            )));
        }
        other => {
            // A number selects the n-th address of a network ("ipaddr(2)").
            if other.trim().parse::<f64>().is_err() {
                return Err(invalid(format!("ipaddr: unknown filter type: {other}")));
            }
            if size == 1 {
                return Ok(match vtype {
                    VType::Address => s(v.ip_str()),
                    VType::Network => s(v.with_prefix(v.ip)),
                });
            }
            let Ok(idx) = other.trim().parse::<i128>() else {
                return Ok(Value::from(false));
            };
            let addr = if idx >= 0 {
                u128::try_from(idx)
                    .ok()
                    .filter(|i| *i < size)
                    .map(|i| v.network() + i)
            } else {
                idx.checked_neg()
                    .and_then(|n| u128::try_from(n).ok())
                    .filter(|n| *n <= size)
                    .map(|n| v.last() - (n - 1))
            };
            match addr {
                Some(a) => s(v.with_prefix(a)),
                None => Value::from(false),
            }
        }
    })
}

fn reverse_dns(v: &Net) -> String {
    if v.v6 {
        let hex = format!("{:032x}", v.ip);
        let mut parts: Vec<String> = hex.chars().rev().map(|c| c.to_string()).collect();
        parts.push("ip6.arpa.".into());
        parts.join(".")
    } else {
        let o = (v.ip as u32).to_be_bytes();
        format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
    }
}

fn check_type(filter: &str, value: &Value) -> Result<(), Error> {
    match value.kind() {
        ValueKind::String | ValueKind::Seq | ValueKind::Bool => Ok(()),
        ValueKind::Number if value.is_integer() => Ok(()),
        other => Err(invalid(format!(
            "Unrecognized type <{other}> for {filter} filter <value>: expected a string, list or integer"
        ))),
    }
}

fn run(
    filter: &str,
    version: Option<i64>,
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<Value, Error> {
    ensure_defined(state, value)?;
    check_type(filter, value)?;
    let [query, ver] = bind(filter, ["query", "version"], args, &kwargs)?;
    let query = match query {
        None => String::new(),
        Some(q) if q.is_none() => String::new(),
        Some(q) => py_str(&q),
    };
    let version = match version {
        Some(v) => Some(v),
        None => opt_int(filter, "version", &ver)?
            .map(|v| v as i64)
            .filter(|v| *v != 0),
    };
    ipaddr_value(value, &query, version)
}

/// `ipaddr(query='', version=None)`.
pub fn ipaddr(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<Value, Error> {
    run("ipaddr", None, state, value, args, kwargs)
}

/// `ipv4(query='')`: like `ipaddr` but `False` for IPv6 input.
pub fn ipv4(state: &State, value: &Value, args: &[Value], kwargs: Kwargs) -> Result<Value, Error> {
    run("ipv4", Some(4), state, value, args, kwargs)
}

/// `ipv6(query='')`: like `ipaddr` but `False` for IPv4 input.
pub fn ipv6(state: &State, value: &Value, args: &[Value], kwargs: Kwargs) -> Result<Value, Error> {
    run("ipv6", Some(6), state, value, args, kwargs)
}
