//! Direct checks of the public template API (the Ansible comparison lives in
//! `template_ansible_cases.rs`).

use installer::template::{environment, eval_native, is_template, py_repr, render_str};
use minijinja::value::{Serde, Value};

fn ctx(json: serde_json::Value) -> Value {
    Value::from(Serde(json))
}

#[test]
fn is_template_matches_ansible_markers() {
    assert!(is_template("https://{{ MASTER_IP }}:8443"));
    assert!(is_template(
        "{% for h in groups['etcd'] %}{{ h }},{% endfor %}"
    ));
    assert!(is_template("{# note #}"));
    assert!(!is_template("10.68.0.0/16"));
    assert!(!is_template("{ not: jinja }"));
}

#[test]
fn eval_native_keeps_lists_dicts_and_bools_but_not_numbers() {
    let env = environment();
    let c = ctx(
        serde_json::json!({"groups": {"kube_master": ["10.0.0.1", "10.0.0.2"]}, "n": 2, "flag": "yes"}),
    );
    let list = eval_native(&env, "{{ groups['kube_master'] }}", c.clone()).unwrap();
    assert_eq!(py_repr(&list), "['10.0.0.1', '10.0.0.2']");
    assert_eq!(list.len(), Some(2));
    let b = eval_native(&env, "{{ flag | bool }}", c.clone()).unwrap();
    assert_eq!(b, Value::from(true));
    // ansible-core 2.14 returns text for numbers
    assert_eq!(
        eval_native(&env, "{{ 1 + 1 }}", c.clone())
            .unwrap()
            .as_str(),
        Some("2")
    );
    assert_eq!(
        eval_native(&env, "{{ n }}", c.clone()).unwrap().as_str(),
        Some("2")
    );
    let d = eval_native(&env, "{{ {'a': [1, none]} }}", c.clone()).unwrap();
    assert_eq!(py_repr(&d), "{'a': [1, None]}");
    // no markup: returned untouched, even if it looks like a list
    assert_eq!(
        eval_native(&env, "[1, 2]", c.clone()).unwrap().as_str(),
        Some("[1, 2]")
    );
    assert_eq!(
        eval_native(&env, "{{ none }}", c).unwrap().as_str(),
        Some("")
    );
}

#[test]
fn eval_native_resolves_kubeasz_style_values() {
    let env = environment();
    let c = ctx(serde_json::json!({
        "groups": {"etcd": ["10.0.0.1", "10.0.0.3"]},
        "hostvars": {"10.0.0.1": {"NODE_NAME": "etcd1"}, "10.0.0.3": {"NODE_NAME": "etcd3"}},
        "MASTER_IP": "10.0.0.100",
    }));
    let tmp = eval_native(
        &env,
        "{% for h in groups['etcd'] %}{{ hostvars[h]['NODE_NAME'] }}=https://{{ h }}:2380,{% endfor %}",
        c.clone(),
    )
    .unwrap();
    assert_eq!(
        tmp.as_str(),
        Some("etcd1=https://10.0.0.1:2380,etcd3=https://10.0.0.3:2380,")
    );
    let c2 = minijinja::context! { TMP_NODES => tmp, ..c };
    let nodes = eval_native(&env, "{{ TMP_NODES.rstrip(',') }}", c2.clone()).unwrap();
    assert_eq!(
        nodes.as_str(),
        Some("etcd1=https://10.0.0.1:2380,etcd3=https://10.0.0.3:2380")
    );
    let api = eval_native(&env, "https://{{ MASTER_IP }}:8443", c2).unwrap();
    assert_eq!(api.as_str(), Some("https://10.0.0.100:8443"));
}

#[test]
fn render_str_keeps_trailing_newlines_like_ansible() {
    let env = environment();
    let c = ctx(serde_json::json!({"a": "v", "nl": "v\n"}));
    assert_eq!(
        render_str(&env, "t.j2", "{{ a }}\n\n", c.clone()).unwrap(),
        "v\n\n"
    );
    assert_eq!(render_str(&env, "t.j2", "{{ a }}", c.clone()).unwrap(), "v");
    assert_eq!(
        render_str(&env, "t.j2", "{{ nl }}\n", c.clone()).unwrap(),
        "v\n"
    );
    assert_eq!(
        render_str(&env, "t.j2", "{% if true %}\nx\n{% endif %}\ny\n", c).unwrap(),
        "x\ny\n"
    );
}

#[test]
fn no_auto_escaping_for_any_extension() {
    let env = environment();
    let c = ctx(serde_json::json!({"s": "<a href=\"x\">&'</a>"}));
    for name in [
        "x.yaml.j2",
        "x.yml.j2",
        "x.json.j2",
        "x.html.j2",
        "x.xml",
        "x.js.j2",
        "x",
    ] {
        assert_eq!(
            render_str(&env, name, "{{ s }}", c.clone()).unwrap(),
            "<a href=\"x\">&'</a>",
            "{name}"
        );
    }
}

#[test]
fn values_print_like_python() {
    let env = environment();
    let c =
        ctx(serde_json::json!({"n": null, "l": ["a", 1, null, true, 1.5], "d": {"z": 1, "a": 2}}));
    let out = render_str(
        &env,
        "t.j2",
        "[{{ n }}] {{ l }} {{ d }} {{ 1e16 }} {{ 0.5 }}",
        c,
    )
    .unwrap();
    assert_eq!(
        out,
        "[] ['a', 1, None, True, 1.5] {'z': 1, 'a': 2} 1e+16 0.5"
    );
}

#[test]
fn jinja2_override_line_keeps_caller_customisation() {
    let mut env = environment();
    env.add_global("cluster", "k8s-01");
    let src = "#jinja2: trim_blocks: False, lstrip_blocks: True\n  {% if true %}\n{{ cluster }}\n  {% endif %}\n";
    let out = render_str(&env, "t.j2", src, ctx(serde_json::json!({}))).unwrap();
    // checked with ansible-core 2.14.4 Templar.do_template
    assert_eq!(out, "\nk8s-01\n");
    // the caller's environment is unchanged afterwards
    let out = render_str(
        &env,
        "t.j2",
        "{% if true %}\n{{ cluster }}\n{% endif %}\n",
        ctx(serde_json::json!({})),
    )
    .unwrap();
    assert_eq!(out, "k8s-01\n");
}
