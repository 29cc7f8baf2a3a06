//! The lab's artifact mirror: a CNI plugins tarball made from Debian's containernetworking-plugins,
//! its `.sha256` side file, and a small HTTP server for them on the deploy-side address, so the
//! installer's fetch runs its real download path.
//!
//! The tarball mimics upstream release tarballs: `cni-plugins-linux-<arch>-<version>.tgz` with a
//! `./` directory entry and flat `./<plugin>` files, mode 0755, owner 0:0, modification times of
//! the Debian files (the same package gives the same bytes). The side file holds
//! `<hex>  <name>\n`, as `sha256sum` writes it.

use super::error::{LabError, Result};
use super::plan::MIRROR_PORT;
use super::prereq::{CNI_PLUGINS, Tools};
use super::state::Lab;
use super::sys;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The CNI plugins version to advertise: `v<upstream part of the Debian version>-debian`
/// (`1.1.1+ds1-3+b5` → `v1.1.1-debian`), or `v0.0.0-debian` when dpkg cannot tell.
pub fn cni_version() -> String {
    let debian = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "containernetworking-plugins"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    version_from_debian(&debian)
}

/// Turn a Debian version string into the advertised CNI version.
pub fn version_from_debian(debian: &str) -> String {
    let without_epoch = debian.split_once(':').map_or(debian, |(_, v)| v);
    let upstream: String = without_epoch
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    if upstream.is_empty() {
        "v0.0.0-debian".into()
    } else {
        format!("v{upstream}-debian")
    }
}

/// Architecture name used in CNI tarball names (`amd64`, `arm64`, …).
pub fn cni_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// Tarball file name for a version.
pub fn tarball_name(version: &str) -> String {
    format!("cni-plugins-linux-{}-{version}.tgz", cni_arch())
}

/// Build the tarball and its `.sha256` side file in `dir`; return the hex digest.
pub fn build_tarball(tools: &Tools, dir: &Path, name: &str) -> Result<String> {
    sys::mkdir(dir)?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let file = File::create(&tmp).map_err(|e| LabError::io("create", &tmp, e))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let io = |e| LabError::io("write", &tmp, e);

    let mut newest = 0u64;
    let sources: Vec<(PathBuf, std::fs::Metadata)> = CNI_PLUGINS
        .iter()
        .map(|plugin| {
            let src = tools.cni_dir.join(plugin);
            let meta = std::fs::metadata(&src).map_err(|e| LabError::io("read", &src, e))?;
            Ok((src, meta))
        })
        .collect::<Result<_>>()?;
    for (_, meta) in &sources {
        newest = newest.max(meta.mtime().max(0) as u64);
    }
    let mut dir_header = tar::Header::new_gnu();
    dir_header.set_entry_type(tar::EntryType::Directory);
    dir_header.set_mode(0o755);
    dir_header.set_uid(0);
    dir_header.set_gid(0);
    dir_header.set_mtime(newest);
    dir_header.set_size(0);
    set_raw_name(&mut dir_header, "./");
    tar.append(&dir_header, std::io::empty()).map_err(io)?;
    for (plugin, (src, meta)) in CNI_PLUGINS.iter().zip(&sources) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(meta.mtime().max(0) as u64);
        header.set_size(meta.len());
        set_raw_name(&mut header, &format!("./{plugin}"));
        let data = File::open(src).map_err(|e| LabError::io("read", src, e))?;
        tar.append(&header, data).map_err(io)?;
    }
    let gz = tar.into_inner().map_err(io)?;
    let mut file = gz.finish().map_err(io)?;
    file.flush().and_then(|()| file.sync_all()).map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(|e| LabError::io("rename to", &path, e))?;

    let digest = sha256_file(&path)?;
    sys::write_atomic(
        &dir.join(format!("{name}.sha256")),
        format!("{digest}  {name}\n").as_bytes(),
    )?;
    Ok(digest)
}

