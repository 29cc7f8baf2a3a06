//! The lab's etcd: one member on the `[etcd]` node, plain HTTP, data in the state directory.
//!
//! It listens on `<node ip>:2379` (and `127.0.0.1:2379` inside the node, where flannel's default
//! endpoint points) and on `<node ip>:2380` for peers. The v2 API is enabled as well, because
//! flannel up to v0.17 speaks only v2.

use super::error::{LabError, Result};
use super::node;
use super::plan::{ETCD_CLIENT_PORT, ETCD_PEER_PORT};
use super::prereq::Tools;
use super::state::Lab;
use super::sys;
use std::ffi::OsString;
use std::time::Duration;

/// Start etcd on the lab's `[etcd]` node and wait until `/health` says it is healthy.
pub fn start(tools: &Tools, lab: &Lab) -> Result<u32> {
    let Some(etcd_node) = lab.etcd_node() else {
        return Err(LabError::NoSuchNode {
            lab: lab.name.clone(),
            node: "[etcd]".into(),
        });
    };
    let holder = node::holder_pid(etcd_node)
        .ok_or_else(|| LabError::NodeDown {
            lab: lab.name.clone(),
            node: etcd_node.name.clone(),
        })?
        .to_string();
    let ip = etcd_node.ip;
    let client = format!("http://{ip}:{ETCD_CLIENT_PORT}");
    let peer = format!("http://{ip}:{ETCD_PEER_PORT}");
    let args: Vec<OsString> = vec![
        tools.etcd.clone().into(),
        "--name".into(),
        etcd_node.name.clone().into(),
        "--data-dir".into(),
        lab.etcd_data_dir().into(),
        "--listen-client-urls".into(),
        format!("{client},http://127.0.0.1:{ETCD_CLIENT_PORT}").into(),
        "--advertise-client-urls".into(),
        client.into(),
        "--listen-peer-urls".into(),
        peer.clone().into(),
        "--initial-advertise-peer-urls".into(),
        peer.clone().into(),
        "--initial-cluster".into(),
        format!("{}={peer}", etcd_node.name).into(),
        "--initial-cluster-state".into(),
        "new".into(),
        "--initial-cluster-token".into(),
        format!("installer-lab-{}", lab.name).into(),
        "--enable-v2=true".into(),
    ];
    let log = lab.log_dir().join("etcd.log");
    let program: Vec<&std::ffi::OsStr> = args.iter().map(OsString::as_os_str).collect();
    let pid = sys::spawn_daemon(
        &tools.setsid,
        &node::nsenter_prefix(tools, &holder),
        &program,
        &lab.etcd_pid_file(),
        &log,
    )?;
    sys::wait_daemon(
        &format!("etcd at {}", lab.etcd_endpoint),
        pid,
        Duration::from_secs(30),
        &log,
        || healthy(&lab.etcd_endpoint),
    )?;
    Ok(pid)
}

/// Whether etcd at `endpoint` answers `/health` with `"health":"true"`.
pub fn healthy(endpoint: &str) -> bool {
    match sys::http_get(&format!("{endpoint}/health"), Duration::from_millis(1000)) {
        Ok((200, body)) => String::from_utf8_lossy(&body).contains("\"health\":\"true\""),
        _ => false,
    }
}

/// Pid of the lab's etcd if it runs (checked against its command line).
pub fn pid(lab: &Lab) -> Option<u32> {
    let pid = sys::read_pid_file(&lab.etcd_pid_file())?;
    let data_dir = lab.etcd_data_dir().to_string_lossy().into_owned();
    (sys::pid_alive(pid) && sys::cmdline_contains(pid, &data_dir)).then_some(pid)
}
