//! Progress and result reporting for fleet runs: human (live per-host lines) or JSON lines.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::fleet::{HostRecap, Recap};
use super::ops::{OpResult, OpStatus};

/// Receives fleet events; called from many threads at once.
pub trait Reporter: Send + Sync {
    /// Work on `host` begins.
    fn host_started(&self, _host: &str) {}
    /// `host` begins step `step`.
    fn step(&self, host: &str, step: &str);
    /// An operation finished.
    fn op(&self, host: &str, step: &str, result: &OpResult);
    /// Informational message about a host (e.g. a newly recorded host key).
    fn note(&self, host: &str, message: &str);
    /// The host could not be connected (`unreachable` false = refused, e.g. host key).
    fn host_unreachable(&self, host: &str, detail: &str, unreachable: bool);
    /// All work on `host` is done.
    fn host_finished(&self, host: &str, recap: &HostRecap);
    /// The run is over.
    fn recap(&self, recap: &Recap);
}

type Out = Mutex<Box<dyn Write + Send>>;

fn write_line(out: &Out, line: &str) {
    let mut w = out.lock().unwrap_or_else(|e| e.into_inner());
    let _ = writeln!(w, "{line}");
    let _ = w.flush();
}

/// Human output: a live spinner line per host on a terminal (stderr), and result lines:
/// failures always, changes always, unchanged operations with `-v`, diffs with `--diff`.
pub struct HumanReporter {
    verbose: u8,
    diff: bool,
    out: Out,
    bars: Option<(MultiProgress, Mutex<HashMap<String, ProgressBar>>)>,
}

impl HumanReporter {
    /// Lines to stdout; live progress on stderr when stderr is a terminal.
    pub fn new(verbose: u8, diff: bool) -> Self {
        let progress = std::io::stderr().is_terminal();
        Self::with_writer(Box::new(std::io::stdout()), verbose, diff, progress)
    }

    /// Lines to `out`; `progress` turns the live per-host spinners on.
    pub fn with_writer(
        out: Box<dyn Write + Send>,
        verbose: u8,
        diff: bool,
        progress: bool,
    ) -> Self {
        let bars = progress.then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                Mutex::new(HashMap::new()),
            )
        });
        HumanReporter {
            verbose,
            diff,
            out: Mutex::new(out),
            bars,
        }
    }

    fn print(&self, line: &str) {
        match &self.bars {
            Some((mp, _)) => mp.suspend(|| write_line(&self.out, line)),
            None => write_line(&self.out, line),
        }
    }

    fn bar(&self, host: &str, f: impl FnOnce(&ProgressBar)) {
        if let Some((_, bars)) = &self.bars {
            let bars = bars.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(b) = bars.get(host) {
                f(b);
            }
        }
    }
}

impl Reporter for HumanReporter {
    fn host_started(&self, host: &str) {
        if let Some((mp, bars)) = &self.bars {
            let b = mp.add(ProgressBar::new_spinner());
            let style = ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            b.set_style(style);
            b.set_prefix(host.to_string());
            b.enable_steady_tick(Duration::from_millis(120));
            bars.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(host.to_string(), b);
        }
    }

    fn step(&self, host: &str, step: &str) {
        self.bar(host, |b| b.set_message(step.to_string()));
        if self.verbose > 0 && self.bars.is_none() {
            self.print(&format!("{host} | {step}"));
        }
    }

    fn op(&self, host: &str, step: &str, r: &OpResult) {
        let show = match r.status {
            OpStatus::Failed | OpStatus::Changed => true,
            OpStatus::Ok => self.verbose > 0,
        };
        if show {
            let status = match r.status {
                OpStatus::Ok => "ok",
                OpStatus::Changed => "changed",
                OpStatus::Failed => "FAILED",
            };
            self.print(&format!(
                "{host} | {step} | {} {} | {status}: {}",
                r.op, r.target, r.detail
            ));
        }
        if self.diff
            && let Some(d) = &r.diff
        {
            self.print(d.trim_end());
        }
        self.bar(host, |b| {
            b.set_message(format!("{step}: {} {}", r.op, r.target))
        });
    }

    fn note(&self, host: &str, message: &str) {
        self.print(&format!("{host} | {message}"));
    }

    fn host_unreachable(&self, host: &str, detail: &str, unreachable: bool) {
        let what = if unreachable { "UNREACHABLE" } else { "FAILED" };
        self.print(&format!("{host} | {what}: {detail}"));
    }

