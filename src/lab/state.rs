//! The lab's description and its state file.
//!
//! Every lab lives in `/run/installer-lab/<name>/` (`/run` is normally a tmpfs, so it vanishes
//! at reboot with the namespaces and processes; where it is not, the next `lab up` of the name
//! finds the stale lab unhealthy and rebuilds it, and `lab down --all` clears everything). The state file `state.json` is the serialised [`Lab`]; it is written
//! before anything is created, so `lab down` knows the index even after a crash, and again when
//! the lab is complete. Pids live in pid files next to it (daemons rewrite them on restart).
//!
//! ```text
//! /run/installer-lab/<name>/
//!   state.json            this struct
//!   id_ed25519(.pub)      the lab's client key pair
//!   known_hosts           every node's host key
//!   hosts                 the generated kubeasz inventory
//!   kubeasz/              base_dir of the inventory
//!   mirror/               served by the artifact mirror (tarball + .sha256)
//!   mirror.pid etcd.pid   daemon pids;  etcd/ data dir;  logs/ daemon logs
//!   nodes/<node>/         host key, sshd_config, holder.pid, sshd.pid,
//!                         root/<path> bind-mounted over <path> inside the node
//! ```

use super::error::{LabError, Result};
use super::sys;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Directory holding every lab's state directory (and the allocation lock).
pub const STATE_ROOT: &str = "/run/installer-lab";

/// Paths every node sees as its own: each is a bind mount of `nodes/<node>/root/<path>`.
pub const NODE_PRIVATE_PATHS: [&str; 11] = [
    "/opt/kube",
    "/opt/cni",
    "/etc/cni",
    "/etc/kube-flannel",
    "/run/flannel",
    "/var/lib/cni",
    // setup's digest memo (remote::converge::NODE_DIGEST_MEMO)
    "/var/lib/installer",
    "/var/log/installer",
    "/etc/systemd/system",
    // so `ip netns add` on a node (pods) stays on that node
    "/run/netns",
    // root's home: a fresh node's, not the deploy machine's (whose shell start-up files would
    // otherwise run on every SSH command to every node)
    "/root",
];

/// Where a lab is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// `lab up` is building it (or crashed while doing so).
    Creating,
    /// Complete.
    Up,
}

/// One node: a network namespace with its own sshd, mount view and hostname.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabNode {
    /// Node name, also its hostname and `k8s_nodename` (`lab<x>-node<i>`).
    pub name: String,
    /// 1-based position in the lab.
    pub number: usize,
    /// The node's address on the lab LAN (`eth0`).
    pub ip: Ipv4Addr,
    /// Its network namespace (`/run/netns/<netns>`).
    pub netns: String,
    /// Its state directory.
    pub dir: PathBuf,
    /// Inventory groups it belongs to.
    pub groups: Vec<String>,
}

