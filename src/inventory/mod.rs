//! Ansible INI inventory reader, matching ansible-core 2.14 (the version kubeasz ships).
//!
//! [`Inventory::load`] reads a kubeasz-style `hosts` file into a model with the same hosts,
//! groups, variables and orderings Ansible computes: `groups['g']`, `group_names`, merged host
//! vars, `ansible-inventory --list/--graph/--host` output ([`output`]) and `--limit` host
//! patterns ([`pattern`]). Values are typed like Ansible's INI plugin (Python literals, see
//! [`pyliteral`]) and are *not* templated: `{{ … }}` strings stay as written.
//!
//! Differences from Ansible, all deliberate: every error is fatal (Ansible would fall back to an
//! empty inventory), non-UTF-8 host/vars lines are refused, and where Ansible's order depends
//! on Python set iteration (hosts of grandchild groups reached through several children) we use
//! declaration order.

mod error;
pub mod hostrange;
pub mod output;
mod parse;
pub mod pattern;
pub mod pyliteral;
mod pyutil;
pub mod shlex;

use std::path::{Component, Path, PathBuf};

use indexmap::IndexMap;
use serde_json::Value;

pub use error::{InventoryError, ParseErrorKind};
pub use pattern::PatternError;

/// The group every host belongs to.
pub const ALL: &str = "all";
/// The group of hosts that are in no other group.
pub const UNGROUPED: &str = "ungrouped";

/// One host: its own (inline) variables and every group it belongs to, ancestors included.
#[derive(Debug, Clone, Default)]
pub(crate) struct Host {
    /// Inline `k=v` variables in the order they were set (`ansible_port` from `host:port` first).
    pub vars: IndexMap<String, Value>,
    /// Indexes of the groups it belongs to (directly or through a child group), ascending.
    pub groups: Vec<usize>,
}

/// One group: its variables, own hosts, relations and derived data.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    /// `[g:vars]` variables in file order (without `ansible_group_priority`).
    pub vars: IndexMap<String, Value>,
    /// Hosts listed under `[g]` itself, in first-seen order.
    pub hosts: Vec<usize>,
    /// Child groups in the order they were attached.
    pub children: Vec<usize>,
    /// Parent groups in the order they were attached.
    pub parents: Vec<usize>,
    /// Longest path from `all`.
    pub depth: u32,
    /// `ansible_group_priority` (default 1).
    pub priority: i64,
    /// `groups['g']`: own hosts, then descendants' hosts, each once.
    pub all_hosts: Vec<usize>,
}

impl Default for Group {
    fn default() -> Self {
        Group {
            vars: IndexMap::new(),
            hosts: Vec::new(),
            children: Vec::new(),
            parents: Vec::new(),
            depth: 0,
            priority: 1,
            all_hosts: Vec::new(),
        }
    }
}

/// Which inventory layer set a variable's winning value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VarOrigin {
    /// A `[group:vars]` section (including `[all:vars]`, as `Group("all")`).
    Group(String),
    /// The host's own line (`host k=v`, or `host:port` for `ansible_port`).
    Host,
}

/// A parsed inventory. Immutable after parsing; all queries are cheap.
#[derive(Debug, Clone)]
pub struct Inventory {
    source: PathBuf,
    pub(crate) hosts: IndexMap<String, Host>,
    /// Index 0 is `all`, 1 is `ungrouped`, the rest in order of first declaration.
    pub(crate) groups: IndexMap<String, Group>,
    warnings: Vec<String>,
}

impl Inventory {
    /// Reads and parses the INI inventory at `path`.
    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        let bytes = std::fs::read(path).map_err(|source| InventoryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Inventory::parse_bytes(&bytes, path)
    }

    /// Parses inventory text; `source` names the file in errors and `inventory_file`.
    pub fn parse(text: &str, source: &Path) -> Result<Inventory, InventoryError> {
        let lines: Vec<Result<&str, ()>> = pyutil::splitlines(text).into_iter().map(Ok).collect();
        Inventory::from_lines(&lines, source)
    }

