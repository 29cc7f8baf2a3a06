//! Unit tests of the inventory model: the grammar corners and orderings of ansible-core 2.14
//! (see docs in /work/shared/ansible-compat.md §1), and every error message.

use std::path::Path;

use serde_json::{Value, json};

use super::*;

fn inv(text: &str) -> Inventory {
    Inventory::parse(text, Path::new("inv/hosts")).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    Inventory::parse(text, Path::new("inv/hosts"))
        .unwrap_err()
        .to_string()
}

fn vars(i: &Inventory, host: &str) -> Value {
    Value::Object(i.host_vars(host).into_iter().collect())
}

#[test]
fn redeclared_host_merges_vars_in_file_order() {
    let i = inv("[g1]\nh1 a=1\n[g2]\nh1 a=2 b=3\n");
    assert_eq!(vars(&i, "h1"), json!({"a": 2, "b": 3}));
    assert_eq!(i.group_names("h1"), ["g1", "g2"]);
    assert_eq!(i.hosts().collect::<Vec<_>>(), ["h1"]);
}

#[test]
fn group_hosts_walks_own_hosts_then_children() {
    let i = inv("[p:children]\nc1\nc2\n[p]\nz1\n[c1]\nb\na\n[c2]\na\nc\n");
    assert_eq!(i.group_hosts("p").unwrap(), ["z1", "b", "a", "c"]);
    assert_eq!(i.group_hosts("all").unwrap(), ["z1", "b", "a", "c"]);
    assert_eq!(i.group_hosts("c2").unwrap(), ["a", "c"]);
    assert_eq!(i.group_hosts("nope"), None);
    assert_eq!(i.group_own_hosts("p").unwrap(), ["z1"]);
    assert_eq!(i.group_children("p").unwrap(), ["c1", "c2"]);
    assert_eq!(i.group_parents("c1").unwrap(), ["p"]);
}

#[test]
fn children_attach_in_declaration_order_of_the_child() {
    // c2 exists when listed, c1 only later: c2 is attached first, as in Ansible.
    let i = inv("[c2]\nb\n[p:children]\nc1\nc2\n[c1]\na\n");
    assert_eq!(i.group_children("p").unwrap(), ["c2", "c1"]);
    assert_eq!(i.group_hosts("p").unwrap(), ["b", "a"]);
}

#[test]
fn implicit_groups_and_ungrouped() {
    let i = inv("a\n[g]\nb\n[all]\nc\nb\n[ungrouped]\nd\n[empty]\n");
    let map = i.groups_map();
    assert_eq!(
        map.keys().collect::<Vec<_>>(),
        ["all", "ungrouped", "g", "empty"]
    );
    assert_eq!(map["all"], ["c", "b", "a", "d"]);
    assert_eq!(map["ungrouped"], ["a", "d", "c"]);
    assert!(map["empty"].is_empty());
    assert_eq!(i.group_names("a"), ["ungrouped"]);
    assert_eq!(i.group_names("c"), ["ungrouped"]);
    assert_eq!(i.group_names("b"), ["g"]);
    assert!(i.group_names("nope").is_empty());
    assert_eq!(
        i.group_children("all").unwrap(),
        ["ungrouped", "g", "empty"]
    );
}

#[test]
fn host_leaves_ungrouped_when_grouped_later() {
    let i = inv("h\n[g]\nh\n");
    assert!(i.group_hosts("ungrouped").unwrap().is_empty());
    assert_eq!(i.group_names("h"), ["g"]);
}

#[test]
fn group_names_keep_dashes_and_underscores_apart() {
    let i = inv("[kube-master]\na\n[kube_master]\nb\n");
    assert_eq!(i.group_hosts("kube-master").unwrap(), ["a"]);
    assert_eq!(i.group_hosts("kube_master").unwrap(), ["b"]);
    assert_eq!(i.warnings().len(), 1);
    assert!(
        i.warnings()[0].contains("'kube-master'"),
        "{:?}",
        i.warnings()
    );
}