impl LabNode {
    /// Directory whose `root/<path>` subdirectories are mounted over the node's private paths.
    pub fn root_dir(&self) -> PathBuf {
        self.dir.join("root")
    }
    /// Where the node's view of an absolute path lives on the deploy side, for a path under one
    /// of [`NODE_PRIVATE_PATHS`] (for example `/opt/kube/bin/flanneld`).
    pub fn host_path(&self, node_path: &str) -> PathBuf {
        self.root_dir().join(node_path.trim_start_matches('/'))
    }
    /// The node's ed25519 host key (private; `.pub` beside it).
    pub fn host_key_path(&self) -> PathBuf {
        self.dir.join("ssh_host_ed25519_key")
    }
    /// Generated sshd configuration.
    pub fn sshd_config_path(&self) -> PathBuf {
        self.dir.join("sshd_config")
    }
    /// Pid file of the process that holds the node's namespaces open.
    pub fn holder_pid_file(&self) -> PathBuf {
        self.dir.join("holder.pid")
    }
    /// Pid file of the node's sshd.
    pub fn sshd_pid_file(&self) -> PathBuf {
        self.dir.join("sshd.pid")
    }
    /// Whether the node is in an inventory group.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// A lab: what `lab up` made and everything a test or the installer needs to use it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lab {
    /// Lab name (directory name under [`STATE_ROOT`]).
    pub name: String,
    /// Lab index `x`: nodes on `198.18.x.0/24`, names prefixed `il<x>`.
    pub index: u8,
    /// Building or complete.
    pub phase: Phase,
    /// `/run/installer-lab/<name>`.
    pub state_dir: PathBuf,
    /// Deploy-side address in the root namespace (`198.18.x.1`).
    pub deploy_ip: Ipv4Addr,
    /// Nodes' default gateway, a dead end (`198.18.x.254`).
    pub gateway_ip: Ipv4Addr,
    /// Node LAN (`198.18.x.0/24`).
    pub node_cidr: String,
    /// Pod range written as `CLUSTER_CIDR`.
    pub cluster_cidr: String,
    /// Service range written as `SERVICE_CIDR`.
    pub service_cidr: String,
    /// Pod block `(first /20 slot, slot count)` in 198.19.0.0/16.
    pub pod_block: (u8, u8),
    /// The nodes, in order.
    pub nodes: Vec<LabNode>,
    /// Namespace of the LAN bridge.
    pub bridge_netns: String,
    /// Root-namespace link of the lab.
    pub host_link: String,
    /// The lab's private key (ed25519, no passphrase).
    pub key_path: PathBuf,
    /// Its public key (the nodes' authorized key).
    pub pub_key_path: PathBuf,
    /// known_hosts with every node's host key.
    pub known_hosts_path: PathBuf,
    /// The generated kubeasz inventory.
    pub inventory_path: PathBuf,
    /// etcd client URL of the `[etcd]` node.
    pub etcd_endpoint: String,
    /// Base URL of the artifact mirror (ends with `/`).
    pub mirror_url: String,
    /// Directory the mirror serves.
    pub mirror_dir: PathBuf,
    /// CNI plugins version written as `CNI_VERSION`.
    pub cni_version: String,
    /// File name of the CNI tarball.
    pub cni_tarball_name: String,
    /// Full URL of the CNI tarball on the mirror.
    pub cni_tarball_url: String,
    /// sha256 (hex) of the CNI tarball; empty until it is built.
    pub cni_sha256: String,
    /// Whether the mirror runs as a detached daemon (`lab serve-mirror`) or inside the process
    /// that made the lab (test guards).
    pub mirror_daemon: bool,
}

impl Lab {
    /// State directory of a lab name.
    pub fn dir_of(name: &str) -> PathBuf {
        Path::new(STATE_ROOT).join(name)
    }
    /// The state file.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }
    /// Daemon logs.
    pub fn log_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }
    /// etcd pid file.
    pub fn etcd_pid_file(&self) -> PathBuf {
        self.state_dir.join("etcd.pid")
    }
    /// etcd data directory.
    pub fn etcd_data_dir(&self) -> PathBuf {
        self.state_dir.join("etcd")
    }
    /// Mirror pid file.
    pub fn mirror_pid_file(&self) -> PathBuf {
        self.state_dir.join("mirror.pid")
    }
    /// Point the mirror URLs at another port of the deploy-side address.
    pub fn set_mirror_port(&mut self, port: u16) {
        self.mirror_url = format!("http://{}:{port}/", self.deploy_ip);
        self.cni_tarball_url = format!("{}{}", self.mirror_url, self.cni_tarball_name);
    }
    /// URL of the tarball's `.sha256` side file.
    pub fn cni_sha256_url(&self) -> String {
        format!("{}.sha256", self.cni_tarball_url)
    }
    /// The `[etcd]` node.
    pub fn etcd_node(&self) -> Option<&LabNode> {
        self.nodes.iter().find(|n| n.in_group("etcd"))
    }
    /// A node by name (`lab0-node2`) or by `node2` / `2`.
    pub fn node(&self, name: &str) -> Result<&LabNode> {
        let wanted = name.trim_start_matches("node");
        self.nodes
            .iter()
            .find(|n| n.name == name || n.netns == name || n.number.to_string() == wanted)
            .ok_or_else(|| LabError::NoSuchNode {
                lab: self.name.clone(),
                node: name.to_string(),
            })
    }

    /// Write the state file atomically.
    pub fn save(&self) -> Result<()> {
        let json =
            serde_json::to_vec_pretty(&StateFile::of(self)).map_err(|error| LabError::State {
                name: self.name.clone(),
                path: self.state_file(),
                error,
            })?;
        sys::write_atomic(&self.state_file(), &json)
    }

    /// Read the state file of a lab name.
    pub fn load(name: &str) -> Result<Lab> {
        if !super::plan::valid_name(name) {
            return Err(LabError::InvalidName(name.to_string()));
        }
        Self::load_file(&Self::dir_of(name).join("state.json"), name)
    }

    fn load_file(path: &Path, name: &str) -> Result<Lab> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LabError::NotFound(name.to_string()));
            }
            Err(e) => return Err(LabError::io("read", path, e)),
        };
        serde_json::from_slice(&text).map_err(|error| LabError::State {
            name: name.to_string(),
            path: path.to_path_buf(),
            error,
        })
    }
}

