//! Host patterns on inventory lines: `host:port`, `[v6]:port`, and `[a:b]`/`[a:b:step]` ranges,
//! as Ansible's `parse_address(…, allow_ranges=True)` and `expand_hostname_range` read them.
//!
//! Quirks kept on purpose, because Ansible has them:
//! - a pattern that is not a valid host (IPv4/IPv6/hostname, each possibly with ranges) is used
//!   as written, and then *no port* is taken from it (`h[-1:2]:22` gives hosts `h-1:22` …);
//! - any `[` means a range; ranges expand left to right (`web[1:2]-[a:b]`);
//! - a leading zero in `begin` sets zero padding and requires `end` of the same length;
//! - letter ranges index into `a…zA…Z` (Python's `string.ascii_letters`), so `[a:C]` runs
//!   through all lower-case letters, and `begin`/`end` may even be multi-letter substrings of it;
//! - `begin > end` in a numeric range yields no hosts; a step of 0 is an error; a negative
//!   step counts down to (but excluding) `end + 1`, as Python's `range()` does.

use std::sync::LazyLock;

use regex::Regex;

use super::pyutil::py_int;

/// Hosts produced by one expanded range are capped (Python would try to build the whole list).
pub const MAX_EXPANDED_HOSTS: usize = 1_000_000;

/// Why a host range could not be expanded; the texts are Ansible's (or Python's) messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// `[x]` or `[a:b:c:d]`.
    #[error("host range must be begin:end or begin:end:step")]
    BadBounds,
    /// `[1:]`.
    #[error("host range must specify end value")]
    NoEnd,
    /// `[01:100]`.
    #[error("host range must specify equal-length begin and end formats")]
    UnequalPadding,
    /// `[z:a]` (letters only; numbers give an empty range).
    #[error("host range must have begin <= end")]
    LettersReversed,
    /// `[1:3:0]`.
    #[error("range() arg 3 must not be zero")]
    ZeroStep,
    /// A bound or step that is neither a letter nor an integer.
    #[error("invalid literal for int() with base 10: '{0}'")]
    NotAnInteger(String),
    /// The pattern's `[` and `]` do not pair up (`h[1:3`).
    #[error("not enough values to unpack (expected 3, got {0})")]
    Unpack(usize),
    /// More than three pieces after splitting at the first `[` and `]` (a `|` in the name).
    #[error("too many values to unpack (expected 3)")]
    UnpackTooMany,
    /// The range would produce more than [`MAX_EXPANDED_HOSTS`] names.
    #[error("host range expands to more than {MAX_EXPANDED_HOSTS} hosts")]
    TooLarge,
}

const RANGE_HEX: &str = r"\[[0-9a-f]+:[0-9a-f]+(?::[0-9]+)?\]";
const RANGE_NUM: &str = r"\[[0-9]+:[0-9]+(?::[0-9]+)?\]";
const RANGE_ALNUM: &str = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]";

