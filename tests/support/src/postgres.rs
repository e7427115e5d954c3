//! A throwaway PostgreSQL cluster for tests and benchmarks.
//!
//! [`TempCluster::start`] runs `initdb` into a temporary directory (trust
//! authentication, superuser `weir`), picks a free port, puts the Unix
//! socket in the same directory and starts the server with `pg_ctl`; drop
//! stops it (`-m immediate`) and removes everything. PostgreSQL refuses to
//! run as root, so under root the cluster runs as the `postgres` user (or
//! `nobody`) through `runuser`. The binaries are found in `$WEIR_PG_BIN`,
//! then `/usr/lib/postgresql/<newest>/bin`, then `pg_config --bindir`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::free_port;

/// A running throwaway cluster.
#[derive(Debug)]
pub struct TempCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    run_as: Option<String>,
}

/// The directory holding `initdb`, `pg_ctl`, `postgres` and `psql`.
pub fn find_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WEIR_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p): &(u32, PathBuf)| p.join("initdb").is_file())
        .collect();
    versions.sort();
    if let Some((_, p)) = versions.pop() {
        return Some(p);
    }
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    dir.join("initdb").is_file().then_some(dir)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl TempCluster {
    /// Creates and starts a cluster; panics with the server's log when it
    /// cannot (this is test support).
    pub fn start() -> Self {
        Self::start_with(false, false)
    }

    /// Like [`TempCluster::start`], with `wal_level = logical` for change
    /// data capture (replication slots and publications).
    pub fn start_logical() -> Self {
        Self::start_with(false, true)
    }

    /// Like [`TempCluster::start`], but TCP connections must use TLS
    /// (`hostssl` only in `pg_hba.conf`; Unix sockets stay plain). The
    /// server's certificate is self-signed for `localhost` and `127.0.0.1`;
    /// [`TempCluster::ca_file`] is the file to trust it with.
    pub fn start_tls() -> Self {
        Self::start_with(true, false)
    }

    /// [`TempCluster::start_tls`] with `wal_level = logical`.
    pub fn start_logical_tls() -> Self {
        Self::start_with(true, true)
    }

    /// The self-signed certificate of a [`TempCluster::start_tls`] server.
    pub fn ca_file(&self) -> PathBuf {
        self.data_dir().join("server.crt")
    }

    fn start_with(tls: bool, logical: bool) -> Self {
        let bin = find_bin_dir().expect("PostgreSQL binaries not found: install postgresql (or set WEIR_PG_BIN)");
        let dir = tempfile::Builder::new().prefix("weir-pg-").tempdir().expect("temp dir");
        let run_as = is_root().then(|| {
            let user = if Command::new("id").arg("postgres").output().is_ok_and(|o| o.status.success()) { "postgres" } else { "nobody" };
            let ok = Command::new("chown").arg("-R").arg(user).arg(dir.path()).status().is_ok_and(|s| s.success());
            assert!(ok, "cannot chown {} to {user}", dir.path().display());
            user.to_owned()
        });
        let mut cluster = Self { dir, bin, port: 0, run_as };
        let data = cluster.data_dir();
        cluster.run_ok("initdb", &["-D", path_str(&data), "-U", "weir", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"]);
        let mut tls_conf = String::new();
        if tls {
            // As the cluster's owner, so the server may read the key.
            let out = cluster
                .as_owner("openssl")
                .args([
                    "req", "-new", "-x509", "-days", "2", "-nodes", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", path_str(&data.join("server.key")), "-out", path_str(&data.join("server.crt")),
                ])
                .output()
                .expect("run openssl (the openssl command makes the test certificate)");
            assert!(out.status.success(), "openssl req failed: {}", String::from_utf8_lossy(&out.stderr));
            std::fs::write(data.join("pg_hba.conf"), "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n").expect("write pg_hba.conf");
            tls_conf = "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n".into();
        }
        if logical {
            tls_conf.push_str("wal_level = logical\nmax_replication_slots = 10\nmax_wal_senders = 10\n");
        }
        for attempt in 0..5 {
            cluster.port = free_port();
            let conf = format!(
                "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\nfull_page_writes = off\n\
                 max_connections = 60\nshared_buffers = 128MB\nmax_wal_size = 1GB\nlog_min_messages = warning\n{tls_conf}",
                cluster.port,
                cluster.dir.path().display()
            );
            std::fs::write(data.join("postgresql.auto.conf"), conf).expect("write postgresql.auto.conf");
            if cluster.try_start() {
                return cluster;
            }
            eprintln!("PostgreSQL did not start on port {} (attempt {attempt}); trying another port", cluster.port);
        }
        panic!("PostgreSQL did not start; log:\n{}", cluster.log());
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        self.as_owner(self.bin.join(tool))
    }

    /// A command run as the cluster's owner.
    fn as_owner(&self, exe: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn run_ok(&self, tool: &str, args: &[&str]) -> Output {
        let out = self.command(tool).args(args).output().unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        assert!(out.status.success(), "{tool} {args:?} failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        out
    }

    fn try_start(&self) -> bool {
        let log = self.dir.path().join("server.log");
        self.command("pg_ctl")
            .args(["-D", path_str(&self.data_dir()), "-l", path_str(&log), "-w", "-t", "60", "start"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for database `postgres` as the superuser `weir`.
    pub fn url(&self) -> String {
        format!("postgres://weir@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs SQL with `psql` and returns its unaligned, tuples-only output
    /// (`|` between columns); panics on an error.
    pub fn psql(&self, sql: &str) -> String {
        let out = self.try_psql(sql).unwrap_or_else(|e| panic!("psql failed on {sql:?}: {e}"));
        out.trim_end().to_owned()
    }

    /// [`TempCluster::psql`] returning the error text instead of panicking.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "weir", "-d", "postgres", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Kills the server like a crash (`pg_ctl stop -m immediate`).
    pub fn stop_immediate(&self) {
        self.run_ok("pg_ctl", &["-D", path_str(&self.data_dir()), "-m", "immediate", "-w", "stop"]);
    }

    /// Starts the server again after [`TempCluster::stop_immediate`] (crash recovery runs).
    pub fn restart(&self) {
        assert!(self.try_start(), "PostgreSQL did not restart; log:\n{}", self.log());
    }

    /// The directory of the cluster (data, socket, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let _ = self.command("pg_ctl").args(["-D", path_str(&self.data_dir()), "-m", "immediate", "-w", "stop"]).output();
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}
