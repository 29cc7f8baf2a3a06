//! A parser for Python literals, the subset `ast.literal_eval` accepts.
//!
//! Ansible 2.14 turns rendered text that starts with `[` or `{` (or is exactly `True` /
//! `False`) back into data with `ast.literal_eval`, mapping the JSON names `true`,
//! `false` and `null` first. [`parse`] does the same on our side.

use minijinja::value::{Tuple, Value};

/// Why a text is not a Python literal (Ansible then keeps the text as a string).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Python literal at byte {pos}: {msg}")]
pub struct LiteralError {
    /// Byte offset of the problem.
    pub pos: usize,
    /// What was wrong.
    pub msg: String,
}

/// Parses `text` as one Python literal expression (`true`/`false`/`null` allowed).
pub fn parse(text: &str) -> Result<Value, LiteralError> {
    let mut p = Parser {
        s: text.as_bytes(),
        src: text,
        pos: 0,
        depth: 0,
    };
    // Python rejects leading indentation in eval mode.
    if text.starts_with([' ', '\t']) {
        return Err(p.err("unexpected indent"));
    }
    let v = p.expr()?;
    p.skip_ws();
    if p.pos != p.s.len() {
        return Err(p.err("trailing characters"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    pos: usize,
    /// Bracket nesting; newlines are only whitespace inside brackets.
    depth: usize,
}

impl Parser<'_> {
    fn err(&self, msg: &str) -> LiteralError {
        LiteralError {
            pos: self.pos,
            msg: msg.to_string(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\x0c' => self.pos += 1,
                b'\n' | b'\r' if self.depth > 0 || self.rest_is_blank() => self.pos += 1,
                b'\\' if matches!(self.s.get(self.pos + 1), Some(b'\n')) => self.pos += 2,
                b'#' => {
                    while let Some(c) = self.peek() {
                        if c == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    /// A trailing newline after the expression is fine at the top level.
    fn rest_is_blank(&self) -> bool {
        self.s[self.pos..]
            .iter()
            .all(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<Value, LiteralError> {
        self.skip_ws();
        let c = self.peek().ok_or_else(|| self.err("unexpected end"))?;
        match c {
            b'[' => {
                self.pos += 1;
                self.depth += 1;
                let items = self.items(b']')?;
                self.depth -= 1;
                Ok(Value::from(items.0))
            }
            b'(' => {
                self.pos += 1;
                self.depth += 1;
                let (items, trailing_comma) = self.items(b')')?;
                self.depth -= 1;
                if items.len() == 1 && !trailing_comma {
                    Ok(items.into_iter().next().unwrap_or_default())
                } else {
                    Ok(Value::from_object(Tuple::new(items)))
                }
            }
            b'{' => {
                self.pos += 1;
                self.depth += 1;
                let v = self.dict_or_set()?;
                self.depth -= 1;
                Ok(v)
            }
            b'-' | b'+' => {
                self.pos += 1;
                let v = self.expr()?;
                if c == b'+' {
                    return if v.is_number() {
                        Ok(v)
                    } else {
                        Err(self.err("bad operand for unary +"))
                    };
                }
                negate(&v).ok_or_else(|| self.err("bad operand for unary -"))
            }
            b'0'..=b'9' | b'.' => self.number(),
            b'\'' | b'"' => self.strings(),
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.pos;
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_') {
                    self.pos += 1;
                }
                let word = &self.src[start..self.pos];
                if matches!(self.peek(), Some(b'\'' | b'"'))
                    && matches!(
                        word.to_ascii_lowercase().as_str(),
                        "r" | "u" | "b" | "br" | "rb"
                    )
                {
                    self.pos = start;
                    return self.strings();
                }
                match word {
                    "True" | "true" => Ok(Value::from(true)),
                    "False" | "false" => Ok(Value::from(false)),
                    "None" | "null" => Ok(Value::from(())),
                    _ => Err(LiteralError {
                        pos: start,
                        msg: format!("name {word:?} is not a literal"),
                    }),
                }
            }
            _ => Err(self.err("unexpected character")),
        }
    }

    /// Comma-separated expressions up to `close`; reports whether a trailing comma was seen.
    fn items(&mut self, close: u8) -> Result<(Vec<Value>, bool), LiteralError> {
        let mut items = Vec::new();
        let mut trailing_comma = false;
        loop {
            if self.eat(close) {
                return Ok((items, trailing_comma));
            }
            if !items.is_empty() && !trailing_comma {
                return Err(self.err("expected ',' between items"));
            }
            items.push(self.expr()?);
            trailing_comma = self.eat(b',');
        }
    }

    fn dict_or_set(&mut self) -> Result<Value, LiteralError> {
        if self.eat(b'}') {
            return Ok(Value::from_pairs(Vec::<(Value, Value)>::new()));
        }
        let first = self.expr()?;
        if self.eat(b':') {
            let mut pairs = vec![(first, self.expr()?)];
            loop {
                let comma = self.eat(b',');
                if self.eat(b'}') {
                    return Ok(Value::from_pairs(pairs));
                }
                if !comma {
                    return Err(self.err("expected ',' in dict"));
                }
                let k = self.expr()?;
                if !self.eat(b':') {
                    return Err(self.err("expected ':' in dict"));
                }
                pairs.push((k, self.expr()?));
            }
        }
        // A set literal: keep first-seen order, drop duplicates.
        let mut items = vec![first];
        loop {
            let comma = self.eat(b',');
            if self.eat(b'}') {
                break;
            }
            if !comma {
                return Err(self.err("expected ',' in set"));
            }
            items.push(self.expr()?);
        }
        let mut unique: Vec<Value> = Vec::new();
        for v in items {
            if !unique.contains(&v) {
                unique.push(v);
            }
        }
        Ok(Value::from(unique))
    }

    fn number(&mut self) -> Result<Value, LiteralError> {
        let start = self.pos;
        let lower = |c: u8| c.to_ascii_lowercase();
        if self.peek() == Some(b'0')
            && matches!(
                self.s.get(self.pos + 1).map(|c| lower(*c)),
                Some(b'x' | b'o' | b'b')
            )
        {
            let radix = match lower(self.s[self.pos + 1]) {
                b'x' => 16,
                b'o' => 8,
                _ => 2,
            };
            self.pos += 2;
            let ds = self.pos;
            while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_') {
                self.pos += 1;
            }
            let digits =
                clean_underscores(&self.src[ds..self.pos]).ok_or_else(|| self.err("bad number"))?;
            return u128::from_str_radix(&digits, radix)
                .map(Value::from)
                .map_err(|_| self.err("bad number"));
        }
        let mut is_float = false;
        while let Some(c) = self.peek() {
            match c {
                b'0'..=b'9' | b'_' => self.pos += 1,
                b'.' => {
                    is_float = true;
                    self.pos += 1;
                }
                b'e' | b'E' => {
                    is_float = true;
                    self.pos += 1;
                    if matches!(self.peek(), Some(b'+' | b'-')) {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
        if matches!(self.peek(), Some(b'j' | b'J')) {
            return Err(self.err("complex numbers are not supported"));
        }
        let text = clean_underscores(&self.src[start..self.pos]).ok_or_else(|| LiteralError {
            pos: start,
            msg: "bad number".into(),
        })?;
        if is_float {
            return text
                .parse::<f64>()
                .map(Value::from)
                .map_err(|_| self.err("bad float"));
        }
        if text.len() > 1 && text.starts_with('0') && text.bytes().any(|c| c != b'0') {
            return Err(self.err("leading zeros in decimal integer literals are not permitted"));
        }
        text.parse::<u128>()
            .map(|n| {
                i64::try_from(n)
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::from(n))
            })
            .map_err(|_| self.err("bad integer"))
    }

    /// One or more adjacent string literals, concatenated as Python does.
    fn strings(&mut self) -> Result<Value, LiteralError> {
        let mut text = String::new();
        let mut bytes: Option<Vec<u8>> = None;
        let mut first = true;
        loop {
            self.skip_ws();
            let start = self.pos;
            while matches!(self.peek(), Some(c) if c.is_ascii_alphabetic()) {
                self.pos += 1;
            }
            let prefix = self.src[start..self.pos].to_ascii_lowercase();
            let q = match self.peek() {
                Some(q @ (b'\'' | b'"'))
                    if matches!(prefix.as_str(), "" | "r" | "u" | "b" | "br" | "rb") =>
                {
                    q
                }
                _ => {
                    self.pos = start;
                    if first {
                        return Err(self.err("expected a string"));
                    }
                    break;
                }
            };
            let raw = prefix.contains('r');
            let is_bytes = prefix.contains('b');
            if !first && is_bytes != bytes.is_some() {
                return Err(self.err("cannot mix bytes and nonbytes literals"));
            }
            let s = self.one_string(q, raw)?;
            if is_bytes {
                let b = bytes.get_or_insert_with(Vec::new);
                for c in s.chars() {
                    let n = c as u32;
                    if n > 0xff {
                        return Err(self.err("bytes can only contain ASCII characters"));
                    }
                    b.push(n as u8);
                }
            } else {
                text.push_str(&s);
            }
            first = false;
        }
        Ok(match bytes {
            Some(b) => Value::from_bytes(b),
            None => Value::from(text),
        })
    }

    fn one_string(&mut self, q: u8, raw: bool) -> Result<String, LiteralError> {
        let triple = self.s[self.pos..].starts_with(&[q, q, q]);
        self.pos += if triple { 3 } else { 1 };
        let mut out = String::new();
        loop {
            let rest = &self.src[self.pos..];
            let mut chars = rest.chars();
            let c = chars
                .next()
                .ok_or_else(|| self.err("unterminated string"))?;
            if c as u32 == q as u32 {
                if !triple {
                    self.pos += 1;
                    return Ok(out);
                }
                if rest.as_bytes().starts_with(&[q, q, q]) {
                    self.pos += 3;
                    return Ok(out);
                }
            }
            if c == '\n' && !triple {
                return Err(self.err("unterminated string"));
            }
            if c != '\\' {
                out.push(c);
                self.pos += c.len_utf8();
                continue;
            }
            let e = chars
                .next()
                .ok_or_else(|| self.err("unterminated string"))?;
            self.pos += 1 + e.len_utf8();
            if raw {
                out.push('\\');
                out.push(e);
                continue;
            }
            match e {
                '\n' => {}
                '\\' => out.push('\\'),
                '\'' => out.push('\''),
                '"' => out.push('"'),
                'a' => out.push('\x07'),
                'b' => out.push('\x08'),
                'f' => out.push('\x0c'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'v' => out.push('\x0b'),
                '0'..='7' => {
                    let mut n = e.to_digit(8).unwrap_or(0);
                    for _ in 0..2 {
                        match self.peek() {
                            Some(d @ b'0'..=b'7') => {
                                n = n * 8 + u32::from(d - b'0');
                                self.pos += 1;
                            }
                            _ => break,
                        }
                    }
                    out.push(char::from_u32(n).ok_or_else(|| self.err("bad octal escape"))?);
                }
                'x' | 'u' | 'U' => {
                    let len = match e {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let hex = self
                        .src
                        .get(self.pos..self.pos + len)
                        .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                        .ok_or_else(|| self.err("truncated escape"))?;
                    let n = u32::from_str_radix(hex, 16).map_err(|_| self.err("bad escape"))?;
                    self.pos += len;
                    out.push(char::from_u32(n).ok_or_else(|| self.err("illegal code point"))?);
                }
                'N' => return Err(self.err("\\N{...} escapes are not supported")),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        }
    }
}

fn clean_underscores(s: &str) -> Option<String> {
    if s.starts_with('_') || s.ends_with('_') || s.contains("__") {
        return None;
    }
    Some(s.replace('_', ""))
}

fn negate(v: &Value) -> Option<Value> {
    if v.is_integer() {
        if let Ok(n) = i128::try_from(v.clone()) {
            return Some(Value::from(n.checked_neg()?));
        }
        return None;
    }
    if v.is_number() {
        return f64::try_from(v.clone()).ok().map(|f| Value::from(-f));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::pyfmt::py_repr;

    fn rt(s: &str) -> String {
        py_repr(&parse(s).unwrap())
    }

    #[test]
    fn parses_reprs_back() {
        assert_eq!(rt("['a', 1, None, True, 1.5]"), "['a', 1, None, True, 1.5]");
        assert_eq!(rt("{'b': 1, 'a': [2]}"), "{'b': 1, 'a': [2]}");
        assert_eq!(rt("{\"a\": true, \"b\": null}"), "{'a': True, 'b': None}");
        assert_eq!(rt("[('a', 1), (2,), ()]"), "[('a', 1), (2,), ()]");
        assert_eq!(
            rt("['it\\'s', \"x\\ny\", 'a' 'b', r'\\d']"),
            "[\"it's\", 'x\\ny', 'ab', '\\\\d']"
        );
        assert_eq!(
            rt("[-1, +2, 1_000, 0x1f, 1e16, -2.5e-07, .5]"),
            "[-1, 2, 1000, 31, 1e+16, -2.5e-07, 0.5]"
        );
        assert_eq!(rt("[1,\n 2, # c\n]\n"), "[1, 2]");
        assert_eq!(rt("{1, 2, 1}"), "[1, 2]");
        assert_eq!(rt("(1)"), "1");
    }

    #[test]
    fn rejects_non_literals() {
        for s in [
            "[a, b]",
            "[1, 2",
            " [1]",
            "[1] [2]",
            "{'a' 1}",
            "[01]",
            "[1j]",
            "['x'.upper()]",
            "[1]\n[2]",
        ] {
            assert!(parse(s).is_err(), "{s:?} should not parse");
        }
    }
}

#[cfg(test)]
mod roundtrip {
    use super::parse;
    use crate::template::pyfmt::{float_repr, str_repr};
    use proptest::prelude::*;

    proptest! {
        /// Ansible 2.14 turns list/dict output back into data with literal_eval; our
        /// repr + parse must round-trip every string and float exactly.
        #[test]
        fn strings_round_trip(s in "\\PC*|[\\x00-\\x1f'\"\\\\\u{a0}\u{2028}\u{feff}a-z]*") {
            let v = parse(&str_repr(&s)).unwrap();
            prop_assert_eq!(v.as_str(), Some(s.as_str()));
        }

        #[test]
        fn floats_round_trip(f in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO) {
            let v = parse(&float_repr(f)).unwrap();
            prop_assert_eq!(f64::try_from(v).unwrap().to_bits(), f.to_bits());
        }
    }
}
