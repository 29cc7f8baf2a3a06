//! Connection settings for one host: Ansible's connection variables, `ansible.cfg` and
//! `~/.ssh/config` merged into a [`ConnectionSpec`].
//!
//! Precedence (highest first), matching what `ansible -c ssh` ends up doing:
//! 1. the host's variables; when several aliases are set the later one in Ansible's list wins
//!    (`ansible_ssh_host` beats `ansible_host`, `ansible_ssh_port` beats `ansible_port`, ...);
//! 2. `ansible.cfg` / `ANSIBLE_*` (`remote_user`, `remote_port`, `private_key_file`, `timeout`,
//!    `[privilege_escalation]`);
//! 3. `~/.ssh/config` for the name given to ssh (`ansible_host` or the inventory name):
//!    `HostName` replaces the address, then `User`, `Port`, `IdentityFile`, `ConnectTimeout`;
//! 4. defaults: port 22, the local user, `~/.ssh/id_{ed25519,ecdsa,rsa}` when no key is named,
//!    10 s connect timeout.
//!
//! Privilege escalation: `ansible_become` decides; when it is not set anywhere the installer
//! becomes root whenever the login user is not root (every kubeasz step needs root). Only
//! `sudo` is supported. Nothing is escalated when the login user already is the become user.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;
use thiserror::Error;

use super::ansible_cfg::{AnsibleCfg, AnsibleCfgError, parse_bool};
use super::known_hosts::HostKeyPolicy;
use super::ssh_config::{SshConfig, SshConfigError, TokenContext, expand_home, expand_tokens};

/// Default number of hosts handled at once (`--forks`).
pub const DEFAULT_FORKS: usize = 50;
/// Default TCP connect / SSH handshake timeout (Ansible's `timeout`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A value that must not appear in logs or `Debug` output (passwords).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret string.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for handing to the SSH library or sudo.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How to gain the become user's privileges on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Become {
    /// The user to become (`ansible_become_user`, default `root`).
    pub user: String,
    /// The sudo password (`ansible_become_password`); `None` = passwordless sudo (`sudo -n`).
    pub password: Option<Secret>,
}

/// Everything needed to open an SSH session to one inventory host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSpec {
    /// The inventory name (used in reports and `--limit`).
    pub host: String,
    /// Where to connect (address or DNS name).
    pub address: String,
    /// TCP port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Login password, tried after keys and the agent.
    pub password: Option<Secret>,
    /// Private key files to try first, in order (missing files are skipped at connect time).
    pub key_files: Vec<PathBuf>,
    /// Privilege escalation, when the login user is not the user we need.
    pub become_: Option<Become>,
    /// TCP connect and handshake timeout.
    pub connect_timeout: Duration,
}

/// A host's connection variables cannot be used.
#[derive(Debug, Error)]
pub enum ConnError {
    /// A variable has a value of the wrong kind.
    #[error("host {host}: {var} = {value}: {expected}")]
    BadValue {
        /// Inventory host.
        host: String,
        /// Variable name.
        var: String,
        /// The value as JSON.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// `ansible_become_method` is not sudo.
    #[error(
        "host {host}: become method {method:?} is not supported; use sudo (set ansible_become_method=sudo) or log in as root"
    )]
    UnsupportedBecome {
        /// Inventory host.
        host: String,
        /// The requested method.
        method: String,
    },
    /// `ansible_connection` is something other than ssh.
    #[error(
        "host {host}: ansible_connection={connection} is not supported; the installer connects over SSH (remove the variable or set it to ssh)"
    )]
    UnsupportedConnection {
        /// Inventory host.
        host: String,
        /// The requested connection plugin.
        connection: String,
    },
    /// `ansible.cfg` could not be used.
    #[error(transparent)]
    AnsibleCfg(#[from] AnsibleCfgError),
    /// `~/.ssh/config` could not be used.
    #[error(transparent)]
    SshConfig(#[from] SshConfigError),
}

/// Settings that apply to every host: `ansible.cfg`, `~/.ssh/config` and the local user.
#[derive(Debug, Clone, Default)]
pub struct ConnDefaults {
    /// The operator's Ansible configuration (empty when there is none).
    pub ansible: AnsibleCfg,
    /// The operator's ssh client configuration (empty when there is none).
    pub ssh_config: SshConfig,
    /// Local home directory (`~` expansion, default key files).
    pub home: Option<PathBuf>,
    /// Local user name (the login user when nothing else names one).
    pub local_user: String,
}

impl ConnDefaults {
    /// Read `ansible.cfg` (as Ansible locates it) and `~/.ssh/config` from this machine.
    pub fn load() -> Result<Self, ConnError> {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        let ansible = AnsibleCfg::load(home.as_deref())?;
        let ssh_config = SshConfig::load_user_default(home.as_deref())?;
        let local_user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "root".to_string());
        Ok(ConnDefaults {
            ansible,
            ssh_config,
            home,
            local_user,
        })
    }

    /// Parallelism: `--forks` when given, else `ansible.cfg` `forks`, else 50.
    pub fn forks(&self, cli: Option<usize>) -> usize {
        cli.or(self.ansible.forks).unwrap_or(DEFAULT_FORKS).max(1)
    }

    /// Host key policy: `--host-key-policy` when given; else `off` when `ansible.cfg` (or
    /// `ANSIBLE_HOST_KEY_CHECKING`) disables host key checking; else `accept-new`.
    pub fn host_key_policy(&self, cli: Option<HostKeyPolicy>) -> HostKeyPolicy {
        match (cli, self.ansible.host_key_checking) {
            (Some(p), _) => p,
            (None, Some(false)) => HostKeyPolicy::Off,
            (None, _) => HostKeyPolicy::AcceptNew,
        }
    }
}

