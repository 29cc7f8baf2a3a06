//! Command-line interface: argument types and dispatch.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// kubeasz-style Kubernetes network installs without Ansible.
#[derive(Debug, Parser)]
#[command(name = "installer", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A local lab of real SSH hosts in network namespaces.
    Lab(crate::lab::LabArgs),
}

/// Parse arguments, run the command, and turn errors into a message and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lab(args) => crate::lab::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
