//! The lab on the real machine: namespaces, sshd, etcd, mirror, teardown. Needs root and the
//! Debian packages the lab names; every test skips with a notice otherwise.

use assert_cmd::Command as AssertCommand;
use installer::lab::{Lab, LabError, LabGuard, MirrorMode, UpOptions, mirror, prereq, sys};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// Tests that prove "nothing is left" take this for writing, so no other test of this binary
/// creates a lab (which could reuse the freed index) while they look.
static CLEANLINESS: RwLock<()> = RwLock::new(());

fn skip(test: &str) -> bool {
    match prereq::unavailable_reason() {
        Some(reason) => {
            eprintln!("skipping {test}: {reason}");
            true
        }
        None => false,
    }
}

/// Whether the binary under test is this tree's installer. Helpers that share
/// one CARGO_TARGET_DIR overwrite `target/debug/installer` with their own builds; CLI tests skip
/// with a notice then instead of failing on a stranger's binary.
/// The installer binary under test: `INSTALLER_TEST_BIN` when set (a copy taken right after
/// building, immune to other trees' builds), else the one cargo built.
fn bin() -> String {
    std::env::var("INSTALLER_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_installer").into())
}

fn cli_skip(test: &str) -> bool {
    if skip(test) {
        return true;
    }
    let bin = bin();
    let ours = Command::new(&bin)
        .args(["lab", "up", "--help"])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("--nodes")
        });
    if !ours {
        eprintln!("skipping {test}: {bin} is not this tree's installer (shared target dir?)");
    }
    !ours
}

/// Removes a lab by name when dropped, so a failing CLI test does not leave its lab behind.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = installer::lab::down::down_by_name(&self.0);
    }
}

fn installer() -> AssertCommand {
    AssertCommand::new(bin())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", std::process::id())
}

/// Run the `ssh` client with the lab's key and strict host-key checking against its known_hosts.
fn ssh(lab: &Lab, node: usize, command: &str) -> std::process::Output {
    let argv = lab.ssh_argv(&lab.nodes[node]);
    Command::new(&argv[0])
        .args(&argv[1..])
        .args(["-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", command])
        .output()
        .unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Everything that would show the lab still exists; empty when it is gone.
fn remains(name: &str, index: u8) -> Vec<String> {
    let mut found = remains_of_name(name);
    let prefix = format!("il{index}-");
    for entry in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let n = entry.file_name().to_string_lossy().into_owned();
        if n.starts_with(&prefix) {
            found.push(format!("namespace {n}"));
        }
    }
    if Path::new("/sys/class/net")
        .join(format!("il{index}-h"))
        .exists()
    {
        found.push(format!("link il{index}-h"));
    }
    found
}

/// Processes, mounts and the state directory of a lab name.
fn remains_of_name(name: &str) -> Vec<String> {
    let mut found = Vec::new();
    let marker = format!("/run/installer-lab/{name}/");
    for pid in sys::all_pids() {
        if sys::pid_alive(pid) && sys::cmdline_contains(pid, &marker) {
            found.push(format!("process {pid}: {:?}", sys::cmdline(pid)));
        }
        if let Ok(mounts) = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            && mounts.contains(&marker)
            && sys::pid_alive(pid)
        {
            found.push(format!("mount of {marker} seen by process {pid}"));
        }
    }
    if Path::new("/run/installer-lab").join(name).exists() {
        found.push(format!("state dir /run/installer-lab/{name}"));
    }
    found
}

