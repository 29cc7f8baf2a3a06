//! `lab down`: remove everything `lab up` made, from the state file and by scanning for the
//! lab's name prefix, so it also works after a crash or with the state file gone.
//!
//! Order: find the lab's indexes (state file, then interface aliases that carry the lab name);
//! kill every process in its namespaces, in its nodes' mount namespaces, named in its pid files or
//! mentioning its state directory; delete the deploy-side link and the namespaces (mounts inside
//! node mount namespaces vanish with their last process); remove the state directory; when no lab
//! is left, remove the mount points the lab created on the machine.

use super::error::{LabError, Result};
use super::prereq::{Need, Probe};
use super::state::{self, Lab};
use super::{mirror, node, plan, sys};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What `lab down` removed.
#[derive(Debug, Clone, Default)]
pub struct DownReport {
    /// Lab name (empty for an orphan index found by `--all`).
    pub name: String,
    /// Whether anything of the lab existed.
    pub found: bool,
    /// Processes killed.
    pub killed: usize,
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// Links deleted in the root namespace.
    pub links: Vec<String>,
    /// Things that could not be removed (processes that survived SIGKILL, …).
    pub leftovers: Vec<String>,
}

impl Lab {
    /// Remove this lab completely.
    pub fn down(&self) -> Result<DownReport> {
        down_by_name(&self.name)
    }
}

/// Remove the lab of this name: whatever its state file records, whatever carries its name in
/// an interface alias, and its state directory. Nothing to remove is not an error.
pub fn down_by_name(name: &str) -> Result<DownReport> {
    if !plan::valid_name(name) {
        return Err(LabError::InvalidName(name.to_string()));
    }
    mirror::stop_in_process(name);
    let dir = Lab::dir_of(name);
    let mut report = DownReport {
        name: name.to_string(),
        found: dir.exists(),
        ..DownReport::default()
    };
    let mut indexes: BTreeSet<u8> = BTreeSet::new();
    if let Ok(lab) = Lab::load(name) {
        indexes.insert(lab.index);
    }
    indexes.extend(indexes_by_alias(name));
    report.found |= !indexes.is_empty();
    teardown(&indexes, Some(&dir), &mut report);
    report.found |= report.killed > 0;
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => report.leftovers.push(format!("{}: {e}", dir.display())),
    }
    forget_machine_dirs_if_last();
    Ok(report)
}

/// Remove every lab: all state directories and every namespace or link with a lab prefix.
pub fn down_all() -> Result<Vec<DownReport>> {
    let mut names: BTreeSet<String> = state::lab_dirs().into_iter().collect();
    for x in indexes_in_use() {
        if let Some(name) = alias_name(x) {
            names.insert(name);
        }
    }
    let mut reports = Vec::new();
    for name in names {
        reports.push(down_by_name(&name)?);
    }
    // anything else with a lab prefix, or a lab daemon or mount whose lab is gone
    let orphans: BTreeSet<u8> = indexes_in_use();
    let mut report = DownReport::default();
    teardown(&orphans, Some(Path::new(state::STATE_ROOT)), &mut report);
    if report.killed > 0 || !report.namespaces.is_empty() || !report.links.is_empty() {
        report.found = true;
        reports.push(report);
    }
    forget_machine_dirs_if_last();
    Ok(reports)
}

/// Lab indexes that have a namespace in `/run/netns` or a link in the root namespace.
pub fn indexes_in_use() -> BTreeSet<u8> {
    let mut found = BTreeSet::new();
    for dir in ["/run/netns", "/sys/class/net"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if let Some(x) = entry.file_name().to_str().and_then(plan::index_of_name) {
                    found.insert(x);
                }
            }
        }
    }
    found
}

/// Indexes whose deploy-side link or bridge carries this lab name as alias.
fn indexes_by_alias(name: &str) -> BTreeSet<u8> {
    indexes_in_use()
        .into_iter()
        .filter(|&x| alias_name(x).as_deref() == Some(name))
        .collect()
}

/// The lab name recorded in the aliases of lab index `x`'s links.
fn alias_name(x: u8) -> Option<String> {
    let from_alias = |alias: &str| {
        alias
            .trim()
            .strip_prefix("installer-lab:")
            .map(str::to_string)
    };
    let host = format!("/sys/class/net/{}/ifalias", plan::host_link(x));
    if let Some(name) = std::fs::read_to_string(host)
        .ok()
        .and_then(|a| from_alias(&a))
    {
        return Some(name);
    }
    let br = plan::bridge_netns(x);
    if !node::netns_path(&br).exists() {
        return None;
    }
    let out = ip_command()
        .args(["-n", &br, "-j", "link", "show", "dev", "br0"])
        .output()
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    json.get(0)?.get("ifalias")?.as_str().and_then(from_alias)
}

