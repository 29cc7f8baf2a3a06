//! Running iputils `ping` many times at once and reading what it printed.
//!
//! Each job is one `ping` process (`ip netns exec NS ping …` for a pod), all started together so
//! a node's whole row of the matrix takes one ping's time. Output goes to anonymous temp files,
//! not pipes, so a chatty ping can never block; a process that outlives its deadline is killed.
//! The parser reads iputils' summary (`N packets transmitted, M received`, `rtt min/avg/max`)
//! and its error lines (`From H icmp_seq=1 Frag needed and DF set (mtu = 1400)`,
//! `ping: local error: message too long, mtu=1400`).

use super::model::{Pass, PingResult, PingSource};
use regex::Regex;
use std::io::{Read, Seek};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// Bytes of IP + ICMP headers in front of a ping payload.
pub fn header_overhead(target: IpAddr) -> u32 {
    match target {
        IpAddr::V4(_) => 20 + 8,
        IpAddr::V6(_) => 40 + 8,
    }
}

/// The largest payload whose packet fits `mtu` (for the MTU pass).
pub fn payload_for_mtu(mtu: u32, target: IpAddr) -> u32 {
    mtu.saturating_sub(header_overhead(target))
}

/// Timing shared by every job of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Echo requests per job (`-c`).
    pub count: u32,
    /// Seconds between requests (`-i`; below 0.2 needs root).
    pub interval: f64,
    /// Seconds to wait for a reply when none came (`-W`).
    pub timeout: u32,
}

impl Timing {
    /// The longest a job may run before it is killed.
    pub fn deadline(&self) -> Duration {
        let secs =
            f64::from(self.count.saturating_sub(1)) * self.interval + f64::from(self.timeout) + 2.0;
        Duration::from_secs_f64(secs.max(1.0))
    }
}

/// One ping to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Where from.
    pub source: PingSource,
    /// Where to.
    pub target: IpAddr,
    /// Which pass it belongs to.
    pub pass: Pass,
    /// Payload bytes.
    pub size: u32,
    /// Set DF (`-M do`).
    pub df: bool,
}

/// The command line of a job: `ping -n -c C -i I -W T -s S [-M do] TARGET`, prefixed with
/// `ip netns exec NS` for a pod.
pub fn command_line(job: &Job, timing: &Timing) -> Vec<String> {
    let mut argv: Vec<String> = Vec::new();
    if let PingSource::Netns(ns) = &job.source {
        argv.extend(["ip", "netns", "exec", ns.as_str()].map(String::from));
    }
    argv.extend([
        "ping".to_string(),
        "-n".into(),
        "-c".into(),
        timing.count.to_string(),
        "-i".into(),
        format!("{}", timing.interval),
        "-W".into(),
        timing.timeout.to_string(),
        "-s".into(),
        job.size.to_string(),
    ]);
    if job.df {
        argv.extend(["-M".to_string(), "do".to_string()]);
    }
    argv.push(job.target.to_string());
    argv
}

/// Run every job at once; results come back in job order. A job whose process cannot start
/// gets a result with 0 sent and the reason as its error.
pub fn run_all(jobs: &[Job], timing: &Timing) -> Vec<PingResult> {
    struct Running {
        child: Option<Child>,
        out: Option<std::fs::File>,
        error: Option<String>,
        killed: bool,
    }
    let mut running: Vec<Running> = jobs
        .iter()
        .map(|job| {
            let argv = command_line(job, timing);
            let start = || -> std::io::Result<(Child, std::fs::File)> {
                let out = tempfile::tempfile()?;
                let err = out.try_clone()?;
                let child = Command::new(&argv[0])
                    .args(&argv[1..])
                    .env("LC_ALL", "C")
                    .stdin(Stdio::null())
                    .stdout(Stdio::from(out.try_clone()?))
                    .stderr(Stdio::from(err))
                    .spawn()?;
                Ok((child, out))
            };
            match start() {
                Ok((child, out)) => Running {
                    child: Some(child),
                    out: Some(out),
                    error: None,
                    killed: false,
                },
                Err(e) => Running {
                    child: None,
                    out: None,
                    error: Some(format!("cannot run {}: {e}", argv[0])),
                    killed: false,
                },
            }
        })
        .collect();
    let started = Instant::now();
    let deadline = timing.deadline();
    loop {
        let mut busy = false;
        for r in &mut running {
            let Some(child) = r.child.as_mut() else {
                continue;
            };
            match child.try_wait() {
                Ok(Some(_)) => r.child = None,
                Ok(None) if started.elapsed() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    r.killed = true;
                    r.child = None;
                }
                Ok(None) => busy = true,
                Err(e) => {
                    r.error = Some(format!("waiting for ping: {e}"));
                    r.child = None;
                }
            }
        }
        if !busy {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    jobs.iter()
        .zip(running)
        .map(|(job, r)| {
            let mut text = String::new();
            if let Some(mut f) = r.out {
                let _ = f.rewind();
                let _ = f.read_to_string(&mut text);
            }
            let mut result = parse(job, &text);
            if let Some(e) = r.error {
                result.errors.push(e);
            }
            if r.killed {
                result
                    .errors
                    .push(format!("ping did not finish within {deadline:?}; killed"));
            }
            result
        })
        .collect()
}

static SUMMARY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(\d+) packets transmitted, (\d+) (?:packets )?received").expect("valid regex")
});
static RTT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:rtt|round-trip) \S+ = ([\d.]+)/([\d.]+)/([\d.]+)").expect("valid regex")
});
static FROM: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^From (\S+?):? (?:icmp_seq=\d+ )?(.+)$").expect("valid regex"));
static MTU: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"mtu ?= ?(\d+)").expect("valid regex"));

