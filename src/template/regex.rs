//! `regex_replace`, `regex_search` and `regex_findall` with Python `re` semantics.
//!
//! Patterns go to the `regex` crate (which has no look-around or pattern backreferences;
//! such patterns fail with a clear error). Replacement strings follow Python's
//! `re.sub` template rules: `\1`, `\g<1>`, `\g<name>`, `\n`-style escapes, and a
//! literal `$` (the `regex` crate's own `$1` syntax is not used).

use minijinja::value::{Kwargs, Tuple, Value};
use minijinja::{Error, ErrorKind, State};
use regex::{Captures, Regex, RegexBuilder};

use super::args::{bind, ensure_defined, flag};
use super::pyfmt::py_str;

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

/// Translates the few Python-only spellings (`\Z`) and compiles with the flags.
fn compile(filter: &str, pattern: &str, ignorecase: bool, multiline: bool) -> Result<Regex, Error> {
    let mut translated = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('Z') => translated.push_str("\\z"),
                Some(n) => {
                    translated.push('\\');
                    translated.push(n);
                }
                None => translated.push('\\'),
            }
        } else {
            translated.push(c);
        }
    }
    RegexBuilder::new(&translated)
        .case_insensitive(ignorecase)
        .multi_line(multiline)
        .build()
        .map_err(|e| {
            invalid(format!(
                "{filter}: cannot compile regular expression {pattern:?} (look-around and backreferences are not supported)"
            ))
            .with_source(e)
        })
}

fn text_of(state: &State, value: &Value) -> Result<String, Error> {
    ensure_defined(state, value)?;
    Ok(py_str(value))
}

/// One piece of a parsed Python replacement template.
enum Piece {
    Text(String),
    Group(usize),
    Named(String),
}

