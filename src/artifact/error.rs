//! Errors of the artifact module. Each message names the artifact, file or URL involved and
//! says what the user can do next.

use std::fmt;
use std::path::PathBuf;

/// Why one mirror could not supply an artifact; recorded and shown when every mirror failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorFailure {
    /// The URL or path that was tried.
    pub url: String,
    /// The class of failure (drives the advice in the final error).
    pub kind: FailureKind,
    /// What happened, in words (HTTP status, OS error, digests, byte counts).
    pub detail: String,
}

/// Classes of per-mirror failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The URL could not be understood (unknown scheme, malformed).
    BadUrl,
    /// Could not connect (refused, DNS, TLS, connect timeout).
    Connect,
    /// The server answered with a non-success status.
    HttpStatus,
    /// No data arrived for longer than the stall timeout.
    Stalled,
    /// The body ended before the promised Content-Length, or the read failed midway.
    Truncated,
    /// A local file source could not be read.
    Read,
    /// No checksum could be had for the download (no pinned digest, no usable side file).
    NoChecksum,
    /// The downloaded bytes do not match the expected digest.
    ChecksumMismatch,
}

impl fmt::Display for MirrorFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.url, self.detail)
    }
}

/// Formats the list of failed mirrors plus advice matching what went wrong.
fn mirrors_report(
    name: &str,
    failures: &[MirrorFailure],
    pinned: bool,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    let tried = match failures.len() {
        1 => "the only source".to_string(),
        n => format!("all {n} sources"),
    };
    writeln!(f, "could not fetch {name}: {tried} failed:")?;
    for failure in failures {
        writeln!(f, "  - {failure}")?;
    }
    write!(
        f,
        "what to do: add a reachable mirror for {name} (mirrors are tried in order), or copy an \
         offline bundle made with network access and pass --offline-bundle"
    )?;
    if failures
        .iter()
        .any(|x| x.kind == FailureKind::ChecksumMismatch)
    {
        if pinned {
            write!(
                f,
                "; a checksum mismatch means the file differs from the pinned sha256: check that \
                 the pinned digest belongs to this exact file name and version"
            )?;
        } else {
            write!(
                f,
                "; a checksum mismatch means the file differs from its published .sha256: the \
                 mirror may be stale or tampered with"
            )?;
        }
    }
    if failures.iter().any(|x| x.kind == FailureKind::NoChecksum) {
        write!(
            f,
            "; no sha256 was known for {name}: pin its sha256 in the variables, publish \
             <url>.sha256 next to the file on the mirror, or (unsafe) allow unverified \
             downloads with --insecure-skip-checksum"
        )?;
    }
    if failures.iter().any(|x| x.kind == FailureKind::Stalled) {
        write!(f, "; for slow mirrors raise the stall timeout")?;
    }
    Ok(())
}

