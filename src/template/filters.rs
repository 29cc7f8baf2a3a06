//! Ansible and Jinja2 filters whose semantics minijinja lacks or differs on.
//!
//! Each function documents the Python behaviour it reproduces (ansible-core 2.14
//! `plugins/filter/core.py` / `mathstuff.py`, Jinja2 3.1 `filters.py`); the cases in
//! `tests/fixtures/template/ansible_cases.json` were produced by Ansible itself.

use base64::Engine as _;
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Error, ErrorKind, State};

use super::args::{bind, ensure_defined, flag, opt_int, opt_str};
use super::pyfmt::py_str;
use super::pyvalue::{as_f64, parse_py_float, parse_py_int, py_contains, py_eq, to_list};

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

/// `bool`: Ansible's `to_bool`. `None` and real bools pass through; strings are
/// lower-cased and `yes`/`on`/`1`/`true` mean true; the number 1 is true; anything
/// else (including `y`, `2` and lists) is false.
pub fn bool_filter(state: &State, value: &Value) -> Result<Value, Error> {
    ensure_defined(state, value)?;
    Ok(match value.kind() {
        ValueKind::None | ValueKind::Bool => value.clone(),
        ValueKind::String => Value::from(matches!(
            value.as_str().unwrap_or_default().to_lowercase().as_str(),
            "yes" | "on" | "1" | "true"
        )),
        ValueKind::Number => Value::from(as_f64(value) == Some(1.0)),
        _ => Value::from(false),
    })
}

