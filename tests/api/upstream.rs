//! A real HTTP/1.1 "upstream" on a loopback port for the sync tests: plain files replaced in
//! place (with `ETag`, `Last-Modified` and conditional GETs), a stand-in for the NHS TRUD API
//! (release listings and archive downloads behind an API key), and transport faults that an HTTP
//! framework would refuse to produce (a lying `Content-Length` then a close, a stall, a trickled
//! body).
//!
//! It is written on a raw `tokio::net::TcpListener` for that reason: one task per connection,
//! one request per connection (GET and HEAD), every answer written by hand with
//! `Connection: close`, then the socket is closed.
//!
//! Beside it live the fixtures those tests build their upstream files from: [`zip_of`],
//! [`zip_of_many`], [`zip_bomb`], [`gunzip`], [`http_date`], [`sha256_hex_upper`] and
//! [`closed_port_url`].

use std::collections::HashMap;
use std::io::{Cursor, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The longest request head read (request line and headers); a longer one gets 431.
const MAX_HEAD: usize = 16 * 1024;

/// The page an HTML-serving proxy or maintenance screen answers with (`Fault::HtmlPage`).
const HTML_PAGE: &str = "<!DOCTYPE html><html><head><title>Service unavailable</title></head>\
    <body><h1>Service unavailable</h1><p>The service is down for maintenance.</p></body></html>";

/// A loopback HTTP server playing a register's upstream; see the module docs. Clones share the
/// server.
#[derive(Clone)]
pub struct Upstream {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The method (`GET`, `HEAD`, …).
    pub method: String,
    /// The path of the request target, without its query.
    pub path: String,
    /// The query of the request target (after `?`), if it had one. (An addition to the brief:
    /// TRUD clients may send `?latest`.)
    pub query: Option<String>,
    /// The headers in the order received, names as sent.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// The first value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How a path misbehaves until `put` or `clear_fault` is called for it. The body faults
/// (`Truncated`, `SlowBody`) act on the answer the path would otherwise give (its file, a TRUD
/// listing, …); a conditional GET answered `304` has no body to spoil.
#[derive(Clone, Debug)]
pub enum Fault {
    /// That status with a small `text/plain` body (e.g. 503, 500, 404).
    Status(u16),
    /// `200 OK`, `text/html`: a "Service unavailable" page where the file should be.
    HtmlPage,
    /// The headers announce the full `Content-Length`, only `keep` bytes follow, then a close.
    Truncated {
        /// How many body bytes are sent before the connection is closed.
        keep: usize,
    },
    /// The request is read, nothing is sent for that long, then the connection is closed.
    Stall(Duration),
    /// The headers and the first `first` body bytes, a pause, then the rest.
    SlowBody {
        /// Body bytes sent before the pause.
        first: usize,
        /// How long the body stops.
        pause: Duration,
    },
}

/// One release of a TRUD item, as `Upstream::trud_item` lists and serves it.
pub struct TrudRelease {
    /// The release's name, e.g. "Release 2019-10".
    pub name: String,
    /// Its release date, "YYYY-MM-DD"; the listing is sorted on it, newest first.
    pub release_date: String,
    /// The archive's file name, e.g. "epraccur_2019-10.zip" (also the release `id`).
    pub archive_file_name: String,
    /// The archive bytes served.
    pub archive: Vec<u8>,
    /// The SHA-256 the listing claims; `None` = the true one (upper-case hex).
    pub claimed_sha256: Option<String>,
    /// The size the listing claims; `None` = the true one.
    pub claimed_size: Option<u64>,
}

/// What the server holds, shared by the test and the connection tasks.
#[derive(Default)]
struct State {
    /// Served bodies by path: `put` files and TRUD archives.
    files: HashMap<String, Served>,
    faults: HashMap<String, Fault>,
    seen: HashMap<String, Vec<Seen>>,
    downloads: HashMap<String, usize>,
    /// TRUD release listings (the `releases` array, newest first) by (API key, item).
    trud: HashMap<(String, u32), Vec<Json>>,
}

/// A body served at a path, with its validators.
struct Served {
    body: Arc<[u8]>,
    /// Quoted.
    etag: String,
    last_modified: String,
    /// `last_modified` in seconds since the epoch, for `If-Modified-Since`.
    modified_secs: i64,
    content_type: &'static str,
}

/// An answer decided under the lock and written after it.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Arc<[u8]>,
    delivery: Delivery,
}

/// How an answer's bytes go out.
enum Delivery {
    Whole,
    Truncated(usize),
    Slow(usize, Duration),
    Stall(Duration),
}

impl Upstream {
    /// Binds 127.0.0.1:0 and serves in a background tokio task (dropped with the runtime).
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_connection(stream, Arc::clone(&shared)));
            }
        });
        Upstream { addr, state }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// The releases URL base to give the client: `http://127.0.0.1:PORT` (the client appends
    /// `/trud/api/v1/keys/{key}/items/{item}/releases`).
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `body` at `path` with a strong `ETag` (`etag`, quoted unless it already is) and
    /// `Last-Modified` (an HTTP date built from `last_modified`, given as "YYYY-MM-DD"; midnight
    /// GMT). Replaces what was there and clears any fault on that path. Conditional GETs are
    /// honoured: `If-None-Match` equal to the current ETag, or (when no If-None-Match)
    /// `If-Modified-Since` >= Last-Modified → `304 Not Modified` with no body. `Content-Type` from
    /// the extension (.zip application/zip, .gz application/gzip, .json application/json, else
    /// text/csv).
    pub fn put(&self, path: &str, body: Vec<u8>, etag: &str, last_modified: &str) {
        let served = Served::new(path, body.into(), etag, last_modified);
        let mut state = self.lock();
        state.faults.remove(path);
        state.files.insert(path.to_owned(), served);
    }

    /// Makes `path` misbehave (see `Fault`) until `put` or `clear_fault` is called for it.
    pub fn fault(&self, path: &str, fault: Fault) {
        self.lock().faults.insert(path.to_owned(), fault);
    }

    /// Ends the fault on `path`: it answers normally again.
    pub fn clear_fault(&self, path: &str) {
        self.lock().faults.remove(path);
    }

    /// Every request received for `path` so far (in order; matched without the query).
    pub fn requests(&self, path: &str) -> Vec<Seen> {
        self.lock().seen.get(path).cloned().unwrap_or_default()
    }

    /// How many `200` answers with a body were sent for `path` (to GETs, faulted ones such as
    /// `HtmlPage`, `Truncated` and `SlowBody` included): what a "nothing was downloaded"
    /// assertion checks.
    pub fn downloads(&self, path: &str) -> usize {
        self.lock().downloads.get(path).copied().unwrap_or(0)
    }

    /// Serves a TRUD API item: `GET /trud/api/v1/keys/{key}/items/{item}/releases` answers
    /// `{"apiVersion":"1","releases":[…],"httpStatus":200,"message":"OK"}` (with `?latest`, only
    /// the newest), releases NEWEST FIRST (sorted by release_date descending). Every archive is
    /// served at `trud_download_path(key, item, archive_file_name)` (made absolute, that is the
    /// release's `archiveFileUrl`), with its SHA-256 as ETag and its release date as
    /// Last-Modified; like `put`, this clears faults on those paths. A request with a key no item
    /// was registered under gets HTTP 400 and `{"httpStatus":400,"message":"Invalid API key"}`
    /// on both the releases URL and downloads; an unknown item gets 404 and
    /// `{"httpStatus":404,"message":"Item not found"}`. Calling it again replaces the listing.
    pub fn trud_item(&self, key: &str, item: u32, mut releases: Vec<TrudRelease>) {
        releases.sort_by(|a, b| b.release_date.cmp(&a.release_date));
        let mut listing = Vec::with_capacity(releases.len());
        let mut archives = Vec::with_capacity(releases.len());
        for release in releases {
            let path = self.trud_download_path(key, item, &release.archive_file_name);
            let url = self.url(&path);
            let sha256 = sha256_hex_upper(&release.archive);
            let size = release.claimed_size.unwrap_or(release.archive.len() as u64);
            let modified = format!("{}T00:00:00.000Z", release.release_date);
            let public_key = format!("/download/api/v1/keys/{key}/content/public-key.asc");
            listing.push(json!({
                "id": release.archive_file_name,
                "name": release.name,
                "releaseDate": release.release_date,
                "archiveFileUrl": url,
                "archiveFileName": release.archive_file_name,
                "archiveFileSizeBytes": size,
                // Any hex will do (no SHA-1 here): the first 40 digits of the SHA-256.
                "archiveFileSha1": sha256[..40].to_ascii_lowercase(),
                "archiveFileSha256": release.claimed_sha256.as_deref().unwrap_or(&sha256),
                "archiveFileLastModifiedTimestamp": modified,
                "checksumFileUrl": format!("{url}.sha256"),
                "signatureFileUrl": format!("{url}.asc"),
                "publicKeyFileUrl": self.url(&public_key),
            }));
            let served = Served::new(
                &path,
                release.archive.into(),
                &sha256,
                &release.release_date,
            );
            archives.push((path, served));
        }
        let mut state = self.lock();
        for (path, served) in archives {
            state.faults.remove(&path);
            state.files.insert(path, served);
        }
        state.trud.insert((key.to_owned(), item), listing);
    }

    /// The path a TRUD archive is downloaded from (for `fault`, `requests`, `downloads`):
    /// `/download/api/v1/keys/{key}/content/items/{item}/{file_name}`.
    pub fn trud_download_path(&self, key: &str, item: u32, file_name: &str) -> String {
        format!("/download/api/v1/keys/{key}/content/items/{item}/{file_name}")
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Served {
    fn new(path: &str, body: Arc<[u8]>, etag: &str, last_modified: &str) -> Served {
        let content_type = match path.rsplit_once('.').map(|(_, ext)| ext) {
            Some("zip") => "application/zip",
            Some("gz") => "application/gzip",
            Some("json") => "application/json",
            _ => "text/csv",
        };
        let etag = if etag.starts_with('"') {
            etag.to_owned()
        } else {
            format!("\"{etag}\"")
        };
        let (y, m, d) = parse_ymd(last_modified);
        Served {
            body,
            etag,
            last_modified: http_date(last_modified),
            modified_secs: days_from_civil(y, m, d) * 86_400,
            content_type,
        }
    }

    /// Whether a conditional GET's validators match this version.
    fn not_modified(&self, request: &Seen) -> bool {
        if let Some(tags) = request.header("if-none-match") {
            return tags
                .split(',')
                .map(str::trim)
                .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == self.etag);
        }
        request
            .header("if-modified-since")
            .and_then(parse_http_date)
            .is_some_and(|since| since >= self.modified_secs)
    }

    fn answer(&self, request: &Seen) -> Answer {
        let validators = vec![
            ("ETag", self.etag.clone()),
            ("Last-Modified", self.last_modified.clone()),
        ];
        if self.not_modified(request) {
            return Answer::new(304, validators, Arc::from(&[][..]));
        }
        let mut headers = vec![("Content-Type", self.content_type.to_owned())];
        headers.extend(validators);
        Answer::new(200, headers, Arc::clone(&self.body))
    }
}

