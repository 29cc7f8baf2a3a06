//! `lab up`: allocate an index, then build the LAN, the nodes, etcd, the mirror and the
//! inventory. Any failure tears down what was made.

use super::error::{LabError, Result};
use super::prereq::{self, Probe, Tools};
use super::state::{self, Lab, LabNode, NODE_PRIVATE_PATHS, Phase};
use super::{down, etcd, inventory, mirror, node, plan, status, sys};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How the artifact mirror runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorMode {
    /// A detached daemon: `<installer> lab serve-mirror`, outliving the process that made the lab
    /// (what the `lab up` command uses).
    Daemon(PathBuf),
    /// A thread of the current process; it stops with the process (what test guards use).
    InProcess,
}

/// What `lab up` should make.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Lab name.
    pub name: String,
    /// Node count (1‥[`plan::MAX_NODES`]).
    pub nodes: usize,
    /// How the artifact mirror runs.
    pub mirror: MirrorMode,
}

impl UpOptions {
    /// A lab whose mirror runs inside this process.
    pub fn new(name: impl Into<String>, nodes: usize) -> Self {
        UpOptions {
            name: name.into(),
            nodes,
            mirror: MirrorMode::InProcess,
        }
    }
}

/// Result of `lab up`.
#[derive(Debug, Clone)]
pub struct UpReport {
    /// The lab.
    pub lab: Lab,
    /// It existed already and was healthy, so nothing was made.
    pub reused: bool,
    /// How long `up` took.
    pub elapsed: Duration,
}

impl Lab {
    /// Bring a lab up (or return the healthy lab of that name); see [`Lab::up_report`].
    pub fn up(opts: &UpOptions) -> Result<Lab> {
        Ok(Lab::up_report(opts)?.lab)
    }

    /// Bring a lab up. A healthy lab of the same name and size is reused; a broken or half-made
    /// one (a crash) is torn down and rebuilt. On failure everything made is removed again.
    pub fn up_report(opts: &UpOptions) -> Result<UpReport> {
        let start = Instant::now();
        if !plan::valid_name(&opts.name) {
            return Err(LabError::InvalidName(opts.name.clone()));
        }
        if opts.nodes == 0 || opts.nodes > plan::MAX_NODES {
            return Err(LabError::NodeCount {
                nodes: opts.nodes,
                max: plan::MAX_NODES,
            });
        }
        if !prereq::is_root() {
            return Err(LabError::NotRoot);
        }
        let tools = Probe::system().check()?;

        match Lab::load(&opts.name) {
            Ok(lab)
                if lab.phase == Phase::Up
                    && lab.nodes.len() == opts.nodes
                    && status::check(&lab).healthy() =>
            {
                return Ok(UpReport {
                    lab,
                    reused: true,
                    elapsed: start.elapsed(),
                });
            }
            _ => {
                down::down_by_name(&opts.name)?;
            }
        }

        let mut lab = allocate(opts)?;
        match build(&tools, &mut lab, &opts.mirror) {
            Ok(()) => Ok(UpReport {
                lab,
                reused: false,
                elapsed: start.elapsed(),
            }),
            Err(err) => {
                if let Err(cleanup) = down::down_by_name(&lab.name) {
                    eprintln!("warning: cleaning up the failed lab: {cleanup}");
                }
                Err(err)
            }
        }
    }
}

/// Describe a lab from its parameters (pure; the same description `lab up` records).
pub fn describe_lab(
    name: &str,
    index: u8,
    nodes: usize,
    pod_block: (u8, u8),
    cni_version: &str,
) -> Lab {
    let state_dir = Lab::dir_of(name);
    let deploy_ip = plan::deploy_ip(index);
    let nodes: Vec<LabNode> = (1..=nodes)
        .map(|i| {
            let node_name = plan::node_name(index, i);
            LabNode {
                dir: state_dir.join("nodes").join(&node_name),
                name: node_name,
                number: i,
                ip: plan::node_ip(index, i),
                netns: plan::node_netns(index, i),
                groups: if i == 1 {
                    vec!["etcd".into(), "kube_master".into(), "kube_node".into()]
                } else {
                    vec!["kube_node".into()]
                },
            }
        })
        .collect();
    let mirror_url = format!("http://{deploy_ip}:{}/", plan::MIRROR_PORT);
    let cni_tarball_name = mirror::tarball_name(cni_version);
    Lab {
        name: name.to_string(),
        index,
        phase: Phase::Creating,
        deploy_ip,
        gateway_ip: plan::gateway_ip(index),
        node_cidr: plan::node_subnet(index).to_string(),
        cluster_cidr: plan::cluster_cidr(pod_block.0, pod_block.1).to_string(),
        service_cidr: plan::service_cidr(index).to_string(),
        pod_block,
        etcd_endpoint: format!(
            "http://{}:{}",
            plan::node_ip(index, 1),
            plan::ETCD_CLIENT_PORT
        ),
        nodes,
        bridge_netns: plan::bridge_netns(index),
        host_link: plan::host_link(index),
        key_path: state_dir.join("id_ed25519"),
        pub_key_path: state_dir.join("id_ed25519.pub"),
        known_hosts_path: state_dir.join("known_hosts"),
        inventory_path: state_dir.join("hosts"),
        mirror_dir: state_dir.join("mirror"),
        cni_tarball_url: format!("{mirror_url}{cni_tarball_name}"),
        mirror_url,
        cni_version: cni_version.to_string(),
        cni_tarball_name,
        cni_sha256: String::new(),
        mirror_daemon: false,
        state_dir,
    }
}

