//! Safe extraction of selected plugins from a `.tgz` (flate2 + tar).
//!
//! Every entry of the archive is checked before anything becomes visible: absolute paths,
//! `..` components, links (symbolic or hard), device/fifo/sparse entries and entries larger
//! than the limit make the whole extraction fail. Only regular files whose path is one wanted
//! name (at the root or under `./`) are written, into a temporary directory next to the
//! destination that is renamed into place at the end; on any error it is removed, so nothing
//! is left behind.

use super::cache::sync_dir;
use super::digest::HashingWriter;
use super::error::ArtifactError;
use flate2::read::MultiGzDecoder;
use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use tar::EntryType;

/// The CNI plugins kubeasz's flannel setup installs from the upstream tarball.
pub const DEFAULT_PLUGINS: &[&str] = &["bridge", "host-local", "loopback", "portmap"];

/// Limits for extraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Largest size, in bytes, of any single entry in the archive.
    pub max_entry_size: u64,
}

impl Default for ExtractLimits {
    /// 128 MiB per entry (CNI plugins are a few MiB each).
    fn default() -> Self {
        Self {
            max_entry_size: 128 * 1024 * 1024,
        }
    }
}

/// One file written by [`extract_plugins`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedFile {
    /// Plugin name (the file name).
    pub name: String,
    /// Path under the destination.
    pub path: PathBuf,
    /// sha256 of the content written.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits set on the file: 0o755 when the archive marks it executable, else 0o644.
    pub mode: u32,
}

/// Extracts the `wanted` plugins from `tarball` into `dest`, which must not exist or be an
/// empty directory. Returns the files in the order of `wanted`.
///
/// Fails, leaving `dest` as it was, when the archive holds an unsafe entry (see the module
/// doc), when a wanted plugin appears twice, or when any wanted plugin is missing (the error
/// lists what the tarball does contain).
pub fn extract_plugins(
    tarball: &Path,
    wanted: &[&str],
    dest: &Path,
    limits: &ExtractLimits,
) -> Result<Vec<ExtractedFile>, ArtifactError> {
    for name in wanted {
        if name.is_empty() || name.contains('/') || *name == "." || *name == ".." {
            return Err(ArtifactError::InvalidWanted {
                name: (*name).to_string(),
            });
        }
    }
    check_destination(dest)?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut created = CreatedDirs::create(&parent)?;
    let staging = tempfile::Builder::new()
        .prefix(".extract.")
        .tempdir_in(&parent)
        .map_err(|e| ArtifactError::io("cannot create a temporary directory in", &parent, e))?;

    let mut found = extract_into(tarball, wanted, staging.path(), limits)?;

    // Publish: rename the staging directory onto dest (an empty dest directory is replaced).
    fs::set_permissions(
        staging.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(|e| ArtifactError::io("cannot set permissions on", staging.path(), e))?;
    let staged = staging.keep();
    if let Err(e) = fs::rename(&staged, dest) {
        let _ = fs::remove_dir_all(&staged);
        return Err(ArtifactError::io("cannot move extracted files to", dest, e));
    }
    sync_dir(&parent);
    created.keep();
    let mut out = Vec::with_capacity(wanted.len());
    for name in wanted {
        if let Some(mut file) = found.remove(*name) {
            file.path = dest.join(name);
            out.push(file);
        }
    }
    Ok(out)
}

/// Parent directories created for the destination; removed again (if still empty) on drop
/// unless kept, so a failed extraction leaves no trace.
struct CreatedDirs(Vec<PathBuf>);

impl CreatedDirs {
    fn create(dir: &Path) -> Result<Self, ArtifactError> {
        let mut missing = Vec::new();
        let mut cur = Some(dir);
        while let Some(d) = cur {
            if d.as_os_str().is_empty() || d.exists() {
                break;
            }
            missing.push(d.to_path_buf());
            cur = d.parent();
        }
        fs::create_dir_all(dir)
            .map_err(|e| ArtifactError::io("cannot create directory", dir, e))?;
        // Deepest first, the order in which to remove them.
        Ok(Self(missing))
    }

    fn keep(&mut self) {
        self.0.clear();
    }
}

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        for d in &self.0 {
            // Fails harmlessly when not empty (someone else put something there).
            let _ = fs::remove_dir(d);
        }
    }
}

fn check_destination(dest: &Path) -> Result<(), ArtifactError> {
    match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ArtifactError::io("cannot inspect", dest, e)),
        Ok(meta) if meta.is_dir() => {
            let mut entries =
                fs::read_dir(dest).map_err(|e| ArtifactError::io("cannot read", dest, e))?;
            if entries.next().is_none() {
                Ok(())
            } else {
                Err(ArtifactError::DestinationNotEmpty {
                    path: dest.to_path_buf(),
                })
            }
        }
        Ok(_) => Err(ArtifactError::DestinationNotEmpty {
            path: dest.to_path_buf(),
        }),
    }
}