fn listing(dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn lab_nodes_answer_ssh_and_have_own_filesystem_view_root() {
    if skip("lab_nodes_answer_ssh_and_have_own_filesystem_view_root") {
        return;
    }
    let _shared = CLEANLINESS.read().unwrap_or_else(|e| e.into_inner());
    let lab = LabGuard::up(3).unwrap();
    assert_eq!(lab.nodes.len(), 3);

    // every node answers SSH with the lab key, its host key matching the lab's known_hosts
    for (i, node) in lab.nodes.iter().enumerate() {
        let out = ssh(&lab, i, "hostname; ip -4 -o addr show dev eth0");
        assert!(out.status.success(), "ssh to {}: {out:?}", node.name);
        let text = stdout(&out);
        assert!(text.starts_with(&node.name), "{text}");
        assert!(text.contains(&format!("{}/24", node.ip)), "{text}");
    }

    // a file written on node1 under /opt/kube is node1's alone
    let probe = format!("/opt/kube/lab-probe-{}", lab.name);
    let out = ssh(&lab, 0, &format!("echo from-node1 > {probe}"));
    assert!(out.status.success(), "{out:?}");
    let on_node2 = ssh(
        &lab,
        1,
        &format!("test -e {probe} && echo present || echo absent"),
    );
    assert_eq!(stdout(&on_node2), "absent");
    assert!(
        !Path::new(&probe).exists(),
        "{probe} leaked into the root filesystem"
    );
    let seen = lab.exec_on(&lab.nodes[0], &["cat", &probe]).unwrap();
    assert_eq!(stdout(&seen), "from-node1");
    assert_eq!(
        std::fs::read_to_string(lab.nodes[0].host_path(&probe)).unwrap(),
        "from-node1\n"
    );
    // the other private paths are private too
    for path in [
        "/etc/cni/net.d",
        "/run/flannel",
        "/var/lib/cni",
        "/var/log/installer",
    ] {
        let out = lab
            .sh_on(
                &lab.nodes[2],
                &format!("mkdir -p {path} && touch {path}/x-{}", lab.name),
            )
            .unwrap();
        assert!(out.status.success(), "{path}: {out:?}");
        assert!(!Path::new(path).join(format!("x-{}", lab.name)).exists());
        assert!(
            lab.nodes[2]
                .host_path(path)
                .join(format!("x-{}", lab.name))
                .exists()
        );
    }

    // nodes reach each other and the deploy side over the lab LAN
    let out = ssh(
        &lab,
        1,
        &format!(
            "ping -c1 -W2 {} && ping -c1 -W2 {}",
            lab.nodes[2].ip, lab.deploy_ip
        ),
    );
    assert!(out.status.success(), "{out:?}");

    // etcd on the [etcd] node answers from the root namespace, and inside node1 on 127.0.0.1
    let (code, body) = sys::http_get(
        &format!("{}/health", lab.etcd_endpoint),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body).contains("\"health\":\"true\""));
    assert!(lab.etcd_node().unwrap().in_group("etcd"));

    // the mirror serves the tarball, whose digest equals the side file and the state
    let (code, tarball) = sys::http_get(&lab.cni_tarball_url, Duration::from_secs(10)).unwrap();
    assert_eq!(code, 200);
    let (code, side) = sys::http_get(&lab.cni_sha256_url(), Duration::from_secs(5)).unwrap();
    assert_eq!(code, 200);
    let side = String::from_utf8(side).unwrap();
    let digest = sha256_hex(&tarball);
    assert_eq!(side, format!("{digest}  {}\n", lab.cni_tarball_name));
    assert_eq!(digest, lab.cni_sha256);
    let log = std::fs::read_to_string(lab.mirror_log()).unwrap();
    assert!(
        log.contains(&format!("GET /{} 200", lab.cni_tarball_name)),
        "{log}"
    );

    // a port held on the deploy address (here by the mirror itself) is skipped
    let port: u16 = lab
        .mirror_url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    assert!(mirror::free_port(lab.deploy_ip).unwrap() > port);

    // the inventory names the nodes and the lab settings
    let inventory = std::fs::read_to_string(&lab.inventory_path).unwrap();
    for node in &lab.nodes {
        assert!(inventory.contains(&format!("{} k8s_nodename={}", node.ip, node.name)));
    }
    assert!(inventory.contains("FLANNEL_DATASTORE=\"etcd\""));
    assert!(inventory.contains(&lab.cni_tarball_url));

    assert!(lab.status().healthy(), "{}", lab.status());
}