fn parse_replacement(re: &Regex, repl: &str) -> Result<Vec<Piece>, Error> {
    let mut out: Vec<Piece> = Vec::new();
    let mut text = String::new();
    let chars: Vec<char> = repl.chars().collect();
    let mut i = 0;
    let bad = |m: String| invalid(format!("regex_replace: {m} in replacement {repl:?}"));
    let group_count = re.captures_len();
    let check_group = |n: usize| -> Result<usize, Error> {
        if n < group_count {
            Ok(n)
        } else {
            Err(bad(format!("invalid group reference {n}")))
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if c != '\\' || i + 1 >= chars.len() {
            text.push(c);
            i += 1;
            continue;
        }
        let e = chars[i + 1];
        i += 2;
        let mut group: Option<Piece> = None;
        match e {
            'g' => {
                if chars.get(i) != Some(&'<') {
                    return Err(bad("missing < after \\g".into()));
                }
                let close = chars[i..]
                    .iter()
                    .position(|c| *c == '>')
                    .ok_or_else(|| bad("missing > in \\g<...>".into()))?;
                let name: String = chars[i + 1..i + close].iter().collect();
                i += close + 1;
                group = Some(match name.parse::<usize>() {
                    Ok(n) => Piece::Group(check_group(n)?),
                    Err(_) => {
                        if !re.capture_names().any(|n| n == Some(name.as_str())) {
                            return Err(bad(format!("unknown group name {name:?}")));
                        }
                        Piece::Named(name)
                    }
                });
            }
            '0' => {
                // octal escape: \0, \0o, \0oo
                let mut n = 0u32;
                let mut k = 0;
                while k < 2 && chars.get(i).is_some_and(|c| c.is_digit(8)) {
                    n = n * 8 + chars[i].to_digit(8).unwrap_or(0);
                    i += 1;
                    k += 1;
                }
                text.push(char::from_u32(n).unwrap_or('\0'));
            }
            '1'..='9' => {
                let d2 = chars.get(i).filter(|c| c.is_ascii_digit()).copied();
                let d3 = chars.get(i + 1).filter(|c| c.is_digit(8)).copied();
                match (d2, d3) {
                    (Some(d2), Some(d3)) if e.is_digit(8) && d2.is_digit(8) => {
                        let n = e.to_digit(8).unwrap_or(0) * 64
                            + d2.to_digit(8).unwrap_or(0) * 8
                            + d3.to_digit(8).unwrap_or(0);
                        i += 2;
                        text.push(
                            char::from_u32(n)
                                .ok_or_else(|| bad("octal escape out of range".into()))?,
                        );
                    }
                    (Some(d2), _) => {
                        i += 1;
                        let n = (e as usize - '0' as usize) * 10 + (d2 as usize - '0' as usize);
                        group = Some(Piece::Group(check_group(n)?));
                    }
                    (None, _) => {
                        group = Some(Piece::Group(check_group(e as usize - '0' as usize)?))
                    }
                }
            }
            'a' => text.push('\x07'),
            'b' => text.push('\x08'),
            'f' => text.push('\x0c'),
            'n' => text.push('\n'),
            'r' => text.push('\r'),
            't' => text.push('\t'),
            'v' => text.push('\x0b'),
            '\\' => text.push('\\'),
            e if e.is_ascii_alphabetic() => return Err(bad(format!("bad escape \\{e}"))),
            e => {
                text.push('\\');
                text.push(e);
            }
        }
        if let Some(g) = group {
            if !text.is_empty() {
                out.push(Piece::Text(std::mem::take(&mut text)));
            }
            out.push(g);
        }
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

fn expand(pieces: &[Piece], caps: &Captures, dst: &mut String) {
    for p in pieces {
        match p {
            Piece::Text(t) => dst.push_str(t),
            Piece::Group(n) => dst.push_str(caps.get(*n).map(|m| m.as_str()).unwrap_or("")),
            Piece::Named(n) => dst.push_str(caps.name(n).map(|m| m.as_str()).unwrap_or("")),
        }
    }
}

/// `regex_replace(pattern='', replacement='', ignorecase=False, multiline=False)`.
pub fn regex_replace(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let text = text_of(state, value)?;
    let [pattern, replacement, ignorecase, multiline] = bind(
        "regex_replace",
        ["pattern", "replacement", "ignorecase", "multiline"],
        args,
        &kwargs,
    )?;
    let pattern = pattern.map(|p| py_str(&p)).unwrap_or_default();
    let replacement = replacement.map(|p| py_str(&p)).unwrap_or_default();
    let re = compile(
        "regex_replace",
        &pattern,
        flag(&ignorecase, false),
        flag(&multiline, false),
    )?;
    let pieces = parse_replacement(&re, &replacement)?;
    let out = re.replace_all(&text, |caps: &Captures| {
        let mut s = String::new();
        expand(&pieces, caps, &mut s);
        s
    });
    Ok(Value::from(out.into_owned()))
}

/// `regex_search(regex, *groups, ignorecase=False, multiline=False)`: the first match,
/// or a list of the requested groups (`'\\1'`, `'\\g<name>'`); `None` without a match.
pub fn regex_search(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let text = text_of(state, value)?;
    let ignorecase = kwargs
        .get::<Option<Value>>("ignorecase")?
        .is_some_and(|v| v.is_true());
    let multiline = kwargs
        .get::<Option<Value>>("multiline")?
        .is_some_and(|v| v.is_true());
    kwargs.assert_all_used()?;
    if let Some(undefined) = args.iter().find(|a| a.is_undefined()) {
        ensure_defined(state, undefined)?;
    }
    let (pattern, groups) = args
        .split_first()
        .ok_or_else(|| Error::new(ErrorKind::MissingArgument, "regex_search needs a pattern"))?;
    let re = compile("regex_search", &py_str(pattern), ignorecase, multiline)?;
    let mut wanted = Vec::new();
    for g in groups {
        let g = py_str(g);
        if let Some(name) = g.strip_prefix("\\g<").and_then(|r| r.strip_suffix('>')) {
            wanted.push(Piece::Named(name.to_string()));
        } else if let Some(n) = g.strip_prefix('\\').and_then(|d| {
            let digits: String = d.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<usize>().ok()
        }) {
            wanted.push(Piece::Group(n));
        } else {
            return Err(invalid(format!(
                "regex_search: unknown argument {g:?} (use '\\\\1' or '\\\\g<name>')"
            )));
        }
    }
    let Some(caps) = re.captures(&text) else {
        return Ok(Value::from(()));
    };
    if wanted.is_empty() {
        return Ok(Value::from(caps.get(0).map(|m| m.as_str()).unwrap_or("")));
    }
    let mut out = Vec::new();
    for w in wanted {
        let m = match &w {
            Piece::Group(n) if *n < re.captures_len() => caps.get(*n),
            Piece::Named(n) if re.capture_names().any(|c| c == Some(n.as_str())) => caps.name(n),
            _ => return Err(invalid("regex_search: no such group")),
        };
        out.push(
            m.map(|m| Value::from(m.as_str()))
                .unwrap_or(Value::from(())),
        );
    }
    Ok(Value::from(out))
}

/// `regex_findall(regex, multiline=False, ignorecase=False)`: Python `re.findall`
/// (whole matches, the single group, or tuples of groups).
pub fn regex_findall(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let text = text_of(state, value)?;
    let [regex, multiline, ignorecase] = bind(
        "regex_findall",
        ["regex", "multiline", "ignorecase"],
        args,
        &kwargs,
    )?;
    let pattern = regex
        .map(|p| py_str(&p))
        .ok_or_else(|| Error::new(ErrorKind::MissingArgument, "regex_findall needs a pattern"))?;
    let re = compile(
        "regex_findall",
        &pattern,
        flag(&ignorecase, false),
        flag(&multiline, false),
    )?;
    let groups = re.captures_len() - 1;
    let group_text =
        |caps: &Captures, n: usize| Value::from(caps.get(n).map(|m| m.as_str()).unwrap_or(""));
    let out: Vec<Value> = re
        .captures_iter(&text)
        .map(|caps| match groups {
            0 => group_text(&caps, 0),
            1 => group_text(&caps, 1),
            _ => Value::from_object(Tuple::new(
                (1..=groups).map(|n| group_text(&caps, n)).collect(),
            )),
        })
        .collect();
    Ok(Value::from(out))
}

fn regex_test_impl(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: &Kwargs,
    default_type: &str,
) -> Result<bool, Error> {
    let text = text_of(state, value)?;
    let [pattern, ignorecase, multiline, match_type] = bind(
        "regex",
        ["pattern", "ignorecase", "multiline", "match_type"],
        args,
        kwargs,
    )?;
    let pattern = pattern.map(|p| py_str(&p)).unwrap_or_default();
    let match_type = match match_type {
        Some(m) => py_str(&m),
        None => default_type.to_string(),
    };
    let anchored = match match_type.as_str() {
        "search" => pattern,
        "match" => format!(r"\A(?:{pattern})"),
        "fullmatch" => format!(r"\A(?:{pattern})\z"),
        other => {
            return Err(invalid(format!(
                "regex test: match_type must be search, match or fullmatch, got {other:?}"
            )));
        }
    };
    let re = compile(
        "regex",
        &anchored,
        flag(&ignorecase, false),
        flag(&multiline, false),
    )?;
    Ok(re.is_match(&text))
}

/// Test `regex(pattern, ignorecase=False, multiline=False, match_type='search')`.
pub fn regex_test(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<bool, Error> {
    regex_test_impl(state, value, args, &kwargs, "search")
}

/// Test `match(pattern, ignorecase=False, multiline=False)`: Python `re.match` (anchored at the start).
pub fn match_test(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<bool, Error> {
    if kwargs.has("match_type") {
        return Err(invalid("match test does not take match_type"));
    }
    regex_test_impl(state, value, args, &kwargs, "match")
}

/// Test `search(pattern, ignorecase=False, multiline=False)`: Python `re.search`.
pub fn search_test(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<bool, Error> {
    if kwargs.has("match_type") {
        return Err(invalid("search test does not take match_type"));
    }
    regex_test_impl(state, value, args, &kwargs, "search")
}