impl Answer {
    fn new(status: u16, headers: Vec<(&'static str, String)>, body: Arc<[u8]>) -> Answer {
        Answer {
            status,
            headers,
            body,
            delivery: Delivery::Whole,
        }
    }

    fn text(status: u16, content_type: &str, body: &str) -> Answer {
        let headers = vec![("Content-Type", content_type.to_owned())];
        Answer::new(status, headers, Arc::from(body.as_bytes()))
    }

    fn status(status: u16) -> Answer {
        Answer::text(
            status,
            "text/plain",
            &format!("{status} {}\n", reason(status)),
        )
    }

    fn json(status: u16, body: &Json) -> Answer {
        Answer::text(status, "application/json", &body.to_string())
    }

    fn trud_error(status: u16, message: &str) -> Answer {
        Answer::json(status, &json!({"httpStatus": status, "message": message}))
    }
}

/// Reads one request, answers it, closes the connection.
async fn serve_connection(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let request = match read_request(&mut stream).await {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err(status) => {
            write_answer(&mut stream, Answer::status(status), false).await;
            return;
        }
    };
    let answer = decide(&mut lock(&state), &request);
    write_answer(&mut stream, answer, request.method == "HEAD").await;
}

/// Reads the request head (up to the blank line). `Ok(None)`: the client went away first;
/// `Err(status)`: a head too long or malformed.
async fn read_request(stream: &mut TcpStream) -> Result<Option<Seen>, u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if buf.len() > MAX_HEAD {
            return Err(431);
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split_whitespace();
    let (Some(method), Some(target), Some(_version)) = (
        request_line.next(),
        request_line.next(),
        request_line.next(),
    ) else {
        return Err(400);
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (target, None),
    };
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Ok(Some(Seen {
        method: method.to_owned(),
        path: path.to_owned(),
        query,
        headers,
    }))
}

/// Records the request and decides its answer: the path's normal answer, spoilt by its fault.
fn decide(state: &mut State, request: &Seen) -> Answer {
    let path = request.path.as_str();
    state
        .seen
        .entry(path.to_owned())
        .or_default()
        .push(request.clone());
    let mut answer = if request.method != "GET" && request.method != "HEAD" {
        let mut answer = Answer::status(405);
        answer.headers.push(("Allow", "GET, HEAD".to_owned()));
        answer
    } else {
        normal_answer(state, request)
    };
    match state.faults.get(path).cloned() {
        None => {}
        Some(Fault::Status(status)) => answer = Answer::status(status),
        Some(Fault::HtmlPage) => answer = Answer::text(200, "text/html; charset=utf-8", HTML_PAGE),
        Some(Fault::Truncated { keep }) => answer.delivery = Delivery::Truncated(keep),
        Some(Fault::Stall(wait)) => answer.delivery = Delivery::Stall(wait),
        Some(Fault::SlowBody { first, pause }) => answer.delivery = Delivery::Slow(first, pause),
    }
    let stalled = matches!(answer.delivery, Delivery::Stall(_));
    if answer.status == 200 && request.method == "GET" && !answer.body.is_empty() && !stalled {
        *state.downloads.entry(path.to_owned()).or_default() += 1;
    }
    answer
}

/// What a GET or HEAD of the path answers when nothing is wrong.
fn normal_answer(state: &State, request: &Seen) -> Answer {
    let path = request.path.as_str();
    if let Some(rest) = path.strip_prefix("/trud/api/v1/keys/") {
        let parts: Vec<&str> = rest.split('/').collect();
        let [key, "items", item, "releases"] = parts[..] else {
            return Answer::status(404);
        };
        if !state.trud.keys().any(|(k, _)| k == key) {
            return Answer::trud_error(400, "Invalid API key");
        }
        let listing = item
            .parse::<u32>()
            .ok()
            .and_then(|item| state.trud.get(&(key.to_owned(), item)));
        let Some(listing) = listing else {
            return Answer::trud_error(404, "Item not found");
        };
        let latest = request.query.as_deref().is_some_and(|q| {
            q.split('&')
                .any(|p| p == "latest" || p.starts_with("latest="))
        });
        let releases = if latest {
            &listing[..listing.len().min(1)]
        } else {
            &listing[..]
        };
        let body =
            json!({"apiVersion": "1", "releases": releases, "httpStatus": 200, "message": "OK"});
        return Answer::json(200, &body);
    }
    if let Some(rest) = path.strip_prefix("/download/api/v1/keys/") {
        let key = rest.split('/').next().unwrap_or_default();
        if !state.trud.keys().any(|(k, _)| k == key) {
            return Answer::trud_error(400, "Invalid API key");
        }
    }
    match state.files.get(path) {
        Some(served) => served.answer(request),
        None => Answer::status(404),
    }
}

/// Writes the answer as its delivery says (errors ignored: the client may have gone), then
/// closes the connection.
async fn write_answer(stream: &mut TcpStream, answer: Answer, head_only: bool) {
    if let Delivery::Stall(wait) = answer.delivery {
        tokio::time::sleep(wait).await;
        return;
    }
    let mut head = format!("HTTP/1.1 {} {}\r\n", answer.status, reason(answer.status));
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if answer.status != 304 {
        head.push_str(&format!("Content-Length: {}\r\n", answer.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    if stream.write_all(head.as_bytes()).await.is_err() || head_only {
        let _ = stream.shutdown().await;
        return;
    }
    let body = &answer.body[..];
    let _ = match answer.delivery {
        Delivery::Whole | Delivery::Stall(_) => stream.write_all(body).await,
        Delivery::Truncated(keep) => stream.write_all(&body[..keep.min(body.len())]).await,
        Delivery::Slow(first, pause) => {
            let (now, later) = body.split_at(first.min(body.len()));
            let _ = stream.write_all(now).await;
            let _ = stream.flush().await;
            tokio::time::sleep(pause).await;
            stream.write_all(later).await
        }
    };
    let _ = stream.shutdown().await;
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// "YYYY-MM-DD" → (year, month, day); panics on anything else (a test's own mistake).
fn parse_ymd(date: &str) -> (i64, u32, u32) {
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts[..] else {
        panic!("{date:?} is not YYYY-MM-DD");
    };
    let number = |s: &str| -> i64 {
        s.parse()
            .unwrap_or_else(|_| panic!("{date:?} is not YYYY-MM-DD"))
    };
    let (m, d) = (number(m) as u32, number(d) as u32);
    assert!(
        (1..=12).contains(&m) && (1..=31).contains(&d),
        "{date:?} is not a date"
    );
    (number(y), m, d)
}

/// Days from 1970-01-01 to the proleptic Gregorian date: count whole 400-year eras (146 097
/// days each) from 0000-03-01, with years starting in March so that the leap day falls last.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719 468 days lie between 0000-03-01 and 1970-01-01.
    era * 146_097 + day_of_era - 719_468
}

/// "Tue, 01 Oct 2019 00:00:00 GMT" for "2019-10-01": an IMF-fixdate at midnight GMT.
pub fn http_date(yyyy_mm_dd: &str) -> String {
    let (year, month, day) = parse_ymd(yyyy_mm_dd);
    // 1970-01-01 was a Thursday.
    let weekday = WEEKDAYS[(days_from_civil(year, month, day) + 4).rem_euclid(7) as usize];
    let month = MONTHS[month as usize - 1];
    format!("{weekday}, {day:02} {month} {year:04} 00:00:00 GMT")
}

/// An IMF-fixdate in seconds since the epoch (`None` if it is not one).
fn parse_http_date(date: &str) -> Option<i64> {
    let parts: Vec<&str> = date.split_whitespace().collect();
    let [_weekday, day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    let month = MONTHS.iter().position(|m| *m == month)? as u32 + 1;
    let clock: Vec<i64> = time
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [h, m, s] = clock[..] else { return None };
    let days = days_from_civil(year.parse().ok()?, month, day.parse().ok()?);
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

/// The SHA-256 of `bytes` in upper-case hex (as TRUD lists it).
pub fn sha256_hex_upper(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// Deflated, dated 1980-01-01 so that the same members always make the same bytes.
fn zip_options() -> zip::write::SimpleFileOptions {
    zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::DEFAULT)
}

/// A deflated zip with one member.
pub fn zip_of(member: &str, bytes: &[u8]) -> Vec<u8> {
    zip_of_many(&[(member, bytes)])
}

/// A deflated zip with these members, in order.
pub fn zip_of_many(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes) in members {
        zip.start_file(*name, zip_options()).expect("zip member");
        zip.write_all(bytes).expect("zip write");
    }
    zip.finish().expect("zip finish").into_inner()
}

/// A zip whose one member inflates to `decompressed` zero bytes (written in chunks, never held
/// whole; the zip itself is about a thousandth of that).
pub fn zip_bomb(member: &str, decompressed: usize) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    zip.start_file(member, zip_options()).expect("zip member");
    let zeros = [0u8; 64 * 1024];
    let mut left = decompressed;
    while left > 0 {
        let n = left.min(zeros.len());
        zip.write_all(&zeros[..n]).expect("zip write");
        left -= n;
    }
    zip.finish().expect("zip finish").into_inner()
}

/// The decompressed bytes of a gzip file (e.g. `mappings/data/ods/epraccur_2019-10.csv.gz`).
pub fn gunzip(path: &Path) -> Vec<u8> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut bytes = Vec::new();
    flate2::read::MultiGzDecoder::new(file)
        .read_to_end(&mut bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
}

/// A URL on 127.0.0.1 where nothing listens (a port bound then released), for "connection
/// refused".
pub fn closed_port_url(path: &str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}{path}")
}

mod self_tests {
    use std::time::Instant;

    use super::*;
    use crate::support::repo;

    /// Real data: a full epraccur release, zipped as an upstream would publish it.
    fn epraccur_zip(release: &str) -> Vec<u8> {
        let csv = gunzip(&repo().join(format!("mappings/data/ods/epraccur_{release}.csv.gz")));
        zip_of("epraccur.csv", &csv)
    }

    fn header(resp: &reqwest::Response, name: &str) -> String {
        resp.headers()
            .get(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .to_str()
            .expect("ascii header")
            .to_owned()
    }

    async fn json_of(resp: reqwest::Response) -> Json {
        serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json")
    }

    async fn get(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = reqwest::Client::new().get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request")
    }

    #[test]
    fn http_dates_name_the_right_weekday_and_parse_back() {
        assert_eq!(http_date("2019-10-01"), "Tue, 01 Oct 2019 00:00:00 GMT");
        assert_eq!(http_date("1970-01-01"), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date("2000-02-29"), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date("2024-12-31"), "Tue, 31 Dec 2024 00:00:00 GMT");
        assert_eq!(http_date("2026-02-01"), "Sun, 01 Feb 2026 00:00:00 GMT");
        assert_eq!(parse_http_date(&http_date("1970-01-02")), Some(86_400));
        assert_eq!(
            parse_http_date("Tue, 01 Oct 2019 12:30:05 GMT"),
            Some(1_569_888_000 + 12 * 3600 + 30 * 60 + 5)
        );
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[tokio::test]
    async fn put_serves_validators_and_honours_conditional_gets() {
        let up = Upstream::start().await;
        let (old, new) = (epraccur_zip("2019-10"), epraccur_zip("2020-01"));
        up.put("/epraccur.zip", old.clone(), "e2019", "2019-10-01");
        let url = up.url("/epraccur.zip");

        let resp = get(&url, &[]).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "etag"), "\"e2019\"");
        assert_eq!(
            header(&resp, "last-modified"),
            "Tue, 01 Oct 2019 00:00:00 GMT"
        );
        assert_eq!(header(&resp, "content-type"), "application/zip");
        assert_eq!(resp.bytes().await.expect("body")[..], old[..]);
        assert_eq!(up.downloads("/epraccur.zip"), 1);

        let resp = get(&url, &[("If-None-Match", "\"e2019\"")]).await;
        assert_eq!(resp.status(), 304);
        assert!(resp.bytes().await.expect("body").is_empty());
        let since = http_date("2019-10-01");
        let resp = get(&url, &[("If-Modified-Since", &since)]).await;
        assert_eq!(resp.status(), 304);
        // An older date, or a stale ETag (which wins over the date), downloads again.
        let resp = get(&url, &[("If-Modified-Since", &http_date("2019-09-30"))]).await;
        assert_eq!(resp.status(), 200);
        let resp = get(
            &url,
            &[("If-None-Match", "\"x\""), ("If-Modified-Since", &since)],
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(up.downloads("/epraccur.zip"), 3);

        // A HEAD describes without downloading.
        let resp = reqwest::Client::new()
            .head(&url)
            .send()
            .await
            .expect("head");
        assert_eq!(header(&resp, "content-length"), old.len().to_string());
        assert_eq!(up.downloads("/epraccur.zip"), 3);

        // Replaced in place: the old validators no longer match.
        up.put("/epraccur.zip", new.clone(), "e2020", "2020-01-01");
        let resp = get(&url, &[("If-None-Match", "\"e2019\"")]).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "etag"), "\"e2020\"");
        assert_eq!(resp.bytes().await.expect("body")[..], new[..]);
        assert_eq!(up.downloads("/epraccur.zip"), 4);

        let seen = up.requests("/epraccur.zip");
        assert_eq!(seen.len(), 7);
        assert_eq!(seen[1].header("IF-NONE-MATCH"), Some("\"e2019\""));
        assert_eq!(seen[5].method, "HEAD");
        assert!(up.requests("/other").is_empty());
        assert_eq!(get(&up.url("/other.csv"), &[]).await.status(), 404);
    }

    #[tokio::test]
    async fn status_and_html_faults_answer_as_told_until_cleared() {
        let up = Upstream::start().await;
        up.put(
            "/r.csv",
            b"code,name\nA,Alpha\n".to_vec(),
            "1",
            "2020-01-01",
        );
        let url = up.url("/r.csv");
        for status in [503, 500, 404] {
            up.fault("/r.csv", Fault::Status(status));
            assert_eq!(get(&url, &[]).await.status(), status);
        }
        assert_eq!(up.downloads("/r.csv"), 0);

        up.fault("/r.csv", Fault::HtmlPage);
        let resp = get(&url, &[]).await;
        assert_eq!(resp.status(), 200);
        assert!(header(&resp, "content-type").starts_with("text/html"));
        assert!(
            resp.text()
                .await
                .expect("body")
                .contains("Service unavailable")
        );

        up.clear_fault("/r.csv");
        let resp = get(&url, &[]).await;
        assert_eq!(header(&resp, "content-type"), "text/csv");
        assert_eq!(resp.text().await.expect("body"), "code,name\nA,Alpha\n");
    }

    #[tokio::test]
    async fn a_truncated_body_fails_the_read() {
        let up = Upstream::start().await;
        let zip = zip_of("r.csv", &[b'x'; 10_000]);
        up.put("/r.zip", zip.clone(), "1", "2020-01-01");
        up.fault("/r.zip", Fault::Truncated { keep: 20 });
        let resp = get(&up.url("/r.zip"), &[]).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "content-length"), zip.len().to_string());
        let err = resp.bytes().await.expect_err("a short body is an error");
        assert!(err.is_body() || err.is_decode(), "{err:?}");
        // A new version clears the fault.
        up.put("/r.zip", zip.clone(), "2", "2020-02-01");
        assert_eq!(
            get(&up.url("/r.zip"), &[])
                .await
                .bytes()
                .await
                .expect("body")[..],
            zip[..]
        );
    }