/// Walks the archive, validating every entry and writing wanted ones into `staging`.
fn extract_into(
    tarball: &Path,
    wanted: &[&str],
    staging: &Path,
    limits: &ExtractLimits,
) -> Result<std::collections::HashMap<String, ExtractedFile>, ArtifactError> {
    let file = super::cache::open(tarball)?;
    let mut archive = tar::Archive::new(MultiGzDecoder::new(io::BufReader::new(file)));
    let bad = |detail: io::Error| ArtifactError::BadArchive {
        tarball: tarball.to_path_buf(),
        detail: detail.to_string(),
    };
    let unsafe_entry = |entry: &str, reason: String| ArtifactError::UnsafeEntry {
        tarball: tarball.to_path_buf(),
        entry: entry.to_string(),
        reason,
    };

    let mut found = std::collections::HashMap::new();
    let mut contains = BTreeSet::new();
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = entry.path().map_err(bad)?.into_owned();
        let rel = safe_relative(&path).map_err(|why| unsafe_entry(&raw, why))?;
        let kind = entry.header().entry_type();
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::Directory => {}
            EntryType::XGlobalHeader | EntryType::XHeader => continue,
            EntryType::Symlink | EntryType::Link => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|t| t.display().to_string())
                    .unwrap_or_default();
                let what = if kind == EntryType::Symlink {
                    "symbolic"
                } else {
                    "hard"
                };
                return Err(unsafe_entry(
                    &raw,
                    format!("is a {what} link (to {target:?}); links are not extracted"),
                ));
            }
            other => {
                return Err(unsafe_entry(
                    &raw,
                    format!("has type {other:?}; only regular files are extracted"),
                ));
            }
        }
        let size = entry.size();
        if size > limits.max_entry_size {
            return Err(unsafe_entry(
                &raw,
                format!(
                    "is {size} bytes, over the limit of {} bytes",
                    limits.max_entry_size
                ),
            ));
        }
        if kind == EntryType::Directory {
            continue;
        }
        let Some(rel) = rel else {
            continue;
        };
        let rel_text = rel.to_string_lossy().into_owned();
        contains.insert(rel_text.clone());
        let Some(name) = wanted.iter().find(|w| **w == rel_text) else {
            continue;
        };
        if found.contains_key(*name) {
            return Err(unsafe_entry(
                &raw,
                "appears twice in the archive; refusing to guess which one to use".to_string(),
            ));
        }
        let header_mode = entry.header().mode().unwrap_or(0o644);
        let mode = if header_mode & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        let out_path = staging.join(name);
        let out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&out_path)
            .map_err(|e| ArtifactError::io("cannot create", &out_path, e))?;
        let mut writer = HashingWriter::new(out);
        // Read at most the limit plus one byte, in case the header under-reports.
        let copied = io::copy(
            &mut (&mut entry).take(limits.max_entry_size + 1),
            &mut writer,
        )
        .map_err(bad)?;
        if copied > limits.max_entry_size {
            return Err(unsafe_entry(
                &raw,
                format!("is over the limit of {} bytes", limits.max_entry_size),
            ));
        }
        let (sha256, size, mut out) = writer.finish();
        out.flush()
            .and_then(|()| out.sync_all())
            .map_err(|e| ArtifactError::io("cannot write", &out_path, e))?;
        // The umask may have cleared bits; set exactly what we report.
        fs::set_permissions(
            &out_path,
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .map_err(|e| ArtifactError::io("cannot set permissions on", &out_path, e))?;
        found.insert(
            (*name).to_string(),
            ExtractedFile {
                name: (*name).to_string(),
                path: out_path,
                sha256,
                size,
                mode,
            },
        );
    }

    let missing: Vec<String> = wanted
        .iter()
        .filter(|w| !found.contains_key(**w))
        .map(|w| (*w).to_string())
        .collect();
    if !missing.is_empty() {
        return Err(ArtifactError::MissingPlugins {
            tarball: tarball.to_path_buf(),
            missing,
            contains: contains.into_iter().collect(),
        });
    }
    Ok(found)
}

/// Checks an entry path: relative, no `..`. Returns the path without `.` components, or
/// `None` for the archive root itself (`.` or `./`).
fn safe_relative(path: &Path) -> Result<Option<PathBuf>, String> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(
                    "contains a `..` component (would write outside the destination)".to_string(),
                );
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("is an absolute path".to_string());
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            safe_relative(Path::new("./bridge")),
            Ok(Some(PathBuf::from("bridge")))
        );
        assert_eq!(safe_relative(Path::new("./")), Ok(None));
        assert_eq!(
            safe_relative(Path::new("a/./b")),
            Ok(Some(PathBuf::from("a/b")))
        );
        assert!(safe_relative(Path::new("../evil")).is_err());
        assert!(safe_relative(Path::new("a/../../evil")).is_err());
        assert!(safe_relative(Path::new("/etc/passwd")).is_err());
    }
}
