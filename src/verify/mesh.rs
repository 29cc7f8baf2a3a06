//! The deploy side of `verify ping-mesh`: a few round trips per node, every node in parallel.
//!
//! 1. connect to every selected node (at most `--forks` at once) and keep the sessions;
//! 2. `probe add` on every node (or, with `--pods`, `probe find` the listed pods' namespaces);
//! 3. one `probe ping` per node: from its probe and from the node itself to every probe, small
//!    packets and (at the same time) the MTU pass, DF set, largest payload the pod MTU allows;
//! 4. for failing pairs only, `probe diagnose` on the nodes involved (twice when the reply
//!    address of a node-sourced ping is only known after the first look), then [`classify`];
//! 5. `probe del` on every node where a probe was attempted, also after Ctrl-C, an error or a
//!    panic ([`Mesh`]'s `Drop`), with what could not be removed reported.
//!
//! [`classify`]: super::diagnose::classify

use super::diagnose::{self, Cause, Failing, Side};
use super::kube::PodRef;
use super::model::{
    DelReport, FindReport, NodeFacts, NodeNet, Pass, PingResult, PingSource, ProbeInfo,
};
use super::ping::{Timing, payload_for_mtu};
use crate::cluster::{Backend, Node};
use crate::remote::{ConnectOptions, ConnectionSpec, HostKeyVerdict, Remote};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One node to verify and how to reach it.
#[derive(Debug, Clone)]
pub struct NodeTarget {
    /// The cluster node.
    pub node: Node,
    /// How to connect.
    pub spec: ConnectionSpec,
    /// The node binary (`{{ bin_dir }}/installer`).
    pub binary: String,
    /// The CNI network configuration directory.
    pub conf_dir: String,
    /// Where the CNI plugins are (`CNI_BIN_DIR`).
    pub cni_bin_dir: String,
    /// libcni's cache root.
    pub cache_dir: String,
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    /// Nodes worked on at once.
    pub forks: usize,
    /// Ping timing.
    pub timing: Timing,
    /// Collect each node's routing table.
    pub show_routes: bool,
    /// The backend (what the routes should look like).
    pub backend: Backend,
    /// Host keys and connect retry.
    pub connect: ConnectOptions,
}

/// What to probe: fresh probe pods, or existing pods.
#[derive(Debug, Clone)]
pub enum Mode {
    /// A probe pod per node, made through its CNI configuration.
    Probes,
    /// Existing pods listed through the API.
    Pods(Vec<PodRef>),
}

/// A pod-side address being probed.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    /// Index of its node.
    pub node: usize,
    /// `probe` for probe pods, `namespace/name` for existing pods.
    pub name: String,
    /// Address, namespace, MTU.
    pub info: ProbeInfo,
    /// Made by this run (removed at the end).
    pub owned: bool,
}

/// Where a pair's pings come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", content = "index", rename_all = "lowercase")]
pub enum From {
    /// An endpoint (index into the endpoints).
    Pod(usize),
    /// A node itself (index into the nodes).
    Host(usize),
}

/// One source → target pair and what happened.
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    /// Source.
    pub from: From,
    /// Target endpoint.
    pub to: usize,
    /// Small pings.
    pub reach: Option<PingResult>,
    /// MTU pass.
    pub mtu: Option<PingResult>,
    /// Why it failed (`None` = passed).
    pub cause: Option<Cause>,
}

impl Pair {
    /// Both passes answered every request.
    pub fn ok(&self) -> bool {
        self.cause.is_none()
    }
}

/// What removing one node's probe did.
#[derive(Debug, Clone, Serialize)]
pub struct CleanupEntry {
    /// The node.
    pub node: String,
    /// The probe id.
    pub probe: String,
    /// The node's report, when the call worked.
    pub report: Option<DelReport>,
    /// Why the call did not work.
    pub error: Option<String>,
}

impl CleanupEntry {
    /// Everything is gone.
    pub fn clean(&self) -> bool {
        self.error.is_none()
            && self
                .report
                .as_ref()
                .is_some_and(|r| r.leftovers.is_empty() && r.errors.is_empty())
    }
}

