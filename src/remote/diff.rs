//! Unified text diffs for `--diff` (old remote content vs new content).

use similar::TextDiff;

/// A unified diff of `old` → `new` labelled with `path`; `None` when either side is not UTF-8
/// text (contains NUL or invalid UTF-8) or when they are equal.
pub fn unified_diff(path: &str, old: &[u8], new: &[u8]) -> Option<String> {
    if old == new || old.contains(&0) || new.contains(&0) {
        return None;
    }
    let old = std::str::from_utf8(old).ok()?;
    let new = std::str::from_utf8(new).ok()?;
    let diff = TextDiff::from_lines(old, new);
    let text = diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("{path} (before)"), &format!("{path} (after)"))
        .to_string();
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_diff_has_headers_and_changed_lines() {
        let d = unified_diff("/etc/x.conf", b"a\nb\nc\n", b"a\nB\nc\n").unwrap();
        assert!(d.contains("--- /etc/x.conf (before)"), "{d}");
        assert!(d.contains("+++ /etc/x.conf (after)"), "{d}");
        assert!(d.contains("-b\n") && d.contains("+B\n"), "{d}");
        assert!(d.contains("@@ -1,3 +1,3 @@"), "{d}");
    }

    #[test]
    fn new_file_and_binary() {
        let d = unified_diff("/f", b"", b"x\n").unwrap();
        assert!(d.contains("+x"), "{d}");
        assert_eq!(unified_diff("/f", b"\0\x01", b"x"), None);
        assert_eq!(unified_diff("/f", b"same", b"same"), None);
    }
}
