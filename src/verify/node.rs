//! The node side of `verify ping-mesh`: hidden `installer verify probe …` commands the deploy
//! host runs over SSH with the node binary setup installed (`{{ bin_dir }}/installer`). Each
//! prints one JSON document on stdout (see [`super::model`]).
//!
//! * `add`: a network namespace `installer-probe-<id>` attached through the node's own CNI
//!   configuration exactly as kubelet/containerd would (loopback, then the conflist chain), so
//!   the probe gets a real pod's address, bridge port, routes and MTU;
//! * `del`: CNI DEL and namespace removal, idempotent, then a check that no namespace, veth,
//!   IPAM allocation or cache file is left;
//! * `ping`: every target from the probe and from the host, all at once ([`super::ping`]);
//! * `diagnose`: route lookups, overlay neighbour/FDB entries and underlay pings for the
//!   failure causes;
//! * `find`: which network namespace holds an address (probing existing pods).

use super::iproute;
use super::model::{
    DelReport, FindReport, FoundAddr, NodeFacts, PROBE_IFNAME, PROBE_POD_NAMESPACE, Pass,
    PingSource, ProbeInfo, probe_netns,
};
use super::ping::{self, Job, Timing};
use crate::cni::runtime::{DEFAULT_BIN_DIR, DEFAULT_CACHE_DIR, DEFAULT_CONF_DIR, cache};
use crate::cni::{Attachment, Runtime};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output};

/// `installer verify probe …` (node side).
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ProbeCommand,
}

/// The node-side probe commands.
#[derive(Debug, Subcommand)]
pub enum ProbeCommand {
    /// Create a probe pod namespace through the node's CNI configuration; prints its address.
    Add(AddArgs),
    /// Remove a probe (CNI DEL, namespace); prints what was removed and what is left.
    Del(DelArgs),
    /// Ping targets from a probe and/or the host, all at once; prints the results.
    Ping(PingArgs),
    /// Gather routes, overlay neighbour/FDB entries and underlay reachability.
    Diagnose(DiagnoseArgs),
    /// Find the network namespaces holding addresses (existing pods).
    Find(FindArgs),
}

/// Where the node's CNI configuration, plugins and cache are.
#[derive(Debug, Clone, Args)]
pub struct CniDirs {
    /// The network configuration directory (containerd's conf_dir).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CONF_DIR)]
    pub conf_dir: PathBuf,
    /// Plugin directory (repeatable; searched in order).
    #[arg(long = "bin-dir", value_name = "DIR", default_values_t = [DEFAULT_BIN_DIR.to_string()])]
    pub bin_dirs: Vec<String>,
    /// libcni's cache root (results/ below it); also holds host-local's and flannel's data.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CACHE_DIR)]
    pub cache_dir: PathBuf,
}

impl CniDirs {
    fn runtime(&self) -> Runtime {
        Runtime::new(
            &self.conf_dir,
            self.bin_dirs.iter().map(PathBuf::from).collect(),
            &self.cache_dir,
        )
    }
}

/// `probe add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Probe id (CNI container id; `[a-zA-Z0-9][a-zA-Z0-9_.-]*`).
    #[arg(long)]
    pub id: String,
    #[command(flatten)]
    pub dirs: CniDirs,
}

/// `probe del`.
#[derive(Debug, Args)]
pub struct DelArgs {
    /// Probe id.
    #[arg(long)]
    pub id: String,
    #[command(flatten)]
    pub dirs: CniDirs,
    /// Host-side interfaces ADD reported (checked to be gone afterwards). Repeatable.
    #[arg(long = "host-veth", value_name = "NAME")]
    pub host_veths: Vec<String>,
}

/// `probe ping`.
#[derive(Debug, Args)]
pub struct PingArgs {
    /// Ping from this network namespace (a probe or a pod). Repeatable.
    #[arg(long = "from-netns", value_name = "NS")]
    pub from_netns: Vec<String>,
    /// Ping from the node itself too.
    #[arg(long)]
    pub from_host: bool,
    /// Addresses to ping with small packets, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "IP,…")]
    pub targets: Vec<IpAddr>,
    /// Addresses to ping with DF set and the given payload (`IP@SIZE`), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "IP@SIZE,…", value_parser = parse_sized)]
    pub mtu_targets: Vec<(IpAddr, u32)>,
    /// Echo requests per target.
    #[arg(long, default_value_t = 3)]
    pub count: u32,
    /// Seconds between requests.
    #[arg(long, default_value_t = 0.2)]
    pub interval: f64,
    /// Seconds to wait for a reply.
    #[arg(long, default_value_t = 1)]
    pub timeout: u32,
    /// Payload of the small pings.
    #[arg(long, default_value_t = 56)]
    pub size: u32,
}

