//! `installer supervise`: keep a command running on hosts without systemd (the lab), with a
//! pid file and a log file, restarting it when it fails — `Restart=on-failure` in miniature.
//!
//! The supervisor runs detached (`setsid`), appends the child's stdout and stderr to the log,
//! restarts it 2 s after a non-zero exit, stops for good when the child exits 0 (flannel's
//! normal shutdown, e.g. a revoked lease), and on SIGTERM/SIGINT forwards the signal to the
//! child, waits for it, removes the pid file and exits.

use anyhow::{Context, Result, bail};
use clap::Args;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `installer supervise --pidfile P --log L -- CMD [ARGS…]`.
#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// Where the supervisor writes its own pid.
    #[arg(long, value_name = "FILE")]
    pub pidfile: PathBuf,
    /// Log file the command's output is appended to.
    #[arg(long, value_name = "FILE")]
    pub log: PathBuf,
    /// The command to keep running.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// The pid recorded in `pidfile` when that process is alive and is a supervisor.
pub fn running_supervisor(pidfile: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    words.iter().any(|w| *w == b"supervise").then_some(pid)
}

fn log_line(log: &Path, message: &str) {
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(log) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let _ = writeln!(f, "[supervise {now}] {message}");
    }
}

/// Run the supervisor loop in the foreground (callers detach it with `setsid`).
pub fn run(args: SuperviseArgs) -> Result<ExitCode> {
    if let Some(pid) = running_supervisor(&args.pidfile)
        && pid != std::process::id()
    {
        bail!(
            "already supervised by pid {pid} (pid file {})",
            args.pidfile.display()
        );
    }
    for p in [&args.pidfile, &args.log] {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    std::fs::write(&args.pidfile, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing {}", args.pidfile.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing a signal handler")?;
    }
    let (program, rest) = args
        .command
        .split_first()
        .context("no command to supervise")?;
    let mut backoff = Duration::from_secs(2);
    let result = loop {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.log)
            .with_context(|| format!("opening {}", args.log.display()))?;
        let err = log.try_clone()?;
        let started = Instant::now();
        let mut child = match Command::new(program)
            .args(rest)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                log_line(&args.log, &format!("cannot start {program}: {e}"));
                break Err(anyhow::anyhow!("cannot start {program}: {e}"));
            }
        };
        log_line(&args.log, &format!("started pid {}", child.id()));
        let status = loop {
            if stop.load(Ordering::SeqCst) {
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_raw(child.id() as i32).context("child pid")?,
                    rustix::process::Signal::TERM,
                );
                let status = child.wait()?;
                log_line(&args.log, &format!("stopped on request ({status})"));
                break None;
            }
            match child.try_wait()? {
                Some(status) => break Some(status),
                None => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        let Some(status) = status else {
            break Ok(());
        };
        if status.success() {
            log_line(&args.log, "exited normally; not restarting");
            break Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(2);
        }
        log_line(
            &args.log,
            &format!("exited with {status}; restarting in {}s", backoff.as_secs()),
        );
        let until = Instant::now() + backoff;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
        if stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    };
    let _ = std::fs::remove_file(&args.pidfile);
    result.map(|()| ExitCode::SUCCESS)
}

/// `installer probe-http URL`: exit 0 when a plain-HTTP GET of URL answers 200 within 2 s.
/// Used on nodes to wait for the agent's `/readyz` without needing curl there.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// `http://HOST:PORT/PATH`.
    pub url: String,
}

/// Probe an HTTP URL once; prints the status line.
pub fn probe_http(args: ProbeArgs) -> Result<ExitCode> {
    use std::io::Read;
    use std::net::{TcpStream, ToSocketAddrs};
    let rest = args
        .url
        .strip_prefix("http://")
        .with_context(|| format!("{}: only http:// URLs can be probed", args.url))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} has no address"))?;
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {authority}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /{path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or_default().to_string();
    println!("{status_line}");
    let ok = status_line
        .split_whitespace()
        .nth(1)
        .is_some_and(|code| code == "200");
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
