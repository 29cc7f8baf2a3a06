//! `installer vars` and `installer inventory`: resolved values, layers, precedence, errors.

mod common;
use common::*;
use predicates::prelude::*;

fn vars_json(
    inv: &std::path::Path,
    host: &str,
    extra: &[&str],
    names: &[&str],
) -> serde_json::Value {
    let out = installer()
        .args(["vars", "-o", "json", "--host", host, "-i"])
        .arg(inv)
        .args(extra)
        .args(names)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).expect("json")
}

#[test]
fn layers_are_named_and_precedence_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = inventory("FLANNEL_BACKEND=\"host-gw\"").replace(
        "10.0.0.2 k8s_nodename='w1'",
        "10.0.0.2 k8s_nodename='w1' FLANNEL_BACKEND=vxlan",
    ) + "[kube_node:vars]\nNODE_CIDR_LEN=25\n";
    let inv = write(dir.path(), "hosts", &text);
    let v = vars_json(
        &inv,
        "10.0.0.2",
        &[],
        &[
            "FLANNEL_BACKEND",
            "NODE_CIDR_LEN",
            "CNI_VERSION",
            "inventory_hostname",
        ],
    );
    assert_eq!(v["FLANNEL_BACKEND"]["value"], "vxlan");
    assert_eq!(v["FLANNEL_BACKEND"]["layer"], "inventory host vars");
    assert_eq!(v["NODE_CIDR_LEN"]["value"], 25);
    assert_eq!(
        v["NODE_CIDR_LEN"]["layer"],
        "inventory group vars [kube_node:vars]"
    );
    assert_eq!(v["CNI_VERSION"]["value"], "v0.6.0");
    assert_eq!(v["CNI_VERSION"]["layer"], "role defaults");
    assert_eq!(v["inventory_hostname"]["value"], "10.0.0.2");
    // -e beats everything, and k=v values stay strings as in Ansible.
    let v = vars_json(
        &inv,
        "10.0.0.2",
        &["-e", "FLANNEL_BACKEND=udp NODE_CIDR_LEN=26"],
        &["FLANNEL_BACKEND", "NODE_CIDR_LEN"],
    );
    assert_eq!(v["FLANNEL_BACKEND"]["value"], "udp");
    assert_eq!(v["NODE_CIDR_LEN"]["value"], "26");
    assert_eq!(v["NODE_CIDR_LEN"]["layer"], "extra vars (-e)");
    // JSON extra vars keep their types.
    let v = vars_json(
        &inv,
        "10.0.0.2",
        &["-e", "{\"NODE_CIDR_LEN\": 27}"],
        &["NODE_CIDR_LEN"],
    );
    assert_eq!(v["NODE_CIDR_LEN"]["value"], 27);
}

#[test]
fn lazy_resolution_follows_extra_vars() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = write(
        dir.path(),
        "hosts",
        &inventory("MASTER_IP=\"10.0.0.100\"\nKUBE_APISERVER=\"https://{{ MASTER_IP }}:8443\""),
    );
    let v = vars_json(&inv, "10.0.0.3", &[], &["KUBE_APISERVER"]);
    assert_eq!(v["KUBE_APISERVER"]["value"], "https://10.0.0.100:8443");
    let v = vars_json(
        &inv,
        "10.0.0.3",
        &["-e", "MASTER_IP=1.1.1.1"],
        &["KUBE_APISERVER"],
    );
    assert_eq!(v["KUBE_APISERVER"]["value"], "https://1.1.1.1:8443");
}

#[test]
fn hostvars_loops_resolve_in_each_hosts_scope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "[etcd]\n10.0.0.1 NODE_NAME=etcd1\n10.0.0.3 NODE_NAME=etcd3\n[kube_master]\n10.0.0.1\n[all:vars]\n\
        TMP_NODES=\"{% for h in groups['etcd'] %}{{ hostvars[h]['NODE_NAME'] }}=https://{{ h }}:2380,{% endfor %}\"\n\
        ETCD_NODES=\"{{ TMP_NODES.rstrip(',') }}\"\nMASTERS=\"{{ groups['kube_master'] }}\"\n";
    let inv = write(dir.path(), "hosts", text);
    let v = vars_json(&inv, "10.0.0.1", &[], &["ETCD_NODES", "MASTERS"]);
    assert_eq!(
        v["ETCD_NODES"]["value"],
        "etcd1=https://10.0.0.1:2380,etcd3=https://10.0.0.3:2380"
    );
    // A lone {{ expr }} that renders a list stays a list (Ansible 2.14).
    assert_eq!(v["MASTERS"]["value"], serde_json::json!(["10.0.0.1"]));
}

