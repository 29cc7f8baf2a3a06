//! The typed cluster model: what the variables say the network should be, validated.
//!
//! Built from the resolved variables of the inventory's hosts. Every problem an operator can cause
//! is collected (not just the first) and reported with the variable, its value and where it was set.

use crate::inventory::Inventory;
use crate::vars::{Layer, VarError, Variables};
use ipnet::Ipv4Net;
use serde_json::Value as Json;
use std::fmt;
use std::net::IpAddr;

/// Network plugins this binary can install.
pub const SUPPORTED_NETWORKS: &[&str] = &["flannel"];

/// Spellings of the master group (kubeasz 3.x, then 2.x).
pub const MASTER_GROUPS: &[&str] = &["kube_master", "kube-master"];
/// Spellings of the worker group (kubeasz 3.x, then 2.x).
pub const NODE_GROUPS: &[&str] = &["kube_node", "kube-node"];
/// The etcd group.
pub const ETCD_GROUPS: &[&str] = &["etcd"];

/// flannel backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// VXLAN overlay (`flannel.<VNI>`).
    Vxlan {
        /// VXLAN network identifier.
        vni: u32,
        /// UDP port; 0 = kernel default (8472).
        port: u16,
        /// Plain routes to peers on the same L2 segment.
        direct_routing: bool,
    },
    /// Routes via peer node addresses (needs L2 adjacency).
    HostGw,
}

impl Backend {
    /// The name flannel uses (`vxlan`, `host-gw`).
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Vxlan { .. } => "vxlan",
            Backend::HostGw => "host-gw",
        }
    }
}

/// Where node subnets are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datastore {
    /// Node `spec.podCIDR` and annotations through the Kubernetes API.
    Kubernetes,
    /// flannel's etcd v3 layout.
    Etcd {
        /// Client URLs.
        endpoints: Vec<String>,
        /// Key prefix (`/coreos.com/network`).
        prefix: String,
    },
}

/// Who runs flannel on the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentMode {
    /// This binary's agent as a host service.
    Embedded,
    /// The upstream flannel DaemonSet image.
    Image,
}

/// A master or worker node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Inventory host name.
    pub host: String,
    /// Address other nodes and the deploy host reach it on (`ansible_host` or the name).
    pub address: String,
    /// The address parsed, when it is an IP.
    pub ip: Option<IpAddr>,
    /// Kubernetes node name.
    pub k8s_name: String,
    /// In the master group.
    pub master: bool,
    /// In the worker group.
    pub worker: bool,
}

/// The validated cluster network model.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// `CLUSTER_NETWORK`.
    pub network_plugin: String,
    /// `CLUSTER_CIDR`: the pod network.
    pub cluster_cidr: Ipv4Net,
    /// `SERVICE_CIDR`.
    pub service_cidr: Ipv4Net,
    /// `NODE_CIDR_LEN`: prefix of each node's pod subnet.
    pub node_cidr_len: u8,
    /// `FLANNEL_BACKEND` (+ `DIRECT_ROUTING`, `FLANNEL_VNI`, `FLANNEL_VXLAN_PORT`).
    pub backend: Backend,
    /// `FLANNEL_DATASTORE`.
    pub datastore: Datastore,
    /// `FLANNEL_AGENT`.
    pub agent: AgentMode,
    /// `FLANNEL_IPMASQ`.
    pub ip_masq: bool,
    /// kube_master ∪ kube_node, masters first, each once.
    pub nodes: Vec<Node>,
    /// The `[etcd]` hosts.
    pub etcd_hosts: Vec<String>,
}

/// One validation problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Validation failed: every problem found.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The inventory or variables are not a valid cluster.
    #[error("{} problem(s) in {source_name}:\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The inventory file.
        source_name: String,
        /// Everything found wrong.
        problems: Vec<Problem>,
    },
    /// A variable could not be resolved at all.
    #[error(transparent)]
    Var(#[from] VarError),
}

/// The first group of `names` that exists in the inventory, with its hosts.
pub fn find_group(inventory: &Inventory, names: &[&str]) -> Option<(String, Vec<String>)> {
    names
        .iter()
        .find_map(|n| inventory.group_hosts(n).map(|h| (n.to_string(), h)))
}

/// Reads and describes one host's variables for error messages.
struct Reader<'a> {
    vars: &'a Variables,
    host: String,
    problems: Vec<Problem>,
}

