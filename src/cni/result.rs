//! The result of an ADD, parsed into what callers need: interfaces, addresses, routes.
//!
//! Accepts every result shape the spec has had: 0.1.0/0.2.0 (`ip4`/`ip6` objects), 0.3.x and
//! 0.4.0 (`ips` with `version`), 1.x (`ips` without `version`). [`convert`] rewrites a raw
//! result between the 0.3.0–1.1.0 shapes, as libcni does for cached results.

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;
use std::net::IpAddr;

/// A parsed ADD result; `raw` keeps the JSON as the plugin printed it.
#[derive(Debug, Clone, PartialEq)]
pub struct CniResult {
    /// The result's spec version.
    pub cni_version: String,
    /// Interfaces the plugins created or touched (host bridge, host veth, container side).
    pub interfaces: Vec<Interface>,
    /// Assigned addresses.
    pub ips: Vec<IpConfig>,
    /// Routes the plugins installed in the container.
    pub routes: Vec<Route>,
    /// The result JSON.
    pub raw: Value,
}

/// One interface of a result.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Interface {
    /// Interface name (e.g. `cni0`, `veth1234abcd`, `eth0`).
    pub name: String,
    /// MAC address, when reported.
    #[serde(default)]
    pub mac: Option<String>,
    /// MTU, when reported (spec ≥1.1).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Path of the network namespace when the interface lives in the container.
    #[serde(default)]
    pub sandbox: Option<String>,
}

