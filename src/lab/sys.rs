//! Process and namespace plumbing: run helper programs, start detached daemons with pid files,
//! find and kill processes by namespace, wait for TCP/HTTP readiness.

use super::error::{LabError, Result};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Render a command line for messages.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Run a command to completion; fail with its stderr when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|error| LabError::Spawn {
            program: cmd.get_program().to_string_lossy().into_owned(),
            error,
        })?;
    if !output.status.success() {
        return Err(LabError::Command {
            command: describe(cmd),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(output)
}

/// Start a daemon that outlives this process: `setsid -f [prefix…] sh -c 'echo $$ > PIDFILE;
/// exec "$@"' sh PROGRAM ARGS…`, with stdio on `log`. `setsid -f` forks, so the daemon is
/// reparented away from us and never becomes our zombie. Returns the daemon's pid, read from the
/// pid file written just before `exec`.
pub fn spawn_daemon(
    setsid: &Path,
    prefix: &[&std::ffi::OsStr],
    program: &[&std::ffi::OsStr],
    pid_file: &Path,
    log: &Path,
) -> Result<u32> {
    let _ = std::fs::remove_file(pid_file);
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| LabError::io("open log", log, e))?;
    let log_err = log_file
        .try_clone()
        .map_err(|e| LabError::io("open log", log, e))?;
    let mut cmd = Command::new(setsid);
    cmd.arg("-f")
        .args(prefix)
        .args(["sh", "-c", "echo $$ > \"$1\"; shift; exec \"$@\"", "sh"])
        .arg(pid_file)
        .args(program)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err);
    let what = describe(&cmd);
    let status = cmd.status().map_err(|error| LabError::Spawn {
        program: setsid.display().to_string(),
        error,
    })?;
    if !status.success() {
        return Err(LabError::Command {
            command: what,
            status: status.to_string(),
            stderr: log_tail(log, 10),
        });
    }
    wait_for(
        &format!("pid file {}", pid_file.display()),
        Duration::from_secs(10),
        log,
        || read_pid_file(pid_file),
    )
}

/// Poll `probe` every 20 ms until it yields a value or `limit` passes; the timeout error quotes
/// the end of `log`.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    log: &Path,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        if start.elapsed() > limit {
            return Err(LabError::Timeout {
                what: what.to_string(),
                seconds: limit.as_secs(),
                log: log.to_path_buf(),
                tail: log_tail(log, 15),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until daemon `pid` is `ready`; fail early with [`LabError::Exited`] when it dies, or
/// with [`LabError::Timeout`] after `limit`. Both errors quote the end of its `log`.
pub fn wait_daemon(
    what: &str,
    pid: u32,
    limit: Duration,
    log: &Path,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let alive = wait_for(what, limit, log, || {
        if !pid_alive(pid) {
            Some(false)
        } else {
            ready().then_some(true)
        }
    })?;
    if alive {
        Ok(())
    } else {
        Err(LabError::Exited {
            what: what.to_string(),
            log: log.to_path_buf(),
            tail: log_tail(log, 15),
        })
    }
}

/// Last `lines` lines of a log file (empty when unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Read a pid from a file; `None` when absent, empty or garbage.
pub fn read_pid_file(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|&pid| pid > 1)
}

/// Whether a process exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // the state letter follows the command name in parentheses
    match stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next())
    {
        Some('Z') | Some('X') | None => false,
        Some(_) => true,
    }
}

/// Command line of a process as arguments.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|part| !part.is_empty())
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect(),
    )
}

/// Whether a process's command line, joined with spaces, contains `needle`. Daemons such as
/// sshd rewrite their command line into one string, so matching whole arguments is not enough.
pub fn cmdline_contains(pid: u32, needle: &str) -> bool {
    cmdline(pid).is_some_and(|args| args.join(" ").contains(needle))
}

