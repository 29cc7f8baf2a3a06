//! The INI line grammar and the inventory-building rules of Ansible's INI plugin and
//! `InventoryData` (ansible-core 2.14): sections, host lines, `:vars`, `:children` with forward
//! references, then `reconcile_inventory` (top-level groups under `all`, `ungrouped`).

use indexmap::{IndexMap, IndexSet};
use serde_json::Value;

use super::error::{InventoryError, ParseErrorKind};
use super::hostrange::{Port, expand_hostpattern};
use super::pyliteral::parse_value;
use super::pyutil::{is_space, is_word, py_int, strip};
use super::shlex;
use super::{ALL, Group, Host, UNGROUPED};

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Hosts,
    Vars,
    Children,
}

/// A group named before it is declared: by `[g:vars]`, or as a child in `[p:children]`.
struct Pending {
    line: usize,
    text: String,
    state: State,
    /// Parents that list it as a child, with the line of each mention.
    parents: Vec<(usize, usize, String)>,
}

/// What the parser hands back: the populated model plus warnings.
pub(crate) struct Built {
    pub hosts: IndexMap<String, Host>,
    pub groups: IndexMap<String, Group>,
    pub warnings: Vec<String>,
}

struct Builder<'a> {
    file: &'a str,
    hosts: IndexMap<String, Host>,
    groups: IndexMap<String, Group>,
    pending: IndexMap<String, Pending>,
    warnings: Vec<String>,
    warned_names: IndexSet<String>,
    /// First `[p:children]` line that made `all` a child (reported if reconcile finds a loop).
    all_as_child: Option<(usize, String)>,
}

/// `[name]`, `[name:kind]`, optionally followed by whitespace and a `#` comment.
fn match_section(line: &str) -> Option<(&str, Option<&str>)> {
    let rest = line.strip_prefix('[')?;
    let name_end = rest.find(|c: char| c == ':' || c == ']' || is_space(c))?;
    if name_end == 0 {
        return None;
    }
    let name = &rest[..name_end];
    let mut rest = &rest[name_end..];
    let mut kind = None;
    if let Some(after) = rest.strip_prefix(':') {
        let end = after.find(|c: char| !is_word(c)).unwrap_or(after.len());
        if end == 0 {
            return None;
        }
        kind = Some(&after[..end]);
        rest = &after[end..];
    }
    let rest = rest.strip_prefix(']')?;
    let rest = rest.trim_start_matches(is_space);
    (rest.is_empty() || rest.starts_with('#')).then_some((name, kind))
}

/// A `[p:children]` line: one group name, optionally followed by whitespace and a `#` comment.
fn match_group_name(line: &str) -> Option<&str> {
    let end = line
        .find(|c: char| c == ':' || c == ']' || is_space(c))
        .unwrap_or(line.len());
    if end == 0 {
        return None;
    }
    let rest = line[end..].trim_start_matches(is_space);
    (rest.is_empty() || rest.starts_with('#')).then_some(&line[..end])
}

/// Ansible's `INVALID_VARIABLE_NAMES` test (`^[\d\W]|[^\w]`) used to warn about group names.
fn has_invalid_group_chars(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_numeric() || !is_word(c) => true,
        _ => name.chars().any(|c| !is_word(c)),
    }
}

/// Python's `int(value)` for `ansible_group_priority`.
fn priority_from(value: &Value) -> Result<i64, String> {
    let type_err = |t: &str| {
        format!("int() argument must be a string, a bytes-like object or a real number, not '{t}'")
    };
    match value {
        Value::Bool(b) => Ok(i64::from(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                let t = f.trunc();
                if t.abs() < 9.2e18 {
                    Ok(t as i64)
                } else {
                    Err(format!("{f} is out of range"))
                }
            } else {
                Err(format!("{n} is out of range"))
            }
        }
        Value::String(s) => py_int(s)
            .and_then(|i| i64::try_from(i).ok())
            .ok_or_else(|| format!("invalid literal for int() with base 10: '{s}'")),
        Value::Null => Err(type_err("NoneType")),
        Value::Array(_) => Err(type_err("list")),
        Value::Object(_) => Err(type_err("dict")),
    }
}