/// Under the allocation lock: pick a free index and pod block, write the state file, create the
/// machine-wide mount points.
fn allocate(opts: &UpOptions) -> Result<Lab> {
    let _lock = state::lock()?;
    let labs = state::all_labs();
    let mut used: BTreeSet<u8> = labs.iter().map(|l| l.index).collect();
    used.extend(down::indexes_in_use());
    let no_slot = || LabError::NoFreeSlot {
        nodes: opts.nodes,
        labs: labs.len(),
    };
    let index = (0..plan::MAX_LABS)
        .find(|x| !used.contains(x))
        .ok_or_else(no_slot)?;
    let slots = plan::pod_slots_needed(opts.nodes);
    let blocks: Vec<(u8, u8)> = labs.iter().map(|l| l.pod_block).collect();
    let first = plan::allocate_pod_block(&blocks, slots).ok_or_else(no_slot)?;
    let mut lab = describe_lab(
        &opts.name,
        index,
        opts.nodes,
        (first, slots),
        &mirror::cni_version(),
    );
    lab.mirror_daemon = matches!(opts.mirror, MirrorMode::Daemon(_));
    if lab.state_dir.exists() {
        // `up` removed any old lab of this name before taking the lock
        return Err(LabError::Busy(opts.name.clone()));
    }
    sys::mkdir(&lab.state_dir)?;
    lab.save()?;
    for path in NODE_PRIVATE_PATHS.iter().chain(["/run/sshd"].iter()) {
        state::create_recorded_dir(Path::new(path))?;
    }
    Ok(lab)
}

fn build(tools: &Tools, lab: &mut Lab, mirror_mode: &MirrorMode) -> Result<()> {
    for dir in [
        lab.log_dir(),
        lab.mirror_dir.clone(),
        lab.state_dir.join("kubeasz"),
        lab.state_dir.join("nodes"),
    ] {
        sys::mkdir(&dir)?;
    }
    sys::run(
        Command::new(&tools.ssh_keygen)
            .args(["-q", "-t", "ed25519", "-N", ""])
            .arg("-C")
            .arg(format!("installer-lab-{}", lab.name))
            .arg("-f")
            .arg(&lab.key_path),
    )?;
    create_lan(tools, lab)?;

    // nodes in parallel, a few at a time
    let lab_ref: &Lab = lab;
    for chunk in lab_ref.nodes.chunks(8) {
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|n| scope.spawn(move || build_node(tools, lab_ref, n)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(panicked())))
                .collect::<Result<Vec<()>>>()
        })?;
    }
    write_known_hosts(lab)?;

    etcd::start(tools, lab)?;

    lab.cni_sha256 = mirror::build_tarball(tools, &lab.mirror_dir, &lab.cni_tarball_name)?;
    let port = mirror::free_port(lab.deploy_ip)?;
    lab.set_mirror_port(port);
    lab.save()?;
    let listen = format!("{}:{port}", lab.deploy_ip);
    match mirror_mode {
        MirrorMode::Daemon(installer) => {
            mirror::start_daemon(tools, lab, installer, &listen)?;
        }
        MirrorMode::InProcess => mirror::start_in_process(lab, &listen)?,
    }

    sys::write_atomic(&lab.inventory_path, inventory::render(lab).as_bytes())?;
    lab.phase = Phase::Up;
    lab.save()
}

fn panicked() -> LabError {
    LabError::Spawn {
        program: "node setup thread".into(),
        error: std::io::Error::other("panicked"),
    }
}

/// The bridge namespace with `br0` (carrying the dead-end gateway address, forwarding off) and
/// the deploy-side veth into it. Both bridge and veth carry the lab name as interface alias.
fn create_lan(tools: &Tools, lab: &Lab) -> Result<()> {
    let ip = |args: &[&str]| sys::run(Command::new(&tools.ip).args(args)).map(drop);
    let br = lab.bridge_netns.as_str();
    let alias = plan::link_alias(&lab.name);
    let peer = plan::host_link_peer(lab.index);
    ip(&["netns", "add", br])?;
    ip(&["-n", br, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", br, "link", "set", "br0", "alias", &alias])?;
    sys::run(Command::new(&tools.ip).args([
        "netns",
        "exec",
        br,
        "sh",
        "-c",
        "echo 0 > /proc/sys/net/ipv4/ip_forward",
    ]))?;
    ip(&["-n", br, "link", "set", "lo", "up"])?;
    ip(&[
        "-n",
        br,
        "addr",
        "add",
        &format!("{}/24", lab.gateway_ip),
        "dev",
        "br0",
    ])?;
    ip(&["-n", br, "link", "set", "br0", "up"])?;
    ip(&[
        "link",
        "add",
        &lab.host_link,
        "type",
        "veth",
        "peer",
        "name",
        &peer,
        "netns",
        br,
    ])?;
    ip(&["link", "set", &lab.host_link, "alias", &alias])?;
    ip(&[
        "addr",
        "add",
        &format!("{}/24", lab.deploy_ip),
        "dev",
        &lab.host_link,
    ])?;
    ip(&["link", "set", &lab.host_link, "up"])?;
    ip(&["-n", br, "link", "set", &peer, "master", "br0", "up"])?;
    Ok(())
}

fn build_node(tools: &Tools, lab: &Lab, n: &LabNode) -> Result<()> {
    node::prepare_files(tools, lab, n)?;
    node::create_network(tools, lab, n)?;
    node::start_holder(tools, lab, n)?;
    node::start_sshd(tools, lab, n)?;
    Ok(())
}

/// Write the lab's known_hosts from the nodes' current host keys.
pub fn write_known_hosts(lab: &Lab) -> Result<()> {
    let mut text = String::new();
    for n in &lab.nodes {
        text.push_str(&node::known_hosts_line(n)?);
        text.push('\n');
    }
    sys::write_atomic(&lab.known_hosts_path, text.as_bytes())
}
