//! Host key verification against OpenSSH `known_hosts` files, with our own parser.
//!
//! Supported: plain and hashed (`|1|salt|hmac`) host fields, comma lists, `*`/`?`/`!`
//! patterns, `[host]:port` for ports other than 22, `@revoked` (a matching revoked key is
//! refused) and `@cert-authority` (skipped: we do not use host certificates). Unparseable lines
//! are skipped like OpenSSH does. Keys we record are appended in plain form to the user file,
//! which is created with mode 0600 (its directory 0700) when missing.
//!
//! When only keys of *other* types are known for a host, the offered key counts as unknown
//! (OpenSSH does the same); the session asks the server for the known types first, so this
//! only happens when the server no longer has that key type.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::pattern::{ListMatch, match_list};

/// What to do with a host key that is not in known_hosts (`--host-key-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum HostKeyPolicy {
    /// Refuse hosts whose key is not already known.
    Strict,
    /// Record unknown keys (like `StrictHostKeyChecking=accept-new`); refuse changed keys.
    #[default]
    AcceptNew,
    /// Do not check host keys at all.
    Off,
}

impl std::fmt::Display for HostKeyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HostKeyPolicy::Strict => "strict",
            HostKeyPolicy::AcceptNew => "accept-new",
            HostKeyPolicy::Off => "off",
        })
    }
}

/// A host key was not accepted.
#[derive(Debug, Error)]
pub enum HostKeyError {
    /// Strict policy and the key is not known.
    #[error(
        "host key for {name} is not known ({key_type} {fingerprint}) and --host-key-policy is strict; \
         add it to {file} (for example `ssh-keyscan -p PORT HOST >> {file}` after checking the fingerprint) \
         or use --host-key-policy accept-new"
    )]
    Unknown {
        /// Host name as looked up (`host` or `[host]:port`).
        name: String,
        /// Offered key type.
        key_type: String,
        /// Offered key fingerprint.
        fingerprint: String,
        /// The user known_hosts file.
        file: PathBuf,
    },
    /// The host presented a different key than the one recorded.
    #[error("{0}")]
    Changed(Box<ChangedKey>),
    /// The key is marked `@revoked`.
    #[error(
        "host key {fingerprint} for {name} is marked @revoked in {file}:{line}; refusing to connect"
    )]
    Revoked {
        /// Host name as looked up.
        name: String,
        /// Offered key fingerprint.
        fingerprint: String,
        /// File holding the marker.
        file: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// The key blob from the server is malformed.
    #[error("host {name} sent a malformed host key")]
    BadKey {
        /// Host name as looked up.
        name: String,
    },
    /// Recording a new key failed.
    #[error(
        "cannot record the host key for {name} in {file}: {source} (check permissions or pass --known-hosts FILE)"
    )]
    Write {
        /// Host name as looked up.
        name: String,
        /// The known_hosts file.
        file: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Details of a changed host key: both fingerprints and where the old one is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedKey {
    /// Host name as looked up (`host` or `[host]:port`).
    pub name: String,
    /// Offered key type.
    pub key_type: String,
    /// Offered key fingerprint.
    pub offered: String,
    /// Recorded key fingerprint.
    pub known: String,
    /// File holding the recorded key.
    pub file: PathBuf,
    /// 1-based line of the recorded key.
    pub line: usize,
}

impl std::fmt::Display for ChangedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ChangedKey {
            name,
            key_type,
            offered,
            known,
            file,
            line,
        } = self;
        let file = file.display();
        write!(
            f,
            "HOST KEY CHANGED for {name}: the server offered {key_type} {offered}, but {file}:{line} \
             records {known}. This could be a man-in-the-middle attack, or the host was reinstalled. \
             If you know why it changed, remove the old key with `ssh-keygen -f {file} -R '{name}'` \
             and run again (or use --host-key-policy off)"
        )
    }
}

/// Outcome of a successful check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyVerdict {
    /// The key was already known.
    Known,
    /// The key was new and has been appended to the file (accept-new).
    Recorded {
        /// Fingerprint of the recorded key.
        fingerprint: String,
        /// File it was written to.
        file: PathBuf,
    },
    /// Checking is off.
    NotChecked,
}