/// `probe diagnose`.
#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    /// Addresses to look routes up for, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "IP,…")]
    pub route_to: Vec<IpAddr>,
    /// Overlay device whose neighbour and FDB entries to read (e.g. flannel.1).
    #[arg(long, value_name = "DEV")]
    pub dev: Option<String>,
    /// Peer node addresses to ping in the underlay, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "IP,…")]
    pub reach: Vec<IpAddr>,
}

/// `probe find`.
#[derive(Debug, Args)]
pub struct FindArgs {
    /// Addresses to look for, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "IP,…")]
    pub ips: Vec<IpAddr>,
}

fn parse_sized(text: &str) -> Result<(IpAddr, u32), String> {
    let (ip, size) = text
        .rsplit_once('@')
        .ok_or_else(|| format!("{text:?}: expected IP@SIZE"))?;
    let ip = ip
        .parse()
        .map_err(|_| format!("{ip:?} is not an IP address"))?;
    let size = size
        .parse()
        .map_err(|_| format!("{size:?} is not a payload size"))?;
    Ok((ip, size))
}

/// Run a node-side probe command.
pub fn run(args: ProbeArgs) -> Result<ExitCode> {
    let json = match args.command {
        ProbeCommand::Add(a) => serde_json::to_string(&add(&a.id, &a.dirs)?)?,
        ProbeCommand::Del(a) => serde_json::to_string(&del(&a.id, &a.dirs, &a.host_veths))?,
        ProbeCommand::Ping(a) => serde_json::to_string(&ping(&a)?)?,
        ProbeCommand::Diagnose(a) => serde_json::to_string(&diagnose(&a)?)?,
        ProbeCommand::Find(a) => serde_json::to_string(&find(&a.ips)?)?,
    };
    println!("{json}");
    Ok(ExitCode::SUCCESS)
}

/// Run `ip ARGS…` (or another iproute2 tool), returning its output whatever the status.
fn tool(program: &str, args: &[&str]) -> Result<Output> {
    Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .with_context(|| format!("running {program} (is iproute2 installed on this node?)"))
}

