//! Remote layer against a real OpenSSH server on 127.0.0.1 (needs root and `sshd`).
//!
//! Each test starts its own private sshd on a free port with its own host key and
//! authorized_keys in a temp directory; the server is killed on drop. Tests skip with a notice
//! when not root or when OpenSSH cannot be installed.

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use installer::remote::known_hosts::fingerprint_sha256;
use installer::remote::*;
use serde_json::{Value, json};

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

static INSTALL: Mutex<Option<bool>> = Mutex::new(None);

/// sshd and ssh-keygen present (installing openssh with apt once if needed).
fn have_openssh() -> bool {
    let mut done = INSTALL.lock().unwrap();
    if let Some(ok) = *done {
        return ok;
    }
    let present = || Path::new("/usr/sbin/sshd").exists() && which("ssh-keygen");
    if !present() {
        let _ = Command::new("apt-get").arg("update").status();
        let _ = Command::new("apt-get")
            .args(["install", "-y", "openssh-server", "openssh-client"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
    }
    let ok = present();
    *done = Some(ok);
    ok
}

fn which(prog: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {prog}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

macro_rules! require_sshd {
    () => {
        if !is_root() {
            eprintln!("SKIP: needs root (starts a private sshd)");
            return;
        }
        if !have_openssh() {
            eprintln!("SKIP: OpenSSH server not available and could not be installed");
            return;
        }
    };
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "installer-test",
            "-f",
        ])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private sshd on 127.0.0.1, killed on drop.
struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Sshd {
    fn start() -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        keygen(&dir.path().join("host_key"));
        keygen(&dir.path().join("client_key"));
        std::fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        let mut s = Sshd {
            dir,
            port: free_port(),
            child: None,
        };
        s.launch("host_key");
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn launch(&mut self, host_key: &str) {
        std::fs::create_dir_all("/run/sshd").unwrap();
        let d = self.dir.path().display();
        let cfg = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/{host_key}\n\
             AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\nStrictModes no\n\
             UsePAM no\nPermitRootLogin yes\nPasswordAuthentication yes\n\
             Subsystem sftp internal-sftp\nLogLevel ERROR\nMaxStartups 100\n",
            port = self.port
        );
        std::fs::write(self.path("sshd_config"), cfg).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(self.path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restart on the same port with a different host key (`host_key2`).
    fn restart_with_new_host_key(&mut self) {
        self.stop();
        keygen(&self.path("host_key2"));
        self.launch("host_key2");
    }

    fn host_fingerprint(&self, name: &str) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.path(&format!("{name}.pub")))
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    }

    /// Vars an inventory would give this host.
    fn vars(&self) -> IndexMap<String, Value> {
        serde_json::from_value(json!({
            "ansible_host": "127.0.0.1",
            "ansible_port": self.port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": self.path("client_key").display().to_string(),
        }))
        .unwrap()
    }

    fn spec(&self, name: &str) -> ConnectionSpec {
        ConnectionSpec::from_vars(name, &self.vars(), &isolated_defaults(self.dir.path())).unwrap()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Defaults that never read the operator's ~/.ssh or ansible.cfg.
fn isolated_defaults(home: &Path) -> ConnDefaults {
    ConnDefaults {
        home: Some(home.join("home")),
        local_user: "root".into(),
        ..Default::default()
    }
}

fn options(kh: &Path, policy: HostKeyPolicy) -> ConnectOptions {
    let mut o = ConnectOptions::new(Arc::new(KnownHosts::with_files(kh, vec![])), policy);
    o.retry_delay = Duration::from_millis(100);
    o.use_agent = false;
    o
}

fn remote(sshd: &Sshd, check: bool, diff: bool) -> Remote {
    let spec = sshd.spec("node1");
    let (s, _) = connect(
        &spec,
        &options(&sshd.path("known_hosts"), HostKeyPolicy::AcceptNew),
    )
    .unwrap();
    Remote::new(s, spec, check, diff)
}

#[test]
fn run_passes_hostile_arguments_verbatim_root() {
    require_sshd!();
    let sshd = Sshd::start();
    let r = remote(&sshd, false, false);
    let marker = sshd.path("pwned");
    let inject = format!("$(touch {})", marker.display());
    let backtick = format!("`touch {}`", marker.display());
    let semi = format!("; touch {}", marker.display());
    let args = [
        inject.as_str(),
        backtick.as_str(),
        semi.as_str(),
        "it's \"quoted\"",
        "two  spaces",
        "line1\nline2",
        "*",
        "$HOME",
        "",
    ];
    let mut argv = vec!["printf", "[%s]\\n"];
    argv.extend(args);
    let out = r.run(&argv).unwrap();
    assert!(out.success(), "{}", out.describe_failure());
    let want: String = args.iter().map(|a| format!("[{a}]\n")).collect();
    assert_eq!(out.stdout_text(), want);
    assert!(!marker.exists(), "an argument was executed by the shell");

    let out = r
        .run(&["sh", "-c", "echo out; echo err >&2; exit 3"])
        .unwrap();
    assert_eq!(out.status, 3);
    assert_eq!(out.stdout_text(), "out\n");
    assert_eq!(out.stderr_text(), "err\n");
    assert!(r.run(&["echo", "nul\0byte"]).is_err());

    // Large stderr and stdout together must not stall.
    let out = r
        .run(&[
            "sh",
            "-c",
            "head -c 3000000 /dev/zero >&2; head -c 3000000 /dev/zero",
        ])
        .unwrap();
    assert_eq!(out.stdout.len(), 3_000_000);
    // Every zero byte arrives; under heavy load the server may add a diagnostic line of its own.
    let zeros = out.stderr.iter().filter(|b| **b == 0).count();
    let other: Vec<u8> = out.stderr.iter().copied().filter(|b| *b != 0).collect();
    assert_eq!(
        zeros,
        3_000_000,
        "extra stderr: {}",
        String::from_utf8_lossy(&other)
    );
}

#[test]
fn put_file_is_idempotent_and_sets_mode_and_owner_root() {
    require_sshd!();
    let sshd = Sshd::start();
    let r = remote(&sshd, false, true);
    let target = sshd.path("etc/app.conf");
    let t = target.to_str().unwrap();
    let attrs = Attrs {
        mode: Some(0o640),
        owner: Some("nobody".into()),
        group: Some("0".into()),
    };

    let res = r.put_file(t, Content::Bytes(b"a=1\n"), &attrs);
    assert_eq!(
        res.status,
        OpStatus::Failed,
        "missing directory must fail: {res:?}"
    );
    assert!(res.detail.contains("does not exist"), "{}", res.detail);

    let dir = sshd.path("etc");
    let d = dir.to_str().unwrap();
    assert_eq!(
        r.ensure_dir(d, &Attrs::mode(0o750)).status,
        OpStatus::Changed
    );
    assert_eq!(r.ensure_dir(d, &Attrs::mode(0o750)).status, OpStatus::Ok);
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o7777, 0o750);
    assert_eq!(
        r.ensure_dir(d, &Attrs::mode(0o755)).status,
        OpStatus::Changed
    );
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o7777, 0o755);

    let res = r.put_file(t, Content::Bytes(b"a=1\n"), &attrs);
    assert_eq!(res.status, OpStatus::Changed, "{res:?}");
    assert!(
        res.diff.as_deref().unwrap_or("").contains("+a=1"),
        "{res:?}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"a=1\n");
    let md = std::fs::metadata(&target).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert_eq!(md.uid(), 65534, "owner nobody");
    assert_eq!(md.gid(), 0);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("installer-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");

    let res = r.put_file(t, Content::Bytes(b"a=1\n"), &attrs);
    assert_eq!(res.status, OpStatus::Ok, "{res:?}");

    std::fs::write(&target, b"a=2\n").unwrap();
    let res = r.put_file(t, Content::Bytes(b"a=1\n"), &attrs);
    assert_eq!(res.status, OpStatus::Changed, "{res:?}");
    let diff = res.diff.unwrap();
    assert!(diff.contains("-a=2") && diff.contains("+a=1"), "{diff}");
    assert_eq!(std::fs::read(&target).unwrap(), b"a=1\n");

    // Only the mode differs: fixed in place.
    std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let res = r.put_file(t, Content::Bytes(b"a=1\n"), &attrs);
    assert_eq!(res.status, OpStatus::Changed);
    assert!(res.detail.contains("mode 0600 -> 0640"), "{}", res.detail);

    // From a local file, and read back / hash.
    let local = sshd.path("local.bin");
    std::fs::write(&local, [0u8, 1, 2, 255].repeat(1000)).unwrap();
    let bin = sshd.path("etc/bin");
    let b = bin.to_str().unwrap();
    assert_eq!(
        r.put_file(b, Content::File(&local), &Attrs::mode(0o755))
            .status,
        OpStatus::Changed
    );
    assert_eq!(
        r.put_file(b, Content::File(&local), &Attrs::mode(0o755))
            .status,
        OpStatus::Ok
    );
    assert_eq!(
        r.read_file(b).unwrap().unwrap(),
        std::fs::read(&local).unwrap()
    );
    assert_eq!(r.read_file(&format!("{d}/none")).unwrap(), None);
    let sum = r.sha256(b).unwrap().unwrap();
    assert_eq!(sum.len(), 64);
    assert_eq!(r.sha256(&format!("{d}/none")).unwrap(), None);

    // remove: changed, then ok.
    assert_eq!(r.remove(b).status, OpStatus::Changed);
    assert!(!bin.exists());
    assert_eq!(r.remove(b).status, OpStatus::Ok);
    assert_eq!(r.remove("relative/path").status, OpStatus::Failed);
    assert_eq!(r.remove("/").status, OpStatus::Failed);

    // command: changed on success, failed with stderr otherwise.
    let res = r.command(&["touch", sshd.path("etc/touched").to_str().unwrap()]);
    assert_eq!(res.status, OpStatus::Changed);
    let res = r.command(&["ls", "/nonexistent-installer-test"]);
    assert_eq!(res.status, OpStatus::Failed);
    assert!(res.detail.contains("exit 2"), "{}", res.detail);
}

#[test]
fn check_mode_reports_changes_but_changes_nothing_root() {
    require_sshd!();
    let sshd = Sshd::start();
    let r = remote(&sshd, true, true);
    let existing = sshd.path("keep.conf");
    std::fs::write(&existing, b"old\n").unwrap();
    let e = existing.to_str().unwrap();

    let res = r.put_file(e, Content::Bytes(b"new\n"), &Attrs::default());
    assert_eq!(res.status, OpStatus::Changed);
    assert!(res.detail.starts_with("would"), "{}", res.detail);
    assert!(res.diff.unwrap().contains("+new"));
    assert_eq!(std::fs::read(&existing).unwrap(), b"old\n");

    let newdir = sshd.path("newdir");
    let nd = newdir.to_str().unwrap();
    assert_eq!(
        r.ensure_dir(nd, &Attrs::default()).status,
        OpStatus::Changed
    );
    assert!(!newdir.exists());
    let res = r.put_file(&format!("{nd}/f"), Content::Bytes(b"x"), &Attrs::default());
    assert_eq!(
        res.status,
        OpStatus::Changed,
        "file in a dir that would be created: {res:?}"
    );

    assert_eq!(r.remove(e).status, OpStatus::Changed);
    assert!(existing.exists());
    let marker = sshd.path("cmd-ran");
    assert_eq!(
        r.command(&["touch", marker.to_str().unwrap()]).status,
        OpStatus::Changed
    );
    assert!(!marker.exists());
    let leftovers = std::fs::read_dir(sshd.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("installer-tmp"))
        .count();
    assert_eq!(leftovers, 0);
}

#[test]
fn known_hosts_policies_root() {
    require_sshd!();
    let mut sshd = Sshd::start();
    let spec = sshd.spec("node1");
    let kh = sshd.path("kh/known_hosts");

    // strict + unknown key: refused, counted as failed (not unreachable).
    let err = connect_err(&spec, &options(&kh, HostKeyPolicy::Strict));
    assert!(
        matches!(err, ConnectError::HostKey(HostKeyError::Unknown { .. })),
        "{err}"
    );
    assert!(!err.is_unreachable());
    assert!(!kh.exists());

    // accept-new records it (file 0600 in a new directory) with [host]:port.
    let (_, v) = connect(&spec, &options(&kh, HostKeyPolicy::AcceptNew)).unwrap();
    let fp1 = sshd.host_fingerprint("host_key");
    assert_eq!(
        v,
        HostKeyVerdict::Recorded {
            fingerprint: fp1.clone(),
            file: kh.clone()
        }
    );
    let text = std::fs::read_to_string(&kh).unwrap();
    assert!(
        text.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", sshd.port)),
        "{text}"
    );
    assert_eq!(std::fs::metadata(&kh).unwrap().mode() & 0o777, 0o600);

    // Now strict accepts it, also after OpenSSH hashes the file.
    let (_, v) = connect(&spec, &options(&kh, HostKeyPolicy::Strict)).unwrap();
    assert_eq!(v, HostKeyVerdict::Known);
    let st = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&kh)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    assert!(std::fs::read_to_string(&kh).unwrap().starts_with("|1|"));
    let (_, v) = connect(&spec, &options(&kh, HostKeyPolicy::Strict)).unwrap();
    assert_eq!(v, HostKeyVerdict::Known);

    // The host key changes: refused under accept-new, both fingerprints shown.
    sshd.restart_with_new_host_key();
    let fp2 = sshd.host_fingerprint("host_key2");
    assert_ne!(fp1, fp2);
    let err = connect_err(&spec, &options(&kh, HostKeyPolicy::AcceptNew));
    let msg = err.to_string();
    match &err {
        ConnectError::HostKey(HostKeyError::Changed(c)) => {
            assert_eq!(c.known, fp1);
            assert_eq!(c.offered, fp2);
            assert_eq!(c.line, 1);
        }
        other => panic!("expected a changed key error, got {other}"),
    }
    assert!(msg.contains(&fp1) && msg.contains(&fp2), "{msg}");
    assert!(msg.contains(&format!("{}:1", kh.display())), "{msg}");
    assert!(msg.contains("ssh-keygen"), "{msg}");
    // Policy off connects anyway.
    let (_, v) = connect(&spec, &options(&kh, HostKeyPolicy::Off)).unwrap();
    assert_eq!(v, HostKeyVerdict::NotChecked);
    // Our fingerprint function agrees with ssh-keygen's.
    let pubkey = std::fs::read_to_string(sshd.path("host_key2.pub")).unwrap();
    let blob = base64_decode(pubkey.split_whitespace().nth(1).unwrap());
    assert_eq!(fingerprint_sha256(&blob), fp2);
}

fn connect_err(spec: &ConnectionSpec, opts: &ConnectOptions) -> ConnectError {
    match connect(spec, opts) {
        Ok(_) => panic!("connection to {} unexpectedly succeeded", spec.host),
        Err(e) => e,
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn fleet_isolates_unreachable_and_failed_hosts_root() {
    require_sshd!();
    let sshd = Sshd::start();
    let good = sshd.spec("good");
    let mut down = sshd.spec("down");
    down.port = free_port(); // nothing listens there
    let mut bad_auth = sshd.spec("badauth");
    bad_auth.key_files = vec![sshd.path("host_key")]; // not an authorized key
    let failing = sshd.spec("failing");
    let panics = sshd.spec("panics");

    let buf = Buf::default();
    let reporter = JsonReporter::with_writer(Box::new(buf.clone()));
    let opts = FleetOptions {
        forks: 2,
        check: false,
        diff: false,
        connect: options(&sshd.path("known_hosts"), HostKeyPolicy::AcceptNew),
    };
    let dir = sshd.dir.path().to_path_buf();
    let recap = Fleet::new(opts, &reporter).run(&[good, down, bad_auth, failing, panics], |ctx| {
        ctx.step("write");
        let path = dir.join(format!("{}.txt", ctx.host()));
        ctx.record(ctx.remote().put_file(
            path.to_str().unwrap(),
            Content::Bytes(b"hi\n"),
            &Attrs::default(),
        ))?;
        ctx.record(ctx.remote().put_file(
            path.to_str().unwrap(),
            Content::Bytes(b"hi\n"),
            &Attrs::default(),
        ))?;
        if ctx.host() == "panics" {
            panic!("bug in a step");
        }
        if ctx.host() == "failing" {
            ctx.record(ctx.remote().command(&["false"]))?;
            unreachable!("record returns Err on failure");
        }
        Ok(())
    });

    assert!(!recap.success());
    let c = |h: &str| recap.hosts[h].counts;
    assert_eq!(
        c("good"),
        Counts {
            ok: 2,
            changed: 1,
            failed: 0,
            unreachable: 0
        }
    );
    assert_eq!(
        c("down"),
        Counts {
            unreachable: 1,
            ..Default::default()
        }
    );
    assert_eq!(
        c("badauth"),
        Counts {
            unreachable: 1,
            ..Default::default()
        }
    );
    assert_eq!(
        c("failing"),
        Counts {
            ok: 2,
            changed: 1,
            failed: 1,
            unreachable: 0
        }
    );
    assert!(
        recap.hosts["badauth"]
            .error
            .as_deref()
            .unwrap()
            .contains("authentication as root failed")
    );
    // A panicking host keeps no partial counts: one failure.
    assert_eq!(
        c("panics"),
        Counts {
            failed: 1,
            ..Default::default()
        }
    );
    assert!(
        recap.hosts["panics"]
            .error
            .as_deref()
            .unwrap()
            .contains("bug in a step")
    );
    assert_eq!(
        recap.retry_limit().as_deref(),
        Some("badauth,down,failing,panics")
    );
    assert!(sshd.path("good.txt").exists());
    assert!(
        recap
            .to_text()
            .contains("retry just the failed hosts with: --limit badauth,down,failing,panics")
    );

    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = events.last().unwrap();
    assert_eq!(last["event"], "recap");
    assert_eq!(last["hosts"]["good"]["changed"], 1);
    assert_eq!(last["hosts"]["down"]["unreachable"], 1);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "op" && e["host"] == "failing" && e["status"] == "failed")
    );
}

#[test]
fn ssh_agent_authentication_root() {
    require_sshd!();
    if !which("ssh-agent") || !which("ssh-add") {
        eprintln!("SKIP: ssh-agent not installed");
        return;
    }
    let sshd = Sshd::start();
    let sock = sshd.path("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() {
        if Instant::now() > deadline {
            let _ = agent.kill();
            panic!("ssh-agent did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _agent = Kill(agent);
    let st = Command::new("ssh-add")
        .arg(sshd.path("client_key"))
        .env("SSH_AUTH_SOCK", &sock)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());

    let mut spec = sshd.spec("agent");
    spec.key_files.clear();
    let mut opts = options(&sshd.path("known_hosts"), HostKeyPolicy::AcceptNew);
    opts.use_agent = false;
    let err = connect_err(&spec, &opts);
    assert!(
        matches!(err, ConnectError::Auth { .. }) && err.is_unreachable(),
        "{err}"
    );
    opts.use_agent = true;
    opts.agent_socket = Some(sock.clone());
    let (s, _) = connect(&spec, &opts).unwrap();
    let r = Remote::new(s, spec, false, false);
    assert_eq!(r.run(&["id", "-u"]).unwrap().stdout_text(), "0\n");
}

#[test]
fn upload_speed_exec_channel_vs_sftp_root() {
    require_sshd!();
    let sshd = Sshd::start();
    let r = remote(&sshd, false, false);
    let local = sshd.path("big.bin");
    let mut data = vec![0u8; 50 * 1024 * 1024];
    let mut x: u32 = 12345;
    for b in data.iter_mut() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 24) as u8;
    }
    std::fs::write(&local, &data).unwrap();

    let exec_target = sshd.path("exec.bin");
    let t0 = Instant::now();
    let res = r.put_file(
        exec_target.to_str().unwrap(),
        Content::File(&local),
        &Attrs::default(),
    );
    let exec_time = t0.elapsed();
    assert_eq!(res.status, OpStatus::Changed, "{res:?}");

    let sftp_target = sshd.path("sftp.bin");
    let t0 = Instant::now();
    r.sftp_upload_for_benchmark(&local, sftp_target.to_str().unwrap())
        .unwrap();
    let sftp_time = t0.elapsed();

    let raw_target = sshd.path("raw.bin");
    let t0 = Instant::now();
    let out = r
        .exec_upload_for_benchmark(&local, raw_target.to_str().unwrap())
        .unwrap();
    let raw_time = t0.elapsed();
    assert!(out.success());

    assert_eq!(std::fs::read(&exec_target).unwrap(), data);
    assert_eq!(std::fs::read(&sftp_target).unwrap(), data);
    assert_eq!(std::fs::read(&raw_target).unwrap(), data);
    eprintln!(
        "UPLOAD 50 MiB: put_file (local hash + facts + exec cat + remote verify + rename) {:.2}s; \
         raw exec `cat >` {:.2}s; raw SFTP write {:.2}s",
        exec_time.as_secs_f64(),
        raw_time.as_secs_f64(),
        sftp_time.as_secs_f64()
    );
}

/// A throwaway local user with a password and a sudoers rule; removed on drop.
struct TempUser {
    name: String,
    sudoers: PathBuf,
}

impl TempUser {
    fn create(tag: &str, password: &str, sudo_rule: &str) -> TempUser {
        let name = format!("inst{tag}{}", std::process::id());
        let st = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", &name])
            .status()
            .unwrap();
        assert!(st.success(), "useradd {name}");
        let user = TempUser {
            sudoers: PathBuf::from(format!("/etc/sudoers.d/installer-test-{name}")),
            name,
        };
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(chpasswd.stdin.take().unwrap(), "{}:{password}", user.name).unwrap();
        assert!(chpasswd.wait().unwrap().success());
        std::fs::write(
            &user.sudoers,
            format!("{} ALL=(ALL) {sudo_rule}\n", user.name),
        )
        .unwrap();
        std::fs::set_permissions(
            &user.sudoers,
            std::os::unix::fs::PermissionsExt::from_mode(0o440),
        )
        .unwrap();
        user
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.sudoers);
        let _ = Command::new("userdel")
            .args(["-r", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn password_login_and_sudo_become_root() {
    require_sshd!();
    if !which("sudo") || !which("useradd") {
        eprintln!("SKIP: sudo or useradd not installed (apt-get install sudo passwd)");
        return;
    }
    let sshd = Sshd::start();
    // The target directory must be reachable only through sudo.
    let target_dir = sshd.path("rootonly");
    std::fs::create_dir(&target_dir).unwrap();
    let defaults = isolated_defaults(sshd.dir.path());
    let kh = sshd.path("known_hosts");

    // 1. sudo needs the user's password: login with a password, become root with it.
    let pw_user = TempUser::create("p", "Login-Pass-1", "ALL");
    let vars: IndexMap<String, Value> = serde_json::from_value(json!({
        "ansible_host": "127.0.0.1", "ansible_port": sshd.port,
        "ansible_user": pw_user.name, "ansible_ssh_pass": "Login-Pass-1",
        "ansible_become_pass": "Login-Pass-1",
    }))
    .unwrap();
    let spec = ConnectionSpec::from_vars("pw", &vars, &defaults).unwrap();
    assert!(
        spec.key_files.iter().all(|k| !k.exists()),
        "no key may be usable"
    );
    let (s, _) = connect(&spec, &options(&kh, HostKeyPolicy::AcceptNew)).unwrap();
    let r = Remote::new(s, spec.clone(), false, false);
    assert_eq!(r.run(&["id", "-un"]).unwrap().stdout_text(), "root\n");
    let f = target_dir.join("pw.conf");
    let fs = f.to_str().unwrap();
    let res = r.put_file(
        fs,
        Content::Bytes(b"via sudo with password\n"),
        &Attrs::mode(0o600),
    );
    assert_eq!(res.status, OpStatus::Changed, "{res:?}");
    assert_eq!(std::fs::read(&f).unwrap(), b"via sudo with password\n");
    assert_eq!(std::fs::metadata(&f).unwrap().uid(), 0);
    assert_eq!(
        r.put_file(
            fs,
            Content::Bytes(b"via sudo with password\n"),
            &Attrs::mode(0o600)
        )
        .status,
        OpStatus::Ok
    );
    let staged = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".installer-upload.")
                && e.metadata().map(|m| m.uid()).ok() == Some(uid_of(&pw_user.name))
        })
        .count();
    assert_eq!(staged, 0, "staging files left in /tmp");

    // A wrong sudo password fails the operation (not the connection) with sudo's message.
    let mut wrong = spec.clone();
    wrong.become_.as_mut().unwrap().password = Some(Secret::new("nope"));
    let (s, _) = connect(&wrong, &options(&kh, HostKeyPolicy::AcceptNew)).unwrap();
    let r = Remote::new(s, wrong, false, false);
    let res = r.put_file(fs, Content::Bytes(b"other\n"), &Attrs::default());
    assert_eq!(res.status, OpStatus::Failed, "{res:?}");
    assert_eq!(std::fs::read(&f).unwrap(), b"via sudo with password\n");

    // A wrong login password is an authentication failure (unreachable).
    let mut bad = spec.clone();
    bad.password = Some(Secret::new("wrong"));
    let err = connect_err(&bad, &options(&kh, HostKeyPolicy::AcceptNew));
    assert!(matches!(err, ConnectError::Auth { .. }), "{err}");

    // 2. Passwordless sudo (sudo -n) and streaming upload straight through sudo.
    let np_user = TempUser::create("n", "Login-Pass-2", "NOPASSWD: ALL");
    let vars: IndexMap<String, Value> = serde_json::from_value(json!({
        "ansible_host": "127.0.0.1", "ansible_port": sshd.port,
        "ansible_user": np_user.name, "ansible_password": "Login-Pass-2",
    }))
    .unwrap();
    let spec = ConnectionSpec::from_vars("np", &vars, &defaults).unwrap();
    let (s, _) = connect(&spec, &options(&kh, HostKeyPolicy::AcceptNew)).unwrap();
    let r = Remote::new(s, spec, false, false);
    assert_eq!(r.run(&["id", "-un"]).unwrap().stdout_text(), "root\n");
    let g = target_dir.join("np.conf");
    let res = r.put_file(
        g.to_str().unwrap(),
        Content::Bytes(b"nopasswd\n"),
        &Attrs::default(),
    );
    assert_eq!(res.status, OpStatus::Changed, "{res:?}");
    assert_eq!(std::fs::read(&g).unwrap(), b"nopasswd\n");

    // 3. ansible_become=false: commands run as the login user.
    let mut vars = vars;
    vars.insert("ansible_become".into(), json!(false));
    let spec = ConnectionSpec::from_vars("np", &vars, &defaults).unwrap();
    let (s, _) = connect(&spec, &options(&kh, HostKeyPolicy::AcceptNew)).unwrap();
    let r = Remote::new(s, spec, false, false);
    assert_eq!(
        r.run(&["id", "-un"]).unwrap().stdout_text(),
        format!("{}\n", np_user.name)
    );
    let res = r.put_file(
        target_dir.join("denied").to_str().unwrap(),
        Content::Bytes(b"x"),
        &Attrs::default(),
    );
    assert_eq!(res.status, OpStatus::Failed, "{res:?}");
}

fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn silent_server_times_out_and_is_retried_once() {
    // No sshd needed: a TCP listener that accepts and never speaks SSH.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let acc = accepted.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            acc.lock().unwrap().push(s); // keep it open, say nothing
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let vars: IndexMap<String, Value> = serde_json::from_value(json!({
        "ansible_host": "127.0.0.1", "ansible_port": port, "ansible_user": "root",
        "ansible_ssh_timeout": 1,
    }))
    .unwrap();
    let spec = ConnectionSpec::from_vars("silent", &vars, &isolated_defaults(dir.path())).unwrap();
    assert_eq!(spec.connect_timeout, Duration::from_secs(1));
    let t0 = Instant::now();
    let err = connect_err(
        &spec,
        &options(&dir.path().join("kh"), HostKeyPolicy::AcceptNew),
    );
    let elapsed = t0.elapsed();
    assert!(matches!(err, ConnectError::Handshake { .. }), "{err}");
    assert!(err.is_unreachable());
    assert_eq!(accepted.lock().unwrap().len(), 2, "exactly one retry");
    assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

#[test]
fn forks_bounds_parallel_hosts_root() {
    require_sshd!();
    let sshd = Sshd::start();
    let hosts: Vec<ConnectionSpec> = (0..6).map(|i| sshd.spec(&format!("h{i}"))).collect();
    let reporter = HumanReporter::with_writer(Box::new(Buf::default()), 0, false, false);
    let running = std::sync::atomic::AtomicUsize::new(0);
    let peak = std::sync::atomic::AtomicUsize::new(0);
    let opts = FleetOptions {
        forks: 2,
        check: false,
        diff: false,
        connect: options(&sshd.path("known_hosts"), HostKeyPolicy::AcceptNew),
    };
    let recap = Fleet::new(opts, &reporter).run(&hosts, |ctx| {
        use std::sync::atomic::Ordering::SeqCst;
        let now = running.fetch_add(1, SeqCst) + 1;
        peak.fetch_max(now, SeqCst);
        ctx.step("sleep");
        let res = ctx.remote().command(&["sleep", "0.3"]);
        running.fetch_sub(1, SeqCst);
        ctx.record(res)?;
        Ok(())
    });
    assert!(recap.success(), "{}", recap.to_text());
    assert_eq!(recap.hosts.len(), 6);
    assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[test]
fn converge_reports_each_failure_with_the_commands_message_root() {
    require_sshd!();
    let sshd = Sshd::start();
    let r = remote(&sshd, false, false);
    // A regular file where a directory is needed: every action below it must fail, each with
    // the message of the command that failed, and nothing may be left behind.
    let blocker = sshd.path("blocker");
    std::fs::write(&blocker, b"x").unwrap();
    let under = |name: &str| format!("{}/{name}", blocker.display());
    let (dir, file, link) = (under("dir"), under("file"), under("link"));
    let ok_dir = sshd.path("made/deep");
    let ok_dir = ok_dir.to_str().unwrap();
    let attrs = Attrs::mode(0o600);
    let items = [
        Desired::Dir {
            path: &dir,
            mode: 0o755,
        },
        Desired::Dir {
            path: ok_dir,
            mode: 0o710,
        },
        Desired::File {
            path: &file,
            content: Content::Bytes(b"data"),
            sha256: "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7",
            size: 4,
            attrs: &attrs,
        },
        Desired::Link {
            path: &link,
            target: "elsewhere",
        },
    ];
    let paths: Vec<&str> = items.iter().map(|i| i.path()).collect();
    let facts = r.facts(&paths).expect("facts");
    let results = r.converge(&items, &facts);
    let by_path = |p: &str| {
        results
            .iter()
            .find(|x| x.target == p)
            .unwrap_or_else(|| panic!("no result for {p}: {results:?}"))
    };
    let d = by_path(&dir);
    assert_eq!(d.status, OpStatus::Failed, "{d:?}");
    assert!(d.detail.contains("Not a directory"), "{d:?}");
    let made = by_path(ok_dir);
    assert_eq!(made.status, OpStatus::Changed, "{made:?}");
    assert_eq!(
        std::fs::metadata(ok_dir).unwrap().mode() & 0o7777,
        0o710,
        "a directory made with its parents gets its mode"
    );
    let f = by_path(&file);
    assert_eq!(f.status, OpStatus::Failed, "{f:?}");
    assert!(
        f.detail.starts_with("upload failed: ") && f.detail.contains("Not a directory"),
        "{f:?}"
    );
    let l = by_path(&link);
    assert_eq!(l.status, OpStatus::Failed, "{l:?}");
    assert!(l.detail.contains("Not a directory"), "{l:?}");
    assert_eq!(std::fs::read(&blocker).unwrap(), b"x");
    let stray: Vec<_> = std::fs::read_dir(sshd.path(""))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".installer-"))
        .collect();
    assert!(stray.is_empty(), "left behind: {stray:?}");
}

#[test]
fn converge_reads_every_kind_of_path_in_one_facts_query_root() {
    require_sshd!();
    let sshd = Sshd::start();
    let r = remote(&sshd, false, false);
    let p = |name: &str| sshd.path(name).to_str().unwrap().to_string();
    let (empty, link, fifo, dir, absent, spaced) = (
        p("empty"),
        p("link"),
        p("fifo"),
        p("dir"),
        p("absent"),
        p("a name with spaces | and a bar"),
    );
    std::fs::write(&empty, b"").unwrap();
    std::os::unix::fs::symlink("target", &link).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o750)).unwrap();
    std::fs::write(&spaced, b"data").unwrap();
    std::fs::set_permissions(&spaced, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let file_attrs = Attrs::mode(0o644);
    let data_sum = "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7";
    let empty_sum = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    std::fs::set_permissions(&empty, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let items = [
        Desired::File {
            path: &empty,
            content: Content::Bytes(b""),
            sha256: empty_sum,
            size: 0,
            attrs: &file_attrs,
        },
        Desired::Link {
            path: &link,
            target: "target",
        },
        Desired::File {
            path: &fifo,
            content: Content::Bytes(b"x"),
            sha256: data_sum,
            size: 1,
            attrs: &file_attrs,
        },
        Desired::Dir {
            path: &dir,
            mode: 0o750,
        },
        Desired::Absent { path: &absent },
        Desired::File {
            path: &spaced,
            content: Content::Bytes(b"data"),
            sha256: data_sum,
            size: 4,
            attrs: &file_attrs,
        },
    ];
    let paths: Vec<&str> = items.iter().map(|i| i.path()).collect();
    let facts = r.facts(&paths).expect("facts");
    assert!(!facts.machine.is_empty());
    assert_eq!(
        (0..6).map(|i| facts.exists(i)).collect::<Vec<_>>(),
        [true, true, true, true, false, true]
    );
    let results = r.converge(&items, &facts);
    let status: Vec<(OpStatus, &str)> = results
        .iter()
        .map(|x| (x.status, x.detail.as_str()))
        .collect();
    assert_eq!(
        status,
        [
            (OpStatus::Ok, "sha256 e3b0c44298fc"),
            (OpStatus::Ok, "-> target"),
            (
                OpStatus::Failed,
                "exists but is not a regular file; remove it first"
            ),
            (OpStatus::Ok, "exists"),
            (OpStatus::Ok, "already absent"),
            (OpStatus::Ok, "sha256 3a6eb0790f39"),
        ],
        "{results:?}"
    );
}
