//! Reading one source: an `http(s)://` URL (blocking reqwest with connect and stall timeouts),
//! a `file://` URL, or a plain filesystem path. Bodies are streamed into a caller's writer;
//! nothing here touches the cache.

use super::error::FailureKind;
use reqwest::Url;
use reqwest::blocking::Client;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

/// Largest `.sha256` side file accepted (they are one line).
const SIDECAR_LIMIT: u64 = 4096;

/// Read buffer: also the granularity of progress events.
const CHUNK: usize = 64 * 1024;

/// Where an artifact can be read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// `http://` or `https://`.
    Http(Url),
    /// A `file://` URL or a plain path.
    File(PathBuf),
}

/// A per-source failure: class and words.
pub(crate) type SourceError = (FailureKind, String);

/// Why streaming a body stopped.
#[derive(Debug)]
pub(crate) enum StreamError {
    /// The source failed: the next mirror may do better.
    Source(FailureKind, String),
    /// Writing locally failed (disk full, permissions): no mirror will help.
    Sink(io::Error),
}

impl Location {
    /// Parses a configured source. Anything without `scheme://` is a filesystem path.
    pub(crate) fn parse(text: &str) -> Result<Self, SourceError> {
        let bad = |why: String| (FailureKind::BadUrl, why);
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            Url::parse(text)
                .map(Location::Http)
                .map_err(|e| bad(format!("not a valid URL: {e}")))
        } else if lower.starts_with("file://") {
            let url = Url::parse(text).map_err(|e| bad(format!("not a valid file URL: {e}")))?;
            url.to_file_path().map(Location::File).map_err(|()| {
                bad(
                    "a file:// URL must name a local absolute path, e.g. file:///srv/mirror/x.tgz"
                        .to_string(),
                )
            })
        } else if text.contains("://") {
            Err(bad(
                "unsupported URL scheme: use http://, https://, file:// or a plain path"
                    .to_string(),
            ))
        } else if text.is_empty() {
            Err(bad("empty source".to_string()))
        } else {
            Ok(Location::File(PathBuf::from(text)))
        }
    }

    /// The location of the `.sha256` side file published next to this one.
    pub(crate) fn sidecar(&self) -> Location {
        match self {
            Location::Http(url) => {
                let mut url = url.clone();
                let path = format!("{}.sha256", url.path());
                url.set_path(&path);
                Location::Http(url)
            }
            Location::File(path) => {
                let mut os = path.clone().into_os_string();
                os.push(".sha256");
                Location::File(PathBuf::from(os))
            }
        }
    }

    /// The last path component (the upstream file name), if any.
    pub(crate) fn file_name(&self) -> Option<String> {
        match self {
            Location::Http(url) => url
                .path_segments()
                .and_then(|mut s| s.next_back())
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            Location::File(path) => path.file_name().map(|s| s.to_string_lossy().into_owned()),
        }
    }

    /// For messages.
    pub(crate) fn display(&self) -> String {
        match self {
            Location::Http(url) => url.to_string(),
            Location::File(path) => path.display().to_string(),
        }
    }
}

/// Opens sources; builds the HTTP client only when an HTTP source is first used.
pub(crate) struct Downloader {
    connect_timeout: Duration,
    stall_timeout: Duration,
    client: Option<Client>,
}