#[test]
fn libssh2_authenticates_with_lab_key_and_known_hosts_root() {
    if skip("libssh2_authenticates_with_lab_key_and_known_hosts_root") {
        return;
    }
    let _shared = CLEANLINESS.read().unwrap_or_else(|e| e.into_inner());
    let lab = LabGuard::up(1).unwrap();
    let node = &lab.nodes[0];
    let tcp = TcpStream::connect((node.ip, 22)).unwrap();
    let mut session = ssh2::Session::new().unwrap();
    session.set_tcp_stream(tcp);
    session.handshake().unwrap();
    let mut known = session.known_hosts().unwrap();
    known
        .read_file(&lab.known_hosts_path, ssh2::KnownHostFileKind::OpenSSH)
        .unwrap();
    let (key, _) = session.host_key().unwrap();
    assert!(matches!(
        known.check(&node.ip.to_string(), key),
        ssh2::CheckResult::Match
    ));
    session
        .userauth_pubkey_file("root", Some(&lab.pub_key_path), &lab.key_path, None)
        .unwrap();
    let mut channel = session.channel_session().unwrap();
    channel.exec("hostname").unwrap();
    let mut out = String::new();
    channel.read_to_string(&mut out).unwrap();
    channel.wait_close().unwrap();
    assert_eq!(out.trim(), node.name);
    assert_eq!(channel.exit_status().unwrap(), 0);
}

#[test]
fn sshd_stop_start_and_host_key_change_root() {
    if skip("sshd_stop_start_and_host_key_change_root") {
        return;
    }
    let _shared = CLEANLINESS.read().unwrap_or_else(|e| e.into_inner());
    let lab = LabGuard::up(2).unwrap();
    let node2 = &lab.nodes[1];

    lab.stop_sshd(node2).unwrap();
    let status = lab.status();
    assert!(!status.healthy());
    assert!(!status.nodes[1].sshd_answering);
    assert!(
        status.nodes[1].holder_running,
        "stopping sshd must keep the node"
    );
    assert!(!ssh(&lab, 1, "true").status.success());
    // the node's files survive an sshd restart (the holder keeps the mount namespace)
    lab.sh_on(node2, "echo kept > /opt/kube/kept").unwrap();
    lab.start_sshd(node2).unwrap();
    assert!(lab.status().healthy(), "{}", lab.status());
    assert_eq!(stdout(&ssh(&lab, 1, "cat /opt/kube/kept")), "kept");

    // a new host key is refused by strict checking until known_hosts is refreshed
    let old = std::fs::read_to_string(&lab.known_hosts_path).unwrap();
    let line = lab.regenerate_host_key(&lab.nodes[0]).unwrap();
    assert!(!old.contains(&line));
    let refused = ssh(&lab, 0, "true");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("HOST IDENTIFICATION HAS CHANGED"),
        "{refused:?}"
    );
    lab.refresh_known_hosts().unwrap();
    assert!(ssh(&lab, 0, "true").status.success());
}

#[test]
fn two_labs_coexist_root() {
    if skip("two_labs_coexist_root") {
        return;
    }
    let _shared = CLEANLINESS.read().unwrap_or_else(|e| e.into_inner());
    let a = LabGuard::up(2).unwrap();
    let b = LabGuard::up(2).unwrap();
    assert_ne!(a.index, b.index);
    assert_ne!(a.cluster_cidr, b.cluster_cidr);
    assert_ne!(a.node_cidr, b.node_cidr);
    assert!(a.status().healthy(), "{}", a.status());
    assert!(b.status().healthy(), "{}", b.status());
    for lab in [&a, &b] {
        assert_eq!(stdout(&ssh(lab, 1, "hostname")), lab.nodes[1].name);
    }
    let b_name = b.name.clone();
    drop(b);
    assert!(Lab::load(&b_name).is_err());
    assert!(
        a.status().healthy(),
        "removing one lab broke the other: {}",
        a.status()
    );
}

