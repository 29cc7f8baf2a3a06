//! SHA-256 helpers: streaming digests of files and writers, hex parsing, and the
//! `sha256sum`-style side files (`<hex>  <filename>` or just `<hex>`) that releases publish.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// Lower-case hex SHA-256 of an in-memory buffer.
pub fn sha256_bytes(data: &[u8]) -> String {
    to_hex(&Sha256::digest(data))
}

/// Lower-case hex SHA-256 of a file, read in a stream (never loaded whole into memory).
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut writer = HashingWriter::new(io::sink());
    io::copy(&mut file, &mut writer)?;
    Ok(writer.finish().0)
}

/// Normalises a user- or file-supplied digest: 64 hex digits, optionally prefixed with
/// `sha256:`, surrounding white space ignored. Returns it in lower case, or `None` when it is
/// not a SHA-256 digest.
pub fn normalize_sha256(text: &str) -> Option<String> {
    let text = text.trim();
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// Reads the digest out of a side file's text.
///
/// The first non-empty line must be `<hex>` or `<hex> <name>` (as `sha256sum` writes it, with
/// one or two spaces and an optional `*` before the name). When a name is present, its last
/// path component must be one of `accepted_names`, so a side file for another file is refused.
/// The error is a sentence saying what was wrong.
pub(crate) fn parse_sidecar(text: &str, accepted_names: &[&str]) -> Result<String, String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or_else(|| "the checksum file is empty".to_string())?;
    let mut fields = line.split_whitespace();
    let hex = fields.next().unwrap_or_default();
    let digest = normalize_sha256(hex).ok_or_else(|| {
        format!(
            "the checksum file does not start with a sha256 digest (found {:?})",
            truncate(line, 80)
        )
    })?;
    if let Some(named) = fields.next() {
        let named = named.trim_start_matches('*');
        let base = named.rsplit('/').next().unwrap_or(named);
        if !accepted_names.contains(&base) {
            return Err(format!(
                "the checksum file is for {named:?}, not for {}",
                accepted_names.join(" or ")
            ));
        }
    }
    Ok(digest)
}

/// Lower-case hex encoding.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A writer that hashes and counts everything passed through to the inner writer, so a
/// download is verified in the same pass that stores it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Returns the hex digest, the byte count and the inner writer.
    pub(crate) fn finish(self) -> (String, u64, W) {
        (to_hex(&self.hasher.finalize()), self.written, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_for_abc() {
        // FIPS 180-2 example "abc".
        assert_eq!(
            sha256_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn file_digest_matches_bytes_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        assert_eq!(sha256_file(&path).unwrap(), sha256_bytes(&data));
    }

    #[test]
    fn normalize_accepts_prefix_and_upper_case() {
        let upper = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        let want = upper.to_ascii_lowercase();
        assert_eq!(normalize_sha256(upper), Some(want.clone()));
        assert_eq!(normalize_sha256(&format!(" sha256:{want}\n")), Some(want));
        assert_eq!(normalize_sha256("abc"), None);
        assert_eq!(normalize_sha256(&"g".repeat(64)), None);
    }

    #[test]
    fn sidecar_forms() {
        let hex = sha256_bytes(b"x");
        assert_eq!(parse_sidecar(&hex, &["a.tgz"]), Ok(hex.clone()));
        assert_eq!(
            parse_sidecar(&format!("\n{hex}  a.tgz\n"), &["a.tgz"]),
            Ok(hex.clone())
        );
        assert_eq!(
            parse_sidecar(&format!("{hex} *dir/a.tgz"), &["a.tgz"]),
            Ok(hex.clone())
        );
        let err = parse_sidecar(&format!("{hex}  b.tgz"), &["a.tgz"]).unwrap_err();
        assert!(err.contains("b.tgz"), "{err}");
        assert!(parse_sidecar("", &["a.tgz"]).is_err());
        assert!(parse_sidecar("<html>not found</html>", &["a.tgz"]).is_err());
    }
}
