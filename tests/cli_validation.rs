//! One test per cluster validation error: each names the variable, its value and where it
//! was set, and the command exits non-zero without printing any output file. Also: the node
//! build (installer-node) offers exactly the node commands.

mod common;
use common::*;
use predicates::prelude::*;

/// Run `render --dry-run` on an inventory built from `text` and expect failure with `needle`.
fn fails_with(text: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = write(dir.path(), "hosts", text);
    let mut assert = installer()
        .args(["render", "--dry-run", "-i"])
        .arg(&inv)
        .assert()
        .failure()
        .stdout(predicate::str::is_empty());
    for n in needles {
        assert = assert.stderr(predicate::str::contains(*n));
    }
}

#[test]
fn bad_cidr_names_variable_value_and_section() {
    fails_with(
        &inventory("").replace("172.20.0.0/16", "172.20.0.0/33"),
        &[
            "CLUSTER_CIDR=\"172.20.0.0/33\"",
            "[all:vars]",
            "not a valid CIDR",
        ],
    );
}

#[test]
fn ipv6_cidr_is_refused_with_a_hint() {
    fails_with(
        &inventory("").replace("10.68.0.0/16", "fd00::/108"),
        &["SERVICE_CIDR", "IPv6 networks are not supported"],
    );
}

#[test]
fn cluster_and_service_overlap() {
    fails_with(
        &inventory("").replace("10.68.0.0/16", "172.20.128.0/17"),
        &["CLUSTER_CIDR 172.20.0.0/16 and SERVICE_CIDR 172.20.128.0/17 overlap"],
    );
}

#[test]
fn node_address_inside_pod_network() {
    fails_with(
        &inventory("").replace("172.20.0.0/16", "10.0.0.0/16"),
        &["node 10.0.0.1 address 10.0.0.1 lies inside CLUSTER_CIDR 10.0.0.0/16"],
    );
}

#[test]
fn node_cidr_len_below_range() {
    fails_with(
        &inventory("NODE_CIDR_LEN=17"),
        &["NODE_CIDR_LEN=17", "between 18", "and 30"],
    );
}

#[test]
fn node_cidr_len_above_range() {
    fails_with(
        &inventory("NODE_CIDR_LEN=31"),
        &["NODE_CIDR_LEN=31", "and 30"],
    );
}

#[test]
fn unknown_backend_lists_choices() {
    fails_with(
        &inventory("FLANNEL_BACKEND=\"udpp\""),
        &["FLANNEL_BACKEND=\"udpp\"", "vxlan, host-gw"],
    );
}

#[test]
fn unsupported_network_plugin_lists_supported() {
    fails_with(
        &inventory("").replace("CLUSTER_NETWORK=\"flannel\"", "CLUSTER_NETWORK=\"calico\""),
        &["CLUSTER_NETWORK=\"calico\"", "supported: flannel"],
    );
}

#[test]
fn duplicate_node_addresses() {
    let text = inventory("").replace(
        "10.0.0.3 k8s_nodename='w2'",
        "w2 ansible_host=10.0.0.2 k8s_nodename='w2'",
    );
    fails_with(
        &text,
        &["hosts 10.0.0.2 and w2 have the same address 10.0.0.2"],
    );
}

#[test]
fn duplicate_node_names() {
    fails_with(
        &inventory("").replace("k8s_nodename='w2'", "k8s_nodename='W1'"),
        &["same Kubernetes node name \"w1\""],
    );
}

#[test]
fn no_master_group() {
    let text = inventory("").replace("[kube_master]\n10.0.0.1 k8s_nodename='m1'\n", "");
    fails_with(&text, &["no host in a master group", "[kube_master]"]);
}

#[test]
fn etcd_datastore_without_etcd_hosts() {
    let text =
        inventory("FLANNEL_DATASTORE=\"etcd\"").replace("[etcd]\n10.0.0.1 NODE_NAME=etcd1\n", "");
    fails_with(&text, &["FLANNEL_DATASTORE=etcd needs etcd endpoints"]);
}

#[test]
fn image_agent_with_etcd_datastore() {
    fails_with(
        &inventory("FLANNEL_DATASTORE=\"etcd\"\nFLANNEL_AGENT=\"image\""),
        &["FLANNEL_AGENT=image", "FLANNEL_DATASTORE=kubernetes"],
    );
}

#[test]
fn not_a_boolean() {
    fails_with(
        &inventory("DIRECT_ROUTING=\"maybe\""),
        &["DIRECT_ROUTING", "not a boolean"],
    );
}

#[test]
fn cluster_wide_value_overridden_on_one_host() {
    let text = inventory("").replace(
        "10.0.0.3 k8s_nodename='w2'",
        "10.0.0.3 k8s_nodename='w2' FLANNEL_BACKEND=host-gw",
    );
    fails_with(&text, &["FLANNEL_BACKEND differs between hosts"]);
}

