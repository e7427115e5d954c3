//! A small HTTP/1.1 client over tokio's `TcpStream`, with keep-alive.
//!
//! Why not hyper: the workspace has no HTTP client, and what async
//! operators need is narrow (plain `http://`, one request at a time per
//! connection, `Content-Length` or chunked bodies). About 200 lines on top
//! of tokio, which weir already uses, cost less to build and audit than
//! hyper + hyper-util + http-body and their feature plumbing. TLS
//! (`https://`) is not supported: put a local proxy in front of such a
//! service.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use weir_wasm::HttpResponse;

/// Idle connections kept per `host:port`.
const MAX_IDLE_PER_HOST: usize = 256;
/// Longest status line or header line accepted.
const MAX_LINE: usize = 16 * 1024;

type Conn = BufReader<TcpStream>;

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Lower-cased host name or address.
    pub host: String,
    /// Port (80 when absent).
    pub port: u16,
    /// Path and query, from `/`.
    pub path: String,
}

/// Splits `http://host[:port][/path]`.
pub fn parse_url(url: &str) -> Result<Target, String> {
    let rest = if let Some(r) = url.strip_prefix("http://") {
        r
    } else if url.starts_with("https://") {
        return Err(format!("{url}: https is not supported by weir's HTTP import (plain http:// only); reach TLS services through a local proxy"));
    } else {
        return Err(format!("{url}: not an http:// URL"));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    if authority.contains('@') {
        return Err(format!("{url}: credentials in the URL are not supported; send an Authorization header"));
    }
    let (host, port) = crate::config::parse_host_port(authority).map_err(|e| format!("{url}: {e}"))?;
    Ok(Target { host, port, path })
}

/// The client: a pool of idle keep-alive connections per `host:port`.
#[derive(Debug, Default)]
pub struct HttpClient {
    idle: Mutex<HashMap<(String, u16), Vec<Conn>>>,
}

impl HttpClient {
    /// One request; `max_body` caps the response body.
    pub async fn request(&self, method: &str, target: &Target, headers: &[(String, String)], body: &[u8], max_body: usize) -> Result<HttpResponse, String> {
        let key = (target.host.clone(), target.port);
        let mut head = format!("{method} {} HTTP/1.1\r\nHost: {}:{}\r\n", target.path, target.host, target.port);
        for (n, v) in headers {
            if n.eq_ignore_ascii_case("host") || n.eq_ignore_ascii_case("content-length") || n.contains(['\r', '\n']) || v.contains(['\r', '\n']) {
                continue;
            }
            head.push_str(n);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        // A pooled connection may have been closed by the server meanwhile:
        // if it fails before any byte of a response, try a fresh one.
        let pooled = self.idle.lock().expect("pool lock").get_mut(&key).and_then(Vec::pop);
        if let Some(mut conn) = pooled {
            match exchange(&mut conn, head.as_bytes(), body, method, max_body).await {
                Ok((resp, reusable)) => {
                    self.put_back(key, conn, reusable);
                    return Ok(resp);
                }
                Err(Failure::BeforeResponse(_)) => {}
                Err(Failure::Other(e)) => return Err(format!("http://{}:{}: {e}", target.host, target.port)),
            }
        }
        let stream = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("cannot connect to {}:{}: {e}", target.host, target.port))?;
        let _ = stream.set_nodelay(true);
        let mut conn = BufReader::new(stream);
        match exchange(&mut conn, head.as_bytes(), body, method, max_body).await {
            Ok((resp, reusable)) => {
                self.put_back(key, conn, reusable);
                Ok(resp)
            }
            Err(Failure::BeforeResponse(e) | Failure::Other(e)) => Err(format!("http://{}:{}: {e}", target.host, target.port)),
        }
    }

    fn put_back(&self, key: (String, u16), conn: Conn, reusable: bool) {
        if !reusable {
            return;
        }
        let mut idle = self.idle.lock().expect("pool lock");
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_HOST {
            list.push(conn);
        }
    }
}

enum Failure {
    /// Nothing of a response arrived: safe to retry on a fresh connection.
    BeforeResponse(String),
    Other(String),
}

async fn read_line(conn: &mut (impl AsyncBufRead + Unpin), line: &mut String) -> std::io::Result<usize> {
    line.clear();
    let n = (&mut *conn).take(MAX_LINE as u64).read_line(line).await?;
    if n == MAX_LINE && !line.ends_with('\n') {
        return Err(std::io::Error::other("response line too long"));
    }
    Ok(n)
}

/// Writes the request, reads the response; also says whether the
/// connection can be reused.
async fn exchange(conn: &mut Conn, head: &[u8], body: &[u8], method: &str, max_body: usize) -> Result<(HttpResponse, bool), Failure> {
    let w = conn.get_mut();
    let sent = async {
        w.write_all(head).await?;
        if !body.is_empty() {
            w.write_all(body).await?;
        }
        w.flush().await
    };
    sent.await.map_err(|e| Failure::BeforeResponse(format!("sending the request: {e}")))?;
    read_response(conn, method, max_body).await
}

/// Reads one response to a `method` request from `conn`, whatever sent
/// it: the status line, at most 256 headers of at most [`MAX_LINE`] bytes
/// each, and a body (`Content-Length`, chunked, or up to the end) of at
/// most `max_body` bytes, checked before it is allocated. Also says
/// whether the connection can be reused. Every malformed or oversized
/// response is an error, never a panic.
pub async fn parse_response(conn: &mut (impl AsyncBufRead + Unpin), method: &str, max_body: usize) -> Result<(HttpResponse, bool), String> {
    read_response(conn, method, max_body).await.map_err(|(Failure::BeforeResponse(e) | Failure::Other(e))| e)
}

async fn read_response(conn: &mut (impl AsyncBufRead + Unpin), method: &str, max_body: usize) -> Result<(HttpResponse, bool), Failure> {
    let mut line = String::new();
    let n = read_line(conn, &mut line).await.map_err(|e| Failure::BeforeResponse(format!("reading the response: {e}")))?;
    if n == 0 {
        return Err(Failure::BeforeResponse("the server closed the connection without a response".into()));
    }
    let other = |m: String| Failure::Other(m);
    let mut parts = line.trim_end().splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| other(format!("malformed status line {:?}", line.trim_end())))?;
    if !version.starts_with("HTTP/1.") {
        return Err(other(format!("not an HTTP/1.x response: {:?}", line.trim_end())));
    }
    let mut headers = Vec::new();
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut close = version == "HTTP/1.0";
    loop {
        read_line(conn, &mut line).await.map_err(|e| other(format!("reading headers: {e}")))?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let Some((name, value)) = l.split_once(':') else { return Err(other(format!("malformed header line {l:?}"))) };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().to_owned();
        match name.as_str() {
            "content-length" => length = Some(value.parse().map_err(|_| other(format!("bad content-length {value:?}")))?),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => close |= value.eq_ignore_ascii_case("close"),
            _ => {}
        }
        headers.push((name, value));
        if headers.len() > 256 {
            return Err(other("more than 256 response headers".into()));
        }
    }
    let too_big = |n: usize| other(format!("the response body ({n} bytes or more) is larger than async.max-response ({max_body} bytes)"));
    let no_body = method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304 || (100..200).contains(&status);
    let mut out = Vec::new();
    if no_body {
    } else if chunked {
        out = read_chunked(conn, max_body).await.map_err(other)?;
    } else if let Some(n) = length {
        if n > max_body {
            return Err(too_big(n));
        }
        // Grown as bytes arrive, not sized by the header: a server that
        // announces a large body and sends nothing costs nothing.
        (&mut *conn).take(n as u64).read_to_end(&mut out).await.map_err(|e| other(format!("reading the body: {e}")))?;
        if out.len() < n {
            return Err(other(format!("reading the body: the connection closed after {} of {n} bytes", out.len())));
        }
    } else {
        // Saturating: `max-response` may be as large as a usize holds.
        (&mut *conn).take((max_body as u64).saturating_add(1)).read_to_end(&mut out).await.map_err(|e| other(format!("reading the body: {e}")))?;
        if out.len() > max_body {
            return Err(too_big(out.len()));
        }
        close = true;
    }
    Ok((HttpResponse { status, headers, body: out }, !close))
}

