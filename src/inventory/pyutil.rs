//! Small emulations of Python string behaviour that Ansible's INI reader relies on
//! (`str.isspace`, `str.strip`, `str.splitlines`, `int(str)`, `repr(float)`).
//!
//! Ansible reads inventories with Python string methods; where Rust's notion differs (Python
//! counts `\x1c`..`\x1f` as whitespace, `splitlines` breaks on `\x0b`, `\x0c`, `\x1c`.. too) the
//! reader must follow Python, or line numbers and values drift.

/// Python's `str.isspace()` for one character.
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` with no argument.
pub(crate) fn strip(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// Python's `str.isalnum() or c == '_'`, i.e. what `\w` matches in a `str` regex.
pub(crate) fn is_word(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Python's `str.splitlines()` (without `keepends`): the line boundaries Python uses, so that
/// our line numbers match Ansible's in error messages.
pub(crate) fn splitlines(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut iter = s.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        let is_break = matches!(
            c,
            '\n' | '\r'
                | '\u{0b}'
                | '\u{0c}'
                | '\u{1c}'
                | '\u{1d}'
                | '\u{1e}'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        );
        if !is_break {
            continue;
        }
        out.push(&s[start..i]);
        let mut end = i + c.len_utf8();
        if c == '\r'
            && let Some(&(j, '\n')) = iter.peek()
        {
            iter.next();
            end = j + 1;
        }
        start = end;
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// Python's `bytes.splitlines()`: only `\n`, `\r` and `\r\n` end a line.
pub(crate) fn splitlines_bytes(b: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\n' => {
                out.push(&b[start..i]);
                i += 1;
                start = i;
            }
            b'\r' => {
                out.push(&b[start..i]);
                i += if b.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
                start = i;
            }
            _ => i += 1,
        }
    }
    if start < b.len() {
        out.push(&b[start..]);
    }
    out
}

/// Python's `int(s)` for a `str` in base 10: surrounding whitespace, an optional sign, ASCII
/// digits with single underscores between them. `None` when Python would raise `ValueError`
/// (or the number does not fit in an `i128`, which Python would accept).
pub(crate) fn py_int(s: &str) -> Option<i128> {
    let t = strip(s);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || digits.starts_with('_') || digits.ends_with('_') {
        return None;
    }
    let mut value: i128 = 0;
    let mut prev_underscore = false;
    for c in digits.chars() {
        if c == '_' {
            if prev_underscore {
                return None;
            }
            prev_underscore = true;
            continue;
        }
        prev_underscore = false;
        let d = c.to_digit(10)?;
        value = value.checked_mul(10)?.checked_add(i128::from(d))?;
    }
    Some(if neg { -value } else { value })
}

/// Python's `repr(float)` for finite values (`1e+16`, `1.5e-05`, `1000.0`, `-0.0`); `inf`,
/// `-inf` and `nan` otherwise. With `add_dot_0 = false` integral values have no `.0`, as inside
/// `repr(complex)`.
pub(crate) fn float_repr(f: f64, add_dot_0: bool) -> String {
    if f.is_nan() {
        return "nan".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    // Rust's `{:e}` gives the shortest round-tripping digits, as Python's repr does.
    let sci = format!("{:e}", f);
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::with_capacity(digits.len() + 8);
    if neg {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                for _ in digits.len()..int_len {
                    out.push('0');
                }
                if add_dot_0 {
                    out.push_str(".0");
                }
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.unsigned_abs()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitlines_matches_python() {
        assert_eq!(
            splitlines("a\nb\r\nc\rd\u{0b}e\u{0c}f\u{85}g"),
            vec!["a", "b", "c", "d", "e", "f", "g"]
        );
        assert_eq!(splitlines("a\n\nb\n"), vec!["a", "", "b"]);
        assert_eq!(splitlines(""), Vec::<&str>::new());
        assert_eq!(splitlines("\n"), vec![""]);
        assert_eq!(
            splitlines_bytes(b"a\r\nb\x0bc\rd\n"),
            vec![&b"a"[..], &b"b\x0bc"[..], &b"d"[..]]
        );
    }

    #[test]
    fn strip_uses_python_whitespace() {
        assert_eq!(strip("\u{1f} x \u{a0}"), "x");
        assert_eq!(strip("\t\n"), "");
    }

    #[test]
    fn py_int_follows_python() {
        assert_eq!(py_int(" 10 "), Some(10));
        assert_eq!(py_int("-1_0"), Some(-10));
        assert_eq!(py_int("007"), Some(7));
        assert_eq!(py_int("+3"), Some(3));
        for bad in ["", "1__0", "_1", "1_", "abc", "1.5", "- 1", "0x10"] {
            assert_eq!(py_int(bad), None, "{bad}");
        }
    }

    #[test]
    fn float_repr_matches_python() {
        let cases = [
            (1000.0, "1000.0"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (123456789.125, "123456789.125"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (1.2345e-100, "1.2345e-100"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (2.5, "2.5"),
        ];
        for (f, want) in cases {
            assert_eq!(float_repr(f, true), want);
        }
        assert_eq!(float_repr(2.0, false), "2");
        assert_eq!(float_repr(f64::INFINITY, true), "inf");
    }
}
