//! JSON text the way Go's `encoding/json` writes it.
//!
//! Files and messages the flannel plugin produces are compared byte for byte by people who
//! know the upstream output (the delegate scratch file, error JSON), so the encoder follows
//! Go: numbers held in `interface{}` are float64 (`1e+21`, `1e-7`, `1000`), `<`, `>`, `&`,
//! U+2028 and U+2029 are `\u` escaped, and pretty output indents by four spaces as libcni's
//! `Print` does. Key order is left as it is in the value: Go sorts map keys but keeps struct
//! field order, so callers sort what Go would have held in a map (see [`sort_map_keys`]).

use serde_json::{Number, Value};
use std::fmt::Write;

/// Compact encoding, like `json.Marshal`.
pub fn to_compact(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, None, 0);
    out
}

/// Indented encoding, like `json.MarshalIndent(v, "", "    ")`.
pub fn to_pretty(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, Some("    "), 0);
    out
}

/// Sort the keys of every object in `value`, recursively, as Go does when it encodes a
/// `map[string]interface{}` (byte-wise order, the same as Rust's `str` order).
pub fn sort_map_keys(value: &mut Value) {
    value.sort_all_objects();
}

fn newline(out: &mut String, indent: Option<&str>, depth: usize) {
    if let Some(unit) = indent {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(unit);
        }
    }
}

fn write_value(out: &mut String, value: &Value, indent: Option<&str>, depth: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent, depth + 1);
                write_value(out, item, indent, depth + 1);
            }
            newline(out, indent, depth);
            out.push(']');
        }
        Value::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent, depth + 1);
                write_string(out, key);
                out.push(':');
                if indent.is_some() {
                    out.push(' ');
                }
                write_value(out, item, indent, depth + 1);
            }
            newline(out, indent, depth);
            out.push('}');
        }
    }
}

/// Numbers as Go prints a float64: shortest round-trip digits, exponent form only below
/// 1e-6 or from 1e21 on, with the exponent written `e+21` / `e-7`.
fn write_number(out: &mut String, n: &Number) {
    let Some(f) = n.as_f64() else {
        out.push_str(&n.to_string());
        return;
    };
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let text = format!("{f:e}");
        match text.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => {
                let _ = write!(out, "{mantissa}e+{exp:0>2}");
            }
            _ => out.push_str(&text),
        }
    } else {
        let _ = write!(out, "{f}");
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_follow_go_float64_formatting() {
        let cases = [
            ("1450", "1450"),
            ("1.0", "1"),
            ("1e3", "1000"),
            ("0.5", "0.5"),
            ("0.000001", "0.000001"),
            ("0.0000001", "1e-7"),
            ("1.5e-10", "1.5e-10"),
            ("1e21", "1e+21"),
            ("123456789e20", "1.23456789e+28"),
            ("-2.5", "-2.5"),
            ("0", "0"),
        ];
        for (input, want) in cases {
            let v: Value = serde_json::from_str(input).unwrap();
            assert_eq!(to_compact(&v), want, "input {input}");
        }
    }

    #[test]
    fn strings_escape_like_go() {
        let v = json!("a<b>&c\"d\\e\n\u{1}\u{8}\u{2028}é");
        assert_eq!(
            to_compact(&v),
            r#""a\u003cb\u003e\u0026c\"d\\e\n\u0001\b\u2028é""#
        );
    }

    #[test]
    fn pretty_output_matches_marshal_indent() {
        let v = json!({"b": [1, {"x": []}], "a": {}, "c": true});
        assert_eq!(
            to_pretty(&v),
            "{\n    \"b\": [\n        1,\n        {\n            \"x\": []\n        }\n    ],\n    \"a\": {},\n    \"c\": true\n}"
        );
        let mut sorted = v.clone();
        sort_map_keys(&mut sorted);
        assert_eq!(to_compact(&sorted), r#"{"a":{},"b":[1,{"x":[]}],"c":true}"#);
    }
}
