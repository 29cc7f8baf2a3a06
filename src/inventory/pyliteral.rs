//! Value typing exactly like Ansible's INI `_parse_value`: try Python's `ast.literal_eval` on
//! the text and keep the text unchanged when that raises `ValueError`/`SyntaxError`.
//!
//! So `23` is an int, `1_000` and `0x10` too, `1e3` a float, `True`/`None` a bool/null,
//! `'x'` a string without its quotes, `[1,2]`/`{"k": 1}` a list/dict, while `01`, `true`,
//! `yes`, `foo # c` and `[a]` stay strings. A trailing `# comment` is ignored by Python's
//! tokenizer, so `8080 # note` is the int 8080.
//!
//! Python values JSON cannot hold are mapped as follows (ansible-core 2.14 itself crashes when
//! printing most of them):
//! - tuples and sets become lists (sets keep first-seen order; CPython's hash order can differ
//!   for sets of several elements);
//! - ints outside `i64`/`u64` become their decimal string; `inf`/`-inf` floats become the
//!   strings `"inf"`/`"-inf"` (what Jinja prints for them);
//! - a complex number or `...` as the whole value keeps the text as written (as ansible-core
//!   2.19 does); nested, they become Python's `repr` (`"(1+2j)"`, `"Ellipsis"`);
//! - bytes (`b'x'`) become text (UTF-8, lossy when nested);
//! - dict keys are converted as `json.dumps` does (`1` → `"1"`, `True` → `"true"`,
//!   `None` → `"null"`, `2.5` → `"2.5"`), other key types use Python's `repr`.
//!
//! Not emulated (the text is kept as a string instead): `\N{NAME}` escapes and `\uD800`-style
//! lone surrogates in string literals.
//!
//! An unhashable dict key or set element (`{[1]: 2}`) makes Python raise `TypeError`, which
//! Ansible does not catch: that is reported as [`Unhashable`].

use serde_json::{Map, Number, Value};

use super::pyutil::float_repr;

/// Python raised `TypeError: unhashable type: '<type>'` while building a dict or set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unhashable type: '{type_name}'")]
pub struct Unhashable {
    /// Python type name: `list`, `dict` or `set`.
    pub type_name: &'static str,
}

/// Types `text` the way Ansible's INI plugin does (see the module docs).
pub fn parse_value(text: &str) -> Result<Value, Unhashable> {
    match literal_eval(text) {
        Ok(Some(py)) => Ok(match py {
            Py::Complex(..) | Py::Ellipsis => Value::String(text.to_string()),
            Py::Bytes(b) => Value::String(match String::from_utf8(b) {
                Ok(s) => s,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            }),
            other => other.into_json(),
        }),
        Ok(None) => Ok(Value::String(text.to_string())),
        Err(e) => Err(e),
    }
}

/// `Ok(None)` means Python would raise `ValueError`/`SyntaxError` (keep the text).
fn literal_eval(text: &str) -> Result<Option<Py>, Unhashable> {
    let src = text.trim_start_matches([' ', '\t']);
    if src.contains('\0') {
        return Ok(None);
    }
    let Some(tokens) = lex(src) else {
        return Ok(None);
    };
    let mut p = Parser {
        toks: &tokens,
        pos: 0,
        depth: 0,
    };
    let Some(node) = p.top() else {
        return Ok(None);
    };
    match eval(node) {
        Ok(v) => Ok(Some(v)),
        Err(Fail::Malformed) => Ok(None),
        Err(Fail::Unhashable(t)) => Err(Unhashable { type_name: t }),
    }
}

// ---------------------------------------------------------------------------------------------
// Values

/// A Python integer: `i128` when it fits, else sign + decimal digits.
#[derive(Debug, Clone, PartialEq)]
enum Int {
    Small(i128),
    Big { neg: bool, digits: String },
}

#[derive(Debug, Clone)]
enum Py {
    None,
    Bool(bool),
    Int(Int),
    Float(f64),
    Complex(f64, f64),
    Str(String),
    Bytes(Vec<u8>),
    Ellipsis,
    List(Vec<Py>),
    Tuple(Vec<Py>),
    Set(Vec<Py>),
    Dict(Vec<(Py, Py)>),
}

enum Fail {
    Malformed,
    Unhashable(&'static str),
}

impl Py {
    /// The type name Python reports in `unhashable type: '…'`, if the value is unhashable.
    fn unhashable(&self) -> Option<&'static str> {
        match self {
            Py::List(_) => Some("list"),
            Py::Dict(_) => Some("dict"),
            Py::Set(_) => Some("set"),
            Py::Tuple(items) => items.iter().find_map(Py::unhashable),
            _ => None,
        }
    }

