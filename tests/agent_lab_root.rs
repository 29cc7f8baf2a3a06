//! The embedded agent on real lab nodes (network namespaces with their own mounts, etcd on
//! node1): subnet.env, devices, routes, neighbours, FDB, iptables, etcd leases, restarts, lease
//! expiry, etcd restarts, host-gw route repair, health endpoints, the cross-node datapath and
//! clean. Section numbers refer to /work/shared/flannel-spec.md. Needs root, the lab's packages
//! and etcdctl (Debian etcd-client); every test skips with a notice otherwise.

use installer::lab::{Lab, LabGuard, LabNode, etcd, prereq, sys};
use serde_json::Value;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PREFIX: &str = "/coreos.com/network";
const HEALTHZ_PORT: u16 = 9402;

// ---------------------------------------------------------------------------------------------
// harness

/// The node binary under test (`INSTALLER_TEST_NODE_BIN`, else the installer-node cargo built:
/// what setup pushes to nodes), copied into the lab's state directory so builds of other trees
/// sharing the target directory cannot replace it mid-test and the copy goes away with the lab;
/// None (with a notice) when it is not this tree's node binary.
fn agent_bin(lab: &Lab) -> Option<PathBuf> {
    let src = std::env::var("INSTALLER_TEST_NODE_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_installer-node").into());
    let dst = lab.state_dir.join("installer-under-test");
    std::fs::copy(&src, &dst).ok()?;
    let ours = Command::new(&dst)
        .args(["agent", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--iface-regex"));
    if !ours {
        eprintln!("{src} is not this tree's node binary (shared target dir?)");
        return None;
    }
    Some(dst)
}

/// A lab plus everything needed to drive agents in it; None (with a notice) when the test
/// cannot run here.
fn lab_or_skip(test: &str, nodes: usize) -> Option<(LabGuard, PathBuf)> {
    if let Some(reason) = prereq::unavailable_reason() {
        eprintln!("skipping {test}: {reason}");
        return None;
    }
    if Command::new("etcdctl").arg("version").output().is_err() {
        eprintln!("skipping {test}: etcdctl not found (Debian package etcd-client)");
        return None;
    }
    let lab = LabGuard::up_or_skip(test, nodes).expect("lab up")?;
    let Some(bin) = agent_bin(&lab) else {
        eprintln!("skipping {test}: no usable installer binary");
        return None;
    };
    Some((lab, bin))
}

fn etcdctl(lab: &Lab, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &lab.etcd_endpoint, "--dial-timeout", "3s"])
        .args(args)
        .output()
        .expect("run etcdctl")
}

fn etcd_put(lab: &Lab, key: &str, value: &str) {
    let out = etcdctl(lab, &["put", key, value]);
    assert!(out.status.success(), "etcdctl put {key}: {out:?}");
}

