//! A small blocking HTTP/1.1 client for the sink: one request at a time
//! on a kept-alive connection, `http://` or `https://` (OpenSSL), bodies
//! framed by `Content-Length` or chunked (or the end of the connection).
//!
//! The sink sends from its task thread and waits for each answer (that wait
//! is the pipeline's backpressure), so a blocking client over `std::net` is
//! all it needs; the async operators' client lives in another runtime.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use openssl::ssl::{SslConnector, SslStream};

/// Longest status or header line accepted.
const MAX_LINE: usize = 16 * 1024;
/// Bytes of a response body kept (for messages and dead letters); the rest
/// is read and dropped.
const MAX_KEPT_BODY: usize = 4 * 1024;

/// A parsed `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https://`.
    pub tls: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (80 or 443 when absent).
    pub port: u16,
    /// Path and query, from `/`.
    pub path: String,
}

/// Splits `http[s]://host[:port][/path]`; the error says what is wrong.
pub fn parse_url(url: &str) -> Result<Target, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(format!("{url:?} is not an http:// or https:// URL"));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    if authority.contains('@') {
        return Err(format!("{url:?} holds credentials; use `bearer-token-env` or a header instead"));
    }
    if path.contains(['\r', '\n', ' ']) {
        return Err(format!("{url:?} has spaces or line breaks in its path; percent-encode them"));
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("{url:?}: port {p:?} is not a number from 1 to 65535"))?,
            None => default_port,
        };
        (host.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| format!("{url:?}: port {p:?} is not a number from 1 to 65535"))?),
            None => (authority.to_owned(), default_port),
        }
    };
    if host.is_empty() || port == 0 {
        return Err(format!("{url:?} names no host (or port 0)"));
    }
    Ok(Target { tls, host: host.to_ascii_lowercase(), port, path })
}

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// `Retry-After` in seconds, when given.
    pub retry_after: Option<Duration>,
    /// The start of the body (at most 4 KiB), for messages.
    pub body: Vec<u8>,
}

enum Stream {
    Tcp(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

/// One destination, with its kept-alive connection.
pub struct Client {
    target: Target,
    tls: Option<SslConnector>,
    timeout: Duration,
    conn: Option<BufReader<Stream>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("target", &self.target).field("connected", &self.conn.is_some()).finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `target`; `tls` is required for `https://`. Nothing is
    /// contacted until the first request.
    pub fn new(target: Target, tls: Option<SslConnector>, timeout: Duration) -> Self {
        Self { target, tls, timeout, conn: None }
    }

    fn connect(&self) -> io::Result<BufReader<Stream>> {
        let t = &self.target;
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{} resolves to no address", t.host));
        let mut tcp = None;
        for addr in (t.host.as_str(), t.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or(last)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(self.timeout))?;
        tcp.set_write_timeout(Some(self.timeout))?;
        let stream = match (&self.tls, t.tls) {
            (Some(connector), true) => {
                let tls = connector.connect(&t.host, tcp).map_err(|e| io::Error::other(format!("TLS handshake with {}: {e}", t.host)))?;
                Stream::Tls(Box::new(tls))
            }
            (None, true) => return Err(io::Error::other("https:// without a TLS connector")),
            (_, false) => Stream::Tcp(tcp),
        };
        Ok(BufReader::with_capacity(16 * 1024, stream))
    }

    /// Sends one request and reads the answer. A kept-alive connection the
    /// server closed in the meantime is replaced once, transparently.
    pub fn send(&mut self, method: &str, headers: &[(String, String)], body: &[u8]) -> io::Result<Response> {
        let reused = self.conn.is_some();
        match self.try_send(method, headers, body) {
            Err(e) if reused && is_stale(&e) => {
                self.conn = None;
                self.try_send(method, headers, body)
            }
            other => other,
        }
    }

    fn try_send(&mut self, method: &str, headers: &[(String, String)], body: &[u8]) -> io::Result<Response> {
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        let result = self.exchange(method, headers, body);
        if !matches!(result, Ok((_, true))) {
            self.conn = None;
        }
        result.map(|(r, _)| r)
    }

    /// The request and its answer; `true` when the connection may be reused.
    fn exchange(&mut self, method: &str, headers: &[(String, String)], body: &[u8]) -> io::Result<(Response, bool)> {
        let t = &self.target;
        let default_port = if t.tls { 443 } else { 80 };
        let host = match (t.host.contains(':'), t.port == default_port) {
            (true, true) => format!("[{}]", t.host),
            (true, false) => format!("[{}]:{}", t.host, t.port),
            (false, true) => t.host.clone(),
            (false, false) => format!("{}:{}", t.host, t.port),
        };
        let mut head = format!("{method} {} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n", t.path, body.len());
        for (name, value) in headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let conn = self.conn.as_mut().expect("connected by try_send");
        let stream = conn.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        stream.flush()?;
        read_response(conn, method == "HEAD")
    }
}

/// An error that a request on a connection the server had already closed
/// gives (nothing was answered): worth one immediate retry on a new one.
fn is_stale(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted)
}

fn line(r: &mut impl BufRead, buf: &mut String) -> io::Result<()> {
    buf.clear();
    let n = r.take(MAX_LINE as u64 + 1).read_line(buf)?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection without an answer"));
    }
    if n > MAX_LINE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "a line of the answer is longer than 16 KiB"));
    }
    while buf.ends_with(['\r', '\n']) {
        buf.pop();
    }
    Ok(())
}