    /// Numeric value as (real, imag) for cross-type equality, plus the exact int if any.
    fn as_number(&self) -> Option<(Option<&Int>, f64, f64)> {
        match self {
            Py::Bool(b) => Some((None, f64::from(u8::from(*b)), 0.0)),
            Py::Int(i) => Some((Some(i), int_to_f64(i), 0.0)),
            Py::Float(f) => Some((None, *f, 0.0)),
            Py::Complex(r, i) => Some((None, *r, *i)),
            _ => None,
        }
    }

    /// Python `==` for hashable values (numbers compare across bool/int/float/complex).
    fn py_eq(&self, other: &Py) -> bool {
        if let (Some(a), Some(b)) = (self.as_number(), other.as_number()) {
            return match (a, b) {
                ((Some(x), ..), (Some(y), ..)) => x == y,
                ((Some(Int::Big { .. }), ..), _) | (_, (Some(Int::Big { .. }), ..)) => false,
                ((_, ar, ai), (_, br, bi)) => ar == br && ai == bi,
            };
        }
        match (self, other) {
            (Py::None, Py::None) | (Py::Ellipsis, Py::Ellipsis) => true,
            (Py::Str(a), Py::Str(b)) => a == b,
            (Py::Bytes(a), Py::Bytes(b)) => a == b,
            (Py::Tuple(a), Py::Tuple(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.py_eq(y))
            }
            _ => false,
        }
    }

    /// Python's `repr`, used for nested complex/Ellipsis values and odd dict keys.
    fn repr(&self) -> String {
        match self {
            Py::None => "None".into(),
            Py::Bool(true) => "True".into(),
            Py::Bool(false) => "False".into(),
            Py::Int(i) => int_to_string(i),
            Py::Float(f) => float_repr(*f, true),
            Py::Complex(re, im) => {
                let im_s = float_repr(*im, false);
                if *re == 0.0 && re.is_sign_positive() {
                    format!("{im_s}j")
                } else {
                    let sign = if im_s.starts_with('-') { "" } else { "+" };
                    format!("({}{sign}{im_s}j)", float_repr(*re, false))
                }
            }
            Py::Str(s) => format!("'{s}'"),
            Py::Bytes(b) => format!("b'{}'", String::from_utf8_lossy(b)),
            Py::Ellipsis => "Ellipsis".into(),
            Py::List(v) => format!("[{}]", join_repr(v)),
            Py::Tuple(v) if v.len() == 1 => format!("({},)", v[0].repr()),
            Py::Tuple(v) => format!("({})", join_repr(v)),
            Py::Set(v) if v.is_empty() => "set()".into(),
            Py::Set(v) => format!("{{{}}}", join_repr(v)),
            Py::Dict(v) => {
                let items: Vec<String> = v
                    .iter()
                    .map(|(k, x)| format!("{}: {}", k.repr(), x.repr()))
                    .collect();
                format!("{{{}}}", items.join(", "))
            }
        }
    }

    /// The key `json.dumps` writes for this dict key.
    fn json_key(&self) -> String {
        match self {
            Py::Str(s) => s.clone(),
            Py::Bool(true) => "true".into(),
            Py::Bool(false) => "false".into(),
            Py::None => "null".into(),
            Py::Int(i) => int_to_string(i),
            Py::Float(f) if f.is_infinite() => {
                if *f > 0.0 { "Infinity" } else { "-Infinity" }.into()
            }
            Py::Float(f) => float_repr(*f, true),
            other => other.repr(),
        }
    }

    fn into_json(self) -> Value {
        match self {
            Py::None => Value::Null,
            Py::Bool(b) => Value::Bool(b),
            Py::Int(Int::Small(i)) => {
                if let Ok(v) = i64::try_from(i) {
                    Value::Number(v.into())
                } else if let Ok(v) = u64::try_from(i) {
                    Value::Number(v.into())
                } else {
                    Value::String(i.to_string())
                }
            }
            Py::Int(big @ Int::Big { .. }) => Value::String(int_to_string(&big)),
            Py::Float(f) => match Number::from_f64(f) {
                Some(n) => Value::Number(n),
                None => Value::String(float_repr(f, true)),
            },
            c @ (Py::Complex(..) | Py::Ellipsis) => Value::String(c.repr()),
            Py::Str(s) => Value::String(s),
            Py::Bytes(b) => Value::String(String::from_utf8_lossy(&b).into_owned()),
            Py::List(v) | Py::Tuple(v) | Py::Set(v) => {
                Value::Array(v.into_iter().map(Py::into_json).collect())
            }
            Py::Dict(v) => {
                let mut m = Map::with_capacity(v.len());
                for (k, x) in v {
                    m.insert(k.json_key(), x.into_json());
                }
                Value::Object(m)
            }
        }
    }
}