/// Every key under `<prefix>/subnets/` with value and lease id.
fn etcd_leases(lab: &Lab) -> Vec<(String, Value, i64)> {
    let out = etcdctl(
        lab,
        &[
            "get",
            "--prefix",
            &format!("{PREFIX}/subnets/"),
            "-w",
            "json",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let b64 = |s: &Value| {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.as_str().unwrap_or(""))
            .unwrap();
        String::from_utf8(bytes).unwrap()
    };
    v["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| {
                    (
                        b64(&kv["key"]),
                        serde_json::from_str(&b64(&kv["value"])).unwrap(),
                        kv["lease"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Run a shell script inside a node; returns stdout (status is checked by the caller if needed).
fn sh(lab: &Lab, node: &LabNode, script: &str) -> Output {
    lab.sh_on(node, script).expect("run in node")
}

fn sh_out(lab: &Lab, node: &LabNode, script: &str) -> String {
    String::from_utf8_lossy(&sh(lab, node, script).stdout).into_owned()
}

/// Poll `f` every 50 ms until it returns Some, or panic after `timeout` naming `what`.
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

/// Network config for a lab: its pod range, /24 per node.
fn net_config(lab: &Lab, backend: &str) -> String {
    format!(
        r#"{{"Network":"{}","SubnetLen":24,"Backend":{}}}"#,
        lab.cluster_cidr, backend
    )
}

/// The agent config file setup writes (templates/flannel/agent.json.j2 shape), etcd mode.
fn write_agent_config(lab: &Lab, node: &LabNode) {
    let conf = serde_json::json!({
        "node_name": node.name,
        "node_address": node.ip.to_string(),
        "public_ip": "",
        "iface": [],
        "iface_regex": [],
        "datastore": "etcd",
        "etcd": {"endpoints": [lab.etcd_endpoint], "prefix": PREFIX,
                 "cafile": null, "certfile": null, "keyfile": null},
        "net_conf_path": "/etc/kube-flannel/net-conf.json",
        "subnet_file": "/run/flannel/subnet.env",
        "ip_masq": true,
        "healthz": format!("{}:{HEALTHZ_PORT}", node.ip),
        "log_dir": "/var/log/installer",
    });
    let path = node.host_path("/etc/kube-flannel/agent.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
}

/// Agents running in the lab's nodes (children of the test, so exit codes are visible);
/// killed when dropped, also when a test fails.
struct Agents<'a> {
    lab: &'a Lab,
    bin: PathBuf,
    children: Vec<Option<Child>>,
}

impl<'a> Agents<'a> {
    fn new(lab: &'a Lab, bin: &Path) -> Self {
        for node in &lab.nodes {
            write_agent_config(lab, node);
        }
        Agents {
            lab,
            bin: bin.to_path_buf(),
            children: lab.nodes.iter().map(|_| None).collect(),
        }
    }

    /// The agent's stdout+stderr file (inside the node: /var/log/installer/agent-test.log).
    fn log_path(&self, i: usize) -> PathBuf {
        self.lab.nodes[i].host_path("/var/log/installer/agent-test.log")
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// Start `installer agent --config /etc/kube-flannel/agent.json EXTRA…` in node `i`.
    fn start(&mut self, i: usize, extra: &[&str]) -> u32 {
        assert!(self.children[i].is_none(), "agent {i} already running");
        let node = &self.lab.nodes[i];
        let holder = self.lab.holder_pid(node).expect("node holder").to_string();
        let log_path = self.log_path(i);
        std::fs::create_dir_all(log_path.parent().unwrap()).unwrap();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = Command::new("nsenter")
            .args(["-t", &holder, "-n", "-m", "-u", "--"])
            .arg(&self.bin)
            .args(["agent", "--config", "/etc/kube-flannel/agent.json"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn agent");
        let pid = child.id();
        self.children[i] = Some(child);
        pid
    }

    fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(Child::id)
    }

    /// Send a signal and wait (≤ 10 s) for the exit code.
    fn stop(&mut self, i: usize, signal: rustix::process::Signal) -> Option<i32> {
        let mut child = self.children[i].take()?;
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, signal);
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("agent {i} did not exit within 10 s of {signal:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for an agent to exit on its own.
    fn wait_exit(&mut self, i: usize, timeout: Duration) -> Option<i32> {
        let child = self.children[i].as_mut()?;
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.children[i] = None;
                return status.code();
            }
            assert!(
                start.elapsed() < timeout,
                "agent {i} still runs after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn running(&mut self, i: usize) -> bool {
        self.children[i]
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for Agents<'_> {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for node in &self.lab.nodes {
            let _ = self.lab.sh_on(node, "ip netns del pod 2>/dev/null");
        }
    }
}

/// subnet.env of node `i`, if written.
fn subnet_env(lab: &Lab, i: usize) -> Option<String> {
    std::fs::read_to_string(lab.nodes[i].host_path("/run/flannel/subnet.env")).ok()
}

/// FLANNEL_SUBNET as a network (`198.19.17.1/24` → `198.19.17.0/24`).
fn env_subnet(text: &str) -> ipnet::Ipv4Net {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))
        .expect("FLANNEL_SUBNET");
    line.parse::<ipnet::Ipv4Net>().unwrap().trunc()
}

fn wait_env(lab: &Lab, i: usize) -> String {
    wait_for(
        &format!("subnet.env on {}", lab.nodes[i].name),
        Duration::from_secs(20),
        || subnet_env(lab, i),
    )
}

/// The `link/ether` MAC of a device in a node.
fn link_mac(lab: &Lab, node: &LabNode, dev: &str) -> String {
    let out = sh_out(lab, node, &format!("ip -o link show {dev}"));
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC for {dev} on {}: {out}", node.name))
        .to_string()
}

/// The exact subnet.env flannel writes (§1, §12.1/12.2).
fn expected_env(lab: &Lab, subnet: ipnet::Ipv4Net, mtu: u32, masq: bool) -> String {
    let first = Ipv4Addr::from(u32::from(subnet.network()) + 1);
    format!(
        "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={first}/{}\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ={masq}\n",
        lab.cluster_cidr,
        subnet.prefix_len()
    )
}

/// §6 rules (F28 form) as iptables-save prints them.
fn expected_nat_rules(network: &str, subnet: ipnet::Ipv4Net) -> Vec<String> {
    let c = r#"-m comment --comment "flanneld masq""#;
    vec![
        format!("-A POSTROUTING {c} -j FLANNEL-POSTRTG"),
        format!("-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {c} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s {subnet} -d {network} {c} -j RETURN"),
        format!("-A FLANNEL-POSTRTG -s {network} -d {subnet} {c} -j RETURN"),
        format!("-A FLANNEL-POSTRTG ! -s {network} -d {subnet} {c} -j RETURN"),
        format!(
            "-A FLANNEL-POSTRTG -s {network} ! -d 224.0.0.0/4 {c} -j MASQUERADE --random-fully"
        ),
        format!("-A FLANNEL-POSTRTG ! -s {network} -d {network} {c} -j MASQUERADE --random-fully"),
    ]
}

fn expected_filter_rules(network: &str) -> Vec<String> {
    let c = r#"-m comment --comment "flanneld forward""#;
    vec![
        format!("-A FORWARD {c} -j FLANNEL-FWD"),
        format!("-A FLANNEL-FWD -s {network} {c} -j ACCEPT"),
        format!("-A FLANNEL-FWD -d {network} {c} -j ACCEPT"),
    ]
}

/// The flannel lines of iptables-save in a node, in order.
fn flannel_rules(lab: &Lab, node: &LabNode, table: &str) -> Vec<String> {
    sh_out(lab, node, &format!("iptables-save -t {table}"))
        .lines()
        .filter(|l| l.starts_with("-A") && l.contains("flanneld"))
        .map(str::to_string)
        .collect()
}

/// A pod-like namespace `pod` in node `i`: veth into bridge `cni0` holding the node's
/// FLANNEL_SUBNET gateway (as the CNI bridge plugin would), pod address `.2`.
fn add_pod(lab: &Lab, i: usize) -> Ipv4Addr {
    let subnet = env_subnet(&subnet_env(lab, i).expect("subnet.env before pods"));
    let gw = Ipv4Addr::from(u32::from(subnet.network()) + 1);
    let pod = Ipv4Addr::from(u32::from(subnet.network()) + 2);
    let script = format!(
        "set -e; sysctl -qw net.ipv4.ip_forward=1; ip netns add pod; \
         ip link add cni0 type bridge; ip addr add {gw}/24 dev cni0; ip link set cni0 up; \
         ip link add vpod type veth peer name eth0 netns pod; ip link set vpod master cni0 up; \
         ip -n pod addr add {pod}/24 dev eth0; ip -n pod link set eth0 up; \
         ip -n pod link set lo up; ip -n pod route add default via {gw}"
    );
    let out = sh(lab, &lab.nodes[i], &script);
    assert!(
        out.status.success(),
        "pod on {}: {out:?}",
        lab.nodes[i].name
    );
    pod
}

/// Ping from node `i`'s pod to `dst` (a few tries: the first packet may meet an unresolved
/// bridge neighbour).
fn pod_ping(lab: &Lab, i: usize, dst: Ipv4Addr) -> bool {
    (0..3).any(|_| {
        sh(
            lab,
            &lab.nodes[i],
            &format!("ip netns exec pod ping -c1 -W2 {dst}"),
        )
        .status
        .success()
    })
}

/// Wait until every node has the vxlan entries (§5.1, §12.7) for every other node.
fn wait_vxlan_mesh(lab: &Lab, subnets: &[ipnet::Ipv4Net], macs: &[String]) {
    for (i, node) in lab.nodes.iter().enumerate() {
        wait_for(
            &format!("vxlan entries for all peers on {}", node.name),
            Duration::from_secs(20),
            || {
                let routes = sh_out(lab, node, "ip route");
                let neigh = sh_out(lab, node, "ip neigh show dev flannel.1");
                let fdb = sh_out(lab, node, "bridge fdb show dev flannel.1");
                let ok = (0..lab.nodes.len()).filter(|&j| j != i).all(|j| {
                    let s = subnets[j];
                    let net = s.network();
                    routes.contains(&format!("{s} via {net} dev flannel.1"))
                        && routes
                            .lines()
                            .any(|l| l.starts_with(&s.to_string()) && l.contains("onlink"))
                        && neigh.contains(&format!("{net} lladdr {} PERMANENT", macs[j]))
                        && fdb.contains(&format!(
                            "{} dst {} self permanent",
                            macs[j], lab.nodes[j].ip
                        ))
                });
                ok.then_some(())
            },
        );
    }
}

fn http(node: &LabNode, path: &str) -> Option<(u16, String)> {
    sys::http_get(
        &format!("http://{}:{HEALTHZ_PORT}{path}", node.ip),
        Duration::from_secs(2),
    )
    .ok()
    .map(|(code, body)| (code, String::from_utf8_lossy(&body).into_owned()))
}

/// Run `installer agent clean` in a node and prove nothing of the agent is left there (§7 task).
fn clean_and_check(lab: &Lab, bin: &Path, i: usize) {
    let node = &lab.nodes[i];
    let out = lab
        .exec_on(
            node,
            &[
                bin.to_str().unwrap(),
                "agent",
                "clean",
                "--config",
                "/etc/kube-flannel/agent.json",
            ],
        )
        .unwrap();
    assert!(out.status.success(), "clean on {}: {out:?}", node.name);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("removed /run/flannel/subnet.env"),
        "{report}"
    );
    assert!(
        report.contains("iptables chain FLANNEL-POSTRTG"),
        "{report}"
    );
    let links = sh_out(lab, node, "ip -o link show");
    assert!(!links.contains("flannel."), "{links}");
    let routes = sh_out(lab, node, "ip route");
    assert!(
        !routes
            .lines()
            .any(|l| l.starts_with("198.19.") && l.contains(" via ")),
        "agent routes left on {}: {routes}",
        node.name
    );
    let rules = sh_out(lab, node, "iptables-save");
    assert!(!rules.contains("FLANNEL"), "{rules}");
    assert!(subnet_env(lab, i).is_none());
    let own = etcd_leases(lab)
        .into_iter()
        .filter(|(_, v, _)| v["PublicIP"] == node.ip.to_string())
        .count();
    assert_eq!(own, 0, "lease of {} still in etcd", node.name);
}

// ---------------------------------------------------------------------------------------------
// tests

/// vxlan on three nodes: §1 subnet.env bytes, §4 etcd keys/values/TTL, §5.1/§12.4 device,
/// §12.7 per-peer entries, §6 rules, /healthz + /readyz, pod-to-pod pings, §7 restart keeping the
/// subnet, MAC and every peer route, SIGTERM leaving the datapath, and clean.
#[test]
fn agent_vxlan_three_nodes_root() {
    let Some((lab, bin)) = lab_or_skip("agent_vxlan_three_nodes_root", 3) else {
        return;
    };
    etcd_put(
        &lab,
        &format!("{PREFIX}/config"),
        &net_config(&lab, r#"{"Type":"vxlan"}"#),
    );
    let mut agents = Agents::new(&lab, &bin);
    for i in 0..3 {
        agents.start(i, &[]);
    }
    let network: ipnet::Ipv4Net = lab.cluster_cidr.parse().unwrap();
    let mut subnets = Vec::new();
    for i in 0..3 {
        let env = wait_env(&lab, i);
        let subnet = env_subnet(&env);
        // §1/§12.1: exact bytes, mode 0644
        assert_eq!(
            env,
            expected_env(&lab, subnet, 1450, true),
            "{}",
            agents.log(i)
        );
        let mode = std::fs::metadata(lab.nodes[i].host_path("/run/flannel/subnet.env"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        // §2: inside the Network, /24, never the first subnet
        assert!(network.contains(&subnet) && subnet.prefix_len() == 24);
        assert_ne!(subnet.network(), network.network());
        subnets.push(subnet);
    }
    let mut unique = subnets.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "subnets must differ: {subnets:?}");

    // §5.1/§12.4: the device
    let mut macs = Vec::new();
    for (i, node) in lab.nodes.iter().enumerate() {
        let d = sh_out(&lab, node, "ip -d link show flannel.1");
        for want in [
            "vxlan id 1 ".to_string(),
            format!("local {} ", node.ip),
            "dev eth0 ".into(),
            "dstport 8472 ".into(),
            "nolearning".into(),
            "mtu 1450 ".into(),
            ",UP,".into(),
        ] {
            assert!(d.contains(&want), "{}: {want:?} missing in {d}", node.name);
        }
        let addrs = sh_out(&lab, node, "ip -4 -o addr show dev flannel.1");
        let v4: Vec<&str> = addrs
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3))
            .collect();
        assert_eq!(v4, [format!("{}/32", subnets[i].network())], "{addrs}");
        let mac = link_mac(&lab, node, "flannel.1");
        let first = u8::from_str_radix(&mac[..2], 16).unwrap();
        assert_eq!(first & 0x03, 0x02, "locally administered unicast MAC {mac}");
        macs.push(mac);
    }

    // §4/§12.19: lease keys and values; 24 h TTL
    let leases = etcd_leases(&lab);
    assert_eq!(leases.len(), 3, "{leases:?}");
    for (i, node) in lab.nodes.iter().enumerate() {
        let key = format!(
            "{PREFIX}/subnets/{}-{}",
            subnets[i].network(),
            subnets[i].prefix_len()
        );
        let (_, value, lease) = leases
            .iter()
            .find(|(k, _, _)| *k == key)
            .unwrap_or_else(|| panic!("{key} missing: {leases:?}"));
        assert_eq!(
            *value,
            serde_json::json!({"PublicIP": node.ip.to_string(), "PublicIPv6": null,
                               "BackendType": "vxlan",
                               "BackendData": {"VNI": 1, "VtepMAC": macs[i]}})
        );
        assert_ne!(*lease, 0, "lease key without TTL");
        let ttl = etcdctl(&lab, &["lease", "timetolive", &format!("{lease:x}")]);
        let ttl = String::from_utf8_lossy(&ttl.stdout).into_owned();
        assert!(ttl.contains("granted with TTL(86400s)"), "{ttl}");
    }

    // §5.1/§12.7: neighbour, FDB and onlink route for both peers
    wait_vxlan_mesh(&lab, &subnets, &macs);

    // §6/§12.12/§12.13: rules, in order, once
    for (i, node) in lab.nodes.iter().enumerate() {
        assert_eq!(
            flannel_rules(&lab, node, "nat"),
            expected_nat_rules(&lab.cluster_cidr, subnets[i])
        );
        assert_eq!(
            flannel_rules(&lab, node, "filter"),
            expected_filter_rules(&lab.cluster_cidr)
        );
    }

    // §7/§12.18: health endpoints
    for node in &lab.nodes {
        assert_eq!(
            http(node, "/healthz"),
            Some((200, "flanneld is running".into()))
        );
        assert_eq!(
            http(node, "/readyz"),
            Some((200, "flanneld is ready".into()))
        );
    }
    let log = agents.log(0);
    for want in [
        format!(
            "Using interface with name eth0 and address {}",
            lab.nodes[0].ip
        ),
        format!("Lease acquired: {}", subnets[0]),
        format!("Added peer {}", subnets[1]),
        format!("Added peer {}", subnets[2]),
    ] {
        assert!(log.contains(&want), "{want:?} not in log:\n{log}");
    }

    // the datapath: every pod reaches every other node's pod through flannel.1
    let pods: Vec<Ipv4Addr> = (0..3).map(|i| add_pod(&lab, i)).collect();
    for i in 0..3 {
        for (j, pod) in pods.iter().enumerate() {
            if i != j {
                assert!(pod_ping(&lab, i, *pod), "pod {i} -> pod {j} ({pod})");
            }
        }
    }
    let tx_before = sh_out(&lab, &lab.nodes[0], "cat /proc/net/dev | grep flannel.1");
    assert!(pod_ping(&lab, 0, pods[1]));
    let tx_after = sh_out(&lab, &lab.nodes[0], "cat /proc/net/dev | grep flannel.1");
    assert_ne!(tx_before, tx_after, "ping did not go through flannel.1");

    // §7/§12.16: SIGTERM → exit 0, datapath stays; §12.17: restart keeps subnet, MAC, bytes
    let env_before = subnet_env(&lab, 1).unwrap();
    assert_eq!(agents.stop(1, rustix::process::Signal::TERM), Some(0));
    assert!(agents.log(1).contains("Received SIGTERM"));
    assert_eq!(link_mac(&lab, &lab.nodes[1], "flannel.1"), macs[1]);
    assert_eq!(subnet_env(&lab, 1).as_deref(), Some(env_before.as_str()));
    assert_eq!(flannel_rules(&lab, &lab.nodes[1], "nat").len(), 7);
    assert!(
        pod_ping(&lab, 0, pods[1]),
        "datapath must survive the agent's exit"
    );
    // restart while node1 watches node2's route: it must never disappear
    let env_path = lab.nodes[1].host_path("/run/flannel/subnet.env");
    let mtime = std::fs::metadata(&env_path).unwrap().modified().unwrap();
    agents.start(1, &[]);
    let route = format!("{} via {} dev flannel.1", subnets[1], subnets[1].network());
    wait_for(
        "subnet.env rewritten after restart",
        Duration::from_secs(20),
        || {
            let routes = sh_out(&lab, &lab.nodes[0], "ip route");
            assert!(
                routes.contains(&route),
                "peer route dropped during restart: {routes}"
            );
            let m = std::fs::metadata(&env_path).ok()?.modified().ok()?;
            (m != mtime).then_some(())
        },
    );
    assert_eq!(
        subnet_env(&lab, 1).unwrap(),
        env_before,
        "byte-identical subnet.env"
    );
    assert_eq!(
        link_mac(&lab, &lab.nodes[1], "flannel.1"),
        macs[1],
        "same VtepMAC"
    );
    assert!(
        agents
            .log(1)
            .contains("Reusing existing vxlan device flannel.1")
    );
    assert!(
        agents.log(1).contains("for current IP"),
        "lease reused by public IP"
    );
    assert_eq!(etcd_leases(&lab).len(), 3);
    assert_eq!(
        flannel_rules(&lab, &lab.nodes[1], "nat"),
        expected_nat_rules(&lab.cluster_cidr, subnets[1]),
        "no duplicate rules after restart"
    );
    wait_vxlan_mesh(&lab, &subnets, &macs);

    // a device deleted by hand comes back with its peers (F28 recreates flannel.1)
    sh(&lab, &lab.nodes[2], "ip link del flannel.1");
    wait_for(
        "flannel.1 recreated on node3",
        Duration::from_secs(20),
        || {
            let r = sh_out(&lab, &lab.nodes[2], "ip route");
            r.contains(&format!(
                "{} via {} dev flannel.1",
                subnets[0],
                subnets[0].network()
            ))
            .then_some(())
        },
    );
    assert_eq!(link_mac(&lab, &lab.nodes[2], "flannel.1"), macs[2]);
    assert!(pod_ping(&lab, 2, pods[0]));

    // after a reboot the device is gone but the lease is not: the MAC comes from the lease
    assert_eq!(agents.stop(2, rustix::process::Signal::TERM), Some(0));
    assert!(
        sh(&lab, &lab.nodes[2], "ip link del flannel.1")
            .status
            .success()
    );
    agents.start(2, &[]);
    wait_for(
        "flannel.1 recreated from the lease",
        Duration::from_secs(20),
        || {
            agents
                .log(2)
                .contains("(recovered from the previous lease)")
                .then_some(())
        },
    );
    assert_eq!(link_mac(&lab, &lab.nodes[2], "flannel.1"), macs[2]);
    wait_vxlan_mesh(&lab, &subnets, &macs);
    assert!(pod_ping(&lab, 2, pods[1]));

    // clean: stop the agents first, as `installer clean flannel` does
    for i in 0..3 {
        assert_eq!(agents.stop(i, rustix::process::Signal::TERM), Some(0));
    }
    for i in 0..3 {
        clean_and_check(&lab, &bin, i);
    }
    assert!(etcd_leases(&lab).is_empty());
}

/// host-gw on three nodes: §2 config retried every second (missing, invalid) with /readyz 503
/// and no subnet.env; §5.2 routes via peers' addresses, repaired within ~10 s after a manual
/// delete; an unreachable peer is logged and skipped; §6 resync restores a deleted rule;
/// pod-to-pod pings; clean.
#[test]
fn agent_hostgw_three_nodes_root() {
    let Some((lab, bin)) = lab_or_skip("agent_hostgw_three_nodes_root", 3) else {
        return;
    };
    let mut agents = Agents::new(&lab, &bin);
    for i in 0..3 {
        agents.start(i, &["--iptables-resync", "1"]);
    }
    // no config yet: alive, not ready, retrying (§2, §7)
    for (i, node) in lab.nodes.iter().enumerate() {
        wait_for("healthz", Duration::from_secs(10), || {
            http(node, "/healthz")
        });
        assert_eq!(
            http(node, "/readyz"),
            Some((503, "flanneld is not ready yet".into()))
        );
        wait_for("config retries in the log", Duration::from_secs(10), || {
            let log = agents.log(i);
            (log.matches("Couldn't fetch network config").count() >= 2
                && log.contains("flannel config not found in etcd store"))
            .then_some(())
        });
    }
    // an invalid config is retried too (§12.21)
    etcd_put(
        &lab,
        &format!("{PREFIX}/config"),
        r#"{"Network":"198.19.255.0/29","Backend":{"Type":"host-gw"}}"#,
    );
    wait_for(
        "validation error in the log",
        Duration::from_secs(10),
        || {
            agents
                .log(0)
                .contains("network is too small. Minimum useful network prefix is /28")
                .then_some(())
        },
    );
    assert!(subnet_env(&lab, 0).is_none());
    assert!(agents.running(0));
    etcd_put(
        &lab,
        &format!("{PREFIX}/config"),
        &net_config(&lab, r#"{"Type":"host-gw"}"#),
    );
    let mut subnets = Vec::new();
    for i in 0..3 {
        let env = wait_env(&lab, i);
        let subnet = env_subnet(&env);
        assert_eq!(
            env,
            expected_env(&lab, subnet, 1500, true),
            "§12.2 host-gw MTU"
        );
        subnets.push(subnet);
    }
    for node in &lab.nodes {
        assert_eq!(
            http(node, "/readyz"),
            Some((200, "flanneld is ready".into()))
        );
    }
    // §4: host-gw values carry no BackendData
    for (_, value, _) in etcd_leases(&lab) {
        assert_eq!(value["BackendType"], "host-gw");
        assert!(value.get("BackendData").is_none(), "{value}");
        assert_eq!(value["PublicIPv6"], Value::Null);
    }
    // §5.2/§12.11: routes via the peers' addresses on eth0
    for (i, node) in lab.nodes.iter().enumerate() {
        wait_for("host-gw routes", Duration::from_secs(20), || {
            let routes = sh_out(&lab, node, "ip route");
            (0..3)
                .filter(|&j| j != i)
                .all(|j| {
                    routes.contains(&format!("{} via {} dev eth0", subnets[j], lab.nodes[j].ip))
                })
                .then_some(())
        });
        assert!(
            sh_out(&lab, node, "ip -o link show")
                .find("flannel.")
                .is_none()
        );
    }
    let pods: Vec<Ipv4Addr> = (0..3).map(|i| add_pod(&lab, i)).collect();
    for i in 0..3 {
        for (j, pod) in pods.iter().enumerate() {
            if i != j {
                assert!(pod_ping(&lab, i, *pod), "pod {i} -> pod {j} ({pod})");
            }
        }
    }

    // §12.11: a route deleted by hand is back within ~10 s
    let node0 = &lab.nodes[0];
    let out = sh(&lab, node0, &format!("ip route del {}", subnets[1]));
    assert!(out.status.success(), "{out:?}");
    let deleted = Instant::now();
    wait_for("route recovered", Duration::from_secs(15), || {
        sh_out(&lab, node0, "ip route")
            .contains(&format!("{} via {} dev eth0", subnets[1], lab.nodes[1].ip))
            .then_some(())
    });
    eprintln!("host-gw route restored after {:?}", deleted.elapsed());
    assert!(
        agents
            .log(0)
            .contains(&format!("Route recovered {}", subnets[1]))
    );

    // §12.12: a deleted masquerade rule comes back with the resync
    let del = sh(
        &lab,
        node0,
        &format!(
            "iptables -t nat -D FLANNEL-POSTRTG -s {0} ! -d 224.0.0.0/4 -m comment --comment 'flanneld masq' -j MASQUERADE --random-fully",
            lab.cluster_cidr
        ),
    );
    assert!(del.status.success(), "{del:?}");
    wait_for("masquerade rules restored", Duration::from_secs(10), || {
        (flannel_rules(&lab, node0, "nat") == expected_nat_rules(&lab.cluster_cidr, subnets[0]))
            .then_some(())
    });

    // §5.2: a peer on an unreachable network is logged and skipped; the agent keeps running
    let network: ipnet::Ipv4Net = lab.cluster_cidr.parse().unwrap();
    let taken: Vec<_> = subnets.clone();
    let far = network
        .subnets(24)
        .unwrap()
        .skip(1)
        .find(|s| !taken.contains(s))
        .unwrap();
    etcd_put(
        &lab,
        &format!("{PREFIX}/subnets/{}-24", far.network()),
        r#"{"PublicIP":"198.18.250.9","PublicIPv6":null,"BackendType":"host-gw"}"#,
    );
    wait_for("unreachable peer logged", Duration::from_secs(10), || {
        agents
            .log(0)
            .contains(&format!("Error adding route to {far} via 198.18.250.9"))
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(agents.running(0) && agents.running(1) && agents.running(2));
    assert!(pod_ping(&lab, 0, pods[2]), "other peers unaffected");
    // its removal is harmless too
    assert!(
        etcdctl(
            &lab,
            &["del", &format!("{PREFIX}/subnets/{}-24", far.network())]
        )
        .status
        .success()
    );

    for i in 0..3 {
        assert_eq!(agents.stop(i, rustix::process::Signal::INT), Some(0));
    }
    for i in 0..3 {
        clean_and_check(&lab, &bin, i);
    }
}

/// §4 lease lifecycle with a short TTL: renewals keep running agents' keys; a node stopped for
/// good vanishes from its peers when its lease expires; etcd restarted under running agents →
/// they recover and program a peer that appears afterwards; a deleted own key makes the agent
/// exit 0 with "Lease has been revoked".
#[test]
fn agent_lease_expiry_and_etcd_restart_root() {
    let Some((lab, bin)) = lab_or_skip("agent_lease_expiry_and_etcd_restart_root", 3) else {
        return;
    };
    etcd_put(
        &lab,
        &format!("{PREFIX}/config"),
        &net_config(&lab, r#"{"Type":"vxlan"}"#),
    );
    let ttl = ["--lease-ttl", "6"];
    let mut agents = Agents::new(&lab, &bin);
    for i in 0..3 {
        agents.start(i, &ttl);
    }
    let subnets: Vec<_> = (0..3).map(|i| env_subnet(&wait_env(&lab, i))).collect();
    let macs: Vec<String> = lab
        .nodes
        .iter()
        .map(|n| link_mac(&lab, n, "flannel.1"))
        .collect();
    wait_vxlan_mesh(&lab, &subnets, &macs);

    // renewals: after two TTLs every key is still there
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(etcd_leases(&lab).len(), 3, "renewals keep the keys");
    assert!(agents.log(0).contains("Lease renewed"), "{}", agents.log(0));

    // node3 stops for good (SIGKILL: no chance to do anything); its lease expires
    agents.stop(2, rustix::process::Signal::KILL);
    let gone = Instant::now();
    for i in 0..2 {
        let node = &lab.nodes[i];
        wait_for("node3's entries removed", Duration::from_secs(15), || {
            let routes = sh_out(&lab, node, "ip route");
            let fdb = sh_out(&lab, node, "bridge fdb show dev flannel.1");
            let neigh = sh_out(&lab, node, "ip neigh show dev flannel.1");
            (!routes.contains(&subnets[2].to_string())
                && !fdb.contains(&macs[2])
                && !neigh.contains(&subnets[2].network().to_string()))
            .then_some(())
        });
    }
    eprintln!("expired peer removed after {:?} (TTL 6 s)", gone.elapsed());
    assert!(
        gone.elapsed() >= Duration::from_secs(2),
        "removed before the lease could expire"
    );
    assert_eq!(etcd_leases(&lab).len(), 2);

    // etcd restarted under running agents
    let tools = prereq::Probe::system().check().unwrap();
    let pid = etcd::pid(&lab).expect("etcd pid");
    sys::terminate(pid, Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(3));
    etcd::start(&tools, &lab).expect("restart etcd");
    // a new peer after the restart is still programmed: node3 comes back
    agents.start(2, &ttl);
    let s3 = env_subnet(&wait_env(&lab, 2));
    let m3 = link_mac(&lab, &lab.nodes[2], "flannel.1");
    assert_eq!(m3, macs[2], "device kept its MAC");
    let subnets = vec![subnets[0], subnets[1], s3];
    let macs = vec![macs[0].clone(), macs[1].clone(), m3];
    wait_vxlan_mesh(&lab, &subnets, &macs);
    assert!(agents.running(0) && agents.running(1));
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(
        etcd_leases(&lab).len(),
        3,
        "renewals resumed after the etcd restart"
    );

    // §12.20: deleting the own key while running → exit 0 "Lease has been revoked"
    let key = format!("{PREFIX}/subnets/{}-24", subnets[1].network());
    assert!(etcdctl(&lab, &["del", &key]).status.success());
    assert_eq!(agents.wait_exit(1, Duration::from_secs(5)), Some(0));
    assert!(
        agents
            .log(1)
            .contains("Lease has been revoked. Shutting down daemon.")
    );
    // the others drop node2 right away
    wait_for("node2 removed on node1", Duration::from_secs(5), || {
        (!sh_out(&lab, &lab.nodes[0], "ip route").contains(&subnets[1].to_string())).then_some(())
    });
    // §12.20: restarted with subnet.env saying its subnet, it takes that subnet back
    agents.start(1, &ttl);
    wait_for(
        "node2 back on its old subnet",
        Duration::from_secs(20),
        || {
            etcd_leases(&lab)
                .iter()
                .any(|(k, v, _)| *k == key && v["PublicIP"] == lab.nodes[1].ip.to_string())
                .then_some(())
        },
    );
    assert!(agents.log(1).contains("Trying the previous subnet"));
}

/// §7/§11: the interface is the one holding the node's inventory address even when the default
/// route points elsewhere; --iface-regex that matches nothing fails with the interfaces listed;
/// §5.2: host-gw refuses a NAT'd --public-ip; §5.1 DirectRouting on one L2 segment.
#[test]
fn agent_interface_choice_and_direct_routing_root() {
    let Some((lab, bin)) = lab_or_skip("agent_interface_choice_and_direct_routing_root", 2) else {
        return;
    };
    etcd_put(
        &lab,
        &format!("{PREFIX}/config"),
        &net_config(&lab, r#"{"Type":"vxlan","DirectRouting":true}"#),
    );
    // node1 gets a second NIC that carries the default route
    let n1 = &lab.nodes[0];
    let out = sh(
        &lab,
        n1,
        "set -e; ip link add ext0 type veth peer name ext0p; ip addr add 198.18.251.1/30 dev ext0; \
         ip link set ext0 up; ip link set ext0p up; ip route replace default via 198.18.251.2 dev ext0",
    );
    assert!(out.status.success(), "{out:?}");
    let mut agents = Agents::new(&lab, &bin);

    // nothing matches --iface-regex: exit 1 naming the interfaces
    agents.start(0, &["--iface-regex", "^bond[0-9]+$"]);
    assert_eq!(agents.wait_exit(0, Duration::from_secs(15)), Some(1));
    let log = agents.log(0);
    assert!(
        log.contains(
            "Failed to find interface to use that matches the interfaces and/or regexes provided"
        ),
        "{log}"
    );
    assert!(log.contains(&format!("eth0 {}/24", n1.ip)) && log.contains("ext0 198.18.251.1/30"));
    assert!(subnet_env(&lab, 0).is_none());

    // default: the node address's interface, not the default route's
    agents.start(0, &[]);
    agents.start(1, &[]);
    let s: Vec<_> = (0..2).map(|i| env_subnet(&wait_env(&lab, i))).collect();
    let log = agents.log(0);
    assert!(
        log.contains(&format!(
            "Using interface with name eth0 and address {}",
            n1.ip
        )),
        "{log}"
    );
    let d = sh_out(&lab, n1, "ip -d link show flannel.1");
    assert!(d.contains(&format!("local {} dev eth0", n1.ip)), "{d}");
    // DirectRouting (§5.1, §12.10): same L2 → plain routes via the peer, no flannel.1 entries
    for (i, node) in lab.nodes.iter().enumerate() {
        let peer = 1 - i;
        wait_for("direct route", Duration::from_secs(20), || {
            sh_out(&lab, node, "ip route")
                .contains(&format!("{} via {} dev eth0", s[peer], lab.nodes[peer].ip))
                .then_some(())
        });
        assert!(
            sh_out(&lab, node, "ip neigh show dev flannel.1")
                .trim()
                .is_empty()
        );
        assert!(!sh_out(&lab, node, "bridge fdb show dev flannel.1").contains(" dst "));
    }
    let pods: Vec<Ipv4Addr> = (0..2).map(|i| add_pod(&lab, i)).collect();
    assert!(pod_ping(&lab, 0, pods[1]) && pod_ping(&lab, 1, pods[0]));
    for i in 0..2 {
        assert_eq!(agents.stop(i, rustix::process::Signal::TERM), Some(0));
    }
    for i in 0..2 {
        clean_and_check(&lab, &bin, i);
    }

    // host-gw refuses a public address that is not the interface's (NAT)
    let prefix = "/nat-test";
    etcd_put(
        &lab,
        &format!("{prefix}/config"),
        &net_config(&lab, r#"{"Type":"host-gw"}"#),
    );
    agents.start(
        0,
        &["--etcd-prefix", prefix, "--public-ip", "198.18.251.77"],
    );
    assert_eq!(agents.wait_exit(0, Duration::from_secs(15)), Some(1));
    assert!(agents.log(0).contains(
        "your PublicIP differs from interface IP, meaning that probably you're on a NAT, which is not supported by host-gw backend"
    ));
    let _ = sh(&lab, n1, "ip link del ext0");
}

/// §4: etcd over TLS with a client certificate (kubeasz's etcd is https): the agent reads the
/// config, creates its lease and writes subnet.env through `--etcd-cafile/certfile/keyfile`;
/// without the client certificate it only logs the failure and retries.
#[test]
fn agent_etcd_tls_root() {
    let Some((lab, bin)) = lab_or_skip("agent_etcd_tls_root", 1) else {
        return;
    };
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipping agent_etcd_tls_root: openssl not found");
        return;
    }
    let node = &lab.nodes[0];
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let script = format!(
        "set -e; cd {d}; \
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
           -keyout ca.key -out ca.pem -subj /CN=agent-test-ca 2>/dev/null; \
         for who in server client; do \
           openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -keyout $who.key -out $who.csr -subj /CN=$who 2>/dev/null; done; \
         printf 'subjectAltName=IP:{ip}\\nextendedKeyUsage=serverAuth,clientAuth\\n' > server.ext; \
         printf 'extendedKeyUsage=clientAuth\\n' > client.ext; \
         for who in server client; do \
           openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
             -out $who.pem -extfile $who.ext 2>/dev/null; done",
        ip = node.ip
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "certificates: {out:?}");
    // a second etcd on node1, https only, client certificates required
    let endpoint = format!("https://{}:2391", node.ip);
    let holder = lab.holder_pid(node).unwrap().to_string();
    let etcd_log = File::create(dir.path().join("etcd.log")).unwrap();
    let mut etcd_child = Command::new("nsenter")
        .args([
            "-t", &holder, "-n", "-m", "-u", "--", "etcd", "--name", "tls",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
        ])
        .args(["--listen-peer-urls", "http://127.0.0.1:2392"])
        .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2392"])
        .args(["--initial-cluster", "tls=http://127.0.0.1:2392"])
        .arg("--cert-file")
        .arg(dir.path().join("server.pem"))
        .arg("--key-file")
        .arg(dir.path().join("server.key"))
        .arg("--trusted-ca-file")
        .arg(dir.path().join("ca.pem"))
        .arg("--client-cert-auth")
        .stdin(Stdio::null())
        .stdout(etcd_log.try_clone().unwrap())
        .stderr(etcd_log)
        .spawn()
        .unwrap();
    struct KillOnDrop<'a>(&'a mut Child);
    impl Drop for KillOnDrop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _etcd_guard = KillOnDrop(&mut etcd_child);
    let file = |n: &str| dir.path().join(n).display().to_string();
    let tls_etcdctl = |args: &[&str]| {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoint, "--dial-timeout", "2s"])
            .args(["--cacert", &file("ca.pem"), "--cert", &file("client.pem")])
            .args(["--key", &file("client.key")])
            .args(args)
            .output()
            .unwrap()
    };
    wait_for("TLS etcd up", Duration::from_secs(20), || {
        tls_etcdctl(&[
            "put",
            &format!("{PREFIX}/config"),
            &net_config(&lab, r#"{"Type":"host-gw"}"#),
        ])
        .status
        .success()
        .then_some(())
    });
    let mut agents = Agents::new(&lab, &bin);
    // no client certificate: etcd refuses, the agent keeps retrying
    agents.start(
        0,
        &[
            "--etcd-endpoints",
            &endpoint,
            "--etcd-cafile",
            &file("ca.pem"),
        ],
    );
    wait_for("TLS refusal logged", Duration::from_secs(15), || {
        (agents
            .log(0)
            .matches("Couldn't fetch network config")
            .count()
            >= 2)
            .then_some(())
    });
    assert!(agents.running(0) && subnet_env(&lab, 0).is_none());
    assert_eq!(agents.stop(0, rustix::process::Signal::TERM), Some(0));
    // with it: lease and subnet.env
    agents.start(
        0,
        &[
            "--etcd-endpoints",
            &endpoint,
            "--etcd-cafile",
            &file("ca.pem"),
            "--etcd-certfile",
            &file("client.pem"),
            "--etcd-keyfile",
            &file("client.key"),
        ],
    );
    let subnet = env_subnet(&wait_env(&lab, 0));
    let out = tls_etcdctl(&[
        "get",
        "--prefix",
        "--keys-only",
        &format!("{PREFIX}/subnets/"),
    ]);
    let keys = String::from_utf8_lossy(&out.stdout);
    assert!(
        keys.contains(&format!("{PREFIX}/subnets/{}-24", subnet.network())),
        "{keys}\n{}",
        agents.log(0)
    );
    assert_eq!(agents.stop(0, rustix::process::Signal::TERM), Some(0));
}

// ---------------------------------------------------------------------------------------------
// benchmark

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn vm_hwm_kib(pid: u32) -> u64 {
    status_field(pid, "VmHWM")
}

/// A `/proc/<pid>/status` field in KiB (or count, for `Threads`); 0 when absent.
fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Where a process's resident memory is now, from /proc/<pid>/smaps (KiB): the binary's own
/// file pages, other files (libc, ld.so), the brk heap, the main stack and other anonymous
/// mappings (mmap'ed malloc arenas and chunks, thread stacks), plus the thread count.
fn memory_breakdown(pid: u32, bin: &Path) -> String {
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return "smaps unreadable".into();
    };
    let bin_name = bin.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let (mut exe, mut files, mut heap, mut stack, mut anon) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut current = 0usize; // 0 exe, 1 files, 2 heap, 3 stack, 4 anon
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let path = words.nth(4).unwrap_or("");
            current = match path {
                "" => 4,
                "[heap]" => 2,
                "[stack]" => 3,
                p if p.starts_with('[') => 4,
                p if !bin_name.is_empty() && p.ends_with(bin_name) => 0,
                _ => 1,
            };
        } else if first == "Rss:" {
            let kib: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            *[&mut exe, &mut files, &mut heap, &mut stack, &mut anon][current] += kib;
        }
    }
    format!(
        "VmHWM {} VmRSS {} KiB = binary {exe} + other files {files} + heap {heap} + stack {stack} + other anon {anon}; {} threads",
        status_field(pid, "VmHWM"),
        status_field(pid, "VmRSS"),
        status_field(pid, "Threads"),
    )
}

/// Agent figures: peak RSS, start → subnet.env, and start of a joining node → its route on
/// every peer (p50/p99 over joins). `cargo test --test agent_lab_root -- --ignored --nocapture`
/// (set INSTALLER_TEST_NODE_BIN to a release build for release figures).
#[test]
#[ignore]
fn agent_bench_root() {
    let Some((lab, bin)) = lab_or_skip("agent_bench_root", 3) else {
        return;
    };
    etcd_put(
        &lab,
        &format!("{PREFIX}/config"),
        &net_config(&lab, r#"{"Type":"vxlan"}"#),
    );
    let mut agents = Agents::new(&lab, &bin);
    let mut to_env = Vec::new();
    for i in 0..2 {
        let t = Instant::now();
        agents.start(i, &[]);
        wait_for("subnet.env", Duration::from_secs(20), || {
            lab.nodes[i]
                .host_path("/run/flannel/subnet.env")
                .exists()
                .then_some(())
        });
        to_env.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let joins = std::env::var("AGENT_BENCH_JOINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10usize);
    let mut to_routes = Vec::new();
    let mut propagation = Vec::new();
    let env3 = lab.nodes[2].host_path("/run/flannel/subnet.env");
    let mut joiner_hwm = 0;
    for _ in 0..joins {
        // a fresh node: no lease, no subnet.env
        let _ = std::fs::remove_file(&env3);
        let t = Instant::now();
        let pid = agents.start(2, &[]);
        wait_for("subnet.env", Duration::from_secs(20), || {
            env3.exists().then_some(())
        });
        to_env.push(t.elapsed().as_secs_f64() * 1000.0);
        let subnet = env_subnet(&std::fs::read_to_string(&env3).unwrap());
        let want = format!("{subnet} via {} dev flannel.1", subnet.network());
        for i in 0..2 {
            wait_for("peer route", Duration::from_secs(20), || {
                let out = lab
                    .exec_on(&lab.nodes[i], &["ip", "route", "show", &subnet.to_string()])
                    .ok()?;
                String::from_utf8_lossy(&out.stdout)
                    .contains(&want)
                    .then_some(())
            });
        }
        to_routes.push(t.elapsed().as_secs_f64() * 1000.0);
        // from the agents' own clocks: lease acquired on the joiner → "Added peer" on each peer
        let acquired = last_log_time(&agents.log(2), &format!("Lease acquired: {subnet}"));
        for i in 0..2 {
            let added = last_log_time(&agents.log(i), &format!("Added peer {subnet}"));
            if let (Some(a), Some(b)) = (acquired, added) {
                propagation.push((b - a) * 1000.0);
            }
        }
        joiner_hwm = joiner_hwm.max(vm_hwm_kib(pid));
        agents.stop(2, rustix::process::Signal::TERM);
        // leave: delete its lease so the next start is a real join
        let key = format!(
            "{PREFIX}/subnets/{}-{}",
            subnet.network(),
            subnet.prefix_len()
        );
        assert!(etcdctl(&lab, &["del", &key]).status.success());
        wait_for("peers dropped the node", Duration::from_secs(10), || {
            (0..2)
                .all(|i| !sh_out(&lab, &lab.nodes[i], "ip route").contains(&subnet.to_string()))
                .then_some(())
        });
    }
    let hwm: Vec<u64> = (0..2).map(|i| vm_hwm_kib(agents.pid(i).unwrap())).collect();
    let breakdown = memory_breakdown(agents.pid(0).unwrap(), &bin);
    // Idle CPU: user + system time of the two long-running agents over a quiet window.
    let idle_secs: u64 = std::env::var("AGENT_BENCH_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let ticks = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let after_comm = stat.rsplit_once(')').expect("comm").1;
        let f: Vec<&str> = after_comm.split_whitespace().collect();
        // fields 14 and 15 (utime, stime) are the 12th and 13th after the command name
        f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
    };
    let pids: Vec<u32> = (0..2).map(|i| agents.pid(i).unwrap()).collect();
    let before: Vec<u64> = pids.iter().map(|p| ticks(*p)).collect();
    std::thread::sleep(Duration::from_secs(idle_secs));
    let hz = 100.0; // USER_HZ on Linux
    let idle_cpu: Vec<f64> = pids
        .iter()
        .zip(&before)
        .map(|(p, b)| (ticks(*p) - b) as f64 / hz / idle_secs as f64 * 100.0)
        .collect();
    if let Ok(dst) = std::env::var("AGENT_BENCH_SMAPS") {
        // the full per-mapping picture, for a closer look
        let src = format!("/proc/{}/smaps", agents.pid(0).unwrap());
        std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {src} to {dst}: {e}"));
    }
    to_env.sort_by(f64::total_cmp);
    to_routes.sort_by(f64::total_cmp);
    propagation.sort_by(f64::total_cmp);
    eprintln!("agent bench ({} joins, binary {})", joins, bin.display());
    eprintln!(
        "  peak RSS (VmHWM): long-running agents {} KiB / {} KiB; joining agent {} KiB",
        hwm[0], hwm[1], joiner_hwm
    );
    eprintln!("  long-running agent 1 now: {breakdown}");
    eprintln!(
        "  idle CPU over {idle_secs} s: {:.2} % / {:.2} % of one core",
        idle_cpu[0], idle_cpu[1]
    );
    eprintln!(
        "  start -> subnet.env: p50 {:.1} ms, p99 {:.1} ms (n={})",
        percentile(&to_env, 0.5),
        percentile(&to_env, 0.99),
        to_env.len()
    );
    eprintln!(
        "  join start -> route on both peers: p50 {:.1} ms, p99 {:.1} ms (n={})",
        percentile(&to_routes, 0.5),
        percentile(&to_routes, 0.99),
        to_routes.len()
    );
    if !propagation.is_empty() {
        eprintln!(
            "  lease acquired (joiner) -> \"Added peer\" (each peer), from agent logs: p50 {:.1} ms, p99 {:.1} ms (n={})",
            percentile(&propagation, 0.5),
            percentile(&propagation, 0.99),
            propagation.len()
        );
    }
    assert!(hwm.iter().all(|&h| h > 0));
}

/// Seconds of the day of the last log line containing `needle` (klog time `HH:MM:SS.ffffff`).
fn last_log_time(log: &str, needle: &str) -> Option<f64> {
    let line = log.lines().rev().find(|l| l.contains(needle))?;
    let time = line.split_whitespace().nth(1)?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}