    #[tokio::test]
    async fn a_stall_times_out_a_client_with_a_short_timeout() {
        let up = Upstream::start().await;
        up.put("/r.csv", b"a\n".to_vec(), "1", "2020-01-01");
        up.fault("/r.csv", Fault::Stall(Duration::from_secs(30)));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .expect("client");
        let started = Instant::now();
        let err = client
            .get(up.url("/r.csv"))
            .send()
            .await
            .expect_err("stalls");
        assert!(err.is_timeout(), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(up.requests("/r.csv").len(), 1);
        assert_eq!(up.downloads("/r.csv"), 0);
    }

    #[tokio::test]
    async fn a_slow_body_arrives_whole_after_the_pause() {
        let up = Upstream::start().await;
        up.put(
            "/r.csv",
            b"code,name\nA,Alpha\n".to_vec(),
            "1",
            "2020-01-01",
        );
        let pause = Duration::from_millis(200);
        up.fault("/r.csv", Fault::SlowBody { first: 5, pause });
        let started = Instant::now();
        let body = get(&up.url("/r.csv"), &[])
            .await
            .text()
            .await
            .expect("body");
        assert_eq!(body, "code,name\nA,Alpha\n");
        assert!(started.elapsed() >= pause);
        assert_eq!(up.downloads("/r.csv"), 1);
    }

    #[tokio::test]
    async fn nothing_listens_on_a_closed_port() {
        let err = reqwest::get(closed_port_url("/r.csv"))
            .await
            .expect_err("refused");
        assert!(err.is_connect(), "{err:?}");
    }

    fn release(date: &str, archive: Vec<u8>) -> TrudRelease {
        TrudRelease {
            name: format!("Release {}", &date[..7]),
            release_date: date.to_owned(),
            archive_file_name: format!("epraccur_{}.zip", &date[..7]),
            archive,
            claimed_sha256: None,
            claimed_size: None,
        }
    }

    async fn listing(up: &Upstream, key: &str, item: &str) -> (u16, Json) {
        let url = format!("{}/trud/api/v1/keys/{key}/items/{item}/releases", up.base());
        let resp = get(&url, &[]).await;
        let status = resp.status().as_u16();
        (status, json_of(resp).await)
    }

    #[tokio::test]
    async fn trud_lists_newest_first_and_serves_archives_that_match() {
        let up = Upstream::start().await;
        let (old, new) = (epraccur_zip("2019-10"), epraccur_zip("2020-01"));
        let releases = vec![
            release("2019-10-01", old.clone()),
            release("2020-01-01", new.clone()),
        ];
        up.trud_item("k3y", 341, releases);

        let (status, body) = listing(&up, "k3y", "341").await;
        assert_eq!(status, 200);
        assert_eq!(
            (&body["apiVersion"], &body["httpStatus"]),
            (&json!("1"), &json!(200))
        );
        let newest = &body["releases"][0];
        assert_eq!(newest["releaseDate"], "2020-01-01");
        assert_eq!(newest["id"], "epraccur_2020-01.zip");
        assert_eq!(newest["archiveFileSha256"], sha256_hex_upper(&new));
        assert_eq!(newest["archiveFileSizeBytes"], new.len());
        assert_eq!(body["releases"][1]["releaseDate"], "2019-10-01");
        assert_eq!(
            body["releases"][1]["archiveFileSha256"],
            sha256_hex_upper(&old)
        );

        let url = newest["archiveFileUrl"].as_str().expect("url").to_owned();
        let path = up.trud_download_path("k3y", 341, "epraccur_2020-01.zip");
        assert_eq!(url, up.url(&path));
        let bytes = get(&url, &[]).await.bytes().await.expect("archive");
        assert_eq!(sha256_hex_upper(&bytes), newest["archiveFileSha256"]);
        assert_eq!(up.downloads(&path), 1);

        up.fault(&path, Fault::Status(503));
        assert_eq!(get(&url, &[]).await.status(), 503);

        let url = format!(
            "{}/trud/api/v1/keys/k3y/items/341/releases?latest",
            up.base()
        );
        let latest = json_of(get(&url, &[]).await).await;
        assert_eq!(latest["releases"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            up.requests("/trud/api/v1/keys/k3y/items/341/releases")
                .len(),
            2
        );
    }

    #[tokio::test]
    async fn trud_refuses_a_wrong_key_and_an_unknown_item() {
        let up = Upstream::start().await;
        up.trud_item(
            "k3y",
            341,
            vec![release("2019-10-01", zip_of("a.csv", b"a\n"))],
        );
        let wrong = json!({"httpStatus": 400, "message": "Invalid API key"});
        assert_eq!(listing(&up, "nope", "341").await, (400, wrong.clone()));
        let download = up.url(&up.trud_download_path("nope", 341, "epraccur_2019-10.zip"));
        let resp = get(&download, &[]).await;
        assert_eq!(resp.status(), 400);
        assert_eq!(json_of(resp).await, wrong);
        let unknown = json!({"httpStatus": 404, "message": "Item not found"});
        assert_eq!(listing(&up, "k3y", "999").await, (404, unknown));
    }

    #[tokio::test]
    async fn trud_listing_shows_a_claimed_checksum_and_size() {
        let up = Upstream::start().await;
        let archive = zip_of_many(&[("a.csv", b"a\n"), ("b.csv", b"b\n")]);
        let claimed = "0".repeat(64);
        let lying = TrudRelease {
            claimed_sha256: Some(claimed.clone()),
            claimed_size: Some(7),
            ..release("2019-10-01", archive.clone())
        };
        up.trud_item("k3y", 341, vec![lying]);
        let (_, body) = listing(&up, "k3y", "341").await;
        assert_eq!(body["releases"][0]["archiveFileSha256"], claimed);
        assert_eq!(body["releases"][0]["archiveFileSizeBytes"], 7);
        let url = body["releases"][0]["archiveFileUrl"]
            .as_str()
            .expect("url")
            .to_owned();
        let bytes = get(&url, &[]).await.bytes().await.expect("archive");
        assert_eq!(bytes[..], archive[..]);
        assert_ne!(sha256_hex_upper(&bytes), claimed);
    }

    #[test]
    fn zips_round_trip_and_a_bomb_is_small() {
        let csv = b"code,name\nA,Alpha\n";
        let mut one = zip::ZipArchive::new(Cursor::new(zip_of("r.csv", csv))).expect("zip");
        let mut read = Vec::new();
        one.by_name("r.csv")
            .expect("member")
            .read_to_end(&mut read)
            .expect("inflate");
        assert_eq!(read, csv);
        let many = zip_of_many(&[("a.csv", b"a\n"), ("b.csv", b"b\n")]);
        let many = zip::ZipArchive::new(Cursor::new(many)).expect("zip");
        assert_eq!(many.len(), 2);

        let bomb = zip_bomb("big.csv", 50 << 20);
        assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
        let mut bomb = zip::ZipArchive::new(Cursor::new(bomb)).expect("zip");
        assert_eq!(bomb.by_name("big.csv").expect("member").size(), 50 << 20);
    }
}