#[test]
fn host_and_group_with_one_name_warns() {
    let i = inv("[web]\nweb\n");
    assert!(
        i.warnings()
            .iter()
            .any(|w| w == "Found both group and host with same name: web")
    );
}

#[test]
fn merge_order_depth_priority_name_then_host() {
    let text = "\
[grandchild]\nh1 hv=host\n[child:children]\ngrandchild\n[parent:children]\nchild\n[other]\nh1\n\
[grandchild:vars]\nx=grandchild\nhv=group\n[other:vars]\nx=other\n\
[aaa]\nh2\n[zzz]\nh2\n[aaa:vars]\nz=aaa\n[zzz:vars]\nz=zzz\n\
[prio_low]\nh3\n[prio_high]\nh3\n[prio_low:vars]\nansible_group_priority=10\np=low\n[prio_high:vars]\np=high\n\
[all:vars]\nx=all\nonly_all=1\n";
    let i = inv(text);
    let h1 = i.host_var_origins("h1");
    assert_eq!(
        h1["x"],
        (json!("grandchild"), VarOrigin::Group("grandchild".into()))
    );
    assert_eq!(h1["hv"], (json!("host"), VarOrigin::Host));
    assert_eq!(h1["only_all"], (json!(1), VarOrigin::Group("all".into())));
    assert_eq!(vars(&i, "h2")["z"], json!("zzz"));
    assert_eq!(vars(&i, "h3")["p"], json!("low"));
    // ansible_group_priority is a setting, not a variable.
    assert!(!i.host_vars("h3").contains_key("ansible_group_priority"));
    assert_eq!(i.group_rank("prio_low"), Some((1, 10)));
    assert_eq!(i.group_rank("grandchild"), Some((3, 1)));
    // Keys come in first-set order: all's, then the groups', then the host's.
    assert_eq!(
        i.host_vars("h1").keys().collect::<Vec<_>>(),
        ["x", "only_all", "hv"]
    );
}

#[test]
fn depth_is_the_longest_path() {
    let i = inv(
        "[top:children]\nmid\nleaf\n[mid:children]\nleaf\n[leaf]\nh\n[mid:vars]\nv=mid\n[leaf:vars]\nv=leaf\n",
    );
    assert_eq!(i.group_rank("leaf"), Some((3, 1)));
    assert_eq!(vars(&i, "h")["v"], json!("leaf"));
}

#[test]
fn dict_values_are_replaced_not_merged() {
    let i = inv("[a]\nh\n[a:vars]\nd={\"x\": 1}\n[b:children]\na\n[b:vars]\nd={\"y\": 2}\n");
    assert_eq!(vars(&i, "h")["d"], json!({"x": 1}));
    let i = inv("[a]\nh\n[a:vars]\nd={\"x\": 1}\nd={\"y\": 2}\n");
    assert_eq!(vars(&i, "h")["d"], json!({"y": 2}));
}

#[test]
fn typing_differs_between_host_lines_and_vars_lines() {
    let i = inv(
        "[g]\nh a=\"23\" b=\"'23'\" c=foo#x\n[g:vars]\nd=\"23\"\ne=foo # note\nf=8080 # note\ng= spaced  \n",
    );
    assert_eq!(
        vars(&i, "h"),
        json!({"d": "23", "e": "foo # note", "f": 8080, "g": "spaced", "a": 23, "b": "23", "c": "foo"})
    );
}

#[test]
fn ports_ranges_and_ipv6() {
    let i =
        inv("10.0.0.[1:3]:2222\n[2001:db8::1]:2200\n2001:db8::2\nh:0\n[g]\nx:22\n[g2]\nx:33 y=1\n");
    assert_eq!(vars(&i, "10.0.0.2"), json!({"ansible_port": 2222}));
    assert_eq!(vars(&i, "2001:db8::1"), json!({"ansible_port": 2200}));
    assert_eq!(vars(&i, "2001:db8::2"), json!({}));
    assert_eq!(vars(&i, "h"), json!({}));
    // The port only counts when the host is first seen.
    assert_eq!(vars(&i, "x"), json!({"ansible_port": 22, "y": 1}));
    let i = inv("[g]\nh[3:1]\n");
    assert!(i.group_hosts("g").unwrap().is_empty());
    assert_eq!(i.hosts().len(), 0);
}