    fn host_finished(&self, host: &str, recap: &HostRecap) {
        let c = recap.counts;
        self.bar(host, |b| {
            b.finish_with_message(format!(
                "done: ok={} changed={} failed={} unreachable={}",
                c.ok, c.changed, c.failed, c.unreachable
            ))
        });
    }

    fn recap(&self, recap: &Recap) {
        if let Some((mp, _)) = &self.bars {
            let _ = mp.clear();
        }
        write_line(&self.out, &format!("\n{}", recap.to_text().trim_end()));
    }
}

/// `--output json`: one JSON object per line for every event, ending with the recap.
pub struct JsonReporter {
    out: Out,
}

impl JsonReporter {
    /// Events to stdout.
    pub fn new() -> Self {
        Self::with_writer(Box::new(std::io::stdout()))
    }
    /// Events to `out`.
    pub fn with_writer(out: Box<dyn Write + Send>) -> Self {
        JsonReporter {
            out: Mutex::new(out),
        }
    }
    fn emit(&self, v: serde_json::Value) {
        write_line(&self.out, &v.to_string());
    }
}

impl Default for JsonReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for JsonReporter {
    fn step(&self, host: &str, step: &str) {
        self.emit(json!({"event": "step", "host": host, "step": step}));
    }

    fn op(&self, host: &str, step: &str, r: &OpResult) {
        let mut v = json!({
            "event": "op", "host": host, "step": step, "op": r.op, "target": r.target,
            "status": r.status, "detail": r.detail,
        });
        if let Some(d) = &r.diff {
            v["diff"] = json!(d);
        }
        self.emit(v);
    }

    fn note(&self, host: &str, message: &str) {
        self.emit(json!({"event": "note", "host": host, "message": message}));
    }

    fn host_unreachable(&self, host: &str, detail: &str, unreachable: bool) {
        let status = if unreachable { "unreachable" } else { "failed" };
        self.emit(json!({"event": "connect", "host": host, "status": status, "detail": detail}));
    }

    fn host_finished(&self, host: &str, recap: &HostRecap) {
        self.emit(json!({"event": "host_done", "host": host, "counts": recap.counts, "error": recap.error}));
    }

    fn recap(&self, recap: &Recap) {
        self.emit(recap.to_json());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A writer tests can read back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn op(status: OpStatus) -> OpResult {
        OpResult {
            op: "put_file",
            target: "/etc/x".into(),
            status,
            detail: "d".into(),
            diff: Some("--- a\n+++ b\n".into()),
        }
    }

    #[test]
    fn human_shows_changes_and_failures_hides_ok_unless_verbose() {
        let buf = Buf::default();
        let r = HumanReporter::with_writer(Box::new(buf.clone()), 0, false, false);
        r.op("h", "s", &op(OpStatus::Ok));
        r.op("h", "s", &op(OpStatus::Changed));
        r.op("h", "s", &op(OpStatus::Failed));
        let t = buf.text();
        assert!(!t.contains("| ok:"), "{t}");
        assert!(t.contains("h | s | put_file /etc/x | changed: d"), "{t}");
        assert!(t.contains("| FAILED: d"), "{t}");
        assert!(!t.contains("+++ b"), "no diff without --diff: {t}");

        let buf = Buf::default();
        let r = HumanReporter::with_writer(Box::new(buf.clone()), 1, true, false);
        r.op("h", "s", &op(OpStatus::Ok));
        let t = buf.text();
        assert!(t.contains("| ok: d") && t.contains("+++ b"), "{t}");
    }

    #[test]
    fn json_lines_are_parseable_events() {
        let buf = Buf::default();
        let r = JsonReporter::with_writer(Box::new(buf.clone()));
        r.step("h", "s");
        r.op("h", "s", &op(OpStatus::Changed));
        r.host_unreachable("g", "down", true);
        let mut recap = Recap::default();
        recap.hosts.insert("h".into(), HostRecap::default());
        r.recap(&recap);
        let events: Vec<serde_json::Value> = buf
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 4);
        assert_eq!(events[1]["event"], "op");
        assert_eq!(events[1]["status"], "changed");
        assert_eq!(events[2]["status"], "unreachable");
        assert_eq!(events[3]["event"], "recap");
        assert_eq!(events[3]["hosts"]["h"]["ok"], 0);
    }
}