/// All pids currently in /proc.
pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `(device, inode)` identity of a namespace file (`/run/netns/NAME` or `/proc/PID/ns/KIND`).
pub fn ns_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Pids whose namespace of `kind` ("net", "mnt") is `id`.
pub fn pids_in_ns(kind: &str, id: (u64, u64)) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|pid| ns_id(&PathBuf::from(format!("/proc/{pid}/ns/{kind}"))) == Some(id))
        .collect()
}

/// Send SIGKILL to each pid (already-gone processes are fine) and wait up to 5 s until none is
/// alive. Returns the pids still alive after that.
pub fn kill_and_wait(pids: &BTreeSet<u32>) -> Vec<u32> {
    let me = std::process::id();
    for &pid in pids {
        if pid <= 1 || pid == me {
            continue;
        }
        if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
    let start = Instant::now();
    loop {
        let alive: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|&p| p > 1 && p != me && pid_alive(p))
            .collect();
        if alive.is_empty() || start.elapsed() > Duration::from_secs(5) {
            return alive;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Send SIGTERM, wait up to `grace` for the process to exit, then SIGKILL it.
pub fn terminate(pid: u32, grace: Duration) {
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
    }
    let start = Instant::now();
    while pid_alive(pid) && start.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(20));
    }
    kill_and_wait(&BTreeSet::from([pid]));
}

/// Whether something accepts TCP connections on `addr` within `timeout`.
pub fn tcp_open(addr: SocketAddr, timeout: Duration) -> bool {
    TcpStream::connect_timeout(&addr, timeout).is_ok()
}

/// Whether an SSH server answers on `addr`: connect and read its `SSH-2.0` banner.
pub fn ssh_banner(addr: SocketAddr, timeout: Duration) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let mut buf = [0u8; 8];
    stream.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-2.0")
}

/// A blocking HTTP GET of a plain-HTTP URL; returns status and body.
pub fn http_get(url: &str, timeout: Duration) -> std::result::Result<(u16, Vec<u8>), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let response = client.get(url).send().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.bytes().map_err(|e| e.to_string())?.to_vec();
    Ok((status, body))
}

/// Write `contents` to `path` through a temporary file and a rename, so readers never see half a
/// file.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(|e| LabError::io("write", &tmp, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| LabError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| LabError::io("rename to", path, e))
}

/// Create a directory and its parents.
pub fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| LabError::io("create directory", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_found_in_own_namespace() {
        let me = std::process::id();
        assert!(pid_alive(me));
        let net = ns_id(Path::new("/proc/self/ns/net")).unwrap();
        assert!(pids_in_ns("net", net).contains(&me));
        assert!(!pid_alive(u32::MAX - 1));
    }

    #[test]
    fn daemon_outlives_its_starter_and_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("d.pid");
        let log = dir.path().join("d.log");
        let pid = spawn_daemon(
            Path::new("setsid"),
            &[],
            &["sleep".as_ref(), "30".as_ref()],
            &pid_file,
            &log,
        )
        .unwrap();
        assert!(pid_alive(pid));
        // The pid file is written just before `exec sleep`: while the exec is under way the
        // kernel may show an empty command line, so wait for it to settle.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut seen = cmdline(pid).unwrap_or_default();
        while seen != ["sleep", "30"] && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            seen = cmdline(pid).unwrap_or_default();
        }
        assert_eq!(seen, ["sleep", "30"]);
        assert!(kill_and_wait(&BTreeSet::from([pid])).is_empty());
        assert!(!pid_alive(pid));
    }

    #[test]
    fn wait_for_times_out_with_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "one\ntwo\nlast line\n").unwrap();
        let err = wait_for("thing", Duration::from_millis(50), &log, || None::<()>).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("thing did not become ready"), "{msg}");
        assert!(msg.contains("last line"), "{msg}");
    }

    #[test]
    fn atomic_write_replaces_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!dir.path().join("f.tmp").exists());
    }
}
