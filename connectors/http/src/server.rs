//! The HTTP source's server: hyper on a small tokio runtime of its own,
//! over plain TCP or TLS (OpenSSL, as the other connectors use).
//!
//! Each request is checked (path, method, authentication, size), its body
//! parsed into records, and the records handed to the spool's writer
//! thread, which appends whole groups of requests with one fsync. The
//! answer waits for that fsync:
//!
//! | answer | when |
//! |---|---|
//! | 202 `{"accepted":N}` | the records are durable in the spool |
//! | 200 `{"accepted":0,"duplicate":true}` | the idempotency key was accepted before |
//! | 400 | the body is not JSON/NDJSON; the message names the record and byte |
//! | 401 | a missing or wrong token or signature |
//! | 404, 405, 413, 415 | wrong path, method, too large, unknown content type |
//! | 503 or 429 with `Retry-After` | the spool holds `max-buffer` unread bytes: backpressure |
//! | 503 | the spool cannot be written (disk full); nothing of the request was kept |
//!
//! `GET` on the path answers 200 `{"ready":true,...}`, or `busy-status`
//! while the buffer is full: a load balancer's health check.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
use weir_connector::background::{self, Background};
use weir_connector::{BatchWriter, ConnectorError, EMITTED_AT_HEADER};

use crate::source::{BodyFormat, HttpSourceConfig};
use crate::spool::{Appended, Entry, Spool};

/// Where the source's background threads (the server, the spool's
/// writer) leave the error that ended them; the source's next `poll`
/// returns it, so the pipeline fails with it instead of stalling.
#[derive(Debug, Clone, Default)]
pub struct Failure(Arc<std::sync::Mutex<Option<ConnectorError>>>);

impl Failure {
    /// Records `error` (the first one wins).
    pub fn set(&self, error: ConnectorError) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(error);
    }

    /// The error, once.
    pub fn take(&self) -> Option<ConnectorError> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// How requests authenticate.
#[derive(Clone)]
pub enum Auth {
    /// Anyone may post.
    None,
    /// `Authorization: Bearer TOKEN`.
    Bearer(String),
    /// An HMAC-SHA256 of the body, as hex, in `header`.
    Hmac {
        /// The shared secret.
        secret: Vec<u8>,
        /// The header holding the signature.
        header: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::None => "none",
            Auth::Bearer(_) => "bearer ***",
            Auth::Hmac { .. } => "hmac ***",
        })
    }
}

/// Settings the handlers read.
#[derive(Debug)]
struct Settings {
    path: String,
    format: BodyFormat,
    auth: Auth,
    idempotency_header: String,
    max_body: u64,
    max_buffer: u64,
    busy_status: StatusCode,
    retry_after: String,
    request_timeout: Duration,
    max_connections: usize,
}

/// A request's records on their way to the spool.
struct Pending {
    entry: Entry,
    reply: tokio::sync::oneshot::Sender<Result<Appended, String>>,
}

/// Stops the server.
#[derive(Debug)]
pub struct Shutdown(tokio::sync::watch::Sender<bool>);

