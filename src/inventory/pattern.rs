//! Ansible host patterns (`hosts:` of a play, `--limit`), evaluated like ansible-core 2.14's
//! `InventoryManager.get_hosts`/`subset`.
//!
//! Syntax: `all`/`*`, host and group names, `a:b` or `a,b` (union), `a:&b` (intersection),
//! `a:!b` (exclusion), shell wildcards (`web*`, `192.168.1.*`, `[ab]`), `~regex` (matched at the
//! start of names), subscripts on group/wildcard matches (`g[0]`, `g[-1]`, `g[1:3]`, `g[2:]`),
//! and `@file` (one pattern per line, e.g. a retry file). Plain names come first, then `&`, then
//! `!`, whatever the order written. Results keep Ansible's order and hold each host once.
//!
//! Unlike Ansible, a name that matches no host or group is an error ([`PatternError::NoMatch`])
//! rather than a warning. As in Ansible, `localhost`, `127.0.0.1` and `::1` match the implicit
//! localhost when the inventory has no such host: that name is returned even though
//! [`Inventory::host_exists`] is false for it.
//!
//! `~regex` uses Rust's `regex` syntax, which lacks look-around and back-references.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::LazyLock;

use indexmap::IndexSet;
use regex::Regex;

use super::Inventory;
use super::hostrange::parse_address;
use super::pyutil::strip;

/// Names that stand for the controller itself when the inventory does not define them.
pub const LOCALHOST: [&str; 3] = ["127.0.0.1", "localhost", "::1"];

/// A host pattern could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    /// A name or wildcard matched no host and no group.
    #[error(
        "Could not match supplied host pattern: '{pattern}' (in '{full}'): no host or group of that name in the inventory"
    )]
    NoMatch {
        /// The piece that matched nothing.
        pattern: String,
        /// The whole pattern as given.
        full: String,
    },
    /// A subscript beyond the matched hosts (`g[9]` with fewer hosts).
    #[error("No hosts matched the subscripted pattern '{0}'")]
    SubscriptOutOfRange(String),
    /// A `~regex` that does not compile.
    #[error("Invalid host list pattern: {pattern}: {reason}")]
    InvalidRegex {
        /// The pattern.
        pattern: String,
        /// The regex compiler's message.
        reason: String,
    },
    /// `@file` names no file.
    #[error("Unable to find limit file {0}")]
    LimitFileMissing(PathBuf),
    /// `@dir`.
    #[error("Limit starting with \"@\" must be a file, not a directory: {0}")]
    LimitFileIsDir(PathBuf),
    /// `@file` could not be read.
    #[error("cannot read limit file {path}: {source}")]
    LimitFileRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A lone `&` or `!`.
    #[error("empty host pattern piece in '{0}'")]
    Empty(String),
}

/// A selected host: an inventory host, or the implicit localhost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Sel {
    Host(usize),
    Local(&'static str),
}

static SUBSCRIPT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$").expect("static regex")
});
static COLON_SPLIT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:[^\s:\[\]]|\[[^\]]*\])+").expect("static regex"));

