//! Offline bundles: one `.tar.gz` holding `manifest.json` followed by `artifacts/<name>` for
//! each artifact, so a cluster without internet access can be installed from files carried in.
//!
//! The manifest (JSON) lists name, sha256, size and source URL of each artifact.
//! [`open_bundle`] reads the whole bundle once and checks every file against the manifest;
//! [`Bundle::copy_artifact`] then streams one artifact out, checking its digest again.

use super::cache::{open, sync_dir};
use super::digest::{HashingWriter, normalize_sha256};
use super::error::ArtifactError;
use super::{Fetched, Source};
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// `format` value of a bundle manifest.
pub const BUNDLE_FORMAT: &str = "installer-artifact-bundle";
/// Manifest version written and understood.
pub const BUNDLE_VERSION: u32 = 1;
/// Path of the manifest inside the bundle.
const MANIFEST_PATH: &str = "manifest.json";
/// Folder of the artifacts inside the bundle.
const ARTIFACT_DIR: &str = "artifacts/";
/// Largest manifest accepted.
const MANIFEST_LIMIT: u64 = 1024 * 1024;

/// The bundle's table of contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleManifest {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// Always [`BUNDLE_VERSION`].
    pub version: u32,
    /// One entry per artifact, in the order written.
    pub artifacts: Vec<BundleEntry>,
}

/// One artifact in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEntry {
    /// File name (the cache name).
    pub name: String,
    /// Lower-case hex sha256.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The URL it was downloaded from, when known (`null` for copies taken from the cache).
    pub source_url: Option<String>,
}

/// An opened and fully verified bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle file.
    pub path: PathBuf,
    /// Its manifest.
    pub manifest: BundleManifest,
}

/// Writes `artifacts` (as returned by `fetch`) into a new bundle at `out_path`, atomically:
/// the bundle is built in a temporary file beside `out_path` and renamed over it only when
/// complete. Each file is hashed again while it is copied; one that changed since it was
/// fetched fails the whole bundle.
pub fn write_bundle(
    artifacts: &[Fetched],
    out_path: &Path,
) -> Result<BundleManifest, ArtifactError> {
    let mut seen = BTreeSet::new();
    for a in artifacts {
        super::cache::validate_name(&a.name)?;
        if !seen.insert(a.name.as_str()) {
            return Err(ArtifactError::BundleInvalid {
                path: out_path.to_path_buf(),
                reason: format!("{} is listed twice", a.name),
            });
        }
    }
    let manifest = BundleManifest {
        format: BUNDLE_FORMAT.to_string(),
        version: BUNDLE_VERSION,
        artifacts: artifacts
            .iter()
            .map(|a| BundleEntry {
                name: a.name.clone(),
                sha256: a.sha256.clone(),
                size: a.size,
                source_url: match &a.source {
                    Source::Url(u) => Some(u.clone()),
                    Source::Cache | Source::Bundle(_) => None,
                },
            })
            .collect(),
    };
    let manifest_json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| ArtifactError::BundleInvalid {
            path: out_path.to_path_buf(),
            reason: format!("cannot encode manifest: {e}"),
        })?;

    let dir = match out_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| ArtifactError::io("cannot create directory", &dir, e))?;
    let file_name = out_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle".to_string());
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".part")
        .tempfile_in(&dir)
        .map_err(|e| ArtifactError::io("cannot create a temporary file in", &dir, e))?;
    let write_err = |e: io::Error| ArtifactError::io("cannot write bundle", out_path, e);

    let mut builder = tar::Builder::new(GzEncoder::new(tmp.as_file(), Compression::default()));
    builder
        .append(
            &header(MANIFEST_PATH, manifest_json.len() as u64),
            &manifest_json[..],
        )
        .map_err(write_err)?;
    for a in artifacts {
        let file = open(&a.path)?;
        let mut hashing = HashingReader::new(BufReader::new(file));
        builder
            .append(
                &header(&format!("{ARTIFACT_DIR}{}", a.name), a.size),
                &mut hashing,
            )
            .map_err(|e| ArtifactError::io("cannot add to bundle", &a.path, e))?;
        let (sha, read) = hashing.finish();
        if sha != a.sha256 || read != a.size {
            return Err(ArtifactError::ChangedOnDisk {
                path: a.path.clone(),
                expected: a.sha256.clone(),
                actual: sha,
            });
        }
    }
    let gz = builder.into_inner().map_err(write_err)?;
    gz.finish().map_err(write_err)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(write_err)?;
    tmp.persist(out_path)
        .map_err(|e| ArtifactError::io("cannot create bundle", out_path, e.error))?;
    sync_dir(&dir);
    Ok(manifest)
}

fn header(path: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    // Names are validated plain file names, short enough for ustar in practice; a failure
    // here surfaces later as an append error naming the file.
    let _ = h.set_path(path);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    h
}