/// One assigned address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Address with prefix length, e.g. `10.1.17.2/24`.
    pub address: IpNet,
    /// Gateway, when reported.
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`, when reported.
    pub interface: Option<usize>,
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination network.
    pub dst: IpNet,
    /// Next hop; `None` means the interface's gateway.
    pub gw: Option<IpAddr>,
}

#[derive(Deserialize)]
struct WireIp {
    address: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    interface: Option<usize>,
}

#[derive(Deserialize)]
struct WireRoute {
    dst: String,
    #[serde(default)]
    gw: Option<String>,
}

#[derive(Deserialize)]
struct WireLegacyIp {
    ip: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    routes: Vec<WireRoute>,
}

#[derive(Deserialize)]
struct Wire {
    #[serde(default, rename = "cniVersion")]
    cni_version: String,
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<WireIp>,
    #[serde(default)]
    routes: Vec<WireRoute>,
    #[serde(default)]
    ip4: Option<WireLegacyIp>,
    #[serde(default)]
    ip6: Option<WireLegacyIp>,
}

fn net(text: &str) -> Result<IpNet, String> {
    text.parse()
        .map_err(|_| format!("invalid CIDR address in result: {text}"))
}

fn addr(text: Option<String>) -> Result<Option<IpAddr>, String> {
    match text.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => t
            .parse()
            .map(Some)
            .map_err(|_| format!("invalid IP address in result: {t}")),
    }
}

fn route(r: WireRoute) -> Result<Route, String> {
    Ok(Route {
        dst: net(&r.dst)?,
        gw: addr(r.gw)?,
    })
}

impl CniResult {
    /// Parse a result value (as returned by the last plugin of a list).
    pub fn from_value(raw: Value) -> Result<CniResult, String> {
        let wire: Wire =
            serde_json::from_value(raw.clone()).map_err(|e| format!("invalid CNI result: {e}"))?;
        let mut ips = Vec::new();
        let mut routes = Vec::new();
        for ip in wire.ips {
            ips.push(IpConfig {
                address: net(&ip.address)?,
                gateway: addr(ip.gateway)?,
                interface: ip.interface,
            });
        }
        for legacy in [wire.ip4, wire.ip6].into_iter().flatten() {
            ips.push(IpConfig {
                address: net(&legacy.ip)?,
                gateway: addr(legacy.gateway)?,
                interface: None,
            });
            for r in legacy.routes {
                routes.push(route(r)?);
            }
        }
        for r in wire.routes {
            routes.push(route(r)?);
        }
        Ok(CniResult {
            cni_version: wire.cni_version,
            interfaces: wire.interfaces,
            ips,
            routes,
            raw,
        })
    }

    /// Addresses assigned inside the container: those whose interface has a `sandbox`, or
    /// all of them when the result does not say which interface they belong to.
    pub fn container_addresses(&self) -> Vec<IpNet> {
        self.ips
            .iter()
            .filter(|ip| match ip.interface {
                Some(i) => self
                    .interfaces
                    .get(i)
                    .is_some_and(|iface| iface.sandbox.as_deref().is_some_and(|s| !s.is_empty())),
                None => true,
            })
            .map(|ip| ip.address)
            .collect()
    }
}

/// Versions whose result shape is `interfaces`/`ips`/`routes`/`dns`.
fn modern(version: &str) -> bool {
    matches!(version, "0.3.0" | "0.3.1" | "0.4.0" | "1.0.0" | "1.1.0")
}

/// Rewrite a raw result for spec version `to` (adds or drops `ips[].version`), as libcni's
/// `GetAsVersion` does when it hands a cached result to a plugin.
pub fn convert(raw: &Value, to: &str) -> Result<Value, String> {
    let from = raw.get("cniVersion").and_then(Value::as_str).unwrap_or("");
    if from == to {
        return Ok(raw.clone());
    }
    if !modern(from) || !modern(to) {
        return Err(format!(
            "cannot convert a version {from:?} result to version {to:?}"
        ));
    }
    let mut out = raw.clone();
    out["cniVersion"] = Value::String(to.to_string());
    let wants_version = to.starts_with("0.");
    if let Some(ips) = out.get_mut("ips").and_then(Value::as_array_mut) {
        for ip in ips.iter_mut().filter_map(Value::as_object_mut) {
            if wants_version {
                let family = ip
                    .get("address")
                    .and_then(Value::as_str)
                    .map(|a| if a.contains(':') { "6" } else { "4" })
                    .unwrap_or("4");
                ip.shift_insert(0, "version".into(), Value::String(family.into()));
            } else {
                ip.shift_remove("version");
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bridge_result() -> Value {
        json!({
            "cniVersion": "0.3.1",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "veth1", "mac": "aa:bb:cc:dd:ee:02"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/p"}
            ],
            "ips": [{"version": "4", "interface": 2, "address": "10.1.17.2/24", "gateway": "10.1.17.1"}],
            "routes": [{"dst": "10.1.0.0/16"}, {"dst": "0.0.0.0/0", "gw": "10.1.17.1"}],
            "dns": {}
        })
    }

    #[test]
    fn parses_a_bridge_result() {
        let r = CniResult::from_value(bridge_result()).unwrap();
        assert_eq!(r.cni_version, "0.3.1");
        assert_eq!(r.interfaces[2].sandbox.as_deref(), Some("/run/netns/p"));
        assert_eq!(
            r.container_addresses(),
            vec!["10.1.17.2/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(r.ips[0].gateway, Some("10.1.17.1".parse().unwrap()));
        assert_eq!(r.routes[1].gw, Some("10.1.17.1".parse().unwrap()));
        assert_eq!(r.routes[0].gw, None);
    }

    #[test]
    fn parses_a_legacy_result() {
        let raw = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.17.5/24", "gateway": "10.1.17.1", "routes": [{"dst": "0.0.0.0/0"}]}, "dns": {}});
        let r = CniResult::from_value(raw).unwrap();
        assert_eq!(r.container_addresses()[0].to_string(), "10.1.17.5/24");
        assert_eq!(r.routes.len(), 1);
    }

    #[test]
    fn converts_between_0_4_and_1_0() {
        let up = convert(&bridge_result(), "1.0.0").unwrap();
        assert_eq!(up["cniVersion"], "1.0.0");
        assert!(up["ips"][0].get("version").is_none());
        let down = convert(&up, "0.4.0").unwrap();
        assert_eq!(down["ips"][0]["version"], "4");
        assert!(convert(&json!({"cniVersion": "0.2.0"}), "1.0.0").is_err());
    }
}
