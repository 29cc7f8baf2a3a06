//! One node: its network namespace and veth, the holder process that owns its mount and UTS
//! namespaces, its host key and its sshd.
//!
//! The holder is `sleep infinity` started through `ip netns exec NS unshare --mount --uts
//! --propagation private sh -c '<bind mounts>; <hostname>; exec sleep infinity'`. sshd and etcd
//! join the holder's namespaces with `nsenter`, so restarting sshd keeps the node's filesystem
//! view, like restarting sshd on a real host. Everything started over SSH inherits them too.

use super::error::{LabError, Result};
use super::plan;
use super::prereq::Tools;
use super::state::{Lab, LabNode, NODE_PRIVATE_PATHS};
use super::sys;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Create the node's directories (one per private path) and its host key.
pub fn prepare_files(tools: &Tools, lab: &Lab, node: &LabNode) -> Result<()> {
    for path in NODE_PRIVATE_PATHS {
        sys::mkdir(&node.host_path(path))?;
    }
    seed_root_home(node)?;
    generate_host_key(tools, node)?;
    write_sshd_config(lab, node)
}

/// Debian's start-up files for root (from base-files), as a freshly installed node has them.
const ROOT_SKELETON: [(&str, &str); 2] = [
    ("/usr/share/base-files/dot.bashrc", ".bashrc"),
    ("/usr/share/base-files/dot.profile", ".profile"),
];

/// Give the node's own `/root` the start-up files of a fresh Debian install (those missing on
/// the deploy machine are skipped: an empty home is as good for the lab).
fn seed_root_home(node: &LabNode) -> Result<()> {
    let home = node.host_path("/root");
    for (source, name) in ROOT_SKELETON {
        let Ok(text) = std::fs::read(source) else {
            continue;
        };
        sys::write_atomic(&home.join(name), &text)?;
    }
    Ok(())
}

/// (Re)generate the node's ed25519 host key.
pub fn generate_host_key(tools: &Tools, node: &LabNode) -> Result<()> {
    let key = node.host_key_path();
    for path in [key.clone(), key.with_extension("pub")] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LabError::io("remove", path, e)),
        }
    }
    sys::run(
        Command::new(&tools.ssh_keygen)
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(&node.name)
            .arg("-f")
            .arg(&key),
    )?;
    Ok(())
}

/// The `known_hosts` line of the node's current host key (`IP ssh-ed25519 AAAA…`).
pub fn known_hosts_line(node: &LabNode) -> Result<String> {
    let pub_path = node.host_key_path().with_extension("pub");
    let text =
        std::fs::read_to_string(&pub_path).map_err(|e| LabError::io("read", &pub_path, e))?;
    let mut fields = text.split_whitespace();
    let (Some(kind), Some(key)) = (fields.next(), fields.next()) else {
        return Err(LabError::io(
            "parse",
            pub_path,
            std::io::Error::other("not an OpenSSH public key"),
        ));
    };
    Ok(format!("{} {kind} {key}", node.ip))
}

fn write_sshd_config(lab: &Lab, node: &LabNode) -> Result<()> {
    let config = format!(
        "# sshd of lab node {name} (lab {lab:?}), written by `installer lab up`.\n\
         ListenAddress {ip}\n\
         Port 22\n\
         HostKey {host_key}\n\
         PidFile {pid_file}\n\
         AuthorizedKeysFile {authorized}\n\
         StrictModes no\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         UseDNS no\n\
         PrintMotd no\n\
         MaxStartups 100:30:200\n\
         MaxSessions 100\n\
         AcceptEnv LANG LC_*\n\
         Subsystem sftp internal-sftp\n",
        name = node.name,
        lab = lab.name,
        ip = node.ip,
        host_key = node.host_key_path().display(),
        pid_file = node.sshd_pid_file().display(),
        authorized = lab.pub_key_path.display(),
    );
    sys::write_atomic(&node.sshd_config_path(), config.as_bytes())
}

/// Create the node's namespace, its veth into the bridge namespace, address and routes.
pub fn create_network(tools: &Tools, lab: &Lab, node: &LabNode) -> Result<()> {
    let ip = |args: &[&str]| sys::run(Command::new(&tools.ip).args(args)).map(drop);
    let ns = node.netns.as_str();
    let a_side = plan::node_link_node_side(lab.index, node.number);
    let b_side = plan::node_link_bridge_side(lab.index, node.number);
    ip(&["netns", "add", ns])?;
    ip(&[
        "link",
        "add",
        &a_side,
        "netns",
        ns,
        "type",
        "veth",
        "peer",
        "name",
        &b_side,
        "netns",
        &lab.bridge_netns,
    ])?;
    ip(&["-n", ns, "link", "set", &a_side, "name", "eth0"])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{}/24", node.ip),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", ns, "link", "set", "eth0", "up"])?;
    ip(&[
        "-n",
        ns,
        "route",
        "add",
        "default",
        "via",
        &lab.gateway_ip.to_string(),
    ])?;
    ip(&[
        "-n",
        &lab.bridge_netns,
        "link",
        "set",
        &b_side,
        "master",
        "br0",
        "up",
    ])?;
    Ok(())
}