/// Render a JSON value the way Ansible would stringify it for a connection option.
fn value_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(if *b { "True" } else { "False" }.to_string()),
        other => Some(other.to_string()),
    }
}

impl ConnectionSpec {
    /// Build the connection settings for inventory host `host` from its resolved variables.
    pub fn from_vars(
        host: &str,
        vars: &IndexMap<String, Value>,
        defaults: &ConnDefaults,
    ) -> Result<ConnectionSpec, ConnError> {
        // The last defined alias wins (Ansible's config manager keeps the last entry).
        let last = |names: &[&str]| -> Option<(String, String)> {
            names.iter().rev().find_map(|n| {
                vars.get(*n)
                    .and_then(value_string)
                    .map(|v| (n.to_string(), v))
            })
        };
        let bad = |var: &str, value: &str, expected| ConnError::BadValue {
            host: host.to_string(),
            var: var.to_string(),
            value: value.to_string(),
            expected,
        };

        if let Some((_, c)) = last(&["ansible_connection"])
            && !matches!(c.as_str(), "ssh" | "smart" | "paramiko" | "paramiko_ssh")
        {
            return Err(ConnError::UnsupportedConnection {
                host: host.to_string(),
                connection: c,
            });
        }

        let given = last(&["ansible_host", "ansible_ssh_host"])
            .map(|(_, v)| v)
            .unwrap_or_else(|| host.to_string());
        let ssh = defaults.ssh_config.lookup(&given);
        let address = ssh.hostname.clone().unwrap_or(given);

        let port = match last(&["ansible_port", "ansible_ssh_port"]) {
            Some((var, v)) => v
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad(&var, &v, "expected a port number 1-65535"))?,
            None => defaults.ansible.remote_port.or(ssh.port).unwrap_or(22),
        };

        let user = last(&["ansible_user", "ansible_ssh_user"])
            .map(|(_, v)| v)
            .or_else(|| defaults.ansible.remote_user.clone())
            .or_else(|| ssh.user.clone())
            .unwrap_or_else(|| defaults.local_user.clone());

        let password = last(&[
            "ansible_password",
            "ansible_ssh_pass",
            "ansible_ssh_password",
        ])
        .map(|(_, v)| Secret::new(v));