/// `int(default=0, base=10)`: Jinja2's `do_int`. Strings are parsed like Python
/// `int(s, base)`, then like `int(float(s))` ("10.4" → 10); whatever fails gives
/// `default` ("abc" → 0).
pub fn int_filter(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<Value, Error> {
    ensure_defined(state, value)?;
    let [default, base] = bind("int", ["default", "base"], args, &kwargs)?;
    let default = default.unwrap_or_else(|| Value::from(0));
    let base = opt_int("int", "base", &base)?.unwrap_or(10);
    let from_float = |f: f64| -> Result<Value, Error> {
        if f.is_nan() {
            Ok(default.clone())
        } else if f.is_infinite() {
            Err(invalid("int(): cannot convert float infinity to integer"))
        } else {
            Ok(Value::from(f.trunc() as i128))
        }
    };
    match value.kind() {
        ValueKind::String => {
            let s = value.as_str().unwrap_or_default();
            let base = u32::try_from(base)
                .ok()
                .filter(|b| *b == 0 || (2..=36).contains(b));
            if let Some(n) = base.and_then(|b| parse_py_int(s, b)) {
                return Ok(Value::from(n));
            }
            match parse_py_float(s) {
                Some(f) => from_float(f),
                None => Ok(default),
            }
        }
        ValueKind::Bool => Ok(Value::from(i64::from(value.is_true()))),
        ValueKind::Number if value.is_integer() => Ok(value.clone()),
        ValueKind::Number => from_float(as_f64(value).unwrap_or(f64::NAN)),
        _ => Ok(default),
    }
}

/// `float(default=0.0)`: Jinja2's `do_float`, i.e. Python `float(value)` or `default`
/// ("20.10.24" → 0.0, "1e3" → 1000.0, None → 0.0).
pub fn float_filter(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<Value, Error> {
    ensure_defined(state, value)?;
    let [default] = bind("float", ["default"], args, &kwargs)?;
    let default = default.unwrap_or_else(|| Value::from(0.0));
    let f = match value.kind() {
        ValueKind::String => parse_py_float(value.as_str().unwrap_or_default()),
        ValueKind::Number | ValueKind::Bool => as_f64(value),
        _ => None,
    };
    Ok(f.map(Value::from).unwrap_or(default))
}

/// `string`: Python `str()` (`None` → "None", lists as their repr).
pub fn string_filter(state: &State, value: &Value) -> Result<Value, Error> {
    ensure_defined(state, value)?;
    Ok(Value::from(py_str(value)))
}

/// `join(d='', attribute=None)`: Jinja2's join with Python `str()` of every item.
pub fn join(state: &State, value: &Value, args: &[Value], kwargs: Kwargs) -> Result<Value, Error> {
    ensure_defined(state, value)?;
    let [sep, attribute] = bind("join", ["d", "attribute"], args, &kwargs)?;
    let sep = sep.map(|s| py_str(&s)).unwrap_or_default();
    let items =
        to_list(value).ok_or_else(|| invalid(format!("join: {} is not iterable", value.kind())))?;
    let mut parts = Vec::with_capacity(items.len());
    for item in items {
        let item = match &attribute {
            Some(attr) => get_path(&item, attr)?,
            None => item,
        };
        ensure_defined(state, &item)?;
        parts.push(py_str(&item));
    }
    Ok(Value::from(parts.join(&sep)))
}

/// Jinja2's attribute getter: `a.b.0` walks dicts and (integer) list indexes.
fn get_path(item: &Value, attr: &Value) -> Result<Value, Error> {
    if let Some(path) = attr.as_str() {
        let mut cur = item.clone();
        for part in path.split('.') {
            cur = match part.parse::<usize>() {
                Ok(i) if cur.kind() == ValueKind::Seq => cur.get_item_by_index(i)?,
                _ => cur.get_attr(part)?,
            };
        }
        Ok(cur)
    } else {
        item.get_item(attr)
    }
}

/// `ternary(true_val, false_val, none_val=None)`.
pub fn ternary(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<Value, Error> {
    ensure_defined(state, value)?;
    let [t, f, n] = bind(
        "ternary",
        ["true_val", "false_val", "none_val"],
        args,
        &kwargs,
    )?;
    let (Some(t), Some(f)) = (t, f) else {
        return Err(Error::new(
            ErrorKind::MissingArgument,
            "ternary() needs true_val and false_val",
        ));
    };
    Ok(match n {
        Some(n) if value.is_none() && !n.is_none() => n,
        _ if value.is_true() => t,
        _ => f,
    })
}

/// `mandatory(msg=None)`: the value, or an error if it is undefined.
pub fn mandatory(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let [msg] = bind("mandatory", ["msg"], args, &kwargs)?;
    if value.is_undefined() {
        if let Some(msg) = msg.filter(|m| !m.is_none()) {
            return Err(invalid(py_str(&msg)));
        }
        // minijinja's own undefined error names the expression ("`nope` is undefined").
        ensure_defined(state, value)?;
        return Err(Error::new(
            ErrorKind::UndefinedError,
            "mandatory variable not defined",
        ));
    }
    Ok(value.clone())
}

/// `quote`: Python `shlex.quote(str(value))`; `None` quotes as ''.
pub fn quote(state: &State, value: &Value) -> Result<Value, Error> {
    ensure_defined(state, value)?;
    let s = if value.is_none() {
        String::new()
    } else {
        py_str(value)
    };
    Ok(Value::from(shell_quote(&s)))
}

/// Python's `shlex.quote`.
pub fn shell_quote(s: &str) -> String {
    if s.is_empty() {
        return "''".into();
    }
    let safe = s
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\"'\"'"))
    }
}

fn check_encoding(filter: &str, enc: &Option<Value>) -> Result<(), Error> {
    match opt_str(filter, "encoding", enc)? {
        None => Ok(()),
        Some(e)
            if matches!(
                e.to_lowercase().replace('_', "-").as_str(),
                "utf-8" | "utf8"
            ) =>
        {
            Ok(())
        }
        Some(e) => Err(invalid(format!(
            "{filter}: only utf-8 encoding is supported, got {e:?}"
        ))),
    }
}

