//! The command line of the node binary (`installer-node`): only what runs on the nodes.
//!
//! `installer setup` pushes this build to every node as `/opt/kube/bin/installer`. It holds the
//! agent, the CNI plugin (when run as `flannel`), and the helpers the service scripts call,
//! and none of the deploy side (SSH, templates, inventory, downloads), so it is smaller to
//! upload and the long-running agent maps fewer pages. The full `installer` has the same
//! subcommands with the same arguments.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// File name of the node build, looked for next to the running `installer`.
pub const NODE_BINARY_NAME: &str = "installer-node";

/// The node side of installer: network agent, CNI plugin and service helpers.
#[derive(Debug, Parser)]
#[command(name = "installer", version, about, propagate_version = true)]
pub struct NodeCli {
    /// What to do.
    #[command(subcommand)]
    pub command: NodeCommand,
}

/// The subcommands used on nodes (the same as the full binary's).
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Keep a command running with a pid file and log (hosts without systemd).
    #[command(hide = true)]
    Supervise(crate::supervise::SuperviseArgs),
    /// Exit 0 when an http:// URL answers 200 (readiness probe on nodes).
    #[command(hide = true)]
    ProbeHttp(crate::supervise::ProbeArgs),
    /// The node network agent (flannel-compatible).
    Agent(Box<crate::agent::AgentArgs>),
}

/// Parse arguments, run the command, and turn errors into a message and exit code 1.
pub fn main() -> ExitCode {
    crate::artifact::ensure_crypto_provider();
    let cli = NodeCli::parse();
    let result = match cli.command {
        NodeCommand::Supervise(args) => crate::supervise::run(args),
        NodeCommand::ProbeHttp(args) => crate::supervise::probe_http(args),
        NodeCommand::Agent(args) => crate::agent::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