#[test]
fn cli_up_status_down_leaves_nothing_root() {
    if cli_skip("cli_up_status_down_leaves_nothing_root") {
        return;
    }
    let _exclusive = CLEANLINESS.write().unwrap_or_else(|e| e.into_inner());
    let name = unique("cli");
    let _cleanup = Cleanup(name.clone());
    let start = Instant::now();
    let up = installer()
        .args(["lab", "up", "--nodes", "2", "--name", &name])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let up_out = String::from_utf8_lossy(&up.stdout).into_owned();
    assert!(up.status.success(), "{up:?}");
    eprintln!("lab up (2 nodes) took {:?}:\n{up_out}", start.elapsed());
    let lab = Lab::load(&name).unwrap();
    assert!(up_out.contains(&format!("inventory:   {}", lab.inventory_path.display())));
    assert!(up_out.contains(&format!("known_hosts: {}", lab.known_hosts_path.display())));
    assert!(lab.mirror_daemon);

    // the lab outlives `lab up`: the mirror and sshd are daemons
    let status = installer()
        .args(["lab", "status", "--name", &name])
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    assert!(ssh(&lab, 1, "true").status.success());

    // up again: already up, nothing made
    let again = installer()
        .args(["lab", "up", "--nodes", "2", "--name", &name])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("already up"));
    // a process started over SSH belongs to the node and goes with it
    let sleeper = ssh(&lab, 0, "sleep 300 </dev/null >/dev/null 2>&1 & echo $!");
    let sleeper: u32 = stdout(&sleeper).parse().unwrap();
    assert!(sys::pid_alive(sleeper));

    let down = installer()
        .args(["lab", "down", "--name", &name])
        .output()
        .unwrap();
    assert!(down.status.success(), "{down:?}");
    assert_eq!(remains(&name, lab.index), Vec::<String>::new());
    assert!(
        !sys::pid_alive(sleeper),
        "process started over SSH survived lab down"
    );
    assert!(
        !installer()
            .args(["lab", "status", "--name", &name])
            .output()
            .unwrap()
            .status
            .success()
    );
    // down of a lab that is gone is fine
    let again = installer()
        .args(["lab", "down", "--name", &name])
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to remove"));
}

#[test]
fn down_without_state_file_root() {
    if cli_skip("down_without_state_file_root") {
        return;
    }
    let _exclusive = CLEANLINESS.write().unwrap_or_else(|e| e.into_inner());
    let name = unique("lost");
    let _cleanup = Cleanup(name.clone());
    installer()
        .args(["lab", "up", "--nodes", "2", "--name", &name])
        .assert()
        .success();
    let lab = Lab::load(&name).unwrap();
    std::fs::remove_file(lab.state_file()).unwrap();
    installer()
        .args(["lab", "down", "--name", &name])
        .assert()
        .success();
    assert_eq!(remains(&name, lab.index), Vec::<String>::new());
}

#[test]
fn killed_up_is_rebuilt_and_removed_root() {
    if cli_skip("killed_up_is_rebuilt_and_removed_root") {
        return;
    }
    let _exclusive = CLEANLINESS.write().unwrap_or_else(|e| e.into_inner());
    let name = unique("crash");
    let _cleanup = Cleanup(name.clone());
    let mut child = Command::new(bin())
        .args(["lab", "up", "--nodes", "4", "--name", &name])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // kill -9 once the first namespace holder runs (mid-way through the nodes)
    let dir = PathBuf::from("/run/installer-lab").join(&name);
    let start = Instant::now();
    while !dir.join("nodes").exists()
        || !std::fs::read_dir(dir.join("nodes"))
            .unwrap()
            .flatten()
            .any(|n| n.path().join("holder.pid").exists())
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "lab up made no node"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let half = Lab::load(&name).unwrap();
    assert!(!half.status().healthy());

    // `lab status` says so; `lab up` tears down the half-made lab and builds it again
    installer()
        .args(["lab", "status", "--name", &name])
        .assert()
        .failure();
    installer()
        .args(["lab", "up", "--nodes", "4", "--name", &name])
        .assert()
        .success();
    let lab = Lab::load(&name).unwrap();
    assert!(lab.status().healthy(), "{}", lab.status());

    // lose the state file, then down
    std::fs::remove_file(lab.state_file()).unwrap();
    installer()
        .args(["lab", "down", "--name", &name])
        .assert()
        .success();
    assert_eq!(remains(&name, lab.index), Vec::<String>::new());
    assert_eq!(remains(&name, half.index), Vec::<String>::new());
}