fn join_repr(v: &[Py]) -> String {
    v.iter().map(Py::repr).collect::<Vec<_>>().join(", ")
}

fn int_to_string(i: &Int) -> String {
    match i {
        Int::Small(v) => v.to_string(),
        Int::Big { neg: true, digits } => format!("-{digits}"),
        Int::Big { neg: false, digits } => digits.clone(),
    }
}

fn int_to_f64(i: &Int) -> f64 {
    match i {
        Int::Small(v) => *v as f64,
        Int::Big { neg, digits } => {
            let f: f64 = digits.parse().unwrap_or(f64::INFINITY);
            if *neg { -f } else { f }
        }
    }
}

fn negate(i: Int) -> Int {
    match i {
        Int::Small(v) => match v.checked_neg() {
            Some(n) => Int::Small(n),
            None => Int::Big {
                neg: v > 0,
                digits: v.unsigned_abs().to_string(),
            },
        },
        Int::Big { neg, digits } => {
            // -(i128::MIN magnitude) fits again
            let candidate = format!("{}{digits}", if neg { "" } else { "-" });
            match candidate.parse::<i128>() {
                Ok(v) => Int::Small(v),
                Err(_) => Int::Big { neg: !neg, digits },
            }
        }
    }
}

/// Parses digits (no underscores) in `radix` into an [`Int`], with a small bignum fallback.
fn parse_int(digits: &str, radix: u32) -> Int {
    let mut small: Option<i128> = Some(0);
    for c in digits.chars() {
        let d = i128::from(c.to_digit(radix).unwrap_or(0));
        small = small.and_then(|v| v.checked_mul(i128::from(radix))?.checked_add(d));
        if small.is_none() {
            break;
        }
    }
    if let Some(v) = small {
        return Int::Small(v);
    }
    // Little-endian base-1e9 limbs.
    let mut limbs: Vec<u64> = vec![0];
    for c in digits.chars() {
        let mut carry = u64::from(c.to_digit(radix).unwrap_or(0));
        for limb in limbs.iter_mut() {
            let v = *limb * u64::from(radix) + carry;
            *limb = v % 1_000_000_000;
            carry = v / 1_000_000_000;
        }
        while carry > 0 {
            limbs.push(carry % 1_000_000_000);
            carry /= 1_000_000_000;
        }
    }
    let mut s = String::new();
    for (i, limb) in limbs.iter().rev().enumerate() {
        if i == 0 {
            s.push_str(&limb.to_string());
        } else {
            s.push_str(&format!("{limb:09}"));
        }
    }
    Int::Big {
        neg: false,
        digits: s,
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone)]
enum Tok {
    Int(Int),
    Float(f64),
    Imag(f64),
    Str(String),
    Bytes(Vec<u8>),
    Name(String),
    Ellipsis,
    Op(char),
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || !c.is_ascii()
}

/// Splits `src` into Python tokens; `None` on anything outside the literal subset (the caller
/// then keeps the text, as Python would after its `SyntaxError`/`ValueError`).
fn lex(src: &str) -> Option<Vec<Tok>> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\u{0c}' => i += 1,
            '#' => break,
            '(' | ')' | '[' | ']' | '{' | '}' | ',' | ':' | '+' | '-' => {
                toks.push(Tok::Op(c));
                i += 1;
            }
            '.' => {
                if chars.get(i + 1).is_some_and(char::is_ascii_digit) {
                    i = lex_number(&chars, i, &mut toks)?;
                } else if chars.get(i + 1) == Some(&'.') && chars.get(i + 2) == Some(&'.') {
                    toks.push(Tok::Ellipsis);
                    i += 3;
                } else {
                    return None;
                }
            }
            '0'..='9' => i = lex_number(&chars, i, &mut toks)?,
            '\'' | '"' => i = lex_string(&chars, i, "", &mut toks)?,
            c if is_ident_char(c) => {
                let start = i;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if matches!(chars.get(i), Some('\'' | '"')) {
                    i = lex_string(&chars, i, &word, &mut toks)?;
                } else {
                    toks.push(Tok::Name(word));
                }
            }
            _ => return None,
        }
    }
    Some(toks)
}

