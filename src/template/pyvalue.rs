//! Small Python-semantics helpers on template values: equality, number parsing.

use minijinja::value::{Value, ValueKind};

/// Python `==`: numbers and bools compare by value (`1 == 1.0 == True`), containers
/// element-wise, everything else by minijinja equality.
pub fn py_eq(a: &Value, b: &Value) -> bool {
    let numeric = |v: &Value| matches!(v.kind(), ValueKind::Number | ValueKind::Bool);
    if numeric(a) && numeric(b) {
        return match (as_i128(a), as_i128(b)) {
            (Some(x), Some(y)) => x == y,
            _ => as_f64(a) == as_f64(b),
        };
    }
    match (a.kind(), b.kind()) {
        (ValueKind::Seq, ValueKind::Seq) => {
            if a.is_tuple() != b.is_tuple() || a.len() != b.len() {
                return false;
            }
            match (a.try_iter(), b.try_iter()) {
                (Ok(x), Ok(y)) => x.zip(y).all(|(x, y)| py_eq(&x, &y)),
                _ => false,
            }
        }
        (ValueKind::Map, ValueKind::Map) => {
            if a.len() != b.len() {
                return false;
            }
            let Ok(keys) = a.try_iter() else {
                return false;
            };
            keys.into_iter().all(|k| {
                let x = a.get_item(&k).unwrap_or_default();
                let y = b.get_item(&k).unwrap_or_default();
                !y.is_undefined() && py_eq(&x, &y)
            })
        }
        _ => a == b,
    }
}

/// `needle in haystack` for a list, with [`py_eq`].
pub fn py_contains(haystack: &[Value], needle: &Value) -> bool {
    haystack.iter().any(|v| py_eq(v, needle))
}

/// An integer value (bools count as 0/1, as in Python).
pub fn as_i128(v: &Value) -> Option<i128> {
    match v.kind() {
        ValueKind::Bool => Some(i128::from(v.is_true())),
        ValueKind::Number if v.is_integer() => i128::try_from(v.clone()).ok(),
        _ => None,
    }
}

/// A float value of a number or bool.
pub fn as_f64(v: &Value) -> Option<f64> {
    match v.kind() {
        ValueKind::Bool => Some(if v.is_true() { 1.0 } else { 0.0 }),
        ValueKind::Number => f64::try_from(v.clone()).ok(),
        _ => None,
    }
}

/// Python `float(str)`: surrounding whitespace, `_` between digits, `inf`/`nan`.
pub fn parse_py_float(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    let cleaned = strip_digit_underscores(t)?;
    let lower = cleaned.to_ascii_lowercase();
    let body = lower.trim_start_matches(['+', '-']);
    if matches!(body, "inf" | "infinity" | "nan") {
        return lower.parse::<f64>().ok();
    }
    if !body
        .bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'+' | b'-'))
    {
        return None;
    }
    cleaned.parse::<f64>().ok()
}

/// Python `int(str, base)`: whitespace, sign, `_` between digits, optional `0x`/`0o`/`0b`
/// prefix matching `base`; base 0 picks the base from the prefix.
pub fn parse_py_int(s: &str, base: u32) -> Option<i128> {
    let t = s.trim();
    let (neg, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let lower = rest.to_ascii_lowercase();
    let prefix_base = match lower.get(..2) {
        Some("0x") => Some(16),
        Some("0o") => Some(8),
        Some("0b") => Some(2),
        _ => None,
    };
    let (base, digits) = match (base, prefix_base) {
        (0, Some(pb)) => (pb, &lower[2..]),
        (0, None) => {
            // base 0 forbids leading zeros in non-zero decimals ("010")
            if lower.len() > 1
                && lower.starts_with('0')
                && lower.bytes().any(|c| c != b'0' && c != b'_')
            {
                return None;
            }
            (10, lower.as_str())
        }
        (b, Some(pb)) if b == pb => (b, &lower[2..]),
        (b, _) => (b, lower.as_str()),
    };
    if !(2..=36).contains(&base) || digits.is_empty() {
        return None;
    }
    let digits = if prefix_base.is_some() && digits.starts_with('_') {
        &digits[1..]
    } else {
        digits
    };
    let cleaned = strip_digit_underscores(digits)?;
    if cleaned.starts_with(['+', '-']) {
        return None;
    }
    let n = i128::from_str_radix(&cleaned, base).ok()?;
    Some(if neg { -n } else { n })
}

/// Removes `_` that sit between two digits; `None` if any other `_` is present.
fn strip_digit_underscores(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.char_indices() {
        if c == '_' {
            let before = i > 0 && b[i - 1].is_ascii_alphanumeric();
            let after = b.get(i + 1).is_some_and(|c| c.is_ascii_alphanumeric());
            if !(before && after) {
                return None;
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Collects a value into a list of items (strings iterate as characters).
pub fn to_list(v: &Value) -> Option<Vec<Value>> {
    match v.kind() {
        ValueKind::String => Some(
            v.as_str()
                .unwrap_or_default()
                .chars()
                .map(|c| Value::from(c.to_string()))
                .collect(),
        ),
        ValueKind::Seq | ValueKind::Iterable | ValueKind::Map => {
            v.try_iter().ok().map(|it| it.collect())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_int_parsing() {
        assert_eq!(parse_py_int(" 42 ", 10), Some(42));
        assert_eq!(parse_py_int("1_000", 10), Some(1000));
        assert_eq!(parse_py_int("0x1f", 16), Some(31));
        assert_eq!(parse_py_int("0x1f", 10), None);
        assert_eq!(parse_py_int("0x10", 0), Some(16));
        assert_eq!(parse_py_int("010", 0), None);
        assert_eq!(parse_py_int("010", 10), Some(10));
        assert_eq!(parse_py_int("+7", 10), Some(7));
        assert_eq!(parse_py_int("1__0", 10), None);
        assert_eq!(parse_py_int("", 10), None);
    }

    #[test]
    fn python_float_parsing() {
        assert_eq!(parse_py_float(" 2.5 "), Some(2.5));
        assert_eq!(parse_py_float("1_0.5"), Some(10.5));
        assert_eq!(parse_py_float("20.10.24"), None);
        assert_eq!(parse_py_float("1e3"), Some(1000.0));
        assert!(parse_py_float("nan").is_some_and(f64::is_nan));
        assert_eq!(parse_py_float("abc"), None);
    }

    #[test]
    fn python_equality() {
        assert!(py_eq(&Value::from(1), &Value::from(1.0)));
        assert!(py_eq(&Value::from(true), &Value::from(1)));
        assert!(!py_eq(&Value::from("1"), &Value::from(1)));
        assert!(py_eq(
            &Value::from(vec![1, 2]),
            &Value::from(vec![1.0, 2.0])
        ));
    }
}