/// How one node took part.
#[derive(Debug, Clone, Serialize)]
pub struct NodeOutcome {
    /// Inventory name.
    pub host: String,
    /// Address connected to.
    pub address: String,
    /// Why it could not take part (SSH, probe creation), if it could not.
    pub error: Option<String>,
    /// Its pod network as seen.
    pub net: Option<NodeNet>,
    /// `ip route` output (`--show-routes`).
    pub routes: Option<String>,
}

/// Everything a run found.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// `probes` or `pods`.
    pub mode: &'static str,
    /// Backend name.
    pub backend: &'static str,
    /// Per node.
    pub nodes: Vec<NodeOutcome>,
    /// What was probed.
    pub endpoints: Vec<Endpoint>,
    /// Every pair.
    pub pairs: Vec<Pair>,
    /// Probe removal, per node.
    pub cleanup: Vec<CleanupEntry>,
    /// Things worth knowing (skipped pods…).
    pub notes: Vec<String>,
    /// Stopped by Ctrl-C / SIGTERM.
    pub interrupted: bool,
    /// Wall time.
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    /// Requests per pair and pass.
    pub count: u32,
    /// Seconds each phase took (`connect`, `probes`, `routes`, `ping`, `diagnose`, `cleanup`).
    pub phases: indexmap::IndexMap<&'static str, f64>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

impl Outcome {
    /// Every pair passed, every node took part, every probe is gone, not interrupted.
    pub fn success(&self) -> bool {
        !self.interrupted
            && self.nodes.iter().all(|n| n.error.is_none())
            && self.pairs.iter().all(Pair::ok)
            && self.cleanup.iter().all(CleanupEntry::clean)
    }
}

/// What to look at on one node: route lookups, and peer addresses to ping.
#[derive(Debug, Default)]
struct Ask {
    routes: BTreeSet<IpAddr>,
    reach: BTreeSet<IpAddr>,
}

type Asks = BTreeMap<usize, Ask>;

struct NodeRun {
    target: NodeTarget,
    remote: Option<Remote>,
    error: Option<String>,
    probe_id: Option<String>,
    host_veths: Vec<String>,
    net: Option<NodeNet>,
    routes: Option<String>,
}

/// A run in progress; dropping it removes the probes that are still there.
pub struct Mesh<'a> {
    nodes: Vec<NodeRun>,
    endpoints: Vec<Endpoint>,
    opts: &'a MeshOptions,
    notes: Vec<String>,
    cleaned: bool,
}

/// Run `f(i)` for `i in 0..n`, at most `forks` at once; results in order.
fn parallel<R: Send>(n: usize, forks: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<R>>> = (0..n).map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..forks.max(1).min(n) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    let r = f(i);
                    *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("scoped threads fill every slot or propagate their panic")
        })
        .collect()
}

/// A run id for probe names: `iv` + 8 hex digits.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let h = RandomState::new().hash_one((nanos, std::process::id()));
    format!("iv{:08x}", h as u32)
}

/// Call the node binary and read its JSON answer.
fn node_call<T: DeserializeOwned>(remote: &Remote, argv: &[&str]) -> Result<T, String> {
    let out = remote.run(argv).map_err(|e| e.to_string())?;
    if !out.success() {
        let msg = out.describe_failure();
        let hint = if msg.contains("unrecognized subcommand")
            || msg.contains("unexpected argument")
            || msg.contains("not found")
            || msg.contains("No such file")
        {
            format!(
                " (the node binary {} lacks `verify probe`: run `installer setup flannel` to install this version)",
                argv[0]
            )
        } else {
            String::new()
        };
        return Err(format!("{msg}{hint}"));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "unexpected answer to `{}`: {e}: {}",
            argv[1..].join(" "),
            out.stdout_text().trim()
        )
    })
}

fn csv(items: impl IntoIterator<Item = String>) -> String {
    items.into_iter().collect::<Vec<_>>().join(",")
}