impl Reader<'_> {
    fn where_set(&self, name: &str) -> String {
        match self.vars.raw(&self.host, name) {
            Ok(Some((_, Layer::InventoryGroup(g)))) => format!("set in [{g}:vars]"),
            Ok(Some((_, layer))) => format!("from {layer}"),
            _ => "not set".to_string(),
        }
    }

    fn problem(&mut self, message: String) {
        self.problems.push(Problem { message });
    }

    fn json(&mut self, name: &str) -> Option<Json> {
        match self.vars.resolve_json(&self.host, name) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(e.to_string());
                None
            }
        }
    }

    fn string(&mut self, name: &str) -> Option<String> {
        self.json(name).map(|v| match v {
            Json::String(s) => s,
            Json::Null => String::new(),
            other => other.to_string(),
        })
    }

    fn cidr(&mut self, name: &str) -> Option<Ipv4Net> {
        let raw = self.string(name)?;
        match raw.trim().parse::<Ipv4Net>() {
            Ok(net) => Some(net.trunc()),
            Err(_) => {
                let hint = if raw.contains(':') {
                    "IPv6 networks are not supported yet; use an IPv4 CIDR like 172.20.0.0/16"
                } else {
                    "expected an IPv4 CIDR like 172.20.0.0/16"
                };
                let at = self.where_set(name);
                self.problem(format!("{name}={raw:?} ({at}) is not a valid CIDR: {hint}"));
                None
            }
        }
    }

    fn int(&mut self, name: &str, min: i64, max: i64) -> Option<i64> {
        let v = self.json(name)?;
        let parsed = match &v {
            Json::Number(n) => n.as_i64(),
            Json::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                let at = self.where_set(name);
                self.problem(format!(
                    "{name}={n} ({at}) is out of range: expected {min}..={max}"
                ));
                None
            }
            None => {
                let at = self.where_set(name);
                self.problem(format!("{name}={v} ({at}) is not an integer"));
                None
            }
        }
    }

    fn boolean(&mut self, name: &str) -> Option<bool> {
        let v = self.json(name)?;
        match strict_bool(&v) {
            Some(b) => Some(b),
            None => {
                let at = self.where_set(name);
                self.problem(format!(
                    "{name}={v} ({at}) is not a boolean: use true/false, yes/no, on/off or 1/0"
                ));
                None
            }
        }
    }

    fn choice(&mut self, name: &str, allowed: &[&str]) -> Option<String> {
        let v = self.string(name)?;
        let lower = v.trim().to_ascii_lowercase();
        if allowed.contains(&lower.as_str()) {
            Some(lower)
        } else {
            let at = self.where_set(name);
            self.problem(format!(
                "{name}={v:?} ({at}) is not supported: choose one of {}",
                allowed.join(", ")
            ));
            None
        }
    }
}

