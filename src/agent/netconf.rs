//! The flannel network configuration (`net-conf.json`, or etcd `<prefix>/config`): parsing with
//! flannel's rules and defaults, and the validation flannel applies in etcd mode
//! (flannel-spec §2).
//!
//! Parsing follows Go's `encoding/json` as flannel uses it: keys are matched case-insensitively,
//! a later key overrides an earlier one that maps to the same field, unknown keys are ignored and
//! `Backend` is kept raw and parsed again for the backend. Only what the embedded agent supports
//! is accepted beyond that: IPv4, iptables (not nftables) and the `vxlan` and `host-gw` backends.

use ipnet::Ipv4Net;
use serde_json::{Map, Value};
use std::net::Ipv4Addr;
use thiserror::Error;

/// A config that cannot be used, with flannel's wording where flannel has one (§2).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NetConfError {
    /// Not JSON, or a field of the wrong type.
    #[error("error parsing subnet config: {0}")]
    Parse(String),
    /// A validation rule of §2 failed (message as flannel prints it).
    #[error("{0}")]
    Invalid(String),
    /// Valid for flannel but outside what this agent implements.
    #[error("{0} is not supported by the embedded agent; {1}")]
    Unsupported(String, &'static str),
}

/// Backends this agent implements.
pub const SUPPORTED_BACKENDS: &str = "supported backends: vxlan, host-gw";

/// Backends flannel knows but this agent does not run.
const FLANNEL_ONLY_BACKENDS: [&str; 11] = [
    "udp",
    "wireguard",
    "ipip",
    "ipsec",
    "alloc",
    "extension",
    "gce",
    "aws-vpc",
    "ali-vpc",
    "tencent-vpc",
    "tencentvpc",
];

/// The validated network configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    /// `Network`, host bits masked (`10.1.2.3/16` → `10.1.0.0/16`).
    pub network: Ipv4Net,
    /// `SubnetLen` (defaulted per §2 when validated).
    pub subnet_len: u8,
    /// First allocatable subnet address.
    pub subnet_min: Ipv4Addr,
    /// Last allocatable subnet address.
    pub subnet_max: Ipv4Addr,
    /// The backend and its settings.
    pub backend: BackendConf,
}

/// `Backend` of the network config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConf {
    /// `{"Type":"vxlan", …}` (§5.1).
    Vxlan(VxlanConf),
    /// `{"Type":"host-gw"}` (§5.2).
    HostGw,
}

impl BackendConf {
    /// The backend type string used in leases (`vxlan`, `host-gw`).
    pub fn type_name(&self) -> &'static str {
        match self {
            BackendConf::Vxlan(_) => "vxlan",
            BackendConf::HostGw => "host-gw",
        }
    }
}

/// vxlan backend keys (§2): VNI, Port, MTU, GBP, Learning, DirectRouting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConf {
    /// VXLAN network identifier; default 1. The device is `flannel.<VNI>`.
    pub vni: u32,
    /// UDP destination port; 0 lets the kernel choose (8472).
    pub port: u16,
    /// Underlay MTU; 0 = the external interface's MTU. 50 is subtracted for the device.
    pub mtu: u32,
    /// VXLAN Group Based Policy extension.
    pub gbp: bool,
    /// Kernel MAC learning on the device.
    pub learning: bool,
    /// Plain routes to peers on the same L2 segment.
    pub direct_routing: bool,
}

impl Default for VxlanConf {
    fn default() -> Self {
        VxlanConf {
            vni: 1,
            port: 0,
            mtu: 0,
            gbp: false,
            learning: false,
            direct_routing: false,
        }
    }
}

/// The config as decoded, before defaults and validation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawNetConf {
    /// `Network`.
    pub network: Option<Ipv4Net>,
    /// `EnableIPv4` (default true).
    pub enable_ipv4: bool,
    /// `EnableIPv6` (default false).
    pub enable_ipv6: bool,
    /// `EnableNFTables` (default false).
    pub enable_nftables: bool,
    /// `SubnetLen` (0 = not given).
    pub subnet_len: u32,
    /// `SubnetMin`.
    pub subnet_min: Option<Ipv4Addr>,
    /// `SubnetMax`.
    pub subnet_max: Option<Ipv4Addr>,
    /// `Backend`, raw (None when absent).
    pub backend: Option<Value>,
}

/// Find an object member the way Go's decoder does: every key equal to `name` ignoring ASCII
/// case is assigned in document order, so the last one wins.
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn type_error(value: &Value, field: &str, go_type: &str) -> NetConfError {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    NetConfError::Parse(format!(
        "json: cannot unmarshal {kind} into Go struct field Config.{field} of type {go_type}"
    ))
}

