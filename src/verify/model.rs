//! The JSON the node side prints and the deploy side reads: probes, ping results, removal
//! reports and routing facts. Both sides are this binary, so the types are shared.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Kubernetes namespace given to probe pods in `CNI_ARGS` (`K8S_POD_NAMESPACE`).
pub const PROBE_POD_NAMESPACE: &str = "installer-verify";
/// Network namespaces of probes are `installer-probe-<id>` (under `/run/netns`).
pub const PROBE_NETNS_PREFIX: &str = "installer-probe-";
/// Interface name of a probe's pod interface.
pub const PROBE_IFNAME: &str = "eth0";

/// Network namespace name of the probe `id`.
pub fn probe_netns(id: &str) -> String {
    format!("{PROBE_NETNS_PREFIX}{id}")
}

/// A probe pod made on a node by `installer verify probe add`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeInfo {
    /// Probe id (`CNI_CONTAINERID`).
    pub id: String,
    /// Its network namespace (`/run/netns/<netns>`).
    pub netns: String,
    /// The pod interface (`eth0`).
    pub ifname: String,
    /// The pod's address.
    pub ip: IpAddr,
    /// Prefix length of the address (the node's pod subnet).
    pub prefix_len: u8,
    /// The pod's gateway, when the result names one.
    pub gateway: Option<IpAddr>,
    /// MTU of the pod interface.
    pub mtu: u32,
    /// Name of the CNI network (the conflist's `name`).
    pub network: String,
    /// Host-side interfaces the plugins reported (bridge first, then the veth).
    pub host_interfaces: Vec<String>,
    /// Global addresses of the node itself (what peers route this node's pods via).
    pub host_addrs: Vec<IpAddr>,
}

impl ProbeInfo {
    /// The pod subnet the address belongs to, e.g. `198.19.65.0/24`.
    pub fn subnet(&self) -> Option<ipnet::IpNet> {
        ipnet::IpNet::new(self.ip, self.prefix_len)
            .ok()
            .map(|n| n.trunc())
    }
    /// The bridge the pod hangs off (first host interface), e.g. `cni0`.
    pub fn bridge(&self) -> Option<&str> {
        self.host_interfaces.first().map(String::as_str)
    }
    /// What this probe tells about its node's pod network.
    pub fn node_net(&self) -> NodeNet {
        NodeNet {
            host_addrs: self.host_addrs.clone(),
            subnet: self.subnet(),
            bridge: self.bridge().map(str::to_string),
        }
    }
}

/// A node's side of the pod network, as far as the diagnosis needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeNet {
    /// The node's own global addresses (peers route its pods via one of them).
    pub host_addrs: Vec<IpAddr>,
    /// The node's pod subnet, when known.
    #[serde(with = "subnet_text")]
    pub subnet: Option<ipnet::IpNet>,
    /// The pod bridge, when known (`cni0`).
    pub bridge: Option<String>,
}

/// Where a ping was sent from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PingSource {
    /// The node's own network namespace.
    Host,
    /// A pod's network namespace on the node.
    Netns(String),
}

/// Which pass a ping belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pass {
    /// Small packets: is there a path at all.
    Reach,
    /// The largest packet the pod MTU allows, with DF set: MTU black holes.
    Mtu,
}

/// What one `ping` run saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingResult {
    /// From where.
    pub source: PingSource,
    /// To where.
    pub target: IpAddr,
    /// Which pass.
    pub pass: Pass,
    /// ICMP payload bytes (`ping -s`).
    pub size: u32,
    /// Whether DF was set (`ping -M do`).
    pub df: bool,
    /// Echo requests sent.
    pub sent: u32,
    /// Echo replies received.
    pub received: u32,
    /// Smallest round trip, ms.
    pub rtt_min_ms: Option<f64>,
    /// Mean round trip, ms.
    pub rtt_avg_ms: Option<f64>,
    /// Largest round trip, ms.
    pub rtt_max_ms: Option<f64>,
    /// Errors ping reported (ICMP errors from routers, local errors), each once.
    pub errors: Vec<String>,
    /// A path MTU some hop (or the local stack) reported, e.g. from "Frag needed (mtu = 1400)".
    pub path_mtu: Option<u32>,
}