/// Read one ping's output into a result for `job`.
pub fn parse(job: &Job, text: &str) -> PingResult {
    let mut result = PingResult {
        source: job.source.clone(),
        target: job.target,
        pass: job.pass,
        size: job.size,
        df: job.df,
        sent: 0,
        received: 0,
        rtt_min_ms: None,
        rtt_avg_ms: None,
        rtt_max_ms: None,
        errors: Vec::new(),
        path_mtu: None,
    };
    let mut push_error = |e: String| {
        if !result.errors.contains(&e) {
            result.errors.push(e);
        }
    };
    let mut path_mtu = None;
    let mut summary = None;
    let mut rtt = None;
    for line in text.lines().map(str::trim) {
        if let Some(c) = SUMMARY.captures(line) {
            summary = Some((
                c[1].parse::<u32>().unwrap_or(0),
                c[2].parse::<u32>().unwrap_or(0),
            ));
        } else if let Some(c) = RTT.captures(line) {
            let f = |i: usize| c[i].parse::<f64>().ok();
            rtt = Some((f(1), f(2), f(3)));
        } else if let Some(c) = FROM.captures(line) {
            push_error(format!("from {}: {}", &c[1], &c[2]));
        } else if let Some(rest) = line.strip_prefix("ping: ") {
            push_error(rest.to_string());
        } else if line.starts_with("Cannot open network namespace")
            || line.starts_with("exec of ")
            || line.starts_with("setting the network namespace")
        {
            push_error(line.to_string());
        }
        if let Some(c) = MTU.captures(line) {
            path_mtu = c[1].parse().ok();
        }
    }
    if let Some((sent, received)) = summary {
        result.sent = sent;
        result.received = received;
    }
    if let Some((min, avg, max)) = rtt {
        result.rtt_min_ms = min;
        result.rtt_avg_ms = avg;
        result.rtt_max_ms = max;
    }
    result.path_mtu = path_mtu;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(df: bool) -> Job {
        Job {
            source: PingSource::Netns("installer-probe-x".into()),
            target: "198.19.66.2".parse().unwrap(),
            pass: if df { Pass::Mtu } else { Pass::Reach },
            size: if df { 1472 } else { 56 },
            df,
        }
    }

    #[test]
    fn success_summary_and_rtt() {
        let text = "PING 198.19.66.2 (198.19.66.2) 56(84) bytes of data.\n\
            64 bytes from 198.19.66.2: icmp_seq=1 ttl=62 time=0.071 ms\n\
            64 bytes from 198.19.66.2: icmp_seq=2 ttl=62 time=0.050 ms\n\
            64 bytes from 198.19.66.2: icmp_seq=3 ttl=62 time=0.060 ms\n\n\
            --- 198.19.66.2 ping statistics ---\n\
            3 packets transmitted, 3 received, 0% packet loss, time 402ms\n\
            rtt min/avg/max/mdev = 0.050/0.060/0.071/0.008 ms\n";
        let r = parse(&job(false), text);
        assert_eq!((r.sent, r.received), (3, 3));
        assert_eq!(r.rtt_avg_ms, Some(0.060));
        assert_eq!(r.rtt_min_ms, Some(0.050));
        assert_eq!(r.rtt_max_ms, Some(0.071));
        assert!(r.errors.is_empty());
        assert!(r.ok());
        assert_eq!(r.loss_pct(), 0.0);
    }

    #[test]
    fn frag_needed_gives_the_path_mtu() {
        let text = "PING 198.19.66.2 (198.19.66.2) 1472(1500) bytes of data.\n\
            From 198.19.65.1 icmp_seq=1 Frag needed and DF set (mtu = 1400)\n\
            From 198.19.65.1 icmp_seq=2 Frag needed and DF set (mtu = 1400)\n\n\
            --- 198.19.66.2 ping statistics ---\n\
            3 packets transmitted, 0 received, +2 errors, 100% packet loss, time 2030ms\n";
        let r = parse(&job(true), text);
        assert_eq!((r.sent, r.received), (3, 0));
        assert_eq!(r.path_mtu, Some(1400));
        assert_eq!(
            r.errors,
            ["from 198.19.65.1: Frag needed and DF set (mtu = 1400)"]
        );
        assert!(!r.ok());
        assert_eq!(r.loss_pct(), 100.0);
    }

    #[test]
    fn local_errors_and_unreachable() {
        let text = "PING 198.19.66.2 (198.19.66.2) 1472(1500) bytes of data.\n\
            ping: local error: message too long, mtu=1400\n\
            ping: local error: message too long, mtu=1400\n\n\
            --- 198.19.66.2 ping statistics ---\n\
            2 packets transmitted, 0 received, +2 errors, 100% packet loss, time 1001ms\n";
        let r = parse(&job(true), text);
        assert_eq!(r.path_mtu, Some(1400));
        assert_eq!(r.errors, ["local error: message too long, mtu=1400"]);

        let text = "ping: connect: Network is unreachable\n";
        let r = parse(&job(false), text);
        assert_eq!((r.sent, r.received), (0, 0));
        assert_eq!(r.errors, ["connect: Network is unreachable"]);
        assert!(!r.ok());

        let text = "From 198.19.65.1 icmp_seq=1 Destination Host Unreachable\n\
            3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2047ms\n";
        let r = parse(&job(false), text);
        assert_eq!(r.errors, ["from 198.19.65.1: Destination Host Unreachable"]);
        assert_eq!(r.path_mtu, None);

        let text =
            "Cannot open network namespace \"installer-probe-x\": No such file or directory\n";
        let r = parse(&job(false), text);
        assert_eq!(r.sent, 0);
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    }

    #[test]
    fn partial_loss_and_busybox_style() {
        let text = "--- 198.19.66.2 ping statistics ---\n\
            4 packets transmitted, 3 packets received, 25% packet loss\n\
            round-trip min/avg/max = 0.1/0.2/0.3 ms\n";
        let r = parse(&job(false), text);
        assert_eq!((r.sent, r.received), (4, 3));
        assert_eq!(r.loss_pct(), 25.0);
        assert_eq!(r.rtt_avg_ms, Some(0.2));
        assert!(!r.ok());
    }

    #[test]
    fn command_lines() {
        let t = Timing {
            count: 3,
            interval: 0.2,
            timeout: 1,
        };
        assert_eq!(
            command_line(&job(true), &t).join(" "),
            "ip netns exec installer-probe-x ping -n -c 3 -i 0.2 -W 1 -s 1472 -M do 198.19.66.2"
        );
        let mut j = job(false);
        j.source = PingSource::Host;
        assert_eq!(
            command_line(&j, &t).join(" "),
            "ping -n -c 3 -i 0.2 -W 1 -s 56 198.19.66.2"
        );
        assert_eq!(t.deadline(), Duration::from_secs_f64(3.4));
        assert_eq!(payload_for_mtu(1500, "198.19.0.1".parse().unwrap()), 1472);
        assert_eq!(payload_for_mtu(1450, "fd00::1".parse().unwrap()), 1402);
    }

    #[test]
    fn runs_real_pings_to_loopback_concurrently() {
        if std::process::Command::new("ping")
            .arg("-V")
            .output()
            .is_err()
        {
            eprintln!(
                "skipping runs_real_pings_to_loopback_concurrently: no ping (apt-get install iputils-ping)"
            );
            return;
        }
        let t = Timing {
            count: 2,
            interval: 0.2,
            timeout: 1,
        };
        let jobs: Vec<Job> = (1..=4)
            .map(|i| Job {
                source: PingSource::Host,
                target: format!("127.0.0.{i}").parse().unwrap(),
                pass: Pass::Reach,
                size: 56,
                df: false,
            })
            .collect();
        let started = Instant::now();
        let results = run_all(&jobs, &t);
        // Four 2-packet pings at 0.2 s intervals, concurrently: well under the serial time.
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        for (j, r) in jobs.iter().zip(&results) {
            assert_eq!(r.target, j.target);
            if r.sent == 0 {
                // ping without the capability to open ICMP sockets (unprivileged, no ping_group)
                eprintln!("ping could not send: {:?}", r.errors);
                return;
            }
            assert!(r.ok(), "{r:?}");
            assert!(r.rtt_avg_ms.is_some());
        }
    }
}
