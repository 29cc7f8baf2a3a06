//! A scripted Kubernetes API server for tests: a real HTTP server (tiny_http on 127.0.0.1) that
//! the real `kube` client talks to. Replies are queued per (method, path) and served in order;
//! the last queued reply repeats. Watch requests (`GET …?watch=true|1`) have their own queue per
//! path and stream one JSON event per line (chunked, flushed per event). Every request is
//! recorded. Requests with no queued reply get a 404 `Status` like the real server's.
//!
//! Watch replies that end let the client reconnect at once (kube does not back off after a
//! clean end of stream); finish a watch script with [`Reply::watch_then_hold`] to keep the client
//! quiet until the test is done.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A JSON body with a status code.
    Json {
        /// HTTP status.
        status: u16,
        /// Body.
        body: Value,
    },
    /// A non-JSON body (proxies, load balancers).
    Text {
        /// HTTP status.
        status: u16,
        /// Body.
        body: String,
    },
    /// A watch stream: 200, one event per line, then (after `hold`, or once `gate` is opened)
    /// the end of the stream.
    Watch {
        /// The events (`{"type":…,"object":…}`).
        events: Vec<Value>,
        /// How long to keep the stream open after the last event.
        hold: Duration,
        /// When set, the stream also ends as soon as the gate opens.
        gate: Option<Gate>,
    },
}

/// A switch a test flips to end a held watch stream at a moment of its choosing.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<AtomicBool>);

