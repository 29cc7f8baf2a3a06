//! `installer verify ping-mesh` against real lab nodes (namespace hosts with their own sshd).
//!
//! The flannel agent is not needed for host-gw: after `setup flannel` (plugins, node binary,
//! conflist; `--files-only` so that the agent does not start and cannot re-add the routes a
//! test removes) each test
//! writes every node's `/run/flannel/subnet.env` and the host-gw routes
//! (`ip route add <peer pod subnet> via <peer node>`) itself, which is exactly flannel's host-gw
//! datapath. The vxlan test needs the agent and skips with a notice when the binary has none.
//! Needs root and the lab packages; skips with a notice otherwise. Addresses: lab nodes
//! 198.18.x.0/24, pods in the lab's slice of 198.19.0.0/16.

mod common;
use common::*;
use installer::lab::{Lab, LabGuard, LabNode};
use ipnet::Ipv4Net;
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A lab with flannel's host-gw datapath in place (no agent).
struct HostGw {
    lab: LabGuard,
    _cache: tempfile::TempDir,
    /// Pod subnet of each node, in node order.
    subnets: Vec<Ipv4Net>,
}

fn ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Lab up, `setup flannel` (host-gw), subnet.env and peer routes on every node.
fn hostgw_lab(test: &str, nodes: usize) -> Option<HostGw> {
    let lab = LabGuard::up_or_skip(test, nodes).expect("lab up")?;
    let cache = tempfile::tempdir().expect("tempdir");
    let out = installer()
        .args(["setup", "flannel", "-e", "FLANNEL_BACKEND=host-gw"])
        .args(["--files-only", "-i"])
        .arg(&lab.inventory_path)
        .arg("--cache-dir")
        .arg(cache.path())
        .output()
        .expect("run setup");
    ok(&out, "setup flannel");
    let cidr: Ipv4Net = lab.cluster_cidr.parse().expect("CLUSTER_CIDR");
    // flannel leaves the first /24 of the network unused
    let subnets: Vec<Ipv4Net> = cidr
        .subnets(24)
        .expect("/24s")
        .skip(1)
        .take(nodes)
        .collect();
    assert_eq!(subnets.len(), nodes, "{cidr} too small");
    for (node, subnet) in lab.nodes.iter().zip(&subnets) {
        let gw = subnet.hosts().next().expect("host");
        std::fs::write(
            node.host_path("/run/flannel/subnet.env"),
            format!(
                "FLANNEL_NETWORK={cidr}\nFLANNEL_SUBNET={gw}/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n"
            ),
        )
        .expect("write subnet.env");
    }
    for (i, node) in lab.nodes.iter().enumerate() {
        for (j, peer) in lab.nodes.iter().enumerate() {
            if i != j {
                route(&lab, node, "add", &subnets[j], peer);
            }
        }
    }
    Some(HostGw {
        lab,
        _cache: cache,
        subnets,
    })
}

fn route(lab: &Lab, node: &LabNode, op: &str, subnet: &Ipv4Net, via: &LabNode) {
    let out = lab
        .exec_on(
            node,
            &[
                "ip",
                "route",
                op,
                &subnet.to_string(),
                "via",
                &via.ip.to_string(),
            ],
        )
        .expect("exec");
    ok(&out, &format!("ip route {op} {subnet} on {}", node.name));
}

