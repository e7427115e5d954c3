//! The source itself: set-up (publication, slot, snapshot), the streaming
//! loop, positions in checkpoints, and confirmation to the slot.

use std::time::{Duration, Instant};

use weir_connector::{BatchWriter, ConnectorContext, ConnectorError, Poll, Source};

use crate::config::{PostgresCdcConfig, SnapshotMode};
use weir_connector_postgres::config::TlsMode;
use crate::pgoutput::{Cell, Column, Decoder, Event, Relation, render};
use crate::wire::{Conn, Tls, WireError, be_u64, fmt_lsn, ident, literal, parse_lsn};

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// Version byte of a stored position.
const POSITION_V1: u8 = 1;

/// How long one poll waits for the first message before saying it is idle.
const POLL_WAIT: Duration = Duration::from_millis(20);

/// The cursor of the initial snapshot.
const CURSOR: &str = "weir_cdc_snapshot";

/// A transaction being read.
#[derive(Debug, Clone, Copy)]
struct Txn {
    /// LSN of its commit record (its identity on the stream).
    final_lsn: u64,
    commit_ms: i64,
    /// Changes of it read so far, emitted or skipped.
    changes: u64,
    /// Changes to skip: emitted before the checkpoint this run resumes from.
    skip: u64,
}

/// The initial snapshot in progress.
struct Snapshot {
    /// The plain connection holding the snapshot's transaction.
    conn: Conn,
    /// The slot's consistent point: the stream continues from here.
    lsn: u64,
    /// Index in `tables` of the table being read, and whether its cursor is open.
    table: usize,
    open: bool,
}

enum Phase {
    /// Not connected yet.
    Start,
    /// Reading the tables' rows.
    Snapshot(Snapshot),
    /// Reading changes (connected when `repl` is `Some`).
    Streaming,
}

/// Reads the changes of some tables through a logical replication slot.
pub struct PostgresCdcSource {
    config: PostgresCdcConfig,
    pg: tokio_postgres::Config,
    password: Option<String>,
    tls: Option<Tls>,
    /// `source NAME` for messages.
    who: String,
    /// The server, for messages (never the password).
    server: String,
    tables: Vec<Relation>,
    phase: Phase,
    /// The replication connection, once streaming.
    repl: Option<Conn>,
    /// The replication connection that created the slot, idle until the
    /// snapshot is read.
    waiting: Option<Conn>,
    decoder: Decoder,
    /// The stream position after everything emitted: the end of the last
    /// whole transaction (or a keepalive point between transactions).
    lsn: u64,
    /// The transaction being read, if inside one.
    txn: Option<Txn>,
    /// From a restore: the transaction stopped inside of, and how many of
    /// its changes were emitted.
    resume_inside: Option<(u64, u64)>,
    restored: bool,
    /// The position last confirmed to the server.
    confirmed: u64,
    /// The position the last completed checkpoint holds.
    checkpointed: u64,
    last_status: Instant,
    /// Since when reconnecting fails, and when to try next.
    down_since: Option<Instant>,
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl std::fmt::Debug for PostgresCdcSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCdcSource").field("who", &self.who).field("lsn", &fmt_lsn(self.lsn)).finish_non_exhaustive()
    }
}

impl PostgresCdcSource {
    /// Makes the source; nothing is contacted until the first poll (or restore).
    pub fn open(config: PostgresCdcConfig, ctx: &ConnectorContext) -> Result<Self, ConnectorError> {
        let who = format!("source `{}`", ctx.name);
        if let Some((field, problem)) = config.validate().into_iter().next() {
            return Err(ConnectorError::user(format!("{who}: {field}: {problem}")));
        }
        let pg: tokio_postgres::Config = config.url.parse().map_err(|e| ConnectorError::user(format!("{who}: url: {e}")))?;
        let password = config.password().map_err(|e| ConnectorError::user(format!("{who}: {e}")))?;
        let server = weir_connector_postgres::writer::describe(&pg);
        let tls = weir_connector_postgres::tls::ssl_connector(config.tls, config.tls_ca_file.as_deref())
            .map_err(|e| ConnectorError::user(format!("{who}: {e}")))?
            .map(|connector| Tls { connector, verify_hostname: config.tls == TlsMode::VerifyFull });
        let backoff = config.reconnect.initial_backoff;
        Ok(Self {
            config,
            pg,
            password,
            tls,
            who,
            server,
            tables: Vec::new(),
            phase: Phase::Start,
            repl: None,
            waiting: None,
            decoder: Decoder::default(),
            lsn: 0,
            txn: None,
            resume_inside: None,
            restored: false,
            confirmed: 0,
            checkpointed: 0,
            last_status: Instant::now(),
            down_since: None,
            retry_at: None,
            backoff,
        })
    }

