//! Host-line splitting exactly like Python's `shlex.split(line, comments=True)` (POSIX mode),
//! which Ansible's INI plugin uses on every host line.
//!
//! The `shlex` crate does not treat `#` inside a word as a comment; Python does (`l=foo#bar m=x`
//! yields only `l=foo`), so the state machine of Python's `shlex.read_token` is reproduced here.

/// Why a host line could not be split; the texts are Python's `ValueError` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShlexError {
    /// A quote was opened and never closed.
    #[error("No closing quotation")]
    NoClosingQuotation,
    /// The line ends with a backslash.
    #[error("No escaped character")]
    NoEscapedCharacter,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Space,
    Word,
    Quote(char),
    Escape,
}

/// Splits `line` into words: whitespace separates, `'` and `"` group and are removed, a
/// backslash escapes outside quotes and (for `\`, `"`) inside double quotes, and `#` starts a
/// comment that runs to the end of the line, even in the middle of a word.
pub fn split(line: &str) -> Result<Vec<String>, ShlexError> {
    let mut tokens = Vec::new();
    let mut token = String::new();
    let mut quoted = false;
    let mut state = State::Space;
    let mut escaped_state = State::Word;
    let is_ws = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
    for c in line.chars() {
        match state {
            State::Space => {
                if is_ws(c) {
                    continue;
                } else if c == '#' {
                    break;
                } else if c == '\\' {
                    escaped_state = State::Word;
                    state = State::Escape;
                } else if c == '\'' || c == '"' {
                    state = State::Quote(c);
                } else {
                    token.push(c);
                    state = State::Word;
                }
            }
            State::Quote(q) => {
                quoted = true;
                if c == q {
                    state = State::Word;
                } else if c == '\\' && q == '"' {
                    escaped_state = state;
                    state = State::Escape;
                } else {
                    token.push(c);
                }
            }
            State::Escape => {
                if let State::Quote(q) = escaped_state
                    && c != '\\'
                    && c != q
                {
                    token.push('\\');
                }
                token.push(c);
                state = escaped_state;
            }
            State::Word => {
                if is_ws(c) {
                    state = State::Space;
                    tokens.push(std::mem::take(&mut token));
                    quoted = false;
                } else if c == '#' {
                    // The comment swallows the rest of the line; the word so far is complete.
                    state = State::Space;
                    break;
                } else if c == '\'' || c == '"' {
                    state = State::Quote(c);
                } else if c == '\\' {
                    escaped_state = State::Word;
                    state = State::Escape;
                } else {
                    token.push(c);
                }
            }
        }
    }
    match state {
        State::Quote(_) => return Err(ShlexError::NoClosingQuotation),
        State::Escape => return Err(ShlexError::NoEscapedCharacter),
        State::Word => tokens.push(token),
        State::Space => {
            if !token.is_empty() || quoted {
                tokens.push(token);
            }
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(line: &str) -> Vec<String> {
        split(line).unwrap()
    }

    #[test]
    fn words_quotes_and_comments() {
        assert_eq!(
            s("h a=1 b=\"two words\" c='x'"),
            ["h", "a=1", "b=two words", "c=x"]
        );
        assert_eq!(s("h l=foo#bar m=x"), ["h", "l=foo"]);
        assert_eq!(s("h a=1 # comment"), ["h", "a=1"]);
        assert_eq!(s("h a=1#"), ["h", "a=1"]);
        assert_eq!(s("h a='x#y'"), ["h", "a=x#y"]);
        assert_eq!(s("h #a=1"), ["h"]);
        assert_eq!(s("h\ta=1  \t b=2"), ["h", "a=1", "b=2"]);
        assert_eq!(s("h a=\"'23'\""), ["h", "a='23'"]);
        assert_eq!(s("h a=x\"y z\"w"), ["h", "a=xy zw"]);
        assert_eq!(s("h a=''"), ["h", "a="]);
        assert_eq!(s("''"), [""]);
        assert_eq!(s("h ''"), ["h", ""]);
    }

    #[test]
    fn escapes_follow_posix_shlex() {
        assert_eq!(s(r"h a=\#b"), ["h", "a=#b"]);
        assert_eq!(s(r"h a=x\ y"), ["h", "a=x y"]);
        assert_eq!(s(r#"h a="x\"y""#), ["h", "a=x\"y"]);
        assert_eq!(s(r#"h a="x\ny""#), ["h", r"a=x\ny"]);
        assert_eq!(s(r#"h a="x\\y""#), ["h", r"a=x\y"]);
        assert_eq!(s(r"h a='x\y'"), ["h", r"a=x\y"]);
        assert_eq!(s(r"\h"), ["h"]);
    }

    #[test]
    fn errors() {
        assert_eq!(split("h \"a"), Err(ShlexError::NoClosingQuotation));
        assert_eq!(split("h 'a"), Err(ShlexError::NoClosingQuotation));
        assert_eq!(split("h a\\"), Err(ShlexError::NoEscapedCharacter));
        assert_eq!(
            ShlexError::NoClosingQuotation.to_string(),
            "No closing quotation"
        );
    }
}
