//! Opening an authenticated, host-key-checked SSH session to one host (ssh2 / libssh2).
//!
//! Order of events: resolve, TCP connect with the spec's timeout, SSH handshake (asking the
//! server for the key types already recorded in known_hosts first), host key check, then
//! authentication with the spec's key files, then every ssh-agent identity, then the password
//! (plain `password`, then `keyboard-interactive` answering with the same password).
//!
//! A TCP or handshake failure is retried once after a short pause; authentication and host key
//! failures are not (retrying cannot fix them). TCP, handshake and authentication failures
//! make a host *unreachable* (as in Ansible's recap); a refused host key makes it *failed*.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ssh2::{KeyboardInteractivePrompt, MethodType, Prompt, Session};
use thiserror::Error;

use super::conn::ConnectionSpec;
use super::known_hosts::{HostKeyError, HostKeyPolicy, HostKeyVerdict, KnownHosts};

/// How to check hosts and how patiently to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The known_hosts files.
    pub known_hosts: Arc<KnownHosts>,
    /// What to do with unknown keys.
    pub policy: HostKeyPolicy,
    /// Pause before the single retry of a failed TCP connect or handshake.
    pub retry_delay: Duration,
    /// Try the identities of an ssh-agent.
    pub use_agent: bool,
    /// The agent's socket; `None` = `$SSH_AUTH_SOCK`.
    pub agent_socket: Option<std::path::PathBuf>,
}

impl ConnectOptions {
    /// Defaults: the given known_hosts and policy, 1 s retry pause, agent enabled.
    pub fn new(known_hosts: Arc<KnownHosts>, policy: HostKeyPolicy) -> Self {
        ConnectOptions {
            known_hosts,
            policy,
            retry_delay: Duration::from_secs(1),
            use_agent: true,
            agent_socket: None,
        }
    }
}

/// Why a session could not be opened.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// The address did not resolve.
    #[error("cannot resolve {address}:{port}: {message} (check ansible_host / the inventory name)")]
    Resolve {
        /// Address as configured.
        address: String,
        /// Port.
        port: u16,
        /// Resolver message.
        message: String,
    },
    /// TCP connect failed or timed out.
    #[error(
        "cannot connect to {addr}: {source} (is the host up and sshd listening on that port? timeout {timeout_s}s)"
    )]
    Tcp {
        /// Socket address tried.
        addr: String,
        /// OS error.
        source: std::io::Error,
        /// Timeout used, seconds.
        timeout_s: u64,
    },
    /// The SSH protocol handshake failed.
    #[error("SSH handshake with {addr} failed: {source}")]
    Handshake {
        /// Socket address.
        addr: String,
        /// libssh2 error.
        source: ssh2::Error,
    },
    /// The host key was refused.
    #[error(transparent)]
    HostKey(#[from] HostKeyError),
    /// No authentication method worked.
    #[error(
        "authentication as {user} failed; tried: {tried}. Check ansible_user, ansible_ssh_private_key_file \
         (or ansible.cfg private_key_file / ~/.ssh/config IdentityFile), the ssh-agent, or ansible_password"
    )]
    Auth {
        /// Login user.
        user: String,
        /// What was tried, with each failure.
        tried: String,
    },
    /// Another libssh2 failure after the handshake.
    #[error("SSH error while {doing}: {source}")]
    Ssh {
        /// What we were doing.
        doing: &'static str,
        /// libssh2 error.
        source: ssh2::Error,
    },
}

impl ConnectError {
    /// True for errors Ansible reports as UNREACHABLE (network, handshake, authentication).
    pub fn is_unreachable(&self) -> bool {
        !matches!(self, ConnectError::HostKey(_))
    }

    fn retryable(&self) -> bool {
        matches!(
            self,
            ConnectError::Tcp { .. }
                | ConnectError::Handshake { .. }
                | ConnectError::Resolve { .. }
        )
    }
}

