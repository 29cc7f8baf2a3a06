//! `~/.ssh/config` reader for the settings that decide where and as whom we connect:
//! `Host`, `HostName`, `User`, `Port`, `IdentityFile`, `ConnectTimeout` (plus `Include`).
//!
//! Semantics follow OpenSSH: blocks are scanned top to bottom, the first value obtained for a
//! keyword wins (`IdentityFile` accumulates), `Host` takes `*`/`?` globs and `!negations`,
//! settings before the first `Host` apply to every host. `Match` blocks are not evaluated:
//! their settings are skipped (except `Match all`), which errs on the side of ssh's defaults.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::pattern::{ListMatch, match_list};

/// A problem reading an ssh client configuration file.
#[derive(Debug, Error)]
pub enum SshConfigError {
    /// The file exists but could not be read.
    #[error("cannot read ssh config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A value we use is malformed.
    #[error("{path}:{line}: {message} (fix or remove this line of the ssh config)")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Which hosts a run of settings applies to.
#[derive(Debug, Clone)]
enum Condition {
    Always,
    Never,
    Hosts(Vec<String>),
}

#[derive(Debug, Clone)]
struct Entry {
    condition: usize,
    keyword: String,
    value: String,
}

/// A parsed ssh client configuration (possibly assembled from several files via `Include`).
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    conditions: Vec<Condition>,
    entries: Vec<Entry>,
}

/// What the ssh config says for one host; unset values are `None`/empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSettings {
    /// `HostName` with `%h` already replaced by the looked-up name.
    pub hostname: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// `Port`.
    pub port: Option<u16>,
    /// `IdentityFile` values in file order, raw: expand them with [`expand_tokens`].
    pub identity_files: Vec<String>,
    /// `ConnectTimeout` in seconds.
    pub connect_timeout: Option<u64>,
}

const MAX_INCLUDE_DEPTH: usize = 16;

impl SshConfig {
    /// Load `~/.ssh/config` (empty configuration when it does not exist).
    pub fn load_user_default(home: Option<&Path>) -> Result<Self, SshConfigError> {
        match home {
            Some(h) => Self::load_if_exists(&h.join(".ssh/config"), home),
            None => Ok(Self::default()),
        }
    }

    /// Load `path`; a missing file gives an empty configuration.
    pub fn load_if_exists(path: &Path, home: Option<&Path>) -> Result<Self, SshConfigError> {
        let mut cfg = Self::default();
        cfg.conditions.push(Condition::Always);
        if path.exists() {
            cfg.read_file(path, 0, 0, home)?;
        }
        Ok(cfg)
    }

    /// Parse configuration text (`origin` names it in error messages; `Include`s resolve
    /// relative to `home/.ssh`).
    pub fn parse(text: &str, origin: &Path, home: Option<&Path>) -> Result<Self, SshConfigError> {
        let mut cfg = Self::default();
        cfg.conditions.push(Condition::Always);
        cfg.parse_into(text, origin, 0, 0, home)?;
        Ok(cfg)
    }