impl Cluster {
    /// Build and validate the model. Cluster-wide values are read in the scope of the first
    /// master (kubeasz sets them in `[all:vars]`); per-node values in each node's scope.
    pub fn from_vars(inventory: &Inventory, vars: &Variables) -> Result<Cluster, ClusterError> {
        let source_name = inventory.source().display().to_string();
        let invalid = |problems: Vec<Problem>| ClusterError::Invalid {
            source_name: source_name.clone(),
            problems,
        };
        let masters = find_group(inventory, MASTER_GROUPS)
            .map(|(_, h)| h)
            .unwrap_or_default();
        let workers = find_group(inventory, NODE_GROUPS)
            .map(|(_, h)| h)
            .unwrap_or_default();
        let etcd_hosts = find_group(inventory, ETCD_GROUPS)
            .map(|(_, h)| h)
            .unwrap_or_default();
        let Some(first_master) = masters.first().cloned() else {
            return Err(invalid(vec![Problem {
                message: format!(
                    "no host in a master group: add a [{}] section with at least one host (kubeasz 2.x spelling [{}] works too)",
                    MASTER_GROUPS[0], MASTER_GROUPS[1]
                ),
            }]));
        };
        let mut r = Reader {
            vars,
            host: first_master.clone(),
            problems: Vec::new(),
        };

        let network_plugin = r.string("CLUSTER_NETWORK").unwrap_or_default();
        if !SUPPORTED_NETWORKS.contains(&network_plugin.as_str()) {
            let at = r.where_set("CLUSTER_NETWORK");
            r.problem(format!(
                "CLUSTER_NETWORK={network_plugin:?} ({at}) is not supported by this installer: supported: {}",
                SUPPORTED_NETWORKS.join(", ")
            ));
        }
        let cluster_cidr = r.cidr("CLUSTER_CIDR");
        let service_cidr = r.cidr("SERVICE_CIDR");
        let node_cidr_len = r.int("NODE_CIDR_LEN", 0, 32);
        if let (Some(net), Some(len)) = (cluster_cidr, node_cidr_len) {
            let min = i64::from(net.prefix_len()) + 2;
            if len < min || len > 30 {
                let at = r.where_set("NODE_CIDR_LEN");
                r.problem(format!(
                    "NODE_CIDR_LEN={len} ({at}) must be between {min} (CLUSTER_CIDR {net} prefix + 2, room for 4 node subnets) and 30"
                ));
            }
        }
        if let (Some(c), Some(s)) = (cluster_cidr, service_cidr)
            && overlaps(&c, &s)
        {
            r.problem(format!(
                "CLUSTER_CIDR {c} and SERVICE_CIDR {s} overlap: pod and service addresses must be disjoint"
            ));
        }

        let backend_name = r.choice("FLANNEL_BACKEND", &["vxlan", "host-gw"]);
        let backend = match backend_name.as_deref() {
            Some("vxlan") => {
                let vni = r.int("FLANNEL_VNI", 0, (1 << 24) - 1);
                let port = r.int("FLANNEL_VXLAN_PORT", 0, 65535);
                let direct_routing = r.boolean("DIRECT_ROUTING");
                match (vni, port, direct_routing) {
                    (Some(vni), Some(port), Some(direct_routing)) => Some(Backend::Vxlan {
                        vni: vni as u32,
                        port: port as u16,
                        direct_routing,
                    }),
                    _ => None,
                }
            }
            Some(_) => Some(Backend::HostGw),
            None => None,
        };
        let datastore = match r
            .choice("FLANNEL_DATASTORE", &["kubernetes", "etcd"])
            .as_deref()
        {
            Some("etcd") => {
                let endpoints: Vec<String> = r
                    .string("ETCD_ENDPOINTS")
                    .unwrap_or_default()
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if endpoints.is_empty() {
                    let at = r.where_set("ETCD_ENDPOINTS");
                    r.problem(format!(
                        "FLANNEL_DATASTORE=etcd needs etcd endpoints: add an [etcd] group or set ETCD_ENDPOINTS ({at})"
                    ));
                }
                let prefix = r.string("FLANNEL_ETCD_PREFIX").unwrap_or_default();
                Some(Datastore::Etcd { endpoints, prefix })
            }
            Some(_) => Some(Datastore::Kubernetes),
            None => None,
        };
        let agent = match r.choice("FLANNEL_AGENT", &["embedded", "image"]).as_deref() {
            Some("image") => Some(AgentMode::Image),
            Some(_) => Some(AgentMode::Embedded),
            None => None,
        };
        let ip_masq = r.boolean("FLANNEL_IPMASQ");
        if agent == Some(AgentMode::Image) && matches!(datastore, Some(Datastore::Etcd { .. })) {
            r.problem(
                "FLANNEL_AGENT=image runs the upstream DaemonSet, which reads node subnets from the Kubernetes API: use FLANNEL_DATASTORE=kubernetes, or FLANNEL_AGENT=embedded for etcd".into(),
            );
        }

        // Nodes: masters then workers, each once.
        let mut nodes: Vec<Node> = Vec::new();
        for host in masters.iter().chain(workers.iter()) {
            if let Some(n) = nodes.iter_mut().find(|n| &n.host == host) {
                n.worker |= workers.contains(host);
                continue;
            }
            let mut nr = Reader {
                vars,
                host: host.clone(),
                problems: Vec::new(),
            };
            let address = nr.string("NODE_ADDRESS").unwrap_or_else(|| host.clone());
            let k8s_name = nr.string("K8S_NODENAME").unwrap_or_else(|| host.clone());
            r.problems.extend(nr.problems);
            let ip = address.parse::<IpAddr>().ok();
            nodes.push(Node {
                host: host.clone(),
                address,
                ip,
                k8s_name,
                master: masters.contains(host),
                worker: workers.contains(host),
            });
        }
        for (i, a) in nodes.iter().enumerate() {
            for b in &nodes[i + 1..] {
                if a.ip.is_some() && a.ip == b.ip || a.ip.is_none() && a.address == b.address {
                    r.problem(format!(
                        "hosts {} and {} have the same address {}: every node needs its own (check ansible_host)",
                        a.host, b.host, a.address
                    ));
                }
                if a.k8s_name == b.k8s_name {
                    r.problem(format!(
                        "hosts {} and {} have the same Kubernetes node name {:?}: set distinct k8s_nodename values",
                        a.host, b.host, a.k8s_name
                    ));
                }
            }
            if let Some(IpAddr::V4(ip)) = a.ip {
                for (name, net) in [
                    ("CLUSTER_CIDR", cluster_cidr),
                    ("SERVICE_CIDR", service_cidr),
                ] {
                    if let Some(net) = net
                        && net.contains(&ip)
                    {
                        r.problem(format!(
                            "node {} address {ip} lies inside {name} {net}: node, pod and service networks must not overlap",
                            a.host
                        ));
                    }
                }
            }
        }
        // Cluster-wide settings must agree on every node (a host-line override would split it).
        for name in [
            "CLUSTER_CIDR",
            "FLANNEL_BACKEND",
            "FLANNEL_DATASTORE",
            "NODE_CIDR_LEN",
        ] {
            let Ok(reference) = vars.resolve_json(&first_master, name) else {
                continue;
            };
            for node in &nodes {
                if let Ok(v) = vars.resolve_json(&node.host, name)
                    && v != reference
                {
                    r.problem(format!(
                        "{name} differs between hosts: {first_master} has {reference}, {} has {v}; it must be the same cluster-wide",
                        node.host
                    ));
                }
            }
        }

        let problems = r.problems;
        match (
            cluster_cidr,
            service_cidr,
            node_cidr_len,
            backend,
            datastore,
            agent,
            ip_masq,
        ) {
            (
                Some(cc),
                Some(sc),
                Some(len),
                Some(backend),
                Some(datastore),
                Some(agent),
                Some(ip_masq),
            ) if problems.is_empty() => Ok(Cluster {
                network_plugin,
                cluster_cidr: cc,
                service_cidr: sc,
                node_cidr_len: len as u8,
                backend,
                datastore,
                agent,
                ip_masq,
                nodes,
                etcd_hosts,
            }),
            _ => Err(invalid(problems)),
        }
    }

