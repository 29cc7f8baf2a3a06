//! A local lab of real SSH hosts on this machine, for tests, demos and benchmarks.
//!
//! `installer lab up` makes N nodes (default 3), each a network namespace on a private bridge
//! with its own sshd, hostname and view of `/opt/kube`, `/opt/cni`, `/etc/cni`,
//! `/etc/kube-flannel`, `/run/flannel`, `/var/lib/cni`, `/var/lib/installer`,
//! `/var/log/installer`, `/etc/systemd/system`, `/run/netns` and `/root` (seeded with Debian's
//! start-up files); an etcd member on the first node; an HTTP artifact
//! mirror on the deploy side serving a CNI plugins tarball built from Debian's
//! containernetworking-plugins; a key pair, known_hosts and a kubeasz-format inventory. `lab down`
//! removes all of it, also after a crash. Several labs with different names coexist.
//!
//! Addresses stay inside 198.18.0.0/15 (see [`plan`]); state lives in `/run/installer-lab/<name>`
//! (see [`state`]). Other tests use [`LabGuard`] to get a lab that is removed when they end.

pub mod down;
pub mod error;
pub mod etcd;
pub mod guard;
pub mod inventory;
pub mod mirror;
pub mod node;
mod ops;
pub mod plan;
pub mod prereq;
pub mod state;
pub mod status;
pub mod sys;
pub mod up;

pub use down::DownReport;
pub use error::LabError;
pub use guard::LabGuard;
pub use state::{Lab, LabNode};
pub use status::LabStatus;
pub use up::{MirrorMode, UpOptions, UpReport};

use clap::Subcommand;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// `installer lab …` arguments.
#[derive(Debug, clap::Args)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

/// The lab subcommands.
#[derive(Debug, Subcommand)]
enum LabCommand {
    /// Create the lab (or report that it is already up) and print its inventory path.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Lab name; labs with different names coexist.
        #[arg(long, default_value = "default", env = "INSTALLER_LAB_NAME")]
        name: String,
    },
    /// Remove the lab: processes, mounts, namespaces, links and its state directory.
    Down {
        /// Lab name.
        #[arg(long, default_value = "default", env = "INSTALLER_LAB_NAME")]
        name: String,
        /// Remove every lab (and anything left with a lab prefix); `--name` is ignored.
        #[arg(long)]
        all: bool,
    },
    /// Check each node's namespace and sshd, etcd and the mirror; exit 1 when unhealthy.
    Status {
        /// Lab name.
        #[arg(long, default_value = "default", env = "INSTALLER_LAB_NAME")]
        name: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Serve a directory over HTTP (the lab's artifact mirror daemon).
    #[command(hide = true)]
    ServeMirror {
        /// Directory to serve.
        #[arg(long)]
        dir: PathBuf,
        /// Address to listen on (IP:PORT).
        #[arg(long)]
        listen: String,
    },
}

/// Output formats of `lab status`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Run a `lab` subcommand.
pub fn run(args: LabArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        LabCommand::Up { nodes, name } => up(name, nodes),
        LabCommand::Down { name, all } => down(&name, all),
        LabCommand::Status { name, output } => status(&name, output),
        LabCommand::ServeMirror { dir, listen } => {
            mirror::serve_forever(&dir, &listen)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn up(name: String, nodes: usize) -> anyhow::Result<ExitCode> {
    // the running binary itself, by inode: the path may be replaced (a rebuild) before the
    // daemon starts, and `lab up` is still running when it does
    let installer = PathBuf::from(format!("/proc/{}/exe", std::process::id()));
    if !installer.exists() {
        return Err(
            LabError::InstallerBinary(format!("{} is missing", installer.display())).into(),
        );
    }
    let opts = UpOptions {
        name,
        nodes,
        mirror: MirrorMode::Daemon(installer),
    };
    let report = Lab::up_report(&opts)?;
    let lab = &report.lab;
    let mut out = String::new();
    if report.reused {
        let _ = writeln!(
            out,
            "lab {:?} is already up ({} nodes); nothing to do",
            lab.name,
            lab.nodes.len()
        );
    } else {
        let _ = writeln!(
            out,
            "lab {:?} is up: {} nodes in {:.1}s",
            lab.name,
            lab.nodes.len(),
            report.elapsed.as_secs_f64()
        );
    }
    for n in &lab.nodes {
        let _ = writeln!(
            out,
            "  {:<14} {:<14} netns {:<8} [{}]",
            n.name,
            n.ip.to_string(),
            n.netns,
            n.groups.join(", ")
        );
    }
    let _ = writeln!(out, "etcd:        {}", lab.etcd_endpoint);
    let _ = writeln!(
        out,
        "mirror:      {} (sha256 {})",
        lab.cni_tarball_url, lab.cni_sha256
    );
    let _ = writeln!(out, "inventory:   {}", lab.inventory_path.display());
    let _ = writeln!(out, "known_hosts: {}", lab.known_hosts_path.display());
    if let Some(first) = lab.nodes.first() {
        let _ = writeln!(out, "ssh:         {}", lab.ssh_argv(first).join(" "));
    }
    let _ = writeln!(out, "remove it:   installer lab down --name {}", lab.name);
    emit(&out);
    Ok(ExitCode::SUCCESS)
}

fn down(name: &str, all: bool) -> anyhow::Result<ExitCode> {
    if !prereq::is_root() {
        return Err(LabError::NotRoot.into());
    }
    let reports = if all {
        down::down_all()?
    } else {
        vec![down::down_by_name(name)?]
    };
    let mut clean = true;
    let mut out = String::new();
    for r in &reports {
        let label = if r.name.is_empty() {
            "leftovers without a lab name".to_string()
        } else {
            format!("lab {:?}", r.name)
        };
        if !r.found {
            let _ = writeln!(out, "{label}: nothing to remove");
            continue;
        }
        let _ = writeln!(
            out,
            "{label} removed: {} processes stopped, namespaces [{}] deleted",
            r.killed,
            r.namespaces.join(" ")
        );
        if !r.leftovers.is_empty() {
            clean = false;
            eprintln!("{label}: could not remove {}", r.leftovers.join(", "));
        }
    }
    if all && reports.is_empty() {
        let _ = writeln!(out, "no labs");
    }
    emit(&out);
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn status(name: &str, output: Format) -> anyhow::Result<ExitCode> {
    let lab = Lab::load(name)?;
    let status = lab.status();
    let text = match output {
        Format::Text => format!("{status}\n"),
        Format::Json => format!("{}\n", serde_json::to_string_pretty(&status)?),
    };
    emit(&text);
    Ok(if status.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Print command output; a closed stdout (`| head`) is not worth a panic.
fn emit(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