    fn connect(&self, replication: bool) -> Result<Conn, WireError> {
        Conn::connect(&self.pg, self.password.as_deref(), replication, self.config.connect_timeout, self.tls.as_ref())
    }

    /// An error from PostgreSQL during set-up, said with what was being done.
    fn failed(&self, doing: &str, e: WireError) -> ConnectorError {
        let message = format!("{}: {doing} on {}: {e}", self.who, self.server);
        if matches!(e, WireError::Tls(_)) {
            return ConnectorError::user(message);
        }
        match e.code() {
            // Privileges, missing objects, bad names, wrong settings: the user's to fix.
            Some(c) if c.starts_with("42") || c.starts_with("28") || c.starts_with("55") || c.starts_with("3D") => ConnectorError::user(message),
            _ => ConnectorError::external(message, e),
        }
    }

    /// Checks the server and the tables, and makes sure the publication exists.
    fn prepare_server(&mut self, conn: &mut Conn) -> Result<(), ConnectorError> {
        let level = conn.query("SHOW wal_level").map_err(|e| self.failed("reading wal_level", e))?;
        let level = level.first().and_then(|r| r.first().cloned().flatten()).unwrap_or_default();
        if level != "logical" {
            return Err(ConnectorError::user(format!(
                "{}: {} has wal_level = {level}; change data capture needs wal_level = logical \
                 (set it in postgresql.conf or with ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL)",
                self.who, self.server
            )));
        }
        let mut tables = Vec::new();
        for (i, name) in self.config.tables.iter().enumerate() {
            let sql = format!(
                "SELECT c.oid, n.nspname, c.relname, c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = to_regclass({})",
                literal(name)
            );
            let rows = conn.query(&sql).map_err(|e| self.failed(&format!("looking up table {name}"), e))?;
            let Some(row) = rows.first() else {
                return Err(ConnectorError::user(format!("{}: tables[{i}]: table {name} does not exist in {}", self.who, self.server)));
            };
            let text = |j: usize| row.get(j).cloned().flatten().unwrap_or_default();
            let (oid, schema, table, identity) = (text(0), text(1), text(2), text(3));
            let qualified = format!("{schema}.{table}");
            let cols = conn
                .query(&format!(
                    "SELECT a.attname, a.atttypid::oid::int8, CASE c.relreplident WHEN 'f' THEN true \
                     WHEN 'd' THEN coalesce(a.attnum = ANY(pk.indkey), false) WHEN 'i' THEN coalesce(a.attnum = ANY(ri.indkey), false) ELSE false END \
                     FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
                     LEFT JOIN pg_index pk ON pk.indrelid = c.oid AND pk.indisprimary \
                     LEFT JOIN pg_index ri ON ri.indrelid = c.oid AND ri.indisreplident \
                     WHERE c.oid = {oid} AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
                ))
                .map_err(|e| self.failed(&format!("reading the columns of {qualified}"), e))?;
            let columns: Vec<Column> = cols
                .into_iter()
                .map(|r| Column {
                    name: r[0].clone().unwrap_or_default(),
                    type_oid: r[1].as_deref().and_then(|t| t.parse().ok()).unwrap_or(25),
                    key: r[2].as_deref() == Some("t"),
                })
                .collect();
            if identity == "n" || !columns.iter().any(|c| c.key) {
                return Err(ConnectorError::user(format!(
                    "{}: tables[{i}]: {qualified} has no replica identity (no primary key, or REPLICA IDENTITY NOTHING): \
                     once published, PostgreSQL would refuse UPDATE and DELETE on it; add a primary key, or run \
                     ALTER TABLE {qualified} REPLICA IDENTITY FULL",
                    self.who
                )));
            }
            tables.push(Relation { table: qualified, columns });
        }
        let publication = self.config.publication_name().to_owned();
        let exists = conn
            .query(&format!("SELECT 1 FROM pg_publication WHERE pubname = {}", literal(&publication)))
            .map_err(|e| self.failed("looking up the publication", e))?;
        if exists.is_empty() {
            let list: Vec<String> = tables.iter().map(|t| quote_table(&t.table)).collect();
            conn.query(&format!("CREATE PUBLICATION {} FOR TABLE {}", ident(&publication), list.join(", ")))
                .map_err(|e| self.failed(&format!("creating publication {publication}"), e))?;
            tracing::info!(source = %self.who, %publication, "created the publication");
        } else {
            let published: Vec<String> = conn
                .query(&format!("SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = {}", literal(&publication)))
                .map_err(|e| self.failed("reading the publication's tables", e))?
                .into_iter()
                .filter_map(|r| r.into_iter().next().flatten())
                .collect();
            if let Some(missing) = tables.iter().find(|t| !published.contains(&t.table)) {
                return Err(ConnectorError::user(format!(
                    "{}: publication {publication} exists but does not publish {}; run ALTER PUBLICATION {} ADD TABLE {}, \
                     or set `publication` to another name (weir creates it when missing)",
                    self.who,
                    missing.table,
                    ident(&publication),
                    quote_table(&missing.table)
                )));
            }
        }
        self.tables = tables;
        Ok(())
    }