/// Reads `[0-9](_?[0-9])*` (digits of `radix`) from `i`; returns the end and the digits.
fn read_digits(chars: &[char], mut i: usize, radix: u32, out: &mut String) -> usize {
    while i < chars.len() {
        let c = chars[i];
        if c.is_digit(radix) {
            out.push(c);
            i += 1;
        } else if c == '_' && chars.get(i + 1).is_some_and(|d| d.is_digit(radix)) && !out.is_empty()
        {
            i += 1;
        } else {
            break;
        }
    }
    i
}

fn lex_number(chars: &[char], start: usize, toks: &mut Vec<Tok>) -> Option<usize> {
    let mut i = start;
    if chars[i] == '0' {
        let radix = match chars.get(i + 1) {
            Some('x' | 'X') => 16,
            Some('o' | 'O') => 8,
            Some('b' | 'B') => 2,
            _ => 0,
        };
        if radix != 0 {
            i += 2;
            let mut digits = String::new();
            // An underscore may follow the prefix directly (`0x_f`).
            if chars.get(i) == Some(&'_') && chars.get(i + 1).is_some_and(|d| d.is_digit(radix)) {
                i += 1;
            }
            if !chars.get(i).is_some_and(|d| d.is_digit(radix)) {
                return None;
            }
            digits.push(chars[i]);
            i = read_digits(chars, i + 1, radix, &mut digits);
            if chars.get(i).is_some_and(|c| is_ident_char(*c)) {
                return None;
            }
            toks.push(Tok::Int(parse_int(&digits, radix)));
            return Some(i);
        }
    }
    let mut int_part = String::new();
    i = read_digits(chars, i, 10, &mut int_part);
    let mut text = int_part.clone();
    let mut is_float = false;
    if chars.get(i) == Some(&'.') {
        is_float = true;
        i += 1;
        let mut frac = String::new();
        if chars.get(i).is_some_and(char::is_ascii_digit) {
            i = read_digits(chars, i, 10, &mut frac);
        }
        if int_part.is_empty() && frac.is_empty() {
            return None;
        }
        text = format!(
            "{}.{}",
            if int_part.is_empty() { "0" } else { &int_part },
            frac
        );
        if frac.is_empty() {
            text.push('0');
        }
    }
    if matches!(chars.get(i), Some('e' | 'E')) {
        let mut j = i + 1;
        let mut exp = String::from("e");
        if let Some(&s @ ('+' | '-')) = chars.get(j) {
            exp.push(s);
            j += 1;
        }
        if !chars.get(j).is_some_and(char::is_ascii_digit) {
            return None;
        }
        j = read_digits(chars, j, 10, &mut exp);
        is_float = true;
        text.push_str(&exp);
        i = j;
    }
    let imag = matches!(chars.get(i), Some('j' | 'J'));
    if imag {
        i += 1;
    }
    if chars.get(i).is_some_and(|c| is_ident_char(*c)) {
        return None;
    }
    if imag {
        toks.push(Tok::Imag(text.parse().ok()?));
    } else if is_float {
        toks.push(Tok::Float(text.parse().ok()?));
    } else {
        // Leading zeros are only allowed when every digit is zero.
        if int_part.len() > 1 && int_part.starts_with('0') && int_part.bytes().any(|b| b != b'0') {
            return None;
        }
        // CPython refuses decimal literals longer than 4300 digits.
        if int_part.len() > 4300 {
            return None;
        }
        toks.push(Tok::Int(parse_int(&int_part, 10)));
    }
    Some(i)
}

fn lex_string(chars: &[char], start: usize, prefix: &str, toks: &mut Vec<Tok>) -> Option<usize> {
    let p = prefix.to_ascii_lowercase();
    let (raw, bytes) = match p.as_str() {
        "" | "u" => (false, false),
        "r" => (true, false),
        "b" => (false, true),
        "br" | "rb" => (true, true),
        // f-strings are JoinedStr nodes, which literal_eval rejects; other prefixes are errors.
        _ => return None,
    };
    let q = chars[start];
    let triple = chars.get(start + 1) == Some(&q) && chars.get(start + 2) == Some(&q);
    let mut i = start + if triple { 3 } else { 1 };
    let body_start = i;
    let body_end;
    loop {
        let c = *chars.get(i)?;
        if c == '\\' {
            i += 2;
            continue;
        }
        if c == q {
            if !triple {
                body_end = i;
                i += 1;
                break;
            }
            if chars.get(i + 1) == Some(&q) && chars.get(i + 2) == Some(&q) {
                body_end = i;
                i += 3;
                break;
            }
        }
        i += 1;
    }
    let body = chars.get(body_start..body_end)?;
    if bytes {
        if body.iter().any(|c| !c.is_ascii()) {
            return None;
        }
        toks.push(Tok::Bytes(unescape_bytes(body, raw)?));
    } else {
        toks.push(Tok::Str(unescape_str(body, raw)?));
    }
    Some(i)
}