static BRACKETED_HOSTPORT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\[(.+)\]:([0-9]+)$").expect("static regex"));
static HOSTPORT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$").expect("static regex"));
static IPV4: LazyLock<Regex> = LazyLock::new(|| {
    let c = format!(r"(?:[01]?[0-9]{{1,2}}|2[0-4][0-9]|25[0-5]|{RANGE_NUM})");
    Regex::new(&format!(r"(?i)^(?:{c}\.){{3}}{c}$")).expect("static regex")
});
/// Python's IPv6 pattern is `^alt1|…|altN$`: the `$` binds only to the last alternative, so the
/// others match a *prefix*. Kept as two regexes to reproduce that.
static IPV6: LazyLock<(Regex, Regex)> = LazyLock::new(|| {
    let c = format!(r"(?:[0-9a-f]{{1,4}}|{RANGE_HEX})");
    let v4 = format!(r"(?:{c}\.){{3}}{c}");
    let prefix_alts = [
        format!(r"(?:{c}:){{7}}{c}"),
        format!(r"(?:{c}:){{1,6}}:"),
        format!(r"(?:{c}:)(?::{c}){{1,6}}"),
        format!(r"(?:{c}:){{2}}(?::{c}){{1,5}}"),
        format!(r"(?:{c}:){{3}}(?::{c}){{1,4}}"),
        format!(r"(?:{c}:){{4}}(?::{c}){{1,3}}"),
        format!(r"(?:{c}:){{5}}(?::{c}){{1,2}}"),
        format!(r"(?:{c}:){{6}}(?::{c})"),
        format!(r":(?::{c}){{1,6}}"),
        format!(r"{c}?::"),
        format!(r"(?:0:){{6}}{v4}"),
        format!(r"::(?:ffff:)?{v4}"),
    ];
    let last = format!(r"(?:0:){{5}}ffff:{v4}");
    (
        Regex::new(&format!("(?i)^(?:{})", prefix_alts.join("|"))).expect("static regex"),
        Regex::new(&format!("(?i)^(?:{last})$")).expect("static regex"),
    )
});
/// A DNS-ish name whose labels may contain ranges and must not end in `-` or `_`.
static HOSTNAME: LazyLock<Regex> = LazyLock::new(|| {
    let r = RANGE_ALNUM;
    let label = format!(r"(?:(?:[^\W_]|{r})|(?:\w|{r})(?:[\w-]|{r})*(?:[^\W_]|{r}))");
    Regex::new(&format!(r"(?i)^{label}(?:\.{label})*$")).expect("static regex")
});

/// Whether `s` matches Ansible's IPv4 pattern (ranges allowed in place of octets).
pub fn is_ipv4(s: &str) -> bool {
    IPV4.is_match(s)
}

/// Whether `s` matches Ansible's IPv6 pattern (with its prefix-match quirk).
pub fn is_ipv6(s: &str) -> bool {
    IPV6.0.is_match(s) || IPV6.1.is_match(s)
}

/// A port as Python's `int()` reads it: arbitrary digits, kept as text when beyond `u64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Port {
    /// Fits in a `u64`.
    Num(u64),
    /// Longer than `u64`; the digits with leading zeros removed.
    Big(String),
}

impl Port {
    fn parse(digits: &str) -> Port {
        match digits.parse::<u64>() {
            Ok(n) => Port::Num(n),
            Err(_) => Port::Big(digits.trim_start_matches('0').to_string()),
        }
    }

    /// Python truthiness: port 0 is falsy, and Ansible then sets no `ansible_port`.
    pub fn is_zero(&self) -> bool {
        matches!(self, Port::Num(0))
    }

    /// The JSON value Ansible stores in `ansible_port`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Port::Num(n) => serde_json::Value::from(*n),
            Port::Big(s) => serde_json::Value::String(s.clone()),
        }
    }
}

/// Ansible's `parse_address(address, allow_ranges=True)`: `Some((host, port))`, or `None`
/// where Ansible raises ("Not a valid network hostname").
pub fn parse_address(address: &str) -> Option<(&str, Option<Port>)> {
    let mut addr = address;
    let mut port = None;
    // Ansible tries both regexes in turn, the second on what the first left.
    if let Some(c) = BRACKETED_HOSTPORT.captures(addr) {
        let (a, p) = (c.get(1)?, c.get(2)?);
        addr = &addr[a.range()];
        port = Some(Port::parse(p.as_str()));
    }
    if let Some(c) = HOSTPORT.captures(addr) {
        let (a, p) = (c.get(1)?, c.get(2)?);
        port = Some(Port::parse(p.as_str()));
        addr = &addr[a.range()];
    }
    if is_ipv4(addr) || is_ipv6(addr) || HOSTNAME.is_match(addr) {
        Some((addr, port))
    } else {
        None
    }
}

/// The plugin's `_expand_hostpattern`: split off a port if the pattern parses as an address,
/// then expand ranges. Returns the host names and the port.
pub fn expand_hostpattern(pattern: &str) -> Result<(Vec<String>, Option<Port>), RangeError> {
    let (base, port) = parse_address(pattern).unwrap_or((pattern, None));
    let hosts = if base.contains('[') {
        expand_range(base)?
    } else {
        vec![base.to_string()]
    };
    Ok((hosts, port))
}