    /// The slot's confirmed position and whether a process uses it, if it exists.
    fn slot_state(&self, conn: &mut Conn) -> Result<Option<(u64, bool)>, ConnectorError> {
        let slot = self.config.slot_name();
        let rows = conn
            .query(&format!(
                "SELECT confirmed_flush_lsn::text, active, plugin, wal_status FROM pg_replication_slots WHERE slot_name = {}",
                literal(slot)
            ))
            .map_err(|e| self.failed("looking up the replication slot", e))?;
        let Some(row) = rows.first() else { return Ok(None) };
        if row[2].as_deref() != Some("pgoutput") {
            return Err(ConnectorError::user(format!(
                "{}: replication slot {slot} exists with output plugin {}, not pgoutput: it belongs to something else; set `slot` to another name",
                self.who,
                row[2].as_deref().unwrap_or("(none)")
            )));
        }
        if self.restored && row[3].as_deref() == Some("lost") {
            return Err(ConnectorError::user(format!(
                "{}: replication slot {slot} on {} was invalidated by PostgreSQL (it held more WAL than max_slot_wal_keep_size), \
                 so the changes after this checkpoint ({}) are no longer available; start with --fresh to take a new snapshot \
                 (the sinks' output is then replaced), and raise max_slot_wal_keep_size or checkpoint more often",
                self.who,
                self.server,
                fmt_lsn(self.lsn)
            )));
        }
        let lsn = row[0].as_deref().and_then(parse_lsn).unwrap_or(0);
        Ok(Some((lsn, row[1].as_deref() == Some("t"))))
    }

