//! An operator's `ansible.cfg`: the connection settings that carry over to the installer.
//!
//! Located like Ansible does: `$ANSIBLE_CONFIG` (a file, or a directory holding
//! `ansible.cfg`), then `./ansible.cfg` (skipped when the current directory is world-writable,
//! as Ansible does), then `~/.ansible.cfg`, then `/etc/ansible/ansible.cfg`; the first that
//! exists is the only one read. `ANSIBLE_*` environment variables override the file.

use std::path::{Path, PathBuf};

use ini::{Ini, ParseOption};
use thiserror::Error;

/// A problem with the Ansible configuration.
#[derive(Debug, Error)]
pub enum AnsibleCfgError {
    /// The file exists but could not be read.
    #[error("cannot read Ansible config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not INI.
    #[error("Ansible config {path}: {source} (fix the file or point ANSIBLE_CONFIG elsewhere)")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        source: ini::ParseError,
    },
    /// A setting has a value of the wrong kind.
    #[error("{origin}: {key} = {value:?}: {expected}")]
    Value {
        /// The file or environment variable it came from.
        origin: String,
        /// The setting.
        key: String,
        /// The offending value.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
}

/// The `ansible.cfg` settings the installer honours; `None` = not set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnsibleCfg {
    /// The file these came from, if any.
    pub path: Option<PathBuf>,
    /// `[defaults] forks`.
    pub forks: Option<usize>,
    /// `[defaults] remote_user`.
    pub remote_user: Option<String>,
    /// `[defaults] remote_port`.
    pub remote_port: Option<u16>,
    /// `[defaults] private_key_file` (with `~` unexpanded).
    pub private_key_file: Option<String>,
    /// `[defaults] host_key_checking`.
    pub host_key_checking: Option<bool>,
    /// `[defaults] timeout` (SSH connect timeout, seconds).
    pub timeout: Option<u64>,
    /// `[privilege_escalation] become`.
    pub become_: Option<bool>,
    /// `[privilege_escalation] become_method`.
    pub become_method: Option<String>,
    /// `[privilege_escalation] become_user`.
    pub become_user: Option<String>,
}

/// Ansible's boolean spelling (`yes/on/true/1/y/t` and their opposites, any case).
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "yes" | "on" | "true" | "1" | "y" | "t" | "1.0" => Some(true),
        "no" | "off" | "false" | "0" | "n" | "f" | "0.0" | "" => Some(false),
        _ => None,
    }
}

impl AnsibleCfg {
    /// Find the configuration file Ansible would use, if any.
    pub fn locate(home: Option<&Path>) -> Option<PathBuf> {
        if let Some(v) = std::env::var_os("ANSIBLE_CONFIG") {
            let p = PathBuf::from(v);
            let p = if p.is_dir() { p.join("ansible.cfg") } else { p };
            if p.is_file() {
                return Some(p);
            }
        }
        if let Ok(cwd) = std::env::current_dir() {
            let p = cwd.join("ansible.cfg");
            if p.is_file() && !world_writable(&cwd) {
                return Some(p);
            }
        }
        if let Some(h) = home {
            let p = h.join(".ansible.cfg");
            if p.is_file() {
                return Some(p);
            }
        }
        let p = PathBuf::from("/etc/ansible/ansible.cfg");
        p.is_file().then_some(p)
    }

