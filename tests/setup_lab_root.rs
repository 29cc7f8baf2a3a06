//! `installer setup flannel` against a real lab (namespace hosts with their own sshd): first
//! run, idempotent re-run, drift repair on one node, unreachable host, changed host key,
//! shell injection through an inventory value, and `--check` on a fresh lab.
//! Needs root and the lab packages; skips with a notice otherwise.

mod common;
use common::*;
use installer::lab::LabGuard;
use predicates::prelude::*;
use std::path::Path;

/// Run setup on the lab; returns (exit code, stdout, stderr).
fn setup(lab: &installer::lab::Lab, cache: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = installer()
        .args(["setup", "flannel", "-i"])
        .arg(&lab.inventory_path)
        .arg("--cache-dir")
        .arg(cache)
        .args(extra)
        .output()
        .expect("run installer");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The PLAY RECAP line of one host: (ok, changed, unreachable, failed).
fn recap_of(text: &str, host: &str) -> (u32, u32, u32, u32) {
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with(host) && l.contains("ok="))
        .unwrap_or_else(|| panic!("no recap line for {host} in:\n{text}"));
    let num = |key: &str| -> u32 {
        let rest = &line[line.find(key).expect("key") + key.len()..];
        rest.split_whitespace()
            .next()
            .expect("n")
            .parse()
            .expect("number")
    };
    (
        num("ok="),
        num("changed="),
        num("unreachable="),
        num("failed="),
    )
}

