//! `installer agent`: the embedded flannel-compatible network agent that runs on every node
//! (flannel-spec §1, §2, §4–§7). It reads the network config, picks the external interface,
//! acquires a subnet lease from the datastore, programs the vxlan or host-gw datapath for every
//! peer, keeps flannel's iptables rules in place and writes `/run/flannel/subnet.env` for the CNI
//! plugin — the same files, keys, devices, routes and rules flanneld produces.
//!
//! ```text
//! settings ─ config file + flags        netconf ─ §2 parsing/validation
//! datastore/{etcd,kube} ─ leases, peers  lease ─ attrs, keys, allocation, peer tracker
//! iface ─ interface choice (§7)          backend/{vxlan,hostgw} ─ per-peer kernel entries
//! netlink ─ rtnetlink facade             iptables ─ §6 rules, resync
//! subnet_env ─ §1 file                   health ─ /healthz, /readyz
//! daemon ─ startup order and event loop  clean ─ `installer agent clean`
//! ```

pub mod backend;
pub mod clean;
pub mod daemon;
pub mod datastore;
pub mod health;
pub mod iface;
pub mod iptables;
pub mod lease;
pub mod log;
pub mod netconf;
pub mod netlink;
pub mod settings;
pub mod subnet_env;

pub use clean::{CleanReport, clean};
pub use settings::{AgentOptions, DatastoreKind, Settings};

use clap::Subcommand;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use thiserror::Error;

/// Why the agent stopped with exit code 1.
#[derive(Debug, Error)]
pub enum AgentError {
    /// Bad settings.
    #[error(transparent)]
    Settings(#[from] settings::SettingsError),
    /// Datastore failure that retrying will not fix.
    #[error(transparent)]
    Datastore(#[from] datastore::DatastoreError),
    /// No usable interface.
    #[error(transparent)]
    Iface(#[from] iface::IfaceError),
    /// Kernel refused something.
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
    /// Backend setup failed.
    #[error("Error registering network: {0}")]
    Backend(#[from] backend::BackendError),
    /// iptables failed.
    #[error("Failed to set up iptables rules: {0}")]
    Iptables(#[from] iptables::IptablesError),
    /// The healthz address cannot be bound.
    #[error("cannot serve /healthz on {0}: {1} (is another agent running, or the port taken?)")]
    Healthz(SocketAddr, std::io::Error),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The peer watch task ended (a bug).
    #[error("the peer watch stopped unexpectedly")]
    WatchEnded,
}

/// `installer agent [clean] [options]`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Run the flannel-compatible network agent on this node (or clean up after it)",
    long_about = "Run the embedded flannel-compatible network agent: acquire this node's subnet \
                  lease, program the vxlan or host-gw datapath for every peer, keep flannel's \
                  iptables rules and write /run/flannel/subnet.env. SIGTERM/SIGINT stop it and \
                  leave the datapath in place, as flanneld does."
)]
pub struct AgentArgs {
    /// Optional action (default: run the agent).
    #[command(subcommand)]
    pub action: Option<AgentAction>,
    /// Options (flanneld flag names).
    #[command(flatten)]
    pub options: AgentOptions,
}

/// `installer agent` actions.
#[derive(Debug, Subcommand)]
pub enum AgentAction {
    /// Remove what the agent set up: flannel.* devices, its routes, iptables chains, subnet.env
    /// and this node's lease in etcd. Stop the agent first.
    Clean,
}

fn runtime() -> Result<tokio::runtime::Runtime, AgentError> {
    // one TLS provider for etcd's and kube's rustls (ring, as the rest of the binary)
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)
}

/// Run the agent with resolved settings (blocking); exit code 0 on a signal or revocation.
pub fn run_agent(settings: Settings) -> Result<ExitCode, AgentError> {
    if let Some(dir) = &settings.log_dir
        && let Err(e) = log::to_dir(dir)
    {
        log::warning!("Cannot write a log file in {}: {e}", dir.display());
    }
    log::info!(
        "installer agent {} starting (node {:?}, datastore {:?})",
        env!("CARGO_PKG_VERSION"),
        settings.node_name,
        settings.datastore
    );
    let rt = runtime()?;
    rt.block_on(async move {
        let signals = daemon::Signals::install()?;
        match settings.datastore {
            DatastoreKind::Etcd => {
                let ds =
                    datastore::etcd::EtcdDatastore::connect(&settings.etcd, settings.lease_ttl)
                        .await?;
                daemon::run(Arc::new(ds), settings, signals).await
            }
            DatastoreKind::Kubernetes => {
                let ks = datastore::kube::KubeSettings::from_settings(&settings);
                let ds = datastore::kube::KubeDatastore::connect(&ks).await?;
                log::info!("Kubernetes datastore: node {}", ds.node_name());
                daemon::run(Arc::new(ds), settings, signals).await
            }
        }
    })
}

/// Clean up with resolved settings (blocking).
pub fn run_clean(settings: &Settings) -> Result<CleanReport, AgentError> {
    Ok(runtime()?.block_on(clean(settings)))
}

/// `installer agent …` entry point.
pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let settings = match Settings::resolve(&args.options) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    match args.action {
        None => match run_agent(settings) {
            Ok(code) => Ok(code),
            Err(e) => {
                log::error!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
        Some(AgentAction::Clean) => {
            let report = run_clean(&settings)?;
            for r in &report.removed {
                println!("removed {r}");
            }
            if report.removed.is_empty() {
                println!("nothing to remove");
            }
            for e in &report.errors {
                eprintln!("error: {e}");
            }
            Ok(if report.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