/// Connect and authenticate, retrying once on a TCP/handshake failure. Also says what the
/// host key check did (so a newly recorded key can be reported).
pub fn connect(
    spec: &ConnectionSpec,
    opts: &ConnectOptions,
) -> Result<(Session, HostKeyVerdict), ConnectError> {
    match connect_once(spec, opts) {
        Err(e) if e.retryable() => {
            std::thread::sleep(opts.retry_delay);
            connect_once(spec, opts)
        }
        other => other,
    }
}

fn tcp_connect(spec: &ConnectionSpec) -> Result<(TcpStream, SocketAddr), ConnectError> {
    let addrs: Vec<SocketAddr> = (spec.address.as_str(), spec.port)
        .to_socket_addrs()
        .map_err(|e| ConnectError::Resolve {
            address: spec.address.clone(),
            port: spec.port,
            message: e.to_string(),
        })?
        .collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, spec.connect_timeout) {
            Ok(s) => return Ok((s, addr)),
            Err(e) => last = Some((addr, e)),
        }
    }
    let (addr, source) = last.unwrap_or_else(|| {
        (
            SocketAddr::from(([0, 0, 0, 0], spec.port)),
            std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
        )
    });
    Err(ConnectError::Tcp {
        addr: addr.to_string(),
        source,
        timeout_s: spec.connect_timeout.as_secs(),
    })
}

/// Ask for the recorded key types first, so the check compares like with like.
fn prefer_known_host_key_types(sess: &Session, known: &[String]) {
    if known.is_empty() {
        return;
    }
    let Ok(supported) = sess.supported_algs(MethodType::HostKey) else {
        return;
    };
    let mut prefs: Vec<&str> = Vec::new();
    for t in known {
        let algs: Vec<&str> = match t.as_str() {
            "ssh-rsa" => vec!["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
            other => vec![other],
        };
        for a in &algs {
            if let Some(s) = supported.iter().find(|s| **s == *a)
                && !prefs.contains(s)
            {
                prefs.push(s);
            }
        }
    }
    if prefs.is_empty() {
        return;
    }
    for s in &supported {
        if !prefs.contains(s) {
            prefs.push(s);
        }
    }
    // Best effort: if libssh2 rejects the list we keep its default order.
    let _ = sess.method_pref(MethodType::HostKey, &prefs.join(","));
}

/// Ciphers libssh2 runs through OpenSSL's AES (hardware-accelerated on x86-64 and arm64)
/// before its own portable ChaCha20-Poly1305, which costs several times more CPU per byte:
/// uploads are most of what a first run sends.
const FAST_CIPHERS: [&str; 4] = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
];

/// Offer the AES ciphers first in both directions; every other cipher libssh2 supports stays
/// offered after them, so servers without AES still connect.
fn prefer_hardware_ciphers(sess: &Session) {
    for method in [MethodType::CryptCs, MethodType::CryptSc] {
        let Ok(supported) = sess.supported_algs(method) else {
            continue;
        };
        let fast = FAST_CIPHERS.iter().filter(|c| supported.contains(c));
        let rest = supported.iter().filter(|c| !FAST_CIPHERS.contains(c));
        let prefs: Vec<&str> = fast.chain(rest).copied().collect();
        // Best effort: if libssh2 rejects the list it keeps its default order.
        let _ = sess.method_pref(method, &prefs.join(","));
    }
}

struct PasswordPrompt<'a>(&'a str);

impl KeyboardInteractivePrompt for PasswordPrompt<'_> {
    fn prompt<'b>(&mut self, _user: &str, _instr: &str, prompts: &[Prompt<'b>]) -> Vec<String> {
        prompts.iter().map(|_| self.0.to_string()).collect()
    }
}

