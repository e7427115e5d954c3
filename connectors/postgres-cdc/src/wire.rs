//! The part of PostgreSQL's frontend/backend protocol the CDC source needs:
//! start-up with password, MD5 or SCRAM-SHA-256 authentication, simple
//! queries returning text rows, and the CopyBoth stream of a replication
//! connection (`replication=database`).
//!
//! tokio-postgres does not speak the replication sub-protocol, and the
//! source runs on a task thread that may block, so this is a small blocking
//! client over a TCP (optionally TLS, through OpenSSL) or Unix socket.
//! Messages are parsed in place from one read buffer: a message's body is
//! valid until the next read.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use bytes::BytesMut;
use openssl::ssl::{SslConnector, SslStream};
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;
use tokio_postgres::config::Host;

/// A failure talking to PostgreSQL.
#[derive(Debug)]
pub enum WireError {
    /// The connection broke or could not be made: retrying may help.
    Io(io::Error),
    /// The server answered with an error.
    Server {
        /// SQLSTATE.
        code: String,
        /// The server's message (and detail or hint, when it gave them).
        message: String,
    },
    /// The server sent something this client does not expect.
    Protocol(String),
    /// TLS could not be set up (no TLS on the server, a certificate that
    /// does not verify): the settings are the user's to fix.
    Tls(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::Server { code, message } => write!(f, "{message} (SQLSTATE {code})"),
            Self::Protocol(m) => write!(f, "protocol error: {m}"),
            Self::Tls(m) => write!(f, "tls: {m}"),
        }
    }
}

impl std::error::Error for WireError {}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl WireError {
    /// True when the server is (or went) away rather than refusing what was
    /// asked: a reconnect later may succeed. `57P01` (admin shutdown),
    /// `57P02` (crash shutdown), `57P03` (cannot connect now) and
    /// `08*` (connection exceptions) count as away.
    pub fn is_disconnect(&self) -> bool {
        match self {
            Self::Io(_) => true,
            Self::Server { code, .. } => code.starts_with("08") || code.starts_with("57P"),
            Self::Protocol(_) | Self::Tls(_) => false,
        }
    }

    /// The SQLSTATE of a server error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

enum Stream {
    Tcp(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
    Unix(UnixStream),
}

impl Stream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.set_read_timeout(t),
            Self::Tls(s) => s.get_ref().set_read_timeout(t),
            Self::Unix(s) => s.set_read_timeout(t),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
            Self::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
            Self::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.flush(),
            Self::Tls(s) => s.flush(),
            Self::Unix(s) => s.flush(),
        }
    }
}

/// How a TCP connection is encrypted: OpenSSL's connector, and whether the
/// server's certificate must name the host (`verify-full`).
#[derive(Clone)]
pub struct Tls {
    /// Set up with the trusted authorities and the verify mode.
    pub connector: SslConnector,
    /// Check the host name against the certificate.
    pub verify_hostname: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("verify_hostname", &self.verify_hostname).finish_non_exhaustive()
    }
}

/// PostgreSQL's SSLRequest: length 8, code 1234.5679.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Asks the server for TLS on a fresh TCP connection and makes the handshake.
fn start_tls(mut tcp: TcpStream, host: &str, tls: &Tls, timeout: Duration) -> Result<Stream, WireError> {
    tcp.set_read_timeout(Some(timeout))?;
    tcp.write_all(&SSL_REQUEST)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)?;
    if answer[0] != b'S' {
        return Err(WireError::Tls(format!("the server at {host} does not accept TLS connections (ssl = off); set tls = \"disable\" or turn ssl on")));
    }
    let config = tls
        .connector
        .configure()
        .map_err(|e| WireError::Tls(e.to_string()))?
        .verify_hostname(tls.verify_hostname);
    let stream = config.connect(host, tcp).map_err(|e| WireError::Tls(format!("the TLS handshake with {host} failed: {e}")))?;
    Ok(Stream::Tls(Box::new(stream)))
}