    /// Look up a node by inventory host name.
    pub fn node(&self, host: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.host == host)
    }
}

/// Whether two networks share any address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A boolean as an operator would write it (Ansible's `bool` filter spellings), or None for
/// anything else, so that a typo is reported instead of silently meaning false.
pub fn strict_bool(v: &Json) -> Option<bool> {
    match v {
        Json::Bool(b) => Some(*b),
        Json::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Json::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Some(true),
            "false" | "no" | "off" | "0" | "" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn net(addr: u32, len: u8) -> Ipv4Net {
        Ipv4Net::new(Ipv4Addr::from(addr), len)
            .expect("valid prefix")
            .trunc()
    }

    proptest! {
        /// `overlaps` agrees with the definition: some address lies in both networks.
        #[test]
        fn overlap_matches_address_ranges(a in any::<u32>(), la in 8u8..=32, b in any::<u32>(), lb in 8u8..=32) {
            let (x, y) = (net(a, la), net(b, lb));
            let (xs, xe) = (u32::from(x.network()), u32::from(x.broadcast()));
            let (ys, ye) = (u32::from(y.network()), u32::from(y.broadcast()));
            let expected = xs <= ye && ys <= xe;
            prop_assert_eq!(overlaps(&x, &y), expected);
            prop_assert_eq!(overlaps(&y, &x), expected);
        }

        /// Any subnet carved from a network overlaps it; its sibling halves do not overlap
        /// each other.
        #[test]
        fn halves_are_disjoint(a in any::<u32>(), len in 8u8..=30) {
            let parent = net(a, len);
            let halves: Vec<Ipv4Net> = parent.subnets(len + 1).expect("subnets").collect();
            prop_assert!(overlaps(&parent, &halves[0]) && overlaps(&parent, &halves[1]));
            prop_assert!(!overlaps(&halves[0], &halves[1]));
        }
    }

    #[test]
    fn strict_bool_accepts_ansible_spellings_only() {
        for (v, want) in [
            (serde_json::json!(true), Some(true)),
            (serde_json::json!("Yes"), Some(true)),
            (serde_json::json!("off"), Some(false)),
            (serde_json::json!(0), Some(false)),
            (serde_json::json!("maybe"), None),
            (serde_json::json!("y"), None),
            (serde_json::json!(2), None),
        ] {
            assert_eq!(strict_bool(&v), want, "{v}");
        }
    }
}
