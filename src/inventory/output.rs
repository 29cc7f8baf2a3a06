//! `ansible-inventory --list`, `--graph [group]` and `--host H` output, byte for byte as
//! ansible-core 2.14 prints it (JSON with sorted keys, 4-space indent, non-ASCII kept, Python
//! float spelling; graph lines `  |--@group:`).

use std::collections::HashSet;
use std::io;

use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};
use serde_json::{Map, Value};

use super::pyutil::float_repr;
use super::{ALL, Inventory};

/// Variables `ansible-inventory` never prints (its `INTERNAL_VARS`), even if the inventory
/// sets them.
pub const INTERNAL_VARS: &[&str] = &[
    "ansible_diff_mode",
    "ansible_config_file",
    "ansible_facts",
    "ansible_forks",
    "ansible_inventory_sources",
    "ansible_limit",
    "ansible_playbook_python",
    "ansible_run_tags",
    "ansible_skip_tags",
    "ansible_verbosity",
    "ansible_version",
    "inventory_dir",
    "inventory_file",
    "inventory_hostname",
    "inventory_hostname_short",
    "groups",
    "group_names",
    "omit",
    "playbook_dir",
];

/// Sorts every object's keys recursively, as Python's `json.dumps(sort_keys=True)` does.
fn sort_keys(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.sort_keys();
            m.values_mut().for_each(sort_keys);
        }
        Value::Array(a) => a.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

/// Serialises like Python's `json.dumps(v, sort_keys=True, indent=4, ensure_ascii=False)`
/// (keys must already be sorted; [`Inventory::to_list_json`] and friends do that).
pub fn to_ansible_json(v: &Value) -> String {
    let mut buf = Vec::with_capacity(4096);
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, PyFormatter::new());
    // Serialising a Value into a Vec cannot fail.
    if v.serialize(&mut ser).is_err() {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// serde_json's pretty printer with 4-space indent and Python's float `repr`.
struct PyFormatter {
    pretty: PrettyFormatter<'static>,
}

impl PyFormatter {
    fn new() -> Self {
        PyFormatter {
            pretty: PrettyFormatter::with_indent(b"    "),
        }
    }
}

impl Formatter for PyFormatter {
    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(float_repr(value, true).as_bytes())
    }
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.pretty.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.pretty.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.end_object_value(w)
    }
}

impl Inventory {
    /// Host vars as `ansible-inventory` prints them: merged, internal names removed, keys sorted.
    fn printable_host_vars(&self, host: &str) -> Map<String, Value> {
        let mut m: Map<String, Value> = self
            .host_vars(host)
            .into_iter()
            .filter(|(k, _)| !INTERNAL_VARS.contains(&k.as_str()))
            .collect();
        let mut v = Value::Object(std::mem::take(&mut m));
        sort_keys(&mut v);
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn list_group(&self, g: usize, results: &mut Map<String, Value>, seen: &mut HashSet<usize>) {
        let Some((name, group)) = self.groups.get_index(g) else {
            return;
        };
        let mut entry = Map::new();
        if name != ALL && !group.hosts.is_empty() {
            let hosts = group
                .hosts
                .iter()
                .map(|h| Value::from(self.host_name_of(*h)))
                .collect();
            entry.insert("hosts".into(), Value::Array(hosts));
        }
        if !group.children.is_empty() {
            let kids = group
                .children
                .iter()
                .map(|c| Value::from(self.group_name_of(*c)))
                .collect();
            entry.insert("children".into(), Value::Array(kids));
        }
        for &c in &group.children {
            if seen.insert(c) {
                self.list_group(c, results, seen);
            }
        }
        if !entry.is_empty() {
            entry.sort_keys();
            results.insert(name.clone(), Value::Object(entry));
        }
    }

    fn host_name_of(&self, h: usize) -> &str {
        self.hosts
            .get_index(h)
            .map(|(n, _)| n.as_str())
            .unwrap_or_default()
    }

    fn group_name_of(&self, g: usize) -> &str {
        self.groups
            .get_index(g)
            .map(|(n, _)| n.as_str())
            .unwrap_or_default()
    }

    /// `ansible-inventory --list` as a JSON value: one entry per group that has hosts or
    /// children (`all` lists only children), plus `_meta.hostvars` for hosts with variables.
    /// Keys are sorted; `_meta.profile` (2.19 only) is omitted.
    pub fn to_list_json(&self) -> Value {
        let mut results = Map::new();
        let mut seen = HashSet::new();
        self.list_group(0, &mut results, &mut seen);
        let mut hostvars = Map::new();
        for &h in &self.groups[0].all_hosts {
            let name = self.host_name_of(h);
            let vars = self.printable_host_vars(name);
            if !vars.is_empty() {
                hostvars.insert(name.to_string(), Value::Object(vars));
            }
        }
        hostvars.sort_keys();
        let mut meta = Map::new();
        meta.insert("hostvars".into(), Value::Object(hostvars));
        results.insert("_meta".into(), Value::Object(meta));
        results.sort_keys();
        Value::Object(results)
    }

    /// The exact text `ansible-inventory --list` prints (without the final newline).
    pub fn to_list_string(&self) -> String {
        to_ansible_json(&self.to_list_json())
    }

    /// `ansible-inventory --host H`: the host's merged variables (keys sorted, internal names
    /// removed). `None` for an unknown host.
    pub fn host_json(&self, host: &str) -> Option<Value> {
        self.host_exists(host)
            .then(|| Value::Object(self.printable_host_vars(host)))
    }

    /// The exact text `ansible-inventory --host H` prints (without the final newline).
    pub fn host_json_string(&self, host: &str) -> Option<String> {
        self.host_json(host).map(|v| to_ansible_json(&v))
    }

    /// `ansible-inventory --graph [group]` text (lines joined by `\n`, no final newline):
    /// `@group:` lines indented by `  |` per level with `--` before each name; children before
    /// hosts; a group appears under every parent. `None` if `group` is not a group.
    pub fn graph(&self, group: Option<&str>) -> Option<String> {
        let start = self.groups.get_index_of(group.unwrap_or(ALL))?;
        let mut lines = Vec::new();
        self.graph_group(start, 0, &mut lines);
        Some(lines.join("\n"))
    }

    fn graph_group(&self, g: usize, depth: usize, lines: &mut Vec<String>) {
        let Some((name, group)) = self.groups.get_index(g) else {
            return;
        };
        lines.push(graph_line(&format!("@{name}:"), depth));
        for &c in &group.children {
            self.graph_group(c, depth + 1, lines);
        }
        if name != ALL {
            for &h in &group.hosts {
                lines.push(graph_line(self.host_name_of(h), depth + 1));
            }
        }
    }
}

fn graph_line(name: &str, depth: usize) -> String {
    if depth == 0 {
        name.to_string()
    } else {
        format!("{}--{name}", "  |".repeat(depth))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_json_layout() {
        let v = json!({"a": [1, 2.5, 1e16, "é"], "b": {}, "c": [], "d": null});
        assert_eq!(
            to_ansible_json(&v),
            "{\n    \"a\": [\n        1,\n        2.5,\n        1e+16,\n        \"é\"\n    ],\n    \"b\": {},\n    \"c\": [],\n    \"d\": null\n}"
        );
    }
}