    /// First contact: fresh (a new slot, maybe a snapshot) or restored (the
    /// slot must still hold the checkpoint's position).
    fn start(&mut self) -> Result<(), ConnectorError> {
        let mut conn = self.connect(false).map_err(|e| self.failed("connecting", e))?;
        self.prepare_server(&mut conn)?;
        let slot = self.config.slot_name().to_owned();
        let state = self.slot_state(&mut conn)?;
        if self.restored {
            let Some((confirmed, _)) = state else {
                return Err(ConnectorError::user(format!(
                    "{}: replication slot {slot} is gone from {}, so the changes after this checkpoint ({}) are no longer available; \
                     start with --fresh to take a new snapshot (the sinks' output is then replaced)",
                    self.who,
                    self.server,
                    fmt_lsn(self.lsn)
                )));
            };
            if confirmed > self.lsn {
                return Err(ConnectorError::user(format!(
                    "{}: replication slot {slot} has confirmed changes up to {}, past this checkpoint's {}: the changes in between \
                     are no longer available, so this checkpoint cannot be resumed exactly; restore the latest checkpoint, \
                     or start with --fresh",
                    self.who,
                    fmt_lsn(confirmed),
                    fmt_lsn(self.lsn)
                )));
            }
            self.confirmed = confirmed;
            self.checkpointed = self.lsn;
            conn.terminate();
            self.phase = Phase::Streaming;
            return Ok(());
        }
        if let Some((_, active)) = state {
            if active {
                return Err(ConnectorError::user(format!(
                    "{}: replication slot {slot} is in use by another process (another weir running this pipeline?); \
                     stop it, or set `slot` to another name",
                    self.who
                )));
            }
            // A fresh start: the slot of an earlier run holds nothing a checkpoint needs.
            conn.query(&format!("SELECT pg_drop_replication_slot({})", literal(&slot))).map_err(|e| self.failed("dropping the earlier run's slot", e))?;
            tracing::info!(source = %self.who, %slot, "fresh start: dropped the earlier run's replication slot");
        }
        let mut repl = self.connect(true).map_err(|e| self.failed("opening a replication connection", e))?;
        let export = match self.config.snapshot {
            SnapshotMode::Initial => "EXPORT_SNAPSHOT",
            SnapshotMode::Never => "NOEXPORT_SNAPSHOT",
        };
        let created = repl
            .query(&format!("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {export}", ident(&slot)))
            .map_err(|e| self.failed(&format!("creating replication slot {slot}"), e))?;
        let row = created.first().ok_or_else(|| ConnectorError::internal(format!("{}: CREATE_REPLICATION_SLOT returned no row", self.who)))?;
        let consistent = row.get(1).cloned().flatten().as_deref().and_then(parse_lsn).unwrap_or(0);
        tracing::info!(source = %self.who, %slot, lsn = %fmt_lsn(consistent), "created the replication slot");
        self.lsn = consistent;
        self.confirmed = consistent;
        self.checkpointed = consistent;
        match (self.config.snapshot, row.get(2).cloned().flatten()) {
            (SnapshotMode::Initial, Some(name)) => {
                conn.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").map_err(|e| self.failed("starting the snapshot", e))?;
                conn.query(&format!("SET TRANSACTION SNAPSHOT {}", literal(&name))).map_err(|e| self.failed("importing the slot's snapshot", e))?;
                // The replication connection stays idle until the snapshot is read: the exported snapshot lives as long as it does nothing.
                self.waiting = Some(repl);
                self.phase = Phase::Snapshot(Snapshot { conn, lsn: consistent, table: 0, open: false });
            }
            _ => {
                conn.terminate();
                self.waiting = Some(repl);
                self.phase = Phase::Streaming;
            }
        }
        Ok(())
    }

    /// Reads the next rows of the snapshot; `Finished` flags its end.
    fn poll_snapshot(&mut self, out: &mut BatchWriter, target_bytes: usize) -> Result<bool, ConnectorError> {
        let Phase::Snapshot(snap) = &mut self.phase else { return Ok(true) };
        let now_ms = (weir_connector::now_micros() / 1000) as i64;
        let (mut key, mut value) = (Vec::new(), Vec::new());
        while out.len() < target_bytes {
            let Some(rel) = self.tables.get(snap.table) else {
                snap.conn.query("COMMIT").map_err(|e| snapshot_failed(&self.who, &self.server, e))?;
                snap.conn.terminate();
                tracing::info!(source = %self.who, lsn = %fmt_lsn(snap.lsn), "initial snapshot read; streaming changes");
                self.phase = Phase::Streaming;
                return Ok(true);
            };
            if !snap.open {
                let cols: Vec<String> = rel.columns.iter().map(|c| ident(&c.name)).collect();
                snap.conn
                    .query(&format!("DECLARE {CURSOR} NO SCROLL CURSOR FOR SELECT {} FROM {}", cols.join(", "), quote_table(&rel.table)))
                    .map_err(|e| snapshot_failed(&self.who, &self.server, e))?;
                snap.open = true;
            }
            let mut rows = 0usize;
            let mut too_large = None;
            let lsn = snap.lsn;
            snap.conn
                .query_each(&format!("FETCH FORWARD {} FROM {CURSOR}", self.config.snapshot_fetch), |fields| {
                    rows += 1;
                    let cells: Vec<Cell<'_>> = fields.iter().map(|f| f.map(Some)).collect();
                    render(&mut key, &mut value, "snapshot", rel, lsn, None, Some(&cells))?;
                    if let Err(e) = out.try_push(Some(&key), &value, now_ms, &[]) {
                        too_large.get_or_insert(e.to_string());
                    }
                    Ok(())
                })
                .map_err(|e| snapshot_failed(&self.who, &self.server, e))?;
            if let Some(e) = too_large {
                return Err(ConnectorError::user(format!("{}: a row of {} in the initial snapshot: {e}", self.who, rel.table)));
            }
            if rows == 0 {
                snap.conn.query(&format!("CLOSE {CURSOR}")).map_err(|e| snapshot_failed(&self.who, &self.server, e))?;
                snap.open = false;
                snap.table += 1;
            }
        }
        Ok(false)
    }