#[test]
fn comments_and_blank_lines() {
    let i = inv("# c\n; c\n   # indented\n\n[g] # trailing\nh # c\n[g:vars]\n; not a var\nx=1\n");
    assert_eq!(vars(&i, "h"), json!({"x": 1}));
}

#[test]
fn odd_but_accepted_lines() {
    // Whatever follows `[g:vars]` up to the first `=` is the key; a host line that is a
    // single `k=v` word is a host named `k=v`.
    let i = inv("k=v\n[g]\nh\n[g:vars]\na b = c = d\n");
    assert!(i.host_exists("k=v"));
    assert_eq!(vars(&i, "h"), json!({"a b": "c = d"}));
}

#[test]
fn magic_vars() {
    let i = inv("web1.example.test\n10.1.2.3\n");
    let m = i.magic_vars("web1.example.test").unwrap();
    assert_eq!(m["inventory_hostname"], json!("web1.example.test"));
    assert_eq!(m["inventory_hostname_short"], json!("web1"));
    assert_eq!(m["group_names"], json!(["ungrouped"]));
    let file = m["inventory_file"].as_str().unwrap();
    assert!(
        file.starts_with('/') && file.ends_with("/inv/hosts"),
        "{file}"
    );
    assert!(m["inventory_dir"].as_str().unwrap().ends_with("/inv"));
    assert_eq!(
        i.magic_vars("10.1.2.3").unwrap()["inventory_hostname_short"],
        json!("10.1.2.3")
    );
    assert!(i.magic_vars("nope").is_none());
}

#[test]
fn absolute_normalises_lexically() {
    assert_eq!(absolute(Path::new("/a/./b/../c")), Path::new("/a/c"));
}

#[test]
fn crlf_and_other_python_line_breaks() {
    let i = inv("[g]\r\nh1\r\nh2\x0bh3\n");
    assert_eq!(i.group_hosts("g").unwrap(), ["h1", "h2", "h3"]);
    assert_eq!(err("[g]\r\n\r\nh a=\"x\r\n").split(':').nth(1), Some("3"));
}

#[test]
fn non_utf8_is_refused_except_in_comments() {
    let i = Inventory::parse_bytes(b"# caf\xe9\n; \xff\nh\n", Path::new("x")).unwrap();
    assert!(i.host_exists("h"));
    let e = Inventory::parse_bytes(b"# ok\nh a=caf\xe9\n", Path::new("x")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "x:2: line is not valid UTF-8; save the inventory as UTF-8 (line: \"\")"
    );
}

#[test]
fn load_reports_missing_file() {
    let e = Inventory::load(Path::new("/nonexistent/hosts")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot read inventory /nonexistent/hosts: "),
        "{e}"
    );
    assert_eq!(e.line(), None);
}