/// Namespaces of lab index `x` present in `/run/netns`.
fn namespaces_of(x: u8) -> Vec<String> {
    let prefix = plan::netns_prefix(x);
    let mut names: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn teardown(indexes: &BTreeSet<u8>, dir: Option<&Path>, report: &mut DownReport) {
    let pids = collect_pids(indexes, dir);
    report.killed += pids.len();
    for pid in sys::kill_and_wait(&pids) {
        report
            .leftovers
            .push(format!("process {pid} survived SIGKILL"));
    }
    for &x in indexes {
        let link = plan::host_link(x);
        if link_exists(&link) {
            match sys::run(ip_command().args(["link", "del", &link])) {
                Ok(_) => report.links.push(link.clone()),
                Err(e) => report.leftovers.push(e.to_string()),
            }
        }
        for ns in namespaces_of(x) {
            if sys::run(ip_command().args(["netns", "del", &ns])).is_err() {
                // a stale file without a namespace mounted on it
                let _ = std::fs::remove_file(node::netns_path(&ns));
            }
            if node::netns_path(&ns).exists() {
                report.leftovers.push(format!("namespace {ns}"));
            } else {
                report.namespaces.push(ns);
            }
        }
        // namespace teardown is asynchronous: wait for the link to disappear
        let start = Instant::now();
        while link_exists(&link) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if link_exists(&link) {
            report.leftovers.push(format!("link {link}"));
        }
    }
}

fn ip_command() -> Command {
    let ip = Probe::system()
        .locate(Need::Command("ip"))
        .unwrap_or_else(|| PathBuf::from("ip"));
    Command::new(ip)
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Every process that belongs to the lab.
fn collect_pids(indexes: &BTreeSet<u8>, dir: Option<&Path>) -> BTreeSet<u32> {
    let mut pids = BTreeSet::new();
    let own_mnt = sys::ns_id(Path::new("/proc/self/ns/mnt"));
    let mut mount_namespaces = BTreeSet::new();
    for &x in indexes {
        for ns in namespaces_of(x) {
            if let Some(id) = sys::ns_id(&node::netns_path(&ns)) {
                for pid in sys::pids_in_ns("net", id) {
                    pids.insert(pid);
                    if let Some(mnt) = sys::ns_id(&PathBuf::from(format!("/proc/{pid}/ns/mnt")))
                        && Some(mnt) != own_mnt
                    {
                        mount_namespaces.insert(mnt);
                    }
                }
            }
        }
    }
    for mnt in mount_namespaces {
        pids.extend(sys::pids_in_ns("mnt", mnt));
    }
    if let Some(dir) = dir {
        // the lab's daemons name paths under "<state dir>/" (sshd -f, etcd --data-dir,
        // serve-mirror --dir), and node mount namespaces mount directories from there; other
        // processes that merely mention the lab (an editor, a deploy) stay
        let marker = format!("{}/", dir.to_string_lossy());
        let me = std::process::id();
        for pid in sys::all_pids() {
            if pid == me || pids.contains(&pid) {
                continue;
            }
            let daemon = ["sshd", "etcd", "serve-mirror"]
                .iter()
                .any(|d| sys::cmdline_contains(pid, d));
            if (daemon && sys::cmdline_contains(pid, &marker)) || mounts_from(pid, &marker, own_mnt)
            {
                pids.insert(pid);
            }
        }
    }
    pids
}

/// Whether a process lives in another mount namespace that has mounts from under `marker`.
fn mounts_from(pid: u32, marker: &str, own_mnt: Option<(u64, u64)>) -> bool {
    let mnt = sys::ns_id(&PathBuf::from(format!("/proc/{pid}/ns/mnt")));
    mnt.is_some()
        && mnt != own_mnt
        && std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .is_ok_and(|m| m.contains(marker))
}

/// When no lab is left, remove the mount points labs created on the machine.
fn forget_machine_dirs_if_last() {
    let Ok(_lock) = state::lock() else {
        return;
    };
    if state::lab_dirs().is_empty() && indexes_in_use().is_empty() {
        state::remove_recorded_dirs();
    }
}
