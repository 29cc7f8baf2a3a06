//! flannel's iptables rules (flannel-spec §6, F28 form): masquerading in nat chain
//! `FLANNEL-POSTRTG` and forward accepts in filter chain `FLANNEL-FWD`, each reached by a
//! commented jump from the built-in chain. Installed in one `iptables-restore --noflush`
//! transaction, checked with `iptables -C`, repaired as a whole when anything is missing.

use ipnet::Ipv4Net;
use std::io::Write;
use std::process::{Command, Stdio};
use thiserror::Error;

/// nat chain holding the masquerade rules.
pub const POSTRTG_CHAIN: &str = "FLANNEL-POSTRTG";
/// filter chain holding the forward rules.
pub const FWD_CHAIN: &str = "FLANNEL-FWD";
const MASQ_COMMENT: &str = "flanneld masq";
const FWD_COMMENT: &str = "flanneld forward";
/// Seconds to wait for the xtables lock.
const LOCK_WAIT: &str = "5";

/// An iptables command failed.
#[derive(Debug, Error)]
pub enum IptablesError {
    /// The program could not be started (not installed?).
    #[error(
        "cannot run {program}: {error}; install iptables (Debian/Ubuntu: apt-get install iptables)"
    )]
    Spawn {
        /// Program name.
        program: String,
        /// Why.
        error: std::io::Error,
    },
    /// It ran and failed.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// Program and arguments.
        program: String,
        /// Exit status.
        status: String,
        /// Its stderr.
        stderr: String,
    },
}

/// One rule: table, chain and the match/target arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `nat` or `filter`.
    pub table: &'static str,
    /// Chain the rule lives in.
    pub chain: &'static str,
    /// Everything after the chain name.
    pub args: Vec<String>,
}

impl Rule {
    fn new(table: &'static str, chain: &'static str, args: &[&str]) -> Rule {
        Rule {
            table,
            chain,
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The rule as an `iptables-restore` line (`-A CHAIN …`), quoting arguments with spaces.
    pub fn restore_line(&self, op: &str) -> String {
        let mut line = format!("{op} {}", self.chain);
        for a in &self.args {
            line.push(' ');
            if a.contains(char::is_whitespace) {
                line.push('"');
                line.push_str(a);
                line.push('"');
            } else {
                line.push_str(a);
            }
        }
        line
    }
}

/// A chain of ours, the jump into it and its rules, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    /// Table.
    pub table: &'static str,
    /// Our chain.
    pub chain: &'static str,
    /// The jump from the built-in chain.
    pub jump: Rule,
    /// Rules of our chain, in order.
    pub rules: Vec<Rule>,
}

/// The six masquerade rules of §6 for Network `network` and our lease `subnet`.
pub fn masq_rules(network: Ipv4Net, subnet: Ipv4Net, random_fully: bool) -> RuleSet {
    let n = network.trunc().to_string();
    let s = subnet.trunc().to_string();
    let c = ["-m", "comment", "--comment", MASQ_COMMENT];
    let rule = |head: &[&str], target: &[&str]| {
        let mut args: Vec<&str> = head.to_vec();
        args.extend_from_slice(&c);
        args.extend_from_slice(target);
        Rule::new("nat", POSTRTG_CHAIN, &args)
    };
    let masq: &[&str] = if random_fully {
        &["-j", "MASQUERADE", "--random-fully"]
    } else {
        &["-j", "MASQUERADE"]
    };
    RuleSet {
        table: "nat",
        chain: POSTRTG_CHAIN,
        jump: Rule::new(
            "nat",
            "POSTROUTING",
            &[
                "-m",
                "comment",
                "--comment",
                MASQ_COMMENT,
                "-j",
                POSTRTG_CHAIN,
            ],
        ),
        rules: vec![
            // kube-proxy's masquerade mark: never NAT twice
            rule(
                &["-m", "mark", "--mark", "0x4000/0x4000"],
                &["-j", "RETURN"],
            ),
            rule(&["-s", &s, "-d", &n], &["-j", "RETURN"]),
            rule(&["-s", &n, "-d", &s], &["-j", "RETURN"]),
            rule(&["!", "-s", &n, "-d", &s], &["-j", "RETURN"]),
            rule(&["-s", &n, "!", "-d", "224.0.0.0/4"], masq),
            rule(&["!", "-s", &n, "-d", &n], masq),
        ],
    }
}

/// The two forward-accept rules of §6.
pub fn forward_rules(network: Ipv4Net) -> RuleSet {
    let n = network.trunc().to_string();
    let c = ["-m", "comment", "--comment", FWD_COMMENT];
    let rule = |flag: &str| {
        let mut args = vec![flag, n.as_str()];
        args.extend_from_slice(&c);
        args.extend_from_slice(&["-j", "ACCEPT"]);
        Rule::new("filter", FWD_CHAIN, &args)
    };
    RuleSet {
        table: "filter",
        chain: FWD_CHAIN,
        jump: Rule::new(
            "filter",
            "FORWARD",
            &["-m", "comment", "--comment", FWD_COMMENT, "-j", FWD_CHAIN],
        ),
        rules: vec![rule("-s"), rule("-d")],
    }
}

/// The `iptables-restore --noflush` input that (re)creates a rule set: declaring the chain
/// flushes it; the jump is deleted first when `jump_exists` so it is never doubled.
pub fn restore_payload(set: &RuleSet, jump_exists: bool) -> String {
    let mut out = format!("*{}\n:{} - [0:0]\n", set.table, set.chain);
    if jump_exists {
        out.push_str(&set.jump.restore_line("-D"));
        out.push('\n');
    }
    out.push_str(&set.jump.restore_line("-A"));
    out.push('\n');
    for r in &set.rules {
        out.push_str(&r.restore_line("-A"));
        out.push('\n');
    }
    out.push_str("COMMIT\n");
    out
}

/// Whether an `iptables --version` line is at least 1.6.2 (the first with `--random-fully`).
pub fn version_supports_random_fully(version_line: &str) -> bool {
    let Some(v) = version_line
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
    else {
        return false;
    };
    let nums: Vec<u32> = v
        .split('.')
        .map(|p| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap_or(0)
        })
        .collect();
    let get = |i: usize| nums.get(i).copied().unwrap_or(0);
    (get(0), get(1), get(2)) >= (1, 6, 2)
}

