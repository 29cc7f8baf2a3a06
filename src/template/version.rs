//! The `version` test (`x is version('1.22', '>=')`) with Ansible's version classes.
//!
//! The default is distutils' `LooseVersion`: the text is split into runs of digits
//! (compared as numbers), runs of lower-case letters and any other leftover text
//! (compared as strings); dots only separate. Comparing a number with a string at the
//! same position is an error, as in Python 3. `strict=True` uses `StrictVersion`
//! (`N.N[.N][(a|b)N]`).

use minijinja::value::{Kwargs, Value};
use minijinja::{Error, ErrorKind, State};
use std::cmp::Ordering;

use super::args::{bind, ensure_defined, opt_str};
use super::pyfmt::py_str;

fn fail(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Num(u128),
    Text(String),
}

/// `LooseVersion(text).version`.
fn loose_parts(text: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut other = String::new();
    let mut chars = text.chars().peekable();
    let flush = |other: &mut String, parts: &mut Vec<Part>| {
        if !other.is_empty() {
            parts.push(Part::Text(std::mem::take(other)));
        }
    };
    while let Some(&c) = chars.peek() {
        if c.is_ascii_digit() || c.is_ascii_lowercase() {
            flush(&mut other, &mut parts);
            let digit = c.is_ascii_digit();
            let mut run = String::new();
            while let Some(&d) = chars.peek() {
                if (digit && d.is_ascii_digit()) || (!digit && d.is_ascii_lowercase()) {
                    run.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            parts.push(match run.parse::<u128>() {
                Ok(n) if digit => Part::Num(n),
                _ => Part::Text(run),
            });
        } else if c == '.' {
            flush(&mut other, &mut parts);
            chars.next();
        } else {
            other.push(c);
            chars.next();
        }
    }
    flush(&mut other, &mut parts);
    parts
}

/// Python list comparison of two loose versions.
fn loose_cmp(a: &[Part], b: &[Part]) -> Result<Ordering, Error> {
    if a == b {
        return Ok(Ordering::Equal);
    }
    for (x, y) in a.iter().zip(b) {
        if x == y {
            continue;
        }
        return match (x, y) {
            (Part::Num(x), Part::Num(y)) => Ok(x.cmp(y)),
            (Part::Text(x), Part::Text(y)) => Ok(x.cmp(y)),
            (Part::Text(_), Part::Num(_)) => Err(fail(
                "Version comparison failed: '<' not supported between instances of 'str' and 'int'",
            )),
            (Part::Num(_), Part::Text(_)) => Err(fail(
                "Version comparison failed: '<' not supported between instances of 'int' and 'str'",
            )),
        };
    }
    Ok(a.len().cmp(&b.len()))
}

/// `StrictVersion`: ((major, minor, patch), prerelease).
type Strict = ([u128; 3], Option<(char, u128)>);

fn strict_parse(text: &str) -> Result<Strict, Error> {
    let bad = || {
        fail(format!(
            "Version comparison failed: invalid version number '{text}'"
        ))
    };
    let (nums, pre) = match text.find(['a', 'b']) {
        Some(i) => {
            let tag = text[i..].chars().next().ok_or_else(bad)?;
            let n = &text[i + 1..];
            if n.is_empty() || !n.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            (
                &text[..i],
                Some((tag, n.parse::<u128>().map_err(|_| bad())?)),
            )
        }
        None => (text, None),
    };
    let fields: Vec<&str> = nums.split('.').collect();
    if !(2..=3).contains(&fields.len())
        || fields
            .iter()
            .any(|f| f.is_empty() || !f.bytes().all(|c| c.is_ascii_digit()))
    {
        return Err(bad());
    }
    let mut v = [0u128; 3];
    for (i, f) in fields.iter().enumerate() {
        v[i] = f.parse().map_err(|_| bad())?;
    }
    Ok((v, pre))
}

fn strict_cmp(a: &Strict, b: &Strict) -> Ordering {
    if a.0 != b.0 {
        return a.0.cmp(&b.0);
    }
    match (&a.1, &b.1) {
        (None, None) => Ordering::Equal,
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (Some(x), Some(y)) => x.cmp(y),
    }
}

/// Compares two version strings with Ansible's `version` test rules.
pub fn compare_versions(
    value: &str,
    other: &str,
    operator: &str,
    strict: bool,
) -> Result<bool, Error> {
    let op = match operator {
        "==" | "=" | "eq" => "eq",
        "<" | "lt" => "lt",
        "<=" | "le" => "le",
        ">" | "gt" => "gt",
        ">=" | "ge" => "ge",
        "!=" | "<>" | "ne" => "ne",
        other => {
            return Err(fail(format!(
                "Invalid operator type ({other}). Must be one of '==', '=', 'eq', '<', 'lt', '<=', 'le', '>', 'gt', '>=', 'ge', '!=', '<>', 'ne'"
            )));
        }
    };
    let ord = if strict {
        strict_cmp(&strict_parse(value)?, &strict_parse(other)?)
    } else {
        loose_cmp(&loose_parts(value), &loose_parts(other))?
    };
    Ok(match op {
        "eq" => ord == Ordering::Equal,
        "ne" => ord != Ordering::Equal,
        "lt" => ord == Ordering::Less,
        "le" => ord != Ordering::Greater,
        "gt" => ord == Ordering::Greater,
        _ => ord != Ordering::Less,
    })
}

/// The `version(other, operator='eq', strict=None, version_type=None)` test.
pub fn version_test(
    state: &State,
    value: &Value,
    args: &[Value],
    kwargs: Kwargs,
) -> Result<bool, Error> {
    ensure_defined(state, value)?;
    let [other, operator, strict, version_type] = bind(
        "version",
        ["version", "operator", "strict", "version_type"],
        args,
        &kwargs,
    )?;
    let other = other.ok_or_else(|| {
        Error::new(
            ErrorKind::MissingArgument,
            "version test needs a version to compare against",
        )
    })?;
    ensure_defined(state, &other)?;
    let strict_given = strict.as_ref().is_some_and(|s| !s.is_none());
    let version_type = opt_str("version", "version_type", &version_type)?;
    if strict_given && version_type.is_some() {
        return Err(fail("Cannot specify both 'strict' and 'version_type'"));
    }
    if !value.is_true() {
        return Err(fail("Input version value cannot be empty"));
    }
    if !other.is_true() {
        return Err(fail("Version parameter to compare against cannot be empty"));
    }
    let strict = match version_type.as_deref() {
        None => strict.as_ref().is_some_and(|s| s.is_true()),
        Some("loose") => false,
        Some("strict") => true,
        Some(t) => {
            return Err(fail(format!(
                "version_type '{t}' is not supported by this tool (use 'loose' or 'strict')"
            )));
        }
    };
    let operator = operator.map(|o| py_str(&o)).unwrap_or_else(|| "eq".into());
    compare_versions(&py_str(value), &py_str(&other), &operator, strict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_versions_split_like_distutils() {
        assert_eq!(
            loose_parts("1.0-rc1"),
            vec![
                Part::Num(1),
                Part::Num(0),
                Part::Text("-".into()),
                Part::Text("rc".into()),
                Part::Num(1)
            ]
        );
        assert_eq!(
            loose_parts("1.13++"),
            vec![Part::Num(1), Part::Num(13), Part::Text("++".into())]
        );
        assert_eq!(
            loose_parts("1.0-RC"),
            vec![Part::Num(1), Part::Num(0), Part::Text("-RC".into())]
        );
    }

    #[test]
    fn compares() {
        assert!(compare_versions("1.18.3", "1.9", ">=", false).unwrap());
        assert!(compare_versions("7", "7.0", "lt", false).unwrap());
        assert!(compare_versions("1.a", "1.1", "<", false).is_err());
        assert!(compare_versions("1.0a1", "1.0", "<", true).unwrap());
        assert!(compare_versions("1", "1.0", "eq", true).is_err());
        assert!(compare_versions("1.0", "1.0", "foo", false).is_err());
    }
}