fn authenticate(
    sess: &Session,
    spec: &ConnectionSpec,
    opts: &ConnectOptions,
) -> Result<(), ConnectError> {
    let user = spec.user.as_str();
    let mut tried: Vec<String> = Vec::new();
    for key in &spec.key_files {
        if !Path::new(key).is_file() {
            continue;
        }
        match sess.userauth_pubkey_file(user, None, key, None) {
            Ok(()) if sess.authenticated() => return Ok(()),
            Ok(()) => tried.push(format!("key {} (not accepted)", key.display())),
            Err(e) => tried.push(format!("key {} ({})", key.display(), e.message())),
        }
    }
    let agent_socket = opts
        .agent_socket
        .clone()
        .or_else(|| std::env::var_os("SSH_AUTH_SOCK").map(Into::into));
    if opts.use_agent
        && let Some(socket) = agent_socket
    {
        match try_agent(sess, user, &socket) {
            Ok(true) => return Ok(()),
            Ok(false) => tried.push("ssh-agent (no identity accepted)".into()),
            Err(e) => tried.push(format!("ssh-agent ({})", e.message())),
        }
    }
    if let Some(pw) = &spec.password {
        match sess.userauth_password(user, pw.expose()) {
            Ok(()) if sess.authenticated() => return Ok(()),
            Ok(()) => tried.push("password (not accepted)".into()),
            Err(e) => tried.push(format!("password ({})", e.message())),
        }
        let mut prompt = PasswordPrompt(pw.expose());
        match sess.userauth_keyboard_interactive(user, &mut prompt) {
            Ok(()) if sess.authenticated() => return Ok(()),
            Ok(()) => tried.push("keyboard-interactive (not accepted)".into()),
            Err(e) => tried.push(format!("keyboard-interactive ({})", e.message())),
        }
    }
    if tried.is_empty() {
        tried.push("nothing: no key file exists, no ssh-agent, no password".into());
    }
    Err(ConnectError::Auth {
        user: user.to_string(),
        tried: tried.join("; "),
    })
}

fn try_agent(sess: &Session, user: &str, socket: &Path) -> Result<bool, ssh2::Error> {
    let mut agent = sess.agent()?;
    agent.set_identity_path(socket)?;
    agent.connect()?;
    agent.list_identities()?;
    for id in agent.identities()? {
        if agent.userauth(user, &id).is_ok() && sess.authenticated() {
            let _ = agent.disconnect();
            return Ok(true);
        }
    }
    let _ = agent.disconnect();
    Ok(false)
}

fn connect_once(
    spec: &ConnectionSpec,
    opts: &ConnectOptions,
) -> Result<(Session, HostKeyVerdict), ConnectError> {
    let (tcp, addr) = tcp_connect(spec)?;
    let addr = addr.to_string();
    let ssh = |doing, source| ConnectError::Ssh { doing, source };
    let mut sess = Session::new().map_err(|e| ssh("creating a session", e))?;
    let timeout_ms = u32::try_from(spec.connect_timeout.as_millis())
        .unwrap_or(u32::MAX)
        .max(1);
    sess.set_timeout(timeout_ms);
    if opts.policy != HostKeyPolicy::Off {
        let known = opts.known_hosts.known_key_types(&spec.address, spec.port);
        prefer_known_host_key_types(&sess, &known);
    }
    prefer_hardware_ciphers(&sess);
    sess.set_tcp_stream(tcp);
    sess.handshake().map_err(|source| ConnectError::Handshake {
        addr: addr.clone(),
        source,
    })?;
    let (blob, _) = sess.host_key().ok_or_else(|| ConnectError::Handshake {
        addr: addr.clone(),
        source: ssh2::Error::new(ssh2::ErrorCode::Session(-14), "the server sent no host key"),
    })?;
    let verdict = opts
        .known_hosts
        .verify(&spec.address, spec.port, blob, opts.policy)?;
    authenticate(&sess, spec, opts)?;
    // Commands may legitimately run for a long time: no per-call timeout once connected.
    sess.set_timeout(0);
    Ok((sess, verdict))
}