/// Ansible's `split_host_pattern`: commas separate; without commas, a single valid address
/// (IPv6, `host:port`, a range) stays whole, otherwise `:` and whitespace separate.
pub fn split_host_pattern(pattern: &str) -> Vec<String> {
    let pieces: Vec<&str> = if pattern.contains(',') {
        pattern.split(',').collect()
    } else if parse_address(pattern).is_some() {
        vec![pattern]
    } else {
        COLON_SPLIT.find_iter(pattern).map(|m| m.as_str()).collect()
    };
    pieces
        .into_iter()
        .map(strip)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// `*`/`?`/`[…]` shell wildcards with Python `fnmatch` semantics (whole name, case-sensitive).
#[derive(Debug)]
enum GlobTok {
    Star,
    Any,
    Lit(char),
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

fn compile_glob(pat: &str) -> Vec<GlobTok> {
    let p: Vec<char> = pat.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < p.len() {
        let c = p[i];
        i += 1;
        match c {
            '*' => {
                if !matches!(out.last(), Some(GlobTok::Star)) {
                    out.push(GlobTok::Star);
                }
            }
            '?' => out.push(GlobTok::Any),
            '[' => {
                let mut j = i;
                if p.get(j) == Some(&'!') {
                    j += 1;
                }
                if p.get(j) == Some(&']') {
                    j += 1;
                }
                while j < p.len() && p[j] != ']' {
                    j += 1;
                }
                if j >= p.len() {
                    out.push(GlobTok::Lit('['));
                    continue;
                }
                let stuff = &p[i..j];
                i = j + 1;
                let (negated, body) = match stuff.first() {
                    Some('!') => (true, &stuff[1..]),
                    _ => (false, stuff),
                };
                let mut items = Vec::new();
                let mut k = 0;
                while k < body.len() {
                    if k + 2 < body.len() && body[k + 1] == '-' {
                        // A reversed range matches nothing (Python drops it).
                        if body[k] <= body[k + 2] {
                            items.push((body[k], body[k + 2]));
                        }
                        k += 3;
                    } else {
                        items.push((body[k], body[k]));
                        k += 1;
                    }
                }
                out.push(GlobTok::Class { negated, items });
            }
            other => out.push(GlobTok::Lit(other)),
        }
    }
    out
}

fn glob_tok_matches(t: &GlobTok, c: char) -> bool {
    match t {
        GlobTok::Star => true,
        GlobTok::Any => true,
        GlobTok::Lit(l) => *l == c,
        GlobTok::Class { negated, items } => {
            items.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
        }
    }
}

fn glob_match(toks: &[GlobTok], s: &str) -> bool {
    // Classic wildcard matching with one backtrack point; indexes are byte offsets into `s`.
    let next_len = |at: usize| s[at..].chars().next().map_or(1, char::len_utf8);
    let (mut ti, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while let Some(c) = s[si..].chars().next() {
        match toks.get(ti) {
            Some(GlobTok::Star) => {
                star = Some((ti, si));
                ti += 1;
            }
            Some(t) if glob_tok_matches(t, c) => {
                ti += 1;
                si += c.len_utf8();
            }
            _ => match star {
                Some((st, ss)) => {
                    let resume = ss + next_len(ss);
                    ti = st + 1;
                    si = resume;
                    star = Some((st, resume));
                }
                None => return false,
            },
        }
    }
    toks[ti..].iter().all(|t| matches!(t, GlobTok::Star))
}

/// One compiled pattern piece: a glob or a `~regex`.
enum Matcher {
    Glob(Vec<GlobTok>),
    Regex(Regex),
}

impl Matcher {
    fn new(pattern: &str) -> Result<Matcher, PatternError> {
        match pattern.strip_prefix('~') {
            Some(re) => Regex::new(&format!("^(?:{re})"))
                .map(Matcher::Regex)
                .map_err(|e| PatternError::InvalidRegex {
                    pattern: pattern.to_string(),
                    reason: e.to_string(),
                }),
            None => Ok(Matcher::Glob(compile_glob(pattern))),
        }
    }

    fn is_match(&self, name: &str) -> bool {
        match self {
            Matcher::Glob(t) => glob_match(t, name),
            Matcher::Regex(r) => r.is_match(name),
        }
    }
}

/// `(start, Some(end))` or `(index, None)`, as Ansible's `_split_subscript` returns them.
type Subscript = (i64, Option<i64>);

fn split_subscript(pattern: &str) -> (&str, Option<Subscript>) {
    if pattern.starts_with('~') {
        return (pattern, None);
    }
    let Some(c) = SUBSCRIPT.captures(pattern) else {
        return (pattern, None);
    };
    let (Some(expr), Some(_)) = (c.get(1), c.get(0)) else {
        return (pattern, None);
    };
    let num = |s: &str| s.parse::<i64>().unwrap_or(i64::MAX);
    let sub = if let Some(idx) = c.get(2) {
        (num(idx.as_str()), None)
    } else {
        let start = c.get(3).map_or(0, |m| num(m.as_str()));
        let end = c
            .get(5)
            .map(|m| m.as_str())
            .filter(|e| !e.is_empty())
            .map_or(-1, num);
        (start, Some(end))
    };
    (expr.as_str(), Some(sub))
}

fn apply_subscript(hosts: Vec<Sel>, sub: Option<Subscript>) -> Option<Vec<Sel>> {
    let Some((start, end)) = sub else {
        return Some(hosts);
    };
    if hosts.is_empty() {
        return Some(hosts);
    }
    let len = hosts.len() as i64;
    match end {
        // Python: `if end:` — an end of 0 falls through to single-index selection.
        Some(end) if end != 0 => {
            let end = if end == -1 { len - 1 } else { end };
            let (from, to) = (start.clamp(0, len), (end.saturating_add(1)).clamp(0, len));
            Some(if from < to {
                hosts[from as usize..to as usize].to_vec()
            } else {
                Vec::new()
            })
        }
        _ => {
            let i = if start < 0 { start + len } else { start };
            (0..len).contains(&i).then(|| vec![hosts[i as usize]])
        }
    }
}

impl Inventory {
    /// Hosts matching an Ansible host pattern, in the order `ansible -i INV PATTERN
    /// --list-hosts` prints them (see the module docs for the syntax).
    pub fn select(&self, pattern: &str) -> Result<Vec<String>, PatternError> {
        let pieces = expand_files(split_host_pattern(pattern))?;
        let hosts = self.evaluate(&pieces, pattern)?;
        Ok(hosts
            .into_iter()
            .map(|s| self.sel_name(s).to_string())
            .collect())
    }

    /// Hosts of a play's `hosts:` pattern restricted by `--limit`: `pattern`'s order, keeping
    /// only hosts that `limit` also matches (`ansible -i INV PATTERN --limit LIMIT`).
    pub fn select_limited(
        &self,
        pattern: &str,
        limit: Option<&str>,
    ) -> Result<Vec<String>, PatternError> {
        let pieces = expand_files(split_host_pattern(pattern))?;
        let mut hosts = self.evaluate(&pieces, pattern)?;
        if let Some(limit) = limit {
            let subset = expand_files(split_host_pattern(limit))?;
            let allowed: HashSet<Sel> = self.evaluate(&subset, limit)?.into_iter().collect();
            hosts.retain(|h| allowed.contains(h));
        }
        Ok(hosts
            .into_iter()
            .map(|s| self.sel_name(s).to_string())
            .collect())
    }

    fn sel_name(&self, s: Sel) -> &str {
        match s {
            Sel::Host(i) => self
                .hosts
                .get_index(i)
                .map(|(n, _)| n.as_str())
                .unwrap_or_default(),
            Sel::Local(n) => n,
        }
    }

    /// Ansible's `_evaluate_patterns` (plus the final de-duplication of `get_hosts`).
    fn evaluate(&self, pieces: &[String], full: &str) -> Result<IndexSet<Sel>, PatternError> {
        let mut regular: Vec<&str> = Vec::new();
        let mut intersect: Vec<&str> = Vec::new();
        let mut exclude: Vec<&str> = Vec::new();
        for p in pieces.iter().map(String::as_str).filter(|p| !p.is_empty()) {
            match p.as_bytes()[0] {
                b'!' => exclude.push(p),
                b'&' => intersect.push(p),
                _ => regular.push(p),
            }
        }
        if regular.is_empty() {
            regular.push("all");
        }
        let mut hosts: IndexSet<Sel> = IndexSet::new();
        for p in regular.into_iter().chain(intersect).chain(exclude) {
            if let Some(i) = self.hosts.get_index_of(p) {
                hosts.insert(Sel::Host(i));
                continue;
            }
            let that = self.match_one(p, full)?;
            match p.as_bytes()[0] {
                b'!' => {
                    let that: HashSet<Sel> = that.into_iter().collect();
                    hosts.retain(|h| !that.contains(h));
                }
                b'&' => {
                    let that: HashSet<Sel> = that.into_iter().collect();
                    hosts.retain(|h| that.contains(h));
                }
                _ => hosts.extend(that),
            }
        }
        Ok(hosts)
    }

    /// Ansible's `_match_one_pattern`: one piece without its `&`/`!`, with its subscript.
    fn match_one(&self, piece: &str, full: &str) -> Result<Vec<Sel>, PatternError> {
        let pattern = piece.strip_prefix(['&', '!']).unwrap_or(piece);
        if pattern.is_empty() {
            return Err(PatternError::Empty(full.to_string()));
        }
        let (expr, sub) = split_subscript(pattern);
        let hosts = self.enumerate_matches(expr, full)?;
        apply_subscript(hosts, sub)
            .ok_or_else(|| PatternError::SubscriptOutOfRange(pattern.to_string()))
    }

    /// Ansible's `_enumerate_matches`: hosts of every matching group, then (for wildcards,
    /// regexes, or when no group matched) matching host names.
    fn enumerate_matches(&self, pattern: &str, full: &str) -> Result<Vec<Sel>, PatternError> {
        let matcher = Matcher::new(pattern)?;
        let mut results = Vec::new();
        let mut matched_group = false;
        for group in self
            .groups
            .iter()
            .filter(|(name, _)| matcher.is_match(name))
            .map(|(_, g)| g)
        {
            matched_group = true;
            results.extend(group.all_hosts.iter().map(|h| Sel::Host(*h)));
        }
        let wildcard = pattern.starts_with('~') || pattern.contains(['.', '?', '*', '[']);
        if !matched_group || wildcard {
            for (i, name) in self.hosts.keys().enumerate() {
                if matcher.is_match(name) {
                    results.push(Sel::Host(i));
                }
            }
        }
        if results.is_empty()
            && let Some(local) = LOCALHOST.iter().find(|l| **l == pattern)
        {
            results.push(Sel::Local(local));
        }
        if results.is_empty() && !matched_group && pattern != "all" {
            return Err(PatternError::NoMatch {
                pattern: pattern.to_string(),
                full: full.to_string(),
            });
        }
        Ok(results)
    }
}

/// Replaces `@file` pieces by the file's lines (stripped; blank lines are ignored later).
fn expand_files(pieces: Vec<String>) -> Result<Vec<String>, PatternError> {
    if !pieces.iter().any(|p| p.starts_with('@')) {
        return Ok(pieces);
    }
    let mut out = Vec::with_capacity(pieces.len());
    for p in pieces {
        let Some(file) = p.strip_prefix('@') else {
            out.push(p);
            continue;
        };
        let path = PathBuf::from(file);
        if !path.exists() {
            return Err(PatternError::LimitFileMissing(path));
        }
        if !path.is_file() {
            return Err(PatternError::LimitFileIsDir(path));
        }
        let text =
            std::fs::read_to_string(&path).map_err(|source| PatternError::LimitFileRead {
                path: path.clone(),
                source,
            })?;
        out.extend(text.split('\n').map(|l| strip(l).to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting() {
        assert_eq!(
            split_host_pattern("a,b[1], c[2:3] , d"),
            ["a", "b[1]", "c[2:3]", "d"]
        );
        assert_eq!(split_host_pattern("web:&db:!x"), ["web", "&db", "!x"]);
        assert_eq!(split_host_pattern("2001:db8::1"), ["2001:db8::1"]);
        assert_eq!(split_host_pattern("web[1:3]"), ["web[1:3]"]);
        assert_eq!(split_host_pattern("g[0]:h[1:2]"), ["g[0]", "h[1:2]"]);
        assert_eq!(split_host_pattern("a b"), ["a", "b"]);
        assert_eq!(split_host_pattern("a:1"), ["a:1"]);
        assert_eq!(split_host_pattern(" , "), Vec::<String>::new());
    }

    #[test]
    fn globs() {
        let m = |p: &str, s: &str| glob_match(&compile_glob(p), s);
        assert!(m("web*", "web01"));
        assert!(m("*", ""));
        assert!(m("192.168.1.*", "192.168.1.10"));
        assert!(!m("192.168.1.*", "192.168.10.1"));
        assert!(m("n?de", "node"));
        assert!(m("[ab]*", "bx"));
        assert!(!m("[!ab]*", "bx"));
        assert!(m("[a-c]x", "bx"));
        assert!(!m("[c-a]x", "bx"));
        assert!(m("a[", "a["));
        assert!(m("*a*b*", "xxaxxbxx"));
        assert!(!m("*a*b", "xxaxxbxx"));
        assert!(m("[]]", "]"));
        assert!(m("[a-]", "-"));
        assert!(!m("Web*", "web1"));
    }

    #[test]
    fn subscripts() {
        assert_eq!(split_subscript("g[0]"), ("g", Some((0, None))));
        assert_eq!(split_subscript("g[-1]"), ("g", Some((-1, None))));
        assert_eq!(split_subscript("g[1:3]"), ("g", Some((1, Some(3)))));
        assert_eq!(split_subscript("g[2:]"), ("g", Some((2, Some(-1)))));
        assert_eq!(split_subscript("g[0-1]"), ("g", Some((0, Some(1)))));
        assert_eq!(split_subscript("~g[0]"), ("~g[0]", None));
        assert_eq!(split_subscript("g[a]"), ("g[a]", None));
        let hs: Vec<Sel> = (0..4).map(Sel::Host).collect();
        let idx = |v: Option<Vec<Sel>>| {
            v.map(|v| {
                v.iter()
                    .map(|s| match s {
                        Sel::Host(i) => *i,
                        Sel::Local(_) => 99,
                    })
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            idx(apply_subscript(hs.clone(), Some((1, Some(0))))),
            Some(vec![1])
        );
        assert_eq!(
            idx(apply_subscript(hs.clone(), Some((2, Some(1))))),
            Some(vec![])
        );
        assert_eq!(
            idx(apply_subscript(hs.clone(), Some((1, Some(10))))),
            Some(vec![1, 2, 3])
        );
        assert_eq!(
            idx(apply_subscript(hs.clone(), Some((-4, None)))),
            Some(vec![0])
        );
        assert_eq!(idx(apply_subscript(hs.clone(), Some((4, None)))), None);
        assert_eq!(idx(apply_subscript(hs, Some((-5, None)))), None);
    }
}