#[test]
fn first_run_changes_everything_second_changes_nothing_and_drift_is_repaired_root() {
    let Some(lab) = LabGuard::up_or_skip("setup_idempotent", 3).expect("lab") else {
        return;
    };
    let cache = tempfile::tempdir().expect("tempdir");
    let (code, out, err) = setup(&lab, cache.path(), &[]);
    assert_eq!(code, 0, "first run failed:\n{out}\n{err}");
    for node in &lab.nodes {
        let (_, changed, unreachable, failed) = recap_of(&out, &node.ip.to_string());
        assert!(
            changed >= 10,
            "first run must change everything on {}: {out}",
            node.ip
        );
        assert_eq!((unreachable, failed), (0, 0));
        // What landed on the node (its own view of /opt/kube and /etc/cni).
        for plugin in ["bridge", "host-local", "loopback", "portmap", "installer"] {
            let p = node.host_path(&format!("/opt/kube/bin/{plugin}"));
            let meta = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
                0o755
            );
        }
        // Uploaded files are root's (from the tar headers), with no temporary file left.
        for dir in ["/opt/kube/bin", "/etc/cni/net.d", "/etc/kube-flannel"] {
            for entry in std::fs::read_dir(node.host_path(dir))
                .expect("dir")
                .flatten()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                assert!(!name.contains(".installer-"), "left behind: {dir}/{name}");
                let meta = entry.path().symlink_metadata().expect("meta");
                use std::os::unix::fs::MetadataExt;
                assert_eq!((meta.uid(), meta.gid()), (0, 0), "{dir}/{name}");
            }
        }
        // The node build is what the nodes run.
        assert_eq!(
            std::fs::read(node.host_path("/opt/kube/bin/installer")).expect("node binary"),
            std::fs::read(env!("CARGO_BIN_EXE_installer-node")).expect("installer-node"),
            "setup must push installer-node, found next to installer"
        );
        // Every uploaded file is in the node's digest memo with its content's sha256.
        let memo =
            std::fs::read_to_string(node.host_path("/var/lib/installer/digests")).expect("memo");
        for path in [
            "/opt/kube/bin/bridge",
            "/opt/kube/bin/installer",
            "/etc/cni/net.d/10-flannel.conflist",
        ] {
            let line = memo
                .lines()
                .find(|l| l.split('\t').nth(1) == Some(path))
                .unwrap_or_else(|| panic!("{path} not in the memo:\n{memo}"));
            let bytes = std::fs::read(node.host_path(path)).expect("read");
            let sum = sha256_hex(&bytes);
            assert_eq!(line.split('\t').nth(2), Some(sum.as_str()), "{line}");
            let meta = std::fs::metadata(node.host_path(path)).expect("meta");
            use std::os::unix::fs::MetadataExt;
            let id = format!("{}:{}:{}:", meta.dev(), meta.ino(), meta.size());
            assert!(line.starts_with(&id), "identity {id} in {line}");
        }
        let link =
            std::fs::read_link(node.host_path("/opt/kube/bin/flannel")).expect("flannel link");
        assert_eq!(link, Path::new("installer"));
        let conf = std::fs::read_to_string(node.host_path("/etc/cni/net.d/10-flannel.conflist"))
            .expect("conflist");
        let v: serde_json::Value = serde_json::from_str(&conf).expect("json");
        assert_eq!(v["name"], "cbr0");
    }
    // The deploy side kept the verified tarball in the cache.
    assert!(cache.path().join(&lab.cni_tarball_name).is_file());

    let (code, out, err) = setup(&lab, cache.path(), &[]);
    assert_eq!(code, 0, "re-run failed:\n{out}\n{err}");
    for node in &lab.nodes {
        assert_eq!(
            recap_of(&out, &node.ip.to_string()).1,
            0,
            "re-run changed {}: {out}",
            node.ip
        );
    }

    // Drift on node2 only: an edited config file and a stray 10-default.conf.
    let n2 = &lab.nodes[1];
    std::fs::write(n2.host_path("/etc/cni/net.d/10-flannel.conflist"), "{}").expect("edit");
    std::fs::write(n2.host_path("/etc/cni/net.d/10-default.conf"), "{}").expect("stray");
    let (code, out, err) = setup(&lab, cache.path(), &["--diff"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(recap_of(&out, &n2.ip.to_string()).1, 2, "{out}");
    assert_eq!(recap_of(&out, &lab.nodes[0].ip.to_string()).1, 0);
    assert_eq!(recap_of(&out, &lab.nodes[2].ip.to_string()).1, 0);
    assert!(!n2.host_path("/etc/cni/net.d/10-default.conf").exists());
    assert!(
        out.contains("+  \"name\": \"cbr0\","),
        "--diff shows the restored content: {out}"
    );

    // Nodes remember their files' digests; a same-size edit in place (same inode, new
    // modification time) is still noticed and repaired.
    let memo = std::fs::read_to_string(n2.host_path("/var/lib/installer/digests")).expect("memo");
    assert!(memo.contains("\t/opt/kube/bin/bridge\t"), "{memo}");
    let bridge = n2.host_path("/opt/kube/bin/bridge");
    let mut bytes = std::fs::read(&bridge).expect("bridge");
    bytes[100] ^= 0xff;
    std::io::Write::write_all(
        &mut std::fs::OpenOptions::new()
            .write(true)
            .open(&bridge)
            .expect("open in place"),
        &bytes,
    )
    .expect("edit in place");
    let (code, out, err) = setup(&lab, cache.path(), &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(recap_of(&out, &n2.ip.to_string()).1, 1, "{out}");
    assert!(
        out.contains("/opt/kube/bin/bridge | changed: updated"),
        "{out}"
    );
    // The memo is what answers: among stale lines for the same paths (other identities), the
    // line with the file's identity is found, and its digest believed (here a wrong one, so
    // the file is uploaded again).
    let n3 = &lab.nodes[2];
    let memo_path = n3.host_path("/var/lib/installer/digests");
    let memo = std::fs::read_to_string(&memo_path).expect("memo");
    let stale: String = memo
        .lines()
        .map(|l| {
            format!(
                "1:2:3:4.stale\t{}\n",
                l.split('\t').skip(1).collect::<Vec<_>>().join("\t")
            )
        })
        .collect();
    let zero = "0".repeat(64);
    let lied: String = memo
        .lines()
        .map(|l| {
            if l.contains("\t/opt/kube/bin/portmap\t") {
                let id_path: Vec<&str> = l.split('\t').take(2).collect();
                format!("{}\t{zero}\n", id_path.join("\t"))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&memo_path, format!("{stale}{lied}{stale}")).expect("write memo");
    let (code, out, err) = setup(&lab, cache.path(), &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(recap_of(&out, &n3.ip.to_string()).1, 1, "{out}");
    assert!(
        out.contains("/opt/kube/bin/portmap | changed: updated (sha256 000000000000 -> "),
        "{out}"
    );
}

#[test]
fn stopped_sshd_makes_one_host_unreachable_and_the_run_fail_root() {
    let Some(lab) = LabGuard::up_or_skip("setup_unreachable", 3).expect("lab") else {
        return;
    };
    let cache = tempfile::tempdir().expect("tempdir");
    let down = &lab.nodes[2];
    lab.stop_sshd(down).expect("stop sshd");
    let (code, out, err) = setup(&lab, cache.path(), &[]);
    assert_ne!(code, 0, "{out}\n{err}");
    let (_, _, unreachable, _) = recap_of(&out, &down.ip.to_string());
    assert_eq!(unreachable, 1, "{out}");
    for node in &lab.nodes[..2] {
        let (_, changed, unreachable, failed) = recap_of(&out, &node.ip.to_string());
        assert!(changed > 0 && unreachable == 0 && failed == 0, "{out}");
    }
    assert!(
        out.contains(&format!("--limit {}", down.ip)),
        "retry hint: {out}"
    );
    // Retrying just that host once it is back succeeds.
    lab.start_sshd(down).expect("start sshd");
    let limit = down.ip.to_string();
    let (code, out, err) = setup(&lab, cache.path(), &["--limit", &limit]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        !out.contains(&lab.nodes[0].ip.to_string()),
        "--limit restricts the run: {out}"
    );
}

#[test]
fn changed_host_key_fails_that_host_with_both_fingerprints_root() {
    let Some(lab) = LabGuard::up_or_skip("setup_hostkey", 2).expect("lab") else {
        return;
    };
    let cache = tempfile::tempdir().expect("tempdir");
    let victim = &lab.nodes[1];
    lab.regenerate_host_key(victim).expect("new host key");
    let (code, out, err) = setup(&lab, cache.path(), &[]);
    assert_ne!(code, 0);
    let all = format!("{out}\n{err}");
    assert_eq!(recap_of(&out, &victim.ip.to_string()).3, 1, "{all}");
    assert_eq!(recap_of(&out, &lab.nodes[0].ip.to_string()).3, 0, "{all}");
    assert!(
        all.matches("SHA256:").count() >= 2,
        "both fingerprints shown: {all}"
    );
    assert!(all.contains("ssh-keygen"), "{all}");
    assert!(
        !victim.host_path("/opt/kube/bin/installer").exists(),
        "nothing pushed to a host with a changed key"
    );
}

#[test]
fn inventory_value_cannot_inject_shell_root() {
    let Some(lab) = LabGuard::up_or_skip("setup_inject", 1).expect("lab") else {
        return;
    };
    let cache = tempfile::tempdir().expect("tempdir");
    let marker = format!("/tmp/installer-injected-{}", std::process::id());
    let _ = std::fs::remove_file(&marker);
    // The value goes into a copy of the lab inventory, as an operator's file would hold it.
    let inv_text = std::fs::read_to_string(&lab.inventory_path).expect("inventory");
    let inv = cache.path().join("hosts");
    std::fs::write(
        &inv,
        format!("{inv_text}\nbin_dir=/opt/kube/bin/$(touch {marker});`touch {marker}`\n"),
    )
    .expect("write inventory");
    let out = installer()
        .args(["setup", "flannel", "-i"])
        .arg(&inv)
        .arg("--cache-dir")
        .arg(cache.path())
        .output()
        .expect("run");
    let (code, out, err) = (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        !Path::new(&marker).exists(),
        "the inventory value ran as a command"
    );
    // The directory exists under its literal (odd) name instead.
    let literal = format!("/opt/kube/bin/$(touch {marker});`touch {marker}`/installer");
    assert!(lab.nodes[0].host_path(&literal).is_file(), "{out}");
}

#[test]
fn check_mode_on_a_fresh_lab_changes_nothing_root() {
    let Some(lab) = LabGuard::up_or_skip("setup_check", 2).expect("lab") else {
        return;
    };
    let cache = tempfile::tempdir().expect("tempdir");
    let (code, out, err) = setup(&lab, cache.path(), &["--check"]);
    assert_eq!(code, 0, "{out}\n{err}");
    for node in &lab.nodes {
        assert!(
            recap_of(&out, &node.ip.to_string()).1 >= 10,
            "check reports what would change: {out}"
        );
        assert!(
            !node.host_path("/opt/kube/bin").exists(),
            "check mode created {}",
            node.name
        );
        assert!(
            !node
                .host_path("/etc/cni/net.d/10-flannel.conflist")
                .exists()
        );
    }
}

#[test]
fn json_output_is_one_event_per_line_ending_with_the_recap_root() {
    let Some(lab) = LabGuard::up_or_skip("setup_json", 1).expect("lab") else {
        return;
    };
    let cache = tempfile::tempdir().expect("tempdir");
    let (code, out, err) = setup(&lab, cache.path(), &["--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let last = events.last().expect("events");
    assert_eq!(last["event"], "recap");
    let host = lab.nodes[0].ip.to_string();
    assert_eq!(last["hosts"][&host]["failed"], 0);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "op" && e["status"] == "changed")
    );
}

#[test]
fn fetch_writes_a_bundle_that_setup_uses_offline_root() {
    let Some(lab) = LabGuard::up_or_skip("setup_bundle", 1).expect("lab") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("offline.tar.gz");
    installer()
        .args(["fetch", "-i"])
        .arg(&lab.inventory_path)
        .arg("--cache-dir")
        .arg(dir.path().join("cache1"))
        .arg("--bundle")
        .arg(&bundle)
        .assert()
        .success()
        .stdout(predicate::str::contains(&lab.cni_sha256));
    // A fresh cache and a dead mirror: only the bundle can provide the plugins.
    let (code, out, err) = setup(
        &lab,
        &dir.path().join("cache2"),
        &[
            "--offline-bundle",
            bundle.to_str().expect("utf-8"),
            "-e",
            "CNI_DOWNLOAD_URLS=http://198.18.255.254:9/none.tgz",
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
}

#[test]
fn clean_removes_what_setup_made_root() {
    let Some(lab) = LabGuard::up_or_skip("setup_clean", 2).expect("lab") else {
        return;
    };
    let cache = tempfile::tempdir().expect("tempdir");
    let (code, out, err) = setup(&lab, cache.path(), &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let etcd = installer::etcd_gateway::EtcdGateway::new(
        std::slice::from_ref(&lab.etcd_endpoint),
        &Default::default(),
    )
    .expect("etcd client");
    assert!(
        etcd.get("/coreos.com/network/config")
            .expect("get")
            .is_some(),
        "setup wrote the config"
    );
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
    assert!(out.status.success(), "{text}");
    for node in &lab.nodes {
        for p in [
            "/etc/cni/net.d/10-flannel.conflist",
            "/etc/kube-flannel/agent.json",
            "/opt/kube/bin/installer",
            "/opt/kube/bin/flannel",
            "/opt/kube/bin/bridge",
            "/run/flannel/subnet.env",
        ] {
            assert!(
                !node.host_path(p).exists() && node.host_path(p).symlink_metadata().is_err(),
                "{p} left on {}",
                node.name
            );
        }
    }
    assert_eq!(
        etcd.get("/coreos.com/network/config").expect("get"),
        None,
        "{text}"
    );
    // A second clean has nothing left to do.
    let out = installer()
        .args(["clean", "flannel", "-i"])
        .arg(&lab.inventory_path)
        .output()
        .expect("clean");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success());
    for node in &lab.nodes {
        assert_eq!(recap_of(&text, &node.ip.to_string()).1, 0, "{text}");
    }
}

/// Lower-case hex sha256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