fn get_bool(obj: &Map<String, Value>, name: &str, default: bool) -> Result<bool, NetConfError> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(type_error(v, name, "bool")),
    }
}

fn get_uint(obj: &Map<String, Value>, name: &str, max: u64) -> Result<u64, NetConfError> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v <= max => Ok(v),
            _ => Err(NetConfError::Parse(format!(
                "json: cannot unmarshal number {n} into Go struct field Config.{name} of type uint"
            ))),
        },
        Some(v) => Err(type_error(v, name, "uint")),
    }
}

fn get_ip4(obj: &Map<String, Value>, name: &str) -> Result<Option<Ipv4Addr>, NetConfError> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .parse::<Ipv4Addr>()
            .map(Some)
            .map_err(|_| NetConfError::Parse(format!("invalid IP address: {s:?} ({name})"))),
        Some(v) => Err(type_error(v, name, "ip.IP4")),
    }
}

/// Parse a CIDR the way Go's `net.ParseCIDR` does for flannel's `IP4Net`: host bits are masked;
/// an IPv6 value is rejected.
pub fn parse_ipv4_cidr(s: &str) -> Result<Ipv4Net, String> {
    if let Ok(net) = s.parse::<Ipv4Net>() {
        return Ok(net.trunc());
    }
    if s.parse::<ipnet::Ipv6Net>().is_ok() {
        return Err("invalid IPv4 CIDR format".into());
    }
    Err(format!("invalid CIDR address: {s}"))
}

/// Decode the JSON text of a network config (no defaults or validation beyond types).
pub fn parse(text: &str) -> Result<RawNetConf, NetConfError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| NetConfError::Parse(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(type_error(&value, "(top level)", "subnet.Config"));
    };
    let network = match field(&obj, "Network") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(parse_ipv4_cidr(s).map_err(NetConfError::Parse)?),
        Some(v) => return Err(type_error(v, "Network", "ip.IP4Net")),
    };
    Ok(RawNetConf {
        network,
        enable_ipv4: get_bool(&obj, "EnableIPv4", true)?,
        enable_ipv6: get_bool(&obj, "EnableIPv6", false)?,
        enable_nftables: get_bool(&obj, "EnableNFTables", false)?,
        subnet_len: get_uint(&obj, "SubnetLen", u32::MAX as u64)? as u32,
        subnet_min: get_ip4(&obj, "SubnetMin")?,
        subnet_max: get_ip4(&obj, "SubnetMax")?,
        backend: field(&obj, "Backend").filter(|v| !v.is_null()).cloned(),
    })
}

/// Parse the raw `Backend` value (absent means flannel's `udp`, §2).
pub fn parse_backend(backend: Option<&Value>) -> Result<BackendConf, NetConfError> {
    let Some(backend) = backend else {
        return Err(NetConfError::Unsupported(
            "backend type \"udp\" (the default when the config has no Backend)".into(),
            SUPPORTED_BACKENDS,
        ));
    };
    let Value::Object(obj) = backend else {
        return Err(type_error(backend, "Backend", "json.RawMessage object"));
    };
    let kind = match field(obj, "Type") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.to_ascii_lowercase(),
        Some(v) => return Err(type_error(v, "Type", "string")),
    };
    match kind.as_str() {
        "vxlan" => {
            let mut conf = VxlanConf::default();
            let vni = get_uint(obj, "VNI", u32::MAX as u64)?;
            if field(obj, "VNI").is_some_and(|v| !v.is_null()) {
                conf.vni = vni as u32;
            }
            if conf.vni > 0x00ff_ffff {
                return Err(NetConfError::Invalid(format!(
                    "vxlan VNI {} is out of range (0..16777215)",
                    conf.vni
                )));
            }
            conf.port = get_uint(obj, "Port", u16::MAX as u64)? as u16;
            conf.mtu = get_uint(obj, "MTU", u32::MAX as u64)? as u32;
            conf.gbp = get_bool(obj, "GBP", false)?;
            conf.learning = get_bool(obj, "Learning", false)?;
            conf.direct_routing = get_bool(obj, "DirectRouting", false)?;
            Ok(BackendConf::Vxlan(conf))
        }
        "host-gw" => Ok(BackendConf::HostGw),
        other if FLANNEL_ONLY_BACKENDS.contains(&other) => Err(NetConfError::Unsupported(
            format!("backend type {other:?}"),
            SUPPORTED_BACKENDS,
        )),
        other => Err(NetConfError::Invalid(format!(
            "unknown backend type: {other}"
        ))),
    }
}

fn subnet_size(len: u8) -> u32 {
    if len >= 32 { 1 } else { 1u32 << (32 - len) }
}