#[test]
fn guard_removes_lab_when_test_panics_root() {
    if skip("guard_removes_lab_when_test_panics_root") {
        return;
    }
    let _exclusive = CLEANLINESS.write().unwrap_or_else(|e| e.into_inner());
    let (name, index) = std::thread::spawn(|| {
        let lab = LabGuard::up(1).unwrap();
        let id = (lab.name.clone(), lab.index);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _lab = lab;
            panic!("test failure inside a lab");
        }));
        assert!(result.is_err());
        id
    })
    .join()
    .unwrap();
    assert_eq!(remains(&name, index), Vec::<String>::new());
}

#[test]
fn not_root_gets_one_clear_message_root() {
    if cli_skip("not_root_gets_one_clear_message_root") {
        return;
    }
    // setpriv (util-linux) drops to nobody; the binary must be reachable by that user
    let bin = bin();
    let readable = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "test",
            "-x",
            &bin,
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !readable {
        eprintln!("skipping not_root_gets_one_clear_message_root: nobody cannot run {bin}");
        return;
    }
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", &bin])
        .args(["lab", "up", "--name", "never"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the lab needs root"), "{err}");
    assert!(!Path::new("/run/installer-lab/never").exists());
}

#[test]
fn failed_up_removes_what_it_made_root() {
    if skip("failed_up_removes_what_it_made_root") {
        return;
    }
    let _exclusive = CLEANLINESS.write().unwrap_or_else(|e| e.into_inner());
    let before = (listing("/run/netns"), listing("/sys/class/net"));
    // a mirror "binary" that exits at once: up fails at its last step, after nodes and etcd
    let name = unique("fail");
    let _cleanup = Cleanup(name.clone());
    let opts = UpOptions {
        name: name.clone(),
        nodes: 2,
        mirror: MirrorMode::Daemon("/bin/false".into()),
    };
    let err = Lab::up(&opts).unwrap_err();
    assert!(matches!(err, LabError::Exited { .. }), "{err}");
    assert!(err.to_string().contains("artifact mirror"), "{err}");
    let after = (listing("/run/netns"), listing("/sys/class/net"));
    assert_eq!(before, after);
    assert_eq!(remains_of_name(&name), Vec::<String>::new());
}

#[test]
fn missing_packages_named_in_one_message_root() {
    if cli_skip("missing_packages_named_in_one_message_root") {
        return;
    }
    // hide sshd, etcd and the Debian CNI plugins in a private mount namespace, then run `lab up`
    let (sshd, etcd) = (
        prereq::Probe::system()
            .locate(prereq::Need::Command("sshd"))
            .unwrap(),
        prereq::Probe::system()
            .locate(prereq::Need::Command("etcd"))
            .unwrap(),
    );
    let script = format!(
        "mount --bind /dev/null {} && mount --bind /dev/null {} && mount -t tmpfs none {} && exec \"$@\"",
        sshd.display(),
        etcd.display(),
        prereq::CNI_DIR
    );
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .arg(bin())
        .args(["lab", "up", "--name", "never-made"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("apt-get install -y openssh-server etcd-server containernetworking-plugins\n"),
        "{err}"
    );
    assert_eq!(err.matches("the lab needs packages").count(), 1, "{err}");
    assert!(!err.contains("iproute2"), "{err}");
    assert!(!Path::new("/run/installer-lab/never-made").exists());
}

#[test]
fn guard_removes_labs_of_dead_test_processes_root() {
    if skip("guard_removes_labs_of_dead_test_processes_root") {
        return;
    }
    // Exclusive: a LabGuard created by a parallel test would reap this orphan while it is
    // still being built.
    let _exclusive = CLEANLINESS.write().unwrap_or_else(|e| e.into_inner());
    // a lab named like a guard lab of a process that has exited
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let orphan = format!("t{dead}-0");
    let _cleanup = Cleanup(orphan.clone());
    let lab = Lab::up(&UpOptions::new(orphan.clone(), 1)).unwrap();
    assert!(lab.status().healthy());
    let guard = LabGuard::up(1).unwrap();
    assert!(
        Lab::load(&orphan).is_err(),
        "orphaned guard lab {orphan} is still there"
    );
    assert_eq!(remains_of_name(&orphan), Vec::<String>::new());
    assert!(guard.status().healthy());
}
