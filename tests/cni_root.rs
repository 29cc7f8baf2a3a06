//! The flannel CNI plugin and the CNI runtime against the real kernel and Debian's
//! containernetworking-plugins (bridge, host-local, loopback, portmap in /usr/lib/cni).
//!
//! Needs root. Every test makes its own "host" network namespace (the bridge lives there,
//! never in the machine's namespace) and pod namespaces, named `cnit-<pid>-<n>-…` and deleted
//! on drop, plus a temp dir holding the CNI bin dir (`flannel` → the installer binary),
//! subnet.env, flannel's dataDir and host-local's dataDir. Addresses are in 198.19.0.0/16.

use installer::cni::invoke::{Exec, run_command};
use installer::cni::{Attachment, CniResult, Runtime};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const DEBIAN_CNI: &str = "/usr/lib/cni";
const PLUGINS: [&str; 4] = ["bridge", "host-local", "loopback", "portmap"];
const CNI_VARS: &[&str] = &[
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
    "CNI_NETNS_OVERRIDE",
];

/// Root, the Debian plugins, `ip` and `ping`; otherwise print why and skip.
fn ready(test: &str) -> bool {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP {test}: needs root (network namespaces)");
        return false;
    }
    for plugin in PLUGINS {
        if !Path::new(DEBIAN_CNI).join(plugin).exists() {
            eprintln!(
                "SKIP {test}: {DEBIAN_CNI}/{plugin} missing; apt-get install -y containernetworking-plugins"
            );
            return false;
        }
    }
    for tool in ["ip", "ping"] {
        if Command::new(tool).arg("-V").output().is_err() {
            eprintln!("SKIP {test}: `{tool}` not found; apt-get install -y iproute2 iputils-ping");
            return false;
        }
    }
    true
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A network namespace that is deleted on drop (also when the test panics).
struct Netns {
    name: String,
}