/// What `state.json` holds: the [`Lab`] plus, for people and scripts reading it, the
/// namespaces, the root-namespace link and the pid files of every process the lab started (pids
/// themselves live in those files, because sshd can be restarted). Extra keys are ignored on load.
#[derive(Serialize)]
struct StateFile<'a> {
    #[serde(flatten)]
    lab: &'a Lab,
    namespaces: Vec<&'a str>,
    links: Vec<&'a str>,
    pid_files: Vec<PathBuf>,
}

impl<'a> StateFile<'a> {
    fn of(lab: &'a Lab) -> Self {
        let mut namespaces = vec![lab.bridge_netns.as_str()];
        namespaces.extend(lab.nodes.iter().map(|n| n.netns.as_str()));
        let mut pid_files = vec![lab.etcd_pid_file()];
        if lab.mirror_daemon {
            pid_files.push(lab.mirror_pid_file());
        }
        for n in &lab.nodes {
            pid_files.push(n.holder_pid_file());
            pid_files.push(n.sshd_pid_file());
        }
        StateFile {
            lab,
            namespaces,
            links: vec![lab.host_link.as_str()],
            pid_files,
        }
    }
}

/// Names of every lab directory under [`STATE_ROOT`] (with or without a readable state file).
pub fn lab_dirs() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(STATE_ROOT) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            (e.file_type().ok()?.is_dir() && super::plan::valid_name(&name)).then_some(name)
        })
        .collect();
    names.sort();
    names
}

/// Every lab with a readable state file.
pub fn all_labs() -> Vec<Lab> {
    lab_dirs()
        .iter()
        .filter_map(|name| Lab::load(name).ok())
        .collect()
}

/// An exclusive lock over lab allocation and shared records; released on drop.
pub struct AllocationLock {
    _file: File,
}

/// Take the allocation lock (waits for other `lab up`/`lab down` in progress).
pub fn lock() -> Result<AllocationLock> {
    sys::mkdir(Path::new(STATE_ROOT))?;
    let path = Path::new(STATE_ROOT).join(".lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LabError::io("open", &path, e))?;
    file.lock().map_err(|e| LabError::io("lock", &path, e))?;
    Ok(AllocationLock { _file: file })
}

/// Record of directories the lab created on the machine (mount points), removed again when the
/// last lab goes. Kept under the lock in [`STATE_ROOT`]`/created-dirs.json`.
pub fn created_dirs_file() -> PathBuf {
    Path::new(STATE_ROOT).join("created-dirs.json")
}

/// Create `path` and any missing parents; append each directory that did not exist to the
/// created-dirs record. Call with the allocation lock held.
pub fn create_recorded_dir(path: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(path);
    while let Some(p) = cur {
        if p.exists() {
            break;
        }
        missing.push(p.to_path_buf());
        cur = p.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    sys::mkdir(path)?;
    let record = created_dirs_file();
    let mut dirs: Vec<PathBuf> = std::fs::read(&record)
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
        .unwrap_or_default();
    for dir in missing.into_iter().rev() {
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    let json = serde_json::to_vec_pretty(&dirs).unwrap_or_default();
    sys::write_atomic(&record, &json)
}

/// Remove the recorded directories (deepest first) when they are empty; called with the lock
/// held once no lab is left. Directories someone filled stay.
pub fn remove_recorded_dirs() {
    let record = created_dirs_file();
    let dirs: Vec<PathBuf> = std::fs::read(&record)
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
        .unwrap_or_default();
    for dir in dirs.iter().rev() {
        let _ = std::fs::remove_dir(dir);
    }
    let _ = std::fs::remove_file(record);
}
