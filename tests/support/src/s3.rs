//! A throwaway S3-compatible server for tests and benchmarks: `moto` in
//! server mode (`moto_server`, installed from PyPI by `tests/run`) on a free
//! port, with its state in memory, stopped on drop. Requests to it need no
//! valid signature (only an `Authorization` header), so [`Moto`] talks to it with a few lines of HTTP/1.0 over
//! std's TCP: create a bucket, list keys, read an object.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `moto_server`.
#[derive(Debug)]
pub struct Moto {
    child: Option<Child>,
    port: u16,
}

/// True when `moto_server` can be started here.
pub fn available() -> bool {
    Command::new("moto_server").arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

impl Moto {
    /// Starts a server on a free port and waits until it answers.
    pub fn start() -> Self {
        let mut moto = Self { child: None, port: crate::free_port() };
        moto.spawn();
        moto
    }

    fn spawn(&mut self) {
        assert!(available(), "moto_server is not installed; run tests/run, which installs it (pip install 'moto[server]')");
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        self.child = Some(child);
        let up = crate::wait_until(Duration::from_secs(30), || self.try_request("GET", "/", b"").is_ok());
        assert!(up, "moto_server did not answer on port {} within 30 s", self.port);
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Freezes the server (SIGSTOP): connections are accepted by the kernel
    /// but nothing is answered, as with a hung server.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused server go on (SIGCONT), its state intact.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill").args([&format!("-{sig}"), &pid]).status().is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {pid}");
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = self.request("PUT", &format!("/{bucket}"), b"");
        assert!(status == 200, "creating bucket {bucket}: {status} {}", String::from_utf8_lossy(&body));
    }

    /// Every key in `bucket` that starts with `prefix`, sorted.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/{bucket}?list-type=2&max-keys=1000&prefix={}", encode(prefix));
            if let Some(t) = &token {
                path.push_str(&format!("&continuation-token={}", encode(t)));
            }
            let (status, body) = self.request("GET", &path, b"");
            let body = String::from_utf8_lossy(&body).into_owned();
            assert_eq!(status, 200, "listing {bucket}: {body}");
            keys.extend(between_all(&body, "<Key>", "</Key>").into_iter().map(unescape));
            token = between_all(&body, "<NextContinuationToken>", "</NextContinuationToken>").into_iter().next();
            if !body.contains("<IsTruncated>true</IsTruncated>") || token.is_none() {
                break;
            }
        }
        keys.sort();
        keys
    }

    /// An object's bytes.
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let (status, body) = self.request("GET", &format!("/{bucket}/{}", encode_path(key)), b"");
        assert_eq!(status, 200, "GET {bucket}/{key}: {}", String::from_utf8_lossy(&body));
        body
    }

    /// Writes an object.
    pub fn put(&self, bucket: &str, key: &str, data: &[u8]) {
        let (status, body) = self.request("PUT", &format!("/{bucket}/{}", encode_path(key)), data);
        assert_eq!(status, 200, "PUT {bucket}/{key}: {}", String::from_utf8_lossy(&body));
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        self.try_request(method, path, body).unwrap_or_else(|e| panic!("{method} {path} to moto: {e}"))
    }

    /// One HTTP/1.0 request: status and body.
    pub fn try_request(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        // moto checks no signature, but refuses anonymous reads of objects.
        let auth = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";
        write!(stream, "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n", self.port, body.len())?;
        stream.write_all(body)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let end = response.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| std::io::Error::other("no HTTP header"))?;
        let head = String::from_utf8_lossy(&response[..end]).into_owned();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| std::io::Error::other(format!("bad status line {head:?}")))?;
        Ok((status, response[end + 4..].to_vec()))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-CONT", &child.id().to_string()]).status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn between_all(text: &str, open: &str, close: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(close) else { break };
        out.push(after[..end].to_owned());
        rest = &after[end + close.len()..];
    }
    out
}

fn unescape(s: String) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

fn encode_path(key: &str) -> String {
    key.split('/').map(encode).collect::<Vec<_>>().join("/")
}