impl Netns {
    fn new(name: String, lo_up: bool) -> Netns {
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        if lo_up {
            ns.ip(&["link", "set", "lo", "up"]);
        }
        ns
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n NS ARGS…`.
    fn ip(&self, args: &[&str]) -> Output {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// `ip -n NS -j ARGS…` parsed.
    fn ip_json(&self, args: &[&str]) -> Value {
        let out = run(Command::new("ip").args(["-n", &self.name, "-j"]).args(args));
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(Vec::new()))
    }

    /// Run a program inside the namespace.
    fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("spawn ip netns exec")
    }

    /// IPv4 addresses of `dev` as `a.b.c.d/len`.
    fn ipv4(&self, dev: &str) -> Vec<String> {
        let links = self.ip_json(&["-4", "addr", "show", "dev", dev]);
        links
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
            .collect()
    }

    fn has_link(&self, dev: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.name, "link", "show", "dev", dev])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn link(&self, dev: &str) -> Value {
        self.ip_json(&["link", "show", "dev", dev])[0].clone()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs plugin binaries inside the test's host namespace.
struct InNetns(String);

impl Exec for InNetns {
    fn run(
        &self,
        plugin: &Path,
        env: &[(String, String)],
        stdin: &[u8],
    ) -> std::io::Result<Output> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0]).arg(plugin);
        run_command(cmd, env, stdin)
    }
}

/// One node: a host namespace with its own bridge, CNI bin dir, subnet.env and state dirs.
struct Node {
    seq: usize,
    /// The node subnet is 198.19.`x`.0/24.
    x: u8,
    dir: tempfile::TempDir,
    host: Netns,
    pods: Vec<Netns>,
}

impl Node {
    fn new(x: u8) -> Node {
        let seq = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir bin");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_installer"), bin.join("flannel"))
            .expect("symlink flannel");
        for plugin in PLUGINS {
            std::os::unix::fs::symlink(Path::new(DEBIAN_CNI).join(plugin), bin.join(plugin))
                .expect("symlink plugin");
        }
        let host = Netns::new(format!("cnit-{}-{seq}-h", std::process::id()), true);
        let node = Node {
            seq,
            x,
            dir,
            host,
            pods: Vec::new(),
        };
        node.write_subnet_env(true);
        node
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn network(&self) -> String {
        format!("cnit-net{}", self.seq)
    }

    fn bridge(&self) -> String {
        format!("cnitb{}", self.seq)
    }

    fn write_subnet_env(&self, ipmasq: bool) {
        std::fs::write(
            self.path("subnet.env"),
            format!(
                "FLANNEL_NETWORK=198.19.0.0/16\nFLANNEL_SUBNET=198.19.{}.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ={ipmasq}\n",
                self.x
            ),
        )
        .expect("write subnet.env");
    }

    /// kubeasz's flannel plugin entry plus the keys that keep this test's state private.
    fn flannel_entry(&self) -> Value {
        json!({
            "type": "flannel",
            "subnetFile": self.path("subnet.env"),
            "dataDir": self.path("flannel"),
            "ipam": {"dataDir": self.path("ipam")},
            "delegate": {"hairpinMode": true, "isDefaultGateway": true, "bridge": self.bridge()}
        })
    }

    /// The plugin config as a runtime hands it to flannel (name and version injected).
    fn flannel_conf(&self, version: &str) -> String {
        let mut conf = self.flannel_entry();
        conf["name"] = json!(self.network());
        conf["cniVersion"] = json!(version);
        conf.to_string()
    }

    /// kubeasz's conflist (flannel + portmap) with `version`.
    fn conflist(&self, version: &str) -> String {
        json!({
            "name": self.network(),
            "cniVersion": version,
            "plugins": [self.flannel_entry(), {"type": "portmap", "capabilities": {"portMappings": true}}]
        })
        .to_string()
    }

    /// A new pod namespace (lo left down: the loopback plugin's job).
    fn pod(&mut self) -> usize {
        let n = self.pods.len();
        let name = format!("cnit-{}-{}-p{n}", std::process::id(), self.seq);
        self.pods.push(Netns::new(name, false));
        n
    }

    fn container_id(&self, pod: usize) -> String {
        format!("cnit{}pod{pod}", self.seq)
    }

    /// Run the flannel binary in the host namespace as a runtime would.
    fn flannel(&self, command: &str, pod: usize, conf: &str) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host.name])
            .arg(self.path("bin/flannel"));
        for var in CNI_VARS {
            cmd.env_remove(var);
        }
        let env = [
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", self.container_id(pod)),
            ("CNI_NETNS", self.pods[pod].path().display().to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_PATH", self.path("bin").display().to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v));
        run_command(cmd, &env, conf.as_bytes()).expect("run flannel")
    }

    /// A runtime over a conf dir holding `conflist`, plugins run in the host namespace.
    fn runtime(&self, conflist: &str) -> Runtime {
        let conf_dir = self.path("net.d");
        std::fs::create_dir_all(&conf_dir).expect("mkdir net.d");
        std::fs::write(conf_dir.join("10-flannel.conflist"), conflist).expect("write conflist");
        Runtime::new(conf_dir, vec![self.path("bin")], self.path("cache"))
            .with_exec(InNetns(self.host.name.clone()))
    }

    fn attachment(&self, pod: usize) -> Attachment {
        Attachment::new(self.container_id(pod), self.pods[pod].path(), "eth0")
            .with_pod("default", format!("probe-{pod}"))
    }

    fn gateway(&self) -> String {
        format!("198.19.{}.1", self.x)
    }

    fn pod_address(&self, n: u8) -> String {
        format!("198.19.{}.{n}", self.x)
    }

    /// Host-local's allocation files for this network.
    fn allocations(&self) -> Vec<String> {
        let dir = self.path("ipam").join(self.network());
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("198.19."))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn host_veths(&self) -> usize {
        self.host
            .ip_json(&["link", "show", "type", "veth"])
            .as_array()
            .map(Vec::len)
            .unwrap_or(0)
    }

    /// The pod's eth0 is configured as flannel + bridge promise (spec §9).
    fn assert_pod_network(&self, pod: usize, address: &str) {
        let ns = &self.pods[pod];
        assert_eq!(ns.ipv4("eth0"), [format!("{address}/24")]);
        assert_eq!(ns.link("eth0")["mtu"], 1400, "MTU from subnet.env");
        let routes = ns.ip_json(&["-4", "route", "show"]);
        let via = |dst: &str| {
            routes
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["dst"] == dst)
                .map(|r| r["gateway"].as_str().unwrap_or("").to_string())
        };
        assert_eq!(via("198.19.0.0/16"), Some(self.gateway()), "{routes}");
        assert_eq!(via("default"), Some(self.gateway()), "{routes}");
        assert_eq!(
            self.host.ipv4(&self.bridge()),
            [format!("{}/24", self.gateway())]
        );
    }
}

fn cni_error(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {:?} / stderr {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "plugin failed: {} / {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("result JSON")
}

#[test]
fn add_gives_pod_address_routes_and_mtu_root() {
    if !ready("add_gives_pod_address_routes_and_mtu_root") {
        return;
    }
    let mut node = Node::new(11);
    let pod = node.pod();
    let conf = node.flannel_conf("0.3.1");
    let result = ok_json(&node.flannel("ADD", pod, &conf));

    assert_eq!(result["cniVersion"], "0.3.1");
    let ip = &result["ips"][0];
    assert_eq!(ip["version"], "4");
    assert_eq!(ip["address"], format!("{}/24", node.pod_address(2)));
    assert_eq!(ip["gateway"], node.gateway());
    let names: Vec<&str> = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert!(names.contains(&node.bridge().as_str()), "{names:?}");
    assert!(names.contains(&"eth0"), "{names:?}");
    let parsed = CniResult::from_value(result.clone()).unwrap();
    assert_eq!(
        parsed.container_addresses()[0].to_string(),
        format!("{}/24", node.pod_address(2))
    );
    node.assert_pod_network(pod, &node.pod_address(2));
    assert_eq!(node.allocations(), [node.pod_address(2)]);
    assert_eq!(node.host.link(&node.bridge())["mtu"], 1400);

    let out = node.flannel("DEL", pod, &conf);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn delegate_file_is_sorted_and_private_root() {
    if !ready("delegate_file_is_sorted_and_private_root") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let mut node = Node::new(12);
    let pod = node.pod();
    let conf = node.flannel_conf("0.3.1");
    ok_json(&node.flannel("ADD", pod, &conf));

    let saved = node.path("flannel").join(node.container_id(pod));
    let expected = format!(
        r#"{{"bridge":"{bridge}","cniVersion":"0.3.1","hairpinMode":true,"ipMasq":false,"ipam":{{"dataDir":"{ipam}","ranges":[[{{"subnet":"198.19.12.0/24"}}]],"routes":[{{"dst":"198.19.0.0/16"}}],"type":"host-local"}},"isDefaultGateway":true,"isGateway":true,"mtu":1400,"name":"{net}","type":"bridge"}}"#,
        bridge = node.bridge(),
        ipam = node.path("ipam").display(),
        net = node.network()
    );
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), expected);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&saved), 0o600);
    assert_eq!(mode(&node.path("flannel")), 0o700);

    // the saved config drives DEL even when subnet.env has vanished meanwhile
    std::fs::remove_file(node.path("subnet.env")).unwrap();
    let out = node.flannel("DEL", pod, &conf);
    assert!(out.status.success(), "{out:?}");
    assert!(!saved.exists());
    assert!(node.allocations().is_empty());
}

#[test]
fn ipmasq_false_makes_the_bridge_masquerade_root() {
    if !ready("ipmasq_false_makes_the_bridge_masquerade_root") {
        return;
    }
    let mut node = Node::new(13);
    node.write_subnet_env(false);
    let pod = node.pod();
    let conf = node.flannel_conf("1.0.0");
    let result = ok_json(&node.flannel("ADD", pod, &conf));
    assert!(
        result["ips"][0].get("version").is_none(),
        "1.0.0 result shape"
    );
    let saved = std::fs::read_to_string(node.path("flannel").join(node.container_id(pod))).unwrap();
    assert!(saved.contains(r#""ipMasq":true"#), "{saved}");
    let nat = node
        .host
        .exec(&["iptables", "-t", "nat", "-S", "POSTROUTING"]);
    let rules = String::from_utf8_lossy(&nat.stdout);
    assert!(
        rules.contains("-s 198.19.13.2/32") && rules.contains("CNI-"),
        "bridge ipMasq rule in the host namespace: {rules}"
    );
    let out = node.flannel("DEL", pod, &conf);
    assert!(out.status.success(), "{out:?}");
    let nat = node
        .host
        .exec(&["iptables", "-t", "nat", "-S", "POSTROUTING"]);
    assert!(!String::from_utf8_lossy(&nat.stdout).contains("198.19.13.2"));
}

#[test]
fn del_twice_succeeds_and_leaves_nothing_root() {
    if !ready("del_twice_succeeds_and_leaves_nothing_root") {
        return;
    }
    let mut node = Node::new(14);
    let pod = node.pod();
    let conf = node.flannel_conf("0.3.1");
    ok_json(&node.flannel("ADD", pod, &conf));
    assert_eq!(node.host_veths(), 1);
    assert_eq!(node.allocations().len(), 1);

    for round in 0..2 {
        let out = node.flannel("DEL", pod, &conf);
        assert!(out.status.success(), "DEL #{round}: {out:?}");
        assert!(out.stdout.is_empty(), "DEL prints nothing");
    }
    assert_eq!(node.host_veths(), 0, "host veth gone");
    assert!(!node.pods[pod].has_link("eth0"), "pod eth0 gone");
    assert!(node.allocations().is_empty(), "IP released");
    assert!(!node.path("flannel").join(node.container_id(pod)).exists());
    assert!(
        node.host.has_link(&node.bridge()),
        "the bridge stays, like cni0"
    );

    // a second ADD after DEL reuses the network cleanly
    let again = ok_json(&node.flannel("ADD", pod, &conf));
    assert_eq!(
        again["ips"][0]["address"]
            .as_str()
            .map(|a| a.starts_with("198.19.14.")),
        Some(true)
    );
    assert!(node.flannel("DEL", pod, &conf).status.success());
}

#[test]
fn duplicate_add_returns_the_delegates_error_root() {
    if !ready("duplicate_add_returns_the_delegates_error_root") {
        return;
    }
    let mut node = Node::new(15);
    let pod = node.pod();
    let conf = node.flannel_conf("0.3.1");
    ok_json(&node.flannel("ADD", pod, &conf));
    let out = node.flannel("ADD", pod, &conf);
    assert_eq!(out.status.code(), Some(1));
    let err = cni_error(&out);
    // the bridge plugin's own CNI error passes through flannel unchanged
    assert!(
        err["code"].as_u64().is_some() && err["msg"].is_string(),
        "{err}"
    );
    assert_ne!(err["msg"].as_str().unwrap_or(""), "");
    assert!(node.flannel("DEL", pod, &conf).status.success());
}

#[test]
fn runtime_runs_kubeasz_0_3_1_conflist_with_portmap_root() {
    if !ready("runtime_runs_kubeasz_0_3_1_conflist_with_portmap_root") {
        return;
    }
    let mut node = Node::new(16);
    let pod = node.pod();
    let runtime = node.runtime(&node.conflist("0.3.1"));
    let att = node.attachment(pod);
    let result = runtime
        .add(&att)
        .unwrap_or_else(|e| panic!("runtime ADD: {e}"));

    // portmap is chained: it only succeeds with a prevResult, and echoes it unchanged
    assert_eq!(result.cni_version, "0.3.1");
    assert_eq!(result.raw["ips"][0]["version"], "4");
    assert_eq!(
        result.container_addresses()[0].to_string(),
        format!("{}/24", node.pod_address(2))
    );
    assert_eq!(
        result.ips[0].gateway.map(|g| g.to_string()),
        Some(node.gateway())
    );
    node.assert_pod_network(pod, &node.pod_address(2));
    let lo = node.pods[pod].link("lo");
    assert!(
        lo["flags"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("UP"))),
        "loopback plugin brought lo up: {lo}"
    );
    let cached =
        node.path("cache/results")
            .join(format!("{}-{}-eth0", node.network(), att.container_id));
    let entry: Value = serde_json::from_slice(&std::fs::read(&cached).unwrap()).unwrap();
    assert_eq!(entry["kind"], "cniCacheV1");
    assert_eq!(entry["result"], result.raw);

    let e = runtime.check(&att).unwrap_err();
    assert!(
        e.to_string().contains("does not support the CHECK command"),
        "{e}"
    );

    runtime.del(&att).expect("runtime DEL");
    runtime.del(&att).expect("second runtime DEL");
    assert!(!cached.exists());
    assert_eq!(node.host_veths(), 0);
    assert!(node.allocations().is_empty());
}

#[test]
fn runtime_runs_a_1_0_0_conflist_with_check_root() {
    if !ready("runtime_runs_a_1_0_0_conflist_with_check_root") {
        return;
    }
    let mut node = Node::new(17);
    let pod = node.pod();
    let runtime = node.runtime(&node.conflist("1.0.0"));
    let att = node.attachment(pod);
    let result = runtime
        .add(&att)
        .unwrap_or_else(|e| panic!("runtime ADD: {e}"));
    assert_eq!(result.cni_version, "1.0.0");
    assert!(result.raw["ips"][0].get("version").is_none());
    assert_eq!(
        result.ips[0].address.to_string(),
        format!("{}/24", node.pod_address(2))
    );
    node.assert_pod_network(pod, &node.pod_address(2));
    runtime.check(&att).expect("runtime CHECK");
    runtime.del(&att).expect("runtime DEL");
    assert_eq!(node.host_veths(), 0);
    assert!(node.allocations().is_empty());
    assert!(!node.path("flannel").join(&att.container_id).exists());
}

#[test]
fn runtime_reports_flannels_error_and_cleans_up_root() {
    if !ready("runtime_reports_flannels_error_and_cleans_up_root") {
        return;
    }
    let mut node = Node::new(18);
    let pod = node.pod();
    std::fs::remove_file(node.path("subnet.env")).unwrap();
    let runtime = node.runtime(&node.conflist("0.3.1"));
    let att = node.attachment(pod);
    let e = runtime.add(&att).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "network \"{}\": plugin type=\"flannel\" name=\"{}\" failed (add): CNI error code 999: failed to load flannel 'subnet.env' file: open ",
            node.network(),
            node.network()
        )),
        "{e}"
    );
    assert!(
        e.ends_with("Check the flannel pod log for this node."),
        "{e}"
    );
    assert!(
        !node
            .path("cache/results")
            .join(format!("{}-{}-eth0", node.network(), att.container_id))
            .exists()
    );
}

#[test]
fn two_pods_on_one_bridge_ping_each_other_root() {
    if !ready("two_pods_on_one_bridge_ping_each_other_root") {
        return;
    }
    let mut node = Node::new(19);
    let (a, b) = (node.pod(), node.pod());
    let runtime = node.runtime(&node.conflist("0.3.1"));
    let ra = runtime.add(&node.attachment(a)).expect("ADD pod a");
    let rb = runtime.add(&node.attachment(b)).expect("ADD pod b");
    let ip_a = ra.container_addresses()[0].addr().to_string();
    let ip_b = rb.container_addresses()[0].addr().to_string();
    assert_ne!(ip_a, ip_b);
    assert_eq!(node.allocations().len(), 2);
    for (from, to) in [(a, &ip_b), (b, &ip_a), (a, &node.gateway())] {
        let out = node.pods[from].exec(&["ping", "-c", "1", "-W", "2", to]);
        assert!(
            out.status.success(),
            "ping {to} from pod {from}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    runtime.del(&node.attachment(a)).expect("DEL pod a");
    runtime.del(&node.attachment(b)).expect("DEL pod b");
    assert_eq!(node.host_veths(), 0);
    assert!(node.allocations().is_empty());
}