#[test]
fn all_problems_reported_at_once() {
    fails_with(
        &inventory("NODE_CIDR_LEN=40\nFLANNEL_BACKEND=\"x\"").replace("10.68.0.0/16", "bad"),
        &[
            "3 problem(s)",
            "SERVICE_CIDR",
            "NODE_CIDR_LEN",
            "FLANNEL_BACKEND",
        ],
    );
}

#[test]
fn missing_inventory_names_path_and_flag() {
    installer()
        .args(["render", "--dry-run", "-i", "/nonexistent/hosts"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "/nonexistent/hosts does not exist",
        ))
        .stderr(predicate::str::contains("-i PATH"));
}

#[test]
fn inventory_parse_error_names_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = write(dir.path(), "hosts", "[kube_master]\n10.0.0.1 oops\n");
    installer()
        .args(["render", "--dry-run", "-i"])
        .arg(&inv)
        .assert()
        .failure()
        .stderr(predicate::str::contains(format!("{}:2", inv.display())))
        .stderr(predicate::str::contains("oops"));
}

#[test]
fn ansible_inventory_env_is_the_default_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = write(dir.path(), "hosts", &inventory(""));
    installer()
        .env("ANSIBLE_INVENTORY", &inv)
        .args(["render", "--dry-run"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "10.0.0.3:/etc/cni/net.d/10-flannel.conflist",
        ));
}

#[test]
fn kubernetes_datastore_without_kubeconfig_fails_before_touching_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = write(dir.path(), "hosts", &inventory(""));
    let cache = dir.path().join("cache");
    // no --kubeconfig, no KUBECONFIG, a HOME without .kube/config
    installer()
        .args(["setup", "flannel", "-i"])
        .arg(&inv)
        .arg("--cache-dir")
        .arg(&cache)
        .env_remove("KUBECONFIG")
        .env("HOME", dir.path())
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "no kubeconfig for the Kubernetes API (looked at {}/.kube/config)",
            dir.path().display()
        )))
        .stderr(predicate::str::contains(
            "--kubeconfig FILE or set KUBECONFIG",
        ));
    assert!(
        !cache.exists(),
        "nothing fetched before the kubeconfig was found"
    );
    // KUBECONFIG naming missing files
    installer()
        .args(["setup", "flannel", "-i"])
        .arg(&inv)
        .env("KUBECONFIG", "/nonexistent/a:/nonexistent/b")
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "kubeconfig /nonexistent/a:/nonexistent/b: KUBECONFIG names no existing file",
        ));
    // --kubeconfig naming a missing file, and one that is not a kubeconfig
    installer()
        .args([
            "clean",
            "flannel",
            "--check",
            "--kubeconfig",
            "/nonexistent/kc",
            "-i",
        ])
        .arg(&inv)
        .assert()
        .failure();
    let bad = write(dir.path(), "bad.kubeconfig", "clusters: [oops\n");
    installer()
        .args(["setup", "flannel", "--kubeconfig"])
        .arg(&bad)
        .arg("-i")
        .arg(&inv)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "kubeconfig {}:",
            bad.display()
        )));
}

#[test]
fn files_only_needs_no_kubeconfig() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = write(dir.path(), "hosts", &inventory(""));
    // --files-only skips the API; it fails later, on the unreachable download, not on the
    // missing kubeconfig.
    let out = installer()
        .args([
            "setup",
            "flannel",
            "--files-only",
            "-e",
            "CNI_DOWNLOAD_URLS=http://127.0.0.1:9/x.tgz",
            "-i",
        ])
        .arg(&inv)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .env_remove("KUBECONFIG")
        .env("HOME", dir.path())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!err.contains("kubeconfig"), "{err}");
}

#[test]
fn node_build_has_the_node_commands_only() {
    let node = || assert_cmd::Command::new(env!("CARGO_BIN_EXE_installer-node"));
    let help = node().arg("--help").assert().success();
    let text = String::from_utf8_lossy(&help.get_output().stdout).into_owned();
    assert!(text.contains("agent"), "{text}");
    for deploy in ["setup", "render", "inventory", "lab"] {
        assert!(
            !text.lines().any(|l| l.trim_start().starts_with(deploy)),
            "the node build must not offer `{deploy}`:\n{text}"
        );
    }
    node()
        .args(["setup", "flannel"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("unrecognized subcommand 'setup'"));
    // What nodes run: the agent, verify's probes, the service helpers.
    for cmd in [
        &["agent", "--help"][..],
        &["verify", "probe", "--help"],
        &["supervise", "--help"],
        &["probe-http", "--help"],
    ] {
        node().args(cmd).assert().success();
    }
    // The full build has the same node subcommands.
    installer()
        .args(["verify", "probe", "--help"])
        .assert()
        .success();
}
