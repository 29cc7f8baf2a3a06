//! Golden tests: our inventory reader against outputs recorded from ansible-core 2.14.4
//! (tests/fixtures/inventory/regen.sh). JSON is compared as values with exact types (int vs
//! float vs string), then as text byte for byte.

use std::fs;
use std::path::{Path, PathBuf};

use installer::inventory::pyliteral::parse_value;
use installer::inventory::{Inventory, ParseErrorKind, PatternError};
use serde_json::Value;

const DIR: &str = "tests/fixtures/inventory";

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Compares two JSON values, requiring the same JSON type everywhere (an int is not a float).
fn same_typed(got: &Value, want: &Value, path: &str) -> Result<(), String> {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) => {
            let kind = |n: &serde_json::Number| if n.is_f64() { "float" } else { "int" };
            if kind(a) != kind(b) {
                return Err(format!("{path}: got {} {a}, want {} {b}", kind(a), kind(b)));
            }
            if a != b {
                return Err(format!("{path}: got {a}, want {b}"));
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                return Err(format!(
                    "{path}: got {} items {got}, want {} {want}",
                    a.len(),
                    b.len()
                ));
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                same_typed(x, y, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (Value::Object(a), Value::Object(b)) => {
            for k in b.keys() {
                if !a.contains_key(k) {
                    return Err(format!("{path}: missing key {k:?}"));
                }
            }
            for (k, x) in a {
                let Some(y) = b.get(k) else {
                    return Err(format!("{path}: unexpected key {k:?} = {x}"));
                };
                same_typed(x, y, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        _ if got == want => Ok(()),
        _ => Err(format!("{path}: got {got}, want {want}")),
    }
}

fn fixtures() -> Vec<PathBuf> {
    let mut specs: Vec<PathBuf> = fs::read_dir(DIR)
        .expect("fixture dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "spec"))
        .collect();
    specs.sort();
    assert!(specs.len() >= 4, "fixtures missing: {specs:?}");
    specs
}

fn load(spec: &Path) -> (Inventory, Value) {
    let inv_path = spec.with_extension("ini");
    let inv = Inventory::load(&inv_path).unwrap_or_else(|e| panic!("{e}"));
    let expected = read_json(&spec.with_extension("expected.json"));
    (inv, expected)
}

#[test]
fn list_matches_ansible_inventory() {
    for spec in fixtures() {
        let (inv, expected) = load(&spec);
        let want_text = expected["list"].as_str().expect("list text");
        let want: Value = serde_json::from_str(want_text).expect("expected --list is JSON");
        if let Err(e) = same_typed(&inv.to_list_json(), &want, "list") {
            panic!("{}: {e}", spec.display());
        }
        assert_eq!(
            format!("{}\n", inv.to_list_string()),
            want_text,
            "{}: --list text",
            spec.display()
        );
    }
}

#[test]
fn graph_matches_ansible_inventory() {
    for spec in fixtures() {
        let (inv, expected) = load(&spec);
        let graphs = expected["graph"].as_object().expect("graph map");
        assert!(!graphs.is_empty());
        for (group, want) in graphs {
            let arg = (!group.is_empty()).then_some(group.as_str());
            let got = inv.graph(arg).unwrap_or_else(|| panic!("no group {group}"));
            assert_eq!(
                format!("{got}\n"),
                want.as_str().unwrap(),
                "{}: --graph {group}",
                spec.display()
            );
        }
    }
}

#[test]
fn host_matches_ansible_inventory() {
    for spec in fixtures() {
        let (inv, expected) = load(&spec);
        for (host, want) in expected["host"].as_object().expect("host map") {
            let want_text = want.as_str().unwrap();
            let want_value: Value = serde_json::from_str(want_text).unwrap();
            let got = inv
                .host_json(host)
                .unwrap_or_else(|| panic!("no host {host}"));
            if let Err(e) = same_typed(&got, &want_value, host) {
                panic!("{}: --host {host}: {e}", spec.display());
            }
            // host_vars (the API the rest of the installer uses) agrees with --host.
            let raw: serde_json::Map<String, Value> = inv.host_vars(host).into_iter().collect();
            same_typed(&Value::Object(raw), &want_value, host).unwrap();
            assert_eq!(
                format!("{}\n", inv.host_json_string(host).unwrap()),
                want_text
            );
        }
    }
}

#[test]
fn groups_and_magic_vars_match_ansible() {
    for spec in fixtures() {
        let (inv, expected) = load(&spec);
        let want: Vec<(String, Vec<String>)> = expected["groups"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(g, hs)| (g.clone(), serde_json::from_value(hs.clone()).unwrap()))
            .collect();
        let got: Vec<(String, Vec<String>)> = inv.groups_map().into_iter().collect();
        assert_eq!(got, want, "{}: groups", spec.display());
        for (g, hs) in &want {
            assert_eq!(inv.group_hosts(g).as_ref(), Some(hs));
        }
        let magic = expected["magic"].as_object().unwrap();
        assert_eq!(magic.len(), inv.hosts().len());
        for (host, want) in magic {
            let got = inv.magic_vars(host).unwrap();
            assert_eq!(got["group_names"], want["group_names"], "{host}");
            assert_eq!(
                got["inventory_hostname_short"], want["inventory_hostname_short"],
                "{host}"
            );
            assert_eq!(Value::from(inv.group_names(host)), want["group_names"]);
        }
    }
}

#[test]
fn patterns_match_ansible_list_hosts() {
    let mut checked = 0;
    for spec in fixtures() {
        let (inv, expected) = load(&spec);
        for case in expected["patterns"].as_array().expect("patterns") {
            let pattern = case["pattern"].as_str().unwrap();
            let limit = case["limit"].as_str();
            let got = inv.select_limited(pattern, limit);
            let what = format!("{}: {pattern} --limit {limit:?}", spec.display());
            match case["error"].as_str() {
                None => {
                    let want: Vec<String> = serde_json::from_value(case["hosts"].clone()).unwrap();
                    assert_eq!(
                        got.as_ref().map_err(ToString::to_string),
                        Ok(&want),
                        "{what}"
                    );
                    if limit.is_none() {
                        assert_eq!(inv.select(pattern).unwrap(), want, "{what}");
                    }
                }
                Some(msg) => {
                    let err = got.expect_err(&what);
                    if let Some(name) =
                        msg.strip_prefix("Could not match supplied host pattern, ignoring: ")
                    {
                        assert!(
                            matches!(&err, PatternError::NoMatch { pattern, .. } if pattern == name),
                            "{what}: {err}"
                        );
                    } else if let Some(p) =
                        msg.strip_prefix("No hosts matched the subscripted pattern ")
                    {
                        assert!(
                            matches!(&err, PatternError::SubscriptOutOfRange(x) if format!("'{x}'") == p),
                            "{what}: {err}"
                        );
                    }
                    // Our message keeps Ansible's leading words.
                    let head: String = msg.split([':', '\'', ',']).next().unwrap().to_string();
                    assert!(
                        err.to_string().starts_with(head.trim()),
                        "{what}: {err} vs {msg}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} pattern cases");
}

#[test]
fn error_messages_match_ansible() {
    let expected = read_json(&Path::new(DIR).join("errors/expected.json"));
    let cases = expected.as_object().unwrap();
    assert!(cases.len() >= 30);
    for (file, want) in cases {
        let path = Path::new(DIR).join("errors").join(file);
        let text = fs::read(&path).unwrap();
        let first = String::from_utf8_lossy(&text)
            .lines()
            .next()
            .unwrap()
            .to_string();
        let expect_line: usize = first
            .strip_prefix("# expect-line: ")
            .unwrap()
            .parse()
            .unwrap();
        let err = Inventory::load(&path).expect_err(file);
        let msg = err.to_string();
        assert_eq!(err.line(), Some(expect_line), "{file}: {msg}");
        assert!(
            msg.starts_with(&format!("{}:{expect_line}: ", path.display())),
            "{msg}"
        );
        match want["message"].as_str() {
            Some(ansible) => {
                let kind = err.kind().unwrap().to_string();
                assert!(
                    kind.contains(ansible),
                    "{file}: ours {kind:?} lacks Ansible's {ansible:?}"
                );
                if let Some(line) = want["line"].as_u64() {
                    assert_eq!(err.line(), Some(line as usize), "{file}");
                }
            }
            // Ansible keeps undecodable bytes in values; we refuse them (documented).
            None => assert_eq!(err.kind(), Some(&ParseErrorKind::InvalidUtf8), "{file}"),
        }
    }
}

#[test]
fn error_display_names_file_line_and_text() {
    let path = Path::new(DIR).join("errors/expected-host-var.ini");
    let err = Inventory::load(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:3: Expected key=value host variable assignment, got: foo (line: \"10.0.0.1 foo\")",
            path.display()
        )
    );
}

/// Inputs whose Python result we deliberately do not reproduce (see pyliteral's docs).
const LITERAL_DEVIATIONS: &[&str] = &[r"'\N{EM DASH}'"];

#[test]
fn literal_typing_matches_ansible() {
    let cases = read_json(&Path::new(DIR).join("literals.expected.json"));
    let cases = cases.as_array().unwrap();
    assert!(cases.len() > 150);
    for case in cases {
        let input = case["input"].as_str().unwrap();
        if LITERAL_DEVIATIONS.contains(&input) {
            assert_eq!(
                parse_value(input).unwrap(),
                Value::String(input.to_string())
            );
            continue;
        }
        if let Some(err) = case.get("error") {
            assert!(parse_value(input).is_err(), "{input}: Ansible raised {err}");
            continue;
        }
        let got = parse_value(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        if let Err(e) = same_typed(&got, &case["value"], input) {
            panic!("{input} ({}): {e}", case["pytype"]);
        }
    }
}
