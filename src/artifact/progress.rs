//! Progress reporting for fetches. Fetch code emits [`ProgressEvent`]s into a
//! [`ProgressSink`]; the sink decides how to show them: an indicatif bar on a terminal, plain
//! log lines otherwise, nothing, or any custom sink (a JSON event stream can be added as one,
//! since events are `Serialize`).

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::fmt;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// One thing that happened while fetching an artifact.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProgressEvent {
    /// A verified copy was found in the cache; no network was used.
    CacheHit {
        /// Artifact name.
        name: String,
        /// Cached file.
        path: PathBuf,
        /// Its sha256.
        sha256: String,
    },
    /// A transfer from one source starts.
    Started {
        /// Artifact name.
        name: String,
        /// Source URL or path.
        url: String,
        /// Expected size when the source announces it.
        total: Option<u64>,
    },
    /// Bytes received so far from the current source.
    Advanced {
        /// Artifact name.
        name: String,
        /// Bytes so far.
        done: u64,
        /// Expected size, when known.
        total: Option<u64>,
    },
    /// One source failed; the next one will be tried.
    MirrorFailed {
        /// Artifact name.
        name: String,
        /// Source that failed.
        url: String,
        /// Why.
        reason: String,
    },
    /// The artifact was stored in the cache.
    Finished {
        /// Artifact name.
        name: String,
        /// Where it came from (URL, path, or bundle file).
        url: String,
        /// Size in bytes.
        bytes: u64,
        /// Transfer time in seconds.
        seconds: f64,
        /// Its sha256.
        sha256: String,
        /// False only when checksums were skipped on request.
        verified: bool,
    },
}

impl ProgressEvent {
    /// The plain log line for this event, or `None` for events that are only shown by bars.
    pub fn log_line(&self) -> Option<String> {
        match self {
            ProgressEvent::CacheHit { name, path, .. } => Some(format!(
                "fetch {name}: cached at {}, sha256 ok",
                path.display()
            )),
            ProgressEvent::Started { .. } | ProgressEvent::Advanced { .. } => None,
            ProgressEvent::MirrorFailed { name, url, reason } => {
                Some(format!("fetch {name} from {url} failed: {reason}"))
            }
            ProgressEvent::Finished {
                name,
                url,
                bytes,
                seconds,
                verified,
                ..
            } => {
                let rate = if *seconds > 0.0 {
                    HumanBytes((*bytes as f64 / seconds) as u64).to_string()
                } else {
                    HumanBytes(*bytes).to_string()
                };
                let check = if *verified {
                    "sha256 ok"
                } else {
                    "sha256 NOT VERIFIED (--insecure-skip-checksum)"
                };
                Some(format!(
                    "fetch {name} from {url}: {} in {seconds:.1} s ({rate}/s), {check}",
                    HumanBytes(*bytes)
                ))
            }
        }
    }
}

/// Receives progress events. Implementations must be cheap: `Advanced` arrives for every
/// chunk read.
pub trait ProgressSink: Send + Sync {
    /// Handle one event.
    fn event(&self, event: &ProgressEvent);
}

/// How fetch progress is shown.
#[derive(Clone, Default)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Always an indicatif bar on stderr.
    Bar,
    /// Plain log lines on stderr.
    Lines,
    /// Nothing.
    Silent,
    /// A caller-provided sink (e.g. a JSON event stream, or a collector in tests).
    Sink(Arc<dyn ProgressSink>),
}

impl fmt::Debug for ProgressMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProgressMode::Auto => "Auto",
            ProgressMode::Bar => "Bar",
            ProgressMode::Lines => "Lines",
            ProgressMode::Silent => "Silent",
            ProgressMode::Sink(_) => "Sink(..)",
        })
    }
}