    /// Connects and starts streaming from the current position.
    fn start_streaming(&mut self) -> Result<(), WireError> {
        let mut repl = match self.waiting.take() {
            Some(r) => r,
            None => self.connect(true)?,
        };
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '1', publication_names {})",
            ident(self.config.slot_name()),
            fmt_lsn(self.lsn),
            literal(&ident(self.config.publication_name()))
        );
        repl.start_copy_both(&sql)?;
        self.repl = Some(repl);
        // Cut off inside a transaction: the server sends it again from its
        // start, and the changes already emitted are skipped.
        if let Some(txn) = self.txn.take() {
            self.resume_inside = Some((txn.final_lsn, txn.changes));
        }
        self.last_status = Instant::now();
        tracing::debug!(source = %self.who, lsn = %fmt_lsn(self.lsn), "streaming changes");
        Ok(())
    }

    /// The position to confirm to the server: the last completed
    /// checkpoint's, or everything read when the pipeline takes none.
    fn confirmable(&self) -> u64 {
        if self.config.checkpointing { self.checkpointed } else { self.lsn }
    }

    fn send_status(&mut self) -> Result<(), WireError> {
        let Some(repl) = self.repl.as_mut() else { return Ok(()) };
        let lsn = if self.config.checkpointing { self.checkpointed } else { self.lsn };
        let mut m = Vec::with_capacity(34);
        m.push(b'r');
        for _ in 0..3 {
            m.extend_from_slice(&lsn.to_be_bytes());
        }
        m.extend_from_slice(&(weir_connector::now_micros() as i64 - PG_EPOCH_US).to_be_bytes());
        m.push(0);
        repl.copy_data(&m)?;
        self.confirmed = self.confirmed.max(lsn);
        self.last_status = Instant::now();
        Ok(())
    }

    /// Reads changes until `target_bytes` or until none arrive for a moment.
    fn poll_stream(&mut self, out: &mut BatchWriter, target_bytes: usize) -> Result<(), WireError> {
        if self.repl.is_none() {
            self.start_streaming()?;
        }
        let mut wait = POLL_WAIT;
        while out.len() < target_bytes {
            let repl = self.repl.as_mut().expect("connected above");
            let Some(m) = repl.read(Some(wait))? else { break };
            wait = Duration::from_millis(1);
            match m.tag {
                b'd' => {}
                b'E' => return Err(repl.error_of(m)),
                b'c' => return Err(WireError::Io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the server ended the replication stream"))),
                _ => continue,
            }
            let body = repl.body(m);
            match body.first() {
                Some(b'w') => {
                    let data = body.get(25..).unwrap_or_default();
                    match self.decoder.decode(data)? {
                        Event::Begin { final_lsn, commit_ms } => {
                            let skip = match self.resume_inside {
                                Some((lsn, n)) if lsn == final_lsn => n,
                                _ => 0,
                            };
                            self.txn = Some(Txn { final_lsn, commit_ms, changes: 0, skip });
                        }
                        Event::Commit { end_lsn } => {
                            self.txn = None;
                            self.resume_inside = None;
                            self.lsn = self.lsn.max(end_lsn);
                        }
                        Event::Change => {
                            let txn = self.txn.as_mut().ok_or_else(|| WireError::Protocol("a change outside a transaction".into()))?;
                            txn.changes += 1;
                            if txn.changes > txn.skip {
                                let key = (!self.decoder.key.is_empty()).then_some(&self.decoder.key[..]);
                                if let Err(e) = out.try_push(key, &self.decoder.value, txn.commit_ms, &[]) {
                                    return Err(WireError::Protocol(format!(
                                        "a change of the transaction committed at {} cannot be a record: {e}",
                                        fmt_lsn(txn.final_lsn)
                                    )));
                                }
                            }
                        }
                        Event::Nothing => {}
                    }
                }
                Some(b'k') => {
                    let wal_end = be_u64(body, 1)?;
                    let reply = body.get(17) == Some(&1);
                    // Between transactions, everything before the server's
                    // position has been sent: moving there lets the slot
                    // release WAL even when the tables see no changes.
                    if self.txn.is_none() && self.resume_inside.is_none() {
                        self.lsn = self.lsn.max(wal_end);
                    }
                    if reply {
                        self.send_status()?;
                    }
                }
                _ => {}
            }
        }
        if self.last_status.elapsed() >= self.config.status_interval || self.confirmable() > self.confirmed {
            self.send_status()?;
        }
        Ok(())
    }

    /// A lost connection while streaming: try again with backoff, and fail
    /// after `reconnect.give-up-after`.
    fn lost(&mut self, e: WireError) -> Result<Poll, ConnectorError> {
        self.repl = None;
        if !e.is_disconnect() {
            return Err(ConnectorError::external(format!("{}: reading changes from {}: {e}", self.who, self.server), e));
        }
        let since = *self.down_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.config.reconnect.give_up_after {
            return Err(ConnectorError::external(
                format!(
                    "{}: {} unreachable for {:?} (reconnect.give-up-after): {e}; the pipeline stops, and resumes from its last checkpoint when restarted",
                    self.who,
                    self.server,
                    since.elapsed()
                ),
                e,
            ));
        }
        tracing::warn!(source = %self.who, server = %self.server, error = %e, retry_in = ?self.backoff, "replication connection lost; reconnecting");
        self.retry_at = Some(Instant::now() + self.backoff);
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(self.config.reconnect.max_backoff);
        Ok(Poll::Idle(wait))
    }
}