impl<'a> Builder<'a> {
    fn err(&self, line: usize, text: &str, kind: ParseErrorKind) -> InventoryError {
        InventoryError::Parse {
            file: self.file.to_string(),
            line,
            text: text.to_string(),
            kind,
        }
    }

    fn warn_group_name(&mut self, name: &str) {
        if has_invalid_group_chars(name) && self.warned_names.insert(name.to_string()) {
            self.warnings.push(format!(
                "invalid character(s) in group name '{name}': kept as written (Ansible's default TRANSFORM_INVALID_GROUP_CHARS=never)"
            ));
        }
    }

    fn add_group(&mut self, name: &str) -> usize {
        if let Some(i) = self.groups.get_index_of(name) {
            return i;
        }
        self.warn_group_name(name);
        self.groups
            .insert_full(name.to_string(), Group::default())
            .0
    }

    /// Strict ancestors of group `g` (walks parent links).
    fn ancestors(&self, g: usize) -> Vec<usize> {
        let mut seen = vec![false; self.groups.len()];
        let mut stack: Vec<usize> = self.groups[g].parents.clone();
        let mut out = Vec::new();
        while let Some(p) = stack.pop() {
            if !seen[p] {
                seen[p] = true;
                out.push(p);
                stack.extend_from_slice(&self.groups[p].parents);
            }
        }
        out
    }

    /// Ansible's `Group.add_child_group`: refuses self-children and loops, ignores repeats.
    fn add_child(&mut self, parent: usize, child: usize) -> Result<(), ParseErrorKind> {
        let name = |i: usize, b: &Self| {
            b.groups
                .get_index(i)
                .map(|(n, _)| n.clone())
                .unwrap_or_default()
        };
        if parent == child {
            return Err(ParseErrorKind::SelfChild(name(parent, self)));
        }
        if self.groups[parent].children.contains(&child) {
            return Ok(());
        }
        if self.ancestors(parent).contains(&child) {
            return Err(ParseErrorKind::Cycle {
                child: name(child, self),
                parent: name(parent, self),
            });
        }
        self.groups[parent].children.push(child);
        if !self.groups[child].parents.contains(&parent) {
            self.groups[child].parents.push(parent);
        }
        Ok(())
    }

    fn add_pending_children(&mut self, group: &str) -> Result<(), InventoryError> {
        let Some(pending) = self.pending.shift_remove(group) else {
            return Ok(());
        };
        let child = self.add_group(group);
        for (parent, line, text) in pending.parents {
            self.add_child(parent, child)
                .map_err(|k| self.err(line, &text, k))?;
        }
        Ok(())
    }

    fn section(
        &mut self,
        lineno: usize,
        line: &str,
        name: &str,
        kind: Option<&str>,
    ) -> Result<State, InventoryError> {
        let state = match kind {
            None | Some("hosts") => State::Hosts,
            Some("vars") => State::Vars,
            Some("children") => State::Children,
            Some(other) => {
                let kind = ParseErrorKind::UnknownSectionType {
                    title: format!("{name}:{other}"),
                    kind: other.to_string(),
                };
                return Err(self.err(lineno, line, kind));
            }
        };
        self.warn_group_name(name);
        if !self.groups.contains_key(name) {
            if state == State::Vars && !self.pending.contains_key(name) {
                self.pending.insert(
                    name.to_string(),
                    Pending {
                        line: lineno,
                        text: line.to_string(),
                        state,
                        parents: Vec::new(),
                    },
                );
            }
            self.add_group(name);
        }
        if state != State::Vars {
            match self.pending.get(name).map(|p| p.state) {
                Some(State::Children) => self.add_pending_children(name)?,
                Some(State::Vars) => {
                    self.pending.shift_remove(name);
                }
                _ => {}
            }
        }
        Ok(state)
    }