#[test]
fn extra_vars_file_is_loaded_like_kubeasz_config_yml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = write(dir.path(), "hosts", &inventory(""));
    let cfg = write(
        dir.path(),
        "config.yml",
        "CLUSTER_NAME: c9\nCONTEXT_NAME: \"context-{{ CLUSTER_NAME }}\"\nFLANNEL_BACKEND: \"host-gw\"\nDIRECT_ROUTING: false\n",
    );
    let arg = format!("@{}", cfg.display());
    let v = vars_json(
        &inv,
        "10.0.0.1",
        &["-e", &arg],
        &["CONTEXT_NAME", "FLANNEL_BACKEND", "DIRECT_ROUTING"],
    );
    assert_eq!(v["CONTEXT_NAME"]["value"], "context-c9");
    assert_eq!(v["FLANNEL_BACKEND"]["value"], "host-gw");
    assert_eq!(v["DIRECT_ROUTING"]["value"], false);
}

#[test]
fn extra_vars_path_without_at_is_refused() {
    installer()
        .args(["vars", "--host", "192.168.1.1", "-e", "./config.yml", "-i"])
        .arg(repo("inventory/hosts.multi-node"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("write -e @./config.yml"));
}

#[test]
fn cycle_is_reported_with_its_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = write(
        dir.path(),
        "hosts",
        &inventory("A=\"{{ B }}\"\nB=\"x{{ C }}\"\nC=\"{{ A }}\""),
    );
    installer()
        .args(["vars", "--host", "10.0.0.1", "A", "-i"])
        .arg(&inv)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "recursive loop detected in variable 'A'",
        ))
        .stderr(predicate::str::contains("A -> B -> C -> A"));
}

#[test]
fn undefined_inside_a_variable_names_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = write(
        dir.path(),
        "hosts",
        &inventory("URL=\"https://{{ NOPE }}:1\""),
    );
    installer()
        .args(["vars", "--host", "10.0.0.1", "URL", "-i"])
        .arg(&inv)
        .assert()
        .failure()
        .stderr(predicate::str::contains("variable 'URL'"))
        .stderr(predicate::str::contains("'NOPE' is undefined"))
        .stderr(predicate::str::contains("[all:vars]"));
}

#[test]
fn unknown_host_is_an_error() {
    installer()
        .args(["vars", "--host", "nope", "-i"])
        .arg(repo("inventory/hosts.multi-node"))
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "host 'nope' is not in the inventory",
        ));
}

#[test]
fn text_output_shows_value_and_layer() {
    installer()
        .args([
            "vars",
            "--host",
            "192.168.1.3",
            "CLUSTER_CIDR",
            "K8S_NODENAME",
            "-i",
        ])
        .arg(repo("inventory/hosts.multi-node"))
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "CLUSTER_CIDR = \"172.20.0.0/16\"    # inventory group vars [all:vars]",
        ))
        .stdout(predicate::str::contains(
            "K8S_NODENAME = \"worker-01\"    # role defaults",
        ));
}

#[test]
fn inventory_list_matches_ansible_inventory_for_the_examples() {
    for name in ["hosts.multi-node", "hosts.allinone"] {
        let out = installer()
            .args(["inventory", "--list", "-i"])
            .arg(repo(&format!("inventory/{name}")))
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let ours: serde_json::Value = serde_json::from_slice(&out).expect("json");
        let theirs: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(repo(&format!(
                "tests/fixtures/inventory/examples/{name}.list.json"
            )))
            .expect("golden from ansible-inventory"),
        )
        .expect("json");
        assert_eq!(ours, theirs, "{name}");
    }
}

#[test]
fn inventory_graph_and_host() {
    installer()
        .args(["inventory", "--graph", "-i"])
        .arg(repo("inventory/hosts.multi-node"))
        .assert()
        .success()
        .stdout(predicate::str::starts_with("@all:\n"))
        .stdout(predicate::str::contains(
            "  |--@kube_master:\n  |  |--192.168.1.1\n",
        ));
    installer()
        .args(["inventory", "--host", "192.168.1.3", "-i"])
        .arg(repo("inventory/hosts.multi-node"))
        .assert()
        .success()
        .stdout(predicate::str::contains("\"k8s_nodename\": \"worker-01\""));
}