impl Shutdown {
    /// Asks the server to stop; in-flight requests are cut off (their
    /// clients retry, and the idempotency key catches a request that was
    /// stored before the cut).
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// A server ready to run.
pub struct Server {
    listener: std::net::TcpListener,
    settings: Arc<Settings>,
    spool: Arc<Spool>,
    name: String,
    tls: Option<Arc<SslAcceptor>>,
    failure: Failure,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Server {
    /// A server for `config` on `listener` (https when `tls` is given).
    pub fn new(
        listener: std::net::TcpListener,
        config: &HttpSourceConfig,
        auth: Auth,
        tls: Option<SslAcceptor>,
        spool: Arc<Spool>,
        name: &str,
        failure: Failure,
    ) -> Result<(Server, Shutdown), ConnectorError> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let settings = Settings {
            path: config.path.clone(),
            format: config.format,
            auth,
            idempotency_header: config.idempotency_header.to_ascii_lowercase(),
            max_body: config.max_body,
            max_buffer: config.max_buffer,
            busy_status: StatusCode::from_u16(config.busy_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            retry_after: config.retry_after.as_secs().max(1).to_string(),
            request_timeout: config.request_timeout,
            max_connections: config.max_connections,
        };
        Ok((Server { listener, settings: Arc::new(settings), spool, name: name.to_owned(), tls: tls.map(Arc::new), failure, shutdown: rx }, Shutdown(tx)))
    }

    /// Serves until [`Shutdown::stop`].
    pub fn run(self) -> Result<(), ConnectorError> {
        let (tx, rx) = crossbeam_channel::bounded::<Pending>(4096);
        let writer = background::spawn(format!("http-{}-spool", self.name), Writer { spool: self.spool.clone(), rx, failure: self.failure.clone() })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("http-{}-io", self.name))
            .enable_all()
            .build()
            .map_err(|e| ConnectorError::external("cannot start the http source's runtime", e))?;
        let result = rt.block_on(serve(self.listener, self.settings, self.spool, tx, self.tls, self.shutdown));
        drop(rt);
        let _ = writer.join();
        result
    }
}

async fn serve(
    listener: std::net::TcpListener,
    settings: Arc<Settings>,
    spool: Arc<Spool>,
    tx: Sender<Pending>,
    tls: Option<Arc<SslAcceptor>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ConnectorError> {
    listener.set_nonblocking(true).map_err(|e| ConnectorError::external("cannot set up the listening socket", e))?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| ConnectorError::external("cannot set up the listening socket", e))?;
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return Ok(()),
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors, for example: wait, then go on.
                tracing::warn!("http source: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("http source: refusing a connection: max-connections ({}) are open", settings.max_connections);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (settings, spool, tx, tls) = (settings.clone(), spool.clone(), tx.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => connection(stream, settings, spool, tx).await,
                Some(acceptor) => match handshake(&acceptor, stream).await {
                    Ok(stream) => connection(stream, settings, spool, tx).await,
                    Err(e) => tracing::debug!("http source: a TLS handshake failed: {e}"),
                },
            }
            drop(slot);
        });
    }
}

/// The server side of a TLS handshake, within [`HANDSHAKE_TIMEOUT`].
async fn handshake(acceptor: &SslAcceptor, stream: tokio::net::TcpStream) -> Result<tokio_openssl::SslStream<tokio::net::TcpStream>, String> {
    let ssl = openssl::ssl::Ssl::new(acceptor.context()).map_err(|e| e.to_string())?;
    let mut stream = tokio_openssl::SslStream::new(ssl, stream).map_err(|e| e.to_string())?;
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, std::pin::Pin::new(&mut stream).accept()).await {
        Ok(Ok(())) => Ok(stream),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no handshake within {HANDSHAKE_TIMEOUT:?}")),
    }
}