/// Opens `path` and verifies it completely: a valid manifest, exactly the files it lists,
/// each with the listed size and sha256. Only then can artifacts be taken from it.
pub fn open_bundle(path: &Path) -> Result<Bundle, ArtifactError> {
    let invalid = |reason: String| ArtifactError::BundleInvalid {
        path: path.to_path_buf(),
        reason,
    };
    let mut manifest: Option<BundleManifest> = None;
    let mut digests: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut archive = archive(path)?;
    for entry in archive
        .entries()
        .map_err(|e| invalid(format!("not a .tar.gz: {e}")))?
    {
        let mut entry = entry.map_err(|e| invalid(format!("unreadable: {e}")))?;
        let entry_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            other => {
                return Err(invalid(format!(
                    "entry {entry_path:?} has type {other:?}; bundles hold only regular files"
                )));
            }
        }
        if entry_path == MANIFEST_PATH {
            if manifest.is_some() {
                return Err(invalid("it has two manifests".to_string()));
            }
            let mut text = Vec::new();
            (&mut entry)
                .take(MANIFEST_LIMIT + 1)
                .read_to_end(&mut text)
                .map_err(|e| invalid(format!("cannot read manifest: {e}")))?;
            if text.len() as u64 > MANIFEST_LIMIT {
                return Err(invalid("manifest is larger than 1 MiB".to_string()));
            }
            let parsed: BundleManifest = serde_json::from_slice(&text)
                .map_err(|e| invalid(format!("manifest.json is not a bundle manifest: {e}")))?;
            manifest = Some(parsed);
        } else if let Some(name) = entry_path.strip_prefix(ARTIFACT_DIR) {
            super::cache::validate_name(name)
                .map_err(|e| invalid(format!("entry {entry_path:?}: {e}")))?;
            if digests.contains_key(name) {
                return Err(invalid(format!("{name} appears twice")));
            }
            let mut hashing = HashingWriter::new(io::sink());
            io::copy(&mut entry, &mut hashing)
                .map_err(|e| invalid(format!("cannot read {name}: {e}")))?;
            let (sha, size, _) = hashing.finish();
            digests.insert(name.to_string(), (sha, size));
        } else {
            return Err(invalid(format!("unexpected entry {entry_path:?}")));
        }
    }
    let manifest = manifest.ok_or_else(|| invalid("it has no manifest.json".to_string()))?;
    if manifest.format != BUNDLE_FORMAT || manifest.version != BUNDLE_VERSION {
        return Err(invalid(format!(
            "manifest format {:?} version {} is not {BUNDLE_FORMAT:?} version {BUNDLE_VERSION}",
            manifest.format, manifest.version
        )));
    }
    let mut listed = BTreeSet::new();
    for e in &manifest.artifacts {
        if !listed.insert(e.name.as_str()) {
            return Err(invalid(format!("manifest lists {} twice", e.name)));
        }
        let want = normalize_sha256(&e.sha256)
            .ok_or_else(|| invalid(format!("manifest sha256 of {} is malformed", e.name)))?;
        let Some((sha, size)) = digests.get(&e.name) else {
            return Err(invalid(format!(
                "manifest lists {} but the file is missing",
                e.name
            )));
        };
        if *sha != want || *size != e.size {
            return Err(invalid(format!(
                "{} does not match the manifest (manifest: sha256 {want}, {} bytes; file: \
                 sha256 {sha}, {size} bytes); the bundle was altered or damaged",
                e.name, e.size
            )));
        }
    }
    if let Some(extra) = digests.keys().find(|k| !listed.contains(k.as_str())) {
        return Err(invalid(format!("{extra} is not listed in the manifest")));
    }
    Ok(Bundle {
        path: path.to_path_buf(),
        manifest,
    })
}

fn archive(
    path: &Path,
) -> Result<tar::Archive<MultiGzDecoder<BufReader<fs::File>>>, ArtifactError> {
    Ok(tar::Archive::new(MultiGzDecoder::new(BufReader::new(
        open(path)?,
    ))))
}

impl Bundle {
    /// The manifest entry for `name`, if the bundle has it.
    pub fn entry(&self, name: &str) -> Option<&BundleEntry> {
        self.manifest.artifacts.iter().find(|e| e.name == name)
    }

    /// Names of all artifacts in the bundle.
    pub fn names(&self) -> Vec<String> {
        self.manifest
            .artifacts
            .iter()
            .map(|e| e.name.clone())
            .collect()
    }

    /// Streams artifact `name` into `out` and returns its sha256 and size. The caller must
    /// compare the digest with [`Bundle::entry`] before trusting what was written (the file
    /// could have changed since [`open_bundle`]).
    pub fn copy_artifact(
        &self,
        name: &str,
        out: &mut dyn Write,
    ) -> Result<(String, u64), ArtifactError> {
        let wanted = format!("{ARTIFACT_DIR}{name}");
        let invalid = |reason: String| ArtifactError::BundleInvalid {
            path: self.path.clone(),
            reason,
        };
        let mut archive = archive(&self.path)?;
        for entry in archive
            .entries()
            .map_err(|e| invalid(format!("not a .tar.gz: {e}")))?
        {
            let mut entry = entry.map_err(|e| invalid(format!("unreadable: {e}")))?;
            if entry.path_bytes().as_ref() != wanted.as_bytes() {
                continue;
            }
            let mut hashing = HashingWriter::new(out);
            io::copy(&mut entry, &mut hashing)
                .map_err(|e| invalid(format!("cannot read {name}: {e}")))?;
            let (sha, size, _) = hashing.finish();
            return Ok((sha, size));
        }
        Err(ArtifactError::BundleMissing {
            path: self.path.clone(),
            name: name.to_string(),
            available: self.names(),
        })
    }
}

/// A reader that hashes what passes through (for checking files while they are bundled).
struct HashingReader<R> {
    inner: R,
    hasher: HashingWriter<io::Sink>,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: HashingWriter::new(io::sink()),
        }
    }

    fn finish(self) -> (String, u64) {
        let (sha, n, _) = self.hasher.finish();
        (sha, n)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.write_all(&buf[..n])?;
        Ok(n)
    }
}
