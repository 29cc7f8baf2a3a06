//! Artifacts: download, verify, cache and safely extract release files such as the CNI plugins
//! tarball.
//!
//! * An [`ArtifactSpec`] names a file, the URLs it can come from (tried in order: upstream
//!   first, then operator mirrors; `file://` URLs and plain paths work too) and optionally its
//!   pinned sha256.
//! * [`fetch`] returns a verified copy in the cache directory (default `bin/` under the project
//!   root). Every download is checked against a sha256: the pinned one, else the `.sha256` side
//!   file published next to the URL on the same mirror; without either it is refused unless
//!   [`FetchOptions::insecure_skip_checksum`] is set. A verified cached copy is reused without
//!   any network access. Only fully verified files ever appear in the cache.
//! * [`extract_plugins`] extracts chosen plugins from a tarball, refusing unsafe entries;
//!   [`cached_plugins`] keeps them extracted in the cache, and [`DigestMemo`] remembers local
//!   files' digests, so a re-run does not repeat that work.
//! * [`write_bundle`] / [`open_bundle`] move artifacts to machines without internet access;
//!   [`FetchOptions::offline_bundle`] makes [`fetch`] take them from a bundle.
//!
//! The blocking HTTP client used here must not be called from inside an async runtime; call
//! [`fetch`] from plain threads (or `spawn_blocking`).

mod bundle;
mod cache;
mod digest;
mod download;
mod error;
mod extract;
mod memo;
mod progress;

pub use bundle::{
    BUNDLE_FORMAT, BUNDLE_VERSION, Bundle, BundleEntry, BundleManifest, open_bundle, write_bundle,
};
pub use digest::{normalize_sha256, sha256_bytes, sha256_file};
pub use error::{ArtifactError, FailureKind, MirrorFailure};
pub use extract::{DEFAULT_PLUGINS, ExtractLimits, ExtractedFile, extract_plugins};
pub use memo::{DigestMemo, FileIdentity, cached_plugins};
pub use progress::{BarSink, LineSink, ProgressEvent, ProgressMode, ProgressSink, SilentSink};

use cache::Cache;
use digest::parse_sidecar;
use download::{Downloader, Location, StreamError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Default stall timeout: longest wait for the next bytes of a response.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Installs ring as the process-wide rustls crypto provider. reqwest is built without a
/// provider of its own and panics when building a client without one; call this (it is cheap
/// and idempotent) before creating any TLS client. [`fetch`] calls it itself.
pub fn ensure_crypto_provider() {
    // An error only means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The cache directory used when none is configured: `bin/` under the project root.
pub fn default_cache_dir(project_root: &Path) -> PathBuf {
    project_root.join("bin")
}

/// What to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactSpec {
    /// File name in the cache (and in bundles), e.g. `cni-plugins-amd64-v0.6.0.tgz`.
    pub name: String,
    /// Sources in the order to try them: `http(s)://`, `file://` or a plain path.
    pub urls: Vec<String>,
    /// Pinned sha256 (64 hex digits, optional `sha256:` prefix), when known.
    pub sha256: Option<String>,
}

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Where verified artifacts are kept.
    pub cache_dir: PathBuf,
    /// Accept downloads for which no sha256 is known (unsafe; such files are not recorded as
    /// verified, so they are fetched again next time unless a digest is pinned).
    pub insecure_skip_checksum: bool,
    /// Take artifacts from this bundle instead of the network.
    pub offline_bundle: Option<PathBuf>,
    /// How progress is shown.
    pub progress: ProgressMode,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Limit for waiting on response headers and between two reads of the body; there is no
    /// total limit, so slow but progressing downloads complete.
    pub stall_timeout: Duration,
}

impl FetchOptions {
    /// Defaults: verified downloads only, no bundle, automatic progress, default timeouts.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            insecure_skip_checksum: false,
            offline_bundle: None,
            progress: ProgressMode::Auto,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }
}

/// Where a fetched artifact came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Already in the cache, verified; no network used.
    Cache,
    /// Downloaded (or copied) from this URL or path.
    Url(String),
    /// Copied from this offline bundle.
    Bundle(PathBuf),
}

