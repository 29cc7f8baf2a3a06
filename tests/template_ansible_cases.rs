//! Renders every case of `tests/fixtures/template/ansible_cases.json` with our
//! environment and compares with what ansible-core 2.14.4 produced for it.
//!
//! `template` cases went through Ansible's `template` module; `expr` cases are variable
//! values that Ansible resolved for `msg: "{{ case_value }}"` (Templar, non-native
//! mode), so here they are resolved the same way: once for the variable's own value and
//! once for the `{{ case_value }}` reference.

use installer::template::{environment, eval_native, render_str};
use minijinja::value::{Serde, Value};
use serde_json::{Map, Value as Json};

/// Cases where we knowingly differ from Ansible (see the module docs of
/// `installer::template`). The test checks that they still differ, so a fix is noticed.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    (
        "err_undefined_chain",
        "Ansible's undefined is chainable (`nope.attr | default('z')` works); minijinja strict mode errors",
    ),
    (
        "gap_percent_format",
        "minijinja has no Python `%` string formatting (use the `format` filter)",
    ),
    (
        "gap_regex_dollar",
        "the regex crate's `$` does not match before a final newline as Python's does",
    ),
];

fn fixture() -> Json {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/template/ansible_cases.json"
    );
    let text = std::fs::read_to_string(path).expect("read fixture");
    serde_json::from_str(&text).expect("parse fixture")
}

fn context(base: &Json, vars: &Json) -> Map<String, Json> {
    let mut ctx = base.as_object().cloned().unwrap_or_default();
    for (k, v) in vars.as_object().cloned().unwrap_or_default() {
        ctx.insert(k, v);
    }
    ctx
}

/// What our side produced, in the fixture's `expected` shape.
fn run_case(case: &Json, base: &Json) -> Json {
    let env = environment();
    let ctx = context(base, &case["vars"]);
    let source = case["source"].as_str().expect("source");
    match case["kind"].as_str() {
        Some("template") => {
            let name = case["name"].as_str().expect("name");
            match render_str(&env, name, source, Value::from(Serde(Json::Object(ctx)))) {
                Ok(out) => serde_json::json!({ "output": out }),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            }
        }
        Some("expr") => {
            let first = eval_native(&env, source, Value::from(Serde(Json::Object(ctx.clone()))));
            let second = first.and_then(|v| {
                let mut ctx2 = Value::from(Serde(Json::Object(ctx)));
                ctx2 = minijinja::context! { case_value => v, ..ctx2 };
                eval_native(&env, "{{ case_value }}", ctx2)
            });
            match second {
                Ok(v) => {
                    serde_json::json!({ "value": serde_json::to_value(&v).expect("serialize") })
                }
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            }
        }
        other => panic!("unknown case kind {other:?}"),
    }
}

fn matches(expected: &Json, got: &Json) -> bool {
    match (expected.get("error"), got.get("error")) {
        (Some(_), Some(_)) => true,
        (None, None) => expected == got,
        _ => false,
    }
}

#[test]
fn every_fixture_case_renders_like_ansible_2_14() {
    let fx = fixture();
    assert_eq!(
        fx["ansible_core"], "2.14.4",
        "fixture must come from ansible-core 2.14.4"
    );
    let base = &fx["context"];
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() > 150, "fixture unexpectedly small");
    let mut failures = Vec::new();
    let mut known_seen = 0;
    for case in cases {
        let id = case["id"].as_str().unwrap_or("?");
        let expected = &case["expected"];
        let got = run_case(case, base);
        let same = matches(expected, &got);
        if let Some((_, why)) = KNOWN_DIFFERENCES.iter().find(|(k, _)| *k == id) {
            known_seen += 1;
            if same {
                failures.push(format!("{id}: listed as a known difference ({why}) but now matches Ansible; remove it from KNOWN_DIFFERENCES"));
            }
            continue;
        }
        if !same {
            failures.push(format!(
                "{id}:\n  source:   {:?}\n  ansible:  {}\n  ours:     {}",
                case["source"].as_str().unwrap_or_default(),
                expected,
                got
            ));
        }
    }
    assert_eq!(
        known_seen,
        KNOWN_DIFFERENCES.len(),
        "a known-difference case is missing from the fixture"
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from Ansible:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Errors must keep naming the template for every failing case.
#[test]
fn error_cases_name_the_template() {
    let fx = fixture();
    for case in fx["cases"].as_array().expect("cases") {
        if case["kind"] != "template" || case["expected"].get("error").is_none() {
            continue;
        }
        let got = run_case(case, &fx["context"]);
        let msg = got["error"].as_str().unwrap_or_default();
        let name = case["name"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with(&format!("{name}:")),
            "{}: error does not start with the template name: {msg}",
            case["id"]
        );
    }
}