/// `b64encode(encoding='utf-8')` of `str(value)`.
pub fn b64encode(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<Value, Error> {
    ensure_defined(state, value)?;
    let [enc] = bind("b64encode", ["encoding"], args, &kwargs)?;
    check_encoding("b64encode", &enc)?;
    let bytes = match value.as_bytes() {
        Some(b) if value.kind() == ValueKind::Bytes => b.to_vec(),
        _ => py_str(value).into_bytes(),
    };
    Ok(Value::from(
        base64::engine::general_purpose::STANDARD.encode(bytes),
    ))
}

/// `b64decode(encoding='utf-8')`: like Python's non-validating `base64.b64decode`,
/// characters outside the alphabet are skipped; the result must be UTF-8 text.
pub fn b64decode(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<Value, Error> {
    ensure_defined(state, value)?;
    let [enc] = bind("b64decode", ["encoding"], args, &kwargs)?;
    check_encoding("b64decode", &enc)?;
    let text = py_str(value);
    let cleaned: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .map_err(|e| invalid(format!("b64decode: {e}")).with_source(e))?;
    String::from_utf8(bytes)
        .map(Value::from)
        .map_err(|e| invalid("b64decode: decoded data is not valid UTF-8").with_source(e))
}

fn path_arg(state: &State, filter: &str, value: &Value) -> Result<String, Error> {
    ensure_defined(state, value)?;
    value.as_str().map(str::to_string).ok_or_else(|| {
        invalid(format!(
            "{filter}: expected a path string, got {}",
            value.kind()
        ))
    })
}

/// `basename`: Python `os.path.basename` (text after the last `/`).
pub fn basename(state: &State, value: &Value) -> Result<Value, Error> {
    let p = path_arg(state, "basename", value)?;
    Ok(Value::from(p.rsplit('/').next().unwrap_or_default()))
}

/// `dirname`: Python `os.path.dirname` (trailing slashes of the head removed unless it
/// is all slashes).
pub fn dirname(state: &State, value: &Value) -> Result<Value, Error> {
    let p = path_arg(state, "dirname", value)?;
    let head = match p.rfind('/') {
        Some(i) => &p[..=i],
        None => "",
    };
    let head = if !head.is_empty() && !head.bytes().all(|c| c == b'/') {
        head.trim_end_matches('/')
    } else {
        head
    };
    Ok(Value::from(head))
}

/// `comment(style='plain', **params)`: Ansible's comment decorator. Plain style turns
/// "text" into "#\n# text\n#".
pub fn comment(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<Value, Error> {
    ensure_defined(state, value)?;
    let [
        style,
        decoration,
        beginning,
        prefix,
        prefix_count,
        postfix,
        postfix_count,
        end,
        newline,
    ] = bind(
        "comment",
        [
            "style",
            "decoration",
            "beginning",
            "prefix",
            "prefix_count",
            "postfix",
            "postfix_count",
            "end",
            "newline",
        ],
        args,
        &kwargs,
    )?;
    let style = opt_str("comment", "style", &style)?.unwrap_or_else(|| "plain".into());
    let (s_begin, s_deco, s_end) = match style.as_str() {
        "plain" => ("", "# ", ""),
        "erlang" => ("", "% ", ""),
        "c" => ("", "// ", ""),
        "cblock" => ("/*", " * ", " */"),
        "xml" => ("<!--", " - ", "-->"),
        other => {
            return Err(invalid(format!(
                "comment: unknown style {other:?} (use plain, erlang, c, cblock or xml)"
            )));
        }
    };
    let text_of = |v: &Option<Value>| v.as_ref().map(py_str);
    let prepostfix = text_of(&decoration).unwrap_or_else(|| s_deco.to_string());
    let newline = text_of(&newline).unwrap_or_else(|| "\n".into());
    let beginning = text_of(&beginning).unwrap_or_else(|| s_begin.to_string());
    let prefix = text_of(&prefix).unwrap_or_else(|| prepostfix.trim_end().to_string());
    let postfix = text_of(&postfix).unwrap_or_else(|| prepostfix.trim_end().to_string());
    let end = text_of(&end).unwrap_or_else(|| s_end.to_string());
    // With a style's own decoration the per-line decoration is the style's; an explicit
    // `decoration=` replaces it (Ansible updates the parameter dict in that order).
    let deco = if decoration.is_some() {
        prepostfix.clone()
    } else {
        s_deco.to_string()
    };
    let count = |v: &Option<Value>| -> Result<usize, Error> {
        Ok(opt_int("comment", "count", v)?.unwrap_or(1).max(0) as usize)
    };
    let (prefix_count, postfix_count) = (count(&prefix_count)?, count(&postfix_count)?);
    let text = py_str(value);

    let mut out = String::new();
    if !beginning.is_empty() {
        out.push_str(&beginning);
        out.push_str(&newline);
    }
    if !prefix.is_empty() {
        let unit = if prefix != newline {
            format!("{prefix}{newline}")
        } else {
            newline.clone()
        };
        out.push_str(&unit.repeat(prefix_count));
    }
    let body = format!(
        "{deco}{}",
        text.replace(&newline, &format!("{newline}{deco}"))
    );
    out.push_str(&body.replace(
        &format!("{deco}{newline}"),
        &format!("{}{newline}", deco.trim_end()),
    ));
    for _ in 0..postfix_count {
        out.push_str(&newline);
        out.push_str(&postfix);
    }
    if !end.is_empty() {
        out.push_str(&newline);
        out.push_str(&end);
    }
    Ok(Value::from(out))
}

/// `truncate(length=255, killwords=False, end='...', leeway=5)`: Jinja2's truncate,
/// accepting positional arguments.
pub fn truncate(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<Value, Error> {
    ensure_defined(state, value)?;
    let [length, killwords, end, leeway] = bind(
        "truncate",
        ["length", "killwords", "end", "leeway"],
        args,
        &kwargs,
    )?;
    let length = opt_int("truncate", "length", &length)?.unwrap_or(255);
    let killwords = flag(&killwords, false);
    let end = end.map(|e| py_str(&e)).unwrap_or_else(|| "...".into());
    let leeway = opt_int("truncate", "leeway", &leeway)?.unwrap_or(5);
    let end_len = end.chars().count() as i128;
    if length < end_len {
        return Err(invalid(format!(
            "truncate: expected length >= {end_len}, got {length}"
        )));
    }
    if leeway < 0 {
        return Err(invalid(format!(
            "truncate: expected leeway >= 0, got {leeway}"
        )));
    }
    let s = py_str(value);
    let chars: Vec<char> = s.chars().collect();
    if chars.len() as i128 <= length.saturating_add(leeway) {
        return Ok(Value::from(s));
    }
    let keep: String = chars[..(length - end_len) as usize].iter().collect();
    if killwords {
        return Ok(Value::from(keep + &end));
    }
    let cut = match keep.rfind(' ') {
        Some(i) => &keep[..i],
        None => keep.as_str(),
    };
    Ok(Value::from(format!("{cut}{end}")))
}

/// `combine(*dicts, recursive=False, list_merge='replace')`: Ansible's dict merge where
/// later dicts win. A list of dicts is flattened one level; `None` items are skipped.
pub fn combine(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<Value, Error> {
    ensure_defined(state, value)?;
    let recursive = kwargs
        .get::<Option<Value>>("recursive")?
        .is_some_and(|v| v.is_true());
    let list_merge = kwargs
        .get::<Option<String>>("list_merge")?
        .unwrap_or_else(|| "replace".into());
    kwargs.assert_all_used()?;
    if !matches!(
        list_merge.as_str(),
        "replace" | "keep" | "append" | "prepend" | "append_rp" | "prepend_rp"
    ) {
        return Err(invalid(format!(
            "combine: list_merge must be replace, keep, append, prepend, append_rp or prepend_rp, got {list_merge:?}"
        )));
    }
    let mut dicts = Vec::new();
    for term in std::iter::once(value).chain(args.iter()) {
        if is_null_like(term) {
            continue;
        }
        if term.kind() == ValueKind::Seq {
            for inner in term.try_iter()? {
                if !is_null_like(&inner) {
                    dicts.push(inner);
                }
            }
        } else {
            dicts.push(term.clone());
        }
    }
    let Some(mut result) = dicts.pop() else {
        return Ok(Value::from_pairs(Vec::<(Value, Value)>::new()));
    };
    while let Some(lower) = dicts.pop() {
        result = merge_hash(&lower, &result, recursive, &list_merge)?;
    }
    Ok(result)
}

fn is_null_like(v: &Value) -> bool {
    v.is_none() || matches!(v.as_str(), Some("None" | "null"))
}

fn map_pairs(v: &Value) -> Result<Vec<(Value, Value)>, Error> {
    if v.kind() != ValueKind::Map {
        return Err(invalid(format!(
            "combine: failed to combine variables, expected dicts but got a '{}'",
            v.kind()
        )));
    }
    let mut out = Vec::new();
    for k in v.try_iter()? {
        let item = v.get_item(&k)?;
        out.push((k, item));
    }
    Ok(out)
}

/// Ansible's `merge_hash(x, y)`: keys of `y` win over keys of `x`.
fn merge_hash(x: &Value, y: &Value, recursive: bool, list_merge: &str) -> Result<Value, Error> {
    let mut out = map_pairs(x)?;
    let y_pairs = map_pairs(y)?;
    if out.is_empty() {
        return Ok(Value::from_pairs(y_pairs));
    }
    for (key, y_value) in y_pairs {
        let Some(slot) = out.iter_mut().find(|(k, _)| py_eq(k, &key)) else {
            out.push((key, y_value));
            continue;
        };
        let x_value = slot.1.clone();
        slot.1 = match (x_value.kind(), y_value.kind()) {
            (ValueKind::Map, ValueKind::Map) if recursive => {
                merge_hash(&x_value, &y_value, recursive, list_merge)?
            }
            (ValueKind::Seq, ValueKind::Seq) if !x_value.is_tuple() && !y_value.is_tuple() => {
                let xs: Vec<Value> = x_value.try_iter()?.collect();
                let ys: Vec<Value> = y_value.try_iter()?.collect();
                let x_only: Vec<Value> = xs
                    .iter()
                    .filter(|z| !py_contains(&ys, z))
                    .cloned()
                    .collect();
                Value::from(match list_merge {
                    "keep" => xs,
                    "append" => [xs, ys].concat(),
                    "prepend" => [ys, xs].concat(),
                    "append_rp" => [x_only, ys].concat(),
                    "prepend_rp" => [ys, x_only].concat(),
                    _ => ys,
                })
            }
            _ => y_value,
        };
    }
    Ok(Value::from_pairs(out))
}

fn list_arg(filter: &str, v: &Value) -> Result<Vec<Value>, Error> {
    match v.kind() {
        ValueKind::Seq | ValueKind::Iterable => Ok(v.try_iter()?.collect()),
        other => Err(invalid(format!("{filter}: expected a list, got {other}"))),
    }
}

/// Order-preserving unique; `fold_case` compares strings case-insensitively.
fn unique_values(items: Vec<Value>, fold_case: bool) -> Vec<Value> {
    let key = |v: &Value| -> Value {
        match v.as_str() {
            Some(s) if fold_case => Value::from(s.to_lowercase()),
            _ => v.clone(),
        }
    };
    let mut seen: Vec<Value> = Vec::new();
    let mut out = Vec::new();
    for item in items {
        let k = key(&item);
        if !py_contains(&seen, &k) {
            seen.push(k);
            out.push(item);
        }
    }
    out
}

/// `unique(case_sensitive=False, attribute=None)`: Ansible 2.14 calls Jinja2's unique
/// with `case_sensitive=False` by default, so `['a', 'A'] | unique` is `['a']`.
pub fn unique(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<Value, Error> {
    ensure_defined(state, value)?;
    let [case_sensitive, attribute] =
        bind("unique", ["case_sensitive", "attribute"], args, &kwargs)?;
    let fold = !flag(&case_sensitive, false);
    let items = list_arg("unique", value)?;
    match attribute {
        None => Ok(Value::from(unique_values(items, fold))),
        Some(attr) => {
            let mut seen: Vec<Value> = Vec::new();
            let mut out = Vec::new();
            for item in items {
                let mut k = get_path(&item, &attr)?;
                if let (true, Some(s)) = (fold, k.as_str()) {
                    k = Value::from(s.to_lowercase());
                }
                if !py_contains(&seen, &k) {
                    seen.push(k);
                    out.push(item);
                }
            }
            Ok(Value::from(out))
        }
    }
}

/// `difference(b)`: items of the list not in `b`, unique, in order (case-sensitive).
pub fn difference(state: &State, a: &Value, b: &Value) -> Result<Value, Error> {
    ensure_defined(state, a)?;
    ensure_defined(state, b)?;
    let (a, b) = (list_arg("difference", a)?, list_arg("difference", b)?);
    let kept = a.into_iter().filter(|x| !py_contains(&b, x)).collect();
    Ok(Value::from(unique_values(kept, false)))
}

/// `intersect(b)`: items of the list also in `b`, unique, in order.
pub fn intersect(state: &State, a: &Value, b: &Value) -> Result<Value, Error> {
    ensure_defined(state, a)?;
    ensure_defined(state, b)?;
    let (a, b) = (list_arg("intersect", a)?, list_arg("intersect", b)?);
    let kept = a.into_iter().filter(|x| py_contains(&b, x)).collect();
    Ok(Value::from(unique_values(kept, false)))
}

/// `union(b)`: `a + b`, unique, in order.
pub fn union(state: &State, a: &Value, b: &Value) -> Result<Value, Error> {
    ensure_defined(state, a)?;
    ensure_defined(state, b)?;
    let (a, b) = (list_arg("union", a)?, list_arg("union", b)?);
    Ok(Value::from(unique_values([a, b].concat(), false)))
}

/// `random(end, start=None, step=None, seed=None)`: Ansible's random. An integer `end`
/// gives `randrange(start, end, step)`, a list (or string) a random item. With a seed the
/// result equals Python's `random.Random(seed)`, so it is reproducible across runs and
/// identical to what Ansible would pick.
pub fn random(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<Value, Error> {
    ensure_defined(state, value)?;
    let [start, step, seed] = bind("random", ["start", "step", "seed"], args, &kwargs)?;
    let mut rng = match seed.filter(|s| !s.is_none()) {
        None => super::pyrandom::PyRandom::from_entropy(),
        Some(seed) => super::pyrandom::PyRandom::from_seed(&seed)?,
    };
    if matches!(value.kind(), ValueKind::Number | ValueKind::Bool)
        && (value.is_integer() || value.kind() == ValueKind::Bool)
    {
        let end = super::pyvalue::as_i128(value).unwrap_or(0);
        // Ansible: `if not start: start = 0`, `if not step: step = 1`
        let start = opt_int("random", "start", &start)?
            .filter(|s| *s != 0)
            .unwrap_or(0);
        let step = opt_int("random", "step", &step)?
            .filter(|s| *s != 0)
            .unwrap_or(1);
        return rng.randrange(start, end, step).map(Value::from);
    }
    if start.as_ref().is_some_and(|v| v.is_true()) || step.as_ref().is_some_and(|v| v.is_true()) {
        return Err(invalid(
            "random: start and step can only be used with integer values",
        ));
    }
    match value.kind() {
        ValueKind::Seq | ValueKind::String | ValueKind::Iterable => {
            let items = to_list(value).unwrap_or_default();
            if items.is_empty() {
                return Err(invalid("random: cannot choose from an empty sequence"));
            }
            let idx = rng.randbelow(items.len() as u128)? as usize;
            Ok(items[idx].clone())
        }
        _ => Err(invalid("random can only be used on sequences and integers")),
    }
}