/// Time for a client's TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the requests of one connection (plain or TLS).
async fn connection<S>(stream: S, settings: Arc<Settings>, spool: Arc<Spool>, tx: Sender<Pending>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (settings, spool, tx) = (settings.clone(), spool.clone(), tx.clone());
        async move { Ok::<_, Infallible>(handle(&settings, &spool, &tx, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(Duration::from_secs(30)).keep_alive(true);
    if let Err(e) = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await {
        tracing::debug!("http source connection ended: {e}");
    }
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    answer(status, serde_json::json!({ "error": message.into() }))
}

fn busy(settings: &Settings, message: &str) -> Response<Full<Bytes>> {
    with_retry_after(settings, error(settings.busy_status, message))
}

fn with_retry_after(settings: &Settings, mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    if let Ok(v) = HeaderValue::from_str(&settings.retry_after) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

async fn handle(settings: &Settings, spool: &Spool, tx: &Sender<Pending>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != settings.path {
        return error(StatusCode::NOT_FOUND, format!("records are posted to {}", settings.path));
    }
    if req.method() == Method::GET {
        // A load balancer's health check: ready unless the buffer is full.
        let buffered = spool.buffered();
        let ready = buffered + settings.max_body <= settings.max_buffer;
        let body = serde_json::json!({ "ready": ready, "buffered_bytes": buffered, "max_buffer": settings.max_buffer });
        return if ready { answer(StatusCode::OK, body) } else { with_retry_after(settings, answer(settings.busy_status, body)) };
    }
    if req.method() != Method::POST {
        let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "records are sent with POST (GET answers whether the source is ready)");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
        return r;
    }
    if let Auth::Bearer(token) = &settings.auth {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if !given.is_some_and(|g| g.len() == token.len() && openssl::memcmp::eq(g, token.as_bytes())) {
            let mut r = error(StatusCode::UNAUTHORIZED, "send the source's token as `Authorization: Bearer TOKEN`");
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    let format = match settings.format {
        BodyFormat::Auto => {
            let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
            let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            match mime.as_str() {
                "application/json" => BodyFormat::Json,
                "application/x-ndjson" | "application/jsonl" | "application/x-jsonlines" | "application/jsonlines" => BodyFormat::Ndjson,
                _ => {
                    return error(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        format!("Content-Type {ct:?} is not one this source reads: send application/json or application/x-ndjson"),
                    );
                }
            }
        }
        f => f,
    };
    let key = match req.headers().get(settings.idempotency_header.as_str()) {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= 255 => Some(k.to_owned()),
            _ => return error(StatusCode::BAD_REQUEST, format!("the {} header must be 1 to 255 visible ASCII characters", settings.idempotency_header)),
        },
    };
    let length = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|l| l > settings.max_body) {
        return error(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than this source's max-body ({} bytes)", settings.max_body));
    }
    // Refuse early, before reading the body, when the spool is full.
    if spool.buffered() + length.unwrap_or(0) > settings.max_buffer {
        return busy(settings, "weir is behind: its buffer is full; retry later");
    }
    let signature = match &settings.auth {
        Auth::Hmac { header, .. } => Some(req.headers().get(header.as_str()).map(|v| v.as_bytes().to_vec())),
        _ => None,
    };
    let body = match tokio::time::timeout(settings.request_timeout, Limited::new(req.into_body(), settings.max_body as usize).collect()).await {
        Err(_) => return error(StatusCode::REQUEST_TIMEOUT, "the body did not arrive within request-timeout"),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than this source's max-body ({} bytes)", settings.max_body));
        }
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("the body could not be read: {e}")),
        Ok(Ok(b)) => b.to_bytes(),
    };
    if let (Auth::Hmac { secret, header }, Some(given)) = (&settings.auth, signature)
        && !signature_ok(secret, &body, given.as_deref())
    {
        return error(StatusCode::UNAUTHORIZED, format!("the {header} header must hold the HMAC-SHA256 of the body with the source's secret, as hex"));
    }
    let received = weir_connector::now_micros();
    let mut records = BatchWriter::with_capacity(body.len() + body.len() / 4 + 64);
    let count = match parse(&body, format, received, &mut records) {
        Ok(0) => return answer(StatusCode::OK, serde_json::json!({ "accepted": 0 })),
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("nothing was accepted: {e}")),
    };
    let (reply, answered) = tokio::sync::oneshot::channel();
    let entry = Entry { received_ms: received / 1000, key, records: count, frames: records.finish() };
    match tx.try_send(Pending { entry, reply }) {
        Ok(()) => {}
        Err(crossbeam_channel::TrySendError::Full(_)) => return busy(settings, "weir is behind: too many requests wait for the disk; retry later"),
        Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "the source cannot store requests (its spool writer stopped; see weir's log); retry later");
        }
    }
    match answered.await {
        Ok(Ok(Appended::Accepted)) => answer(StatusCode::ACCEPTED, serde_json::json!({ "accepted": count })),
        Ok(Ok(Appended::Duplicate)) => answer(StatusCode::OK, serde_json::json!({ "accepted": 0, "duplicate": true })),
        Ok(Ok(Appended::Full)) => busy(settings, "weir is behind: its buffer is full; retry later"),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, format!("weir could not store the records, nothing was kept: {e}")),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the source is stopping; retry later"),
    }
}

