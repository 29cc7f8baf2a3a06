//! The artifact cache: one directory (default `bin/` under the project root) holding
//! `<name>` plus `<name>.sha256` (the verified digest, `sha256sum` format) for each artifact.
//!
//! Files enter only through [`Cache::commit`]: written to a temporary file in the same
//! directory, verified by the caller, fsynced, then renamed over the old copy. A failed or
//! unverified download never replaces what is there.

use super::digest::{normalize_sha256, parse_sidecar};
use super::error::ArtifactError;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// A verified file found in the cache.
#[derive(Debug, Clone)]
pub(crate) struct CacheEntry {
    pub(crate) path: PathBuf,
    pub(crate) sha256: String,
    pub(crate) size: u64,
}

/// The cache directory.
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    dir: PathBuf,
}

/// Checks that an artifact name is a plain, visible file name.
pub(crate) fn validate_name(name: &str) -> Result<(), ArtifactError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.contains('/') || name.contains('\\') {
        Some("it contains a path separator")
    } else if name.starts_with('.') {
        Some("it starts with a dot")
    } else if name.contains('\0') || name.chars().any(char::is_control) {
        Some("it contains control characters")
    } else if name.ends_with(".sha256") {
        Some("names ending in .sha256 are reserved for digest files")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ArtifactError::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

impl Cache {
    /// A cache rooted at `dir` (created on first write).
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// Where artifact `name` lives.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn sidecar_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.sha256"))
    }

    /// A cached copy whose digest is verified right now against `pinned`, or when nothing is
    /// pinned against the digest recorded when it was stored. Anything unreadable or not
    /// matching is a miss (it will be replaced by a verified download).
    pub(crate) fn lookup(&self, name: &str, pinned: Option<&str>) -> Option<CacheEntry> {
        let path = self.path(name);
        let meta = fs::metadata(&path).ok()?;
        if !meta.is_file() {
            return None;
        }
        let expected = match pinned {
            Some(p) => p.to_string(),
            None => {
                let text = fs::read_to_string(self.sidecar_path(name)).ok()?;
                parse_sidecar(&text, &[name]).ok()?
            }
        };
        // Hashed again only when the file changed since it was last verified (DigestMemo).
        let mut memo = super::memo::DigestMemo::open(&self.dir);
        let actual = memo.sha256(&path).ok()?.0;
        memo.save();
        (actual == expected).then_some(CacheEntry {
            path,
            sha256: actual,
            size: meta.len(),
        })
    }

    /// A new temporary file in the cache directory, removed when dropped unless committed.
    pub(crate) fn begin(&self, name: &str) -> Result<NamedTempFile, ArtifactError> {
        fs::create_dir_all(&self.dir)
            .map_err(|e| ArtifactError::io("cannot create cache directory", &self.dir, e))?;
        tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".part")
            .tempfile_in(&self.dir)
            .map_err(|e| ArtifactError::io("cannot create a temporary file in", &self.dir, e))
    }

    /// Moves a verified temporary file into place as `name`, then records its digest.
    /// The caller has checked `sha256`; this fsyncs the data, renames, and fsyncs the directory.
    pub(crate) fn commit(
        &self,
        name: &str,
        tmp: NamedTempFile,
        sha256: &str,
    ) -> Result<PathBuf, ArtifactError> {
        let final_path = self.path(name);
        let sha256 = normalize_sha256(sha256).unwrap_or_else(|| sha256.to_string());
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| ArtifactError::io("cannot write", tmp.path(), e))?;
        tmp.persist(&final_path)
            .map_err(|e| ArtifactError::io("cannot move download into", &final_path, e.error))?;
        self.write_sidecar(name, &sha256)?;
        sync_dir(&self.dir);
        Ok(final_path)
    }

    /// Moves a download that could not be verified (checksums skipped on request) into place.
    /// No digest is recorded, so without a pinned digest it is not reused as a cache hit.
    pub(crate) fn commit_unverified(
        &self,
        name: &str,
        tmp: NamedTempFile,
    ) -> Result<PathBuf, ArtifactError> {
        let final_path = self.path(name);
        let sidecar = self.sidecar_path(name);
        match fs::remove_file(&sidecar) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ArtifactError::io("cannot remove", &sidecar, e)),
        }
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| ArtifactError::io("cannot write", tmp.path(), e))?;
        tmp.persist(&final_path)
            .map_err(|e| ArtifactError::io("cannot move download into", &final_path, e.error))?;
        sync_dir(&self.dir);
        Ok(final_path)
    }

    fn write_sidecar(&self, name: &str, sha256: &str) -> Result<(), ArtifactError> {
        let path = self.sidecar_path(name);
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}.sha256."))
            .tempfile_in(&self.dir)
            .map_err(|e| ArtifactError::io("cannot create a temporary file in", &self.dir, e))?;
        writeln!(tmp, "{sha256}  {name}")
            .and_then(|()| {
                tmp.as_file()
                    .set_permissions(fs::Permissions::from_mode(0o644))
            })
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| ArtifactError::io("cannot write", tmp.path(), e))?;
        tmp.persist(&path)
            .map_err(|e| ArtifactError::io("cannot write", &path, e.error))?;
        Ok(())
    }
}

/// Best-effort fsync of a directory so a rename survives a crash.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = OpenOptions::new().read(true).open(dir) {
        let _ = d.sync_all();
    }
}

/// Opens a file for reading with a path-naming error.
pub(crate) fn open(path: &Path) -> Result<File, ArtifactError> {
    File::open(path).map_err(|e| ArtifactError::io("cannot open", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("cni-plugins-amd64-v0.6.0.tgz").is_ok());
        for bad in ["", "a/b", "..", ".hidden", "x.sha256", "a\nb"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn commit_then_lookup_with_and_without_pin() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(&dir.path().join("bin"));
        let mut tmp = cache.begin("a.tgz").unwrap();
        tmp.write_all(b"hello").unwrap();
        let sha = super::super::sha256_bytes(b"hello");
        let path = cache.commit("a.tgz", tmp, &sha).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        assert_eq!(cache.lookup("a.tgz", None).unwrap().sha256, sha);
        assert!(cache.lookup("a.tgz", Some(&sha)).is_some());
        assert!(cache.lookup("a.tgz", Some(&"0".repeat(64))).is_none());
        // Only the artifact, its digest file and the digest memo remain: no temporary files.
        let mut names: Vec<_> = fs::read_dir(dir.path().join("bin"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a.tgz", "a.tgz.sha256", "digests.json"]);
        // A modified file no longer counts as cached.
        fs::write(&path, b"tampered").unwrap();
        assert!(cache.lookup("a.tgz", None).is_none());
    }
}
