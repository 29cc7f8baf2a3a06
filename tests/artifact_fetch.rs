//! Fetching artifacts from real HTTP servers on 127.0.0.1 (tiny_http, plus raw TCP servers for
//! misbehaving mirrors), file sources, the cache and offline bundles.

use installer::artifact::{
    ArtifactError, ArtifactSpec, FailureKind, FetchOptions, Fetched, LineSink, ProgressEvent,
    ProgressMode, ProgressSink, Source, open_bundle, sha256_bytes, write_bundle,
};
use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- test servers

/// A tiny_http server on an ephemeral loopback port serving fixed routes, recording every
/// request path. Stopped (socket closed) on drop.
struct Mirror {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Mirror {
    fn start(routes: &[(&str, Vec<u8>)]) -> Self {
        let routes: HashMap<String, Vec<u8>> = routes
            .iter()
            .map(|(p, b)| ((*p).to_string(), b.clone()))
            .collect();
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let addr = server.server_addr().to_ip().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (srv, lg) = (Arc::clone(&server), Arc::clone(&log));
        let thread = thread::spawn(move || {
            for request in srv.incoming_requests() {
                let path = request.url().to_string();
                lg.lock().unwrap().push(path.clone());
                let response = match routes.get(&path) {
                    // Paths under /chunked/ are sent without Content-Length (chunked), as
                    // tiny_http does for large bodies; all others with Content-Length.
                    Some(body) if path.starts_with("/chunked/") => {
                        tiny_http::Response::from_data(body.clone()).with_chunked_threshold(0)
                    }
                    Some(body) => tiny_http::Response::from_data(body.clone())
                        .with_chunked_threshold(usize::MAX),
                    None => {
                        tiny_http::Response::from_data(b"not found".to_vec()).with_status_code(404)
                    }
                };
                let _ = request.respond(response);
            }
        });
        Self {
            server,
            addr,
            log,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A raw TCP server answering `connections` requests with `respond`, for behaviour tiny_http
/// will not produce (short bodies, stalls). The thread ends after that many connections.
fn raw_server(
    connections: usize,
    respond: impl Fn(&mut std::net::TcpStream) + Send + 'static,
) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        for _ in 0..connections {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            // Read the request head.
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            respond(&mut stream);
        }
    });
    (addr, handle)
}

/// A loopback port with nothing listening.
fn refused_url(path: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}{path}")
}

// ---------------------------------------------------------------- helpers

/// Collects progress events.
#[derive(Default)]
struct Events(Mutex<Vec<ProgressEvent>>);

impl ProgressSink for Events {
    fn event(&self, event: &ProgressEvent) {
        if !matches!(event, ProgressEvent::Advanced { .. }) {
            self.0.lock().unwrap().push(event.clone());
        }
    }
}

impl Events {
    fn all(&self) -> Vec<ProgressEvent> {
        self.0.lock().unwrap().clone()
    }
}

fn payload(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed as u32) as u8)
        .collect()
}

fn options(cache: &Path) -> (FetchOptions, Arc<Events>) {
    let events = Arc::new(Events::default());
    let mut opts = FetchOptions::new(cache);
    opts.progress = ProgressMode::Sink(events.clone());
    opts.connect_timeout = Duration::from_secs(5);
    opts.stall_timeout = Duration::from_secs(5);
    (opts, events)
}

fn spec(name: &str, urls: Vec<String>, sha256: Option<String>) -> ArtifactSpec {
    ArtifactSpec {
        name: name.to_string(),
        urls,
        sha256,
    }
}

/// Names in a directory, sorted (to prove no temporary or partial file is left).
/// The cache's artifacts and side files (without the digest memo `digests.json`).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "digests.json")
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn failures(err: &ArtifactError) -> Vec<(String, FailureKind)> {
    match err {
        ArtifactError::AllMirrorsFailed { failures, .. } => {
            failures.iter().map(|f| (f.url.clone(), f.kind)).collect()
        }
        other => panic!("expected AllMirrorsFailed, got {other:?}"),
    }
}

/// Seeds the cache with `old` content (verified) under `name`.
fn seed_cache(cache: &Path, name: &str, old: &[u8]) -> Fetched {
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join(name);
    fs::write(&path, old).unwrap();
    let (opts, _) = options(cache);
    fetch_ok(
        &spec(
            name,
            vec![path.display().to_string()],
            Some(sha256_bytes(old)),
        ),
        &opts,
    )
}