/// Everything that can go wrong while fetching, caching, bundling or extracting artifacts.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The artifact name cannot be used as a file name in the cache.
    #[error(
        "artifact name {name:?} is not a plain file name ({reason}); use the release file name, \
         e.g. cni-plugins-amd64-v0.6.0.tgz"
    )]
    InvalidName {
        /// The offending name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A pinned digest is not 64 hex digits.
    #[error(
        "the pinned sha256 for {name} is not a sha256 digest: {value:?}; it must be 64 hex \
         digits (as printed by `sha256sum`)"
    )]
    InvalidPinnedDigest {
        /// Artifact name.
        name: String,
        /// The value given.
        value: String,
    },

    /// The artifact is not cached and no URL was given.
    #[error(
        "{name} is not in the cache {cache_dir} and no download URL is configured for it; add a \
         URL or pass --offline-bundle"
    )]
    NoUrls {
        /// Artifact name.
        name: String,
        /// Where the cache was looked up.
        cache_dir: PathBuf,
    },

    /// Every mirror failed; lists each and why.
    #[error("{}", DisplayMirrors(name, failures, *pinned))]
    AllMirrorsFailed {
        /// Artifact name.
        name: String,
        /// One entry per mirror tried, in order.
        failures: Vec<MirrorFailure>,
        /// Whether a pinned digest was in force.
        pinned: bool,
    },

    /// A local filesystem operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "cannot create cache directory".
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    HttpClient(String),

    /// The offline bundle is malformed or does not match its manifest.
    #[error(
        "offline bundle {} is not usable: {reason}; re-create it with the bundle command on a \
         machine with network access and copy it again",
        path.display()
    )]
    BundleInvalid {
        /// The bundle file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The offline bundle does not contain a requested artifact.
    #[error(
        "offline bundle {} has no {name} (it holds: {}); make a new bundle that includes it",
        path.display(),
        if available.is_empty() { "nothing".to_string() } else { available.join(", ") }
    )]
    BundleMissing {
        /// The bundle file.
        path: PathBuf,
        /// The artifact asked for.
        name: String,
        /// The artifacts the bundle has.
        available: Vec<String>,
    },

    /// The bundle's copy of an artifact differs from the digest pinned for it.
    #[error(
        "offline bundle {} holds {name} with sha256 {bundled}, but the pinned sha256 is \
         {pinned}; the bundle was made for another version: re-create it, or check the pinned \
         digest",
        path.display()
    )]
    BundlePinMismatch {
        /// The bundle file.
        path: PathBuf,
        /// Artifact name.
        name: String,
        /// Digest in the bundle manifest.
        bundled: String,
        /// Digest pinned in the spec.
        pinned: String,
    },

    /// An artifact given to `write_bundle` changed since it was fetched.
    #[error(
        "{} changed since it was fetched (expected sha256 {expected}, now {actual}); fetch it \
         again before bundling",
        path.display()
    )]
    ChangedOnDisk {
        /// The file.
        path: PathBuf,
        /// Digest recorded when fetched.
        expected: String,
        /// Digest now.
        actual: String,
    },

    /// A tarball entry would write outside the destination, or is of a refused type or size.
    #[error(
        "refusing to extract {}: entry {entry:?} {reason}; nothing was extracted. The tarball \
         may be corrupt or malicious: fetch it from another mirror",
        tarball.display()
    )]
    UnsafeEntry {
        /// The tarball.
        tarball: PathBuf,
        /// The entry path as stored in the archive.
        entry: String,
        /// Why it was refused.
        reason: String,
    },

    /// Wanted plugins are absent from the tarball.
    #[error(
        "{} does not contain {}; it contains: {}. Check the file name/version of the tarball or \
         the list of wanted plugins",
        tarball.display(),
        missing.join(", "),
        if contains.is_empty() { "no files".to_string() } else { contains.join(", ") }
    )]
    MissingPlugins {
        /// The tarball.
        tarball: PathBuf,
        /// Wanted names not found.
        missing: Vec<String>,
        /// Regular files the tarball does hold.
        contains: Vec<String>,
    },

    /// The tarball is not a readable gzip'd tar.
    #[error(
        "{} is not a readable .tar.gz ({detail}); delete it from the cache and fetch it again",
        tarball.display()
    )]
    BadArchive {
        /// The tarball.
        tarball: PathBuf,
        /// The decoder's complaint.
        detail: String,
    },

    /// The extraction destination already has content.
    #[error(
        "extraction destination {} already exists and is not empty; extract into a new \
         directory",
        path.display()
    )]
    DestinationNotEmpty {
        /// The destination.
        path: PathBuf,
    },

    /// A wanted plugin name is not a plain file name.
    #[error("wanted plugin name {name:?} is not a plain file name")]
    InvalidWanted {
        /// The offending name.
        name: String,
    },
}

struct DisplayMirrors<'a>(&'a str, &'a [MirrorFailure], bool);

impl fmt::Display for DisplayMirrors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        mirrors_report(self.0, self.1, self.2, f)
    }
}

impl ArtifactError {
    /// Shorthand for [`ArtifactError::Io`].
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
