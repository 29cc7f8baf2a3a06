//! `to_json`, `to_nice_json`, `from_json`, `to_yaml`, `to_nice_yaml`, `from_yaml`.
//!
//! JSON text follows Python's `json.dumps` (`", "`/`": "` separators, ASCII-only
//! output with `\uXXXX` escapes, floats as Python `repr`), since that is what Ansible
//! writes into rendered files.

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Error, ErrorKind, State};
use std::fmt::Write;

use super::args::{bind, ensure_defined, flag, opt_int};
use super::pyfmt::{float_repr, py_str};
use super::pyyaml::{DumpOptions, dump};

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

struct JsonOpts {
    indent: Option<String>,
    sort_keys: bool,
    ensure_ascii: bool,
    item_sep: String,
    key_sep: String,
}

fn json_string(out: &mut String, s: &str, ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ascii && !(' '..='~').contains(&c)) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        float_repr(f)
    }
}

fn json_key(k: &Value) -> Result<String, Error> {
    Ok(match k.kind() {
        ValueKind::String => k.as_str().unwrap_or_default().to_string(),
        ValueKind::Bool => if k.is_true() { "true" } else { "false" }.into(),
        ValueKind::None => "null".into(),
        ValueKind::Number if k.is_integer() => k.to_string(),
        ValueKind::Number => json_float(f64::try_from(k.clone()).unwrap_or(f64::NAN)),
        other => {
            return Err(invalid(format!(
                "to_json: keys must be str, int, float, bool or None, not {other}"
            )));
        }
    })
}

fn write_json(out: &mut String, v: &Value, o: &JsonOpts, level: usize) -> Result<(), Error> {
    let newline = |out: &mut String, level: usize| {
        if let Some(ind) = &o.indent {
            out.push('\n');
            out.push_str(&ind.repeat(level));
        }
    };
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number if v.is_integer() => {
            let _ = write!(out, "{v}");
        }
        ValueKind::Number => {
            out.push_str(&json_float(f64::try_from(v.clone()).unwrap_or(f64::NAN)))
        }
        ValueKind::String => json_string(out, v.as_str().unwrap_or_default(), o.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_sep);
                }
                newline(out, level + 1);
                write_json(out, item, o, level + 1)?;
            }
            newline(out, level);
            out.push(']');
        }
        ValueKind::Map => {
            let mut pairs = Vec::new();
            for k in v.try_iter()? {
                let item = v.get_item(&k)?;
                pairs.push((json_key(&k)?, item));
            }
            if pairs.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if o.sort_keys {
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
            }
            out.push('{');
            for (i, (k, item)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_sep);
                }
                newline(out, level + 1);
                json_string(out, k, o.ensure_ascii);
                out.push_str(&o.key_sep);
                write_json(out, item, o, level + 1)?;
            }
            newline(out, level);
            out.push('}');
        }
        ValueKind::Undefined => return Err(invalid("to_json: value is undefined")),
        other => {
            return Err(invalid(format!(
                "to_json: Object of type {other} is not JSON serializable"
            )));
        }
    }
    Ok(())
}

fn json_dumps(state: &State, value: &Value, kwargs: &Kwargs, nice: bool) -> Result<Value, Error> {
    ensure_defined(state, value)?;
    let indent: Option<Value> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    // Python's json.dumps accepts these; they change nothing for plain data.
    for ignored in [
        "allow_nan",
        "skipkeys",
        "check_circular",
        "vault_to_text",
        "preprocess_unsafe",
    ] {
        let _: Option<Value> = kwargs.get(ignored)?;
    }
    kwargs.assert_all_used()?;
    let indent = match indent {
        Some(i) if i.is_none() => None,
        Some(i) if i.kind() == ValueKind::String => Some(py_str(&i)),
        Some(i) => {
            Some(" ".repeat(opt_int("to_json", "indent", &Some(i))?.unwrap_or(0).max(0) as usize))
        }
        None if nice => Some(" ".repeat(4)),
        None => None,
    };
    let (item_sep, key_sep) = match separators {
        Some(s) if s.len() == 2 => (s[0].clone(), s[1].clone()),
        Some(_) => return Err(invalid("to_json: separators must be a pair of strings")),
        None if nice || indent.is_some() => (",".into(), ": ".into()),
        None => (", ".into(), ": ".into()),
    };
    let opts = JsonOpts {
        indent,
        sort_keys: sort_keys.unwrap_or(nice),
        ensure_ascii: ensure_ascii.unwrap_or(true),
        item_sep,
        key_sep,
    };
    let mut out = String::new();
    write_json(&mut out, value, &opts, 0)?;
    Ok(Value::from(out))
}

/// `to_json(**json.dumps kwargs)`: compact JSON as Python writes it.
pub fn to_json(state: &State, value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    json_dumps(state, value, &kwargs, false)
}

/// `to_nice_json(indent=4, sort_keys=True)`.
pub fn to_nice_json(state: &State, value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    json_dumps(state, value, &kwargs, true)
}

/// `from_json`: parse JSON text into data.
pub fn from_json(state: &State, value: &Value) -> Result<Value, Error> {
    ensure_defined(state, value)?;
    let text = value.as_str().ok_or_else(|| {
        invalid(format!(
            "from_json: expected a string, got {}",
            value.kind()
        ))
    })?;
    let parsed: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| invalid(format!("from_json: {e}")).with_source(e))?;
    Ok(Value::from(minijinja::value::Serde(parsed)))
}

/// `from_yaml`: parse one YAML document (YAML 1.1 booleans, like PyYAML's safe loader);
/// non-strings pass through unchanged.
pub fn from_yaml(state: &State, value: &Value) -> Result<Value, Error> {
    ensure_defined(state, value)?;
    let Some(text) = value.as_str() else {
        return Ok(value.clone());
    };
    if text.trim().is_empty() {
        return Ok(Value::from(()));
    }
    let parsed: serde_json::Value = serde_saphyr::from_str(text)
        .map_err(|e| invalid(format!("from_yaml: {e}")).with_source(e))?;
    Ok(Value::from(minijinja::value::Serde(parsed)))
}

fn yaml_dump(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: &Kwargs,
    nice: bool,
) -> Result<Value, Error> {
    ensure_defined(state, value)?;
    let [
        indent,
        width,
        default_flow_style,
        _allow_unicode,
        _sort_keys,
    ] = bind(
        if nice { "to_nice_yaml" } else { "to_yaml" },
        [
            "indent",
            "width",
            "default_flow_style",
            "allow_unicode",
            "sort_keys",
        ],
        if nice { args } else { &[] },
        kwargs,
    )?;
    if !nice && !args.is_empty() {
        return Err(invalid("to_yaml takes only keyword arguments"));
    }
    let opts = DumpOptions {
        indent: opt_int("to_yaml", "indent", &indent)?
            .unwrap_or(if nice { 4 } else { 2 })
            .max(0) as usize,
        width: opt_int("to_yaml", "width", &width)?.unwrap_or(80).max(0) as usize,
        default_flow_style: if nice {
            Some(false)
        } else {
            default_flow_style
                .filter(|v| !v.is_none())
                .map(|v| flag(&Some(v), false))
        },
    };
    dump(value, &opts).map(Value::from)
}

/// `to_yaml(**yaml.dump kwargs)`: inline style for collections of scalars.
pub fn to_yaml(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<Value, Error> {
    yaml_dump(state, value, args, &kwargs, false)
}

/// `to_nice_yaml(indent=4)`: block style.
pub fn to_nice_yaml(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<Value, Error> {
    yaml_dump(state, value, args, &kwargs, true)
}