/// Largest message accepted from the server (a row or a replication
/// message carrying one): PostgreSQL's own limit on a field is 1 GB.
const MAX_MESSAGE: usize = 1 << 30;

/// One connection.
pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    pos: usize,
    out: BytesMut,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("buffered", &(self.buf.len() - self.pos)).finish_non_exhaustive()
    }
}

/// A message read: its type byte and where its body is in the read buffer.
#[derive(Debug, Clone, Copy)]
pub struct Msg {
    /// The message type (`b'D'`, `b'd'`, ...).
    pub tag: u8,
    start: usize,
    end: usize,
}

impl Conn {
    /// Connects and authenticates. `replication` opens a logical
    /// replication connection (`replication=database`), which also runs
    /// simple SQL queries.
    /// With `tls`, a TCP connection is encrypted (a Unix socket never is,
    /// as with libpq).
    pub fn connect(pg: &tokio_postgres::Config, password: Option<&str>, replication: bool, timeout: Duration, tls: Option<&Tls>) -> Result<Self, WireError> {
        let port = pg.get_ports().first().copied().unwrap_or(5432);
        let stream = match pg.get_hosts().first() {
            Some(Host::Unix(dir)) => Stream::Unix(UnixStream::connect(dir.join(format!(".s.PGSQL.{port}")))?),
            host => {
                let host = match host {
                    Some(Host::Tcp(h)) => h.as_str(),
                    _ => "localhost",
                };
                let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} resolves to no address"));
                let mut connected = None;
                for addr in std::net::ToSocketAddrs::to_socket_addrs(&(host, port))? {
                    match TcpStream::connect_timeout(&addr, timeout) {
                        Ok(s) => {
                            connected = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                let s = connected.ok_or(last)?;
                s.set_nodelay(true)?;
                match tls {
                    Some(tls) => start_tls(s, host, tls, timeout)?,
                    None => Stream::Tcp(s),
                }
            }
        };
        let mut conn = Conn { stream, buf: Vec::with_capacity(64 * 1024), pos: 0, out: BytesMut::new() };
        conn.stream.set_read_timeout(Some(timeout))?;
        let user = pg.get_user().unwrap_or("postgres");
        let mut params = vec![("user", user), ("client_encoding", "UTF8"), ("application_name", "weir-cdc")];
        if let Some(db) = pg.get_dbname() {
            params.push(("database", db));
        }
        if replication {
            params.push(("replication", "database"));
        }
        frontend::startup_message(params.iter().copied(), &mut conn.out)?;
        conn.send()?;
        conn.authenticate(user, password)?;
        conn.stream.set_read_timeout(None)?;
        Ok(conn)
    }

    fn authenticate(&mut self, user: &str, password: Option<&str>) -> Result<(), WireError> {
        let need_password = || WireError::Server {
            code: "28P01".into(),
            message: "the server asks for a password; set `password-env` or `password-file`".into(),
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            let m = self.read(None)?.ok_or_else(|| WireError::Protocol("no answer to the start-up message".into()))?;
            match m.tag {
                b'R' => {
                    let body = self.body(m);
                    let code = be_u32(body, 0)?;
                    match code {
                        0 => {}
                        3 => {
                            let p = password.ok_or_else(need_password)?;
                            frontend::password_message(p.as_bytes(), &mut self.out)?;
                            self.send()?;
                        }
                        5 => {
                            let p = password.ok_or_else(need_password)?;
                            let salt: [u8; 4] = body.get(4..8).and_then(|s| s.try_into().ok()).ok_or_else(|| WireError::Protocol("short MD5 salt".into()))?;
                            let hash = postgres_protocol::authentication::md5_hash(user.as_bytes(), p.as_bytes(), salt);
                            frontend::password_message(hash.as_bytes(), &mut self.out)?;
                            self.send()?;
                        }
                        10 => {
                            let p = password.ok_or_else(need_password)?;
                            let offers_scram = body[4..].split(|b| *b == 0).any(|m| m == SCRAM_SHA_256.as_bytes());
                            if !offers_scram {
                                return Err(WireError::Protocol("the server offers no SASL mechanism weir knows (SCRAM-SHA-256)".into()));
                            }
                            let s = ScramSha256::new(p.as_bytes(), ChannelBinding::unsupported());
                            frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut self.out)?;
                            self.send()?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().ok_or_else(|| WireError::Protocol("SASL continue without a start".into()))?;
                            s.update(&body[4..]).map_err(|e| WireError::Protocol(format!("SCRAM: {e}")))?;
                            frontend::sasl_response(s.message(), &mut self.out)?;
                            self.send()?;
                        }
                        12 => {
                            let s = scram.as_mut().ok_or_else(|| WireError::Protocol("SASL final without a start".into()))?;
                            s.finish(&body[4..]).map_err(|e| WireError::Protocol(format!("SCRAM: {e}")))?;
                        }
                        other => return Err(WireError::Protocol(format!("authentication method {other} is not supported (use password, md5 or scram-sha-256)"))),
                    }
                }
                b'E' => return Err(self.server_error(m)),
                b'Z' => return Ok(()),
                _ => {} // ParameterStatus, BackendKeyData, NoticeResponse
            }
        }
    }

    fn send(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    /// The body of a message just read.
    pub fn body(&self, m: Msg) -> &[u8] {
        &self.buf[m.start..m.end]
    }

    /// Reads the next message, waiting at most `wait` (`None`: as long as
    /// it takes). `Ok(None)` when none arrived in time.
    pub fn read(&mut self, wait: Option<Duration>) -> Result<Option<Msg>, WireError> {
        loop {
            if let Some(m) = self.parse()? {
                return Ok(Some(m));
            }
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            let have = self.buf.len();
            let want = (have + 64 * 1024).max(self.needed());
            self.buf.resize(want, 0);
            self.stream.set_read_timeout(wait.map(|w| w.max(Duration::from_millis(1))))?;
            let n = match self.stream.read(&mut self.buf[have..]) {
                Ok(0) => {
                    self.buf.truncate(have);
                    return Err(WireError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection")));
                }
                Ok(n) => n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) && wait.is_some() => {
                    self.buf.truncate(have);
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    self.buf.truncate(have);
                    return Err(e.into());
                }
            };
            self.buf.truncate(have + n);
        }
    }

    /// Bytes the message at `pos` needs in all, when its header is in.
    fn needed(&self) -> usize {
        let rest = &self.buf[self.pos..];
        if rest.len() < 5 {
            return 0;
        }
        u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize + 1
    }

    fn parse(&mut self) -> Result<Option<Msg>, WireError> {
        let rest = &self.buf[self.pos..];
        if rest.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if !(4..=MAX_MESSAGE).contains(&len) {
            return Err(WireError::Protocol(format!("message length {len} out of range")));
        }
        if rest.len() < len + 1 {
            return Ok(None);
        }
        let m = Msg { tag: rest[0], start: self.pos + 5, end: self.pos + 1 + len };
        self.pos += 1 + len;
        Ok(Some(m))
    }

    fn server_error(&self, m: Msg) -> WireError {
        let (mut code, mut message, mut detail, mut hint) = (String::new(), String::new(), String::new(), String::new());
        for field in self.body(m).split(|b| *b == 0) {
            let Some((&kind, text)) = field.split_first() else { continue };
            let text = String::from_utf8_lossy(text).into_owned();
            match kind {
                b'C' => code = text,
                b'M' => message = text,
                b'D' => detail = text,
                b'H' => hint = text,
                _ => {}
            }
        }
        for extra in [detail, hint] {
            if !extra.is_empty() {
                message = format!("{message}; {extra}");
            }
        }
        WireError::Server { code, message }
    }

    /// Runs one simple query (or several separated by `;`) and returns the
    /// rows of its results as text, `None` for SQL NULL.
    pub fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, WireError> {
        let mut rows = Vec::new();
        self.query_each(sql, |row| {
            rows.push(row.iter().map(|c| c.map(|c| String::from_utf8_lossy(c).into_owned())).collect());
            Ok(())
        })?;
        Ok(rows)
    }

    /// Runs a simple query, handing each row's fields (text format) to `f`.
    pub fn query_each(&mut self, sql: &str, mut f: impl FnMut(&[Option<&[u8]>]) -> Result<(), WireError>) -> Result<(), WireError> {
        frontend::query(sql, &mut self.out)?;
        self.send()?;
        let mut failed = None;
        loop {
            let m = self.read(None)?.ok_or_else(|| WireError::Protocol("no answer".into()))?;
            match m.tag {
                b'D' if failed.is_none() => {
                    let body = &self.buf[m.start..m.end];
                    let n = be_u16(body, 0)? as usize;
                    let mut fields: Vec<Option<&[u8]>> = Vec::with_capacity(n);
                    let mut at = 2;
                    for _ in 0..n {
                        let len = be_u32(body, at)? as i32;
                        at += 4;
                        if len < 0 {
                            fields.push(None);
                        } else {
                            let end = at + len as usize;
                            fields.push(Some(body.get(at..end).ok_or_else(|| WireError::Protocol("short data row".into()))?));
                            at = end;
                        }
                    }
                    if let Err(e) = f(&fields) {
                        failed = Some(e);
                    }
                }
                b'E' => failed = Some(self.server_error(m)),
                b'Z' => break,
                _ => {} // RowDescription, CommandComplete, EmptyQueryResponse, notices
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Sends a command that answers with a CopyBoth stream
    /// (`START_REPLICATION`) and waits until the stream starts.
    pub fn start_copy_both(&mut self, sql: &str) -> Result<(), WireError> {
        frontend::query(sql, &mut self.out)?;
        self.send()?;
        loop {
            let m = self.read(None)?.ok_or_else(|| WireError::Protocol("no answer".into()))?;
            match m.tag {
                b'W' => return Ok(()),
                b'E' => {
                    let e = self.server_error(m);
                    // Wait for ReadyForQuery so the connection stays usable.
                    while self.read(None)?.is_some_and(|m| m.tag != b'Z') {}
                    return Err(e);
                }
                _ => {}
            }
        }
    }

    /// Sends one CopyData message.
    pub fn copy_data(&mut self, data: &[u8]) -> Result<(), WireError> {
        self.out.extend_from_slice(b"d");
        self.out.extend_from_slice(&((data.len() + 4) as u32).to_be_bytes());
        self.out.extend_from_slice(data);
        self.send()?;
        Ok(())
    }

    /// Turns an `E` message read from the stream into its error.
    pub fn error_of(&self, m: Msg) -> WireError {
        self.server_error(m)
    }

    /// Says goodbye (best effort).
    pub fn terminate(&mut self) {
        frontend::terminate(&mut self.out);
        let _best_effort = self.send();
    }
}

/// A big-endian `u32` at `at`, or a protocol error.
pub fn be_u32(b: &[u8], at: usize) -> Result<u32, WireError> {
    b.get(at..at + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]])).ok_or_else(|| WireError::Protocol("message too short".into()))
}

/// A big-endian `u16` at `at`, or a protocol error.
pub fn be_u16(b: &[u8], at: usize) -> Result<u16, WireError> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]])).ok_or_else(|| WireError::Protocol("message too short".into()))
}

/// A big-endian `u64` at `at`, or a protocol error.
pub fn be_u64(b: &[u8], at: usize) -> Result<u64, WireError> {
    b.get(at..at + 8).map(|s| u64::from_be_bytes(s.try_into().unwrap_or_default())).ok_or_else(|| WireError::Protocol("message too short".into()))
}

/// An LSN as PostgreSQL writes it: `16/B374D848`.
pub fn fmt_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn as u32)
}

/// Parses `16/B374D848`.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Quotes an SQL identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes an SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_round_trip() {
        assert_eq!(fmt_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("nope"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