/// Runs `iptables` / `iptables-restore`.
#[derive(Debug, Clone)]
pub struct Iptables {
    iptables: String,
    restore: String,
}

impl Default for Iptables {
    fn default() -> Self {
        Iptables {
            iptables: "iptables".into(),
            restore: "iptables-restore".into(),
        }
    }
}

impl Iptables {
    fn run(&self, args: &[&str]) -> Result<std::process::Output, IptablesError> {
        Command::new(&self.iptables)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|error| IptablesError::Spawn {
                program: self.iptables.clone(),
                error,
            })
    }

    /// Whether this iptables supports `--random-fully` (version ≥ 1.6.2).
    pub fn supports_random_fully(&self) -> bool {
        self.run(&["--version"])
            .map(|o| version_supports_random_fully(&String::from_utf8_lossy(&o.stdout)))
            .unwrap_or(false)
    }

    /// `iptables -C`: whether a rule exists (a missing chain counts as "no").
    pub fn exists(&self, rule: &Rule) -> Result<bool, IptablesError> {
        let mut args = vec!["-w", LOCK_WAIT, "-t", rule.table, "-C", rule.chain];
        args.extend(rule.args.iter().map(String::as_str));
        Ok(self.run(&args)?.status.success())
    }

    fn checked(&self, args: &[&str]) -> Result<(), IptablesError> {
        let out = self.run(args)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(IptablesError::Failed {
                program: format!("{} {}", self.iptables, args.join(" ")),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// Delete a rule (every copy of it); absent is fine.
    pub fn delete(&self, rule: &Rule) -> Result<(), IptablesError> {
        for _ in 0..16 {
            if !self.exists(rule)? {
                break;
            }
            let mut args = vec!["-w", LOCK_WAIT, "-t", rule.table, "-D", rule.chain];
            args.extend(rule.args.iter().map(String::as_str));
            self.checked(&args)?;
        }
        Ok(())
    }

    /// (Re)install a rule set in one transaction.
    pub fn install(&self, set: &RuleSet) -> Result<(), IptablesError> {
        let payload = restore_payload(set, self.exists(&set.jump)?);
        let program = format!("{} -w {LOCK_WAIT} --noflush", self.restore);
        let mut child = Command::new(&self.restore)
            .args(["-w", LOCK_WAIT, "--noflush"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| IptablesError::Spawn {
                program: self.restore.clone(),
                error,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(payload.as_bytes())
                .map_err(|error| IptablesError::Spawn {
                    program: program.clone(),
                    error,
                })?;
        }
        let out = child
            .wait_with_output()
            .map_err(|error| IptablesError::Spawn {
                program: program.clone(),
                error,
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(IptablesError::Failed {
                program,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// Which rules of a set are missing (the jump included).
    pub fn missing(&self, set: &RuleSet) -> Result<Vec<Rule>, IptablesError> {
        let mut missing = Vec::new();
        for rule in std::iter::once(&set.jump).chain(&set.rules) {
            if !self.exists(rule)? {
                missing.push(rule.clone());
            }
        }
        Ok(missing)
    }

    /// Check a set and reinstall it whole when anything is missing; true when it was repaired.
    pub fn ensure(&self, set: &RuleSet) -> Result<bool, IptablesError> {
        if self.missing(set)?.is_empty() {
            return Ok(false);
        }
        self.install(set)?;
        Ok(true)
    }

    /// Remove a chain of ours: the jumps to it, its rules, the chain itself. Absent is fine.
    pub fn remove_chain(&self, set: &RuleSet) -> Result<(), IptablesError> {
        self.delete(&set.jump)?;
        let probe = self.run(&["-w", LOCK_WAIT, "-t", set.table, "-S", set.chain])?;
        if probe.status.success() {
            self.checked(&["-w", LOCK_WAIT, "-t", set.table, "-F", set.chain])?;
            self.checked(&["-w", LOCK_WAIT, "-t", set.table, "-X", set.chain])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn spec6_masq_rules_text_f28() {
        let set = masq_rules(net("10.1.0.0/16"), net("10.1.17.0/24"), true);
        assert_eq!(
            restore_payload(&set, false),
            "*nat\n\
             :FLANNEL-POSTRTG - [0:0]\n\
             -A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n\
             -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment \"flanneld masq\" -j RETURN\n\
             -A FLANNEL-POSTRTG -s 10.1.17.0/24 -d 10.1.0.0/16 -m comment --comment \"flanneld masq\" -j RETURN\n\
             -A FLANNEL-POSTRTG -s 10.1.0.0/16 -d 10.1.17.0/24 -m comment --comment \"flanneld masq\" -j RETURN\n\
             -A FLANNEL-POSTRTG ! -s 10.1.0.0/16 -d 10.1.17.0/24 -m comment --comment \"flanneld masq\" -j RETURN\n\
             -A FLANNEL-POSTRTG -s 10.1.0.0/16 ! -d 224.0.0.0/4 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully\n\
             -A FLANNEL-POSTRTG ! -s 10.1.0.0/16 -d 10.1.0.0/16 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully\n\
             COMMIT\n"
        );
        let plain = masq_rules(net("10.1.0.0/16"), net("10.1.17.0/24"), false);
        assert!(
            plain
                .rules
                .iter()
                .all(|r| !r.args.contains(&"--random-fully".to_string()))
        );
    }

    #[test]
    fn spec6_forward_rules_text_and_jump_replacement() {
        let set = forward_rules(net("10.1.2.3/16"));
        assert_eq!(
            restore_payload(&set, true),
            "*filter\n\
             :FLANNEL-FWD - [0:0]\n\
             -D FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD\n\
             -A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD\n\
             -A FLANNEL-FWD -s 10.1.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT\n\
             -A FLANNEL-FWD -d 10.1.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT\n\
             COMMIT\n"
        );
    }

    #[test]
    fn random_fully_needs_1_6_2() {
        assert!(version_supports_random_fully("iptables v1.8.9 (nf_tables)"));
        assert!(version_supports_random_fully("iptables v1.6.2"));
        assert!(!version_supports_random_fully("iptables v1.6.1"));
        assert!(!version_supports_random_fully("iptables v1.4.21"));
        assert!(!version_supports_random_fully("garbage"));
    }
}