fn hex_value(body: &[char], i: usize, n: usize) -> Option<u32> {
    let digits = body.get(i..i + n)?;
    let s: String = digits.iter().collect();
    if !digits.iter().all(char::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(&s, 16).ok()
}

fn octal_escape(body: &[char], i: usize) -> (u32, usize) {
    let mut v = 0u32;
    let mut n = 0;
    while n < 3 && body.get(i + n).is_some_and(|c| ('0'..='7').contains(c)) {
        v = v * 8 + body[i + n].to_digit(8).unwrap_or(0);
        n += 1;
    }
    (v, n)
}

fn simple_escape(c: char) -> Option<char> {
    Some(match c {
        '\\' => '\\',
        '\'' => '\'',
        '"' => '"',
        'a' => '\u{07}',
        'b' => '\u{08}',
        'f' => '\u{0c}',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'v' => '\u{0b}',
        _ => return None,
    })
}

fn unescape_str(body: &[char], raw: bool) -> Option<String> {
    if raw {
        return Some(body.iter().collect());
    }
    let mut out = String::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        if c != '\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let e = *body.get(i + 1)?;
        i += 2;
        if let Some(ch) = simple_escape(e) {
            out.push(ch);
        } else if ('0'..='7').contains(&e) {
            let (v, n) = octal_escape(body, i - 1);
            out.push(char::from_u32(v)?);
            i = i - 1 + n;
        } else if e == 'x' || e == 'u' || e == 'U' {
            let n = match e {
                'x' => 2,
                'u' => 4,
                _ => 8,
            };
            let v = hex_value(body, i, n)?;
            // Lone surrogates and values beyond U+10FFFF are not representable: keep the text.
            out.push(char::from_u32(v)?);
            i += n;
        } else if e == 'N' {
            // \N{NAME} needs the Unicode name table; not emulated (the text is kept).
            return None;
        } else {
            out.push('\\');
            out.push(e);
        }
    }
    Some(out)
}

