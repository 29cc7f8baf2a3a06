//! Running per-host work over many hosts in parallel, and the recap.
//!
//! [`Fleet::run`] connects to every host (at most `forks` at a time, one thread each), hands
//! each connected host to the caller's closure through a [`HostCtx`], and collects counts per
//! host. A host that fails or cannot be reached never stops the others; a panic in the closure
//! only fails that host. Counts follow Ansible's PLAY RECAP: `ok` counts every operation that
//! succeeded (changed ones included), `changed` those that changed something.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use super::conn::ConnectionSpec;
use super::known_hosts::HostKeyVerdict;
use super::ops::{OpResult, OpStatus, Remote};
use super::report::Reporter;
use super::session::{ConnectOptions, connect};

/// Per-host counters, as in Ansible's recap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Operations that succeeded (changed or not).
    pub ok: usize,
    /// Operations that changed something.
    pub changed: usize,
    /// Operations (or connection setups) that failed.
    pub failed: usize,
    /// 1 when the host could not be reached.
    pub unreachable: usize,
}

/// How one host ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostRecap {
    /// Its counters.
    #[serde(flatten)]
    pub counts: Counts,
    /// Why it failed or was unreachable, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The end-of-run summary: one line per host (sorted by name, like Ansible).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Recap {
    /// Host name → how it ended.
    pub hosts: BTreeMap<String, HostRecap>,
}

impl Recap {
    /// Hosts that failed or were unreachable.
    pub fn failed_hosts(&self) -> Vec<&str> {
        self.hosts
            .iter()
            .filter(|(_, r)| r.counts.failed > 0 || r.counts.unreachable > 0)
            .map(|(h, _)| h.as_str())
            .collect()
    }

    /// True when no host failed and none was unreachable (exit status 0).
    pub fn success(&self) -> bool {
        self.failed_hosts().is_empty()
    }

    /// The `--limit` value that retries just the failed hosts, if any failed.
    pub fn retry_limit(&self) -> Option<String> {
        let failed = self.failed_hosts();
        (!failed.is_empty()).then(|| failed.join(","))
    }

    /// The PLAY RECAP block, plus the retry hint when something failed.
    pub fn to_text(&self) -> String {
        let mut s = String::from(
            "PLAY RECAP ********************************************************************\n",
        );
        for (host, r) in &self.hosts {
            let c = r.counts;
            let _ = writeln!(
                s,
                "{host:<26} : ok={:<4} changed={:<4} unreachable={:<4} failed={:<4}",
                c.ok, c.changed, c.unreachable, c.failed
            );
        }
        if let Some(limit) = self.retry_limit() {
            let _ = writeln!(s, "\nretry just the failed hosts with: --limit {limit}");
        }
        s
    }

    /// The `recap` JSON event.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "event": "recap",
            "hosts": self.hosts,
            "success": self.success(),
            "retry_limit": self.retry_limit(),
        })
    }
}

/// Returned by [`HostCtx::record`] when an operation failed: stop working on this host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HostFailed(pub String);

/// What the per-host closure gets: the host's [`Remote`] and a way to report results.
pub struct HostCtx<'a> {
    remote: &'a Remote,
    reporter: &'a dyn Reporter,
    step: String,
    counts: Counts,
    error: Option<String>,
}

impl<'a> HostCtx<'a> {
    /// The inventory host name.
    pub fn host(&self) -> &str {
        self.remote.host()
    }

    /// The connected host: run operations on it.
    pub fn remote(&self) -> &'a Remote {
        self.remote
    }

    /// Announce the step that following operations belong to.
    pub fn step(&mut self, title: &str) {
        self.step = title.to_string();
        self.reporter.step(self.remote.host(), title);
    }

    /// Count and report an operation's result; a failure returns `Err` so `?` stops the host.
    pub fn record(&mut self, result: OpResult) -> Result<OpStatus, HostFailed> {
        self.reporter.op(self.remote.host(), &self.step, &result);
        match result.status {
            OpStatus::Ok => self.counts.ok += 1,
            OpStatus::Changed => {
                self.counts.ok += 1;
                self.counts.changed += 1;
            }
            OpStatus::Failed => {
                self.counts.failed += 1;
                let msg = format!(
                    "{}: {} {}: {}",
                    self.step, result.op, result.target, result.detail
                );
                self.error.get_or_insert(msg.clone());
                return Err(HostFailed(msg));
            }
        }
        Ok(result.status)
    }

    /// Report a failure that is not an operation result (a local check, a parse error...).
    pub fn fail(&mut self, what: &str, detail: impl Into<String>) -> HostFailed {
        let r = OpResult::failed("check", what, detail);
        match self.record(r) {
            Err(e) => e,
            Ok(_) => HostFailed(String::new()),
        }
    }
}

/// Settings of a fleet run.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Hosts handled at once (`--forks`, default 50).
    pub forks: usize,
    /// `--check`: compute changes, make none.
    pub check: bool,
    /// `--diff`: text diffs of changed files.
    pub diff: bool,
    /// Host key checking and connect retry.
    pub connect: ConnectOptions,
}