    fn read_file(
        &mut self,
        path: &Path,
        condition: usize,
        depth: usize,
        home: Option<&Path>,
    ) -> Result<(), SshConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| SshConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.parse_into(&text, path, condition, depth, home)
    }

    fn parse_into(
        &mut self,
        text: &str,
        origin: &Path,
        start_condition: usize,
        depth: usize,
        home: Option<&Path>,
    ) -> Result<(), SshConfigError> {
        let mut condition = start_condition;
        for (idx, raw) in text.lines().enumerate() {
            let line_no = idx + 1;
            let syntax = |message: String| SshConfigError::Syntax {
                path: origin.to_path_buf(),
                line: line_no,
                message,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_keyword(line);
            let keyword = keyword.to_ascii_lowercase();
            let args = split_args(rest).ok_or_else(|| syntax("unbalanced quotes".into()))?;
            match keyword.as_str() {
                "host" => {
                    if args.is_empty() {
                        return Err(syntax("Host needs at least one pattern".into()));
                    }
                    self.conditions.push(Condition::Hosts(args));
                    condition = self.conditions.len() - 1;
                }
                "match" => {
                    let all = args.len() == 1 && args[0].eq_ignore_ascii_case("all");
                    self.conditions.push(if all {
                        Condition::Always
                    } else {
                        Condition::Never
                    });
                    condition = self.conditions.len() - 1;
                }
                "include" => {
                    if depth >= MAX_INCLUDE_DEPTH {
                        return Err(syntax("Include nested too deeply (a loop?)".into()));
                    }
                    for arg in args {
                        for path in expand_include(&arg, home) {
                            self.read_file(&path, condition, depth + 1, home)?;
                        }
                    }
                }
                _ => {
                    let Some(value) = args.into_iter().next() else {
                        continue;
                    };
                    if keyword == "port" && value.parse::<u16>().is_err() {
                        return Err(syntax(format!("Port {value:?} is not a port number")));
                    }
                    if keyword == "connecttimeout" && value.parse::<u64>().is_err() {
                        return Err(syntax(format!(
                            "ConnectTimeout {value:?} is not a number of seconds"
                        )));
                    }
                    self.entries.push(Entry {
                        condition,
                        keyword,
                        value,
                    });
                }
            }
        }
        Ok(())
    }

    fn applies(&self, condition: usize, host: &str) -> bool {
        match &self.conditions[condition] {
            Condition::Always => true,
            Condition::Never => false,
            Condition::Hosts(pats) => {
                match_list(host, pats.iter().map(String::as_str)) == ListMatch::Yes
            }
        }
    }

    /// The settings for `host` (the name given to ssh, i.e. `ansible_host` or the inventory name).
    pub fn lookup(&self, host: &str) -> HostSettings {
        let mut out = HostSettings::default();
        for e in &self.entries {
            if !self.applies(e.condition, host) {
                continue;
            }
            match e.keyword.as_str() {
                "hostname" if out.hostname.is_none() => {
                    out.hostname = Some(e.value.replace("%h", host).replace("%%", "%"));
                }
                "user" if out.user.is_none() => out.user = Some(e.value.clone()),
                "port" if out.port.is_none() => out.port = e.value.parse().ok(),
                "connecttimeout" if out.connect_timeout.is_none() => {
                    out.connect_timeout = e.value.parse().ok()
                }
                "identityfile" => out.identity_files.push(e.value.clone()),
                _ => {}
            }
        }
        out
    }
}

/// Values that `%` tokens and `~` in an `IdentityFile` stand for.
#[derive(Debug, Clone, Default)]
pub struct TokenContext<'a> {
    /// Local home directory (`~`, `%d`).
    pub home: Option<&'a Path>,
    /// Local user name (`%u`).
    pub local_user: &'a str,
    /// Remote host name after `HostName` (`%h`).
    pub host: &'a str,
    /// Remote user (`%r`).
    pub remote_user: &'a str,
    /// Remote port (`%p`).
    pub port: u16,
}

/// Expand a leading `~/` and the `%d %u %h %r %p %%` tokens of an ssh config path value.
pub fn expand_tokens(value: &str, ctx: &TokenContext<'_>) -> PathBuf {
    let home = ctx.home.map(|h| h.to_string_lossy().into_owned());
    let mut s = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            s.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => s.push('%'),
            Some('d') => s.push_str(home.as_deref().unwrap_or("~")),
            Some('u') => s.push_str(ctx.local_user),
            Some('h') => s.push_str(ctx.host),
            Some('r') => s.push_str(ctx.remote_user),
            Some('p') => s.push_str(&ctx.port.to_string()),
            Some(other) => {
                s.push('%');
                s.push(other);
            }
            None => s.push('%'),
        }
    }
    expand_home(&s, ctx.home)
}

/// Replace a leading `~` or `~/` by the home directory.
pub fn expand_home(value: &str, home: Option<&Path>) -> PathBuf {
    match (value, home) {
        ("~", Some(h)) => h.to_path_buf(),
        (v, Some(h)) if v.starts_with("~/") => h.join(&v[2..]),
        (v, _) => PathBuf::from(v),
    }
}

fn split_keyword(line: &str) -> (&str, &str) {
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let (kw, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    (kw, rest)
}

/// Split arguments on whitespace, honouring double quotes; a trailing `#` comment ends the list.
fn split_args(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut has_token = false;
    for c in s.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has_token = true;
            }
            '#' if !in_quotes && !has_token => break,
            c if c.is_whitespace() && !in_quotes => {
                if has_token {
                    out.push(std::mem::take(&mut cur));
                    has_token = false;
                }
            }
            c => {
                cur.push(c);
                has_token = true;
            }
        }
    }
    if in_quotes {
        return None;
    }
    if has_token {
        out.push(cur);
    }
    Some(out)
}