impl Gate {
    /// A closed gate.
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Open it: streams waiting on it end.
    pub fn open(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether it is open.
    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Reply {
    /// A JSON reply.
    pub fn json(status: u16, body: Value) -> Reply {
        Reply::Json { status, body }
    }

    /// A JSON reply read from `tests/fixtures/<rel>` (panics if missing or not JSON).
    pub fn fixture(status: u16, rel: &str) -> Reply {
        Reply::json(status, fixture(rel))
    }

    /// A plain-text reply.
    pub fn text(status: u16, body: &str) -> Reply {
        Reply::Text {
            status,
            body: body.to_string(),
        }
    }

    /// A watch stream that ends right after its events.
    pub fn watch(events: Vec<Value>) -> Reply {
        Reply::Watch {
            events,
            hold: Duration::ZERO,
            gate: None,
        }
    }

    /// A watch stream kept open for `hold` after its events (or until the server stops).
    pub fn watch_then_hold(events: Vec<Value>, hold: Duration) -> Reply {
        Reply::Watch {
            events,
            hold,
            gate: None,
        }
    }

    /// A watch stream kept open after its events until `gate` opens (at most 10 minutes).
    pub fn watch_until(events: Vec<Value>, gate: &Gate) -> Reply {
        Reply::Watch {
            events,
            hold: Duration::from_secs(600),
            gate: Some(gate.clone()),
        }
    }
}

/// A fixture file under tests/fixtures, parsed as JSON.
pub fn fixture(rel: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// A request as the server saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// `GET`, `PATCH`, …
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The raw query (without `?`; empty when none).
    pub query: String,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Authorization`.
    pub authorization: Option<String>,
    /// The body.
    pub body: String,
}

impl Recorded {
    /// The body as JSON (panics when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body of {} {} is not JSON: {e}", self.method, self.path))
    }

    /// A query parameter, percent-decoded.
    pub fn query_param(&self, k: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == k).then(|| percent_decode(value))
        })
    }

    /// Whether this is a watch request.
    pub fn is_watch(&self) -> bool {
        self.method == "GET"
            && matches!(
                self.query_param("watch").as_deref(),
                Some("true") | Some("1")
            )
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Default)]
struct Script {
    replies: HashMap<(String, String), VecDeque<Reply>>,
    watches: HashMap<String, VecDeque<Reply>>,
    requests: Vec<Recorded>,
}

/// Pop the next reply; the last one stays and repeats.
fn next(queue: Option<&mut VecDeque<Reply>>) -> Option<Reply> {
    let q = queue?;
    if q.len() > 1 {
        q.pop_front()
    } else {
        q.front().cloned()
    }
}

/// The scripted server; its threads stop when it is dropped.
pub struct FakeApiServer {
    ip: std::net::IpAddr,
    port: u16,
    script: Arc<Mutex<Script>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    handlers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl FakeApiServer {
    /// Listen on 127.0.0.1 on a free port.
    pub fn start() -> FakeApiServer {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// Listen on `ip` (e.g. a lab's deploy address, reachable from its nodes) on a free port.
    pub fn start_on(ip: std::net::IpAddr) -> FakeApiServer {
        let server = tiny_http::Server::http((ip, 0)).expect("bind the fake API server");
        let port = server.server_addr().to_ip().expect("an IP listener").port();
        let script = Arc::new(Mutex::new(Script::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let handlers: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (script, stop, handlers) = (script.clone(), stop.clone(), handlers.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(50)) else {
                        continue;
                    };
                    let (script, stop) = (script.clone(), stop.clone());
                    let h = std::thread::spawn(move || handle(req, &script, &stop));
                    let mut hs = handlers.lock().unwrap();
                    hs.retain(|h| !h.is_finished());
                    hs.push(h);
                }
            })
        };
        FakeApiServer {
            ip,
            port,
            script,
            stop,
            accept: Some(accept),
            handlers,
        }
    }

    /// `http://127.0.0.1:PORT` (or the address given to [`FakeApiServer::start_on`]).
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Write a kubeconfig for this server (`<dir>/kubeconfig`: context "fake", token
    /// "fake-token") and return its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user:\n    token: fake-token\ncontexts:\n- name: fake\n  \
             context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// Queue a reply for a non-watch `method path`.
    pub fn reply(&self, method: &str, path: &str, reply: Reply) {
        self.script
            .lock()
            .unwrap()
            .replies
            .entry((method.to_uppercase(), path.to_string()))
            .or_default()
            .push_back(reply);
    }

    /// Queue a reply for `GET path?watch=true`.
    pub fn reply_watch(&self, path: &str, reply: Reply) {
        self.script
            .lock()
            .unwrap()
            .watches
            .entry(path.to_string())
            .or_default()
            .push_back(reply);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.script.lock().unwrap().requests.clone()
    }

    /// Requests with this method and path.
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    /// Wait until `pred` holds for the recorded requests (or panic after `timeout`).
    pub fn wait_for(&self, timeout: Duration, what: &str, pred: impl Fn(&[Recorded]) -> bool) {
        let end = Instant::now() + timeout;
        loop {
            let reqs = self.requests();
            if pred(&reqs) {
                return;
            }
            if Instant::now() > end {
                panic!("timed out waiting for {what}; requests: {reqs:#?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
        let hs: Vec<_> = std::mem::take(&mut *self.handlers.lock().unwrap());
        for h in hs {
            let _ = h.join();
        }
    }
}

/// The 404 a real server sends for an unknown path.
pub fn not_found_status() -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "the server could not find the requested resource",
        "reason": "NotFound",
        "details": {},
        "code": 404
    })
}

fn header(req: &tiny_http::Request, name: &str) -> Option<String> {
    req.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str().to_string())
}

fn handle(mut req: tiny_http::Request, script: &Mutex<Script>, stop: &AtomicBool) {
    let url = req.url().to_string();
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (url.clone(), String::new()),
    };
    let mut body = String::new();
    let _ = req.as_reader().read_to_string(&mut body);
    let rec = Recorded {
        method: req.method().as_str().to_uppercase(),
        path,
        query,
        content_type: header(&req, "Content-Type"),
        authorization: header(&req, "Authorization"),
        body,
    };
    let reply = {
        let mut s = script.lock().unwrap();
        s.requests.push(rec.clone());
        if rec.is_watch() {
            next(s.watches.get_mut(&rec.path))
        } else {
            next(s.replies.get_mut(&(rec.method.clone(), rec.path.clone())))
        }
    };
    let reply = reply.unwrap_or_else(|| Reply::json(404, not_found_status()));
    match reply {
        Reply::Json { status, body } => respond(req, status, "application/json", body.to_string()),
        Reply::Text { status, body } => respond(req, status, "text/plain; charset=utf-8", body),
        Reply::Watch { events, hold, gate } => stream(req, &events, hold, gate, stop),
    }
}

fn respond(req: tiny_http::Request, status: u16, content_type: &str, body: String) {
    let ct = tiny_http::Header::from_bytes("Content-Type", content_type).expect("header");
    let _ = req.respond(
        tiny_http::Response::from_string(body)
            .with_status_code(status)
            .with_header(ct),
    );
}

/// Write the stream by hand so each event is flushed as its own chunk.
fn stream(
    req: tiny_http::Request,
    events: &[Value],
    hold: Duration,
    gate: Option<Gate>,
    stop: &AtomicBool,
) {
    let mut w = req.into_writer();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\nCache-Control: no-cache, private\r\n\r\n";
    if w.write_all(head.as_bytes())
        .and_then(|_| w.flush())
        .is_err()
    {
        return;
    }
    for ev in events {
        let line = format!("{ev}\n");
        let chunk = format!("{:x}\r\n{line}\r\n", line.len());
        if w.write_all(chunk.as_bytes())
            .and_then(|_| w.flush())
            .is_err()
        {
            return;
        }
    }
    let end = Instant::now() + hold;
    while Instant::now() < end
        && !stop.load(Ordering::SeqCst)
        && !gate.as_ref().is_some_and(Gate::is_open)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = w.write_all(b"0\r\n\r\n").and_then(|_| w.flush());
}