/// Store an entry name byte for byte (the tar crate's path setters drop a leading `./`, which
/// upstream tarballs have), then fix the checksum. Names here are short constants.
fn set_raw_name(header: &mut tar::Header, name: &str) {
    let slot = &mut header.as_old_mut().name;
    slot.fill(0);
    let len = name.len().min(slot.len());
    slot[..len].copy_from_slice(&name.as_bytes()[..len]);
    header.set_cksum();
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| LabError::io("read", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n =
            std::io::Read::read(&mut file, &mut buf).map_err(|e| LabError::io("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serve the plain files of `dir` over HTTP until `server` is unblocked. Only `GET`/`HEAD` of a
/// top-level file name are answered; everything else is 404/405. One line per request goes to
/// `log`.
pub fn serve(server: &tiny_http::Server, dir: &Path, log: Arc<Mutex<dyn Write + Send>>) {
    for request in server.incoming_requests() {
        let dir = dir.to_path_buf();
        let log = Arc::clone(&log);
        std::thread::spawn(move || answer(request, &dir, &log));
    }
}

fn answer(request: tiny_http::Request, dir: &Path, log: &Mutex<dyn Write + Send>) {
    let method = request.method().clone();
    let url = request.url().to_string();
    let name = url
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .trim_start_matches('/');
    let safe = !name.is_empty() && !name.contains('/') && !name.starts_with('.');
    let (status, size, result) = match method {
        tiny_http::Method::Get | tiny_http::Method::Head => {
            match safe
                .then(|| File::open(dir.join(name)))
                .and_then(|f| f.ok())
            {
                Some(file) => {
                    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                    (
                        200,
                        size,
                        request.respond(tiny_http::Response::from_file(file)),
                    )
                }
                None => (
                    404,
                    0,
                    request.respond(
                        tiny_http::Response::from_string("not found\n").with_status_code(404),
                    ),
                ),
            }
        }
        _ => (
            405,
            0,
            request.respond(
                tiny_http::Response::from_string("method not allowed\n").with_status_code(405),
            ),
        ),
    };
    if let Ok(mut log) = log.lock() {
        let outcome = match result {
            Ok(()) => String::new(),
            Err(e) => format!(" (send failed: {e})"),
        };
        let _ = writeln!(log, "{method} {url} {status} {size}{outcome}");
    }
}

/// `installer lab serve-mirror`: bind `listen`, then serve `dir` forever, logging to stderr.
pub fn serve_forever(dir: &Path, listen: &str) -> Result<()> {
    let server = tiny_http::Server::http(listen).map_err(|e| LabError::MirrorListen {
        addr: listen.to_string(),
        reason: e.to_string(),
    })?;
    eprintln!("serving {} on http://{listen}/", dir.display());
    serve(&server, dir, Arc::new(Mutex::new(std::io::stderr())));
    Ok(())
}

/// A port the mirror can listen on at `ip`: [`MIRROR_PORT`] unless something (say a service on
/// `0.0.0.0:8080`) holds it, then the next free one of the following 50.
pub fn free_port(ip: std::net::Ipv4Addr) -> Result<u16> {
    (MIRROR_PORT..MIRROR_PORT + 50)
        .find(|&port| std::net::TcpListener::bind((ip, port)).is_ok())
        .ok_or_else(|| LabError::MirrorListen {
            addr: format!("{ip}:{MIRROR_PORT}-{}", MIRROR_PORT + 49),
            reason: "every port is in use".into(),
        })
}

/// Start the mirror as a detached daemon running `<installer> lab serve-mirror`.
pub fn start_daemon(tools: &Tools, lab: &Lab, installer: &Path, listen: &str) -> Result<u32> {
    let log = mirror_log(lab);
    let pid = sys::spawn_daemon(
        &tools.setsid,
        &[],
        &[
            installer.as_os_str(),
            "lab".as_ref(),
            "serve-mirror".as_ref(),
            "--dir".as_ref(),
            lab.mirror_dir.as_os_str(),
            "--listen".as_ref(),
            listen.as_ref(),
        ],
        &lab.mirror_pid_file(),
        &log,
    )?;
    wait_ready(lab, Some(pid))?;
    Ok(pid)
}

/// Mirrors served by threads of this process, by lab name (test guards use these, so nothing
/// outlives the test process).
fn in_process() -> &'static Mutex<HashMap<String, Arc<tiny_http::Server>>> {
    static SERVERS: OnceLock<Mutex<HashMap<String, Arc<tiny_http::Server>>>> = OnceLock::new();
    SERVERS.get_or_init(Default::default)
}

/// Start the mirror on a thread of this process.
pub fn start_in_process(lab: &Lab, listen: &str) -> Result<()> {
    let server = Arc::new(
        tiny_http::Server::http(listen).map_err(|e| LabError::MirrorListen {
            addr: listen.to_string(),
            reason: e.to_string(),
        })?,
    );
    let log_path = mirror_log(lab);
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| LabError::io("open log", &log_path, e))?;
    let log: Arc<Mutex<dyn Write + Send>> = Arc::new(Mutex::new(log));
    let dir = lab.mirror_dir.clone();
    let thread_server = Arc::clone(&server);
    std::thread::Builder::new()
        .name(format!("lab-mirror-{}", lab.name))
        .spawn(move || serve(&thread_server, &dir, log))
        .map_err(|error| LabError::Spawn {
            program: "mirror thread".into(),
            error,
        })?;
    if let Ok(mut servers) = in_process().lock() {
        servers.insert(lab.name.clone(), server);
    }
    wait_ready(lab, None)
}

/// Stop an in-process mirror of this lab, if this process runs one.
pub fn stop_in_process(name: &str) {
    let server = in_process().lock().ok().and_then(|mut s| s.remove(name));
    if let Some(server) = server {
        server.unblock();
    }
}

/// The mirror's access log.
pub fn mirror_log(lab: &Lab) -> PathBuf {
    lab.log_dir().join("mirror.log")
}

fn wait_ready(lab: &Lab, pid: Option<u32>) -> Result<()> {
    let log = mirror_log(lab);
    let what = format!("artifact mirror at {}", lab.mirror_url);
    match pid {
        Some(pid) => sys::wait_daemon(&what, pid, Duration::from_secs(10), &log, || healthy(lab)),
        None => sys::wait_for(&what, Duration::from_secs(10), &log, || {
            healthy(lab).then_some(())
        }),
    }
}

/// Whether the mirror serves the tarball's side file with the digest the lab recorded.
pub fn healthy(lab: &Lab) -> bool {
    match sys::http_get(&lab.cni_sha256_url(), Duration::from_millis(1000)) {
        Ok((200, body)) => {
            String::from_utf8_lossy(&body).split_whitespace().next() == Some(&lab.cni_sha256)
        }
        _ => false,
    }
}

/// Pid of the lab's mirror daemon if it runs (checked against its command line).
pub fn pid(lab: &Lab) -> Option<u32> {
    let pid = sys::read_pid_file(&lab.mirror_pid_file())?;
    let dir = lab.mirror_dir.to_string_lossy().into_owned();
    (sys::pid_alive(pid)
        && sys::cmdline_contains(pid, "serve-mirror")
        && sys::cmdline_contains(pid, &dir))
    .then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_versions() {
        assert_eq!(version_from_debian("1.1.1+ds1-3+b5"), "v1.1.1-debian");
        assert_eq!(version_from_debian("1:1.4.0-1"), "v1.4.0-debian");
        assert_eq!(version_from_debian("0.9.1~rc1-2"), "v0.9.1-debian");
        assert_eq!(version_from_debian(""), "v0.0.0-debian");
    }

    fn fake_tools(cni_dir: &Path) -> Tools {
        Tools {
            ip: "ip".into(),
            sshd: "sshd".into(),
            ssh_keygen: "ssh-keygen".into(),
            etcd: "etcd".into(),
            nsenter: "nsenter".into(),
            unshare: "unshare".into(),
            setsid: "setsid".into(),
            mount: "mount".into(),
            cni_dir: cni_dir.to_path_buf(),
        }
    }

    #[test]
    fn tarball_is_flat_executable_and_digest_matches_side_file() {
        let src = tempfile::tempdir().unwrap();
        for (i, plugin) in CNI_PLUGINS.iter().enumerate() {
            std::fs::write(src.path().join(plugin), format!("binary {i}")).unwrap();
        }
        let out = tempfile::tempdir().unwrap();
        let name = tarball_name("v9.9.9-debian");
        let digest = build_tarball(&fake_tools(src.path()), out.path(), &name).unwrap();

        let side = std::fs::read_to_string(out.path().join(format!("{name}.sha256"))).unwrap();
        assert_eq!(side, format!("{digest}  {name}\n"));
        assert_eq!(sha256_file(&out.path().join(&name)).unwrap(), digest);

        let gz = flate2::read::GzDecoder::new(File::open(out.path().join(&name)).unwrap());
        let mut archive = tar::Archive::new(gz);
        let mut files = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
            if entry.header().entry_type().is_dir() {
                assert_eq!(path, "./");
                continue;
            }
            assert_eq!(entry.header().mode().unwrap(), 0o755, "{path}");
            let mut body = String::new();
            std::io::Read::read_to_string(&mut entry, &mut body).unwrap();
            files.push((path, body));
        }
        let expected: Vec<(String, String)> = CNI_PLUGINS
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("./{p}"), format!("binary {i}")))
            .collect();
        assert_eq!(files, expected);

        // same inputs, same bytes
        let again = tempfile::tempdir().unwrap();
        let digest2 = build_tarball(&fake_tools(src.path()), again.path(), &name).unwrap();
        assert_eq!(digest, digest2);
    }

    #[test]
    fn server_serves_files_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.tgz"), b"payload").unwrap();
        std::fs::write(dir.path().join(".hidden"), b"no").unwrap();
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let log: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
        let (s, d, l) = (
            Arc::clone(&server),
            dir.path().to_path_buf(),
            Arc::clone(&log) as Arc<Mutex<dyn Write + Send>>,
        );
        let thread = std::thread::spawn(move || serve(&s, &d, l));
        let get = |path: &str| {
            sys::http_get(
                &format!("http://127.0.0.1:{port}{path}"),
                Duration::from_secs(5),
            )
            .unwrap()
        };
        assert_eq!(get("/a.tgz"), (200, b"payload".to_vec()));
        assert_eq!(get("/missing").0, 404);
        assert_eq!(get("/.hidden").0, 404);
        assert_eq!(get("/../etc/passwd").0, 404);
        assert_eq!(get("/%2e%2e/etc/passwd").0, 404);
        server.unblock();
        thread.join().unwrap();
        let log = String::from_utf8(log.lock().unwrap().clone()).unwrap();
        assert!(log.contains("GET /a.tgz 200 7"), "{log}");
    }
}