/// A verified artifact in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Artifact name.
    pub name: String,
    /// The cached file.
    pub path: PathBuf,
    /// Its sha256 (lower-case hex).
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Where it came from this time.
    pub source: Source,
}

/// Returns a verified copy of `spec` in `opts.cache_dir`, downloading it if needed.
///
/// Order: a cached copy that matches the pinned digest (or, with none pinned, the digest
/// recorded when it was stored) is returned at once; else, with an offline bundle, the
/// bundle's copy; else each URL in turn. A URL's failure (connect error, HTTP status, stall,
/// truncated body, no checksum, checksum mismatch) is reported to the progress sink and the
/// next URL is tried; when all fail, the error lists each URL and why. Local problems (the
/// cache directory cannot be written) stop at once.
pub fn fetch(spec: &ArtifactSpec, opts: &FetchOptions) -> Result<Fetched, ArtifactError> {
    cache::validate_name(&spec.name)?;
    let pinned = spec
        .sha256
        .as_deref()
        .map(|value| {
            normalize_sha256(value).ok_or_else(|| ArtifactError::InvalidPinnedDigest {
                name: spec.name.clone(),
                value: value.to_string(),
            })
        })
        .transpose()?;
    let cache = Cache::new(&opts.cache_dir);
    let sink = opts.progress.sink();

    if let Some(hit) = cache.lookup(&spec.name, pinned.as_deref()) {
        sink.event(&ProgressEvent::CacheHit {
            name: spec.name.clone(),
            path: hit.path.clone(),
            sha256: hit.sha256.clone(),
        });
        return Ok(Fetched {
            name: spec.name.clone(),
            path: hit.path,
            sha256: hit.sha256,
            size: hit.size,
            source: Source::Cache,
        });
    }

    if let Some(bundle_path) = &opts.offline_bundle {
        return fetch_from_bundle(spec, pinned.as_deref(), bundle_path, &cache, &*sink);
    }

    if spec.urls.is_empty() {
        return Err(ArtifactError::NoUrls {
            name: spec.name.clone(),
            cache_dir: opts.cache_dir.clone(),
        });
    }

    let mut downloader = Downloader::new(opts.connect_timeout, opts.stall_timeout);
    let mut failures = Vec::new();
    for url in &spec.urls {
        match try_source(
            spec,
            pinned.as_deref(),
            url,
            opts,
            &cache,
            &mut downloader,
            &sink,
        ) {
            Ok(fetched) => return Ok(fetched),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Failed(failure)) => {
                sink.event(&ProgressEvent::MirrorFailed {
                    name: spec.name.clone(),
                    url: failure.url.clone(),
                    reason: failure.detail.clone(),
                });
                failures.push(failure);
            }
        }
    }
    Err(ArtifactError::AllMirrorsFailed {
        name: spec.name.clone(),
        failures,
        pinned: pinned.is_some(),
    })
}

/// Result of one source that did not deliver.
enum Attempt {
    /// The source failed; try the next one.
    Failed(MirrorFailure),
    /// A local error; stop.
    Fatal(ArtifactError),
}