/// The size of the next chunk from its size line (hex digits, maybe
/// `;extensions`), checked against what the body may still take: the body
/// so far is `so_far` bytes of at most `max_body`. A size that does not fit
/// in a `usize` or would take the body past `max_body` is an error, before
/// anything is allocated.
fn chunk_size(line: &str, so_far: usize, max_body: usize) -> Result<usize, String> {
    let text = line.trim_end().split(';').next().unwrap_or("").trim();
    let shown = || text.chars().take(32).collect::<String>();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("bad chunk size {:?}", shown()));
    }
    let size = usize::from_str_radix(text, 16).map_err(|_| format!("chunk size {:?} is too large", shown()))?;
    match so_far.checked_add(size) {
        Some(total) if total <= max_body => Ok(size),
        _ => Err(format!(
            "the response body ({} bytes or more) is larger than async.max-response ({max_body} bytes)",
            so_far.saturating_add(size)
        )),
    }
}

/// Reads a chunked body (RFC 9112 section 7.1) of at most `max_body` bytes.
async fn read_chunked(conn: &mut (impl AsyncBufRead + Unpin), max_body: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut line = String::new();
    loop {
        read_line(conn, &mut line).await.map_err(|e| format!("reading a chunk: {e}"))?;
        let size = chunk_size(&line, out.len(), max_body)?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let n = read_line(conn, &mut line).await.map_err(|e| format!("reading trailers: {e}"))?;
                if n == 0 {
                    return Err("the connection closed in the trailers of a chunked body".into());
                }
                if line.trim_end().is_empty() {
                    break;
                }
            }
            return Ok(out);
        }
        // Grown as bytes arrive, not sized by the size line (within
        // max_body, checked by chunk_size, which may be very large).
        let start = out.len();
        (&mut *conn).take(size as u64).read_to_end(&mut out).await.map_err(|e| format!("reading a chunk: {e}"))?;
        if out.len() - start < size {
            return Err(format!("reading a chunk: the connection closed after {} of its {size} bytes", out.len() - start));
        }
        let mut end = [0u8; 2];
        conn.read_exact(&mut end).await.map_err(|e| format!("reading a chunk: {e}"))?;
        if &end != b"\r\n" {
            return Err("a chunk does not end with CRLF".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(parse_url("http://Host:81/a?b").unwrap(), Target { host: "host".into(), port: 81, path: "/a?b".into() });
        assert_eq!(parse_url("http://h").unwrap(), Target { host: "h".into(), port: 80, path: "/".into() });
        assert_eq!(parse_url("http://h?x=1").unwrap().path, "/?x=1");
        assert!(parse_url("https://h/").unwrap_err().contains("plain http://"));
        assert!(parse_url("ftp://h/").is_err());
    }

    fn chunked(body: &[u8], max_body: usize) -> Result<Vec<u8>, String> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(read_chunked(&mut &body[..], max_body))
    }

    fn response(bytes: &[u8], max_body: usize) -> Result<(HttpResponse, bool), String> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(parse_response(&mut &bytes[..], "GET", max_body))
    }

    /// Issue 16, found writing the http_response fuzz target (the input is
    /// `fuzz/corpus/http_response/no-length-no-limit`): with
    /// `max-response` at the largest size a usize holds, `max_body + 1`
    /// overflowed (a panic in the slot; in a release build, 0, so every
    /// body was read as empty).
    #[test]
    fn a_body_without_length_under_the_largest_limit() {
        let (resp, reusable) = response(b"HTTP/1.1 200 OK\r\n\r\nall of it", usize::MAX).unwrap();
        assert_eq!((resp.body.as_slice(), reusable), (&b"all of it"[..], false));
    }

    /// Issue 16, found writing the http_response fuzz target
    /// (`fuzz/corpus/http_response/length-larger-than-sent`): a
    /// `Content-Length` body was allocated at the announced size before a
    /// byte of it arrived; now it grows as bytes arrive, and a short body
    /// is an error.
    #[test]
    fn a_content_length_body_is_not_allocated_before_it_arrives() {
        let e = response(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\nabc", usize::MAX).unwrap_err();
        assert!(e.contains("after 3 of 1000000000 bytes"), "{e}");
        let (resp, reusable) = response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef", 3).unwrap();
        assert_eq!((resp.body.as_slice(), reusable), (&b"abc"[..], true));
        assert!(response(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd", 3).unwrap_err().contains("larger than async.max-response"));
    }

    /// Issue 16, found by the http_response fuzz target
    /// (`fuzz/corpus/http_response/chunk-larger-than-sent`): a chunk was
    /// allocated at the size its size line announced before a byte of it
    /// arrived (under a large `max-response`, an allocation failure that
    /// aborted the process); now it grows as bytes arrive.
    #[test]
    fn a_chunk_is_not_allocated_before_it_arrives() {
        let e = chunked(b"ab000000000001\r\nabc", usize::MAX).unwrap_err();
        assert!(e.contains("after 3 of its 48132221017522177 bytes"), "{e}");
    }

    #[test]
    fn chunked_bodies_are_read() {
        assert_eq!(chunked(b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer: x\r\n\r\n", 10).unwrap(), b"abcde");
        assert_eq!(chunked(b"5\r\nabcde\r\n0\r\n\r\n", 5).unwrap(), b"abcde");
    }

    /// Issue 16: a chunk size near `usize::MAX` overflowed `out.len() + size`
    /// and panicked the slot, which then never answered for its record.
    #[test]
    fn hostile_chunk_sizes_are_errors_not_panics() {
        let max = 1 << 20;
        for size in ["ffffffffffffffff", "fffffffffffffffe", "10000000000000000", "ffffffffffffffffffffffff", "7fffffffffffffff"] {
            let body = format!("1\r\na\r\n{size}\r\n");
            let e = chunked(body.as_bytes(), max).unwrap_err();
            assert!(e.contains("too large") || e.contains("async.max-response"), "{size}: {e}");
        }
        // One byte over the limit, across chunks.
        let e = chunked(b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n", 5).unwrap_err();
        assert!(e.contains("6 bytes or more") && e.contains("(5 bytes)"), "{e}");
        for bad in ["", "-1", "+5", "0x10", "1 2", "g"] {
            let body = format!("{bad}\r\n");
            assert!(chunked(body.as_bytes(), max).unwrap_err().starts_with("bad chunk size"), "{bad:?}");
        }
        // A chunk not followed by CRLF, and a body cut short.
        assert!(chunked(b"2\r\nabcd\r\n", max).unwrap_err().contains("CRLF"));
        assert!(chunked(b"5\r\nab", max).unwrap_err().contains("reading a chunk"));
        assert!(chunked(b"0\r\nX: y\r\n", max).unwrap_err().contains("trailers"));
    }
}
