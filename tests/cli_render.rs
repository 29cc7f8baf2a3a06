//! `installer render`: dry-run output, output directories, one-template rendering, operator role
//! folders compared with what real Ansible rendered, and template errors.

mod common;
use common::*;
use predicates::prelude::*;

fn stdout_of(cmd: &mut assert_cmd::Command) -> String {
    let out = cmd.assert().success().get_output().stdout.clone();
    String::from_utf8(out).expect("utf-8 output")
}

#[test]
fn dry_run_of_example_multi_node_inventory() {
    let out = stdout_of(
        installer()
            .args(["render", "--dry-run", "-i"])
            .arg(repo("inventory/hosts.multi-node")),
    );
    insta::assert_snapshot!("multi_node_dry_run", out);
}

#[test]
fn dry_run_of_example_allinone_inventory_has_one_node() {
    let out = stdout_of(
        installer()
            .args(["render", "--dry-run", "-i"])
            .arg(repo("inventory/hosts.allinone")),
    );
    assert_eq!(
        out.matches("# ==> 192.168.1.1:/etc/cni/net.d/10-flannel.conflist")
            .count(),
        1
    );
    assert!(!out.contains("192.168.1.2"));
}

#[test]
fn image_mode_adds_the_daemonset_with_configured_images() {
    let out = stdout_of(
        installer()
            .args([
                "render",
                "--dry-run",
                "-e",
                "FLANNEL_AGENT=image",
                "-e",
                "flannel_ver=v0.99.0",
                "-i",
            ])
            .arg(repo("inventory/hosts.multi-node")),
    );
    assert!(
        out.contains("#     DaemonSet kube-system/kube-flannel-ds (apps/v1)"),
        "{out}"
    );
    assert!(out.contains("image: ghcr.io/flannel-io/flannel:v0.99.0"));
    // Image mode ships no agent unit or agent config.
    assert!(!out.contains("flannel-agent.service"));
    assert!(!out.contains("agent.json"));
}

#[test]
fn embedded_mode_has_no_daemonset() {
    let out = stdout_of(
        installer()
            .args(["render", "--dry-run", "-i"])
            .arg(repo("inventory/hosts.multi-node")),
    );
    assert!(!out.contains("kind: DaemonSet"));
    assert!(out.contains("192.168.1.4:/etc/systemd/system/flannel-agent.service"));
}

#[test]
fn etcd_datastore_writes_config_to_etcd_not_to_the_cluster() {
    let out = stdout_of(
        installer()
            .args([
                "render",
                "--dry-run",
                "-e",
                "FLANNEL_DATASTORE=etcd",
                "-e",
                "FLANNEL_BACKEND=host-gw",
                "-i",
            ])
            .arg(repo("inventory/hosts.multi-node")),
    );
    assert!(
        out.contains("# ==> etcd key /coreos.com/network/config"),
        "{out}"
    );
    assert!(!out.contains("cluster objects"));
    assert!(out.contains("\"SubnetLen\": 24"));
    assert!(out.contains("\"Type\": \"host-gw\""));
    // Endpoints come from the [etcd] group as kubeasz builds them.
    assert!(out.contains(
        "\"endpoints\": [\"https://192.168.1.1:2379\", \"https://192.168.1.2:2379\", \"https://192.168.1.3:2379\"]"
    ));
}

#[test]
fn host_limits_per_host_files() {
    let out = stdout_of(
        installer()
            .args(["render", "--dry-run", "--host", "192.168.1.3", "-i"])
            .arg(repo("inventory/hosts.multi-node")),
    );
    assert!(out.contains("192.168.1.3:/etc/cni/net.d/10-flannel.conflist"));
    assert!(!out.contains("192.168.1.4:"));
    assert!(out.contains("cluster objects"), "cluster-wide outputs stay");
    assert!(out.contains("\"node_name\": \"worker-01\""));
}

#[test]
fn host_that_is_not_a_node_is_an_error() {
    installer()
        .args(["render", "--dry-run", "--host", "10.9.9.9", "-i"])
        .arg(repo("inventory/hosts.multi-node"))
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "host '10.9.9.9' is not a master or node",
        ));
}