const ASCII_LETTERS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Python's `str(x).zfill(width)`.
fn zfill(s: &str, width: usize) -> String {
    let len = s.chars().count();
    if len >= width {
        return s.to_string();
    }
    let (sign, digits) = match s.strip_prefix(['-', '+']) {
        Some(rest) => (&s[..1], rest),
        None => ("", s),
    };
    format!("{sign}{}{digits}", "0".repeat(width - len))
}

fn to_int(s: &str) -> Result<i128, RangeError> {
    py_int(s).ok_or_else(|| RangeError::NotAnInteger(s.to_string()))
}

/// Ansible's `expand_hostname_range`: expands the first `[…]` of `line` and recurses on names
/// that still contain `[`.
pub fn expand_range(line: &str) -> Result<Vec<String>, RangeError> {
    let mut out = Vec::new();
    expand_into(line, &mut out)?;
    Ok(out)
}

fn expand_into(line: &str, out: &mut Vec<String>) -> Result<(), RangeError> {
    // Python: line.replace('[', '|', 1).replace(']', '|', 1).split('|') must give 3 parts.
    let replaced = line.replacen('[', "|", 1).replacen(']', "|", 1);
    let parts: Vec<&str> = replaced.split('|').collect();
    let [head, nrange, tail] = parts[..] else {
        return Err(if parts.len() < 3 {
            RangeError::Unpack(parts.len())
        } else {
            RangeError::UnpackTooMany
        });
    };
    let bounds: Vec<&str> = nrange.split(':').collect();
    if bounds.len() != 2 && bounds.len() != 3 {
        return Err(RangeError::BadBounds);
    }
    let beg = if bounds[0].is_empty() { "0" } else { bounds[0] };
    let end = bounds[1];
    let step = bounds.get(2).copied().unwrap_or("1");
    if end.is_empty() {
        return Err(RangeError::NoEnd);
    }
    let pad = if beg.starts_with('0') && beg.chars().count() > 1 {
        let width = beg.chars().count();
        if width != end.chars().count() {
            return Err(RangeError::UnequalPadding);
        }
        Some(width)
    } else {
        None
    };
    let fill = |s: String| match pad {
        Some(w) => zfill(&s, w),
        None => s,
    };
    let emit = |piece: String, out: &mut Vec<String>| -> Result<(), RangeError> {
        let name = format!("{head}{}{tail}", fill(piece));
        if name.contains('[') {
            expand_into(&name, out)
        } else {
            if out.len() >= MAX_EXPANDED_HOSTS {
                return Err(RangeError::TooLarge);
            }
            out.push(name);
            Ok(())
        }
    };

    // Letter range: both bounds are substrings of ascii_letters (Python's str.index).
    if let (Some(i_beg), Some(i_end)) = (ASCII_LETTERS.find(beg), ASCII_LETTERS.find(end)) {
        if i_beg > i_end {
            return Err(RangeError::LettersReversed);
        }
        // A bad or zero step raises ValueError inside the same `try`, so Python falls through
        // to int(beg), which fails on the letter.
        let step = py_int(step)
            .filter(|s| *s != 0)
            .ok_or_else(|| RangeError::NotAnInteger(beg.to_string()))?;
        let letters = &ASCII_LETTERS.as_bytes()[i_beg..=i_end.min(ASCII_LETTERS.len() - 1)];
        if step > 0 {
            let step = usize::try_from(step).unwrap_or(usize::MAX);
            for &b in letters.iter().step_by(step) {
                emit(char::from(b).to_string(), out)?;
            }
        }
        // A negative step over an ascending slice yields nothing.
        return Ok(());
    }

    let (b, e, s) = (to_int(beg)?, to_int(end)?, to_int(step)?);
    if s == 0 {
        return Err(RangeError::ZeroStep);
    }
    let stop = e + 1;
    let count = if s > 0 {
        if stop > b { (stop - b + s - 1) / s } else { 0 }
    } else if b > stop {
        (b - stop + (-s) - 1) / (-s)
    } else {
        0
    };
    if count > MAX_EXPANDED_HOSTS as i128 {
        return Err(RangeError::TooLarge);
    }
    let mut x = b;
    for _ in 0..count {
        emit(x.to_string(), out)?;
        x += s;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(p: &str) -> Vec<String> {
        expand_hostpattern(p).unwrap().0
    }

    #[test]
    fn ports() {
        assert_eq!(parse_address("h:22"), Some(("h", Some(Port::Num(22)))));
        assert_eq!(
            parse_address("[2001:db8::1]:2200"),
            Some(("2001:db8::1", Some(Port::Num(2200))))
        );
        assert_eq!(parse_address("2001:db8::2"), Some(("2001:db8::2", None)));
        assert_eq!(
            parse_address("10.0.0.[1:3]:2222"),
            Some(("10.0.0.[1:3]", Some(Port::Num(2222))))
        );
        assert_eq!(parse_address("[h:22]:33"), Some(("h", Some(Port::Num(22)))));
        assert_eq!(parse_address("h:"), None);
        assert_eq!(parse_address("h_"), None);
        assert_eq!(parse_address("_h"), Some(("_h", None)));
        assert_eq!(
            parse_address("web-01.example.com"),
            Some(("web-01.example.com", None))
        );
        assert_eq!(parse_address("[g]"), None);
        assert_eq!(parse_address("::"), Some(("::", None)));
        let (_, port) = expand_hostpattern("h:99999999999999999999").unwrap();
        assert_eq!(port, Some(Port::Big("99999999999999999999".into())));
    }

    #[test]
    fn ranges() {
        assert_eq!(hosts("node[01:03]"), ["node01", "node02", "node03"]);
        assert_eq!(hosts("h[:2]"), ["h0", "h1", "h2"]);
        assert_eq!(hosts("h[1:7:3]"), ["h1", "h4", "h7"]);
        assert_eq!(hosts("h[3:1]"), Vec::<String>::new());
        assert_eq!(
            hosts("web[1:2]-x[a:b]"),
            ["web1-xa", "web1-xb", "web2-xa", "web2-xb"]
        );
        assert_eq!(hosts("h[y:B]"), ["hy", "hz", "hA", "hB"]);
        assert_eq!(hosts("h[ab:cd]"), ["ha", "hb", "hc"]);
        assert_eq!(hosts("h[a:e:2]"), ["ha", "hc", "he"]);
        assert_eq!(hosts("h[a:c:-1]"), Vec::<String>::new());
        assert_eq!(hosts("h[-1:2]"), ["h-1", "h0", "h1", "h2"]);
        assert_eq!(hosts("h[5:1:-1]"), ["h5", "h4", "h3"]);
        assert_eq!(hosts("h[010:-10:-5]"), ["h010", "h005", "h000", "h-05"]);
        assert_eq!(hosts("h[-1:2]:22"), ["h-1:22", "h0:22", "h1:22", "h2:22"]);
        assert_eq!(expand_hostpattern("h[-1:2]:22").unwrap().1, None);
        assert_eq!(
            hosts("[2001:db8::[1:2]]:22"),
            ["2001:db8::1", "2001:db8::2"]
        );
    }

    #[test]
    fn range_errors() {
        let err = |p: &str| expand_hostpattern(p).unwrap_err();
        assert_eq!(err("[g]"), RangeError::BadBounds);
        assert_eq!(err("h[1:2:3:4]"), RangeError::BadBounds);
        assert_eq!(err("h[1:]"), RangeError::NoEnd);
        assert_eq!(err("h[01:100]"), RangeError::UnequalPadding);
        assert_eq!(err("h[A:z]"), RangeError::LettersReversed);
        assert_eq!(err("h[1:3:0]"), RangeError::ZeroStep);
        assert_eq!(err("h[a:c:0]"), RangeError::NotAnInteger("a".into()));
        assert_eq!(err("h[a:5]"), RangeError::NotAnInteger("a".into()));
        assert_eq!(err("h[1:c]"), RangeError::NotAnInteger("c".into()));
        assert_eq!(err("h[1:3"), RangeError::Unpack(2));
        assert_eq!(err("h[1:3]|x"), RangeError::UnpackTooMany);
        assert_eq!(err("h[0:99999999]"), RangeError::TooLarge);
        assert_eq!(err("h[1:3"), RangeError::Unpack(2));
        assert_eq!(
            RangeError::Unpack(2).to_string(),
            "not enough values to unpack (expected 3, got 2)"
        );
    }
}