/// The TLS side of the server from a PEM certificate chain and its key;
/// errors name the file at fault.
pub fn acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<SslAcceptor, String> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(|e| format!("cannot set up OpenSSL: {e}"))?;
    b.set_certificate_chain_file(cert).map_err(|e| format!("tls-cert-file: cannot read a PEM certificate chain from {}: {e}", cert.display()))?;
    b.set_private_key_file(key, SslFiletype::PEM).map_err(|e| format!("tls-key-file: cannot read a PEM private key from {}: {e}", key.display()))?;
    b.check_private_key().map_err(|e| format!("tls-key-file: {} is not the key of the certificate in {}: {e}", key.display(), cert.display()))?;
    Ok(b.build())
}

/// Whether `given` is the hex HMAC-SHA256 of `body` (with or without `sha256=`).
fn signature_ok(secret: &[u8], body: &[u8], given: Option<&[u8]>) -> bool {
    let Some(given) = given else { return false };
    let given = given.strip_prefix(b"sha256=").unwrap_or(given);
    let Ok(key) = openssl::pkey::PKey::hmac(secret) else { return false };
    let Ok(mut signer) = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key) else { return false };
    let Ok(mac) = signer.sign_oneshot_to_vec(body) else { return false };
    let hex: Vec<u8> = mac.iter().flat_map(|b| [b"0123456789abcdef"[(b >> 4) as usize], b"0123456789abcdef"[(b & 15) as usize]]).collect();
    let given = given.to_ascii_lowercase();
    given.len() == hex.len() && openssl::memcmp::eq(&given, &hex)
}

/// Puts the records of `body` into `out` (each value verbatim, stamped
/// with the time it was received); how many, or what is wrong and where.
pub fn parse(body: &[u8], format: BodyFormat, received_us: u64, out: &mut BatchWriter) -> Result<u32, String> {
    let ts = (received_us / 1000) as i64;
    let stamp = received_us.to_le_bytes();
    let headers: [(&[u8], &[u8]); 1] = [(EMITTED_AT_HEADER, &stamp)];
    let mut count = 0u32;
    let mut push = |value: &[u8], count: &mut u32| {
        out.push(None, value, ts, &headers);
        *count += 1;
    };
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    match format {
        BodyFormat::Ndjson => {
            for (n, line) in body.split(|b| *b == b'\n').enumerate() {
                let start = line.iter().position(|b| !ws(b));
                if let Some(start) = start {
                    match json_scan::scan_value(line, start) {
                        Ok((_, end)) if line[end..].iter().all(ws) => push(&line[start..end], &mut count),
                        Ok((_, end)) => return Err(format!("line {}: more after the JSON value, at byte {end} of the line", n + 1)),
                        Err(e) => return Err(format!("line {}: {} at byte {} of the line", n + 1, e.reason, e.offset)),
                    }
                }
            }
        }
        BodyFormat::Json | BodyFormat::Auto => {
            let skip = |mut i: usize| {
                while i < body.len() && ws(&body[i]) {
                    i += 1;
                }
                i
            };
            let start = skip(0);
            if start == body.len() {
                return Err("the body is empty; send a JSON value or an array of them".into());
            }
            if body[start] == b'[' {
                let mut i = skip(start + 1);
                if body.get(i) == Some(&b']') {
                    i += 1;
                } else {
                    loop {
                        let (_, end) = json_scan::scan_value(body, i).map_err(|e| format!("record {}: {e}", count + 1))?;
                        push(&body[i..end], &mut count);
                        i = skip(end);
                        match body.get(i) {
                            Some(b',') => i = skip(i + 1),
                            Some(b']') => {
                                i += 1;
                                break;
                            }
                            _ => return Err(format!("expected `,` or `]` after record {count} at byte {i}")),
                        }
                    }
                }
                if skip(i) != body.len() {
                    return Err(format!("more after the array, at byte {}", skip(i)));
                }
            } else {
                let (_, end) = json_scan::scan_value(body, start).map_err(|e| e.to_string())?;
                if skip(end) != body.len() {
                    return Err(format!("more after the JSON value, at byte {}", skip(end)));
                }
                push(&body[start..end], &mut count);
            }
        }
    }
    Ok(count)
}