    /// Locate and read the configuration, then apply `ANSIBLE_*` environment overrides.
    pub fn load(home: Option<&Path>) -> Result<Self, AnsibleCfgError> {
        let mut cfg = match Self::locate(home) {
            Some(p) => Self::load_file(&p)?,
            None => Self::default(),
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        Ok(cfg)
    }

    /// Read one file.
    pub fn load_file(path: &Path) -> Result<Self, AnsibleCfgError> {
        let text = std::fs::read_to_string(path).map_err(|source| AnsibleCfgError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parse configuration text (`path` is used in messages and recorded in [`Self::path`]).
    pub fn parse(text: &str, path: &Path) -> Result<Self, AnsibleCfgError> {
        let opt = ParseOption {
            enabled_quote: false,
            enabled_escape: false,
            enabled_indented_mutiline_value: true,
            enabled_preserve_key_leading_whitespace: false,
        };
        let ini = Ini::load_from_str_opt(text, opt).map_err(|source| AnsibleCfgError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        let origin = path.display().to_string();
        let get = |section: &str, key: &str| -> Option<String> {
            ini.section(Some(section))
                .and_then(|s| s.get(key))
                .map(|v| strip_inline_comment(v).to_string())
                .filter(|v| !v.is_empty())
        };
        let mut cfg = AnsibleCfg {
            path: Some(path.to_path_buf()),
            ..Default::default()
        };
        let mut set = |key: &str, value: Option<String>| -> Result<(), AnsibleCfgError> {
            match value {
                Some(v) => cfg.set(key, &v, &origin),
                None => Ok(()),
            }
        };
        for key in [
            "forks",
            "remote_user",
            "remote_port",
            "private_key_file",
            "host_key_checking",
            "timeout",
        ] {
            set(key, get("defaults", key))?;
        }
        for key in ["become", "become_method", "become_user"] {
            set(key, get("privilege_escalation", key))?;
        }
        Ok(cfg)
    }

    /// Apply Ansible's environment overrides (`ANSIBLE_FORKS`, `ANSIBLE_REMOTE_USER`,
    /// `ANSIBLE_REMOTE_PORT`, `ANSIBLE_PRIVATE_KEY_FILE`, `ANSIBLE_HOST_KEY_CHECKING`,
    /// `ANSIBLE_TIMEOUT`, `ANSIBLE_BECOME`, `ANSIBLE_BECOME_METHOD`, `ANSIBLE_BECOME_USER`).
    pub fn apply_env(
        &mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), AnsibleCfgError> {
        for key in [
            "forks",
            "remote_user",
            "remote_port",
            "private_key_file",
            "host_key_checking",
            "timeout",
            "become",
            "become_method",
            "become_user",
        ] {
            let var = format!("ANSIBLE_{}", key.to_ascii_uppercase());
            if let Some(v) = env(&var).filter(|v| !v.is_empty()) {
                self.set(key, &v, &format!("environment variable {var}"))?;
            }
        }
        Ok(())
    }

    fn set(&mut self, key: &str, value: &str, origin: &str) -> Result<(), AnsibleCfgError> {
        let bad = |expected| AnsibleCfgError::Value {
            origin: origin.to_string(),
            key: key.to_string(),
            value: value.to_string(),
            expected,
        };
        let value = value.trim();
        match key {
            "forks" => {
                self.forks = Some(
                    value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad("expected a positive whole number"))?,
                )
            }
            "remote_port" => {
                self.remote_port = Some(value.parse().map_err(|_| bad("expected a port number"))?)
            }
            "timeout" => self.timeout = Some(value.parse().map_err(|_| bad("expected seconds"))?),
            "host_key_checking" => {
                self.host_key_checking =
                    Some(parse_bool(value).ok_or_else(|| bad("expected True or False"))?)
            }
            "become" => {
                self.become_ = Some(parse_bool(value).ok_or_else(|| bad("expected True or False"))?)
            }
            "remote_user" => self.remote_user = Some(value.to_string()),
            "private_key_file" => self.private_key_file = Some(value.to_string()),
            "become_method" => self.become_method = Some(value.to_string()),
            "become_user" => self.become_user = Some(value.to_string()),
            _ => {}
        }
        Ok(())
    }
}

/// Python's configparser as Ansible configures it treats `;` after whitespace as a comment.
fn strip_inline_comment(v: &str) -> &str {
    let mut prev_ws = false;
    for (i, c) in v.char_indices() {
        if (c == ';' || c == '#') && prev_ws {
            return v[..i].trim_end();
        }
        prev_ws = c.is_whitespace();
    }
    v.trim()
}

fn world_writable(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(dir)
        .map(|m| m.permissions().mode() & 0o002 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_connection_settings() {
        let cfg = AnsibleCfg::parse(
            "# comment\n[defaults]\nforks = 20\nremote_user=deploy\n\
             private_key_file = ~/.ssh/kubeasz ; inline\nhost_key_checking = False\ntimeout = 7\n\
             inventory = /etc/ansible/hosts\n\n[privilege_escalation]\nbecome = yes\nbecome_user = root\n\
             [ssh_connection]\npipelining = True\n",
            Path::new("/x/ansible.cfg"),
        )
        .unwrap();
        assert_eq!(cfg.forks, Some(20));
        assert_eq!(cfg.remote_user.as_deref(), Some("deploy"));
        assert_eq!(cfg.private_key_file.as_deref(), Some("~/.ssh/kubeasz"));
        assert_eq!(cfg.host_key_checking, Some(false));
        assert_eq!(cfg.timeout, Some(7));
        assert_eq!(cfg.become_, Some(true));
        assert_eq!(cfg.become_user.as_deref(), Some("root"));
        assert_eq!(cfg.path.as_deref(), Some(Path::new("/x/ansible.cfg")));
    }

    #[test]
    fn bad_value_names_file_and_key() {
        let err = AnsibleCfg::parse("[defaults]\nforks = many\n", Path::new("/a.cfg")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/a.cfg") && msg.contains("forks") && msg.contains("many"),
            "{msg}"
        );
    }

    #[test]
    fn env_overrides_file() {
        let mut cfg =
            AnsibleCfg::parse("[defaults]\nforks = 5\nremote_user = a\n", Path::new("c")).unwrap();
        cfg.apply_env(|k| match k {
            "ANSIBLE_FORKS" => Some("9".into()),
            "ANSIBLE_HOST_KEY_CHECKING" => Some("no".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(cfg.forks, Some(9));
        assert_eq!(cfg.remote_user.as_deref(), Some("a"));
        assert_eq!(cfg.host_key_checking, Some(false));
    }

    #[test]
    fn load_file_reads_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ansible.cfg");
        std::fs::write(&p, "[defaults]\nremote_user = viafile\n").unwrap();
        let cfg = AnsibleCfg::load_file(&p).unwrap();
        assert_eq!(cfg.remote_user.as_deref(), Some("viafile"));
    }

    #[test]
    fn booleans_like_ansible() {
        for t in ["yes", "True", "ON", "1", "y"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["no", "FALSE", "off", "0", "n"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_bool("maybe"), None);
    }
}