impl<'a> Mesh<'a> {
    /// Connect to every node in parallel; unreachable nodes are recorded, not fatal.
    pub fn connect(targets: Vec<NodeTarget>, opts: &'a MeshOptions) -> Mesh<'a> {
        let results = parallel(targets.len(), opts.forks, |i| {
            crate::remote::connect(&targets[i].spec, &opts.connect)
        });
        let mut notes = Vec::new();
        let nodes = targets
            .into_iter()
            .zip(results)
            .map(|(target, r)| {
                let (remote, error) = match r {
                    Ok((session, verdict)) => {
                        if let HostKeyVerdict::Recorded { fingerprint, file } = verdict {
                            notes.push(format!(
                                "{}: recorded new host key {fingerprint} in {}",
                                target.node.host,
                                file.display()
                            ));
                        }
                        (
                            Some(Remote::new(session, target.spec.clone(), false, false)),
                            None,
                        )
                    }
                    Err(e) => (
                        None,
                        Some(format!(
                            "unreachable over SSH ({}:{}): {e}",
                            target.spec.address, target.spec.port
                        )),
                    ),
                };
                NodeRun {
                    target,
                    remote,
                    error,
                    probe_id: None,
                    host_veths: Vec::new(),
                    net: None,
                    routes: None,
                }
            })
            .collect();
        Mesh {
            nodes,
            endpoints: Vec::new(),
            opts,
            notes,
            cleaned: false,
        }
    }

    fn cni_args(t: &NodeTarget) -> [&str; 6] {
        [
            "--conf-dir",
            &t.conf_dir,
            "--bin-dir",
            &t.cni_bin_dir,
            "--cache-dir",
            &t.cache_dir,
        ]
    }

    /// Make a probe on every reachable node.
    pub fn add_probes(&mut self) {
        let id = run_id();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if n.remote.is_some() {
                n.probe_id = Some(format!("{id}-{}", i + 1));
            }
        }
        let nodes = &self.nodes;
        let results = parallel(nodes.len(), self.opts.forks, |i| {
            let n = &nodes[i];
            let (Some(remote), Some(id)) = (&n.remote, &n.probe_id) else {
                return None;
            };
            let mut argv = vec![
                n.target.binary.as_str(),
                "verify",
                "probe",
                "add",
                "--id",
                id,
            ];
            argv.extend(Self::cni_args(&n.target));
            Some(node_call::<ProbeInfo>(remote, &argv))
        });
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Some(Ok(info)) => {
                    let n = &mut self.nodes[i];
                    n.net = Some(info.node_net());
                    n.host_veths = info.host_interfaces.clone();
                    self.endpoints.push(Endpoint {
                        node: i,
                        name: "probe".into(),
                        info,
                        owned: true,
                    });
                }
                Some(Err(e)) => {
                    self.nodes[i].error = Some(format!("probe pod could not be created: {e}"))
                }
                None => {}
            }
        }
    }

    /// Use existing pods (from the API) instead of probes.
    pub fn adopt_pods(&mut self, pods: &[PodRef]) {
        let mut per_node: Vec<Vec<&PodRef>> = vec![Vec::new(); self.nodes.len()];
        for pod in pods {
            let at = self.nodes.iter().position(|n| {
                let node = &n.target.node;
                pod.host_ip.is_some_and(|h| Some(h) == node.ip)
                    || (!pod.node_name.is_empty()
                        && (pod.node_name == node.k8s_name || pod.node_name == node.host))
            });
            match at {
                Some(i) => per_node[i].push(pod),
                None => self.notes.push(format!(
                    "pod {}/{} ({}) runs on {:?}, which is not a selected node; skipped",
                    pod.namespace, pod.name, pod.ip, pod.node_name
                )),
            }
        }
        let nodes = &self.nodes;
        let per = &per_node;
        let results = parallel(nodes.len(), self.opts.forks, |i| {
            let n = &nodes[i];
            let remote = n.remote.as_ref()?;
            let ips = csv(per[i].iter().map(|p| p.ip.to_string()));
            let mut argv = vec![n.target.binary.as_str(), "verify", "probe", "find"];
            if !ips.is_empty() {
                argv.extend(["--ips", ips.as_str()]);
            }
            Some(node_call::<FindReport>(remote, &argv))
        });
        for (i, r) in results.into_iter().enumerate() {
            let report = match r {
                Some(Ok(report)) => report,
                Some(Err(e)) => {
                    self.nodes[i].error = Some(format!("looking up pod namespaces failed: {e}"));
                    continue;
                }
                None => continue,
            };
            let mut net = NodeNet {
                host_addrs: report.host_addrs.clone(),
                subnet: None,
                bridge: None,
            };
            for pod in &per_node[i] {
                let Some(found) = report.found.iter().find(|f| f.ip == pod.ip) else {
                    self.notes.push(format!(
                        "pod {}/{} ({}): no network namespace under /run/netns on {} holds its address; skipped",
                        pod.namespace, pod.name, pod.ip, self.nodes[i].target.node.host
                    ));
                    continue;
                };
                if net.subnet.is_none() {
                    net.subnet = ipnet::IpNet::new(found.ip, found.prefix_len)
                        .ok()
                        .map(|n| n.trunc());
                }
                self.endpoints.push(Endpoint {
                    node: i,
                    name: format!("{}/{}", pod.namespace, pod.name),
                    info: ProbeInfo {
                        id: format!("{}/{}", pod.namespace, pod.name),
                        netns: found.netns.clone(),
                        ifname: found.ifname.clone(),
                        ip: found.ip,
                        prefix_len: found.prefix_len,
                        gateway: None,
                        mtu: found.mtu,
                        network: String::new(),
                        host_interfaces: Vec::new(),
                        host_addrs: report.host_addrs.clone(),
                    },
                    owned: false,
                });
            }
            self.nodes[i].net = Some(net);
        }
    }

    /// Read every node's routing table (`ip route`).
    pub fn collect_routes(&mut self) {
        let nodes = &self.nodes;
        let results = parallel(nodes.len(), self.opts.forks, |i| {
            let remote = nodes[i].remote.as_ref()?;
            Some(match remote.run(&["ip", "route", "show"]) {
                Ok(out) if out.success() => out.stdout_text().into_owned(),
                Ok(out) => format!("(ip route failed: {})\n", out.describe_failure()),
                Err(e) => format!("({e})\n"),
            })
        });
        for (n, r) in self.nodes.iter_mut().zip(results) {
            n.routes = r;
        }
    }

    /// Both passes on every node at once; one pair per source and target.
    pub fn ping(&self) -> Vec<Pair> {
        let t = &self.opts.timing;
        let eps = &self.endpoints;
        let nodes = &self.nodes;
        let per_node = parallel(nodes.len(), self.opts.forks, |i| {
            let remote = nodes[i].remote.as_ref()?;
            if eps.is_empty() {
                return Some(Ok(Vec::new()));
            }
            let own: Vec<&Endpoint> = eps.iter().filter(|e| e.node == i).collect();
            let own_mtu = own.iter().map(|e| e.info.mtu).min();
            let targets = csv(eps.iter().map(|e| e.info.ip.to_string()));
            let mtu_targets = csv(eps.iter().map(|e| {
                let mtu = own_mtu.map_or(e.info.mtu, |m| m.min(e.info.mtu));
                format!("{}@{}", e.info.ip, payload_for_mtu(mtu, e.info.ip))
            }));
            let (count, interval, timeout) = (
                t.count.to_string(),
                t.interval.to_string(),
                t.timeout.to_string(),
            );
            let mut argv = vec![nodes[i].target.binary.as_str(), "verify", "probe", "ping"];
            for e in &own {
                argv.extend(["--from-netns", e.info.netns.as_str()]);
            }
            argv.extend([
                "--from-host",
                "--targets",
                &targets,
                "--mtu-targets",
                &mtu_targets,
                "--count",
                &count,
                "--interval",
                &interval,
                "--timeout",
                &timeout,
            ]);
            Some(node_call::<Vec<PingResult>>(remote, &argv))
        });
        let mut pairs = Vec::new();
        let mut sources: Vec<From> = (0..eps.len()).map(From::Pod).collect();
        sources.extend(
            (0..nodes.len())
                .filter(|i| nodes[*i].remote.is_some())
                .map(From::Host),
        );
        for from in sources {
            let (node, source) = match from {
                From::Pod(e) => (eps[e].node, PingSource::Netns(eps[e].info.netns.clone())),
                From::Host(n) => (n, PingSource::Host),
            };
            for (to, target) in eps.iter().enumerate() {
                if from == From::Pod(to) {
                    continue;
                }
                let mut pair = Pair {
                    from,
                    to,
                    reach: None,
                    mtu: None,
                    cause: None,
                };
                match &per_node[node] {
                    Some(Ok(results)) => {
                        let find = |pass| {
                            results
                                .iter()
                                .find(|r| {
                                    r.source == source
                                        && r.target == target.info.ip
                                        && r.pass == pass
                                })
                                .cloned()
                        };
                        pair.reach = find(Pass::Reach);
                        pair.mtu = find(Pass::Mtu);
                        if pair.reach.is_none() {
                            pair.cause = Some(Cause::NotTested {
                                node: nodes[node].target.node.host.clone(),
                                reason: "the node returned no result for this pair".into(),
                            });
                        }
                    }
                    Some(Err(e)) => {
                        pair.cause = Some(Cause::NotTested {
                            node: nodes[node].target.node.host.clone(),
                            reason: format!("pinging failed: {e}"),
                        })
                    }
                    None => {
                        pair.cause = Some(Cause::NotTested {
                            node: nodes[node].target.node.host.clone(),
                            reason: nodes[node]
                                .error
                                .clone()
                                .unwrap_or_else(|| "not connected".into()),
                        })
                    }
                }
                pairs.push(pair);
            }
        }
        pairs
    }

    fn pod_mtu(&self, from: From, to: usize) -> u32 {
        let dst = self.endpoints[to].info.mtu;
        let own = match from {
            From::Pod(e) => Some(self.endpoints[e].info.mtu),
            From::Host(n) => self
                .endpoints
                .iter()
                .filter(|e| e.node == n)
                .map(|e| e.info.mtu)
                .min(),
        };
        own.map_or(dst, |m| m.min(dst))
    }

    fn source_node(&self, from: From) -> usize {
        match from {
            From::Pod(e) => self.endpoints[e].node,
            From::Host(n) => n,
        }
    }

    /// Gather facts on the nodes of failing pairs and name each failure's likely cause; says
    /// whether any node had to be asked (MTU-only failures need no facts).
    pub fn diagnose(&self, pairs: &mut [Pair]) -> bool {
        let dev = match &self.opts.backend {
            Backend::Vxlan { vni, .. } => Some(format!("flannel.{vni}")),
            Backend::HostGw => None,
        };
        // Pairs whose small pings failed need facts; MTU-only failures do not.
        let failing: Vec<usize> = (0..pairs.len())
            .filter(|&i| {
                pairs[i].cause.is_none() && pairs[i].reach.as_ref().is_some_and(|r| !r.ok())
            })
            .collect();
        let mut asks: Asks = BTreeMap::new();
        for &i in &failing {
            let p = &pairs[i];
            let src = self.source_node(p.from);
            let dst_ep = &self.endpoints[p.to];
            let entry = asks.entry(src).or_default();
            entry.routes.insert(dst_ep.info.ip);
            if src != dst_ep.node
                && let Some(a) = dst_ep.info.host_addrs.first()
            {
                entry.reach.insert(*a);
            }
            if let From::Pod(e) = p.from {
                asks.entry(dst_ep.node)
                    .or_default()
                    .routes
                    .insert(self.endpoints[e].info.ip);
            }
        }
        let mut facts = self.gather(&asks, dev.as_deref());
        // Node-sourced pings: the reply goes to the address the source node picked; when that
        // is a pod-side address (vxlan's flannel.N), the target node needs a route back to it.
        let mut second: Asks = BTreeMap::new();
        for &i in &failing {
            let p = &pairs[i];
            let From::Host(n) = p.from else { continue };
            let dst_ep = &self.endpoints[p.to];
            if let Some(src_addr) = self.host_source_addr(n, dst_ep.info.ip, &facts)
                && self.nodes[n]
                    .net
                    .as_ref()
                    .and_then(|net| net.subnet)
                    .is_some_and(|s| s.contains(&src_addr))
            {
                second
                    .entry(dst_ep.node)
                    .or_default()
                    .routes
                    .insert(src_addr);
            }
        }
        if !second.is_empty() {
            for (node, more) in self.gather(&second, dev.as_deref()) {
                let f = facts.entry(node).or_default();
                f.routes.extend(more.routes);
                if f.dev.is_none() {
                    f.dev = more.dev;
                    f.dev_exists = more.dev_exists;
                    f.neighbours = more.neighbours;
                    f.fdb = more.fdb;
                }
            }
        }
        let empty = NodeNet::default();
        for &i in &failing {
            let from = pairs[i].from;
            let to = pairs[i].to;
            let src = self.source_node(from);
            let dst_ep = &self.endpoints[to];
            let src_addr = match from {
                From::Pod(e) => Some(self.endpoints[e].info.ip),
                From::Host(n) => self.host_source_addr(n, dst_ep.info.ip, &facts),
            };
            let Some(reach) = pairs[i].reach.as_ref() else {
                continue;
            };
            let side = |n: usize| Side {
                node: &self.nodes[n].target.node.host,
                net: self.nodes[n].net.as_ref().unwrap_or(&empty),
                facts: facts.get(&n),
            };
            let f = Failing {
                src: side(src),
                src_addr: src_addr.unwrap_or(dst_ep.info.ip),
                dst: side(dst_ep.node),
                dst_addr: dst_ep.info.ip,
                reach,
                mtu: pairs[i].mtu.as_ref(),
                pod_mtu: self.pod_mtu(from, to),
            };
            let cause = diagnose::classify(&self.opts.backend, &f);
            pairs[i].cause = Some(cause);
        }
        // MTU-only failures.
        for p in pairs.iter_mut() {
            if p.cause.is_some() || p.mtu.as_ref().is_none_or(PingResult::ok) {
                continue;
            }
            let mtu = p.mtu.as_ref().filter(|m| !m.ok());
            let pod_mtu = self.pod_mtu(p.from, p.to);
            p.cause = Some(Cause::Mtu {
                packet: mtu.map_or(pod_mtu, |m| m.size + super::ping::header_overhead(m.target)),
                pod_mtu,
                path_mtu: mtu.and_then(|m| m.path_mtu),
            });
        }
        !failing.is_empty()
    }

    /// The source address node `n` uses toward `dst` (from its route lookup), else its first
    /// own address.
    fn host_source_addr(
        &self,
        n: usize,
        dst: IpAddr,
        facts: &BTreeMap<usize, NodeFacts>,
    ) -> Option<IpAddr> {
        facts
            .get(&n)
            .and_then(|f| f.route(dst))
            .and_then(|r| r.src)
            .or_else(|| {
                self.nodes[n]
                    .net
                    .as_ref()
                    .and_then(|net| net.host_addrs.first().copied())
            })
    }

    fn gather(&self, asks: &Asks, dev: Option<&str>) -> BTreeMap<usize, NodeFacts> {
        let list: Vec<(&usize, &Ask)> = asks.iter().collect();
        let results = parallel(list.len(), self.opts.forks, |k| {
            let (&node, Ask { routes, reach }) = list[k];
            let remote = self.nodes[node].remote.as_ref()?;
            let routes = csv(routes.iter().map(IpAddr::to_string));
            let reach = csv(reach.iter().map(IpAddr::to_string));
            let mut argv = vec![
                self.nodes[node].target.binary.as_str(),
                "verify",
                "probe",
                "diagnose",
                "--route-to",
                &routes,
            ];
            if !reach.is_empty() {
                argv.extend(["--reach", &reach]);
            }
            if let Some(d) = dev {
                argv.extend(["--dev", d]);
            }
            node_call::<NodeFacts>(remote, &argv)
                .ok()
                .map(|f| (node, f))
        });
        results.into_iter().flatten().collect()
    }

    /// Remove every probe this run attempted (idempotent on the node); also run on drop.
    pub fn cleanup(&mut self) -> Vec<CleanupEntry> {
        self.cleaned = true;
        let nodes = &self.nodes;
        let opts = self.opts;
        parallel(nodes.len(), opts.forks, |i| {
            let n = &nodes[i];
            let id = n.probe_id.as_ref()?;
            let mut argv = vec![
                n.target.binary.as_str(),
                "verify",
                "probe",
                "del",
                "--id",
                id,
            ];
            argv.extend(Self::cni_args(&n.target));
            for v in &n.host_veths {
                argv.extend(["--host-veth", v.as_str()]);
            }
            let attempt = |remote: &Remote| node_call::<DelReport>(remote, &argv);
            let mut result = match &n.remote {
                Some(remote) => attempt(remote),
                None => Err("not connected".to_string()),
            };
            if let Err(first) = &result {
                // The session may have died (node rebooted, connection reset): try once more
                // on a fresh one.
                result = match crate::remote::connect(&n.target.spec, &opts.connect) {
                    Ok((session, _)) => {
                        attempt(&Remote::new(session, n.target.spec.clone(), false, false))
                    }
                    Err(e) => Err(format!("{first}; reconnecting failed: {e}")),
                };
            }
            Some(match result {
                Ok(report) => CleanupEntry {
                    node: n.target.node.host.clone(),
                    probe: id.clone(),
                    report: Some(report),
                    error: None,
                },
                Err(e) => CleanupEntry {
                    node: n.target.node.host.clone(),
                    probe: id.clone(),
                    report: None,
                    error: Some(format!(
                        "{e}; remove it on the node with `{} verify probe del --id {id}`",
                        n.target.binary
                    )),
                },
            })
        })
        .into_iter()
        .flatten()
        .collect()
    }

    /// Finish: the outcome of the run (probes must already be removed).
    fn outcome(
        &mut self,
        mode: &'static str,
        pairs: Vec<Pair>,
        cleanup: Vec<CleanupEntry>,
        interrupted: bool,
        started: Instant,
    ) -> Outcome {
        Outcome {
            mode,
            backend: self.opts.backend.name(),
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeOutcome {
                    host: n.target.node.host.clone(),
                    address: n.target.spec.address.clone(),
                    error: n.error.clone(),
                    net: n.net.clone(),
                    routes: n.routes.clone(),
                })
                .collect(),
            endpoints: std::mem::take(&mut self.endpoints),
            pairs,
            cleanup,
            notes: std::mem::take(&mut self.notes),
            interrupted,
            duration: started.elapsed(),
            count: self.opts.timing.count,
            phases: indexmap::IndexMap::new(),
        }
    }
}