/// Run a tool that must succeed; its stdout.
fn tool_ok(program: &str, args: &[&str]) -> Result<String> {
    let out = tool(program, args)?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// `probe add`: make the probe, or leave nothing behind and fail.
pub fn add(id: &str, dirs: &CniDirs) -> Result<ProbeInfo> {
    crate::cni::skel::validate_container_id(id)
        .map_err(|e| anyhow::anyhow!("probe id {id:?}: {e}"))?;
    let ns = probe_netns(id);
    let path = netns_path(&ns);
    if path.exists() {
        bail!(
            "network namespace {ns} already exists (a probe of an earlier run?); remove it with `installer verify probe del --id {id}`"
        );
    }
    tool_ok("ip", &["netns", "add", &ns])?;
    let rt = dirs.runtime();
    let attachment = Attachment::new(id, &path, PROBE_IFNAME).with_pod(PROBE_POD_NAMESPACE, id);
    let made = rt
        .add(&attachment)
        .map_err(anyhow::Error::from)
        .and_then(|result| describe(id, &ns, &rt, &result));
    match made {
        Ok(info) => Ok(info),
        Err(e) => {
            // ADD already undid its own plugins on failure; a later failure needs a DEL.
            let _ = rt.del(&attachment);
            let _ = tool("ip", &["netns", "delete", &ns]);
            Err(e.context(format!(
                "creating the probe pod through the CNI configuration in {}",
                dirs.conf_dir.display()
            )))
        }
    }
}

/// The probe's description from the ADD result and the namespace.
fn describe(id: &str, ns: &str, rt: &Runtime, result: &crate::cni::CniResult) -> Result<ProbeInfo> {
    let addr = result
        .container_addresses()
        .into_iter()
        .next()
        .context("the CNI result assigns no address to the pod")?;
    let gateway = result
        .ips
        .iter()
        .find(|i| i.address == addr)
        .and_then(|i| i.gateway);
    let host_interfaces: Vec<String> = result
        .interfaces
        .iter()
        .filter(|i| i.sandbox.as_deref().is_none_or(str::is_empty))
        .map(|i| i.name.clone())
        .collect();
    let mtu = iproute::parse_link_mtu(&tool_ok(
        "ip",
        &["-n", ns, "-o", "link", "show", "dev", PROBE_IFNAME],
    )?)
    .context("reading the MTU of the probe's interface")?;
    let host_addrs = host_addresses(&host_interfaces)?;
    Ok(ProbeInfo {
        id: id.to_string(),
        netns: ns.to_string(),
        ifname: PROBE_IFNAME.to_string(),
        ip: addr.addr(),
        prefix_len: addr.prefix_len(),
        gateway,
        mtu,
        network: rt.network().map(|n| n.name).unwrap_or_default(),
        host_interfaces,
        host_addrs,
    })
}

/// The node's global addresses, except those on the pod bridge and overlay devices.
fn host_addresses(pod_side: &[String]) -> Result<Vec<IpAddr>> {
    let text = tool_ok("ip", &["-o", "addr", "show", "scope", "global"])?;
    Ok(iproute::parse_addrs(&text)
        .into_iter()
        .filter(|(dev, _, _)| !pod_side.contains(dev) && !dev.starts_with("flannel"))
        .map(|(_, ip, _)| ip)
        .collect())
}

/// `probe del`: CNI DEL (even when the namespace is gone), namespace removal, then what is left.
pub fn del(id: &str, dirs: &CniDirs, host_veths: &[String]) -> DelReport {
    let mut report = DelReport::default();
    if let Err(e) = crate::cni::skel::validate_container_id(id) {
        report.errors.push(format!("probe id {id:?}: {e}"));
        return report;
    }
    let ns = probe_netns(id);
    let path = netns_path(&ns);
    let rt = dirs.runtime();
    let mut attachment = Attachment::new(id, &path, PROBE_IFNAME).with_pod(PROBE_POD_NAMESPACE, id);
    if !path.exists() {
        attachment.netns = None;
    }
    let network = rt.network().ok().map(|n| n.name);
    let cached = network
        .as_deref()
        .map(|n| cache::path(&dirs.cache_dir, n, &attachment));
    let had_attachment = cached.as_ref().is_some_and(|p| p.exists());
    match rt.del(&attachment) {
        Ok(()) if had_attachment => report.removed.push(format!(
            "CNI attachment {id}/{PROBE_IFNAME} (network {:?})",
            network.clone().unwrap_or_default()
        )),
        Ok(()) => {}
        Err(e) => report.errors.push(format!("CNI DEL: {e}")),
    }
    if path.exists() {
        match tool("ip", &["netns", "delete", &ns]) {
            Ok(out) if out.status.success() => report.removed.push(format!("netns {ns}")),
            Ok(out) => report.errors.push(format!(
                "ip netns delete {ns}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => report.errors.push(format!("{e:#}")),
        }
    }
    report.leftovers = leftovers(id, &ns, dirs, host_veths, cached.as_deref());
    report
}

/// Everything of probe `id` still on the node.
fn leftovers(
    id: &str,
    ns: &str,
    dirs: &CniDirs,
    host_veths: &[String],
    cached: Option<&Path>,
) -> Vec<String> {
    let mut left = Vec::new();
    if netns_path(ns).exists() {
        left.push(format!("netns {ns}"));
    }
    for veth in host_veths {
        // the bridge is shared by every pod; only the probe's own veth must go
        if veth.starts_with("veth")
            && tool("ip", &["link", "show", "dev", veth]).is_ok_and(|o| o.status.success())
        {
            left.push(format!("veth {veth}"));
        }
    }
    if let Some(p) = cached.filter(|p| p.exists()) {
        left.push(format!("CNI result cache {}", p.display()));
    }
    let flannel_saved = dirs.cache_dir.join("flannel").join(id);
    if flannel_saved.exists() {
        left.push(format!(
            "flannel delegate config {}",
            flannel_saved.display()
        ));
    }
    // host-local keeps one file per address holding the container id on its first line
    if let Ok(networks) = std::fs::read_dir(dirs.cache_dir.join("networks")) {
        for net in networks.flatten() {
            let Ok(files) = std::fs::read_dir(net.path()) else {
                continue;
            };
            for f in files.flatten() {
                let owner = std::fs::read_to_string(f.path()).unwrap_or_default();
                if owner.lines().next().map(str::trim) == Some(id) {
                    left.push(format!("IPAM allocation {}", f.path().display()));
                }
            }
        }
    }
    left
}

/// `probe ping`: every target from every source at once. A probe does not ping its own address.
pub fn ping(args: &PingArgs) -> Result<Vec<crate::verify::model::PingResult>> {
    let mut sources: Vec<(PingSource, BTreeSet<IpAddr>)> = Vec::new();
    for ns in &args.from_netns {
        let text = tool_ok("ip", &["-n", ns, "-o", "addr", "show"])
            .with_context(|| format!("network namespace {ns}"))?;
        let own = iproute::parse_addrs(&text)
            .into_iter()
            .map(|(_, ip, _)| ip)
            .collect();
        sources.push((PingSource::Netns(ns.clone()), own));
    }
    if args.from_host {
        sources.push((PingSource::Host, BTreeSet::new()));
    }
    let mut jobs = Vec::new();
    for (source, own) in &sources {
        for target in args.targets.iter().filter(|t| !own.contains(t)) {
            jobs.push(Job {
                source: source.clone(),
                target: *target,
                pass: Pass::Reach,
                size: args.size,
                df: false,
            });
        }
        for (target, size) in args.mtu_targets.iter().filter(|(t, _)| !own.contains(t)) {
            jobs.push(Job {
                source: source.clone(),
                target: *target,
                pass: Pass::Mtu,
                size: *size,
                df: true,
            });
        }
    }
    let timing = Timing {
        count: args.count.max(1),
        interval: args.interval,
        timeout: args.timeout.max(1),
    };
    Ok(ping::run_all(&jobs, &timing))
}

/// `probe diagnose`.
pub fn diagnose(args: &DiagnoseArgs) -> Result<NodeFacts> {
    let mut facts = NodeFacts::default();
    for dst in &args.route_to {
        let out = tool("ip", &["route", "get", &dst.to_string()])?;
        facts.routes.push(iproute::parse_route_get(
            *dst,
            out.status.success(),
            &String::from_utf8_lossy(&out.stdout),
            &String::from_utf8_lossy(&out.stderr),
        ));
    }
    if let Some(dev) = &args.dev {
        facts.dev = Some(dev.clone());
        facts.dev_exists = tool("ip", &["link", "show", "dev", dev])?.status.success();
        if facts.dev_exists {
            facts.neighbours =
                iproute::parse_neigh(&tool_ok("ip", &["neigh", "show", "dev", dev])?);
            facts.fdb = iproute::parse_fdb(&tool_ok("bridge", &["fdb", "show", "dev", dev])?);
        }
    }
    let jobs: Vec<Job> = args
        .reach
        .iter()
        .map(|ip| Job {
            source: PingSource::Host,
            target: *ip,
            pass: Pass::Reach,
            size: 56,
            df: false,
        })
        .collect();
    let timing = Timing {
        count: 2,
        interval: 0.2,
        timeout: 1,
    };
    facts.reach = ping::run_all(&jobs, &timing);
    Ok(facts)
}

/// `probe find`: which namespace under /run/netns holds each address, and the node's own
/// addresses.
pub fn find(ips: &[IpAddr]) -> Result<FindReport> {
    let mut report = FindReport {
        found: find_in_netns(ips)?,
        host_addrs: Vec::new(),
    };
    let bridges: Vec<String> = tool_ok("ip", &["-o", "link", "show", "type", "bridge"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|n| n.trim_end_matches(':').to_string())
        .collect();
    report.host_addrs = host_addresses(&bridges)?;
    Ok(report)
}

fn find_in_netns(ips: &[IpAddr]) -> Result<Vec<FoundAddr>> {
    if ips.is_empty() {
        return Ok(Vec::new());
    }
    let list = tool_ok("ip", &["netns", "list"])?;
    let mut found = Vec::new();
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Ok(text) = tool_ok("ip", &["-n", ns, "-o", "addr", "show"]) else {
            continue;
        };
        for (ifname, ip, prefix_len) in iproute::parse_addrs(&text) {
            if !ips.contains(&ip) || found.iter().any(|f: &FoundAddr| f.ip == ip) {
                continue;
            }
            let mtu = tool_ok("ip", &["-n", ns, "-o", "link", "show", "dev", &ifname])
                .ok()
                .and_then(|t| iproute::parse_link_mtu(&t))
                .unwrap_or(0);
            found.push(FoundAddr {
                ip,
                netns: ns.to_string(),
                ifname,
                prefix_len,
                mtu,
            });
        }
    }
    Ok(found)
}