        let connect_timeout = match last(&["ansible_ssh_timeout", "ansible_timeout"]) {
            Some((var, v)) => Duration::from_secs(
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| bad(&var, &v, "expected a number of seconds"))?,
            ),
            None => defaults
                .ansible
                .timeout
                .or(ssh.connect_timeout)
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        };

        let home = defaults.home.as_deref();
        let mut key_files: Vec<PathBuf> = Vec::new();
        let explicit = last(&["ansible_private_key_file", "ansible_ssh_private_key_file"])
            .map(|(_, v)| v)
            .or_else(|| defaults.ansible.private_key_file.clone());
        if let Some(k) = explicit {
            key_files.push(expand_home(&k, home));
        }
        let ctx = TokenContext {
            home,
            local_user: &defaults.local_user,
            host: &address,
            remote_user: &user,
            port,
        };
        for k in &ssh.identity_files {
            let p = expand_tokens(k, &ctx);
            if !key_files.contains(&p) {
                key_files.push(p);
            }
        }
        if key_files.is_empty()
            && let Some(h) = home
        {
            key_files.extend(default_key_files(h));
        }

        let become_flag = match last(&["ansible_become"]) {
            Some((var, v)) => {
                parse_bool(&v).ok_or_else(|| bad(&var, &v, "expected true or false"))?
            }
            None => defaults.ansible.become_.unwrap_or(user != "root"),
        };
        let become_user = last(&["ansible_become_user", "ansible_sudo_user"])
            .map(|(_, v)| v)
            .or_else(|| defaults.ansible.become_user.clone())
            .unwrap_or_else(|| "root".to_string());
        let become_ = if become_flag && become_user != user {
            let method = last(&["ansible_become_method"])
                .map(|(_, v)| v)
                .or_else(|| defaults.ansible.become_method.clone())
                .unwrap_or_else(|| "sudo".to_string());
            if method != "sudo" {
                return Err(ConnError::UnsupportedBecome {
                    host: host.to_string(),
                    method,
                });
            }
            let password = last(&[
                "ansible_become_password",
                "ansible_become_pass",
                "ansible_sudo_pass",
            ])
            .map(|(_, v)| Secret::new(v));
            Some(Become {
                user: become_user,
                password,
            })
        } else {
            None
        };

        Ok(ConnectionSpec {
            host: host.to_string(),
            address,
            port,
            user,
            password,
            key_files,
            become_,
            connect_timeout,
        })
    }
}

