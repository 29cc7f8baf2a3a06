//! The real agent binary in Kubernetes mode on a lab node (network namespace with its own
//! mounts), talking to the scripted API server bound on the lab's deploy address: subnet.env,
//! flannel.1, the annotations and NetworkUnavailable patches, peer entries from the node list
//! and their removal when the peer's Node is deleted (flannel-spec §3, §12.1, §12.5–§12.8).
//! Needs root and the lab's packages; skips with a notice otherwise.

mod common;

use common::fake_apiserver::{FakeApiServer, Gate, Reply, fixture};
use installer::lab::{Lab, LabGuard, LabNode, prereq};
use serde_json::{Value, json};
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const P: &str = "flannel.alpha.coreos.com";
const PEER_MAC: &str = "ae:3f:01:22:b4:c5";

/// The installer binary under test, copied into the lab's state directory (see
/// agent_lab_root.rs for why); None when it is not this tree's installer.
fn agent_bin(lab: &Lab) -> Option<PathBuf> {
    let src = std::env::var("INSTALLER_TEST_NODE_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_installer-node").into());
    let dst = lab.state_dir.join("installer-under-test");
    std::fs::copy(&src, &dst).ok()?;
    let ours = Command::new(&dst)
        .args(["agent", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--kube-subnet-mgr"));
    ours.then_some(dst)
}

fn sh_out(lab: &Lab, node: &LabNode, script: &str) -> String {
    let out = lab.sh_on(node, script).expect("run in node");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Node object (from the fixture's shape) with this name, podCIDR, address and annotations.
fn node_json(name: &str, cidr: &str, ip: &str, ann: &[(&str, String)]) -> Value {
    let mut n = fixture("kube/agent/node-a.json");
    n["metadata"]["name"] = json!(name);
    n["metadata"]["labels"]["kubernetes.io/hostname"] = json!(name);
    n["spec"] = json!({"podCIDR": cidr, "podCIDRs": [cidr]});
    n["status"]["addresses"] = json!([
        {"type": "InternalIP", "address": ip},
        {"type": "Hostname", "address": name}
    ]);
    for (k, v) in ann {
        n["metadata"]["annotations"][format!("{P}/{k}")] = json!(v);
    }
    n
}

fn list_item(mut n: Value) -> Value {
    let o = n.as_object_mut().unwrap();
    o.remove("kind");
    o.remove("apiVersion");
    n
}

/// Write net-conf.json, the kubeconfig and agent.json (Kubernetes mode) into the node.
fn write_kube_config(server: &FakeApiServer, node: &LabNode, network: ipnet::Ipv4Net) {
    let etc = node.host_path("/etc/kube-flannel");
    std::fs::create_dir_all(&etc).unwrap();
    server.kubeconfig(&etc);
    std::fs::write(
        etc.join("net-conf.json"),
        format!(r#"{{"Network":"{network}","Backend":{{"Type":"vxlan"}}}}"#),
    )
    .unwrap();
    let conf = json!({
        "node_name": node.name, "node_address": node.ip.to_string(),
        "datastore": "kubernetes", "kubeconfig": "/etc/kube-flannel/kubeconfig",
        "net_conf_path": "/etc/kube-flannel/net-conf.json",
        "subnet_file": "/run/flannel/subnet.env", "ip_masq": true,
    });
    std::fs::write(etc.join("agent.json"), conf.to_string()).unwrap();
}

/// Start `installer agent --config /etc/kube-flannel/agent.json` inside the node.
fn start_agent(lab: &Lab, node: &LabNode, bin: &Path) -> Agent {
    let log = node.host_path("/var/log/installer/agent-kube-test.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let out = File::create(&log).unwrap();
    let holder = lab.holder_pid(node).expect("node holder").to_string();
    let child = Command::new("nsenter")
        .args(["-t", &holder, "-n", "-m", "-u", "--"])
        .arg(bin)
        .args(["agent", "--config", "/etc/kube-flannel/agent.json"])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn agent");
    Agent {
        child: Some(child),
        log,
    }
}

/// A lab node and the binary, or None (with a notice) when the test cannot run here.
fn lab_or_skip(test: &str) -> Option<(LabGuard, PathBuf)> {
    if let Some(reason) = prereq::unavailable_reason() {
        eprintln!("skipping {test}: {reason}");
        return None;
    }
    let lab = LabGuard::up_or_skip(test, 1).expect("lab up")?;
    let Some(bin) = agent_bin(&lab) else {
        eprintln!("skipping {test}: no usable installer binary");
        return None;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    Some((lab, bin))
}

/// The agent process inside the node; killed on drop.
struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (≤ `timeout`) for the agent to exit by itself; its exit code.
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return s.code();
            }
            assert!(
                start.elapsed() < timeout,
                "agent still runs after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait (≤ 10 s); the exit code.
    fn term(&mut self) -> Option<i32> {
        let pid = self.child.as_ref()?.id();
        let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        self.wait_exit(Duration::from_secs(10))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn agent_kube_vxlan_peer_from_node_watch_root() {
    let Some((lab, bin)) = lab_or_skip("agent_kube_vxlan_peer_from_node_watch_root") else {
        return;
    };
    let node = &lab.nodes[0];
    let network: ipnet::Ipv4Net = lab.cluster_cidr.parse().unwrap();
    let mut slots = network.subnets(24).unwrap();
    let own = slots.nth(1).unwrap();
    let peer = slots.next().unwrap();
    let plain = slots.next().unwrap();
    // the peer's public address: on the node LAN, never answered (nothing is sent to it)
    let peer_ip = Ipv4Addr::from(u32::from(node.ip) + 100);

    let server = FakeApiServer::start_on(lab.deploy_ip.into());
    let node_path = format!("/api/v1/nodes/{}", node.name);
    let status_path = format!("{node_path}/status");
    let me = node_json(&node.name, &own.to_string(), &node.ip.to_string(), &[]);
    server.reply("GET", &node_path, Reply::json(200, me.clone()));
    server.reply("PATCH", &status_path, Reply::json(200, me.clone()));
    let peer_node = node_json(
        "peer-b",
        &peer.to_string(),
        &peer_ip.to_string(),
        &[
            ("kube-subnet-manager", "true".into()),
            ("backend-type", "vxlan".into()),
            (
                "backend-data",
                format!(r#"{{"VNI":1,"VtepMAC":"{PEER_MAC}"}}"#),
            ),
            ("public-ip", peer_ip.to_string()),
        ],
    );
    let plain_node = node_json("plain-c", &plain.to_string(), "198.18.0.1", &[]);
    let list = json!({
        "kind": "NodeList", "apiVersion": "v1",
        "metadata": {"resourceVersion": "2000"},
        "items": [list_item(me.clone()), list_item(peer_node.clone()), list_item(plain_node)],
    });
    server.reply("GET", "/api/v1/nodes", Reply::json(200, list));
    let gate = Gate::new();
    server.reply_watch("/api/v1/nodes", Reply::watch_until(vec![], &gate));
    let mut deleted = peer_node.clone();
    deleted["metadata"]["resourceVersion"] = json!("2100");
    server.reply_watch(
        "/api/v1/nodes",
        Reply::watch_then_hold(
            vec![json!({"type": "DELETED", "object": deleted})],
            Duration::from_secs(120),
        ),
    );

    write_kube_config(&server, node, network);
    let mut agent = start_agent(&lab, node, &bin);

    // §12.1: subnet.env from the podCIDR
    let env_path = node.host_path("/run/flannel/subnet.env");
    let env = wait_for("subnet.env", Duration::from_secs(30), || {
        std::fs::read_to_string(&env_path).ok()
    });
    let gw = Ipv4Addr::from(u32::from(own.network()) + 1);
    assert_eq!(
        env,
        format!(
            "FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={gw}/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
        ),
        "{}",
        agent.log()
    );
    // §12.4: flannel.1 with the lease address
    let addr = sh_out(&lab, node, "ip -o -4 addr show dev flannel.1");
    assert!(addr.contains(&format!("{}/32", own.network())), "{addr}");
    let link = sh_out(&lab, node, "ip -o link show flannel.1");
    let mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("flannel.1 MAC")
        .to_string();

    // §12.5/§12.6: annotations, then NetworkUnavailable=False, both on nodes/<name>/status
    server.wait_for(Duration::from_secs(10), "two status patches", |r| {
        r.iter().filter(|r| r.path == status_path).count() >= 2
    });
    let patches = server.requests_to("PATCH", &status_path);
    assert_eq!(
        patches[0].json(),
        json!({"metadata": {"annotations": {
            format!("{P}/backend-data"): format!(r#"{{"VNI":1,"VtepMAC":"{mac}"}}"#),
            format!("{P}/backend-type"): "vxlan",
            format!("{P}/kube-subnet-manager"): "true",
            format!("{P}/public-ip"): node.ip.to_string(),
        }}})
    );
    let cond = &patches[1].json()["status"]["conditions"][0];
    assert_eq!(cond["type"], "NetworkUnavailable");
    assert_eq!(cond["status"], "False");
    assert_eq!(cond["reason"], "FlannelIsUp");
    for p in &patches {
        assert_eq!(
            p.content_type.as_deref(),
            Some("application/strategic-merge-patch+json")
        );
    }

    // §12.7: route, neighbour and FDB entry for the annotated peer; none for the plain node
    let peer_net = peer.network();
    wait_for("vxlan entries for peer-b", Duration::from_secs(20), || {
        let routes = sh_out(&lab, node, "ip route");
        let neigh = sh_out(&lab, node, "ip neigh show dev flannel.1");
        let fdb = sh_out(&lab, node, "bridge fdb show dev flannel.1");
        (routes.lines().any(|l| {
            l.starts_with(&format!("{peer} via {peer_net} dev flannel.1")) && l.contains("onlink")
        }) && neigh.contains(&format!("{peer_net} lladdr {PEER_MAC} PERMANENT"))
            && fdb.contains(&format!("{PEER_MAC} dst {peer_ip} self permanent")))
        .then_some(())
    });
    assert!(
        !sh_out(&lab, node, "ip route").contains(&plain.to_string()),
        "§12.8: a node without kube-subnet-manager gets no route"
    );

    // §12.8: peer-b deleted (the held watch ends, the next one carries DELETED) → entries gone
    gate.open();
    wait_for("peer-b entries removed", Duration::from_secs(20), || {
        let routes = sh_out(&lab, node, "ip route");
        let neigh = sh_out(&lab, node, "ip neigh show dev flannel.1");
        let fdb = sh_out(&lab, node, "bridge fdb show dev flannel.1");
        (!routes.contains(&peer.to_string())
            && !neigh.contains(PEER_MAC)
            && !fdb.contains(PEER_MAC))
        .then_some(())
    });
    let log_text = agent.log();
    assert!(!log_text.contains("Lease has been revoked"), "{log_text}");

    // §12.16: SIGTERM → exit 0, subnet.env stays
    let code = agent.term();
    assert_eq!(code, Some(0), "{}", agent.log());
    assert!(env_path.exists());

    // `installer agent clean`: the annotations go (status patch with nulls), with the device
    let holder = lab.holder_pid(node).expect("node holder").to_string();
    let out = Command::new("nsenter")
        .args(["-t", &holder, "-n", "-m", "-u", "--"])
        .arg(&bin)
        .args(["agent", "clean", "--config", "/etc/kube-flannel/agent.json"])
        .output()
        .expect("run agent clean");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains(&format!("removed annotations {P}/* of node {}", node.name)),
        "{stdout}"
    );
    let last = server.requests_to("PATCH", &status_path).pop().unwrap();
    assert_eq!(
        last.json(),
        json!({"metadata": {"annotations": {
            format!("{P}/backend-type"): null,
            format!("{P}/backend-data"): null,
            format!("{P}/kube-subnet-manager"): null,
            format!("{P}/public-ip"): null,
        }}})
    );
    assert!(!sh_out(&lab, node, "ip -o link").contains("flannel.1"));
    assert!(!env_path.exists());
}

#[test]
fn agent_kube_no_pod_cidr_then_restart_keeps_mac_root() {
    let Some((lab, bin)) = lab_or_skip("agent_kube_no_pod_cidr_then_restart_keeps_mac_root") else {
        return;
    };
    let node = &lab.nodes[0];
    let network: ipnet::Ipv4Net = lab.cluster_cidr.parse().unwrap();
    let own = network.subnets(24).unwrap().nth(1).unwrap();
    let node_path = format!("/api/v1/nodes/{}", node.name);
    let status_path = format!("{node_path}/status");
    let env_path = node.host_path("/run/flannel/subnet.env");

    // §12.14: no podCIDR → exit 1, flannel's message, no subnet.env, no annotation patch
    let server = FakeApiServer::start_on(lab.deploy_ip.into());
    let mut bare = node_json(&node.name, "x", &node.ip.to_string(), &[]);
    bare["spec"] = json!({});
    server.reply("GET", &node_path, Reply::json(200, bare));
    write_kube_config(&server, node, network);
    let mut agent = start_agent(&lab, node, &bin);
    assert_eq!(
        agent.wait_exit(Duration::from_secs(20)),
        Some(1),
        "{}",
        agent.log()
    );
    let log = agent.log();
    assert!(
        log.contains(&format!("node \"{}\" pod cidr not assigned", node.name)),
        "{log}"
    );
    assert!(!env_path.exists());
    assert!(server.requests_to("PATCH", &status_path).is_empty());
    drop(server);

    // §12.17 (v0.25+), as after a reboot: flannel.1 is gone (the first run made one before it
    // failed) but the node still carries the annotations of a previous run → flannel.1 is
    // created with that MAC and the annotations are not patched again
    let _ = lab.sh_on(node, "ip link del flannel.1");
    let old_mac = "2e:5c:7a:11:90:3d";
    let server = FakeApiServer::start_on(lab.deploy_ip.into());
    let me = node_json(
        &node.name,
        &own.to_string(),
        &node.ip.to_string(),
        &[
            ("kube-subnet-manager", "true".into()),
            ("backend-type", "vxlan".into()),
            (
                "backend-data",
                format!(r#"{{"VNI":1,"VtepMAC":"{old_mac}"}}"#),
            ),
            ("public-ip", node.ip.to_string()),
        ],
    );
    server.reply("GET", &node_path, Reply::json(200, me.clone()));
    server.reply("PATCH", &status_path, Reply::json(200, me.clone()));
    let list = json!({
        "kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "3000"},
        "items": [list_item(me)],
    });
    server.reply("GET", "/api/v1/nodes", Reply::json(200, list));
    server.reply_watch(
        "/api/v1/nodes",
        Reply::watch_then_hold(vec![], Duration::from_secs(120)),
    );
    write_kube_config(&server, node, network);
    let mut agent = start_agent(&lab, node, &bin);
    wait_for("subnet.env", Duration::from_secs(30), || {
        std::fs::read_to_string(&env_path).ok()
    });
    let link = sh_out(&lab, node, "ip -o link show flannel.1");
    assert!(
        link.contains(&format!("link/ether {old_mac}")),
        "{link}\n{}",
        agent.log()
    );
    server.wait_for(
        Duration::from_secs(10),
        "the NetworkUnavailable patch",
        |r| r.iter().any(|r| r.path == status_path),
    );
    let patches = server.requests_to("PATCH", &status_path);
    assert_eq!(
        patches.len(),
        1,
        "only the condition, no annotation patch: {patches:#?}"
    );
    assert!(patches[0].json()["status"]["conditions"].is_array());
    assert_eq!(agent.term(), Some(0), "{}", agent.log());
    let _ = lab.sh_on(node, "ip link del flannel.1");
}