impl RawNetConf {
    /// Reject what the embedded agent does not implement (IPv6, nftables) and the "no stack"
    /// config flannel refuses.
    fn check_supported(&self) -> Result<(), NetConfError> {
        if !self.enable_ipv4 && !self.enable_ipv6 {
            return Err(NetConfError::Invalid(
                "none defined stack: EnableIPv4 and EnableIPv6 are both false".into(),
            ));
        }
        if self.enable_ipv6 {
            return Err(NetConfError::Unsupported(
                "EnableIPv6".into(),
                "use an IPv4 Network",
            ));
        }
        if self.enable_nftables {
            return Err(NetConfError::Unsupported(
                "EnableNFTables".into(),
                "set it to false (the agent installs iptables rules, like kubeasz's flannel)",
            ));
        }
        Ok(())
    }

    /// flannel's `CheckNetworkConfig` (etcd mode, §2): defaults for SubnetLen/Min/Max and
    /// their validation, then the backend.
    pub fn validate(&self) -> Result<NetConf, NetConfError> {
        self.check_supported()?;
        let Some(network) = self.network else {
            return Err(NetConfError::Invalid(
                "please define a correct Network parameter in the flannel config".into(),
            ));
        };
        let prefix = network.prefix_len();
        let subnet_len: u8 = if self.subnet_len > 0 {
            if self.subnet_len > 30 {
                return Err(NetConfError::Invalid(
                    "SubnetLen must be less than /31".into(),
                ));
            }
            if self.subnet_len < u32::from(prefix) + 2 {
                return Err(NetConfError::Invalid(
                    "network must be able to accommodate at least four subnets".into(),
                ));
            }
            self.subnet_len as u8
        } else if prefix > 28 {
            return Err(NetConfError::Invalid(
                "network is too small. Minimum useful network prefix is /28".into(),
            ));
        } else if prefix <= 22 {
            24
        } else {
            prefix + 2
        };
        let size = subnet_size(subnet_len);
        let net_start = u32::from(network.network());
        let net_end = u32::from(network.broadcast());
        let check = |ip: Option<Ipv4Addr>, name: &str, default: u32| match ip {
            None => Ok(Ipv4Addr::from(default)),
            Some(ip) => {
                let v = u32::from(ip);
                if v < net_start || v > net_end {
                    Err(NetConfError::Invalid(format!(
                        "{name} is not in the range of the Network"
                    )))
                } else if v % size != 0 {
                    Err(NetConfError::Invalid(format!(
                        "{name} is not on a SubnetLen boundary: {ip}"
                    )))
                } else {
                    Ok(ip)
                }
            }
        };
        let subnet_min = check(self.subnet_min, "SubnetMin", net_start + size)?;
        let subnet_max = check(self.subnet_max, "SubnetMax", net_end - (size - 1))?;
        Ok(NetConf {
            network,
            subnet_len,
            subnet_min,
            subnet_max,
            backend: parse_backend(self.backend.as_ref())?,
        })
    }

    /// Kubernetes mode (F28): no SubnetLen/Min/Max checks (the subnet is the node's podCIDR);
    /// the Network must still be there.
    pub fn for_kubernetes(&self) -> Result<NetConf, NetConfError> {
        self.check_supported()?;
        let Some(network) = self.network else {
            return Err(NetConfError::Invalid(
                "please define a correct Network parameter in the flannel config".into(),
            ));
        };
        Ok(NetConf {
            network,
            subnet_len: self.subnet_len.min(32) as u8,
            subnet_min: network.network(),
            subnet_max: network.broadcast(),
            backend: parse_backend(self.backend.as_ref())?,
        })
    }
}