    fn host_line(&mut self, lineno: usize, line: &str, group: usize) -> Result<(), InventoryError> {
        let tokens = shlex::split(line).map_err(|error| {
            self.err(
                lineno,
                line,
                ParseErrorKind::HostDefinition {
                    line: line.to_string(),
                    error,
                },
            )
        })?;
        let Some(pattern) = tokens.first() else {
            return Err(self.err(lineno, line, ParseErrorKind::EmptyHostName(String::new())));
        };
        let (names, port) = expand_hostpattern(pattern).map_err(|error| {
            self.err(
                lineno,
                line,
                ParseErrorKind::Range {
                    pattern: pattern.clone(),
                    error,
                },
            )
        })?;
        if strip(pattern).ends_with(':') && port.is_none() {
            return Err(self.err(lineno, line, ParseErrorKind::TrailingColon(pattern.clone())));
        }
        if names.iter().any(|n| strip(n) == "---") {
            return Err(self.err(lineno, line, ParseErrorKind::YamlMarker(pattern.clone())));
        }
        let mut vars: IndexMap<String, Value> = IndexMap::with_capacity(tokens.len() - 1);
        for token in &tokens[1..] {
            let Some((k, v)) = token.split_once('=') else {
                return Err(self.err(
                    lineno,
                    line,
                    ParseErrorKind::ExpectedHostVariable(token.clone()),
                ));
            };
            let value = parse_value(v).map_err(|u| {
                self.err(
                    lineno,
                    line,
                    ParseErrorKind::Unhashable {
                        key: k.to_string(),
                        type_name: u.type_name,
                    },
                )
            })?;
            vars.insert(k.to_string(), value);
        }
        for name in names {
            if name.is_empty() {
                return Err(self.err(lineno, line, ParseErrorKind::EmptyHostName(name)));
            }
            let h = self.add_host(name, port.as_ref());
            if !self.groups[group].hosts.contains(&h) {
                self.groups[group].hosts.push(h);
            }
            let host_vars = &mut self.hosts[h].vars;
            for (k, v) in &vars {
                host_vars.insert(k.clone(), v.clone());
            }
        }
        Ok(())
    }

    /// Ansible's `InventoryData.add_host`: the port only counts when the host is new.
    fn add_host(&mut self, name: String, port: Option<&Port>) -> usize {
        if let Some(i) = self.hosts.get_index_of(&name) {
            return i;
        }
        let mut host = Host::default();
        if let Some(p) = port.filter(|p| !p.is_zero()) {
            host.vars.insert("ansible_port".to_string(), p.to_json());
        }
        self.hosts.insert_full(name, host).0
    }

    fn vars_line(&mut self, lineno: usize, line: &str, group: usize) -> Result<(), InventoryError> {
        let Some((k, v)) = line.split_once('=') else {
            return Err(self.err(
                lineno,
                line,
                ParseErrorKind::ExpectedVariable(line.to_string()),
            ));
        };
        let (k, v) = (strip(k), strip(v));
        let value = parse_value(v).map_err(|u| {
            self.err(
                lineno,
                line,
                ParseErrorKind::Unhashable {
                    key: k.to_string(),
                    type_name: u.type_name,
                },
            )
        })?;
        if k == "ansible_group_priority" {
            let p = priority_from(&value)
                .map_err(|m| self.err(lineno, line, ParseErrorKind::GroupPriority(m)))?;
            self.groups[group].priority = p;
        } else {
            self.groups[group].vars.insert(k.to_string(), value);
        }
        Ok(())
    }

    fn children_line(
        &mut self,
        lineno: usize,
        line: &str,
        group: usize,
    ) -> Result<(), InventoryError> {
        let Some(child) = match_group_name(line) else {
            return Err(self.err(
                lineno,
                line,
                ParseErrorKind::ExpectedGroupName(line.to_string()),
            ));
        };
        match self.groups.get_index_of(child) {
            Some(c) => {
                if child == ALL && self.all_as_child.is_none() {
                    self.all_as_child = Some((lineno, line.to_string()));
                }
                self.add_child(group, c)
                    .map_err(|k| self.err(lineno, line, k))
            }
            None => {
                let entry = self
                    .pending
                    .entry(child.to_string())
                    .or_insert_with(|| Pending {
                        line: lineno,
                        text: line.to_string(),
                        state: State::Children,
                        parents: Vec::new(),
                    });
                entry.parents.push((group, lineno, line.to_string()));
                Ok(())
            }
        }
    }

