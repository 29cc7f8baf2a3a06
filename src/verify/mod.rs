//! `installer verify ping-mesh`: prove every pod-network path between the nodes.
//!
//! A probe pod is made on every selected node through that node's own CNI configuration (the
//! same loopback + conflist chain kubelet/containerd run), so the check covers the real datapath
//! (bridge, flannel routes or overlay, MTU) and needs no Kubernetes scheduler. From every probe
//! and from every node itself, every probe is pinged, all at once; a second pass sends the
//! largest packet the pod MTU allows with DF set, to catch MTU black holes. Failing pairs get a
//! likely cause from the routing, neighbour and FDB state of both nodes. Probes are always
//! removed, also after Ctrl-C or a failure.
//!
//! * [`mesh`]: the deploy side (connect, phases, cleanup guard);
//! * [`node`]: the hidden node-side commands (`installer verify probe add|del|ping|diagnose|find`)
//!   run with the node binary over SSH;
//! * [`ping`], [`iproute`]: running ping and reading iputils/iproute2 output;
//! * [`diagnose`]: failure causes; [`report`]: matrix, summary, JSON;
//! * [`kube`]: `--pods SELECTOR` (existing pods listed through the Kubernetes API);
//! * [`model`]: the JSON both sides exchange.

pub mod diagnose;
pub mod iproute;
pub mod kube;
pub mod mesh;
pub mod model;
pub mod node;
pub mod ping;
pub mod report;

use crate::cli::{OutputFormat, Project, SourceArgs};
use crate::remote::{ConnDefaults, HostKeyPolicy};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// `installer verify …`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// What to verify.
    #[command(subcommand)]
    pub command: VerifyCommand,
}

/// The verify subcommands.
#[derive(Debug, Subcommand)]
pub enum VerifyCommand {
    /// Ping every pod-network path between the nodes (pod → pod, node → pod, MTU-sized too).
    PingMesh(PingMeshArgs),
    /// Node side of ping-mesh, run over SSH by the deploy host.
    #[command(hide = true)]
    Probe(node::ProbeArgs),
}

/// `installer verify ping-mesh`.
#[derive(Debug, Args)]
pub struct PingMeshArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Only nodes matching this Ansible host pattern.
    #[arg(short = 'l', long, value_name = "PATTERN")]
    pub limit: Option<String>,
    /// Nodes worked on at once (default: ansible.cfg forks, else 50).
    #[arg(short = 'f', long)]
    pub forks: Option<usize>,
    /// Output: the matrix and summary, or one JSON document.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Also print each node's routing table (`ip route`).
    #[arg(long)]
    pub show_routes: bool,
    /// Echo requests per pair and pass.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub count: u32,
    /// Seconds to wait for a reply before a request counts as lost.
    #[arg(long, value_name = "SECS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=60))]
    pub timeout: u32,
    /// Seconds between echo requests (below 0.2 needs root on the nodes).
    #[arg(long, value_name = "SECS", default_value_t = 0.2)]
    pub interval: f64,
    /// Probe existing pods matching this label selector (through the Kubernetes API) instead of
    /// making probe pods.
    #[arg(long, value_name = "SELECTOR")]
    pub pods: Option<String>,
    /// Only pods of this namespace (with --pods; default: every namespace).
    #[arg(long, value_name = "NS", requires = "pods")]
    pub namespace: Option<String>,
    /// kubeconfig for the Kubernetes API with --pods (default: $KUBECONFIG, a colon-separated
    /// list, else ~/.kube/config).
    #[arg(long, value_name = "FILE", requires = "pods")]
    pub kubeconfig: Option<PathBuf>,
    /// known_hosts file (as for setup).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// What to do with unknown host keys.
    #[arg(long, value_enum)]
    pub host_key_policy: Option<HostKeyPolicy>,
}

/// Run a verify subcommand.
pub fn run(args: VerifyArgs) -> Result<ExitCode> {
    match args.command {
        VerifyCommand::PingMesh(a) => ping_mesh(a),
        VerifyCommand::Probe(a) => node::run(a),
    }
}

/// Exit status when Ctrl-C or SIGTERM stopped the run (after cleanup).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Set on the first SIGINT/SIGTERM; a second one exits at once.
fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // order matters: the shutdown only fires when the flag was already set
        signal_hook::flag::register_conditional_shutdown(
            sig,
            i32::from(EXIT_INTERRUPTED),
            flag.clone(),
        )
        .context("installing a signal handler")?;
        signal_hook::flag::register(sig, flag.clone()).context("installing a signal handler")?;
    }
    Ok(flag)
}

fn ping_mesh(args: PingMeshArgs) -> Result<ExitCode> {
    if !(args.interval > 0.0 && args.interval <= 10.0) {
        bail!(
            "--interval {} must be more than 0 and at most 10 seconds",
            args.interval
        );
    }
    let project = Project::load(&args.source, "flannel")?;
    let cluster = project.cluster()?;
    let nodes = crate::setup::selected_nodes(&project, &cluster, args.limit.as_deref())?;
    let defaults = ConnDefaults::load()?;
    let conf_dir = std::path::Path::new(crate::network::flannel::CNI_CONFLIST_PATH)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| crate::cni::runtime::DEFAULT_CONF_DIR.to_string());
    let mut targets = Vec::new();
    for node in &nodes {
        let vars = &project.vars;
        let bin_dir = vars.resolve_string(&node.host, "bin_dir")?;
        let cni_bin_dir = vars.resolve_string(&node.host, "CNI_BIN_DIR")?;
        targets.push(mesh::NodeTarget {
            node: (*node).clone(),
            spec: crate::setup::connection_spec(&project, &node.host, &defaults)?,
            binary: format!("{}/installer", bin_dir.trim_end_matches('/')),
            conf_dir: conf_dir.clone(),
            cni_bin_dir: cni_bin_dir.trim_end_matches('/').to_string(),
            cache_dir: crate::cni::runtime::DEFAULT_CACHE_DIR.to_string(),
        });
    }
    let mode = match &args.pods {
        None => mesh::Mode::Probes,
        Some(selector) => {
            let pods = kube::pods_for_selector(
                args.kubeconfig.as_deref(),
                selector,
                args.namespace.as_deref(),
            )?;
            if pods.is_empty() {
                bail!("no running pod-network pod matches --pods {selector:?}");
            }
            mesh::Mode::Pods(pods)
        }
    };
    let opts = mesh::MeshOptions {
        forks: defaults.forks(args.forks),
        timing: ping::Timing {
            count: args.count,
            interval: args.interval,
            timeout: args.timeout,
        },
        show_routes: args.show_routes,
        backend: cluster.backend.clone(),
        connect: crate::setup::connect_options(
            &project,
            &nodes[0].host,
            &defaults,
            args.known_hosts.as_ref(),
            args.host_key_policy,
        ),
    };
    let interrupt = interrupt_flag()?;
    let outcome = mesh::run(targets, &opts, mode, &interrupt);
    let text = match args.output {
        OutputFormat::Text => report::text(&outcome),
        OutputFormat::Json => format!("{:#}\n", report::json(&outcome)),
    };
    {
        use std::io::Write as _;
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
    }
    Ok(if outcome.interrupted {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if outcome.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
