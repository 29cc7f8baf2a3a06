//! Errors of the lab, each naming what failed and what to do about it.

use std::path::PathBuf;

/// Everything that can go wrong while making, inspecting or removing a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The lab creates namespaces and mounts, which needs root.
    #[error(
        "the lab needs root (network namespaces, veths and mounts); run it with sudo or as root"
    )]
    NotRoot,
    /// Packages the lab relies on are not installed.
    #[error(transparent)]
    MissingPrerequisites(#[from] super::prereq::MissingPrerequisites),
    /// The lab name cannot be used as a directory name.
    #[error(
        "invalid lab name {0:?}: use 1 to 32 characters a-z, 0-9 and '-', starting and ending with a letter or digit"
    )]
    InvalidName(String),
    /// The requested node count is out of range.
    #[error("a lab has 1 to {max} nodes, not {nodes}")]
    NodeCount {
        /// What was asked for.
        nodes: usize,
        /// The limit.
        max: usize,
    },
    /// Every lab index or pod block is taken.
    #[error(
        "no free lab slot for {nodes} nodes: {labs} lab(s) exist already; remove one with `installer lab down --name NAME` (or all with `installer lab down --all`)"
    )]
    NoFreeSlot {
        /// Node count of the lab that did not fit.
        nodes: usize,
        /// Labs that exist.
        labs: usize,
    },
    /// Another process is creating a lab of the same name.
    #[error(
        "another `installer lab up --name {0}` is creating this lab right now; wait for it or run `installer lab down --name {0}`"
    )]
    Busy(String),
    /// No lab of this name exists.
    #[error("no lab named {0:?}; create it with `installer lab up --name {0}`")]
    NotFound(String),
    /// A file or directory operation failed.
    #[error("{action} {path}: {error}")]
    Io {
        /// What was being done ("write", "create directory", …).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error (part of the message, so not a `source`).
        error: std::io::Error,
    },
    /// A helper program could not be started.
    #[error("cannot run {program}: {error}")]
    Spawn {
        /// Program name.
        program: String,
        /// The underlying error (part of the message, so not a `source`).
        error: std::io::Error,
    },
    /// A helper program failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The state file is unreadable.
    #[error(
        "lab state file {path} is unreadable ({error}); remove the lab with `installer lab down --name {name}`"
    )]
    State {
        /// Lab name.
        name: String,
        /// State file path.
        path: PathBuf,
        /// Parse error.
        error: serde_json::Error,
    },
    /// A daemon or check did not become ready in time.
    #[error("{what} did not become ready within {seconds} s; its log {log} ends with:\n{tail}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// The limit.
        seconds: u64,
        /// Log file of the daemon.
        log: PathBuf,
        /// Last lines of that log.
        tail: String,
    },
    /// A daemon exited while it was being started.
    #[error("{what} exited while starting; its log {log} ends with:\n{tail}")]
    Exited {
        /// The daemon.
        what: String,
        /// Its log file.
        log: PathBuf,
        /// Last lines of that log.
        tail: String,
    },
    /// The node is not part of this lab.
    #[error("lab {lab:?} has no node {node:?}")]
    NoSuchNode {
        /// Lab name.
        lab: String,
        /// Node name.
        node: String,
    },
    /// A node's namespaces are gone (its holder process is not running).
    #[error(
        "node {node} of lab {lab:?} is not running (no namespace holder process); rebuild the lab with `installer lab down --name {lab}` and `installer lab up --name {lab}`"
    )]
    NodeDown {
        /// Lab name.
        lab: String,
        /// Node name.
        node: String,
    },
    /// The installer binary needed for the mirror daemon was not found.
    #[error(
        "cannot find the installer binary to run the artifact mirror ({0}); set INSTALLER_BIN to its path"
    )]
    InstallerBinary(String),
    /// The artifact mirror could not bind its address.
    #[error("the artifact mirror cannot listen on {addr}: {reason}")]
    MirrorListen {
        /// Listen address.
        addr: String,
        /// Why not.
        reason: String,
    },
}

impl LabError {
    /// Shorthand for an [`LabError::Io`] error.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        LabError::Io {
            action,
            path: path.into(),
            error,
        }
    }
}

/// Result alias of the lab module.
pub type Result<T, E = LabError> = std::result::Result<T, E>;