impl ProgressMode {
    /// The sink this mode stands for.
    pub fn sink(&self) -> Arc<dyn ProgressSink> {
        match self {
            ProgressMode::Auto if std::io::stderr().is_terminal() => Arc::new(BarSink::default()),
            ProgressMode::Auto | ProgressMode::Lines => Arc::new(LineSink::new(std::io::stderr())),
            ProgressMode::Bar => Arc::new(BarSink::default()),
            ProgressMode::Silent => Arc::new(SilentSink),
            ProgressMode::Sink(sink) => Arc::clone(sink),
        }
    }
}

/// Ignores every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct SilentSink;

impl ProgressSink for SilentSink {
    fn event(&self, _event: &ProgressEvent) {}
}

/// Writes [`ProgressEvent::log_line`] for each event to a writer (stderr by default).
pub struct LineSink<W: Write + Send> {
    out: Mutex<W>,
}

impl<W: Write + Send> LineSink<W> {
    /// Log lines go to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out: Mutex::new(out),
        }
    }
}

impl<W: Write + Send> ProgressSink for LineSink<W> {
    fn event(&self, event: &ProgressEvent) {
        if let Some(line) = event.log_line()
            && let Ok(mut out) = self.out.lock()
        {
            // Progress output is best effort: a closed stderr must not fail the fetch.
            let _ = writeln!(out, "{line}");
        }
    }
}

/// Bar layout when the size is known.
const BAR_TEMPLATE: &str = "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}";
/// Layout when the server sends no Content-Length.
const SPINNER_TEMPLATE: &str = "{msg} {spinner} {bytes} {bytes_per_sec}";

/// An indicatif bar (bytes, speed, ETA) on stderr per transfer; other events as lines above it.
#[derive(Default)]
pub struct BarSink {
    bar: Mutex<Option<ProgressBar>>,
}

impl BarSink {
    fn start(name: &str, total: Option<u64>) -> ProgressBar {
        let bar = match total {
            Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        let template = if total.is_some() {
            BAR_TEMPLATE
        } else {
            SPINNER_TEMPLATE
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("fetch {name}"));
        bar
    }
}

impl ProgressSink for BarSink {
    fn event(&self, event: &ProgressEvent) {
        let Ok(mut slot) = self.bar.lock() else {
            return;
        };
        match event {
            ProgressEvent::Started { name, total, .. } => {
                if let Some(old) = slot.take() {
                    old.finish_and_clear();
                }
                *slot = Some(Self::start(name, *total));
            }
            ProgressEvent::Advanced { done, .. } => {
                if let Some(bar) = slot.as_ref() {
                    bar.set_position(*done);
                }
            }
            other => {
                if let Some(bar) = slot.take() {
                    bar.finish_and_clear();
                }
                if let Some(line) = other.log_line() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_line_has_size_rate_and_check() {
        let line = ProgressEvent::Finished {
            name: "a.tgz".into(),
            url: "http://m/a.tgz".into(),
            bytes: 4 * 1024 * 1024,
            seconds: 2.0,
            sha256: "x".into(),
            verified: true,
        }
        .log_line()
        .unwrap();
        assert_eq!(
            line,
            "fetch a.tgz from http://m/a.tgz: 4.00 MiB in 2.0 s (2.00 MiB/s), sha256 ok"
        );
    }

    #[test]
    fn line_sink_writes_lines_and_skips_byte_events() {
        let sink = LineSink::new(Vec::new());
        sink.event(&ProgressEvent::Advanced {
            name: "a".into(),
            done: 1,
            total: None,
        });
        sink.event(&ProgressEvent::MirrorFailed {
            name: "a".into(),
            url: "u".into(),
            reason: "HTTP 404".into(),
        });
        let out = String::from_utf8(sink.out.into_inner().unwrap()).unwrap();
        assert_eq!(out, "fetch a from u failed: HTTP 404\n");
    }

    #[test]
    fn bar_templates_parse() {
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
        assert!(ProgressStyle::with_template(SPINNER_TEMPLATE).is_ok());
    }

    #[test]
    fn events_serialize_with_a_tag() {
        let json = serde_json::to_string(&ProgressEvent::Started {
            name: "a".into(),
            url: "u".into(),
            total: Some(3),
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"event":"started","name":"a","url":"u","total":3}"#
        );
    }
}