impl Drop for Mesh<'_> {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        for entry in self.cleanup() {
            if !entry.clean() {
                eprintln!("{}", describe_leftover(&entry));
            }
        }
    }
}

/// One line about a probe that was not removed cleanly.
pub fn describe_leftover(e: &CleanupEntry) -> String {
    match (&e.error, &e.report) {
        (Some(err), _) => format!("{}: probe {} may be left: {err}", e.node, e.probe),
        (None, Some(r)) => {
            let mut parts = Vec::new();
            if !r.leftovers.is_empty() {
                parts.push(format!("still there: {}", r.leftovers.join(", ")));
            }
            if !r.errors.is_empty() {
                parts.push(format!("errors: {}", r.errors.join("; ")));
            }
            format!(
                "{}: probe {} not removed cleanly: {}",
                e.node,
                e.probe,
                parts.join("; ")
            )
        }
        (None, None) => format!("{}: probe {}: no report", e.node, e.probe),
    }
}

/// Run the whole check. `interrupt` is polled between phases (Ctrl-C / SIGTERM): when set, the
/// remaining phases are skipped and the probes removed.
pub fn run(
    targets: Vec<NodeTarget>,
    opts: &MeshOptions,
    mode: Mode,
    interrupt: &AtomicBool,
) -> Outcome {
    let started = Instant::now();
    let mut phases = indexmap::IndexMap::new();
    let mut lap = Instant::now();
    let mut mark = |name: &'static str| {
        phases.insert(
            name,
            (lap.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        );
        lap = Instant::now();
    };
    let stop = || interrupt.load(Ordering::SeqCst);
    let mut mesh = Mesh::connect(targets, opts);
    mark("connect");
    let mode_name = match &mode {
        Mode::Probes => "probes",
        Mode::Pods(_) => "pods",
    };
    let mut pairs = Vec::new();
    if !stop() {
        match &mode {
            Mode::Probes => mesh.add_probes(),
            Mode::Pods(pods) => mesh.adopt_pods(pods),
        }
        mark("probes");
    }
    if !stop() && opts.show_routes {
        mesh.collect_routes();
        mark("routes");
    }
    if !stop() {
        pairs = mesh.ping();
        mark("ping");
    }
    if !stop() && mesh.diagnose(&mut pairs) {
        mark("diagnose");
    }
    let cleanup = mesh.cleanup();
    mark("cleanup");
    let interrupted = stop();
    let mut outcome = mesh.outcome(mode_name, pairs, cleanup, interrupted, started);
    outcome.phases = phases;
    outcome
}