/// Start the holder process: it enters the node's network namespace, unshares mount and UTS
/// namespaces, bind-mounts the node's private directories, sets the hostname and sleeps.
pub fn start_holder(tools: &Tools, lab: &Lab, node: &LabNode) -> Result<u32> {
    let mount = tools.mount.to_string_lossy();
    let mut script = String::from("set -e\n");
    for path in NODE_PRIVATE_PATHS {
        script.push_str(&format!(
            "{} --bind {} {}\n",
            quote(&mount),
            quote(&node.host_path(path).to_string_lossy()),
            quote(path)
        ));
    }
    script.push_str(&format!(
        "echo {} > /proc/sys/kernel/hostname\nexec sleep infinity\n",
        quote(&node.name)
    ));
    let log = lab.log_dir().join(format!("{}-holder.log", node.name));
    let script_path = node.dir.join("holder.sh");
    sys::write_atomic(&script_path, script.as_bytes())?;
    let prefix: Vec<&OsStr> = vec![
        tools.ip.as_os_str(),
        "netns".as_ref(),
        "exec".as_ref(),
        node.netns.as_ref(),
        tools.unshare.as_os_str(),
        "--mount".as_ref(),
        "--uts".as_ref(),
        "--propagation".as_ref(),
        "private".as_ref(),
    ];
    let pid = sys::spawn_daemon(
        &tools.setsid,
        &prefix,
        &["sh".as_ref(), script_path.as_os_str()],
        &node.holder_pid_file(),
        &log,
    )?;
    // the pid is written before the mounts; wait until the script reached `sleep`
    sys::wait_daemon(
        &format!("namespace holder of {}", node.name),
        pid,
        Duration::from_secs(10),
        &log,
        || sys::cmdline(pid).is_some_and(|c| c.first().is_some_and(|a| a == "sleep")),
    )?;
    Ok(pid)
}

fn quote(s: &str) -> String {
    shlex::try_quote(s)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| s.to_string())
}

/// Pid of the node's holder, if it is running.
pub fn holder_pid(node: &LabNode) -> Option<u32> {
    let pid = sys::read_pid_file(&node.holder_pid_file())?;
    let alive = sys::pid_alive(pid)
        && sys::cmdline(pid).is_some_and(|c| c.first().is_some_and(|a| a == "sleep"))
        && sys::ns_id(Path::new(&format!("/proc/{pid}/ns/net")))
            == sys::ns_id(&netns_path(&node.netns));
    alive.then_some(pid)
}

/// `/run/netns/<name>`.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// `nsenter` arguments that join a node's network, mount and UTS namespaces.
pub fn nsenter_prefix<'a>(tools: &'a Tools, holder: &'a str) -> Vec<&'a OsStr> {
    vec![
        tools.nsenter.as_os_str(),
        "-t".as_ref(),
        holder.as_ref(),
        "-n".as_ref(),
        "-m".as_ref(),
        "-u".as_ref(),
        "--".as_ref(),
    ]
}

/// Start the node's sshd inside its namespaces and wait until it sends its banner.
pub fn start_sshd(tools: &Tools, lab: &Lab, node: &LabNode) -> Result<u32> {
    let holder = holder_pid(node).ok_or_else(|| LabError::NodeDown {
        lab: lab.name.clone(),
        node: node.name.clone(),
    })?;
    let holder = holder.to_string();
    let log = lab.log_dir().join(format!("{}-sshd.log", node.name));
    let pid = sys::spawn_daemon(
        &tools.setsid,
        &nsenter_prefix(tools, &holder),
        &[
            tools.sshd.as_os_str(),
            "-D".as_ref(),
            "-e".as_ref(),
            "-f".as_ref(),
            node.sshd_config_path().as_os_str(),
        ],
        &node.sshd_pid_file(),
        &log,
    )?;
    let addr = SocketAddr::from((node.ip, 22));
    sys::wait_daemon(
        &format!("sshd of {} on {addr}", node.name),
        pid,
        Duration::from_secs(15),
        &log,
        || sys::ssh_banner(addr, Duration::from_millis(500)),
    )?;
    Ok(pid)
}

/// Pid of the node's sshd, if it is running (checked against its command line).
pub fn sshd_pid(node: &LabNode) -> Option<u32> {
    let pid = sys::read_pid_file(&node.sshd_pid_file())?;
    let config = node.sshd_config_path().to_string_lossy().into_owned();
    (sys::pid_alive(pid) && sys::cmdline_contains(pid, &config)).then_some(pid)
}

/// Stop the node's sshd (its listener; sessions already open keep running, as on a real host).
pub fn stop_sshd(node: &LabNode) {
    if let Some(pid) = sshd_pid(node) {
        sys::terminate(pid, Duration::from_secs(3));
    }
    let _ = std::fs::remove_file(node.sshd_pid_file());
}

/// Every process in the node's network namespace or in its holder's mount namespace.
pub fn node_pids(node: &LabNode) -> BTreeSet<u32> {
    let mut pids = BTreeSet::new();
    if let Some(id) = sys::ns_id(&netns_path(&node.netns)) {
        pids.extend(sys::pids_in_ns("net", id));
    }
    if let Some(holder) = holder_pid(node)
        && let Some(id) = sys::ns_id(Path::new(&format!("/proc/{holder}/ns/mnt")))
        && Some(id) != sys::ns_id(Path::new("/proc/self/ns/mnt"))
    {
        pids.extend(sys::pids_in_ns("mnt", id));
    }
    pids
}