/// The known_hosts files used for verification: one user file (read and appended to) and any
/// number of read-only files (such as `/etc/ssh/ssh_known_hosts`).
#[derive(Debug)]
pub struct KnownHosts {
    user_file: PathBuf,
    read_only: Vec<PathBuf>,
    lock: Mutex<()>,
}

/// One parsed known_hosts line.
#[derive(Debug, Clone)]
struct Line {
    marker: Option<String>,
    hosts: String,
    key_type: String,
    blob: Vec<u8>,
    line: usize,
}

/// OpenSSH's SHA256 fingerprint of a public key blob: `SHA256:` + unpadded base64.
pub fn fingerprint_sha256(blob: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(blob)))
}

/// The key type name inside an SSH public key blob (`ssh-ed25519`, `ssh-rsa`, ...).
pub fn blob_key_type(blob: &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let name = blob.get(4..4usize.checked_add(len)?)?;
    String::from_utf8(name.to_vec()).ok()
}

/// The name known_hosts uses for `host:port` (`host` for 22, `[host]:port` otherwise).
pub fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

fn hashed_match(field: &str, name: &str) -> bool {
    let mut parts = field.split('|');
    let (Some(""), Some("1"), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

fn host_field_matches(field: &str, name: &str) -> bool {
    if field.starts_with("|1|") {
        return hashed_match(field, name);
    }
    match_list(name, field.split(',')) == ListMatch::Yes
}

fn parse_lines(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next();
        let marker = match first {
            Some(m) if m.starts_with('@') => {
                first = fields.next();
                Some(m.to_string())
            }
            _ => None,
        };
        let (Some(hosts), Some(key_type), Some(b64)) = (first, fields.next(), fields.next()) else {
            continue;
        };
        let Ok(blob) = STANDARD.decode(b64) else {
            continue;
        };
        out.push(Line {
            marker,
            hosts: hosts.to_string(),
            key_type: key_type.to_string(),
            blob,
            line: idx + 1,
        });
    }
    out
}

impl KnownHosts {
    /// Use `user_file` (created on first recorded key) plus the system file
    /// `/etc/ssh/ssh_known_hosts` read-only.
    pub fn new(user_file: impl Into<PathBuf>) -> Self {
        Self::with_files(user_file, vec![PathBuf::from("/etc/ssh/ssh_known_hosts")])
    }

    /// Use `user_file` plus the given read-only files.
    pub fn with_files(user_file: impl Into<PathBuf>, read_only: Vec<PathBuf>) -> Self {
        KnownHosts {
            user_file: user_file.into(),
            read_only,
            lock: Mutex::new(()),
        }
    }

    /// `~/.ssh/known_hosts` for the home directory `home`.
    pub fn default_user_file(home: &Path) -> PathBuf {
        home.join(".ssh/known_hosts")
    }

    /// The file new keys are written to.
    pub fn user_file(&self) -> &Path {
        &self.user_file
    }

    fn entries_for(&self, name: &str) -> Vec<(PathBuf, Line)> {
        let mut out = Vec::new();
        for file in std::iter::once(&self.user_file).chain(&self.read_only) {
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            for l in parse_lines(&text) {
                if host_field_matches(&l.hosts, name) {
                    out.push((file.clone(), l));
                }
            }
        }
        out
    }

    /// Key types recorded for `host:port`, to ask the server for those first.
    pub fn known_key_types(&self, host: &str, port: u16) -> Vec<String> {
        let mut types: Vec<String> = Vec::new();
        for (_, l) in self.entries_for(&lookup_name(host, port)) {
            if l.marker.is_none() && !types.contains(&l.key_type) {
                types.push(l.key_type);
            }
        }
        types
    }

    /// Check the key `blob` offered by `host:port` under `policy`, recording it when new and
    /// the policy is accept-new.
    pub fn verify(
        &self,
        host: &str,
        port: u16,
        blob: &[u8],
        policy: HostKeyPolicy,
    ) -> Result<HostKeyVerdict, HostKeyError> {
        if policy == HostKeyPolicy::Off {
            return Ok(HostKeyVerdict::NotChecked);
        }
        let name = lookup_name(host, port);
        let key_type =
            blob_key_type(blob).ok_or_else(|| HostKeyError::BadKey { name: name.clone() })?;
        let fingerprint = fingerprint_sha256(blob);
        // Serialise check-and-append so two threads never record the same host twice.
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let entries = self.entries_for(&name);
        for (file, l) in &entries {
            match l.marker.as_deref() {
                Some("@revoked") if l.blob == blob => {
                    return Err(HostKeyError::Revoked {
                        name,
                        fingerprint,
                        file: file.clone(),
                        line: l.line,
                    });
                }
                _ => {}
            }
        }
        let plain = entries.iter().filter(|(_, l)| l.marker.is_none());
        if plain.clone().any(|(_, l)| l.blob == blob) {
            return Ok(HostKeyVerdict::Known);
        }
        if let Some((file, l)) = plain.clone().find(|(_, l)| l.key_type == key_type) {
            return Err(HostKeyError::Changed(Box::new(ChangedKey {
                name,
                key_type,
                offered: fingerprint,
                known: fingerprint_sha256(&l.blob),
                file: file.clone(),
                line: l.line,
            })));
        }
        if policy == HostKeyPolicy::Strict {
            return Err(HostKeyError::Unknown {
                name,
                key_type,
                fingerprint,
                file: self.user_file.clone(),
            });
        }
        self.append(&name, &key_type, blob)
            .map_err(|source| HostKeyError::Write {
                name,
                file: self.user_file.clone(),
                source,
            })?;
        Ok(HostKeyVerdict::Recorded {
            fingerprint,
            file: self.user_file.clone(),
        })
    }

    fn append(&self, name: &str, key_type: &str, blob: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = self.user_file.parent();
        if let Some(dir) = dir.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.user_file)?;
        // Make sure we start on a fresh line even if the file lacks a final newline.
        let len = f.metadata()?.len();
        let needs_nl = len > 0 && {
            let text = std::fs::read(&self.user_file)?;
            text.last() != Some(&b'\n')
        };
        let line = format!(
            "{}{} {} {}\n",
            if needs_nl { "\n" } else { "" },
            name,
            key_type,
            STANDARD.encode(blob)
        );
        f.write_all(line.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A syntactically valid ed25519 public key blob with the given 32 key bytes.
    fn ed25519_blob(fill: u8) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&11u32.to_be_bytes());
        b.extend_from_slice(b"ssh-ed25519");
        b.extend_from_slice(&32u32.to_be_bytes());
        b.extend_from_slice(&[fill; 32]);
        b
    }

    fn hashed(name: &str, salt: &[u8]) -> String {
        let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(salt).unwrap();
        mac.update(name.as_bytes());
        format!(
            "|1|{}|{}",
            STANDARD.encode(salt),
            STANDARD.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn fingerprint_format_matches_openssh() {
        // ssh-keygen -lf prints SHA256 fingerprints as unpadded base64 of 32 bytes: 43 chars.
        let fp = fingerprint_sha256(&ed25519_blob(1));
        assert!(fp.starts_with("SHA256:"));
        assert_eq!(fp.len(), 7 + 43);
        assert!(!fp.ends_with('='));
        assert_eq!(
            blob_key_type(&ed25519_blob(1)).as_deref(),
            Some("ssh-ed25519")
        );
    }

    #[test]
    fn plain_hashed_port_and_negation() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("known_hosts");
        let k1 = STANDARD.encode(ed25519_blob(1));
        let k2 = STANDARD.encode(ed25519_blob(2));
        let k3 = STANDARD.encode(ed25519_blob(3));
        std::fs::write(
            &f,
            format!(
                "# c\nnode1,10.0.0.1 ssh-ed25519 {k1} comment\n{} ssh-ed25519 {k2}\n\
                 [10.0.0.3]:2222 ssh-ed25519 {k3}\n*.lab,!bad.lab ssh-ed25519 {k1}\ngarbage line\n",
                hashed("secret-host", b"0123456789abcdefghij")
            ),
        )
        .unwrap();
        let kh = KnownHosts::with_files(&f, vec![]);
        let ok = |h: &str, p: u16, b: &[u8]| kh.verify(h, p, b, HostKeyPolicy::Strict);
        assert_eq!(
            ok("node1", 22, &ed25519_blob(1)).unwrap(),
            HostKeyVerdict::Known
        );
        assert_eq!(
            ok("10.0.0.1", 22, &ed25519_blob(1)).unwrap(),
            HostKeyVerdict::Known
        );
        assert_eq!(
            ok("secret-host", 22, &ed25519_blob(2)).unwrap(),
            HostKeyVerdict::Known
        );
        assert_eq!(
            ok("10.0.0.3", 2222, &ed25519_blob(3)).unwrap(),
            HostKeyVerdict::Known
        );
        assert!(matches!(
            ok("10.0.0.3", 22, &ed25519_blob(3)),
            Err(HostKeyError::Unknown { .. })
        ));
        assert_eq!(
            ok("a.lab", 22, &ed25519_blob(1)).unwrap(),
            HostKeyVerdict::Known
        );
        assert!(matches!(
            ok("bad.lab", 22, &ed25519_blob(1)),
            Err(HostKeyError::Unknown { .. })
        ));
        match ok("node1", 22, &ed25519_blob(9)) {
            Err(HostKeyError::Changed(c)) => {
                assert_eq!(c.line, 2);
                assert_eq!(c.known, fingerprint_sha256(&ed25519_blob(1)));
                assert_eq!(c.offered, fingerprint_sha256(&ed25519_blob(9)));
            }
            other => panic!("expected Changed, got {other:?}"),
        }
        assert_eq!(
            kh.known_key_types("node1", 22),
            vec!["ssh-ed25519".to_string()]
        );
    }

    #[test]
    fn accept_new_records_in_new_private_file_and_then_knows_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sub/known_hosts");
        let kh = KnownHosts::with_files(&f, vec![]);
        let v = kh
            .verify(
                "127.0.0.1",
                2022,
                &ed25519_blob(5),
                HostKeyPolicy::AcceptNew,
            )
            .unwrap();
        assert!(matches!(v, HostKeyVerdict::Recorded { .. }));
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.starts_with("[127.0.0.1]:2022 ssh-ed25519 "), "{text}");
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let v = kh
            .verify("127.0.0.1", 2022, &ed25519_blob(5), HostKeyPolicy::Strict)
            .unwrap();
        assert_eq!(v, HostKeyVerdict::Known);
        assert!(
            kh.verify(
                "127.0.0.1",
                2022,
                &ed25519_blob(6),
                HostKeyPolicy::AcceptNew
            )
            .is_err()
        );
        assert_eq!(
            kh.verify("127.0.0.1", 2022, &ed25519_blob(6), HostKeyPolicy::Off)
                .unwrap(),
            HostKeyVerdict::NotChecked
        );
    }

    #[test]
    fn revoked_and_cert_authority_markers() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("kh");
        let k1 = STANDARD.encode(ed25519_blob(1));
        std::fs::write(
            &f,
            format!("@cert-authority * ssh-ed25519 {k1}\n@revoked h1 ssh-ed25519 {k1}\n"),
        )
        .unwrap();
        let kh = KnownHosts::with_files(&f, vec![]);
        assert!(matches!(
            kh.verify("h1", 22, &ed25519_blob(1), HostKeyPolicy::AcceptNew),
            Err(HostKeyError::Revoked { line: 2, .. })
        ));
        // A CA line is not a host key: h2 is unknown.
        assert!(matches!(
            kh.verify("h2", 22, &ed25519_blob(1), HostKeyPolicy::Strict),
            Err(HostKeyError::Unknown { .. })
        ));
    }
}
