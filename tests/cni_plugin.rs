//! The flannel CNI plugin binary's protocol behaviour that needs no root: VERSION, CHECK,
//! GC, environment and config errors, and the error for a missing subnet.env. The binary is
//! the real `installer`, run through a symlink named `flannel` as a runtime would.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const CNI_VARS: &[&str] = &[
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
    "CNI_NETNS_OVERRIDE",
];

/// A temp dir with `flannel` → the installer binary.
struct Plugin {
    dir: tempfile::TempDir,
}

impl Plugin {
    fn new() -> Plugin {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("bin")).expect("mkdir bin");
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_installer"),
            dir.path().join("bin/flannel"),
        )
        .expect("symlink flannel");
        Plugin { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Run the plugin with exactly these CNI variables and `stdin`.
    fn run(&self, env: &[(&str, &str)], stdin: &str) -> Output {
        let mut cmd = Command::new(self.path("bin/flannel"));
        for var in CNI_VARS {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn flannel");
        use std::io::Write;
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes());
        child.wait_with_output().expect("wait flannel")
    }

    /// The full ADD/DEL/CHECK environment with `command`; the netns path need not exist.
    fn env(&self, command: &'static str) -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", "cnit-c1".to_string()),
            ("CNI_NETNS", "/run/netns/cnit-does-not-exist".to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_PATH", self.path("bin").display().to_string()),
        ]
    }

    fn run_env(&self, env: &[(&'static str, String)], stdin: &str) -> Output {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.run(&env, stdin)
    }
}

/// Exit code and stdout parsed as the CNI error JSON.
fn cni_error(out: &Output) -> (i32, Value) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout:?}"));
    (out.status.code().unwrap_or(-1), value)
}

#[test]
fn version_prints_supported_versions_without_reading_config() {
    let plugin = Plugin::new();
    let out = plugin.run(&[("CNI_COMMAND", "VERSION")], "not json at all");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.1.0\",\"0.2.0\",\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n"
    );
}

#[test]
fn no_command_prints_about_to_stderr_and_succeeds() {
    let plugin = Plugin::new();
    let out = plugin.run(&[], "");
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("CNI Plugin flannel version"), "{stderr}");
    assert!(
        stderr.contains(
            "CNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"
        ),
        "{stderr}"
    );
}

#[test]
fn check_succeeds_from_0_4_0_and_is_refused_before() {
    let plugin = Plugin::new();
    let env = plugin.env("CHECK");
    let conf =
        r#"{"name":"cbr0","cniVersion":"1.0.0","type":"flannel","subnetFile":"/nonexistent"}"#;
    let out = plugin.run_env(&env, conf);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "CHECK prints nothing: {out:?}");

    let out = plugin.run_env(
        &env,
        r#"{"name":"cbr0","cniVersion":"0.3.1","type":"flannel"}"#,
    );
    assert_eq!(
        cni_error(&out),
        (
            1,
            json!({"code": 1, "msg": "config version does not allow CHECK"})
        )
    );
}