impl Downloader {
    /// `stall_timeout` bounds the wait for response headers and for each read of the body,
    /// never the whole transfer, so slow but progressing downloads finish.
    pub(crate) fn new(connect_timeout: Duration, stall_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            stall_timeout,
            client: None,
        }
    }

    fn client(&mut self) -> Result<&Client, SourceError> {
        if self.client.is_none() {
            super::ensure_crypto_provider();
            let client = Client::builder()
                .connect_timeout(self.connect_timeout)
                // In reqwest's blocking client this is the limit for receiving the headers and
                // for each single read of the body: a stall timeout, not a total one.
                .timeout(self.stall_timeout)
                .user_agent(concat!("installer/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| {
                    (
                        FailureKind::Connect,
                        format!("cannot build HTTP client: {}", chain(&e)),
                    )
                })?;
            self.client = Some(client);
        }
        // Just set above when it was None.
        self.client
            .as_ref()
            .ok_or_else(|| (FailureKind::Connect, "HTTP client unavailable".to_string()))
    }

    /// Opens a source for reading; returns the reader and the announced length.
    fn open(&mut self, loc: &Location) -> Result<(Box<dyn Read>, Option<u64>), SourceError> {
        match loc {
            Location::Http(url) => {
                let response = self
                    .client()?
                    .get(url.clone())
                    .send()
                    .map_err(|e| classify_reqwest(&e))?;
                let status = response.status();
                if !status.is_success() {
                    return Err((FailureKind::HttpStatus, format!("HTTP {status}")));
                }
                let total = response.content_length();
                Ok((Box::new(response), total))
            }
            Location::File(path) => {
                let file = File::open(path)
                    .map_err(|e| (FailureKind::Read, format!("cannot open: {e}")))?;
                let meta = file
                    .metadata()
                    .map_err(|e| (FailureKind::Read, format!("cannot stat: {e}")))?;
                if !meta.is_file() {
                    return Err((FailureKind::Read, "not a regular file".to_string()));
                }
                Ok((Box::new(file), Some(meta.len())))
            }
        }
    }

    /// Reads a small text resource (a `.sha256` side file).
    pub(crate) fn fetch_text(&mut self, loc: &Location) -> Result<String, SourceError> {
        let (reader, _) = self.open(loc)?;
        let mut buf = Vec::new();
        reader
            .take(SIDECAR_LIMIT + 1)
            .read_to_end(&mut buf)
            .map_err(|e| classify_read(&e, 0, None))?;
        if buf.len() as u64 > SIDECAR_LIMIT {
            return Err((
                FailureKind::NoChecksum,
                format!("checksum file is larger than {SIDECAR_LIMIT} bytes"),
            ));
        }
        String::from_utf8(buf).map_err(|_| {
            (
                FailureKind::NoChecksum,
                "checksum file is not text".to_string(),
            )
        })
    }

    /// Streams a source into `out`. `on_start` gets the announced size, `on_progress` the
    /// running byte count. Returns the number of bytes copied; a body shorter than its
    /// announced length is an error.
    pub(crate) fn stream(
        &mut self,
        loc: &Location,
        out: &mut dyn Write,
        on_start: &mut dyn FnMut(Option<u64>),
        on_progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<u64, StreamError> {
        let (mut reader, total) = self
            .open(loc)
            .map_err(|(kind, detail)| StreamError::Source(kind, detail))?;
        on_start(total);
        let mut buf = vec![0u8; CHUNK];
        let mut done: u64 = 0;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let (kind, detail) = classify_read(&e, done, total);
                    return Err(StreamError::Source(kind, detail));
                }
            };
            out.write_all(&buf[..n]).map_err(StreamError::Sink)?;
            done += n as u64;
            on_progress(done, total);
        }
        if let Some(total) = total
            && done != total
        {
            return Err(StreamError::Source(
                FailureKind::Truncated,
                format!("body ended after {done} of {total} bytes (truncated download)"),
            ));
        }
        Ok(done)
    }
}

/// Classifies an error from sending a request.
fn classify_reqwest(e: &reqwest::Error) -> SourceError {
    let kind = if e.is_timeout() {
        if e.is_connect() {
            FailureKind::Connect
        } else {
            FailureKind::Stalled
        }
    } else {
        FailureKind::Connect
    };
    // The URL is already shown next to each failure; drop reqwest's copy of it.
    let mut text = chain(e);
    if let Some(url) = e.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    let detail = if e.is_timeout() && !e.is_connect() {
        format!("no response within the stall timeout ({text})")
    } else {
        text
    };
    (kind, detail)
}

/// Classifies an error from reading a body after `done` bytes.
fn classify_read(e: &io::Error, done: u64, total: Option<u64>) -> SourceError {
    let timed_out = e.kind() == io::ErrorKind::TimedOut
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<reqwest::Error>())
            .is_some_and(reqwest::Error::is_timeout);
    let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
    if timed_out {
        (
            FailureKind::Stalled,
            format!("no data for longer than the stall timeout after {done}{of} bytes"),
        )
    } else {
        (
            FailureKind::Truncated,
            format!("download broke off after {done}{of} bytes: {}", chain(e)),
        )
    }
}

/// An error and its causes, joined with ": ", with repeated messages dropped.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_sources() {
        assert!(matches!(
            Location::parse("https://example.invalid/a.tgz"),
            Ok(Location::Http(_))
        ));
        assert_eq!(
            Location::parse("file:///srv/m/a.tgz"),
            Ok(Location::File(PathBuf::from("/srv/m/a.tgz")))
        );
        assert_eq!(
            Location::parse("./dl/a.tgz"),
            Ok(Location::File(PathBuf::from("./dl/a.tgz")))
        );
        assert_eq!(
            Location::parse("ftp://h/a").unwrap_err().0,
            FailureKind::BadUrl
        );
        assert_eq!(Location::parse("").unwrap_err().0, FailureKind::BadUrl);
    }

    #[test]
    fn sidecar_keeps_query_and_names() {
        let loc = Location::parse("https://m.example/d/a.tgz?x=1").unwrap();
        assert_eq!(loc.file_name().as_deref(), Some("a.tgz"));
        assert_eq!(
            loc.sidecar().display(),
            "https://m.example/d/a.tgz.sha256?x=1"
        );
        let loc = Location::parse("/srv/a.tgz").unwrap();
        assert_eq!(
            loc.sidecar(),
            Location::File(PathBuf::from("/srv/a.tgz.sha256"))
        );
    }
}