#[test]
fn output_dir_holds_every_file_and_each_parses() {
    let dir = tempfile::tempdir().expect("tempdir");
    installer()
        .args(["render", "-i"])
        .arg(repo("inventory/hosts.multi-node"))
        .arg("-o")
        .arg(dir.path())
        .assert()
        .success();
    let conflist = dir
        .path()
        .join("hosts/192.168.1.2/etc/cni/net.d/10-flannel.conflist");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&conflist).expect("conflist")).expect("json");
    assert_eq!(v["plugins"][0]["type"], "flannel");
    assert_eq!(v["cniVersion"], "0.3.1");
    let manifest =
        std::fs::read_to_string(dir.path().join("cluster/flannel.yaml")).expect("manifest");
    assert!(manifest.contains("kind: ConfigMap"));
    for host in ["192.168.1.1", "192.168.1.2", "192.168.1.3", "192.168.1.4"] {
        let p = dir
            .path()
            .join(format!("hosts/{host}/etc/kube-flannel/agent.json"));
        let agent: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p).expect("agent.json")).expect("json");
        assert_eq!(agent["node_address"], host);
    }
    let leftovers: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("installer-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn operator_role_folder_renders_exactly_as_ansible_did() {
    let fixture = repo("tests/fixtures/role-dir");
    for host in ["192.168.1.1", "192.168.1.2", "192.168.1.3"] {
        let out = stdout_of(
            installer()
                .args([
                    "render",
                    "--template",
                    "kube-flannel.yaml.j2",
                    "--host",
                    host,
                    "-e",
                    "DIRECT_ROUTING=true",
                    "-i",
                ])
                .arg(fixture.join("hosts"))
                .arg("--role-dir")
                .arg(fixture.join("flannel")),
        );
        let expected =
            std::fs::read_to_string(fixture.join(format!("expected/{host}-kube-flannel.yaml")))
                .expect("expected output (tests/fixtures/role-dir/regen.sh)");
        assert_eq!(out, expected, "host {host}");
    }
}

#[test]
fn template_file_renders_with_full_host_context() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = write(
        dir.path(),
        "hosts",
        &inventory("KUBE_APISERVER=\"https://{{ groups['kube_master'][0] }}:6443\""),
    );
    let tpl = write(
        dir.path(),
        "debug.conf.j2",
        "host={{ inventory_hostname }} name={{ K8S_NODENAME }}\n\
         {% for h in groups['kube_node'] %}peer {{ h }} {{ hostvars[h]['k8s_nodename'] }}\n{% endfor %}\
         api={{ KUBE_APISERVER }} none=[{{ None }}] bool={{ 'yes' | bool }}\n",
    );
    let out = stdout_of(
        installer()
            .args(["render", "--host", "10.0.0.2", "--template"])
            .arg(&tpl)
            .arg("-i")
            .arg(&inv),
    );
    assert_eq!(
        out,
        "host=10.0.0.2 name=w1\npeer 10.0.0.2 w1\npeer 10.0.0.3 w2\napi=https://10.0.0.1:6443 none=[] bool=True\n"
    );
}

#[test]
fn undefined_variable_names_template_line_and_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = write(dir.path(), "hosts", &inventory(""));
    let tpl = write(
        dir.path(),
        "bad.j2",
        "line one\nvalue={{ NOT_DEFINED_ANYWHERE }}\n",
    );
    installer()
        .args(["render", "--host", "10.0.0.1", "--template"])
        .arg(&tpl)
        .arg("-i")
        .arg(&inv)
        .assert()
        .failure()
        .stderr(predicate::str::contains("bad.j2:2"))
        .stderr(predicate::str::contains("NOT_DEFINED_ANYWHERE"));
}

#[test]
fn role_template_rendering_invalid_json_is_refused_and_nothing_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = write(dir.path(), "hosts", &inventory(""));
    let role = dir.path().join("role");
    write(
        &role,
        "templates/10-flannel.conflist.j2",
        "{ \"name\": \"cbr0\", oops }\n",
    );
    let out = dir.path().join("out");
    installer()
        .args(["render", "-e", "FLANNEL_DATASTORE=etcd", "-i"])
        .arg(&inv)
        .arg("--role-dir")
        .arg(&role)
        .arg("-o")
        .arg(&out)
        .assert()
        .failure()
        .stderr(predicate::str::contains("template 10-flannel.conflist.j2"))
        .stderr(predicate::str::contains("invalid JSON"));
    assert!(
        !out.exists(),
        "nothing may be written when a template is invalid"
    );
}

#[test]
fn role_template_with_invalid_manifest_names_document_and_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = write(dir.path(), "hosts", &inventory(""));
    let role = dir.path().join("role");
    write(
        &role,
        "templates/kube-flannel.yaml.j2",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: [1, 2]\n",
    );
    installer()
        .args(["render", "--dry-run", "-i"])
        .arg(&inv)
        .arg("--role-dir")
        .arg(&role)
        .assert()
        .failure()
        .stderr(predicate::str::contains("kube-flannel.yaml.j2"))
        .stderr(predicate::str::contains("document 1 (ConfigMap x)"));
}

#[test]
fn missing_role_dir_is_an_error() {
    installer()
        .args([
            "render",
            "--dry-run",
            "--role-dir",
            "/nonexistent/role",
            "-i",
        ])
        .arg(repo("inventory/hosts.multi-node"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("/nonexistent/role"));
}

#[test]
fn explicit_plugin_must_match_inventory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = write(dir.path(), "hosts", &inventory(""));
    installer()
        .args(["render", "calico", "--dry-run", "-i"])
        .arg(&inv)
        .assert()
        .failure()
        .stderr(predicate::str::contains("no built-in role 'calico'"));
}