#[test]
fn gc_and_status_need_spec_1_1() {
    let plugin = Plugin::new();
    let mut env = vec![("CNI_COMMAND", "GC".to_string())];
    env.push(("CNI_PATH", plugin.path("bin").display().to_string()));
    let out = plugin.run_env(&env, r#"{"name":"cbr0","cniVersion":"1.1.0"}"#);
    assert!(out.status.success(), "{out:?}");
    let out = plugin.run_env(&env, r#"{"name":"cbr0","cniVersion":"1.0.0"}"#);
    assert_eq!(
        cni_error(&out),
        (
            1,
            json!({"code": 1, "msg": "config version does not allow GC"})
        )
    );
    env[0].1 = "STATUS".into();
    let out = plugin.run_env(&env, r#"{"name":"cbr0","cniVersion":"1.1.0"}"#);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn missing_environment_is_code_4() {
    let plugin = Plugin::new();
    let out = plugin.run(
        &[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")],
        r#"{"name":"cbr0","cniVersion":"0.3.1"}"#,
    );
    assert_eq!(
        cni_error(&out),
        (
            1,
            json!({"code": 4, "msg": "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_PATH] missing"})
        )
    );
    // the error JSON is indented like libcni's Print
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("{\n    \"code\": 4,"));
}

#[test]
fn config_errors_have_their_codes() {
    let plugin = Plugin::new();
    let env = plugin.env("ADD");
    let out = plugin.run_env(&env, r#"{"cniVersion":"0.3.1","type":"flannel"}"#);
    assert_eq!(
        cni_error(&out),
        (1, json!({"code": 7, "msg": "missing network name"}))
    );
    let out = plugin.run_env(&env, r#"{"name":"cbr0","cniVersion":"2.0.0"}"#);
    let (status, err) = cni_error(&out);
    assert_eq!(
        (status, &err["code"], &err["msg"]),
        (1, &json!(1), &json!("incompatible CNI versions"))
    );
    assert_eq!(
        err["details"],
        r#"config is "2.0.0", plugin supports ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0" "1.0.0" "1.1.0"]"#
    );
    let out = plugin.run_env(&env, "{");
    assert_eq!(cni_error(&out).1["code"], 6);
}

#[test]
fn add_without_subnet_env_fails_with_flannels_message() {
    let plugin = Plugin::new();
    let subnet = plugin.path("run/flannel/subnet.env");
    let data = plugin.path("data");
    let conf = json!({
        "name": "cbr0", "cniVersion": "0.3.1", "type": "flannel",
        "subnetFile": subnet, "dataDir": data,
        "delegate": {"hairpinMode": true, "isDefaultGateway": true}
    });
    let out = plugin.run_env(&plugin.env("ADD"), &conf.to_string());
    let msg = format!(
        "failed to load flannel 'subnet.env' file: open {}: no such file or directory. Check the flannel pod log for this node.",
        subnet.display()
    );
    assert_eq!(cni_error(&out), (1, json!({"code": 999, "msg": msg})));
    assert!(!data.exists(), "nothing saved when subnet.env is missing");

    // an incomplete file names what is missing
    std::fs::create_dir_all(subnet.parent().unwrap()).unwrap();
    std::fs::write(&subnet, "FLANNEL_NETWORK=198.19.0.0/16\nFLANNEL_MTU=1450\n").unwrap();
    let out = plugin.run_env(&plugin.env("ADD"), &conf.to_string());
    let msg = format!(
        "failed to load flannel 'subnet.env' file: {} is missing FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET, FLANNEL_IPMASQ. Check the flannel pod log for this node.",
        subnet.display()
    );
    assert_eq!(cni_error(&out), (1, json!({"code": 999, "msg": msg})));
}

#[test]
fn delegate_is_validated_after_subnet_env() {
    let plugin = Plugin::new();
    let subnet = plugin.path("subnet.env");
    std::fs::write(
        &subnet,
        "FLANNEL_NETWORK=198.19.0.0/16\nFLANNEL_SUBNET=198.19.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
    )
    .unwrap();
    let conf = json!({
        "name": "cbr0", "cniVersion": "0.3.1", "type": "flannel",
        "subnetFile": subnet, "dataDir": plugin.path("data"),
        "delegate": {"ipam": {"type": "host-local"}}
    });
    let out = plugin.run_env(&plugin.env("ADD"), &conf.to_string());
    assert_eq!(
        cni_error(&out),
        (
            1,
            json!({"code": 999, "msg": "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel"})
        )
    );
}

#[test]
fn del_without_saved_config_succeeds() {
    let plugin = Plugin::new();
    let mut env = plugin.env("DEL");
    env.retain(|(k, _)| *k != "CNI_NETNS");
    let conf = json!({"name": "cbr0", "cniVersion": "0.3.1", "type": "flannel", "dataDir": plugin.path("data")});
    let out = plugin.run_env(&env, &conf.to_string());
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty());
}

#[test]
fn missing_delegate_binary_keeps_the_saved_config_for_del() {
    let plugin = Plugin::new();
    let subnet = plugin.path("subnet.env");
    std::fs::write(
        &subnet,
        "FLANNEL_NETWORK=198.19.0.0/16\nFLANNEL_SUBNET=198.19.2.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
    )
    .unwrap();
    let data = plugin.path("data");
    let conf = json!({
        "name": "cbr0", "cniVersion": "0.3.1", "type": "flannel",
        "subnetFile": subnet, "dataDir": data,
        "delegate": {"type": "cnit-no-such-plugin"}
    });
    let out = plugin.run_env(&plugin.env("ADD"), &conf.to_string());
    let msg = format!(
        "failed to delegate add: failed to find plugin \"cnit-no-such-plugin\" in path [{}]",
        plugin.path("bin").display()
    );
    assert_eq!(cni_error(&out), (1, json!({"code": 999, "msg": msg})));
    let saved = data.join("cnit-c1");
    let text = std::fs::read_to_string(&saved).expect("saved before the delegate ran");
    assert_eq!(
        text,
        r#"{"cniVersion":"0.3.1","ipMasq":false,"ipam":{"ranges":[[{"subnet":"198.19.2.0/24"}]],"routes":[{"dst":"198.19.0.0/16"}],"type":"host-local"},"mtu":1450,"name":"cbr0","type":"cnit-no-such-plugin"}"#
    );

    // DEL uses the saved config even after subnet.env is gone; its failure keeps the file
    std::fs::remove_file(&subnet).unwrap();
    let out = plugin.run_env(&plugin.env("DEL"), &conf.to_string());
    assert_eq!(cni_error(&out).0, 1, "{out:?}");
    assert!(Path::new(&saved).exists(), "kept for a retry");
}