    /// Ansible's `reconcile_inventory`: parentless groups go under `all`; hosts in no group but
    /// `all` go to `ungrouped`; hosts in other groups leave `ungrouped`.
    fn reconcile(&mut self) -> Result<(), InventoryError> {
        let all = 0;
        let ungrouped = 1;
        for g in 1..self.groups.len() {
            if self.groups[g].parents.is_empty() {
                self.add_child(all, g).map_err(|k| {
                    let (line, text) = self.all_as_child.clone().unwrap_or((0, String::new()));
                    self.err(line, &text, k)
                })?;
            }
        }
        let ancestors: Vec<Vec<usize>> =
            (0..self.groups.len()).map(|g| self.ancestors(g)).collect();
        let mut direct: Vec<Vec<usize>> = vec![Vec::new(); self.hosts.len()];
        for (g, group) in self.groups.values().enumerate() {
            for &h in &group.hosts {
                direct[h].push(g);
            }
        }
        for (h, host) in self.hosts.values_mut().enumerate() {
            let mut member = vec![false; ancestors.len()];
            for &g in &direct[h] {
                member[g] = true;
                for &a in &ancestors[g] {
                    member[a] = true;
                }
            }
            if member[ungrouped] {
                let others = member
                    .iter()
                    .enumerate()
                    .any(|(g, m)| *m && g != all && g != ungrouped);
                if others && direct[h].contains(&ungrouped) {
                    self.groups[ungrouped].hosts.retain(|x| *x != h);
                    member = vec![false; ancestors.len()];
                    for &g in direct[h].iter().filter(|g| **g != ungrouped) {
                        member[g] = true;
                        for &a in &ancestors[g] {
                            member[a] = true;
                        }
                    }
                }
            } else if member.iter().enumerate().all(|(g, m)| !*m || g == all) {
                self.groups[ungrouped].hosts.push(h);
                member[ungrouped] = true;
                member[all] = true;
            }
            host.groups = member
                .iter()
                .enumerate()
                .filter(|(_, m)| **m)
                .map(|(g, _)| g)
                .collect();
        }
        for name in self.groups.keys() {
            if self.hosts.contains_key(name) {
                self.warnings
                    .push(format!("Found both group and host with same name: {name}"));
            }
        }
        Ok(())
    }

    /// Depth = longest path from `all`, as Ansible maintains it while adding children.
    fn compute_depths(&mut self) {
        let n = self.groups.len();
        let mut indegree: Vec<usize> = self.groups.values().map(|g| g.parents.len()).collect();
        let mut queue: Vec<usize> = (0..n).filter(|g| indegree[*g] == 0).collect();
        let mut depth = vec![0u32; n];
        while let Some(g) = queue.pop() {
            for i in 0..self.groups[g].children.len() {
                let c = self.groups[g].children[i];
                depth[c] = depth[c].max(depth[g] + 1);
                indegree[c] -= 1;
                if indegree[c] == 0 {
                    queue.push(c);
                }
            }
        }
        for (g, group) in self.groups.values_mut().enumerate() {
            group.depth = depth[g];
        }
    }

    /// `groups['g']`: the group's hosts, then its descendants' (breadth first, children in
    /// declaration order), each host once.
    fn compute_group_hosts(&mut self) {
        let n = self.groups.len();
        let mut seen_group = vec![usize::MAX; n];
        let mut seen_host = vec![usize::MAX; self.hosts.len()];
        for g in 0..n {
            let mut ordered = vec![g];
            seen_group[g] = g;
            let mut level = vec![g];
            while !level.is_empty() {
                let mut next = Vec::new();
                for &x in &level {
                    for &c in &self.groups[x].children {
                        if seen_group[c] != g {
                            seen_group[c] = g;
                            next.push(c);
                            ordered.push(c);
                        }
                    }
                }
                level = next;
            }
            let mut hosts = Vec::new();
            for &x in &ordered {
                for &h in &self.groups[x].hosts {
                    if seen_host[h] != g {
                        seen_host[h] = g;
                        hosts.push(h);
                    }
                }
            }
            self.groups[g].all_hosts = hosts;
        }
    }
}