/// Resolve an `Include` argument: relative to `~/.ssh`, `*`/`?` allowed in the last component.
fn expand_include(arg: &str, home: Option<&Path>) -> Vec<PathBuf> {
    let path = expand_home(arg, home);
    let path = if path.is_relative() {
        match home {
            Some(h) => h.join(".ssh").join(path),
            None => path,
        }
    } else {
        path
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return if path.exists() { vec![path] } else { vec![] };
    }
    let Some(dir) = path.parent() else {
        return vec![];
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| super::pattern::wildcard_match(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SshConfig {
        SshConfig::parse(text, Path::new("test_config"), None).unwrap()
    }

    #[test]
    fn first_value_wins_and_identity_files_accumulate() {
        let cfg = parse(
            "# comment\n\
             Host node1\n  HostName 10.0.0.1\n  User admin\n  IdentityFile ~/.ssh/node1\n\
             Host node*\n  User other\n  Port 2222\n  IdentityFile=~/.ssh/common\n\
             Host *\n  User fallback\n  Port 22\n  ConnectTimeout 5\n",
        );
        let s = cfg.lookup("node1");
        assert_eq!(s.hostname.as_deref(), Some("10.0.0.1"));
        assert_eq!(s.user.as_deref(), Some("admin"));
        assert_eq!(s.port, Some(2222));
        assert_eq!(s.identity_files, vec!["~/.ssh/node1", "~/.ssh/common"]);
        assert_eq!(s.connect_timeout, Some(5));
        let s = cfg.lookup("web");
        assert_eq!(s.hostname, None);
        assert_eq!(s.user.as_deref(), Some("fallback"));
        assert_eq!(s.port, Some(22));
    }

    #[test]
    fn negation_keyword_case_quotes_and_percent_h() {
        let cfg = parse(
            "HOST web* !web2\n\tHOSTNAME %h.lab.example\n\tuser \"deploy user\"\n\
             Match host foo\n  User matched\n\
             Host *\n  User last\n",
        );
        let s = cfg.lookup("web1");
        assert_eq!(s.hostname.as_deref(), Some("web1.lab.example"));
        assert_eq!(s.user.as_deref(), Some("deploy user"));
        let s = cfg.lookup("web2");
        assert_eq!(s.hostname, None);
        assert_eq!(s.user.as_deref(), Some("last"), "Match blocks are skipped");
    }

    #[test]
    fn settings_before_first_host_apply_everywhere() {
        let cfg = parse("User early\nHost x\n User late\n");
        assert_eq!(cfg.lookup("x").user.as_deref(), Some("early"));
    }

    #[test]
    fn bad_port_names_file_and_line() {
        let err = SshConfig::parse("Host a\n Port abc\n", Path::new("/cfg"), None).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/cfg:2"), "{msg}");
        assert!(msg.contains("abc"), "{msg}");
    }

    #[test]
    fn include_is_conditional_on_enclosing_host() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        std::fs::create_dir_all(home.join(".ssh/conf.d")).unwrap();
        std::fs::write(home.join(".ssh/conf.d/a.conf"), "User included\n").unwrap();
        let cfg = SshConfig::parse(
            "Host inc\n Include conf.d/*.conf\nHost *\n User other\n",
            Path::new("cfg"),
            Some(home),
        )
        .unwrap();
        assert_eq!(cfg.lookup("inc").user.as_deref(), Some("included"));
        assert_eq!(cfg.lookup("zzz").user.as_deref(), Some("other"));
    }

    #[test]
    fn token_expansion() {
        let home = Path::new("/home/me");
        let ctx = TokenContext {
            home: Some(home),
            local_user: "me",
            host: "h1",
            remote_user: "root",
            port: 2200,
        };
        assert_eq!(
            expand_tokens("~/.ssh/id_%r@%h-%p", &ctx),
            PathBuf::from("/home/me/.ssh/id_root@h1-2200")
        );
        assert_eq!(expand_tokens("%d/k%%", &ctx), PathBuf::from("/home/me/k%"));
    }
}