fn fetch_ok(spec: &ArtifactSpec, opts: &FetchOptions) -> Fetched {
    match installer::artifact::fetch(spec, opts) {
        Ok(f) => f,
        Err(e) => panic!("fetch failed: {e}"),
    }
}

// ---------------------------------------------------------------- mirrors and checksums

#[test]
fn pinned_download_from_first_mirror_lands_in_cache() {
    let body = payload(1, 300_000);
    let mirror = Mirror::start(&[("/a.tgz", body.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("bin");
    let (opts, events) = options(&cache);
    let sha = sha256_bytes(&body);

    let got = fetch_ok(
        &spec("a.tgz", vec![mirror.url("/a.tgz")], Some(sha.clone())),
        &opts,
    );

    assert_eq!(got.source, Source::Url(mirror.url("/a.tgz")));
    assert_eq!(got.path, cache.join("a.tgz"));
    assert_eq!(
        (got.sha256.as_str(), got.size),
        (sha.as_str(), body.len() as u64)
    );
    assert_eq!(fs::read(&got.path).unwrap(), body);
    assert_eq!(listing(&cache), ["a.tgz", "a.tgz.sha256"]);
    // Pinned: the side file is never asked for.
    assert_eq!(mirror.requests(), ["/a.tgz"]);
    let events = events.all();
    assert!(matches!(
        &events[0],
        ProgressEvent::Started {
            total: Some(300_000),
            ..
        }
    ));
    assert!(matches!(
        &events[1],
        ProgressEvent::Finished {
            verified: true,
            bytes: 300_000,
            ..
        }
    ));
}

#[test]
fn chunked_download_without_content_length_works() {
    let body = payload(1, 300_000);
    let mirror = Mirror::start(&[("/chunked/a.tgz", body.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let (opts, events) = options(dir.path());

    let got = fetch_ok(
        &spec(
            "a.tgz",
            vec![mirror.url("/chunked/a.tgz")],
            Some(sha256_bytes(&body)),
        ),
        &opts,
    );

    assert_eq!(fs::read(&got.path).unwrap(), body);
    assert!(matches!(
        &events.all()[0],
        ProgressEvent::Started { total: None, .. }
    ));
}

#[test]
fn first_mirror_404_then_second_mirror_works() {
    let body = payload(2, 10_000);
    let broken = Mirror::start(&[]);
    let good = Mirror::start(&[("/m/a.tgz", body.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let (opts, events) = options(dir.path());

    let got = fetch_ok(
        &spec(
            "a.tgz",
            vec![broken.url("/a.tgz"), good.url("/m/a.tgz")],
            Some(sha256_bytes(&body)),
        ),
        &opts,
    );

    assert_eq!(got.source, Source::Url(good.url("/m/a.tgz")));
    assert_eq!(fs::read(&got.path).unwrap(), body);
    assert_eq!(broken.requests(), ["/a.tgz"]);
    let failed: Vec<_> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            ProgressEvent::MirrorFailed { url, reason, .. } => Some((url, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, broken.url("/a.tgz"));
    assert!(failed[0].1.contains("404"), "{}", failed[0].1);
}

#[test]
fn connection_refused_then_second_mirror_works() {
    let body = payload(3, 5_000);
    let good = Mirror::start(&[("/a.tgz", body.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let (opts, events) = options(dir.path());
    let refused = refused_url("/a.tgz");
    // An https source exercises the TLS client set-up (crypto provider) as well.
    let refused_tls = refused_url("/a.tgz").replace("http://", "https://");

    let got = fetch_ok(
        &spec(
            "a.tgz",
            vec![refused_tls.clone(), refused.clone(), good.url("/a.tgz")],
            Some(sha256_bytes(&body)),
        ),
        &opts,
    );

    assert_eq!(got.source, Source::Url(good.url("/a.tgz")));
    let failed: Vec<String> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            ProgressEvent::MirrorFailed { url, .. } => Some(url),
            _ => None,
        })
        .collect();
    assert_eq!(failed, [refused_tls, refused]);
}

/// A `Write` into a shared buffer, to read what a `LineSink` printed.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn plain_log_lines_describe_failures_downloads_and_cache_hits() {
    let body = payload(30, 3 * 1024 * 1024);
    let mirror = Mirror::start(&[("/a.tgz", body.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let buf = SharedBuf::default();
    let mut opts = FetchOptions::new(dir.path());
    opts.progress = ProgressMode::Sink(Arc::new(LineSink::new(buf.clone())));
    let s = spec(
        "a.tgz",
        vec![mirror.url("/missing.tgz"), mirror.url("/a.tgz")],
        Some(sha256_bytes(&body)),
    );
    fetch_ok(&s, &opts);
    fetch_ok(&s, &opts);

    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(
        lines[0],
        format!(
            "fetch a.tgz from {} failed: HTTP 404 Not Found",
            mirror.url("/missing.tgz")
        )
    );
    let done = format!("fetch a.tgz from {}: 3.00 MiB in ", mirror.url("/a.tgz"));
    assert!(lines[1].starts_with(&done), "{}", lines[1]);
    assert!(lines[1].ends_with("MiB/s), sha256 ok"), "{}", lines[1]);
    assert!(
        lines[2].starts_with("fetch a.tgz: cached at "),
        "{}",
        lines[2]
    );
}

#[test]
fn all_mirrors_failing_lists_each_with_reason_and_advice() {
    let broken = Mirror::start(&[]);
    let refused = refused_url("/a.tgz");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("bin");
    let (opts, _) = options(&cache);

    let err = installer::artifact::fetch(
        &spec(
            "a.tgz",
            vec![
                broken.url("/a.tgz"),
                refused.clone(),
                "ftp://x/a.tgz".into(),
            ],
            Some(sha256_bytes(b"x")),
        ),
        &opts,
    )
    .unwrap_err();

    assert_eq!(
        failures(&err),
        [
            (broken.url("/a.tgz"), FailureKind::HttpStatus),
            (refused.clone(), FailureKind::Connect),
            ("ftp://x/a.tgz".to_string(), FailureKind::BadUrl),
        ]
    );
    let text = err.to_string();
    for needle in [
        broken.url("/a.tgz").as_str(),
        "404",
        refused.as_str(),
        "ftp://x/a.tgz",
        "add a reachable mirror",
        "--offline-bundle",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(
        listing(&cache).iter().all(|n| !n.contains("a.tgz")),
        "{:?}",
        listing(&cache)
    );
}

#[test]
fn checksum_mismatch_keeps_the_old_cached_file() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("bin");
    let old = payload(4, 2_000);
    seed_cache(&cache, "a.tgz", &old);
    let before_sidecar = fs::read(cache.join("a.tgz.sha256")).unwrap();

    // The new version is pinned, but the mirror serves something else.
    let wanted = payload(5, 3_000);
    let served = payload(6, 3_000);
    let mirror = Mirror::start(&[("/a.tgz", served.clone())]);
    let (opts, _) = options(&cache);
    let err = installer::artifact::fetch(
        &spec(
            "a.tgz",
            vec![mirror.url("/a.tgz")],
            Some(sha256_bytes(&wanted)),
        ),
        &opts,
    )
    .unwrap_err();

    assert_eq!(failures(&err)[0].1, FailureKind::ChecksumMismatch);
    let text = err.to_string();
    assert!(text.contains(&sha256_bytes(&served)), "{text}");
    assert!(text.contains("pinned"), "{text}");
    assert_eq!(fs::read(cache.join("a.tgz")).unwrap(), old);
    assert_eq!(
        fs::read(cache.join("a.tgz.sha256")).unwrap(),
        before_sidecar
    );
    assert_eq!(listing(&cache), ["a.tgz", "a.tgz.sha256"]);
}

#[test]
fn truncated_body_is_refused_and_cache_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("bin");
    let old = payload(7, 1_000);
    seed_cache(&cache, "a.tgz", &old);

    let full = payload(8, 100_000);
    let half = full[..50_000].to_vec();
    let (addr, server) = raw_server(1, move |stream| {
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n"
        );
        let _ = stream.write_all(&half);
        // Closing the socket here ends the body early.
    });
    let (opts, _) = options(&cache);
    let err = installer::artifact::fetch(
        &spec(
            "a.tgz",
            vec![format!("http://{addr}/a.tgz")],
            Some(sha256_bytes(&full)),
        ),
        &opts,
    )
    .unwrap_err();
    server.join().unwrap();

    assert_eq!(failures(&err)[0].1, FailureKind::Truncated, "{err}");
    assert!(err.to_string().contains("100000"), "{err}");
    assert_eq!(fs::read(cache.join("a.tgz")).unwrap(), old);
    assert_eq!(listing(&cache), ["a.tgz", "a.tgz.sha256"]);
}

#[test]
fn stalled_mirror_times_out_and_the_next_one_is_used() {
    let body = payload(9, 4_000);
    let (addr, server) = raw_server(1, |stream| {
        let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: 4000\r\n\r\n");
        let _ = stream.write_all(&[0u8; 100]);
        let _ = stream.flush();
        thread::sleep(Duration::from_millis(2500));
    });
    let good = Mirror::start(&[("/a.tgz", body.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let (mut opts, _) = options(dir.path());
    opts.stall_timeout = Duration::from_millis(700);

    let started = Instant::now();
    let got = fetch_ok(
        &spec(
            "a.tgz",
            vec![format!("http://{addr}/a.tgz"), good.url("/a.tgz")],
            Some(sha256_bytes(&body)),
        ),
        &opts,
    );
    assert_eq!(got.source, Source::Url(good.url("/a.tgz")));
    assert!(
        started.elapsed() < Duration::from_millis(2400),
        "{:?}",
        started.elapsed()
    );
    server.join().unwrap();
}

#[test]
fn slow_but_progressing_download_is_not_cut_off() {
    // 6 chunks 300 ms apart: 1.5 s in total, well over the 700 ms stall timeout, but no gap
    // reaches it. A total timeout would kill this download.
    let chunk = payload(10, 1_000);
    let mut body = Vec::new();
    for _ in 0..6 {
        body.extend_from_slice(&chunk);
    }
    let (addr, server) = raw_server(1, move |stream| {
        let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: 6000\r\n\r\n");
        for _ in 0..6 {
            let _ = stream.write_all(&chunk);
            let _ = stream.flush();
            thread::sleep(Duration::from_millis(300));
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let (mut opts, _) = options(dir.path());
    opts.stall_timeout = Duration::from_millis(700);

    let started = Instant::now();
    let got = fetch_ok(
        &spec(
            "a.tgz",
            vec![format!("http://{addr}/a.tgz")],
            Some(sha256_bytes(&body)),
        ),
        &opts,
    );
    assert!(started.elapsed() > Duration::from_millis(1400));
    assert_eq!(fs::read(&got.path).unwrap(), body);
    server.join().unwrap();
}

#[test]
fn side_file_checksum_is_used_when_nothing_is_pinned() {
    let body = payload(11, 20_000);
    let side = format!("{}  a.tgz\n", sha256_bytes(&body));
    let mirror = Mirror::start(&[
        ("/a.tgz", body.clone()),
        ("/a.tgz.sha256", side.into_bytes()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("bin");
    let (opts, _) = options(&cache);

    let got = fetch_ok(&spec("a.tgz", vec![mirror.url("/a.tgz")], None), &opts);

    assert_eq!(got.sha256, sha256_bytes(&body));
    assert_eq!(mirror.requests(), ["/a.tgz.sha256", "/a.tgz"]);
    // The verified digest is recorded beside the file, in sha256sum format.
    assert_eq!(
        fs::read_to_string(cache.join("a.tgz.sha256")).unwrap(),
        format!("{}  a.tgz\n", got.sha256)
    );
}

#[test]
fn side_file_mismatch_and_foreign_side_file_fall_through_to_next_mirror() {
    let body = payload(12, 8_000);
    let wrong = format!("{}  a.tgz\n", sha256_bytes(b"other"));
    let foreign = format!("{}  b.tgz\n", sha256_bytes(&body));
    let right = sha256_bytes(&body); // bare hex form
    let m1 = Mirror::start(&[
        ("/a.tgz", body.clone()),
        ("/a.tgz.sha256", wrong.into_bytes()),
    ]);
    let m2 = Mirror::start(&[
        ("/a.tgz", body.clone()),
        ("/a.tgz.sha256", foreign.into_bytes()),
    ]);
    let m3 = Mirror::start(&[
        ("/a.tgz", body.clone()),
        ("/a.tgz.sha256", right.into_bytes()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (opts, events) = options(dir.path());

    let got = fetch_ok(
        &spec(
            "a.tgz",
            vec![m1.url("/a.tgz"), m2.url("/a.tgz"), m3.url("/a.tgz")],
            None,
        ),
        &opts,
    );
    assert_eq!(got.source, Source::Url(m3.url("/a.tgz")));
    // m2's side file names another file: its body is never downloaded.
    assert_eq!(m2.requests(), ["/a.tgz.sha256"]);
    let reasons: Vec<String> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            ProgressEvent::MirrorFailed { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 2);
    assert!(reasons[0].contains("mismatch"), "{}", reasons[0]);
    assert!(reasons[1].contains("b.tgz"), "{}", reasons[1]);
}

#[test]
fn no_checksum_is_refused_unless_insecure() {
    let body = payload(13, 4_000);
    let mirror = Mirror::start(&[("/a.tgz", body.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("bin");
    let (mut opts, events) = options(&cache);
    let s = spec("a.tgz", vec![mirror.url("/a.tgz")], None);

    let err = installer::artifact::fetch(&s, &opts).unwrap_err();
    assert_eq!(failures(&err)[0].1, FailureKind::NoChecksum);
    let text = err.to_string();
    assert!(text.contains("--insecure-skip-checksum"), "{text}");
    assert!(text.contains("pin"), "{text}");
    // Refused before downloading the body; nothing in the cache.
    assert_eq!(mirror.requests(), ["/a.tgz.sha256"]);
    assert!(!cache.join("a.tgz").exists());

    opts.insecure_skip_checksum = true;
    let got = fetch_ok(&s, &opts);
    assert_eq!(fs::read(&got.path).unwrap(), body);
    assert!(events.all().iter().any(|e| matches!(
        e,
        ProgressEvent::Finished {
            verified: false,
            ..
        }
    )));
    // Not recorded as verified: no digest file, and the next fetch downloads again.
    assert_eq!(listing(&cache), ["a.tgz"]);
    let again = fetch_ok(&s, &opts);
    assert_eq!(again.source, Source::Url(mirror.url("/a.tgz")));
}

#[test]
fn cache_hit_needs_no_network_pinned_and_unpinned() {
    let body = payload(14, 50_000);
    let side = format!("{}  a.tgz\n", sha256_bytes(&body));
    let mirror = Mirror::start(&[
        ("/a.tgz", body.clone()),
        ("/a.tgz.sha256", side.into_bytes()),
        ("/b.tgz", body.clone()),
    ]);
    let a = spec("a.tgz", vec![mirror.url("/a.tgz")], None);
    let b = spec(
        "b.tgz",
        vec![mirror.url("/b.tgz")],
        Some(sha256_bytes(&body)),
    );
    let dir = tempfile::tempdir().unwrap();
    let (opts, events) = options(dir.path());
    fetch_ok(&a, &opts);
    fetch_ok(&b, &opts);
    let requests = mirror.requests();
    drop(mirror); // server stopped: any network use would now fail

    for s in [&a, &b] {
        let got = fetch_ok(s, &opts);
        assert_eq!(got.source, Source::Cache);
        assert_eq!(got.sha256, sha256_bytes(&body));
    }
    assert_eq!(requests.len(), 3);
    let hits = events
        .all()
        .iter()
        .filter(|e| matches!(e, ProgressEvent::CacheHit { .. }))
        .count();
    assert_eq!(hits, 2);
}

#[test]
fn corrupted_cache_file_is_replaced_by_a_verified_download() {
    let body = payload(15, 9_000);
    let mirror = Mirror::start(&[("/a.tgz", body.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let (opts, _) = options(dir.path());
    let s = spec(
        "a.tgz",
        vec![mirror.url("/a.tgz")],
        Some(sha256_bytes(&body)),
    );
    let first = fetch_ok(&s, &opts);
    fs::write(&first.path, b"bit rot").unwrap();

    let second = fetch_ok(&s, &opts);
    assert_eq!(second.source, Source::Url(mirror.url("/a.tgz")));
    assert_eq!(fs::read(&second.path).unwrap(), body);
}

#[test]
fn file_url_and_plain_path_sources() {
    let src = tempfile::tempdir().unwrap();
    let body = payload(16, 70_000);
    let file = src.path().join("a.tgz");
    fs::write(&file, &body).unwrap();
    fs::write(
        src.path().join("a.tgz.sha256"),
        format!("{}  a.tgz\n", sha256_bytes(&body)),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();

    // file:// without a pin: the side file next to it is used.
    let (opts, _) = options(&dir.path().join("c1"));
    let url = format!("file://{}", file.display());
    let got = fetch_ok(&spec("a.tgz", vec![url.clone()], None), &opts);
    assert_eq!(got.source, Source::Url(url));
    assert_eq!(fs::read(&got.path).unwrap(), body);

    // Plain path with a pin, after a missing path.
    let (opts, _) = options(&dir.path().join("c2"));
    let missing = src.path().join("nope.tgz").display().to_string();
    let plain = file.display().to_string();
    let got = fetch_ok(
        &spec(
            "a.tgz",
            vec![missing, plain.clone()],
            Some(sha256_bytes(&body)),
        ),
        &opts,
    );
    assert_eq!(got.source, Source::Url(plain));
    assert_eq!(got.sha256, sha256_bytes(&body));
}

#[test]
fn invalid_name_and_pin_are_rejected_before_any_io() {
    let dir = tempfile::tempdir().unwrap();
    let (opts, _) = options(&dir.path().join("bin"));
    let err =
        installer::artifact::fetch(&spec("../a.tgz", vec!["/x".into()], None), &opts).unwrap_err();
    assert!(matches!(err, ArtifactError::InvalidName { .. }), "{err}");
    let err = installer::artifact::fetch(
        &spec("a.tgz", vec!["/x".into()], Some("deadbeef".into())),
        &opts,
    )
    .unwrap_err();
    assert!(
        matches!(err, ArtifactError::InvalidPinnedDigest { .. }),
        "{err}"
    );
    let err = installer::artifact::fetch(&spec("a.tgz", vec![], None), &opts).unwrap_err();
    assert!(matches!(err, ArtifactError::NoUrls { .. }), "{err}");
    assert!(!dir.path().join("bin").exists());
}

// ---------------------------------------------------------------- bundles

/// Fetches two artifacts from a mirror into a cache; returns them and the mirror's URLs.
fn two_fetched(cache: &Path) -> (Vec<Fetched>, Vec<ArtifactSpec>, Vec<Vec<u8>>) {
    let a = payload(20, 40_000);
    let b = payload(21, 1_234);
    let mirror = Mirror::start(&[("/a.tgz", a.clone()), ("/b.bin", b.clone())]);
    let specs = vec![
        spec("a.tgz", vec![mirror.url("/a.tgz")], Some(sha256_bytes(&a))),
        spec("b.bin", vec![mirror.url("/b.bin")], Some(sha256_bytes(&b))),
    ];
    let (opts, _) = options(cache);
    let fetched = specs.iter().map(|s| fetch_ok(s, &opts)).collect();
    (fetched, specs, vec![a, b])
}

#[test]
fn bundle_round_trip_serves_fetch_without_network() {
    let dir = tempfile::tempdir().unwrap();
    let (fetched, specs, bodies) = two_fetched(&dir.path().join("online"));
    // The mirror is gone now (dropped in two_fetched).
    let bundle_path = dir.path().join("out/offline.tgz");

    let manifest = write_bundle(&fetched, &bundle_path).unwrap();
    assert_eq!(manifest.artifacts.len(), 2);
    assert_eq!(manifest.artifacts[0].name, "a.tgz");
    assert_eq!(manifest.artifacts[0].sha256, sha256_bytes(&bodies[0]));
    assert_eq!(manifest.artifacts[1].size, 1_234);
    assert_eq!(
        manifest.artifacts[0].source_url.as_deref(),
        Some(specs[0].urls[0].as_str())
    );
    assert_eq!(listing(&dir.path().join("out")), ["offline.tgz"]);

    let opened = open_bundle(&bundle_path).unwrap();
    assert_eq!(opened.manifest, manifest);

    let offline_cache = dir.path().join("offline-bin");
    let (mut opts, _) = options(&offline_cache);
    opts.offline_bundle = Some(bundle_path.clone());
    for (s, body) in specs.iter().zip(&bodies) {
        let got = fetch_ok(s, &opts);
        assert_eq!(got.source, Source::Bundle(bundle_path.clone()));
        assert_eq!(&fs::read(&got.path).unwrap(), body);
    }
    // Second time both come from the cache.
    assert_eq!(fetch_ok(&specs[0], &opts).source, Source::Cache);

    // A bundle without the requested artifact says so and lists what it has.
    let other = spec("c.tgz", vec!["http://127.0.0.1:9/c.tgz".into()], None);
    let err = installer::artifact::fetch(&other, &opts).unwrap_err();
    assert!(matches!(err, ArtifactError::BundleMissing { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("c.tgz") && text.contains("a.tgz, b.bin"),
        "{text}"
    );

    // A pin that differs from the bundle's copy is refused.
    let (mut opts2, _) = options(&dir.path().join("pin-bin"));
    opts2.offline_bundle = Some(bundle_path.clone());
    let mut pinned = specs[0].clone();
    pinned.sha256 = Some(sha256_bytes(b"another version"));
    let err = installer::artifact::fetch(&pinned, &opts2).unwrap_err();
    assert!(
        matches!(err, ArtifactError::BundlePinMismatch { .. }),
        "{err}"
    );
    assert!(!dir.path().join("pin-bin/a.tgz").exists());
}

/// Rewrites a bundle with one artifact's bytes altered but the manifest kept.
fn tamper(bundle: &Path, out: &Path) {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
        fs::File::open(bundle).unwrap(),
    ));
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        fs::File::create(out).unwrap(),
        flate2::Compression::fast(),
    ));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        let path = entry.path().unwrap().into_owned();
        if path == Path::new("artifacts/a.tgz") {
            data[100] ^= 0xff;
        }
        let mut header = entry.header().clone();
        header.set_cksum();
        builder.append(&header, &data[..]).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
}

#[test]
fn tampered_bundle_is_refused_and_nothing_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let (fetched, specs, _) = two_fetched(&dir.path().join("online"));
    let good = dir.path().join("good.tgz");
    write_bundle(&fetched, &good).unwrap();
    let bad = dir.path().join("bad.tgz");
    tamper(&good, &bad);

    let err = open_bundle(&bad).unwrap_err();
    assert!(matches!(err, ArtifactError::BundleInvalid { .. }), "{err}");
    assert!(err.to_string().contains("a.tgz"), "{err}");

    let cache = dir.path().join("offline-bin");
    let (mut opts, _) = options(&cache);
    opts.offline_bundle = Some(bad);
    // Even the untouched artifact is refused: the bundle as a whole is not trusted.
    let err = installer::artifact::fetch(&specs[1], &opts).unwrap_err();
    assert!(matches!(err, ArtifactError::BundleInvalid { .. }), "{err}");
    assert!(listing(&cache).is_empty(), "{:?}", listing(&cache));
}

#[test]
fn bundle_write_is_atomic_when_an_artifact_changed() {
    let dir = tempfile::tempdir().unwrap();
    let (fetched, _, _) = two_fetched(&dir.path().join("online"));
    let out = dir.path().join("out");
    let bundle = out.join("offline.tgz");
    write_bundle(&fetched[..1], &bundle).unwrap();
    let before = fs::read(&bundle).unwrap();

    fs::write(&fetched[1].path, b"changed after fetch").unwrap();
    let err = write_bundle(&fetched, &bundle).unwrap_err();
    assert!(matches!(err, ArtifactError::ChangedOnDisk { .. }), "{err}");
    assert_eq!(fs::read(&bundle).unwrap(), before);
    assert_eq!(listing(&out), ["offline.tgz"]);
}

#[test]
fn bundle_with_unexpected_entry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weird.tgz");
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    ));
    let manifest = br#"{"format":"installer-artifact-bundle","version":1,"artifacts":[]}"#;
    let mut h = tar::Header::new_ustar();
    h.set_path("manifest.json").unwrap();
    h.set_size(manifest.len() as u64);
    h.set_cksum();
    builder.append(&h, &manifest[..]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("etc/cron.d/x").unwrap();
    h.set_size(1);
    h.set_cksum();
    builder.append(&h, &b"x"[..]).unwrap();
    builder.into_inner().unwrap().finish().unwrap();

    let err = open_bundle(&path).unwrap_err();
    assert!(err.to_string().contains("etc/cron.d/x"), "{err}");
}