fn unescape_bytes(body: &[char], raw: bool) -> Option<Vec<u8>> {
    if raw {
        return Some(body.iter().map(|c| *c as u8).collect());
    }
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        if c != '\\' {
            out.push(c as u8);
            i += 1;
            continue;
        }
        let e = *body.get(i + 1)?;
        i += 2;
        if let Some(ch) = simple_escape(e) {
            out.push(ch as u8);
        } else if ('0'..='7').contains(&e) {
            let (v, n) = octal_escape(body, i - 1);
            out.push((v & 0xff) as u8);
            i = i - 1 + n;
        } else if e == 'x' {
            out.push(u8::try_from(hex_value(body, i, 2)?).ok()?);
            i += 2;
        } else {
            out.push(b'\\');
            out.push(e as u8);
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Syntax tree (only what literal_eval can accept, plus names/calls it rejects at eval time)

#[derive(Debug)]
enum Node {
    Const(Py),
    Tuple(Vec<Node>),
    List(Vec<Node>),
    Set(Vec<Node>),
    Dict(Vec<(Node, Node)>),
    EmptySetCall,
    Unary {
        neg: bool,
        operand: Box<Node>,
    },
    Bin {
        left: Box<Node>,
        neg: bool,
        right: Box<Node>,
    },
    /// Valid Python, but not a literal (a name, a call): rejected when evaluated.
    Other,
}

/// CPython's tokenizer refuses more than 200 nested brackets ("too many nested parentheses");
/// deeper unary chains are never literals either. Both end as the raw text.
const MAX_NESTING: usize = 200;

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek_op(&self) -> Option<char> {
        match self.toks.get(self.pos) {
            Some(Tok::Op(c)) => Some(*c),
            _ => None,
        }
    }

    fn eat(&mut self, op: char) -> bool {
        if self.peek_op() == Some(op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// `expr (',' expr)* [',']` to the end of input: a bare tuple when a comma appears.
    fn top(&mut self) -> Option<Node> {
        let first = self.expr()?;
        let node = if self.peek_op() == Some(',') {
            let mut items = vec![first];
            while self.eat(',') {
                if self.pos == self.toks.len() {
                    break;
                }
                items.push(self.expr()?);
            }
            Node::Tuple(items)
        } else {
            first
        };
        (self.pos == self.toks.len()).then_some(node)
    }

    /// `term (('+'|'-') term)*`, left-associative.
    fn expr(&mut self) -> Option<Node> {
        let mut left = self.term()?;
        while let Some(op @ ('+' | '-')) = self.peek_op() {
            self.pos += 1;
            let right = self.term()?;
            left = Node::Bin {
                left: Box::new(left),
                neg: op == '-',
                right: Box::new(right),
            };
        }
        Some(left)
    }

    /// `('+'|'-') term | atom` (unary chains built iteratively).
    fn term(&mut self) -> Option<Node> {
        let mut signs = Vec::new();
        while let Some(op @ ('+' | '-')) = self.peek_op() {
            self.pos += 1;
            signs.push(op == '-');
            if signs.len() > MAX_NESTING {
                return None;
            }
        }
        let mut node = self.atom()?;
        for neg in signs.into_iter().rev() {
            node = Node::Unary {
                neg,
                operand: Box::new(node),
            };
        }
        Some(node)
    }

    /// Enters a bracket: `None` beyond CPython's nesting limit.
    fn open(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_NESTING).then_some(())
    }

    /// Comma-separated expressions up to `close`, allowing a trailing comma.
    fn items(&mut self, close: char) -> Option<Vec<Node>> {
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                return Some(items);
            }
            items.push(self.expr()?);
            if !self.eat(',') {
                return self.eat(close).then_some(items);
            }
        }
    }

    fn atom(&mut self) -> Option<Node> {
        let tok = self.toks.get(self.pos)?.clone();
        self.pos += 1;
        Some(match tok {
            Tok::Int(i) => Node::Const(Py::Int(i)),
            Tok::Float(f) => Node::Const(Py::Float(f)),
            Tok::Imag(f) => Node::Const(Py::Complex(0.0, f)),
            Tok::Ellipsis => Node::Const(Py::Ellipsis),
            Tok::Str(s) => {
                let mut s = s;
                while let Some(Tok::Str(more)) = self.toks.get(self.pos) {
                    s.push_str(more);
                    self.pos += 1;
                }
                if matches!(self.toks.get(self.pos), Some(Tok::Bytes(_))) {
                    return None;
                }
                Node::Const(Py::Str(s))
            }
            Tok::Bytes(b) => {
                let mut b = b;
                while let Some(Tok::Bytes(more)) = self.toks.get(self.pos) {
                    b.extend_from_slice(more);
                    self.pos += 1;
                }
                if matches!(self.toks.get(self.pos), Some(Tok::Str(_))) {
                    return None;
                }
                Node::Const(Py::Bytes(b))
            }
            Tok::Name(name) => match name.as_str() {
                "True" => Node::Const(Py::Bool(true)),
                "False" => Node::Const(Py::Bool(false)),
                "None" => Node::Const(Py::None),
                _ => {
                    if self.eat('(') {
                        self.open()?;
                        let args = self.items(')')?;
                        self.depth -= 1;
                        if name == "set" && args.is_empty() {
                            Node::EmptySetCall
                        } else {
                            Node::Other
                        }
                    } else {
                        Node::Other
                    }
                }
            },
            Tok::Op('(') => {
                self.open()?;
                let node = if self.eat(')') {
                    Node::Tuple(Vec::new())
                } else {
                    let first = self.expr()?;
                    if self.eat(')') {
                        first
                    } else {
                        if !self.eat(',') {
                            return None;
                        }
                        let mut rest = self.items(')')?;
                        rest.insert(0, first);
                        Node::Tuple(rest)
                    }
                };
                self.depth -= 1;
                node
            }
            Tok::Op('[') => {
                self.open()?;
                let items = self.items(']')?;
                self.depth -= 1;
                Node::List(items)
            }
            Tok::Op('{') => {
                self.open()?;
                let node = self.brace()?;
                self.depth -= 1;
                node
            }
            Tok::Op(_) => return None,
        })
    }

    /// The inside of `{…}` after the opening brace: a dict or a set.
    fn brace(&mut self) -> Option<Node> {
        if self.eat('}') {
            return Some(Node::Dict(Vec::new()));
        }
        let first = self.expr()?;
        if self.eat(':') {
            let mut pairs = vec![(first, self.expr()?)];
            loop {
                if self.eat('}') {
                    break;
                }
                if !self.eat(',') {
                    return None;
                }
                if self.eat('}') {
                    break;
                }
                let k = self.expr()?;
                if !self.eat(':') {
                    return None;
                }
                pairs.push((k, self.expr()?));
            }
            Some(Node::Dict(pairs))
        } else if self.eat('}') {
            Some(Node::Set(vec![first]))
        } else if self.eat(',') {
            let mut rest = self.items('}')?;
            rest.insert(0, first);
            Some(Node::Set(rest))
        } else {
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation (Python's `_convert`, in the same order so errors surface the same way)

fn number_const(node: &Node) -> Result<Py, Fail> {
    match node {
        Node::Const(p @ (Py::Int(_) | Py::Float(_) | Py::Complex(..))) => Ok(p.clone()),
        _ => Err(Fail::Malformed),
    }
}

fn signed_number(node: Node) -> Result<Py, Fail> {
    match node {
        Node::Unary { neg, operand } => {
            let v = number_const(&operand)?;
            Ok(if !neg {
                v
            } else {
                match v {
                    Py::Int(i) => Py::Int(negate(i)),
                    Py::Float(f) => Py::Float(-f),
                    Py::Complex(r, i) => Py::Complex(-r, -i),
                    other => other,
                }
            })
        }
        other => number_const(&other),
    }
}

fn eval(node: Node) -> Result<Py, Fail> {
    match node {
        Node::Const(p) => Ok(p),
        Node::Tuple(items) => Ok(Py::Tuple(
            items.into_iter().map(eval).collect::<Result<_, _>>()?,
        )),
        Node::List(items) => Ok(Py::List(
            items.into_iter().map(eval).collect::<Result<_, _>>()?,
        )),
        Node::Set(items) => {
            let mut out: Vec<Py> = Vec::with_capacity(items.len());
            for item in items {
                let v = eval(item)?;
                if let Some(t) = v.unhashable() {
                    return Err(Fail::Unhashable(t));
                }
                if !out.iter().any(|x| x.py_eq(&v)) {
                    out.push(v);
                }
            }
            Ok(Py::Set(out))
        }
        Node::EmptySetCall => Ok(Py::Set(Vec::new())),
        Node::Dict(pairs) => {
            let mut out: Vec<(Py, Py)> = Vec::with_capacity(pairs.len());
            for (k, v) in pairs {
                let k = eval(k)?;
                let v = eval(v)?;
                if let Some(t) = k.unhashable() {
                    return Err(Fail::Unhashable(t));
                }
                match out.iter_mut().find(|(x, _)| x.py_eq(&k)) {
                    Some(slot) => slot.1 = v,
                    None => out.push((k, v)),
                }
            }
            Ok(Py::Dict(out))
        }
        Node::Bin { left, neg, right } => {
            let l = signed_number(*left)?;
            let r = number_const(&right)?;
            let lr = match &l {
                Py::Int(i) => int_to_f64(i),
                Py::Float(f) => *f,
                _ => return Err(Fail::Malformed),
            };
            match r {
                Py::Complex(rr, ri) => {
                    if neg {
                        Ok(Py::Complex(lr - rr, -ri))
                    } else {
                        Ok(Py::Complex(lr + rr, ri))
                    }
                }
                _ => Err(Fail::Malformed),
            }
        }
        unary @ Node::Unary { .. } => signed_number(unary),
        Node::Other => Err(Fail::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(s: &str) -> Value {
        parse_value(s).unwrap()
    }

    #[test]
    fn scalars() {
        assert_eq!(v("23"), json!(23));
        assert_eq!(v("\"23\""), json!("23"));
        assert_eq!(v("True"), json!(true));
        assert_eq!(v("true"), json!("true"));
        assert_eq!(v("None"), Value::Null);
        assert_eq!(v("01"), json!("01"));
        assert_eq!(v("00"), json!(0));
        assert_eq!(v("1_000"), json!(1000));
        assert_eq!(v("0x10"), json!(16));
        assert!(v("1e3").is_f64());
        assert_eq!(v("1e3"), json!(1000.0));
        assert_eq!(v("8080 # note"), json!(8080));
        assert_eq!(v("foo # note"), json!("foo # note"));
        assert_eq!(v("'#' # c"), json!("#"));
        assert_eq!(v(""), json!(""));
        assert_eq!(v("  7"), json!(7));
        assert_eq!(v("-0x10"), json!(-16));
        assert_eq!(v("- 1"), json!(-1));
        assert_eq!(v("--1"), json!("--1"));
        assert_eq!(v("1e999"), json!("inf"));
        assert_eq!(v("1+2j"), json!("1+2j"));
        assert_eq!(v("[1j, ...]"), json!(["1j", "Ellipsis"]));
        assert_eq!(v("[1+2j, -1.5-0j]"), json!(["(1+2j)", "(-1.5-0j)"]));
        assert_eq!(v("b'abc'"), json!("abc"));
        assert_eq!(v("9223372036854775808"), json!(9223372036854775808u64));
        assert_eq!(v("18446744073709551616"), json!("18446744073709551616"));
        assert_eq!(v("-0x8000000000000000"), json!(i64::MIN));
        assert_eq!(
            v("0xffffffffffffffffffffffffffffffffffffffff"),
            json!("1461501637330902918203684832716283019655932542975")
        );
        assert_eq!(v(&"1".repeat(4301)), json!("1".repeat(4301)));
    }

    #[test]
    fn containers() {
        assert_eq!(v("[1, 'a', (2, 3), {4}]"), json!([1, "a", [2, 3], [4]]));
        assert_eq!(v("1, 2"), json!([1, 2]));
        assert_eq!(v("()"), json!([]));
        assert_eq!(v("set()"), json!([]));
        assert_eq!(v("set([1])"), json!("set([1])"));
        assert_eq!(v("{1: 2, 1.0: 3, True: 4}"), json!({"1": 4}));
        assert_eq!(
            v("{None: 1, 2.5: 3, False: 0}"),
            json!({"null": 1, "2.5": 3, "false": 0})
        );
        assert_eq!(v("{(1, 'a'): 1}"), json!({"(1, 'a')": 1}));
        assert_eq!(v("{1, 1.0, True, 2}"), json!([1, 2]));
        assert_eq!(v("[a]"), json!("[a]"));
        assert_eq!(v("[1,]"), json!([1]));
        assert_eq!(v("[,]"), json!("[,]"));
        assert_eq!(v("{1: 2, 3}"), json!("{1: 2, 3}"));
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert!(v(&deep(MAX_NESTING)).is_array());
        assert_eq!(v(&deep(MAX_NESTING + 1)), json!(deep(MAX_NESTING + 1)));
        let minus = format!("{}1", "-".repeat(100_000));
        assert_eq!(v(&minus), json!(minus));
    }

    #[test]
    fn strings() {
        assert_eq!(v(r"'a\'b'"), json!("a'b"));
        assert_eq!(v(r"'\x41\101\u00e9\U0001F600'"), json!("AAé😀"));
        assert_eq!(v(r"'\d'"), json!(r"\d"));
        assert_eq!(v(r"r'\n'"), json!(r"\n"));
        assert_eq!(v(r"'\N{EM DASH}'"), json!(r"'\N{EM DASH}'"));
        assert_eq!(v("'a' 'b' \"c\""), json!("abc"));
        assert_eq!(v("'a' b'b'"), json!("'a' b'b'"));
        assert_eq!(v("f'x'"), json!("f'x'"));
        assert_eq!(v("'''a'b'''"), json!("a'b"));
        assert_eq!(v("'unterminated"), json!("'unterminated"));
    }

    #[test]
    fn unhashable_is_an_error() {
        assert_eq!(
            parse_value("{[1]: 2}"),
            Err(Unhashable { type_name: "list" })
        );
        assert_eq!(
            parse_value("{{}: 2}"),
            Err(Unhashable { type_name: "dict" })
        );
        assert_eq!(
            parse_value("{1, set()}"),
            Err(Unhashable { type_name: "set" })
        );
        assert_eq!(
            parse_value("{(1, [2]): 3}"),
            Err(Unhashable { type_name: "list" })
        );
        // A syntax error anywhere wins over the TypeError (Python parses first).
        assert_eq!(v("{[1]: 2} x"), json!("{[1]: 2} x"));
        // A malformed value converted before the key is hashed wins too.
        assert_eq!(v("{[1]: x}"), json!("{[1]: x}"));
        assert_eq!(
            parse_value("{[1]: 2, 3: x}"),
            Err(Unhashable { type_name: "list" })
        );
    }
}
