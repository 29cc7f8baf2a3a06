//! Error messages must let an operator find the problem: template name, line, the
//! offending source line, the undefined name, and the cause chain, in one paragraph.

use installer::template::{TemplateError, describe_error, environment, eval_native, render_str};
use minijinja::value::{Serde, Value};
use minijinja::{Error, ErrorKind};

fn ctx() -> Value {
    Value::from(Serde(serde_json::json!({
        "d": {"k": 1},
        "groups": {"etcd": ["10.0.0.1", "10.0.0.2"]},
        "hostvars": {"10.0.0.1": {"NODE_NAME": "etcd1"}, "10.0.0.2": {}},
    })))
}

fn render_err(name: &str, source: &str) -> TemplateError {
    render_str(&environment(), name, source, ctx()).expect_err("template should fail")
}

#[test]
fn undefined_variable_names_template_line_and_variable() {
    let mut source = String::new();
    for i in 1..12 {
        source.push_str(&format!("line {i}\n"));
    }
    source.push_str("  Backend: {{ FLANNEL_BACKEND }}\n");
    let err = render_err("kube-flannel.yaml.j2", &source);
    let msg = err.to_string();
    assert!(
        msg.starts_with("kube-flannel.yaml.j2:12: undefined value 'FLANNEL_BACKEND'"),
        "{msg}"
    );
    assert!(
        msg.contains("Backend: {{ FLANNEL_BACKEND }}"),
        "source line quoted: {msg}"
    );
    assert!(msg.contains("default"), "hint present: {msg}");
    assert!(err.is_undefined());
    assert!(!msg.contains('\n'), "one paragraph: {msg}");
    match err {
        TemplateError::Render { name, line, .. } => {
            assert_eq!(name, "kube-flannel.yaml.j2");
            assert_eq!(line, Some(12));
        }
        other => panic!("unexpected variant {other:?}"),
    }
}

#[test]
fn missing_key_inside_a_loop_names_the_lookup_and_line() {
    let source =
        "nodes:\n{% for h in groups['etcd'] %}\n  - {{ hostvars[h]['NODE_NAME'] }}\n{% endfor %}\n";
    let msg = render_err("etcd.yaml.j2", source).to_string();
    assert!(msg.starts_with("etcd.yaml.j2:3: undefined value"), "{msg}");
    assert!(msg.contains("NODE_NAME"), "{msg}");
}

#[test]
fn missing_dict_key_is_an_error_but_default_works() {
    let err = render_err("a.j2", "ok\n{{ d.missing }}");
    assert!(
        err.to_string()
            .starts_with("a.j2:2: undefined value 'd.missing'"),
        "{err}"
    );
    let out = render_str(
        &environment(),
        "a.j2",
        "{{ d.missing | default('m') }}",
        ctx(),
    )
    .unwrap();
    assert_eq!(out, "m");
}

#[test]
fn syntax_errors_name_template_and_line() {
    let msg = render_err("x.conf.j2", "a\nb\n{% if %}\n{% endif %}\n").to_string();
    assert!(msg.starts_with("x.conf.j2:3: syntax error"), "{msg}");
    assert!(msg.contains("{% if %}"), "{msg}");
}

#[test]
fn filter_errors_include_the_cause_chain() {
    let msg = render_err("b.j2", "{{ 'x!' | b64decode }}").to_string();
    assert!(
        msg.starts_with("b.j2:1: invalid operation: b64decode"),
        "{msg}"
    );
    assert!(msg.contains("; caused by: "), "{msg}");

    // a multi-line cause (regex parse error with a caret diagram) stays one paragraph
    let msg = render_err("c.j2", "\n{{ 'x' | regex_replace('(?<=a)b', '') }}").to_string();
    assert!(msg.starts_with("c.j2:2: "), "{msg}");
    assert!(msg.contains("caused by: regex parse error"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn describe_error_walks_every_source() {
    #[derive(Debug, thiserror::Error)]
    #[error("outer cause")]
    struct Outer(#[source] std::io::Error);
    let err = Error::new(ErrorKind::InvalidOperation, "could not read key")
        .with_source(Outer(std::io::Error::other("disk on fire")));
    let msg = describe_error(&err);
    assert_eq!(
        msg,
        "invalid operation: could not read key; caused by: outer cause; caused by: disk on fire"
    );
}

#[test]
fn unknown_filter_and_method_errors_say_what_is_missing() {
    let msg = render_err("f.j2", "{{ 'x' | to_uuid }}").to_string();
    assert!(msg.starts_with("f.j2:1: unknown filter"), "{msg}");
    assert!(msg.contains("to_uuid"), "{msg}");
    let msg = render_err("m.j2", "{{ 'x'.casefold() }}").to_string();
    assert!(msg.starts_with("m.j2:1: unknown method"), "{msg}");
    assert!(msg.contains("casefold"), "{msg}");
}

#[test]
fn eval_native_errors_quote_the_expression() {
    let err =
        eval_native(&environment(), "{{ TMP_NODES.rstrip(',') }}", ctx()).expect_err("undefined");
    let msg = err.to_string();
    assert!(
        msg.starts_with("expression:1: undefined value 'TMP_NODES'"),
        "{msg}"
    );
    assert!(msg.contains("{{ TMP_NODES.rstrip(',') }}"), "{msg}");
    assert!(err.is_undefined());
}

#[test]
fn bad_override_line_is_reported_on_line_one() {
    let err = render_err("o.j2", "#jinja2: variable_start_string: '[['\nx\n");
    let msg = err.to_string();
    assert!(
        msg.starts_with("o.j2:1: invalid `#jinja2:` override line"),
        "{msg}"
    );
    assert!(msg.contains("variable_start_string"), "{msg}");
    assert!(!err.is_undefined());
}

#[test]
fn mandatory_with_message_uses_it() {
    let msg = render_err("m.j2", "{{ nope | mandatory('set nope in config.yml') }}").to_string();
    assert!(msg.contains("set nope in config.yml"), "{msg}");
    let msg = render_err("m.j2", "{{ nope | mandatory }}").to_string();
    assert!(msg.starts_with("m.j2:1: undefined value 'nope'"), "{msg}");
}