/// The identities OpenSSH tries when none is configured, in its order.
fn default_key_files(home: &Path) -> Vec<PathBuf> {
    ["id_rsa", "id_ecdsa", "id_ed25519"]
        .iter()
        .map(|n| home.join(".ssh").join(n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(v: Value) -> IndexMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    fn defaults() -> ConnDefaults {
        ConnDefaults {
            home: Some(PathBuf::from("/home/op")),
            local_user: "op".into(),
            ..Default::default()
        }
    }

    #[test]
    fn later_alias_wins() {
        let v = vars(json!({
            "ansible_ssh_host": "10.0.0.2", "ansible_host": "10.0.0.1",
            "ansible_ssh_port": "2202", "ansible_port": 2201,
            "ansible_ssh_user": "b", "ansible_user": "a",
            "ansible_ssh_pass": "p2", "ansible_password": "p1",
            "ansible_ssh_private_key_file": "~/k2", "ansible_private_key_file": "/k1",
        }));
        let s = ConnectionSpec::from_vars("n1", &v, &defaults()).unwrap();
        assert_eq!(s.address, "10.0.0.2");
        assert_eq!(s.port, 2202);
        assert_eq!(s.user, "b");
        assert_eq!(s.password.as_ref().map(Secret::expose), Some("p2"));
        assert_eq!(s.key_files, vec![PathBuf::from("/home/op/k2")]);
        // ansible_ssh_password is the newest spelling and beats both.
        let v = vars(json!({"ansible_ssh_password": "p3", "ansible_ssh_pass": "p2"}));
        let s = ConnectionSpec::from_vars("n1", &v, &defaults()).unwrap();
        assert_eq!(s.password.as_ref().map(Secret::expose), Some("p3"));
    }

    #[test]
    fn fallbacks_inventory_name_and_defaults() {
        let s = ConnectionSpec::from_vars("node7", &IndexMap::new(), &defaults()).unwrap();
        assert_eq!(s.host, "node7");
        assert_eq!(s.address, "node7");
        assert_eq!(s.port, 22);
        assert_eq!(s.user, "op");
        assert_eq!(s.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(s.key_files[0], PathBuf::from("/home/op/.ssh/id_rsa"));
        // Not root and nothing says otherwise: become root with sudo -n.
        assert_eq!(
            s.become_,
            Some(Become {
                user: "root".into(),
                password: None
            })
        );
    }

    #[test]
    fn ssh_config_then_ansible_cfg_then_vars() {
        let mut d = defaults();
        d.ssh_config = SshConfig::parse(
            "Host 10.0.0.*\n HostName real-%h\n User cfguser\n Port 2222\n IdentityFile ~/.ssh/%r_key\n",
            Path::new("cfg"),
            None,
        )
        .unwrap();
        let v = vars(json!({"ansible_host": "10.0.0.5"}));
        let s = ConnectionSpec::from_vars("n", &v, &d).unwrap();
        assert_eq!(s.address, "real-10.0.0.5");
        assert_eq!(s.user, "cfguser");
        assert_eq!(s.port, 2222);
        assert_eq!(
            s.key_files,
            vec![PathBuf::from("/home/op/.ssh/cfguser_key")]
        );

        d.ansible.remote_user = Some("ansuser".into());
        d.ansible.private_key_file = Some("~/.ssh/ans".into());
        d.ansible.timeout = Some(3);
        let s = ConnectionSpec::from_vars("n", &v, &d).unwrap();
        assert_eq!(s.user, "ansuser");
        assert_eq!(
            s.key_files,
            vec![
                PathBuf::from("/home/op/.ssh/ans"),
                PathBuf::from("/home/op/.ssh/ansuser_key")
            ]
        );
        assert_eq!(s.connect_timeout, Duration::from_secs(3));

        let v =
            vars(json!({"ansible_host": "10.0.0.5", "ansible_user": "root", "ansible_port": "22"}));
        let s = ConnectionSpec::from_vars("n", &v, &d).unwrap();
        assert_eq!((s.user.as_str(), s.port), ("root", 22));
        assert_eq!(s.become_, None, "root needs no become");
    }

    #[test]
    fn become_settings() {
        let v = vars(json!({
            "ansible_user": "deploy", "ansible_become": "yes", "ansible_become_user": "x",
            "ansible_sudo_user": "admin", "ansible_become_pass": "s1", "ansible_become_password": "s0",
        }));
        let s = ConnectionSpec::from_vars("n", &v, &defaults()).unwrap();
        let b = s.become_.unwrap();
        assert_eq!(b.user, "admin");
        assert_eq!(b.password.as_ref().map(Secret::expose), Some("s1"));

        let v = vars(json!({"ansible_user": "deploy", "ansible_become": false}));
        assert_eq!(
            ConnectionSpec::from_vars("n", &v, &defaults())
                .unwrap()
                .become_,
            None
        );

        let v = vars(json!({"ansible_user": "deploy", "ansible_become_method": "su"}));
        let err = ConnectionSpec::from_vars("n", &v, &defaults()).unwrap_err();
        assert!(err.to_string().contains("su"), "{err}");
    }

    #[test]
    fn bad_values_are_reported_with_host_and_variable() {
        let v = vars(json!({"ansible_port": "ssh"}));
        let err = ConnectionSpec::from_vars("node9", &v, &defaults()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("node9") && msg.contains("ansible_port") && msg.contains("ssh"),
            "{msg}"
        );
        let v = vars(json!({"ansible_connection": "winrm"}));
        assert!(ConnectionSpec::from_vars("n", &v, &defaults()).is_err());
        let v = vars(json!({"ansible_become": "perhaps"}));
        assert!(ConnectionSpec::from_vars("n", &v, &defaults()).is_err());
    }

    #[test]
    fn passwords_do_not_leak_into_debug() {
        let v = vars(json!({"ansible_password": "hunter2"}));
        let s = ConnectionSpec::from_vars("n", &v, &defaults()).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn forks_and_policy_defaults() {
        let mut d = defaults();
        assert_eq!(d.forks(None), 50);
        d.ansible.forks = Some(8);
        assert_eq!(d.forks(None), 8);
        assert_eq!(d.forks(Some(3)), 3);
        assert_eq!(d.host_key_policy(None), HostKeyPolicy::AcceptNew);
        d.ansible.host_key_checking = Some(false);
        assert_eq!(d.host_key_policy(None), HostKeyPolicy::Off);
        assert_eq!(
            d.host_key_policy(Some(HostKeyPolicy::Strict)),
            HostKeyPolicy::Strict
        );
    }
}
