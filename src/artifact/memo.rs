//! Work that every `setup` run would otherwise repeat on the deploy host, done once:
//!
//! * [`DigestMemo`]: the sha256 of a local file, remembered with the file's identity (device,
//!   inode, size, modification time in nanoseconds) in `<cache>/digests.json`. A file whose
//!   identity is unchanged is not read again — the rule `git` and `rsync` use for the same job.
//!   Any write through the file system changes the modification time, and a replaced file has a
//!   new inode, so a stale digest needs a deliberate forgery of all four.
//! * [`cached_plugins`]: the plugins extracted from a verified tarball, kept under
//!   `<cache>/extracted/<tarball sha256>/`; reused while every file still has the identity it
//!   had when it was extracted, re-extracted otherwise.

use super::error::ArtifactError;
use super::extract::{ExtractLimits, ExtractedFile, extract_plugins};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl FileIdentity {
    /// The identity of `path` (following symbolic links).
    pub fn of(path: &Path) -> std::io::Result<FileIdentity> {
        let m = std::fs::metadata(path)?;
        Ok(FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Remembered {
    id: FileIdentity,
    sha256: String,
}

/// sha256 digests of local files keyed by path and identity (see the module doc).
#[derive(Debug)]
pub struct DigestMemo {
    file: PathBuf,
    entries: BTreeMap<String, Remembered>,
    dirty: bool,
}

impl DigestMemo {
    /// Load `<cache_dir>/digests.json` (an unreadable or corrupt memo is simply empty).
    pub fn open(cache_dir: &Path) -> DigestMemo {
        let file = cache_dir.join("digests.json");
        let entries = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        DigestMemo {
            file,
            entries,
            dirty: false,
        }
    }

    /// (sha256, size) of `path`, read only when its identity changed since last time.
    pub fn sha256(&mut self, path: &Path) -> std::io::Result<(String, u64)> {
        let key = std::fs::canonicalize(path)?.display().to_string();
        let id = FileIdentity::of(path)?;
        if let Some(r) = self.entries.get(&key)
            && r.id == id
        {
            return Ok((r.sha256.clone(), id.size));
        }
        let sha256 = super::digest::sha256_file(path)?;
        // The file may have changed while it was read: remember only a stable identity.
        if FileIdentity::of(path)? == id {
            self.entries.insert(
                key,
                Remembered {
                    id,
                    sha256: sha256.clone(),
                },
            );
            self.dirty = true;
        }
        Ok((sha256, id.size))
    }

    /// Write the memo back (atomically) when it changed; failures only cost speed next time.
    pub fn save(&self) {
        if !self.dirty {
            return;
        }
        let Some(dir) = self.file.parent() else {
            return;
        };
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let Ok(text) = serde_json::to_vec(&self.entries) else {
            return;
        };
        if let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir)
            && std::io::Write::write_all(&mut tmp, &text).is_ok()
        {
            let _ = tmp.persist(&self.file);
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ExtractedIndex {
    files: Vec<(String, String, u64, u32, FileIdentity)>,
}

const INDEX: &str = "index.json";

/// The `wanted` plugins of a verified tarball (`tarball_sha256` is its digest), from the
/// extraction cache under `cache_dir`, extracting them first when missing or changed.
pub fn cached_plugins(
    tarball: &Path,
    tarball_sha256: &str,
    wanted: &[&str],
    cache_dir: &Path,
    limits: &ExtractLimits,
) -> Result<Vec<ExtractedFile>, ArtifactError> {
    let dir = cache_dir.join("extracted").join(tarball_sha256);
    if let Some(files) = reuse(&dir, wanted) {
        return Ok(files);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| ArtifactError::io("cannot remove the stale extraction", &dir, e))?;
    }
    let files = extract_plugins(tarball, wanted, &dir, limits)?;
    let mut index = ExtractedIndex { files: Vec::new() };
    for f in &files {
        let id = FileIdentity::of(&f.path)
            .map_err(|e| ArtifactError::io("cannot stat the extracted file", &f.path, e))?;
        index
            .files
            .push((f.name.clone(), f.sha256.clone(), f.size, f.mode, id));
    }
    if let Ok(text) = serde_json::to_vec(&index) {
        let _ = std::fs::write(dir.join(INDEX), text);
    }
    Ok(files)
}

/// The cached files when every wanted one is there with the identity recorded at extraction.
fn reuse(dir: &Path, wanted: &[&str]) -> Option<Vec<ExtractedFile>> {
    let index: ExtractedIndex =
        serde_json::from_slice(&std::fs::read(dir.join(INDEX)).ok()?).ok()?;
    let mut out = Vec::with_capacity(wanted.len());
    for name in wanted {
        let (_, sha256, size, mode, id) = index.files.iter().find(|f| f.0 == *name)?;
        let path = dir.join(name);
        if FileIdentity::of(&path).ok()? != *id {
            return None;
        }
        out.push(ExtractedFile {
            name: (*name).to_string(),
            path,
            sha256: sha256.clone(),
            size: *size,
            mode: *mode,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_rehashes_only_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bin");
        std::fs::write(&f, b"one").unwrap();
        let mut memo = DigestMemo::open(dir.path());
        let (a, n) = memo.sha256(&f).unwrap();
        assert_eq!(
            (a.as_str(), n),
            (super::super::sha256_bytes(b"one").as_str(), 3)
        );
        memo.save();
        // a new memo from disk knows it
        let mut memo = DigestMemo::open(dir.path());
        assert!(!memo.entries.is_empty());
        assert_eq!(memo.sha256(&f).unwrap().0, a);
        // rewritten (same size, new mtime / inode) → hashed again
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(dir.path().join("tmp"), b"two").unwrap();
        std::fs::rename(dir.path().join("tmp"), &f).unwrap();
        assert_eq!(
            memo.sha256(&f).unwrap().0,
            super::super::sha256_bytes(b"two")
        );
    }

    #[test]
    fn corrupt_memo_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("digests.json"), b"{oops").unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, b"x").unwrap();
        let mut memo = DigestMemo::open(dir.path());
        assert_eq!(memo.sha256(&f).unwrap().0, super::super::sha256_bytes(b"x"));
    }
}
