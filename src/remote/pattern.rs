//! OpenSSH-style host patterns (`*`, `?`, `!negation`), shared by `ssh_config` and `known_hosts`.

/// Does `text` match the glob `pattern` (`*` = any run of characters, `?` = one character)?
/// Matching is ASCII case-insensitive, as OpenSSH lowercases host names before matching.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    // Iterative glob with single backtrack point: linear in practice, no recursion.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Result of matching a host against a list of patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListMatch {
    /// A positive pattern matched and no negated one did.
    Yes,
    /// Nothing matched.
    No,
    /// A negated pattern (`!pat`) matched: the whole list fails, whatever else matched.
    Negated,
}

/// Match `host` against a pattern list the way OpenSSH does: any positive match, unless a
/// negated pattern matches.
pub fn match_list<'a>(host: &str, patterns: impl IntoIterator<Item = &'a str>) -> ListMatch {
    let mut found = false;
    for pat in patterns {
        if let Some(neg) = pat.strip_prefix('!') {
            if wildcard_match(neg, host) {
                return ListMatch::Negated;
            }
        } else if wildcard_match(pat, host) {
            found = true;
        }
    }
    if found { ListMatch::Yes } else { ListMatch::No }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("10.0.0.*", "10.0.0.7"));
        assert!(!wildcard_match("10.0.0.*", "10.0.1.7"));
        assert!(wildcard_match("node?", "node1"));
        assert!(!wildcard_match("node?", "node12"));
        assert!(wildcard_match("*.example.com", "A.Example.COM"));
        assert!(wildcard_match("a*b*c", "axxbyyc"));
        assert!(!wildcard_match("a*b*c", "axxbyy"));
        assert!(wildcard_match("", ""));
        assert!(!wildcard_match("", "x"));
    }

    #[test]
    fn lists_with_negation() {
        assert_eq!(match_list("web1", ["web*", "!web2"]), ListMatch::Yes);
        assert_eq!(match_list("web2", ["web*", "!web2"]), ListMatch::Negated);
        assert_eq!(match_list("db1", ["web*", "!web2"]), ListMatch::No);
        assert_eq!(match_list("db1", ["!web2"]), ListMatch::No);
    }
}