/// Parse and validate a config as etcd mode does (§2).
pub fn parse_and_validate(text: &str) -> Result<NetConf, NetConfError> {
    parse(text)?.validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse_and_validate(text).unwrap_err().to_string()
    }

    #[test]
    fn spec2_defaults_for_a_16() {
        let c =
            parse_and_validate(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert_eq!(c.network.to_string(), "10.5.0.0/16");
        assert_eq!(c.subnet_len, 24);
        assert_eq!(c.subnet_min, Ipv4Addr::new(10, 5, 1, 0));
        assert_eq!(c.subnet_max, Ipv4Addr::new(10, 5, 255, 0));
        assert_eq!(c.backend, BackendConf::Vxlan(VxlanConf::default()));
    }

    #[test]
    fn spec12_3_network_host_bits_are_masked() {
        let c = parse_and_validate(r#"{"Network":"10.1.2.3/16","Backend":{"Type":"host-gw"}}"#)
            .unwrap();
        assert_eq!(c.network.to_string(), "10.1.0.0/16");
        assert_eq!(c.backend, BackendConf::HostGw);
    }

    #[test]
    fn spec2_subnet_len_defaults_to_prefix_plus_2_above_22() {
        let c = parse_and_validate(r#"{"Network":"10.1.0.0/26","Backend":{"Type":"host-gw"}}"#)
            .unwrap();
        assert_eq!(c.subnet_len, 28);
        assert_eq!(c.subnet_min, Ipv4Addr::new(10, 1, 0, 16));
        assert_eq!(c.subnet_max, Ipv4Addr::new(10, 1, 0, 48));
        let c = parse_and_validate(r#"{"Network":"10.1.0.0/22","Backend":{"Type":"host-gw"}}"#)
            .unwrap();
        assert_eq!(c.subnet_len, 24);
    }

    #[test]
    fn spec12_21_validation_messages() {
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/29"}"#),
            "network is too small. Minimum useful network prefix is /28"
        );
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/16","SubnetLen":31}"#),
            "SubnetLen must be less than /31"
        );
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/16","SubnetLen":17}"#),
            "network must be able to accommodate at least four subnets"
        );
        assert_eq!(
            err(r#"{"Backend":{"Type":"vxlan"}}"#),
            "please define a correct Network parameter in the flannel config"
        );
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0"}"#),
            "SubnetMin is not in the range of the Network"
        );
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/16","SubnetMax":"10.5.3.7"}"#),
            "SubnetMax is not on a SubnetLen boundary: 10.5.3.7"
        );
        assert_eq!(
            err(r#"{"Network":"2001:db8::/64"}"#),
            "error parsing subnet config: invalid IPv4 CIDR format"
        );
        assert!(err("{not json").starts_with("error parsing subnet config: "));
        assert_eq!(
            err(r#"{"Network":5}"#),
            "error parsing subnet config: json: cannot unmarshal number into Go struct field Config.Network of type ip.IP4Net"
        );
    }

    #[test]
    fn spec2_explicit_min_max_are_kept() {
        let c = parse_and_validate(
            r#"{"Network":"10.5.0.0/16","SubnetLen":26,"SubnetMin":"10.5.3.64","SubnetMax":"10.5.3.192","Backend":{"Type":"vxlan"}}"#,
        )
        .unwrap();
        assert_eq!(c.subnet_len, 26);
        assert_eq!(c.subnet_min, Ipv4Addr::new(10, 5, 3, 64));
        assert_eq!(c.subnet_max, Ipv4Addr::new(10, 5, 3, 192));
    }

    #[test]
    fn spec2_keys_are_case_insensitive_and_last_wins() {
        let c = parse_and_validate(
            r#"{"network":"10.9.0.0/16","NETWORK":"10.7.0.0/16","subnetlen":25,"backend":{"type":"VXLAN","vni":4,"directrouting":true,"mtu":1400,"Port":4789}}"#,
        )
        .unwrap();
        assert_eq!(c.network.to_string(), "10.7.0.0/16");
        assert_eq!(c.subnet_len, 25);
        let BackendConf::Vxlan(v) = c.backend else {
            panic!("not vxlan")
        };
        assert_eq!(
            v,
            VxlanConf {
                vni: 4,
                port: 4789,
                mtu: 1400,
                gbp: false,
                learning: false,
                direct_routing: true
            }
        );
    }

    #[test]
    fn spec2_backend_types() {
        // absent Backend = udp in flannel: clear message here
        let e = err(r#"{"Network":"10.5.0.0/16"}"#);
        assert!(e.contains("\"udp\"") && e.contains("not supported by the embedded agent"));
        assert!(e.contains("vxlan, host-gw"), "{e}");
        let e = err(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard"}}"#);
        assert!(e.contains("\"wireguard\" is not supported by the embedded agent"));
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/16","Backend":{}}"#),
            "unknown backend type: "
        );
        assert_eq!(
            err(r#"{"Network":"10.5.0.0/16","Backend":{"Type":"nope"}}"#),
            "unknown backend type: nope"
        );
    }

    #[test]
    fn unsupported_stacks_are_named() {
        let e =
            err(r#"{"Network":"10.5.0.0/16","EnableNFTables":true,"Backend":{"Type":"vxlan"}}"#);
        assert!(e.starts_with("EnableNFTables is not supported"), "{e}");
        let e = err(r#"{"EnableIPv4":false,"EnableIPv6":false}"#);
        assert!(e.starts_with("none defined stack"), "{e}");
        let e = err(r#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56"}"#);
        assert!(e.starts_with("EnableIPv6 is not supported"), "{e}");
    }

    #[test]
    fn kubernetes_mode_ignores_subnet_len_rules() {
        let raw = parse(r#"{"Network":"10.5.0.0/29","SubnetLen":31,"Backend":{"Type":"host-gw"}}"#)
            .unwrap();
        let c = raw.for_kubernetes().unwrap();
        assert_eq!(c.network.to_string(), "10.5.0.0/29");
        assert!(raw.validate().is_err());
    }
}