/// Parses the lines of an inventory (already decoded; `None` marks an undecodable line).
pub(crate) fn build(file: &str, lines: &[Result<&str, ()>]) -> Result<Built, InventoryError> {
    let mut b = Builder {
        file,
        hosts: IndexMap::new(),
        groups: IndexMap::new(),
        pending: IndexMap::new(),
        warnings: Vec::new(),
        warned_names: IndexSet::new(),
        all_as_child: None,
    };
    b.add_group(ALL);
    let ungrouped = b.add_group(UNGROUPED);
    b.add_child(0, ungrouped).map_err(|k| b.err(0, "", k))?;

    let mut group = ungrouped;
    let mut state = State::Hosts;
    for (i, raw) in lines.iter().enumerate() {
        let lineno = i + 1;
        let Ok(raw) = raw else {
            return Err(b.err(lineno, "", ParseErrorKind::InvalidUtf8));
        };
        let line = strip(raw);
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some((name, kind)) = match_section(line) {
            state = b.section(lineno, line, name, kind)?;
            group = b.add_group(name);
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            return Err(b.err(
                lineno,
                line,
                ParseErrorKind::InvalidSection(line.to_string()),
            ));
        }
        match state {
            State::Hosts => b.host_line(lineno, line, group)?,
            State::Vars => b.vars_line(lineno, line, group)?,
            State::Children => b.children_line(lineno, line, group)?,
        }
    }
    if let Some((name, p)) = b.pending.first() {
        let kind = match p.state {
            State::Vars => ParseErrorKind::VarsForUndefinedGroup(name.clone()),
            _ => ParseErrorKind::UndefinedChild {
                parent: p
                    .parents
                    .last()
                    .and_then(|(g, ..)| b.groups.get_index(*g))
                    .map(|(n, _)| n.clone())
                    .unwrap_or_default(),
                child: name.clone(),
            },
        };
        return Err(b.err(p.line, &p.text, kind));
    }
    b.reconcile()?;
    b.compute_depths();
    b.compute_group_hosts();
    Ok(Built {
        hosts: b.hosts,
        groups: b.groups,
        warnings: b.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_headers() {
        assert_eq!(match_section("[g]"), Some(("g", None)));
        assert_eq!(match_section("[g:vars]  # c"), Some(("g", Some("vars"))));
        assert_eq!(match_section("[g:foo]"), Some(("g", Some("foo"))));
        assert_eq!(match_section("[kube-master]"), Some(("kube-master", None)));
        assert_eq!(match_section("[g]#c"), Some(("g", None)));
        assert_eq!(match_section("[g] ;c"), None);
        assert_eq!(match_section("[g:]"), None);
        assert_eq!(match_section("[]"), None);
        assert_eq!(match_section("[bad section]"), None);
        assert_eq!(match_section("[g:vars x]"), None);
        assert_eq!(match_section("[g:v-x]"), None);
    }

    #[test]
    fn group_name_lines() {
        assert_eq!(match_group_name("child"), Some("child"));
        assert_eq!(match_group_name("child   # c"), Some("child"));
        assert_eq!(match_group_name("child#c"), Some("child#c"));
        assert_eq!(match_group_name("child ;c"), None);
        assert_eq!(match_group_name("a b"), None);
        assert_eq!(match_group_name("a:b"), None);
    }

    #[test]
    fn invalid_group_chars() {
        assert!(has_invalid_group_chars("kube-master"));
        assert!(has_invalid_group_chars("1g"));
        assert!(has_invalid_group_chars("g.x"));
        assert!(!has_invalid_group_chars("kube_master"));
        assert!(!has_invalid_group_chars("_g1"));
    }

    #[test]
    fn priorities() {
        assert_eq!(priority_from(&serde_json::json!(10)), Ok(10));
        assert_eq!(priority_from(&serde_json::json!("10")), Ok(10));
        assert_eq!(priority_from(&serde_json::json!(1.9)), Ok(1));
        assert_eq!(priority_from(&serde_json::json!(true)), Ok(1));
        assert_eq!(
            priority_from(&serde_json::json!("abc")),
            Err("invalid literal for int() with base 10: 'abc'".to_string())
        );
        assert!(
            priority_from(&Value::Null)
                .unwrap_err()
                .contains("'NoneType'")
        );
    }
}
