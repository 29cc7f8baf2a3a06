//! The command line of the node binary (`installer-node`): only what runs on the nodes.
//!
//! `installer setup` pushes this build to every node as `/opt/kube/bin/installer`. It holds the
//! agent, the CNI plugin (when run as `flannel`), the helpers the service scripts call and the
//! node side of `verify ping-mesh`, and none of the deploy side (SSH, templates, inventory,
//! downloads), so it is smaller to upload and the long-running agent maps fewer pages. The
//! full `installer` has the same subcommands with the same arguments.

use clap::{Args, Parser, Subcommand};
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
    /// The node side of `installer verify ping-mesh` (probe pods), run over SSH.
    #[command(hide = true)]
    Verify(NodeVerifyArgs),
}

/// `installer verify …` on a node: only the node side of ping-mesh.
#[derive(Debug, Args)]
pub struct NodeVerifyArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: NodeVerifyCommand,
}

/// The verify subcommands a node runs.
#[derive(Debug, Subcommand)]
pub enum NodeVerifyCommand {
    /// Probe pods for ping-mesh: add, del, ping, diagnose, find.
    Probe(crate::verify::node::ProbeArgs),
}

/// Parse arguments, run the command, and turn errors into a message and exit code 1.
pub fn main() -> ExitCode {
    crate::artifact::ensure_crypto_provider();
    let cli = NodeCli::parse();
    let result = match cli.command {
        NodeCommand::Supervise(args) => crate::supervise::run(args),
        NodeCommand::ProbeHttp(args) => crate::supervise::probe_http(args),
        NodeCommand::Agent(args) => crate::agent::run(*args),
        NodeCommand::Verify(NodeVerifyArgs {
            command: NodeVerifyCommand::Probe(args),
        }) => crate::verify::node::run(args),
    };
    crate::cli::exit_code(result)
}