/// Runs work on many hosts in parallel.
pub struct Fleet<'r> {
    opts: FleetOptions,
    reporter: &'r dyn Reporter,
}

impl<'r> Fleet<'r> {
    /// A fleet that reports through `reporter`.
    pub fn new(opts: FleetOptions, reporter: &'r dyn Reporter) -> Self {
        Fleet { opts, reporter }
    }

    /// Connect to every host and run `work` on each; returns the recap (also reported).
    pub fn run<F>(&self, hosts: &[ConnectionSpec], work: F) -> Recap
    where
        F: Fn(&mut HostCtx<'_>) -> Result<(), HostFailed> + Sync,
    {
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<(String, HostRecap)>> = Mutex::new(Vec::new());
        let threads = self.opts.forks.max(1).min(hosts.len());
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(spec) = hosts.get(i) else { break };
                        let recap = catch_unwind(AssertUnwindSafe(|| self.one_host(spec, &work)))
                            .unwrap_or_else(|panic| {
                                let msg = panic
                                    .downcast_ref::<String>()
                                    .cloned()
                                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                    .unwrap_or_else(|| "unknown panic".into());
                                HostRecap {
                                    counts: Counts {
                                        failed: 1,
                                        ..Default::default()
                                    },
                                    error: Some(format!("internal error (panic): {msg}")),
                                }
                            });
                        self.reporter.host_finished(&spec.host, &recap);
                        results
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((spec.host.clone(), recap));
                    }
                });
            }
        });
        let mut recap = Recap::default();
        for (host, r) in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
            recap.hosts.insert(host, r);
        }
        self.reporter.recap(&recap);
        recap
    }

    fn one_host<F>(&self, spec: &ConnectionSpec, work: &F) -> HostRecap
    where
        F: Fn(&mut HostCtx<'_>) -> Result<(), HostFailed> + Sync,
    {
        self.reporter.host_started(&spec.host);
        self.reporter.step(&spec.host, "connect");
        let session = match connect(spec, &self.opts.connect) {
            Ok((session, verdict)) => {
                if let HostKeyVerdict::Recorded { fingerprint, file } = verdict {
                    self.reporter.note(
                        &spec.host,
                        &format!("recorded new host key {fingerprint} in {}", file.display()),
                    );
                }
                session
            }
            Err(e) => {
                let unreachable = e.is_unreachable();
                let detail = format!("{}:{}: {e}", spec.address, spec.port);
                self.reporter
                    .host_unreachable(&spec.host, &detail, unreachable);
                let counts = if unreachable {
                    Counts {
                        unreachable: 1,
                        ..Default::default()
                    }
                } else {
                    Counts {
                        failed: 1,
                        ..Default::default()
                    }
                };
                return HostRecap {
                    counts,
                    error: Some(detail),
                };
            }
        };
        let remote = Remote::new(session, spec.clone(), self.opts.check, self.opts.diff);
        let mut ctx = HostCtx {
            remote: &remote,
            reporter: self.reporter,
            step: String::new(),
            counts: Counts::default(),
            error: None,
        };
        if let Err(HostFailed(msg)) = work(&mut ctx)
            && ctx.error.is_none()
        {
            // The closure failed without recording an operation: count it once.
            ctx.counts.failed += 1;
            ctx.error = Some(msg);
        }
        HostRecap {
            counts: ctx.counts,
            error: ctx.error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recap_text_json_and_retry_limit() {
        let mut r = Recap::default();
        r.hosts.insert(
            "b".into(),
            HostRecap {
                counts: Counts {
                    ok: 3,
                    changed: 1,
                    ..Default::default()
                },
                error: None,
            },
        );
        r.hosts.insert(
            "a".into(),
            HostRecap {
                counts: Counts {
                    unreachable: 1,
                    ..Default::default()
                },
                error: Some("down".into()),
            },
        );
        r.hosts.insert(
            "c".into(),
            HostRecap {
                counts: Counts {
                    ok: 1,
                    failed: 1,
                    ..Default::default()
                },
                error: Some("x".into()),
            },
        );
        assert!(!r.success());
        assert_eq!(r.retry_limit().as_deref(), Some("a,c"));
        let t = r.to_text();
        assert!(t.starts_with("PLAY RECAP"));
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[1].starts_with("a ") && lines[1].contains("unreachable=1"),
            "{t}"
        );
        assert!(lines[2].contains("ok=3    changed=1"), "{t}");
        assert!(
            t.contains("retry just the failed hosts with: --limit a,c"),
            "{t}"
        );
        let j = r.to_json();
        assert_eq!(j["event"], "recap");
        assert_eq!(j["hosts"]["b"]["changed"], 1);
        assert_eq!(j["hosts"]["a"]["unreachable"], 1);
        assert_eq!(j["success"], false);

        let mut ok = Recap::default();
        ok.hosts.insert("a".into(), HostRecap::default());
        assert!(ok.success());
        assert_eq!(ok.retry_limit(), None);
        assert!(!ok.to_text().contains("retry"));
    }
}
