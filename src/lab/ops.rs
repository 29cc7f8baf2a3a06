//! What tests (and users) do with a running lab: run commands inside a node, stop and start a
//! node's sshd, change its host key, build an ssh command line.

use super::error::{LabError, Result};
use super::prereq::{Probe, Tools};
use super::state::{Lab, LabNode};
use super::status::{self, LabStatus};
use super::{node, sys, up};
use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

fn tools() -> Result<Tools> {
    Ok(Probe::system().check()?)
}

impl Lab {
    /// Check the lab's health.
    pub fn status(&self) -> LabStatus {
        status::check(self)
    }

    /// Run `argv` inside a node's network, mount and UTS namespaces (as root, not over SSH) and
    /// return its output whatever the exit status.
    pub fn exec_on<S: AsRef<OsStr>>(&self, node: &LabNode, argv: &[S]) -> Result<Output> {
        let tools = tools()?;
        let holder = node::holder_pid(node)
            .ok_or_else(|| LabError::NodeDown {
                lab: self.name.clone(),
                node: node.name.clone(),
            })?
            .to_string();
        let prefix = node::nsenter_prefix(&tools, &holder);
        let mut cmd = Command::new(prefix[0]);
        cmd.args(&prefix[1..])
            .args(argv)
            .stdin(Stdio::null())
            .current_dir("/");
        cmd.output().map_err(|error| LabError::Spawn {
            program: tools.nsenter.display().to_string(),
            error,
        })
    }

    /// Run a shell script inside a node (see [`Lab::exec_on`]).
    pub fn sh_on(&self, node: &LabNode, script: &str) -> Result<Output> {
        self.exec_on(node, &["sh", "-c", script])
    }

    /// Stop a node's sshd. New connections are refused until [`Lab::start_sshd`].
    pub fn stop_sshd(&self, node: &LabNode) -> Result<()> {
        self.node(&node.name)?;
        node::stop_sshd(node);
        Ok(())
    }

    /// Start a node's sshd (stopping a running one first); returns its pid once it answers.
    pub fn start_sshd(&self, node: &LabNode) -> Result<u32> {
        let tools = tools()?;
        self.node(&node.name)?;
        node::stop_sshd(node);
        node::start_sshd(&tools, self, node)
    }

    /// Give a node a new host key and restart its sshd with it. The lab's known_hosts keeps the
    /// old key, so clients that check it see a changed host key; returns the new known_hosts
    /// line. [`Lab::refresh_known_hosts`] accepts the new key.
    pub fn regenerate_host_key(&self, node: &LabNode) -> Result<String> {
        let tools = tools()?;
        self.node(&node.name)?;
        node::stop_sshd(node);
        node::generate_host_key(&tools, node)?;
        node::start_sshd(&tools, self, node)?;
        node::known_hosts_line(node)
    }

    /// Rewrite the lab's known_hosts from the nodes' current host keys.
    pub fn refresh_known_hosts(&self) -> Result<()> {
        up::write_known_hosts(self)
    }

    /// An `ssh` command line that logs into a node as root with the lab key and checks its host
    /// key against the lab's known_hosts, ignoring the user's ssh config and agent (append the
    /// remote command).
    pub fn ssh_argv(&self, node: &LabNode) -> Vec<String> {
        vec![
            "ssh".into(),
            "-i".into(),
            self.key_path.display().to_string(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts_path.display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-F".into(),
            "/dev/null".into(),
            format!("root@{}", node.ip),
        ]
    }

    /// The lab's mirror access log (one line per request: method, path, status, bytes).
    pub fn mirror_log(&self) -> std::path::PathBuf {
        super::mirror::mirror_log(self)
    }

    /// Pid of a node's sshd, if it runs.
    pub fn sshd_pid(&self, node: &LabNode) -> Option<u32> {
        node::sshd_pid(node)
    }

    /// Pid of the process holding a node's namespaces, if it runs.
    pub fn holder_pid(&self, node: &LabNode) -> Option<u32> {
        node::holder_pid(node)
    }

    /// Whether a process still runs (convenience for tests).
    pub fn pid_alive(pid: u32) -> bool {
        sys::pid_alive(pid)
    }
}
