//! The Kubernetes datastore end to end on the lab: `setup flannel` with FLANNEL_DATASTORE=
//! kubernetes applies the manifest (server-side apply, our field manager), provisions the agents'
//! ServiceAccount credentials, starts the agents, which take their node's podCIDR and annotate
//! their Node; `verify ping-mesh` then passes; a re-run changes nothing; `clean` deletes the
//! objects and the annotations. The API server is `common::kube_sim` (no kube-apiserver can run
//! here): a stateful stand-in on the lab's deploy address that holds ServiceAccount requests to
//! the flannel ClusterRole. Needs root and the lab packages; skips with a notice otherwise.

mod common;
use common::kube_sim::{ADMIN_TOKEN, KubeSim};
use common::*;
use installer::lab::LabGuard;

fn run(cmd: &mut assert_cmd::Command) -> (bool, String) {
    let out = cmd.output().expect("run installer");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn kubernetes_datastore_setup_verify_rerun_clean_root() {
    let name = "kubernetes_datastore_setup_verify_rerun_clean_root";
    let Some(lab) = LabGuard::up_or_skip(name, 3).expect("lab") else {
        return;
    };
    if !installer::cli::has_subcommand("agent") {
        eprintln!("skipping {name}: this build has no agent");
        return;
    }
    let sim = KubeSim::start(lab.deploy_ip);
    let cidr: ipnet::Ipv4Net = lab.cluster_cidr.parse().expect("cluster cidr");
    let pod_cidrs: Vec<String> = cidr
        .subnets(24)
        .expect("subnets")
        .skip(1)
        .take(lab.nodes.len())
        .map(|n| n.to_string())
        .collect();
    for (node, pod_cidr) in lab.nodes.iter().zip(&pod_cidrs) {
        sim.add_node(&node.name, pod_cidr);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = sim.admin_kubeconfig(dir.path());
    let apiserver = format!("FLANNEL_APISERVER={}", sim.url());
    let setup = || {
        let mut cmd = installer();
        cmd.args(["setup", "flannel", "-e", "FLANNEL_DATASTORE=kubernetes"])
            .args(["-e", &apiserver, "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--cache-dir"])
            .arg(dir.path().join("cache"))
            .arg("-i")
            .arg(&lab.inventory_path)
            .env_remove("KUBECONFIG");
        cmd
    };

    // 1. First run: objects created, credentials provisioned, every node up.
    let (ok, text) = run(&mut setup());
    assert!(ok, "setup: {text}");
    for line in [
        "serviceaccount/flannel -n kube-system created",
        "clusterrole.rbac.authorization.k8s.io/flannel created",
        "clusterrolebinding.rbac.authorization.k8s.io/flannel created",
        "secret/flannel-token -n kube-system created",
        "configmap/kube-flannel-cfg -n kube-system created",
        "agent credentials: ServiceAccount kube-system/flannel token from Secret flannel-token",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    for node in &lab.nodes {
        assert!(
            text.contains(&format!("node {}: up", node.name)),
            "{}: {text}",
            node.name
        );
    }
    let requests = sim.requests();
    let applies: Vec<_> = requests
        .iter()
        .filter(|r| r.content_type.as_deref() == Some("application/apply-patch+yaml"))
        .collect();
    assert_eq!(applies.len(), 5, "one server-side apply per object");
    for r in &applies {
        assert_eq!(
            r.param("fieldManager").as_deref(),
            Some("installer"),
            "{r:?}"
        );
        assert_eq!(r.token.as_deref(), Some(ADMIN_TOKEN));
        assert!(
            r.param("force").is_none(),
            "no forced apply without --force-conflicts"
        );
    }
    // What setup applied is exactly what `render` shows (the deploy-host copy).
    let deploy_copy = std::fs::read_to_string(
        lab.state_dir
            .join("kubeasz/clusters")
            .join(&lab.name)
            .join("yml/flannel.yaml"),
    )
    .expect("deploy-host copy of the manifest");
    let rendered = installer::render::check_manifest(&deploy_copy).expect("manifest");
    assert_eq!(
        applies.iter().map(|r| r.json()).collect::<Vec<_>>(),
        rendered.iter().map(|o| o.body.clone()).collect::<Vec<_>>()
    );
    // The agents used the ServiceAccount token, never needed more than the ClusterRole grants,
    // and wrote through nodes/status only.
    let agent_requests: Vec<_> = requests
        .iter()
        .filter(|r| r.token.as_deref() == Some("sim-sa-token-kube-system-flannel"))
        .collect();
    assert!(!agent_requests.is_empty(), "no request from an agent");
    let denied: Vec<_> = agent_requests.iter().filter(|r| r.status == 403).collect();
    assert!(
        denied.is_empty(),
        "agent requests outside its RBAC: {denied:?}"
    );
    for (node, pod_cidr) in lab.nodes.iter().zip(&pod_cidrs) {
        let status_patches: Vec<_> = agent_requests
            .iter()
            .filter(|r| {
                r.method == "PATCH" && r.path == format!("/api/v1/nodes/{}/status", node.name)
            })
            .collect();
        assert!(!status_patches.is_empty(), "{}: no status patch", node.name);
        for p in &status_patches {
            assert_eq!(
                p.content_type.as_deref(),
                Some("application/strategic-merge-patch+json")
            );
        }
        let obj = sim
            .object(&format!("/api/v1/nodes/{}", node.name))
            .expect("node");
        let ann = &obj["metadata"]["annotations"];
        assert_eq!(ann["flannel.alpha.coreos.com/kube-subnet-manager"], "true");
        assert_eq!(ann["flannel.alpha.coreos.com/backend-type"], "vxlan");
        assert_eq!(
            ann["flannel.alpha.coreos.com/public-ip"],
            node.ip.to_string()
        );
        let data: serde_json::Value = serde_json::from_str(
            ann["flannel.alpha.coreos.com/backend-data"]
                .as_str()
                .expect("backend-data"),
        )
        .expect("backend-data JSON");
        assert_eq!(data["VNI"], 1);
        let conditions = obj["status"]["conditions"].as_array().expect("conditions");
        let nu = conditions
            .iter()
            .find(|c| c["type"] == "NetworkUnavailable")
            .unwrap_or_else(|| panic!("{}: no NetworkUnavailable condition", node.name));
        assert_eq!(
            (nu["status"].as_str(), nu["reason"].as_str()),
            (Some("False"), Some("FlannelIsUp"))
        );
        // The node's subnet is its podCIDR; its credentials file is private.
        let env =
            std::fs::read_to_string(node.host_path("/run/flannel/subnet.env")).expect("subnet.env");
        let gw = pod_cidr.replace(".0/24", ".1/24");
        assert!(env.contains(&format!("FLANNEL_SUBNET={gw}\n")), "{env}");
        let kc = node.host_path("/etc/kube-flannel/kubeconfig");
        let meta = std::fs::metadata(&kc).expect("kubeconfig on node");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&kc).expect("kubeconfig");
        assert!(
            text.contains("token: sim-sa-token-kube-system-flannel"),
            "{text}"
        );
        assert!(text.contains(&format!("server: {}", sim.url())), "{text}");
    }

    // 2. The pod network works between every pair of nodes.
    let (ok, text) = run(installer()
        .args(["verify", "ping-mesh", "-i"])
        .arg(&lab.inventory_path));
    assert!(ok, "verify ping-mesh: {text}");

    // 3. A re-run changes nothing, on the hosts and in the cluster.
    let before = sim.requests().len();
    let (ok, text) = run(&mut setup());
    assert!(ok, "re-run: {text}");
    assert!(
        text.contains("configmap/kube-flannel-cfg -n kube-system unchanged"),
        "{text}"
    );
    assert!(!text.contains(" created"), "{text}");
    assert!(!text.contains(" configured"), "{text}");
    assert!(text.contains("changed=0"), "{text}");
    let writes = sim.requests()[before..]
        .iter()
        .filter(|r| r.method == "PATCH" && r.token.as_deref() == Some(ADMIN_TOKEN))
        .count();
    assert_eq!(writes, 5, "re-run: only the five (no-op) applies");

    // A drifted credentials file is reported by --check --diff without its content.
    let kc0 = lab.nodes[0].host_path("/etc/kube-flannel/kubeconfig");
    let mut drifted = std::fs::read_to_string(&kc0).expect("kubeconfig");
    drifted.push_str("# edited by hand\n");
    std::fs::write(&kc0, drifted).expect("edit kubeconfig");
    let before_check = sim.requests().len();
    let (ok, text) = run(setup().args(["--check", "--diff"]));
    assert!(ok, "check: {text}");
    assert!(text.contains("(content not shown: mode 0600)"), "{text}");
    assert!(
        !text.contains("sim-sa-token"),
        "a token in the diff output: {text}"
    );
    assert!(
        text.contains("configmap/kube-flannel-cfg -n kube-system unchanged (server dry run)"),
        "{text}"
    );
    let admin_writes: Vec<_> = sim.requests()[before_check..]
        .iter()
        .filter(|r| r.method != "GET" && r.token.as_deref() == Some(ADMIN_TOKEN))
        .cloned()
        .collect();
    assert_eq!(admin_writes.len(), 5, "{admin_writes:?}");
    assert!(
        admin_writes
            .iter()
            .all(|r| r.param("dryRun").as_deref() == Some("All")),
        "check mode sends only dry-run writes: {admin_writes:?}"
    );

    // 4. clean: agents stopped, datapath and files gone, objects deleted, annotations removed.
    let (ok, text) = run(installer()
        .args([
            "clean",
            "flannel",
            "-e",
            "FLANNEL_DATASTORE=kubernetes",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .arg("-i")
        .arg(&lab.inventory_path));
    assert!(ok, "clean: {text}");
    for path in sim.paths() {
        assert!(
            path.starts_with("/api/v1/nodes/"),
            "left in the cluster: {path}"
        );
    }
    for node in &lab.nodes {
        let obj = sim
            .object(&format!("/api/v1/nodes/{}", node.name))
            .expect("node");
        let left: Vec<&String> = obj["metadata"]["annotations"]
            .as_object()
            .map(|m| {
                m.keys()
                    .filter(|k| k.starts_with("flannel.alpha.coreos.com/"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "{}: annotations left: {left:?}", node.name);
        assert!(!node.host_path("/etc/kube-flannel/kubeconfig").exists());
        assert!(!node.host_path("/run/flannel/subnet.env").exists());
        let links = lab
            .sh_on(node, "ip -br link")
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .expect("ip link");
        assert!(!links.contains("flannel."), "{}: {links}", node.name);
    }
}

#[test]
fn image_mode_applies_the_daemonset_explains_missing_pods_and_pushes_the_offline_image_root() {
    let name =
        "image_mode_applies_the_daemonset_explains_missing_pods_and_pushes_the_offline_image_root";
    let Some(lab) = LabGuard::up_or_skip(name, 2).expect("lab") else {
        return;
    };
    let sim = KubeSim::start(lab.deploy_ip);
    for (i, node) in lab.nodes.iter().enumerate() {
        sim.add_node(&node.name, &format!("198.19.{}.0/24", 200 + i));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = sim.admin_kubeconfig(dir.path());
    let setup = || {
        let mut cmd = installer();
        cmd.args(["setup", "flannel", "-e", "FLANNEL_DATASTORE=kubernetes"])
            .args([
                "-e",
                "FLANNEL_AGENT=image",
                "--wait-timeout",
                "2",
                "--kubeconfig",
            ])
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .arg("-i")
            .arg(&lab.inventory_path);
        cmd
    };

    // 1. The DaemonSet is applied (and no token Secret); no node binary is installed; nothing
    //    runs the pods here, so the wait ends in a per-node explanation and exit 2.
    let out = setup().output().expect("setup");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("daemonset.apps/kube-flannel-ds -n kube-system created"),
        "{text}"
    );
    assert!(!text.contains("secret/flannel-token"), "{text}");
    assert!(
        text.contains("daemonset kube-system/kube-flannel-ds: desired 0 updated 0 ready 0: NOT rolled out after 2 s"),
        "{text}"
    );
    for node in &lab.nodes {
        assert!(
            text.contains(&format!(
                "node {}: pod  no flannel pod on this node",
                node.name
            )),
            "{text}"
        );
        assert!(!node.host_path("/opt/kube/bin/installer").exists());
        assert!(
            node.host_path("/etc/cni/net.d/10-flannel.conflist")
                .exists()
        );
        assert!(!node.host_path("/etc/kube-flannel/agent.json").exists());
    }
    // What setup applied is exactly what it rendered (and kept on the deploy host).
    let deploy_copy = std::fs::read_to_string(
        lab.state_dir
            .join("kubeasz/clusters")
            .join(&lab.name)
            .join("yml/flannel.yaml"),
    )
    .expect("deploy-host copy of the manifest");
    let rendered = installer::render::check_manifest(&deploy_copy).expect("manifest");
    let bodies: Vec<serde_json::Value> = sim
        .requests()
        .iter()
        .filter(|r| r.content_type.as_deref() == Some("application/apply-patch+yaml"))
        .map(|r| r.json())
        .collect();
    assert_eq!(
        bodies,
        rendered.iter().map(|o| o.body.clone()).collect::<Vec<_>>()
    );

    // 2. An offline image tarball is pushed and loaded; these hosts run no container runtime
    //    (a docker client without its daemon at most), so the load fails on every host, by name,
    //    and the tarball is not left behind for a re-run to skip.
    let down = lab.state_dir.join("kubeasz/down");
    std::fs::create_dir_all(&down).expect("down dir");
    std::fs::write(down.join("flannel_v0.28.9.tar"), b"not really an image\n").expect("tar");
    let out = setup().output().expect("setup");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert_eq!(
        text.matches("load-image /opt/kube/images/flannel_v0.28.9.tar | FAILED")
            .count(),
        lab.nodes.len(),
        "{text}"
    );
    for node in &lab.nodes {
        assert!(node.host_path("/opt/kube/images").is_dir());
        assert!(
            !node
                .host_path("/opt/kube/images/flannel_v0.28.9.tar")
                .exists()
        );
    }
}