impl PingResult {
    /// Every request answered (and at least one sent).
    pub fn ok(&self) -> bool {
        self.sent > 0 && self.received >= self.sent
    }
    /// Lost share in percent (100 when nothing was sent).
    pub fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            return 100.0;
        }
        let lost = self.sent.saturating_sub(self.received);
        f64::from(lost) * 100.0 / f64::from(self.sent)
    }
}

/// What `probe del` did: removed items, and what is still there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelReport {
    /// What was removed in this call (empty when it was already gone).
    pub removed: Vec<String>,
    /// What still exists afterwards (netns, veth, IPAM allocation, cache files).
    pub leftovers: Vec<String>,
    /// Errors of the steps that failed.
    pub errors: Vec<String>,
}

/// The outcome of a route lookup (`ip route get ADDR`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteFact {
    /// The address looked up.
    pub dst: IpAddr,
    /// Route type: `unicast`, `local`, `unreachable`, `blackhole`, `prohibit`, `error`...
    pub kind: String,
    /// Next hop, when there is one.
    pub via: Option<IpAddr>,
    /// Output device.
    pub dev: Option<String>,
    /// Preferred source address.
    pub src: Option<IpAddr>,
    /// The lookup's text (or error message), for people.
    pub text: String,
}

/// One neighbour entry (`ip neigh show dev DEV`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighFact {
    /// The neighbour's address.
    pub ip: IpAddr,
    /// Its link-layer address, when known.
    pub lladdr: Option<String>,
    /// State flags (`PERMANENT`, `REACHABLE`, `FAILED`...).
    pub state: String,
}

/// One forwarding database entry (`bridge fdb show dev DEV`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbFact {
    /// MAC address.
    pub mac: String,
    /// VXLAN remote (`dst`), when present.
    pub dst: Option<IpAddr>,
}

/// Facts `probe diagnose` gathers on one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeFacts {
    /// Route lookups, one per asked address.
    pub routes: Vec<RouteFact>,
    /// The overlay device asked about (`flannel.1`), if any.
    pub dev: Option<String>,
    /// Whether that device exists.
    pub dev_exists: bool,
    /// Neighbour entries on the device.
    pub neighbours: Vec<NeighFact>,
    /// FDB entries on the device.
    pub fdb: Vec<FdbFact>,
    /// Pings to peer node addresses (the underlay).
    pub reach: Vec<PingResult>,
}

impl NodeFacts {
    /// The route lookup of `dst`, if it was asked for.
    pub fn route(&self, dst: IpAddr) -> Option<&RouteFact> {
        self.routes.iter().find(|r| r.dst == dst)
    }
    /// Whether the node reached `addr` in the underlay ping (None if not asked).
    pub fn reached(&self, addr: IpAddr) -> Option<bool> {
        self.reach.iter().find(|r| r.target == addr).map(|r| r.ok())
    }
}

/// What `probe find` reports: the namespaces holding the addresses, and the node's addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindReport {
    /// Addresses found, each once.
    pub found: Vec<FoundAddr>,
    /// The node's own global addresses (not on bridges or overlay devices).
    pub host_addrs: Vec<IpAddr>,
}

/// An interface found holding an address (`probe find`, for `--pods`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundAddr {
    /// The address looked for.
    pub ip: IpAddr,
    /// Network namespace (under `/run/netns`) holding it.
    pub netns: String,
    /// Interface holding it.
    pub ifname: String,
    /// Prefix length on that interface.
    pub prefix_len: u8,
    /// Its MTU.
    pub mtu: u32,
}

/// `Option<IpNet>` as `"198.19.65.0/24"` or `null` (ipnet is built without its serde feature).
mod subnet_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<ipnet::IpNet>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.collect_str(n),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ipnet::IpNet>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| t.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}