/// `verify ping-mesh` with host-gw as JSON: (exit code, report, stderr).
fn verify_json(lab: &Lab, extra: &[&str]) -> (i32, Value, String) {
    let out = installer()
        .args([
            "verify",
            "ping-mesh",
            "-e",
            "FLANNEL_BACKEND=host-gw",
            "-o",
            "json",
            "-i",
        ])
        .arg(&lab.inventory_path)
        .args(extra)
        .output()
        .expect("run verify");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}\n{stderr}"));
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// Failing pairs as (source kind, source node, target node, cause kind).
fn failing(report: &Value) -> BTreeSet<(String, String, String, String)> {
    report["pairs"]
        .as_array()
        .expect("pairs")
        .iter()
        .filter(|p| p["ok"] == false)
        .map(|p| {
            (
                p["from"]["kind"].as_str().unwrap_or("").to_string(),
                p["from_node"].as_str().unwrap_or("").to_string(),
                p["to_node"].as_str().unwrap_or("").to_string(),
                p["cause"]["kind"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn pair_set(
    items: &[(&str, &LabNode, &LabNode, &str)],
) -> BTreeSet<(String, String, String, String)> {
    items
        .iter()
        .map(|(k, a, b, c)| {
            (
                k.to_string(),
                a.ip.to_string(),
                b.ip.to_string(),
                c.to_string(),
            )
        })
        .collect()
}

/// No probe namespace, veth, IPAM allocation or CNI cache entry is left on any node.
fn assert_clean(lab: &Lab, report: &Value) {
    for node in &lab.nodes {
        let netns: Vec<String> = std::fs::read_dir(node.host_path("/run/netns"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("installer-probe-"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            netns.is_empty(),
            "{}: namespaces left: {netns:?}",
            node.name
        );
        let links = lab
            .exec_on(node, &["ip", "-o", "link", "show", "type", "veth"])
            .expect("exec");
        let links = String::from_utf8_lossy(&links.stdout).into_owned();
        assert!(
            !links.contains(": veth"),
            "{}: veths left:\n{links}",
            node.name
        );
        let ipam = node.host_path("/var/lib/cni/networks/cbr0");
        if let Ok(dir) = std::fs::read_dir(&ipam) {
            let left: Vec<String> = dir
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
                .collect();
            assert!(
                left.is_empty(),
                "{}: IPAM allocations left: {left:?}",
                node.name
            );
        }
        for dir in ["/var/lib/cni/results", "/var/lib/cni/flannel"] {
            let left: Vec<_> = std::fs::read_dir(node.host_path(dir))
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "{}: {dir} not empty: {left:?}", node.name);
        }
    }
    // Namespaces made inside a node's mount namespace must not leak into the machine's.
    for ep in report["endpoints"].as_array().into_iter().flatten() {
        let ns = ep["info"]["netns"].as_str().unwrap_or("");
        assert!(
            !std::path::Path::new("/run/netns").join(ns).exists(),
            "{ns} left in the root /run/netns"
        );
    }
    for c in report["cleanup"].as_array().into_iter().flatten() {
        assert!(c["error"].is_null(), "{c}");
        assert_eq!(c["report"]["leftovers"], serde_json::json!([]), "{c}");
    }
}

#[test]
fn ping_mesh_host_gw_all_pairs_pass_and_nothing_is_left_root() {
    let Some(env) = hostgw_lab("verify_hostgw_pass", 3) else {
        return;
    };
    let lab = &env.lab;
    let (code, report, stderr) = verify_json(lab, &[]);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(report["success"], true);
    assert_eq!(report["backend"], "host-gw");
    let pairs = report["pairs"].as_array().expect("pairs");
    // 3 probes × 2 peers (pod → pod) + 3 nodes × 3 probes (node → pod)
    assert_eq!(pairs.len(), 15, "{report:#}");
    for p in pairs {
        assert_eq!(p["ok"], true, "{p}");
        assert_eq!(p["reach"]["sent"], 3);
        assert_eq!(p["reach"]["received"], 3);
        assert!(p["reach"]["rtt_avg_ms"].as_f64().is_some(), "{p}");
        // MTU pass: pod MTU 1500 → 1472-byte payload with DF
        assert_eq!(p["mtu"]["size"], 1472, "{p}");
        assert_eq!(p["mtu"]["df"], true);
        assert_eq!(p["mtu"]["received"], 3, "{p}");
    }
    // Each probe got an address from its own node's subnet, through the real CNI chain.
    let eps = report["endpoints"].as_array().expect("endpoints");
    assert_eq!(eps.len(), 3);
    for (ep, subnet) in eps.iter().zip(&env.subnets) {
        let ip: std::net::Ipv4Addr = ep["info"]["ip"].as_str().unwrap().parse().unwrap();
        assert!(subnet.contains(&ip), "{ip} not in {subnet}");
        assert_eq!(ep["info"]["mtu"], 1500);
        assert_eq!(ep["info"]["network"], "cbr0");
    }
    assert_clean(lab, &report);

    // --limit: two nodes, their pairs only. Text output with the matrix and the routes.
    let limit = format!("{},{}", lab.nodes[0].ip, lab.nodes[2].ip);
    let out = installer()
        .args(["verify", "ping-mesh", "-e", "FLANNEL_BACKEND=host-gw", "-i"])
        .arg(&lab.inventory_path)
        .args(["--limit", &limit, "--show-routes", "--count", "2"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("pod → pod"), "{text}");
    assert!(text.contains("node → pod"), "{text}");
    assert!(
        text.contains("summary: 6 pair(s): 6 passed, 0 failed"),
        "{text}"
    );
    assert!(
        !text.contains(&format!("] {}", lab.nodes[1].ip)),
        "node2 is not selected: {text}"
    );
    // the seed doc's check: remote pod subnets via the peer node, local subnet on cni0
    assert!(
        text.contains(&format!(
            "{} via {} dev eth0",
            env.subnets[2], lab.nodes[2].ip
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} dev cni0", env.subnets[0])),
        "{text}"
    );
    assert!(
        text.contains("cleanup: 2 probe(s) removed, nothing left"),
        "{text}"
    );
    assert_clean(lab, &Value::Null);
}

#[test]
fn ping_mesh_deleted_peer_route_fails_exactly_the_affected_pairs_root() {
    let Some(env) = hostgw_lab("verify_hostgw_route", 3) else {
        return;
    };
    let lab = &env.lab;
    let (n1, n3) = (&lab.nodes[0], &lab.nodes[2]);
    route(lab, n1, "del", &env.subnets[2], n3);
    let (code, report, stderr) = verify_json(lab, &[]);
    assert_eq!(code, 2, "{report:#}\n{stderr}");
    assert_eq!(report["success"], false);
    // node1 → node3's pods has no route; node3's pod → node1's pod loses the reply on node1;
    // node3 itself → node1's pod works (the reply goes to node3's own address).
    assert_eq!(
        failing(&report),
        pair_set(&[
            ("pod", n1, n3, "no-route"),
            ("pod", n3, n1, "no-route"),
            ("host", n1, n3, "no-route"),
        ]),
        "{report:#}"
    );
    for p in report["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["ok"] == false)
    {
        let cause = &p["cause"];
        assert_eq!(cause["node"], n1.ip.to_string(), "{cause}");
        assert_eq!(cause["subnet"], env.subnets[2].to_string(), "{cause}");
        let msg = cause["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("instead of `via {}`", n3.ip)),
            "{msg}"
        );
        let reply = p["from_node"] == n3.ip.to_string();
        assert_eq!(cause["reply_path"], reply, "{cause}");
        assert_eq!(msg.starts_with("reply path: "), reply, "{msg}");
    }
    assert_eq!(report["summary"]["by_cause"]["no-route"], 3);
    assert_clean(lab, &report);

    // Put the route back: everything passes again.
    route(lab, n1, "add", &env.subnets[2], n3);
    let (code, report, _) = verify_json(lab, &["--count", "1"]);
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn ping_mesh_mtu_pass_catches_a_small_link_mtu_root() {
    let Some(env) = hostgw_lab("verify_hostgw_mtu", 3) else {
        return;
    };
    let lab = &env.lab;
    let (n1, n2, n3) = (&lab.nodes[0], &lab.nodes[1], &lab.nodes[2]);
    // node3's link carries 1400 bytes while the pods assume 1500 (FLANNEL_MTU=1500)
    let out = lab
        .exec_on(n3, &["ip", "link", "set", "eth0", "mtu", "1400"])
        .expect("exec");
    ok(&out, "lower mtu");
    let (code, report, stderr) = verify_json(lab, &[]);
    assert_eq!(code, 2, "{report:#}\n{stderr}");
    for p in report["pairs"].as_array().unwrap() {
        assert_eq!(p["reach"]["received"], 3, "small pings pass: {p}");
    }
    assert_eq!(
        failing(&report),
        pair_set(&[
            ("pod", n1, n3, "mtu"),
            ("pod", n2, n3, "mtu"),
            ("pod", n3, n1, "mtu"),
            ("pod", n3, n2, "mtu"),
            ("host", n1, n3, "mtu"),
            ("host", n2, n3, "mtu"),
            ("host", n3, n1, "mtu"),
            ("host", n3, n2, "mtu"),
        ]),
        "{report:#}"
    );
    let causes: Vec<&Value> = report["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["ok"] == false)
        .map(|p| &p["cause"])
        .collect();
    // Leaving node3 the kernel says how much fits; toward node3 the packets vanish silently.
    assert!(causes.iter().any(|c| c["path_mtu"] == 1400), "{causes:?}");
    assert!(
        causes
            .iter()
            .any(|c| c["path_mtu"].is_null()
                && c["message"].as_str().unwrap().contains("black hole")),
        "{causes:?}"
    );
    for c in &causes {
        assert_eq!(c["packet"], 1500);
        assert_eq!(c["pod_mtu"], 1500);
    }
    assert_clean(lab, &report);
}

#[test]
fn ping_mesh_ctrl_c_removes_the_probes_root() {
    let Some(env) = hostgw_lab("verify_hostgw_sigint", 3) else {
        return;
    };
    let lab = &env.lab;
    let bin = std::env::var_os("INSTALLER_TEST_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| assert_cmd::cargo::cargo_bin("installer"));
    let child = Command::new(bin)
        .args([
            "verify",
            "ping-mesh",
            "-e",
            "FLANNEL_BACKEND=host-gw",
            "-o",
            "json",
            "-i",
        ])
        .arg(&lab.inventory_path)
        .args(["--count", "40"])
        .env_remove("ANSIBLE_INVENTORY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait until every node has its probe (the ping phase is then under way).
    let started = Instant::now();
    loop {
        let all = lab.nodes.iter().all(|n| {
            std::fs::read_dir(n.host_path("/run/netns")).is_ok_and(|d| {
                d.flatten().any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("installer-probe-")
                })
            })
        });
        if all {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "probes never appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).expect("JSON after Ctrl-C");
    assert_eq!(report["interrupted"], true);
    assert_eq!(
        report["cleanup"].as_array().map(Vec::len),
        Some(3),
        "{report:#}"
    );
    assert_clean(lab, &report);
}

#[test]
fn probe_commands_on_a_node_are_idempotent_and_do_not_clobber_root() {
    let Some(env) = hostgw_lab("verify_probe_cmds", 1) else {
        return;
    };
    let lab = &env.lab;
    let node = &lab.nodes[0];
    let probe = |args: &[&str]| {
        let mut argv = vec!["/opt/kube/bin/installer", "verify", "probe"];
        argv.extend(args);
        argv.extend(["--bin-dir", "/opt/kube/bin"]);
        lab.exec_on(node, &argv).expect("exec")
    };
    let out = probe(&["add", "--id", "t-1"]);
    ok(&out, "probe add");
    let info: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(info["netns"], "installer-probe-t-1");
    // A second add with the same id fails and leaves the first probe alone.
    let out = probe(&["add", "--id", "t-1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(node.host_path("/run/netns/installer-probe-t-1").exists());
    let veth = info["host_interfaces"][1]
        .as_str()
        .expect("veth")
        .to_string();
    let out = probe(&["del", "--id", "t-1", "--host-veth", &veth]);
    ok(&out, "probe del");
    let del: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(del["removed"].as_array().map(Vec::len), Some(2), "{del}");
    assert_eq!(del["leftovers"], serde_json::json!([]), "{del}");
    let out = probe(&["del", "--id", "t-1", "--host-veth", &veth]);
    ok(&out, "probe del again");
    let del: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        del,
        serde_json::json!({"removed": [], "leftovers": [], "errors": []})
    );
    assert_clean(lab, &Value::Null);

    // Without the network configuration, add fails cleanly (no namespace left).
    std::fs::rename(
        node.host_path("/etc/cni/net.d/10-flannel.conflist"),
        node.host_path("/etc/cni/net.d/10-flannel.conflist.off"),
    )
    .expect("move conflist");
    let out = probe(&["add", "--id", "t-2"]);
    assert!(!out.status.success());
    assert!(!node.host_path("/run/netns/installer-probe-t-2").exists());
}

#[test]
fn ping_mesh_vxlan_all_pairs_pass_and_a_missing_fdb_entry_is_named_root() {
    let has_agent = installer()
        .args(["agent", "--help"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_agent {
        eprintln!(
            "skipping ping_mesh_vxlan_all_pairs_pass_and_a_missing_fdb_entry_is_named_root: this build has no `installer agent` \
             (the flannel agent programs the vxlan datapath)"
        );
        return;
    }
    let Some(lab) = LabGuard::up_or_skip("verify_vxlan", 3).expect("lab") else {
        return;
    };
    let cache = tempfile::tempdir().expect("tempdir");
    let out = installer()
        .args(["setup", "flannel", "-i"])
        .arg(&lab.inventory_path)
        .arg("--cache-dir")
        .arg(cache.path())
        .output()
        .expect("setup");
    ok(&out, "setup flannel (vxlan, agent)");
    let out = installer()
        .args(["verify", "ping-mesh", "-o", "json", "-i"])
        .arg(&lab.inventory_path)
        .output()
        .expect("verify");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["backend"], "vxlan");
    assert_eq!(report["pairs"].as_array().map(Vec::len), Some(15));
    for ep in report["endpoints"].as_array().unwrap() {
        assert_eq!(ep["info"]["mtu"], 1450, "vxlan pod MTU: {ep}");
    }
    assert_clean(&lab, &report);

    // Remove node1's FDB entry for node3's VTEP: exactly the node1 ↔ node3 pairs fail, no-fdb.
    let (n1, n3) = (&lab.nodes[0], &lab.nodes[2]);
    let fdb = lab
        .exec_on(n1, &["bridge", "fdb", "show", "dev", "flannel.1"])
        .expect("exec");
    let fdb = String::from_utf8_lossy(&fdb.stdout).into_owned();
    let mac = fdb
        .lines()
        .find(|l| l.contains(&format!("dst {} ", n3.ip)))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no FDB entry for {} in:\n{fdb}", n3.ip))
        .to_string();
    let out = lab
        .exec_on(
            n1,
            &[
                "bridge",
                "fdb",
                "del",
                &mac,
                "dev",
                "flannel.1",
                "dst",
                &n3.ip.to_string(),
            ],
        )
        .expect("exec");
    ok(&out, "bridge fdb del");
    let out = installer()
        .args(["verify", "ping-mesh", "-o", "json", "-i"])
        .arg(&lab.inventory_path)
        .output()
        .expect("verify");
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(out.status.code(), Some(2), "{report:#}");
    assert_eq!(
        failing(&report),
        pair_set(&[
            ("pod", n1, n3, "no-fdb"),
            ("pod", n3, n1, "no-fdb"),
            ("host", n1, n3, "no-fdb"),
            ("host", n3, n1, "no-fdb"),
        ]),
        "{report:#}"
    );
    for p in report["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["ok"] == false)
    {
        assert_eq!(p["cause"]["node"], n1.ip.to_string());
        assert_eq!(p["cause"]["mac"], mac.to_ascii_lowercase());
    }
    assert_clean(&lab, &report);
    let _ = installer()
        .args(["clean", "flannel", "-i"])
        .arg(&lab.inventory_path)
        .output();
}

#[test]
fn ping_mesh_pods_mode_probes_existing_pods_listed_by_the_api_root() {
    let Some(env) = hostgw_lab("verify_pods", 2) else {
        return;
    };
    let lab = &env.lab;
    // "Existing pods": namespaces attached through each node's CNI chain, as a runtime would.
    let mut pods = Vec::new();
    for (i, node) in lab.nodes.iter().enumerate() {
        let id = format!("web-{i}");
        let out = lab
            .exec_on(
                node,
                &[
                    "/opt/kube/bin/installer",
                    "verify",
                    "probe",
                    "add",
                    "--id",
                    &id,
                    "--bin-dir",
                    "/opt/kube/bin",
                ],
            )
            .expect("exec");
        ok(&out, "make a pod");
        let info: Value = serde_json::from_slice(&out.stdout).expect("json");
        pods.push((id, info["ip"].as_str().unwrap().to_string(), node.clone()));
    }
    let mut items: Vec<Value> = pods
        .iter()
        .map(|(id, ip, node)| {
            serde_json::json!({
                "metadata": {"name": id, "namespace": "default"},
                "spec": {"containers": [], "nodeName": node.name},
                "status": {"phase": "Running", "podIP": ip, "hostIP": node.ip.to_string()}
            })
        })
        .collect();
    // a pod on a node that is not in the inventory is skipped with a note
    items.push(serde_json::json!({
        "metadata": {"name": "elsewhere", "namespace": "default"},
        "spec": {"containers": [], "nodeName": "other"},
        "status": {"phase": "Running", "podIP": "198.19.255.9", "hostIP": "198.18.255.9"}
    }));
    let body =
        serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
            .to_string();
    let server = tiny_http::Server::http("127.0.0.1:0").expect("listen");
    let port = server.server_addr().to_ip().expect("ip").port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let api = std::thread::spawn(move || {
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(100)) {
                let auth = req
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Authorization"))
                    .map(|h| h.value.to_string())
                    .unwrap_or_default();
                seen2.lock().unwrap().push((req.url().to_string(), auth));
                let _ = req.respond(tiny_http::Response::from_string(body.clone()));
            }
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = write(
        dir.path(),
        "config",
        &format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: lab\n\
             contexts:\n- name: lab\n  context: {{cluster: lab, user: admin}}\n\
             clusters:\n- name: lab\n  cluster: {{server: 'http://127.0.0.1:{port}'}}\n\
             users:\n- name: admin\n  user: {{token: t0k}}\n"
        ),
    );
    let kc = kubeconfig.display().to_string();
    let (code, report, stderr) = verify_json(lab, &["--pods", "app=web", "--kubeconfig", &kc]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    api.join().expect("api thread");
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(report["mode"], "pods");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![(
            "/api/v1/pods?&labelSelector=app%3Dweb".to_string(),
            "Bearer t0k".to_string()
        )]
    );
    let eps = report["endpoints"].as_array().expect("endpoints");
    let names: Vec<&str> = eps.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["default/web-0", "default/web-1"]);
    assert!(eps.iter().all(|e| e["owned"] == false));
    // 2 pods → 1 peer each, 2 nodes × 2 pods
    assert_eq!(
        report["pairs"].as_array().map(Vec::len),
        Some(6),
        "{report:#}"
    );
    assert_eq!(
        report["cleanup"],
        serde_json::json!([]),
        "existing pods are not removed"
    );
    assert!(
        report["notes"][0]
            .as_str()
            .unwrap()
            .contains("default/elsewhere"),
        "{report:#}"
    );
    for (id, _, node) in &pods {
        assert!(
            node.host_path(&format!("/run/netns/installer-probe-{id}"))
                .exists()
        );
        let out = lab
            .exec_on(
                node,
                &[
                    "/opt/kube/bin/installer",
                    "verify",
                    "probe",
                    "del",
                    "--id",
                    id,
                    "--bin-dir",
                    "/opt/kube/bin",
                ],
            )
            .expect("exec");
        ok(&out, "remove the pod");
    }
    assert_clean(lab, &Value::Null);
}