fn try_source(
    spec: &ArtifactSpec,
    pinned: Option<&str>,
    url: &str,
    opts: &FetchOptions,
    cache: &Cache,
    downloader: &mut Downloader,
    sink: &Arc<dyn ProgressSink>,
) -> Result<Fetched, Attempt> {
    let fail = |kind: FailureKind, detail: String| {
        Attempt::Failed(MirrorFailure {
            url: url.to_string(),
            kind,
            detail,
        })
    };
    let location = Location::parse(url).map_err(|(kind, detail)| fail(kind, detail))?;

    // The expected digest, decided before any large transfer.
    let expected = match pinned {
        Some(p) => Some(p.to_string()),
        None => {
            let side = location.sidecar();
            let mut names = vec![spec.name.as_str()];
            let upstream = location.file_name();
            if let Some(u) = upstream.as_deref() {
                names.push(u);
            }
            let found = downloader.fetch_text(&side).and_then(|text| {
                parse_sidecar(&text, &names).map_err(|e| (FailureKind::NoChecksum, e))
            });
            match found {
                Ok(digest) => Some(digest),
                Err(_) if opts.insecure_skip_checksum => None,
                Err((_, why)) => {
                    return Err(fail(
                        FailureKind::NoChecksum,
                        format!(
                            "no pinned sha256 and no usable checksum file at {}: {why}",
                            side.display()
                        ),
                    ));
                }
            }
        }
    };

    let tmp = cache.begin(&spec.name).map_err(Attempt::Fatal)?;
    let mut writer = digest::HashingWriter::new(tmp);
    let started = Instant::now();
    let name = spec.name.clone();
    let display = location.display();
    let result = downloader.stream(
        &location,
        &mut writer,
        &mut |total| {
            sink.event(&ProgressEvent::Started {
                name: name.clone(),
                url: display.clone(),
                total,
            })
        },
        &mut |done, total| {
            sink.event(&ProgressEvent::Advanced {
                name: name.clone(),
                done,
                total,
            })
        },
    );
    match result {
        Ok(_) => {}
        Err(StreamError::Source(kind, detail)) => return Err(fail(kind, detail)),
        Err(StreamError::Sink(e)) => {
            return Err(Attempt::Fatal(ArtifactError::io(
                "cannot write download into cache",
                cache.path(&spec.name),
                e,
            )));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let (actual, size, tmp) = writer.finish();
    if let Some(expected) = &expected
        && *expected != actual
    {
        let basis = if pinned.is_some() {
            "pinned"
        } else {
            "published (.sha256)"
        };
        return Err(fail(
            FailureKind::ChecksumMismatch,
            format!("sha256 mismatch: got {actual}, {basis} {expected} ({size} bytes)"),
        ));
    }
    let path = if expected.is_some() {
        cache.commit(&spec.name, tmp, &actual)
    } else {
        cache.commit_unverified(&spec.name, tmp)
    }
    .map_err(Attempt::Fatal)?;
    sink.event(&ProgressEvent::Finished {
        name: spec.name.clone(),
        url: display,
        bytes: size,
        seconds,
        sha256: actual.clone(),
        verified: expected.is_some(),
    });
    Ok(Fetched {
        name: spec.name.clone(),
        path,
        sha256: actual,
        size,
        source: Source::Url(url.to_string()),
    })
}

fn fetch_from_bundle(
    spec: &ArtifactSpec,
    pinned: Option<&str>,
    bundle_path: &Path,
    cache: &Cache,
    sink: &dyn ProgressSink,
) -> Result<Fetched, ArtifactError> {
    let bundle = open_bundle(bundle_path)?;
    let entry = bundle
        .entry(&spec.name)
        .ok_or_else(|| ArtifactError::BundleMissing {
            path: bundle_path.to_path_buf(),
            name: spec.name.clone(),
            available: bundle.names(),
        })?
        .clone();
    if let Some(pinned) = pinned
        && pinned != entry.sha256
    {
        return Err(ArtifactError::BundlePinMismatch {
            path: bundle_path.to_path_buf(),
            name: spec.name.clone(),
            bundled: entry.sha256,
            pinned: pinned.to_string(),
        });
    }
    let started = Instant::now();
    let mut tmp = cache.begin(&spec.name)?;
    let (sha, size) = bundle.copy_artifact(&spec.name, &mut tmp)?;
    if sha != entry.sha256 || size != entry.size {
        return Err(ArtifactError::BundleInvalid {
            path: bundle_path.to_path_buf(),
            reason: format!(
                "{} changed while it was read (sha256 {sha}, manifest {})",
                spec.name, entry.sha256
            ),
        });
    }
    let path = cache.commit(&spec.name, tmp, &sha)?;
    sink.event(&ProgressEvent::Finished {
        name: spec.name.clone(),
        url: bundle_path.display().to_string(),
        bytes: size,
        seconds: started.elapsed().as_secs_f64(),
        sha256: sha.clone(),
        verified: true,
    });
    Ok(Fetched {
        name: spec.name.clone(),
        path,
        sha256: sha,
        size,
        source: Source::Bundle(bundle_path.to_path_buf()),
    })
}
