//! Optional end-to-end check against real kubeasz templates.
//!
//! `tests/fixtures/template/kubeasz_compare.py` renders every template of a kubeasz
//! checkout with Ansible 2.14.4 and writes the sources, variables and outputs to a JSON
//! file (kubeasz itself is not copied into this repository). Point `KUBEASZ_CASES` at
//! that file to compare: every template must render byte for byte the same, or fail on
//! both sides. Without the variable the test prints a notice and does nothing.

use installer::template::{environment, render_str};
use minijinja::value::{Serde, Value};

#[test]
fn kubeasz_templates_render_like_ansible() {
    let Ok(path) = std::env::var("KUBEASZ_CASES") else {
        eprintln!(
            "skipping: set KUBEASZ_CASES to the output of tests/fixtures/template/kubeasz_compare.py"
        );
        return;
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).expect("parse cases");
    assert!(!cases.is_empty(), "{path} holds no templates");
    let env = environment();
    let mut failures = Vec::new();
    for case in &cases {
        let path = case["path"].as_str().unwrap_or("?");
        let name = path.rsplit('/').next().unwrap_or(path);
        let source = case["source"].as_str().unwrap_or_default();
        let got = render_str(&env, name, source, Value::from(Serde(case["vars"].clone())));
        match (got, case.get("output").and_then(|o| o.as_str())) {
            (Ok(ours), Some(theirs)) if ours == theirs => {}
            (Err(_), None) => {}
            (Ok(ours), Some(theirs)) => {
                let line = ours
                    .lines()
                    .zip(theirs.lines())
                    .position(|(a, b)| a != b)
                    .map(|i| i + 1)
                    .unwrap_or(ours.lines().count().min(theirs.lines().count()) + 1);
                failures.push(format!("{path}: output differs from line {line}"));
            }
            (Ok(_), None) => failures.push(format!(
                "{path}: Ansible failed ({}) but we rendered",
                case["error"]
            )),
            (Err(e), Some(_)) => {
                failures.push(format!("{path}: Ansible rendered but we failed: {e}"))
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} templates differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