/// Reads a status line, headers and body; `true` when the connection may
/// carry another request. Public for the fuzz target and tests.
pub fn read_response(r: &mut impl BufRead, head_only: bool) -> io::Result<(Response, bool)> {
    let mut buf = String::new();
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    // 1xx answers (100 Continue) come before the real one.
    let status = loop {
        line(r, &mut buf)?;
        let mut parts = buf.splitn(3, ' ');
        let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if !version.starts_with("HTTP/1.") {
            return Err(bad(format!("not an HTTP/1.x answer: {:?}", buf.chars().take(80).collect::<String>())));
        }
        let status: u16 = code.parse().ok().filter(|s| (100..=999).contains(s)).ok_or_else(|| bad(format!("bad status code {code:?}")))?;
        if status >= 200 || status == 101 {
            break status;
        }
        loop {
            line(r, &mut buf)?;
            if buf.is_empty() {
                break;
            }
        }
    };
    let (mut length, mut chunked, mut close, mut retry_after) = (None, false, false, None);
    loop {
        line(r, &mut buf)?;
        if buf.is_empty() {
            break;
        }
        let Some((name, value)) = buf.split_once(':') else { return Err(bad(format!("bad header line {buf:?}"))) };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = Some(value.parse::<u64>().map_err(|_| bad(format!("bad Content-Length {value:?}")))?),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().split(',').any(|c| c.trim() == "chunked"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "retry-after" => retry_after = value.parse::<u64>().ok().map(|s| Duration::from_secs(s.min(3600))),
            _ => {}
        }
    }
    let mut body = Vec::new();
    let mut keep = |chunk: &[u8]| {
        let room = MAX_KEPT_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    };
    let no_body = head_only || status == 204 || status == 304;
    let reusable = if no_body {
        !close
    } else if chunked {
        loop {
            line(r, &mut buf)?;
            let size = buf.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16).map_err(|_| bad(format!("bad chunk size {size:?}")))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    line(r, &mut buf)?;
                    if buf.is_empty() {
                        break;
                    }
                }
                break;
            }
            copy_body(r, size, &mut keep)?;
            line(r, &mut buf)?;
        }
        !close
    } else if let Some(n) = length {
        copy_body(r, n, &mut keep)?;
        !close
    } else {
        // Until the server closes the connection.
        let mut chunk = [0u8; 8192];
        loop {
            let n = r.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            keep(&chunk[..n]);
        }
        false
    };
    Ok((Response { status, retry_after, body }, reusable))
}

fn copy_body(r: &mut impl Read, mut n: u64, keep: &mut impl FnMut(&[u8])) -> io::Result<()> {
    let mut chunk = [0u8; 8192];
    while n > 0 {
        let want = chunk.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        let got = r.read(&mut chunk[..want])?;
        if got == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection inside the body"));
        }
        keep(&chunk[..got]);
        n -= got as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(parse_url("http://Example.com:8080/hook?x=1").unwrap(), Target { tls: false, host: "example.com".into(), port: 8080, path: "/hook?x=1".into() });
        assert_eq!(parse_url("https://[::1]/").unwrap(), Target { tls: true, host: "::1".into(), port: 443, path: "/".into() });
        assert_eq!(parse_url("http://h?q").unwrap().path, "/?q");
        for bad in ["ftp://h", "http://", "http://u:p@h/", "http://h:x/", "http://h/a b"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses() {
        let parse = |s: &str| read_response(&mut s.as_bytes(), false);
        let (r, keep) = parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!((r.status, r.body.as_slice(), keep), (200, &b"ok"[..], true));
        let (r, keep) = parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\nRetry-After: 3\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1;x=y\r\nc\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.retry_after, r.body.as_slice(), keep), (503, Some(Duration::from_secs(3)), &b"abc"[..], false));
        let (r, keep) = parse("HTTP/1.0 400 Bad\r\n\r\nuntil the end").unwrap();
        assert_eq!((r.status, r.body.as_slice(), keep), (400, &b"until the end"[..], false));
        for bad in ["", "SMTP 200\r\n\r\n", "HTTP/1.1 2000 x\r\n\r\n", "HTTP/1.1 200\r\nContent-Length: 9\r\n\r\nshort", "HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