fn snapshot_failed(who: &str, server: &str, e: WireError) -> ConnectorError {
    ConnectorError::external(
        format!(
            "{who}: the initial snapshot failed on {server}: {e}; a snapshot cannot be resumed: start again with --fresh \
             (a new slot and a new snapshot), or set snapshot = \"never\""
        ),
        e,
    )
}

/// `schema.table` quoted for SQL.
fn quote_table(t: &str) -> String {
    match t.split_once('.') {
        Some((s, n)) => format!("{}.{}", ident(s), ident(n)),
        None => ident(t),
    }
}

impl Source for PostgresCdcSource {
    fn poll(&mut self, out: &mut BatchWriter, target_bytes: usize) -> Result<Poll, ConnectorError> {
        if let Some(at) = self.retry_at {
            let now = Instant::now();
            if now < at {
                return Ok(Poll::Idle(at - now));
            }
            self.retry_at = None;
        }
        if matches!(self.phase, Phase::Start) {
            self.start()?;
        }
        if matches!(self.phase, Phase::Snapshot(_)) {
            self.poll_snapshot(out, target_bytes)?;
            return Ok(Poll::Ready);
        }
        match self.poll_stream(out, target_bytes) {
            Ok(()) => {
                self.down_since = None;
                self.backoff = self.config.reconnect.initial_backoff;
                Ok(if out.is_empty() { Poll::Idle(Duration::from_millis(10)) } else { Poll::Ready })
            }
            Err(e) if out.is_empty() => self.lost(e),
            Err(e) => {
                // Hand over what was read; the next poll reconnects.
                let _retry = self.lost(e)?;
                Ok(Poll::Ready)
            }
        }
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, ConnectorError> {
        let mut p = vec![POSITION_V1];
        match (&self.phase, self.txn) {
            (Phase::Snapshot(_), _) => p.push(1),
            (_, Some(txn)) => {
                p.push(0);
                p.extend_from_slice(&self.lsn.to_le_bytes());
                p.extend_from_slice(&txn.final_lsn.to_le_bytes());
                p.extend_from_slice(&txn.changes.to_le_bytes());
            }
            (_, None) => {
                p.push(0);
                p.extend_from_slice(&self.lsn.to_le_bytes());
            }
        }
        Ok(p)
    }

    fn restore(&mut self, positions: &[&[u8]]) -> Result<(), ConnectorError> {
        let mut recorded = positions.iter().filter(|p| !p.is_empty());
        let (Some(&p), None) = (recorded.next(), recorded.next()) else {
            return Err(ConnectorError::user(format!(
                "{}: the checkpoint holds {} positions, but a replication slot has exactly one reader; \
                 the checkpoint was not taken from this pipeline: restore one of its checkpoints or start with --fresh",
                self.who,
                positions.iter().filter(|p| !p.is_empty()).count()
            )));
        };
        let le = |at: usize| p.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
        match (p.first(), p.get(1)) {
            (Some(&POSITION_V1), Some(1)) => Err(ConnectorError::user(format!(
                "{}: the checkpoint was taken during the initial snapshot, which cannot be resumed; \
                 start with --fresh to take a new snapshot (the sinks' output is then replaced)",
                self.who
            ))),
            (Some(&POSITION_V1), Some(0)) if p.len() == 10 || p.len() == 26 => {
                self.lsn = le(2).unwrap_or(0);
                if p.len() == 26 {
                    self.resume_inside = Some((le(10).unwrap_or(0), le(18).unwrap_or(0)));
                }
                self.restored = true;
                Ok(())
            }
            _ => Err(ConnectorError::user(format!(
                "{}: the checkpoint's position ({} bytes) is not one this version of weir wrote for a postgres-cdc source; \
                 restore a checkpoint of this pipeline or start with --fresh",
                self.who,
                p.len()
            ))),
        }
    }

    fn checkpoint_complete(&mut self, _checkpoint: u64, position: &[u8]) -> Result<(), ConnectorError> {
        if position.len() >= 10 && position[1] == 0 {
            let lsn = u64::from_le_bytes(position[2..10].try_into().unwrap_or_default());
            self.checkpointed = self.checkpointed.max(lsn);
            // Confirmed at the next poll (on the reading thread's connection).
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), ConnectorError> {
        for mut r in [self.repl.take(), self.waiting.take()].into_iter().flatten() {
            r.terminate();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> PostgresCdcSource {
        let mut c: PostgresCdcConfig = toml::from_str("url = \"postgres://weir@127.0.0.1:1/db\"\ntables = [\"t\"]").unwrap();
        c.default_name = "weir_p_s".into();
        PostgresCdcSource::open(c, &ConnectorContext::new("p", "s", 0, 1)).unwrap()
    }

    #[test]
    fn positions_round_trip_between_and_inside_transactions() {
        let mut s = source();
        s.lsn = 0x10_0000_0100;
        let between = s.snapshot().unwrap();
        s.txn = Some(Txn { final_lsn: 0x10_0000_0200, commit_ms: 0, changes: 3, skip: 0 });
        let inside = s.snapshot().unwrap();
        let mut r = source();
        r.restore(&[&between]).unwrap();
        assert_eq!((r.lsn, r.resume_inside), (0x10_0000_0100, None));
        let mut r = source();
        r.restore(&[&[], &inside]).unwrap();
        assert_eq!((r.lsn, r.resume_inside), (0x10_0000_0100, Some((0x10_0000_0200, 3))));
        assert!(source().restore(&[&inside, &between]).unwrap_err().to_string().contains("exactly one reader"));
        assert!(source().restore(&[&[1, 1]]).unwrap_err().to_string().contains("during the initial snapshot"));
        assert!(source().restore(&[&[9, 9, 9]]).unwrap_err().to_string().contains("not one this version"));
    }
}
