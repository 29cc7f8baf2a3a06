//! End to end on the lab, brought up by nothing but `installer setup flannel`: the agents get
//! distinct subnets from etcd, and a pod namespace added through the node's `flannel` CNI
//! plugin on each node reaches the pods on the other nodes, through vxlan and through host-gw
//! (flannel-spec §8, §5.1, §5.2). Then `installer clean flannel` leaves no device, route, rule,
//! file or lease behind. Needs root and the lab packages; skips with a notice otherwise.

mod common;
use common::*;
use installer::lab::{Lab, LabGuard, LabNode};

const POD_CONF: &str = r#"{"cniVersion":"0.3.1","name":"cbr0","type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}}"#;

fn sh(lab: &Lab, node: &LabNode, script: &str) -> (bool, String) {
    let out = lab.sh_on(node, script).expect("run on node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Add a pod namespace through the node's own flannel CNI plugin; returns its address.
fn add_pod(lab: &Lab, node: &LabNode) -> String {
    let script = format!(
        "ip netns add e2e-pod && echo '{POD_CONF}' | CNI_COMMAND=ADD CNI_CONTAINERID=e2e-pod \
         CNI_NETNS=/run/netns/e2e-pod CNI_IFNAME=eth0 CNI_PATH=/opt/kube/bin /opt/kube/bin/flannel"
    );
    let out = lab.sh_on(node, &script).expect("run on node");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "CNI ADD on {}: {stdout}{}",
        node.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("CNI result JSON on stdout");
    let addr = v["ips"][0]["address"]
        .as_str()
        .expect("address")
        .to_string();
    addr.split('/').next().expect("ip").to_string()
}

fn run_backend(name: &str, backend: &str) {
    let Some(lab) = LabGuard::up_or_skip(name, 3).expect("lab") else {
        return;
    };
    if !installer::cli::has_subcommand("agent") {
        eprintln!("skipping {name}: this build has no agent");
        return;
    }
    let cache = tempfile::tempdir().expect("tempdir");
    let backend_var = format!("FLANNEL_BACKEND={backend}");
    let out = installer()
        .args(["setup", "flannel", "-e", &backend_var, "-i"])
        .arg(&lab.inventory_path)
        .arg("--cache-dir")
        .arg(cache.path())
        .output()
        .expect("setup");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "setup: {text}");

    // Distinct subnets inside the lab's pod network (subnet.env written by each agent, §1).
    let mut subnets = Vec::new();
    for node in &lab.nodes {
        let env =
            std::fs::read_to_string(node.host_path("/run/flannel/subnet.env")).expect("subnet.env");
        assert!(
            env.starts_with(&format!("FLANNEL_NETWORK={}\n", lab.cluster_cidr)),
            "{env}"
        );
        let mtu = if backend == "vxlan" { "1450" } else { "1500" };
        assert!(env.contains(&format!("FLANNEL_MTU={mtu}\n")), "{env}");
        let subnet = env
            .lines()
            .find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))
            .expect("subnet")
            .to_string();
        assert!(!subnets.contains(&subnet), "duplicate subnet {subnet}");
        subnets.push(subnet);
    }
    // One pod per node, each in its node's subnet; every pod reaches every other pod.
    let pods: Vec<String> = lab.nodes.iter().map(|n| add_pod(&lab, n)).collect();
    for (i, node) in lab.nodes.iter().enumerate() {
        let prefix = subnets[i].rsplit_once('.').expect("dotted").0;
        assert!(
            pods[i].starts_with(prefix),
            "pod {} not in {}",
            pods[i],
            subnets[i]
        );
        for (j, target) in pods.iter().enumerate() {
            if i == j {
                continue;
            }
            let (ok, text) = sh(
                &lab,
                node,
                &format!("ip netns exec e2e-pod ping -c 2 -W 2 {target}"),
            );
            assert!(
                ok,
                "{backend}: pod on {} cannot reach pod {target} on {}: {text}",
                node.name, lab.nodes[j].name
            );
        }
    }
    // CNI DEL twice succeeds (§8 DEL idempotent).
    for node in &lab.nodes {
        for _ in 0..2 {
            let (ok, text) = sh(
                &lab,
                node,
                &format!(
                    "echo '{POD_CONF}' | CNI_COMMAND=DEL CNI_CONTAINERID=e2e-pod CNI_NETNS=/run/netns/e2e-pod CNI_IFNAME=eth0 CNI_PATH=/opt/kube/bin /opt/kube/bin/flannel"
                ),
            );
            assert!(ok, "DEL on {}: {text}", node.name);
        }
        let _ = sh(&lab, node, "ip netns del e2e-pod");
    }

    // clean leaves no device, route, rule, file or lease behind.
    let out = installer()
        .args(["clean", "flannel", "-i"])
        .arg(&lab.inventory_path)
        .output()
        .expect("clean");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "clean: {text}");
    for node in &lab.nodes {
        let (_, links) = sh(&lab, node, "ip -br link");
        assert!(!links.contains("flannel."), "{}: {links}", node.name);
        let (_, routes) = sh(&lab, node, "ip route");
        assert!(!routes.contains("198.19."), "{}: {routes}", node.name);
        let (_, rules) = sh(&lab, node, "iptables-save");
        assert!(!rules.contains("FLANNEL"), "{}: {rules}", node.name);
        assert!(!node.host_path("/run/flannel/subnet.env").exists());
    }
    let etcd = installer::etcd_gateway::EtcdGateway::new(
        std::slice::from_ref(&lab.etcd_endpoint),
        &Default::default(),
    )
    .expect("etcd");
    assert_eq!(
        etcd.delete_prefix("/coreos.com/network/").expect("etcd"),
        0,
        "keys left in etcd"
    );
}

#[test]
fn vxlan_pods_reach_each_other_and_clean_leaves_nothing_root() {
    run_backend("e2e_vxlan", "vxlan");
}

#[test]
fn host_gw_pods_reach_each_other_and_clean_leaves_nothing_root() {
    run_backend("e2e_hostgw", "host-gw");
}
