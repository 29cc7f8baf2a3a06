//! `lab status`: is each node's namespace there, its holder running, its sshd answering; is etcd
//! healthy; does the mirror serve the tarball's digest.

use super::state::{Lab, Phase};
use super::{etcd, mirror, node, sys};
use serde::Serialize;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Health of one node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its network namespace.
    pub netns: String,
    /// `/run/netns/<netns>` exists.
    pub netns_present: bool,
    /// The process holding its mount namespace runs.
    pub holder_running: bool,
    /// Its sshd sends an SSH banner on port 22.
    pub sshd_answering: bool,
}

impl NodeStatus {
    /// Everything about the node is fine.
    pub fn healthy(&self) -> bool {
        self.netns_present && self.holder_running && self.sshd_answering
    }
}

/// Health of a lab.
#[derive(Debug, Clone, Serialize)]
pub struct LabStatus {
    /// Lab name.
    pub name: String,
    /// Lab index.
    pub index: u8,
    /// Whether `lab up` finished.
    pub complete: bool,
    /// Per node.
    pub nodes: Vec<NodeStatus>,
    /// etcd endpoint.
    pub etcd_endpoint: String,
    /// etcd answers `/health` with true.
    pub etcd_healthy: bool,
    /// Tarball URL.
    pub mirror_url: String,
    /// The mirror serves the tarball's `.sha256` with the recorded digest.
    pub mirror_healthy: bool,
}

impl LabStatus {
    /// Everything is fine.
    pub fn healthy(&self) -> bool {
        self.complete
            && self.nodes.iter().all(NodeStatus::healthy)
            && self.etcd_healthy
            && self.mirror_healthy
    }
}

/// Check a lab.
pub fn check(lab: &Lab) -> LabStatus {
    let nodes = lab
        .nodes
        .iter()
        .map(|n| NodeStatus {
            name: n.name.clone(),
            ip: n.ip,
            netns: n.netns.clone(),
            netns_present: node::netns_path(&n.netns).exists(),
            holder_running: node::holder_pid(n).is_some(),
            sshd_answering: sys::ssh_banner(SocketAddr::from((n.ip, 22)), Duration::from_secs(1)),
        })
        .collect();
    LabStatus {
        name: lab.name.clone(),
        index: lab.index,
        complete: lab.phase == Phase::Up,
        nodes,
        etcd_endpoint: lab.etcd_endpoint.clone(),
        etcd_healthy: etcd::healthy(&lab.etcd_endpoint),
        mirror_url: lab.cni_tarball_url.clone(),
        mirror_healthy: !lab.cni_sha256.is_empty() && mirror::healthy(lab),
    }
}

fn mark(ok: bool) -> &'static str {
    if ok { "ok" } else { "FAIL" }
}

impl fmt::Display for LabStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.healthy() {
            "healthy"
        } else if !self.complete {
            "INCOMPLETE (lab up did not finish; run `installer lab up` again to rebuild it)"
        } else {
            "UNHEALTHY"
        };
        writeln!(f, "lab {:?} (index {}): {verdict}", self.name, self.index)?;
        writeln!(
            f,
            "  {:<14} {:<14} {:<9} {:<6} {:<6} sshd",
            "node", "address", "netns", "ns", "holder"
        )?;
        for n in &self.nodes {
            writeln!(
                f,
                "  {:<14} {:<14} {:<9} {:<6} {:<6} {}",
                n.name,
                n.ip.to_string(),
                n.netns,
                mark(n.netns_present),
                mark(n.holder_running),
                mark(n.sshd_answering)
            )?;
        }
        writeln!(
            f,
            "  etcd    {:<4} {}",
            mark(self.etcd_healthy),
            self.etcd_endpoint
        )?;
        write!(
            f,
            "  mirror  {:<4} {}",
            mark(self.mirror_healthy),
            self.mirror_url
        )
    }
}