    /// Parses raw file contents. Invalid UTF-8 is tolerated only on comment lines (those whose
    /// first byte is `#` or `;`), as Ansible's fallback decoder does; elsewhere it is an error.
    pub fn parse_bytes(bytes: &[u8], source: &Path) -> Result<Inventory, InventoryError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Inventory::parse(text, source),
            Err(_) => {
                let lines: Vec<Result<&str, ()>> = pyutil::splitlines_bytes(bytes)
                    .into_iter()
                    .map(|l| {
                        if matches!(l.first(), Some(b'#' | b';')) {
                            Ok("")
                        } else {
                            std::str::from_utf8(l).map_err(|_| ())
                        }
                    })
                    .collect();
                Inventory::from_lines(&lines, source)
            }
        }
    }

    fn from_lines(lines: &[Result<&str, ()>], source: &Path) -> Result<Inventory, InventoryError> {
        let file = source.display().to_string();
        let built = parse::build(&file, lines)?;
        Ok(Inventory {
            source: source.to_path_buf(),
            hosts: built.hosts,
            groups: built.groups,
            warnings: built.warnings,
        })
    }

    /// The path the inventory was read from (as given).
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Non-fatal findings Ansible would warn about (group names with characters such as `-`,
    /// a host and a group with the same name).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Host names in the order they first appear in the file.
    pub fn hosts(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.hosts.keys().map(String::as_str)
    }

    /// Whether `name` is a host of this inventory.
    pub fn host_exists(&self, name: &str) -> bool {
        self.hosts.contains_key(name)
    }

    /// Group names: `all`, `ungrouped`, then in order of first declaration.
    pub fn groups(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.groups.keys().map(String::as_str)
    }

    /// Whether `name` is a group of this inventory (`all` and `ungrouped` always are).
    pub fn group_exists(&self, name: &str) -> bool {
        self.groups.contains_key(name)
    }

    fn host_name(&self, i: usize) -> &str {
        self.hosts
            .get_index(i)
            .map(|(n, _)| n.as_str())
            .unwrap_or_default()
    }

    fn group_name(&self, i: usize) -> &str {
        self.groups
            .get_index(i)
            .map(|(n, _)| n.as_str())
            .unwrap_or_default()
    }

    /// Ansible's `groups['g']`: the group's own hosts, then its descendants' hosts (breadth
    /// first, children in declaration order), each host once. `None` for an unknown group.
    pub fn group_hosts(&self, group: &str) -> Option<Vec<String>> {
        let g = self.groups.get(group)?;
        Some(
            g.all_hosts
                .iter()
                .map(|h| self.host_name(*h).to_string())
                .collect(),
        )
    }

    /// Like [`Inventory::group_hosts`] but borrowing the names.
    pub fn group_hosts_iter(&self, group: &str) -> Option<impl Iterator<Item = &str> + '_> {
        let g = self.groups.get(group)?;
        Some(g.all_hosts.iter().map(|h| self.host_name(*h)))
    }

    /// Hosts listed directly under `[group]` (what `--list` shows as the group's `hosts`).
    pub fn group_own_hosts(&self, group: &str) -> Option<Vec<&str>> {
        let g = self.groups.get(group)?;
        Some(g.hosts.iter().map(|h| self.host_name(*h)).collect())
    }

    /// Direct child groups in attachment order.
    pub fn group_children(&self, group: &str) -> Option<Vec<&str>> {
        let g = self.groups.get(group)?;
        Some(g.children.iter().map(|c| self.group_name(*c)).collect())
    }

    /// Direct parent groups.
    pub fn group_parents(&self, group: &str) -> Option<Vec<&str>> {
        let g = self.groups.get(group)?;
        Some(g.parents.iter().map(|c| self.group_name(*c)).collect())
    }

    /// The group's own `[g:vars]` (raw, without `ansible_group_priority`).
    pub fn group_vars(&self, group: &str) -> Option<&IndexMap<String, Value>> {
        self.groups.get(group).map(|g| &g.vars)
    }

    /// The group's depth (longest path from `all`) and `ansible_group_priority`.
    pub fn group_rank(&self, group: &str) -> Option<(u32, i64)> {
        self.groups.get(group).map(|g| (g.depth, g.priority))
    }

    /// The Jinja `groups` magic variable: every group (including `all`, `ungrouped` and empty
    /// groups) mapped to [`Inventory::group_hosts`], in group declaration order.
    pub fn groups_map(&self) -> IndexMap<String, Vec<String>> {
        self.groups
            .iter()
            .map(|(name, g)| {
                (
                    name.clone(),
                    g.all_hosts
                        .iter()
                        .map(|h| self.host_name(*h).to_string())
                        .collect(),
                )
            })
            .collect()
    }

    /// The `group_names` magic variable: the host's groups (ancestors included) sorted, without
    /// `all`; hosts in no other group get `["ungrouped"]`. Empty for an unknown host.
    pub fn group_names(&self, host: &str) -> Vec<String> {
        let Some(h) = self.hosts.get(host) else {
            return Vec::new();
        };
        let mut names: Vec<String> = h
            .groups
            .iter()
            .filter(|g| **g != 0)
            .map(|g| self.group_name(*g).to_string())
            .collect();
        names.sort();
        names
    }

    /// The host's own inline variables (not merged with groups).
    pub fn host_own_vars(&self, host: &str) -> Option<&IndexMap<String, Value>> {
        self.hosts.get(host).map(|h| &h.vars)
    }

    /// The host's groups other than `all`, in Ansible's merge order: (depth, priority, name).
    fn sorted_groups(&self, h: &Host) -> Vec<usize> {
        let mut gs: Vec<usize> = h.groups.iter().copied().filter(|g| *g != 0).collect();
        gs.sort_by(|a, b| {
            let (ga, gb) = (&self.groups[*a], &self.groups[*b]);
            (ga.depth, ga.priority, self.group_name(*a)).cmp(&(
                gb.depth,
                gb.priority,
                self.group_name(*b),
            ))
        });
        gs
    }

    /// Inventory variables of `host` as Ansible merges them: `[all:vars]`, then the host's other
    /// groups sorted by (depth, priority, name) — so children beat parents, higher priority and
    /// later names win — then the host's own vars. Raw values (not templated); empty for an
    /// unknown host.
    pub fn host_vars(&self, host: &str) -> IndexMap<String, Value> {
        self.host_var_origins(host)
            .into_iter()
            .map(|(k, (v, _))| (k, v))
            .collect()
    }

    /// Like [`Inventory::host_vars`], with the layer that set each winning value.
    pub fn host_var_origins(&self, host: &str) -> IndexMap<String, (Value, VarOrigin)> {
        let mut out = IndexMap::new();
        let Some(h) = self.hosts.get(host) else {
            return out;
        };
        let mut layers = vec![0];
        layers.extend(self.sorted_groups(h));
        for g in layers {
            let group = &self.groups[g];
            if group.vars.is_empty() {
                continue;
            }
            let name = self.group_name(g);
            for (k, v) in &group.vars {
                out.insert(k.clone(), (v.clone(), VarOrigin::Group(name.to_string())));
            }
        }
        for (k, v) in &h.vars {
            out.insert(k.clone(), (v.clone(), VarOrigin::Host));
        }
        out
    }

    /// The per-host magic variables Ansible derives from the inventory: `inventory_hostname`,
    /// `inventory_hostname_short` (whole name for IP addresses, else up to the first `.`),
    /// `group_names`, `inventory_file` (absolute path) and `inventory_dir`. In Ansible these
    /// beat inventory variables of the same name (checked: a host var `inventory_dir=/x` is
    /// still the real directory in tasks), so layer them above [`Inventory::host_vars`].
    pub fn magic_vars(&self, host: &str) -> Option<IndexMap<String, Value>> {
        if !self.hosts.contains_key(host) {
            return None;
        }
        let short = if hostrange::is_ipv4(host) || hostrange::is_ipv6(host) {
            host
        } else {
            host.split('.').next().unwrap_or(host)
        };
        let file = absolute(&self.source);
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut m = IndexMap::new();
        m.insert("inventory_hostname".to_string(), Value::from(host));
        m.insert("inventory_hostname_short".to_string(), Value::from(short));
        m.insert(
            "group_names".to_string(),
            Value::from(self.group_names(host)),
        );
        m.insert(
            "inventory_file".to_string(),
            Value::from(file.display().to_string()),
        );
        m.insert(
            "inventory_dir".to_string(),
            Value::from(dir.display().to_string()),
        );
        Some(m)
    }
}

/// Python's `os.path.abspath`: absolute and lexically normalised, symlinks not resolved.
fn absolute(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests;