#[test]
fn every_error_message() {
    let cases: &[(&str, &str)] = &[
        (
            "[g:foo]\n",
            "inv/hosts:1: Section [g:foo] has unknown type: foo (line: \"[g:foo]\")",
        ),
        (
            "[bad section]\n",
            "inv/hosts:1: Invalid section entry: '[bad section]'. Please make sure that there are no spaces in the section entry, and that there are no other invalid characters (line: \"[bad section]\")",
        ),
        (
            "h a=\"x\n",
            "inv/hosts:1: Error parsing host definition 'h a=\"x': No closing quotation (line: \"h a=\\\"x\")",
        ),
        (
            "h a=x\\\n",
            "inv/hosts:1: Error parsing host definition 'h a=x\\': No escaped character (line: \"h a=x\\\\\")",
        ),
        (
            "[g]\n10.0.0.1 foo\n",
            "inv/hosts:2: Expected key=value host variable assignment, got: foo (line: \"10.0.0.1 foo\")",
        ),
        (
            "[g]\nh\n[g:vars]\nnovalue\n",
            "inv/hosts:4: Expected key=value, got: novalue (line: \"novalue\")",
        ),
        (
            "[p:children]\na b\n",
            "inv/hosts:2: Expected group name, got: a b (line: \"a b\")",
        ),
        (
            "[g:vars]\nx=1\n",
            "inv/hosts:1: Section [g:vars] not valid for undefined group: g (line: \"[g:vars]\")",
        ),
        (
            "[p:children]\nx\n[q:children]\nx\n",
            "inv/hosts:2: Section [q:children] includes undefined group: x (line: \"x\")",
        ),
        (
            "[a:children]\nb\n[b:children]\na\n",
            "inv/hosts:4: Adding group 'a' as child to 'b' creates a recursive dependency loop. (line: \"a\")",
        ),
        (
            "[a:children]\na\n",
            "inv/hosts:2: can't add group to itself: a (line: \"a\")",
        ),
        (
            "[g:children]\nall\n",
            "inv/hosts:2: Adding group 'g' as child to 'all' creates a recursive dependency loop. (line: \"all\")",
        ),
        (
            "h:\n",
            "inv/hosts:1: Invalid host pattern 'h:' supplied, ending in ':' is not allowed, this character is reserved to provide a port. (line: \"h:\")",
        ),
        (
            "---\n",
            "inv/hosts:1: Invalid host pattern '---' supplied, '---' is normally a sign this is a YAML file. (line: \"---\")",
        ),
        (
            "\"\"\n",
            "inv/hosts:1: Invalid empty host name provided: \"\" (line: \"\\\"\\\"\")",
        ),
        (
            "[g] ;c\n",
            "inv/hosts:1: host range must be begin:end or begin:end:step (host pattern '[g]') (line: \"[g] ;c\")",
        ),
        (
            "h[1:]\n",
            "inv/hosts:1: host range must specify end value (host pattern 'h[1:]') (line: \"h[1:]\")",
        ),
        (
            "n[01:100]\n",
            "inv/hosts:1: host range must specify equal-length begin and end formats (host pattern 'n[01:100]') (line: \"n[01:100]\")",
        ),
        (
            "h[z:a]\n",
            "inv/hosts:1: host range must have begin <= end (host pattern 'h[z:a]') (line: \"h[z:a]\")",
        ),
        (
            "h[1:3:0]\n",
            "inv/hosts:1: range() arg 3 must not be zero (host pattern 'h[1:3:0]') (line: \"h[1:3:0]\")",
        ),
        (
            "h[a:5]\n",
            "inv/hosts:1: invalid literal for int() with base 10: 'a' (host pattern 'h[a:5]') (line: \"h[a:5]\")",
        ),
        (
            "h[1:3\n",
            "inv/hosts:1: not enough values to unpack (expected 3, got 2) (host pattern 'h[1:3') (line: \"h[1:3\")",
        ),
        (
            "h x=\"{[1]: 2}\"\n",
            "inv/hosts:1: unhashable type: 'list' in the value of 'x'; quote the value to keep it a string (line: \"h x=\\\"{[1]: 2}\\\"\")",
        ),
        (
            "[g]\nh\n[g:vars]\nansible_group_priority=abc\n",
            "inv/hosts:4: ansible_group_priority must be an integer: invalid literal for int() with base 10: 'abc' (line: \"ansible_group_priority=abc\")",
        ),
        (
            "[g]\nh\n[g:vars]\nansible_group_priority=None\n",
            "inv/hosts:4: ansible_group_priority must be an integer: int() argument must be a string, a bytes-like object or a real number, not 'NoneType' (line: \"ansible_group_priority=None\")",
        ),
        (
            "[all:vars]\nfoo:\n  - a\n",
            "inv/hosts:2: Expected key=value, got: foo: (line: \"foo:\")",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(&err(text), want, "input {text:?}");
    }
}

#[test]
fn select_patterns() {
    let i = inv("[web]\nw1\nw2\nw3\n[db]\nd1\nw2\n[lb:children]\nweb\n");
    let s = |p: &str| i.select(p).map_err(|e| e.to_string());
    // `web` sits below `lb`, so its hosts come after the top-level groups' (checked with
    // `ansible -i INV all --list-hosts`).
    assert_eq!(s("all").unwrap(), ["d1", "w2", "w1", "w3"]);
    assert_eq!(s("db:web").unwrap(), ["d1", "w2", "w1", "w3"]);
    assert_eq!(s("web:&db").unwrap(), ["w2"]);
    assert_eq!(s("web:!db").unwrap(), ["w1", "w3"]);
    assert_eq!(s("!db").unwrap(), ["w1", "w3"]);
    assert_eq!(s("web[1:]").unwrap(), ["w2", "w3"]);
    assert_eq!(s("w*").unwrap(), ["w1", "w2", "w3"]);
    assert_eq!(s("~w[13]").unwrap(), ["w1", "w3"]);
    assert_eq!(s("lb").unwrap(), ["w1", "w2", "w3"]);
    assert_eq!(s("localhost").unwrap(), ["localhost"]);
    assert!(!i.host_exists("localhost"));
    assert_eq!(
        s("web,nosuch").unwrap_err(),
        "Could not match supplied host pattern: 'nosuch' (in 'web,nosuch'): no host or group of that name in the inventory"
    );
    assert_eq!(
        s("web[7]").unwrap_err(),
        "No hosts matched the subscripted pattern 'web[7]'"
    );
    assert!(
        s("~(")
            .unwrap_err()
            .starts_with("Invalid host list pattern: ~(: ")
    );
    assert_eq!(s("&").unwrap_err(), "empty host pattern piece in '&'");
    assert_eq!(
        s("@/nonexistent/retry").unwrap_err(),
        "Unable to find limit file /nonexistent/retry"
    );
    assert_eq!(
        s("@/").unwrap_err(),
        "Limit starting with \"@\" must be a file, not a directory: /"
    );
    assert_eq!(i.select_limited("all", Some("db")).unwrap(), ["d1", "w2"]);
    assert_eq!(i.select_limited("web", Some("db")).unwrap(), ["w2"]);
    assert_eq!(i.select_limited("db", None).unwrap(), ["d1", "w2"]);
}

#[test]
fn select_reads_retry_files() {
    let dir = std::env::temp_dir().join(format!("inv-retry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("site.retry");
    std::fs::write(&file, "w3\n\nd1\n").unwrap();
    let i = inv("[web]\nw1\nw2\nw3\n[db]\nd1\n");
    let got = i.select(&format!("@{}", file.display()));
    let limited = i.select_limited("all", Some(&format!("@{}", file.display())));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(got.unwrap(), ["w3", "d1"]);
    assert_eq!(limited.unwrap(), ["w3", "d1"]);
}

#[test]
fn graph_and_host_json_for_unknowns() {
    let i = inv("[g]\nh\n");
    assert_eq!(i.graph(Some("nope")), None);
    assert_eq!(i.host_json("nope"), None);
    assert_eq!(i.graph(Some("g")).unwrap(), "@g:\n  |--h");
    assert_eq!(i.host_json_string("h").unwrap(), "{}");
}

#[test]
fn internal_vars_are_hidden_from_list_but_kept_in_host_vars() {
    let i = inv("h inventory_dir=/x omit=1 keep=2\n");
    assert_eq!(i.host_json("h").unwrap(), json!({"keep": 2}));
    assert_eq!(i.host_vars("h").len(), 3);
}