/// The spool's writer thread: appends whatever requests are waiting as
/// one group with one fsync, and answers them.
struct Writer {
    spool: Arc<Spool>,
    rx: Receiver<Pending>,
    failure: Failure,
}

/// Most requests in one group.
const GROUP: usize = 1024;

impl Background for Writer {
    fn run(&mut self) -> Result<(), ConnectorError> {
        let mut group: Vec<Pending> = Vec::with_capacity(GROUP);
        loop {
            match self.rx.recv_timeout(Duration::from_secs(1)) {
                Ok(p) => group.push(p),
                Err(RecvTimeoutError::Timeout) => {
                    self.spool.trim_now(weir_connector::now_micros() / 1000)?;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            group.extend(self.rx.try_iter().take(GROUP - 1));
            let entries: Vec<Entry> = group.iter_mut().map(|p| std::mem::replace(&mut p.entry, Entry { received_ms: 0, key: None, records: 0, frames: Vec::new() })).collect();
            match self.spool.append(&entries) {
                Ok(outcome) => {
                    for (p, o) in group.drain(..).zip(outcome) {
                        let _ = p.reply.send(Ok(o));
                    }
                }
                Err(e) => {
                    tracing::error!("http source: {}", e.message);
                    for p in group.drain(..) {
                        let _ = p.reply.send(Err(e.message.clone()));
                    }
                    if !e.is_retryable() {
                        return Err(e);
                    }
                }
            }
        }
    }

    fn died(&mut self, error: ConnectorError) {
        self.failure.set(error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(body: &str, format: BodyFormat) -> Result<Vec<String>, String> {
        let mut w = BatchWriter::new();
        parse(body.as_bytes(), format, 1_000_000, &mut w)?;
        let bytes = w.finish();
        Ok(weir_connector::Frames::new(&bytes).map(|r| String::from_utf8(r.unwrap().value.to_vec()).unwrap()).collect())
    }

    #[test]
    fn bodies_become_records_or_a_message_naming_the_record() {
        assert_eq!(values(r#" [ {"a":1} , 2,"x" ] "#, BodyFormat::Json).unwrap(), [r#"{"a":1}"#, "2", r#""x""#]);
        assert_eq!(values(r#"{"a":[1,2]}"#, BodyFormat::Json).unwrap(), [r#"{"a":[1,2]}"#]);
        assert_eq!(values("[]", BodyFormat::Json).unwrap(), Vec::<String>::new());
        assert_eq!(values("{\"a\":1}\r\n\n  [2]\n", BodyFormat::Ndjson).unwrap(), [r#"{"a":1}"#, "[2]"]);
        assert_eq!(values(r#"[{"a":1},{"a":}]"#, BodyFormat::Json).unwrap_err(), "record 2: expected a value (an object, array, string, number, true, false or null) at byte 14");
        assert!(values("{\"a\":1}\n{\"a\" 2}\n", BodyFormat::Ndjson).unwrap_err().starts_with("line 2: "));
        assert_eq!(values("[1] 2", BodyFormat::Json).unwrap_err(), "more after the array, at byte 4");
        assert_eq!(values("  ", BodyFormat::Json).unwrap_err(), "the body is empty; send a JSON value or an array of them");
    }

    #[test]
    fn signatures_are_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let mac = b"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert!(signature_ok(b"Jefe", b"what do ya want for nothing?", Some(mac)));
        assert!(signature_ok(b"Jefe", b"what do ya want for nothing?", Some(&[b"sha256=".as_slice(), mac].concat())));
        assert!(!signature_ok(b"Jefe", b"what do ya want for nothing!", Some(mac)));
        assert!(!signature_ok(b"Jefe", b"x", None));
    }
}
