//! Downloading one upstream file: a conditional GET streamed to a temporary file, hashed
//! (SHA-256) on the way, checked for a cut-off body, an expected size and an HTML error page.

use std::io::Write;
use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use sha2::{Digest, Sha256};

use super::{Failure, SyncSettings};

/// What the last download of the file answered, sent back to ask "changed since?".
#[derive(Debug, Default, Clone)]
pub struct Validators {
    /// `If-None-Match`.
    pub etag: Option<String>,
    /// `If-Modified-Since`.
    pub last_modified: Option<String>,
}

/// A downloaded file (removed when dropped).
#[derive(Debug)]
pub struct Download {
    /// Where the bytes are.
    pub path: PathBuf,
    /// The URL it came from (may hold a secret: redact before showing).
    pub url: String,
    /// The file's name: from `Content-Disposition`, else the URL's last segment.
    pub file_name: String,
    /// Bytes received.
    pub bytes: u64,
    /// SHA-256 of the bytes, upper-case hex.
    pub sha256: String,
    /// The answer's `ETag`.
    pub etag: Option<String>,
    /// The answer's `Last-Modified`.
    pub last_modified: Option<String>,
}

impl Download {
    /// The `Last-Modified` date as `YYYY-MM-DD`.
    pub fn last_modified_date(&self) -> Option<String> {
        let t = httpdate::parse_http_date(self.last_modified.as_deref()?).ok()?;
        Some(super::rfc3339(t).get(..10)?.to_string())
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A 304, or the new file.
#[derive(Debug)]
pub enum Fetched {
    /// The upstream says the file has not changed: nothing was downloaded.
    NotModified,
    /// The file.
    Body(Download),
}

/// GETs `url` into a temporary file in `dir` named `{prefix}…`. Non-2xx answers, transport
/// errors, timeouts, a body shorter or longer than announced (or than `expect_size`), and an
/// HTML page are failures; messages never show the TRUD key.
pub async fn get(
    client: &reqwest::Client,
    url: &str,
    validators: &Validators,
    dir: &Path,
    prefix: &str,
    expect_size: Option<u64>,
    settings: &SyncSettings,
) -> Result<Fetched, Failure> {
    let shown = settings.redact(url);
    let fail = |what: String| Failure::retry(format!("{shown}: {what}"));
    let mut request = client.get(url);
    if let Some(etag) = &validators.etag {
        request = request.header(header::IF_NONE_MATCH, etag);
    }
    if let Some(lm) = &validators.last_modified {
        request = request.header(header::IF_MODIFIED_SINCE, lm);
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| fail(transport_error(&e, settings)))?;
    let status = response.status();
    if status == StatusCode::NOT_MODIFIED {
        return Ok(Fetched::NotModified);
    }
    if !status.is_success() {
        return Err(fail(format!("HTTP {status} from the upstream")));
    }
    let headers = response.headers().clone();
    let announced = response.content_length();
    let is_html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/html")
        });
    if is_html {
        return Err(fail(
            "the upstream answered an HTML page (status 200), not a register file".into(),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    let file_name = file_name(&headers, url);
    let path = dir.join(format!(
        "{prefix}{}-{}",
        std::process::id(),
        super::state::random_u64()
    ));
    let mut download = Download {
        path: path.clone(),
        url: url.to_string(),
        file_name,
        bytes: 0,
        sha256: String::new(),
        etag: header_text(&headers, header::ETAG),
        last_modified: header_text(&headers, header::LAST_MODIFIED),
    };
    let file =
        std::fs::File::create(&path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, file);
    let mut hasher = Sha256::new();
    let mut head = Vec::new();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                return Err(fail(format!(
                    "the download broke off after {} bytes{}: {}",
                    download.bytes,
                    announced.map(|n| format!(" of {n}")).unwrap_or_default(),
                    transport_error(&e, settings)
                )));
            }
        };
        if head.len() < 512 {
            head.extend_from_slice(&chunk[..chunk.len().min(512 - head.len())]);
        }
        hasher.update(&chunk);
        download.bytes += chunk.len() as u64;
        if let Some(limit) = expect_size
            && download.bytes > limit
        {
            return Err(fail(format!(
                "the download is larger than the {limit} bytes the upstream lists"
            )));
        }
        out.write_all(&chunk)
            .map_err(|e| fail(format!("{}: {e}", path.display())))?;
    }
    out.flush()
        .map_err(|e| fail(format!("{}: {e}", path.display())))?;
    if let Some(n) = announced
        && n != download.bytes
    {
        return Err(fail(format!(
            "the download is truncated: {} bytes received, {n} announced",
            download.bytes
        )));
    }
    if let Some(n) = expect_size
        && n != download.bytes
    {
        return Err(fail(format!(
            "size mismatch: {} bytes downloaded, the upstream lists {n}",
            download.bytes
        )));
    }
    if looks_like_html(&head) {
        return Err(fail(
            "the upstream answered an HTML page, not a register file".into(),
        ));
    }
    download.sha256 = hex_upper(&hasher.finalize());
    Ok(Fetched::Body(download))
}

/// A transport error's text without its URL (which may carry the TRUD key).
pub(super) fn transport_error(e: &reqwest::Error, settings: &SyncSettings) -> String {
    use std::error::Error as _;
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    };
    // The root cause says what happened (connection refused, end of file before the message
    // length); reqwest's own text would add the URL.
    let mut cause: Option<&dyn std::error::Error> = e.source();
    let mut last = None;
    while let Some(c) = cause {
        last = Some(c.to_string());
        cause = c.source();
    }
    settings.redact(&match last {
        Some(root) => format!("{kind}: {root}"),
        None => kind.to_string(),
    })
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The file name from `Content-Disposition: attachment; filename="…"`, else the URL's path.
fn file_name(headers: &HeaderMap, url: &str) -> String {
    let from_header = headers
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(';')
                .map(str::trim)
                .find_map(|p| p.strip_prefix("filename="))
                .map(|n| n.trim_matches('"').to_string())
        })
        .filter(|n| !n.is_empty());
    from_header.unwrap_or_else(|| {
        let path = url.split(['?', '#']).next().unwrap_or(url);
        path.rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or("download")
            .to_string()
    })
}

/// Whether a file starts like an HTML document.
pub fn looks_like_html(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    let text = text
        .trim_start_matches('\u{feff}')
        .trim_start()
        .to_ascii_lowercase();
    text.starts_with("<!doctype html") || text.starts_with("<html") || text.starts_with("<head")
}

/// Upper-case hex.
pub fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}
