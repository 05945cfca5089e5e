//! Durable pending-reception records, so no received fax is ever orphaned.
//!
//! fsfaxd journals a reception before `rxfax` starts, journals each step of the hand-over
//! before taking it, and forgets it after faxrcvd ran; at start-up it replays whatever is left
//! (GOfax.IP kept nothing and lost faxes on any crash).
//!
//! Location `<spool>/recvq/.fsfax/`: hidden from `faxstat -r` (lists only `fax*` names) and
//! from faxcron's recvq cleanup (removes `fax*` files), and on the same file system as the
//! TIFFs.
//!
//! The journal is one append-only file, `journal`: a header line, then one line per step
//! (`add` with the whole record, `stage`, `done`), each carrying a hash of itself, so a line
//! torn by a crash is recognised and ignored (it was never acknowledged). Lines are appended by
//! the spool writer thread ([`super::writer`]), which syncs the file once for everything that
//! became due at the same time (group commit). Every start rewrites the file with only what is
//! still pending (temp file, sync, rename, directory sync), and so does the writer when the
//! file has grown.
//!
//! What must be on disk before it happens: the `add` before `rxfax` and the `handed` stage
//! before faxrcvd starts are committed (synced). A `logged` stage and a `done` are written
//! (a killed fsfaxd loses neither) and synced with the next commit or within a second: losing
//! one to a crash of the machine repeats nothing that matters (a `handed` reception is never
//! handed again; a `done` one that comes back as `handed` is only dropped).
//!
//! Each pending reception is also listed as `pending-<commid>` beside the journal, for admins
//! (and the tests): a hard link to the journal, so no file is created and deleted per
//! reception. These names are not synced; every start makes them match the journal. A
//! `pending-<commid>` that holds a record of its own (the per-file journal of fsfax up to 0.1)
//! is read at start-up and taken into the journal.
//!
//! The journal also keeps the sequence numbers honest: every commid and recvq number it ever
//! recorded is known at start-up, and `log/seqf` / `recvq/seqf` are moved past them, so a
//! number whose reception was journalled is never handed out again, even if a crash of the
//! machine lost the sequence file's last updates (fsfaxd does not sync those itself).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use super::seqf;
use super::writer::{Ctx, SpoolWriter};

/// Spool-relative journal directory.
pub const JOURNAL_DIR: &str = "recvq/.fsfax";
/// The journal file in [`JOURNAL_DIR`].
pub const JOURNAL_FILE: &str = "journal";
const CORRUPT_DIR: &str = "corrupt";
const PREFIX: &str = "pending-";
const TMP_PREFIX: &str = ".tmp-";
const COMPACT_TMP: &str = ".journal.tmp";
/// The first line of a per-file record of fsfax up to 0.1.
const HEADER: &str = "fsfax-pending 1";
/// The first line of the journal file.
const LOG_HEADER: &str = "fsfax-journal 1";
/// Records are tiny; anything bigger is not ours.
const MAX_RECORD: u64 = 64 * 1024;
/// The journal is rewritten with only what is pending when it grows beyond this (and beyond
/// four times what a rewrite would leave).
const COMPACT_MIN: u64 = 1024 * 1024;

/// Characters escaped in per-file record values: controls (newlines!), `%` itself, and
/// non-ASCII via UTF-8.
#[cfg(test)]
const VALUE_SET: &AsciiSet = &CONTROLS.add(b'%');
/// In journal lines the fields are space-separated `key=value`: spaces are escaped too.
const LINE_SET: &AsciiSet = &CONTROLS.add(b'%').add(b' ');

/// Errors of the journal. Each names the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: cannot create journal directory: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("{path}: cannot write journal record: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path}: cannot list journal: {source}")]
    List { path: PathBuf, source: io::Error },
    #[error("{path}: cannot remove journal record: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("invalid commid {0:?} for a journal record (digits only)")]
    BadCommid(String),
    #[error("the journal's writer thread is not running")]
    Gone,
}

/// What fsfaxd needs to finish a reception after a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingReception {
    /// `%09u` commid (also the record's name).
    pub commid: String,
    /// Spool-relative `recvq/faxNNNNNNNNN.tif`.
    pub recvq_file: String,
    pub modem: String,
    pub cidnum: String,
    pub cidname: String,
    pub recipient: String,
    pub gateway: String,
    pub call_uuid: String,
    /// Unix seconds when the call was accepted.
    pub started: i64,
    /// How far the hand-over got, so a restart neither repeats nor skips a step.
    pub delivery: DeliveryStage,
}

/// How far the hand-over of a reception got before fsfaxd stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeliveryStage {
    /// Receiving or received; nothing handed over yet.
    #[default]
    Received,
    /// The xferfaxlog record is written.
    Logged,
    /// faxrcvd was started. It runs in its own process group and outlives a killed fsfaxd,
    /// so it is never started a second time (the fax would be mailed twice).
    Handed,
}

impl DeliveryStage {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryStage::Received => "received",
            DeliveryStage::Logged => "logged",
            DeliveryStage::Handed => "handed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "received" => Some(DeliveryStage::Received),
            "logged" => Some(DeliveryStage::Logged),
            "handed" => Some(DeliveryStage::Handed),
            _ => None,
        }
    }
}

/// A record that could not be read; it was moved to `corrupt/` for an admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord {
    pub moved_to: PathBuf,
    pub reason: String,
}

/// Result of a start-up scan.
#[derive(Debug, Clone, Default)]
pub struct JournalScan {
    pub pending: Vec<PendingReception>,
    pub corrupt: Vec<CorruptRecord>,
}

/// The journal: a handle on the spool writer thread that owns the journal file. Clone freely.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
    writer: SpoolWriter,
    /// What the previous run left, as found at [`Journal::open`].
    recovered: std::sync::Arc<JournalScan>,
}

impl Journal {
    /// Opens (creating, mode 0700) `<spool>/recvq/.fsfax/`, replays and rewrites the journal,
    /// takes in per-file records of older versions, makes the `pending-*` markers match, moves
    /// the sequence files past every number the journal knows, and starts the spool writer
    /// thread that owns the journal from then on.
    pub fn open(spool: &Path) -> Result<Self, JournalError> {
        let (log, scan) = JournalLog::open(spool)?;
        let dir = log.dir.clone();
        let writer = SpoolWriter::start(log).map_err(|source| JournalError::Write {
            path: dir.join(JOURNAL_FILE),
            source,
        })?;
        Ok(Journal {
            dir,
            writer,
            recovered: std::sync::Arc::new(scan),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The spool writer thread that owns the journal (for the other spool writes of a call).
    pub fn writer(&self) -> &SpoolWriter {
        &self.writer
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(JOURNAL_FILE)
    }

    /// Runs `work` on the spool writer, which may add a record with `ctx.journal.add`, and
    /// waits for the sync that covers what it appended: work that decides what the record
    /// says (a number to take first) costs one trip to the writer, not two. The second value
    /// is the outcome of that sync.
    pub async fn commit_with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Ctx) -> T + Send + 'static,
    ) -> Result<(T, Result<(), JournalError>), JournalError> {
        let path = self.log_path();
        let (out, synced) = self
            .writer
            .commit(work)
            .await
            .map_err(|_| JournalError::Gone)?;
        Ok((
            out,
            synced.map_err(|source| JournalError::Write { path, source }),
        ))
    }

    /// Durably records a reception (replacing an older record with the same commid); waits
    /// for the sync that covers it and returns the reception's marker file. Blocks: for tools
    /// and tests outside the runtime (a call uses [`Journal::commit_with`]).
    pub fn add(&self, rec: &PendingReception) -> Result<PathBuf, JournalError> {
        let rec = rec.clone();
        let (added, synced) = self
            .writer
            .commit_blocking(move |ctx| ctx.journal.add(&rec))
            .map_err(|_| JournalError::Gone)?;
        let marker = added?;
        synced.map_err(|source| JournalError::Write {
            path: self.log_path(),
            source,
        })?;
        Ok(marker)
    }

    /// Durably records how far the hand-over of `commid` got (blocking; the daemon journals
    /// its stages inside its own writer jobs). A missing record is left missing.
    pub fn set_delivery(&self, commid: &str, stage: DeliveryStage) -> Result<(), JournalError> {
        check_commid(commid)?;
        let commid = commid.to_owned();
        let (staged, synced) = self
            .writer
            .commit_blocking(move |ctx| ctx.journal.stage(&commid, stage))
            .map_err(|_| JournalError::Gone)?;
        staged?;
        synced.map_err(|source| JournalError::Write {
            path: self.log_path(),
            source,
        })
    }

    /// Forgets the record of `commid` (absent is fine). Queued, not waited for: written with
    /// the writer's next batch and synced with the next commit (see the module notes).
    pub fn remove(&self, commid: &str) -> Result<(), JournalError> {
        check_commid(commid)?;
        let commid = commid.to_owned();
        self.writer.post(move |ctx| {
            if let Err(e) = ctx.journal.done(&commid) {
                tracing::error!("{e}");
            }
        });
        Ok(())
    }

    /// The receptions the previous run left (found by [`Journal::open`]) that are still
    /// pending, oldest commid first, and the records that could not be read then. Receptions
    /// journalled by this run are never listed.
    pub fn list(&self) -> Result<JournalScan, JournalError> {
        let recovered = self.recovered.clone();
        let (pending, _) = self
            .writer
            .commit_blocking(move |ctx| still_pending(&recovered, ctx))
            .map_err(|_| JournalError::Gone)?;
        Ok(self.scan(pending))
    }

    /// [`Journal::list`] for the runtime: asks the writer thread without blocking a worker.
    pub async fn list_async(&self) -> Result<JournalScan, JournalError> {
        let recovered = self.recovered.clone();
        let (pending, _) = self
            .writer
            .write(move |ctx| still_pending(&recovered, ctx))
            .await
            .map_err(|_| JournalError::Gone)?;
        Ok(self.scan(pending))
    }

    fn scan(&self, pending: Vec<PendingReception>) -> JournalScan {
        JournalScan {
            pending,
            corrupt: self.recovered.corrupt.clone(),
        }
    }
}

/// What the previous run left that the journal still holds.
fn still_pending(recovered: &JournalScan, ctx: &mut Ctx) -> Vec<PendingReception> {
    recovered
        .pending
        .iter()
        .filter_map(|r| ctx.journal.live.get(&r.commid).cloned())
        .collect()
}

/// The journal file, owned by the spool writer thread.
#[derive(Debug)]
pub(crate) struct JournalLog {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Bytes of the file known to be whole lines.
    len: u64,
    /// Lines of the current batch, written by [`JournalLog::flush`].
    buf: Vec<u8>,
    /// The pending receptions.
    pub(crate) live: BTreeMap<String, PendingReception>,
    /// Since when lines are written but not synced.
    unsynced: Option<Instant>,
    /// The current job appended a line.
    appended: bool,
    /// A sync was asked for whatever the state (shutdown).
    forced: bool,
    compact_at: u64,
    /// [`COMPACT_MIN`] (smaller in tests).
    compact_min: u64,
    max: Numbers,
}

/// The highest commid and recvq number the journal has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Numbers {
    commid: u32,
    recv: u32,
}

impl Numbers {
    fn see(&mut self, rec: &PendingReception) {
        if let Ok(n) = rec.commid.parse::<u32>() {
            self.commid = self.commid.max(n);
        }
        if let Some(n) = recv_number(&rec.recvq_file) {
            self.recv = self.recv.max(n);
        }
    }
}

/// `recvq/fax000000042.tif` → 42.
fn recv_number(file: &str) -> Option<u32> {
    let name = file.rsplit('/').next()?;
    name.strip_prefix("fax")?.strip_suffix(".tif")?.parse().ok()
}

impl JournalLog {
    /// Replays, takes in old per-file records, rewrites, reconciles the markers and the
    /// sequence files; the journal ready for appending and what the previous run left.
    fn open(spool: &Path) -> Result<(JournalLog, JournalScan), JournalError> {
        let dir = spool.join(JOURNAL_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| JournalError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        let path = dir.join(JOURNAL_FILE);
        let mut scan = JournalScan::default();
        let mut max = Numbers::default();
        let mut live = replay(&dir, &path, &mut max, &mut scan)?;
        let markers = take_in_old_records(&dir, &mut live, &mut scan)?;
        for rec in live.values() {
            max.see(rec);
        }
        let len = rewrite(&dir, &path, &live, max).map_err(|source| JournalError::Write {
            path: path.clone(),
            source,
        })?;
        // Every start links each pending reception's marker to the journal just written (an
        // imported record's file becomes its marker) and removes markers of nothing pending.
        for commid in &markers {
            let marker = dir.join(format!("{PREFIX}{commid}"));
            if let Err(e) = fs::remove_file(&marker) {
                tracing::warn!(path = %marker.display(), "cannot update journal marker: {e}");
            }
        }
        for commid in live.keys() {
            create_marker(&dir, commid);
        }
        for (seqf, used) in [
            (spool.join("log/seqf"), max.commid),
            (spool.join("recvq/seqf"), max.recv),
        ] {
            if used > 0 {
                match seqf::ensure_past(&seqf, used) {
                    Ok(true) => tracing::warn!(
                        path = %seqf.display(),
                        "sequence file was behind the journal (number {used} used); moved past it"
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::warn!("{e}"),
                }
            }
        }
        let file = open_append(&path).map_err(|source| JournalError::Write {
            path: path.clone(),
            source,
        })?;
        scan.pending = live.values().cloned().collect();
        let log = JournalLog {
            dir,
            path,
            file,
            len,
            buf: Vec::new(),
            live,
            unsynced: None,
            appended: false,
            forced: false,
            compact_at: COMPACT_MIN.max(4 * len),
            compact_min: COMPACT_MIN,
            max,
        };
        Ok((log, scan))
    }

    /// Whether the current job appended a line; clears the flag.
    pub(crate) fn take_appended(&mut self) -> bool {
        std::mem::take(&mut self.appended)
    }

    fn append(&mut self, line: &str) {
        push_line(&mut self.buf, line);
        self.appended = true;
    }

    /// Records a reception (replacing one with the same commid) and creates its marker.
    pub(crate) fn add(&mut self, rec: &PendingReception) -> Result<PathBuf, JournalError> {
        check_commid(&rec.commid)?;
        self.append(&add_line(rec));
        self.max.see(rec);
        let marker = create_marker(&self.dir, &rec.commid);
        self.live.insert(rec.commid.clone(), rec.clone());
        Ok(marker)
    }

    /// Records how far the hand-over of `commid` got. A missing record is left missing.
    pub(crate) fn stage(&mut self, commid: &str, stage: DeliveryStage) -> Result<(), JournalError> {
        check_commid(commid)?;
        if let Some(rec) = self.live.get_mut(commid) {
            rec.delivery = stage;
            self.append(&format!("stage {commid} {}", stage.as_str()));
        }
        Ok(())
    }

    /// Forgets `commid` and removes its marker (absent is fine).
    pub(crate) fn done(&mut self, commid: &str) -> Result<(), JournalError> {
        check_commid(commid)?;
        if self.live.remove(commid).is_some() {
            self.append(&format!("done {commid}"));
        }
        let marker = self.dir.join(format!("{PREFIX}{commid}"));
        match fs::remove_file(&marker) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(JournalError::Remove {
                path: marker,
                source,
            }),
        }
    }

    /// Asks the next [`JournalLog::sync`] to sync even with nothing new.
    pub(crate) fn mark_dirty(&mut self) {
        self.forced = true;
    }

    /// Since when lines are written but not synced.
    pub(crate) fn unsynced_since(&self) -> Option<Instant> {
        self.unsynced
    }

    /// Writes the batch's lines with one `write`. On failure (a full disk) the file is cut
    /// back to its last whole line, so the lines that follow stay readable.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all(&self.buf);
        match result {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                self.unsynced.get_or_insert_with(Instant::now);
            }
            Err(_) => {
                if let Err(e) = self.file.set_len(self.len) {
                    tracing::error!(path = %self.path.display(), "cannot cut the journal back after a failed write: {e}");
                }
            }
        }
        self.buf.clear();
        result.map_err(|e| self.error(e))
    }

    /// `fdatasync` of the journal, if anything was written since the last one.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if self.unsynced.is_none() && !std::mem::take(&mut self.forced) {
            return Ok(());
        }
        self.file.sync_data().map_err(|e| self.error(e))?;
        self.unsynced = None;
        Ok(())
    }

    fn error(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("{}: {e}", self.path.display()))
    }

    /// Rewrites the journal with only what is pending once it has grown (after a batch was
    /// written and synced).
    pub(crate) fn maybe_compact(&mut self) {
        if self.len < self.compact_at || !self.buf.is_empty() {
            return;
        }
        let rewritten = rewrite(&self.dir, &self.path, &self.live, self.max)
            .and_then(|len| Ok((len, open_append(&self.path)?)));
        match rewritten {
            Ok((len, file)) => {
                self.file = file;
                self.len = len;
                self.unsynced = None;
                self.compact_at = self.compact_min.max(4 * len);
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "cannot rewrite the journal: {e}");
                // Try again after as much growth again.
                self.compact_at = self.len * 2;
            }
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// Creates the marker `pending-<commid>`: a hard link to the journal, so no file of its own
/// is created and deleted per reception. Not synced; its path. A failure is a warning.
fn create_marker(dir: &Path, commid: &str) -> PathBuf {
    let marker = dir.join(format!("{PREFIX}{commid}"));
    match fs::hard_link(dir.join(JOURNAL_FILE), &marker) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => tracing::warn!(path = %marker.display(), "cannot create journal marker: {e}"),
    }
    marker
}

/// Whether the `pending-*` file at `path` is a marker (a link to a journal, or empty) rather
/// than an older fsfax's record.
fn is_marker(path: &Path) -> bool {
    let mut head = [0u8; LOG_HEADER.len()];
    match File::open(path).and_then(|mut f| f.read(&mut head)) {
        Ok(0) => true,
        Ok(n) => head[..n] == LOG_HEADER.as_bytes()[..n],
        Err(_) => false,
    }
}

/// Writes `live` as a fresh journal (temp file, sync, rename, directory sync); its length.
fn rewrite(
    dir: &Path,
    path: &Path,
    live: &BTreeMap<String, PendingReception>,
    max: Numbers,
) -> io::Result<u64> {
    let mut out = Vec::with_capacity(256 * (live.len() + 1));
    out.extend_from_slice(LOG_HEADER.as_bytes());
    out.push(b'\n');
    push_line(
        &mut out,
        &format!("seq - commid={} recv={}", max.commid, max.recv),
    );
    for rec in live.values() {
        push_line(&mut out, &add_line(rec));
    }
    let tmp = dir.join(COMPACT_TMP);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&out)?;
        f.sync_data()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| out.len() as u64)
}

/// Reads the journal file: the pending receptions. A torn last line (a crash mid-write) is
/// ignored; a damaged line elsewhere is copied to `corrupt/` and reported.
fn replay(
    dir: &Path,
    path: &Path,
    max: &mut Numbers,
    scan: &mut JournalScan,
) -> Result<BTreeMap<String, PendingReception>, JournalError> {
    let mut live = BTreeMap::new();
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)
                .map_err(|source| JournalError::List {
                    path: path.to_path_buf(),
                    source,
                })?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(live),
        Err(source) => {
            return Err(JournalError::List {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.split_inclusive('\n');
    match lines.next() {
        None => return Ok(live),
        Some(first) if first.trim_end() == LOG_HEADER => {}
        Some(_) => {
            let moved_to = set_aside(dir, path, "journal");
            let reason = "not a journal file (no header line)".to_owned();
            tracing::error!(path = %path.display(), moved_to = %moved_to.display(), "{reason}");
            scan.corrupt.push(CorruptRecord { moved_to, reason });
            return Ok(live);
        }
    }
    let lines: Vec<&str> = lines.collect();
    let mut bad: Vec<(usize, String)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(line) = line.strip_suffix('\n') else {
            tracing::info!(path = %path.display(), "journal ends in a line torn by a crash; ignored");
            continue;
        };
        match parse_line(line) {
            Ok(Line::Add(rec)) => {
                max.see(&rec);
                live.insert(rec.commid.clone(), rec);
            }
            Ok(Line::Stage(commid, stage)) => {
                if let Some(rec) = live.get_mut(&commid) {
                    rec.delivery = stage;
                }
            }
            Ok(Line::Done(commid)) => {
                live.remove(&commid);
            }
            Ok(Line::Seq(n)) => {
                max.commid = max.commid.max(n.commid);
                max.recv = max.recv.max(n.recv);
            }
            Err(reason) if i + 1 == lines.len() => {
                tracing::info!(path = %path.display(), "journal ends in a line torn by a crash ({reason}); ignored");
            }
            Err(reason) => bad.push((i + 2, format!("{reason}: {line:?}"))),
        }
    }
    if !bad.is_empty() {
        let moved_to = dir.join(CORRUPT_DIR).join(format!(
            "journal-lines-{}",
            chrono::Local::now().format("%Y%m%d%H%M%S")
        ));
        let text: String = bad
            .iter()
            .map(|(n, l)| format!("line {n}: {l}\n"))
            .collect();
        let saved = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join(CORRUPT_DIR))
            .and_then(|()| fs::write(&moved_to, &text));
        if let Err(e) = saved {
            tracing::warn!(path = %moved_to.display(), "cannot save damaged journal lines: {e}");
        }
        for (n, reason) in bad {
            tracing::error!(path = %path.display(), "damaged journal line {n}: {reason}");
            scan.corrupt.push(CorruptRecord {
                moved_to: moved_to.clone(),
                reason: format!("line {n}: {reason}"),
            });
        }
    }
    Ok(live)
}

/// The `pending-*` files: markers (links to the journal) are listed; one holding a record (an
/// older fsfax's per-file journal) is taken into `live` unless the journal knows that commid,
/// an unreadable one is moved to `corrupt/`. Stale temp files of a crash mid-write are
/// deleted. Returns the commids of the markers and taken-in records.
fn take_in_old_records(
    dir: &Path,
    live: &mut BTreeMap<String, PendingReception>,
    scan: &mut JournalScan,
) -> Result<Vec<String>, JournalError> {
    let lerr = |source| JournalError::List {
        path: dir.to_path_buf(),
        source,
    };
    let mut markers = Vec::new();
    for entry in fs::read_dir(dir).map_err(lerr)? {
        let entry = entry.map_err(lerr)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with(TMP_PREFIX) || name == COMPACT_TMP {
            // Never renamed into place: not committed.
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), "cannot remove stale journal temp: {e}");
            }
            continue;
        }
        let Some(commid) = name.strip_prefix(PREFIX) else {
            continue;
        };
        if check_commid(commid).is_ok() && is_marker(&path) {
            markers.push(commid.to_owned());
            continue;
        }
        match read_record(&path, commid) {
            Ok(rec) => {
                live.entry(rec.commid.clone()).or_insert(rec);
                markers.push(commid.to_owned());
            }
            Err(reason) => {
                let moved_to = set_aside(dir, &path, &name);
                tracing::error!(
                    path = %path.display(),
                    moved_to = %moved_to.display(),
                    "corrupt pending-reception record: {reason}"
                );
                scan.corrupt.push(CorruptRecord { moved_to, reason });
            }
        }
    }
    Ok(markers)
}

/// Moves `path` to `corrupt/<name>` for an admin; where it is now.
fn set_aside(dir: &Path, path: &Path, name: &str) -> PathBuf {
    let corrupt = dir.join(CORRUPT_DIR);
    let target = corrupt.join(name);
    let moved = fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&corrupt)
        .and_then(|()| fs::rename(path, &target));
    match moved {
        Ok(()) => target,
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot move corrupt record aside: {e}");
            path.to_path_buf()
        }
    }
}

fn check_commid(commid: &str) -> Result<(), JournalError> {
    if commid.is_empty() || commid.len() > 20 || !commid.bytes().all(|b| b.is_ascii_digit()) {
        return Err(JournalError::BadCommid(commid.to_owned()));
    }
    Ok(())
}

/// FNV-1a, 64 bits: enough to tell a torn or damaged line from a written one.
fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Appends `<hash> <content>\n`.
fn push_line(out: &mut Vec<u8>, content: &str) {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(content.len() + 18);
    let _ = writeln!(s, "{:016x} {content}", hash(content));
    out.extend_from_slice(s.as_bytes());
}

/// `add <commid> key=value ...` with every field of the record.
fn add_line(rec: &PendingReception) -> String {
    let started = rec.started.to_string();
    let fields: [(&str, &str); 9] = [
        ("recvq_file", &rec.recvq_file),
        ("modem", &rec.modem),
        ("cidnum", &rec.cidnum),
        ("cidname", &rec.cidname),
        ("recipient", &rec.recipient),
        ("gateway", &rec.gateway),
        ("call_uuid", &rec.call_uuid),
        ("started", &started),
        ("delivery", rec.delivery.as_str()),
    ];
    let mut out = format!("add {}", rec.commid);
    for (k, v) in fields {
        out.push(' ');
        out.push_str(k);
        out.push('=');
        out.extend(utf8_percent_encode(v, LINE_SET));
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
enum Line {
    Add(PendingReception),
    Stage(String, DeliveryStage),
    Done(String),
    Seq(Numbers),
}

fn parse_line(line: &str) -> Result<Line, String> {
    let (sum, content) = line.split_once(' ').ok_or("no hash")?;
    if u64::from_str_radix(sum, 16).ok() != Some(hash(content)) || sum.len() != 16 {
        return Err("hash does not match".to_owned());
    }
    let mut parts = content.split(' ');
    let verb = parts.next().unwrap_or("");
    let commid = parts.next().ok_or("no commid")?.to_owned();
    if verb != "seq" {
        check_commid(&commid).map_err(|e| e.to_string())?;
    }
    match verb {
        "add" => {
            let mut rec = PendingReception {
                commid,
                ..PendingReception::default()
            };
            let mut started = None;
            for field in parts {
                let (k, v) = field
                    .split_once('=')
                    .ok_or_else(|| format!("field without '=': {field:?}"))?;
                let v = percent_decode_str(v)
                    .decode_utf8()
                    .map_err(|_| format!("bad escape in {k}"))?
                    .into_owned();
                set_field(&mut rec, &mut started, k, v)?;
            }
            if rec.recvq_file.is_empty() {
                return Err("no recvq_file".to_owned());
            }
            rec.started = started.ok_or("no started")?;
            Ok(Line::Add(rec))
        }
        "stage" => {
            let stage = parts.next().unwrap_or("");
            let stage =
                DeliveryStage::parse(stage).ok_or_else(|| format!("bad delivery {stage:?}"))?;
            Ok(Line::Stage(commid, stage))
        }
        "done" => Ok(Line::Done(commid)),
        "seq" => {
            let mut n = Numbers::default();
            for field in parts {
                match field.split_once('=') {
                    Some(("commid", v)) => n.commid = v.parse().map_err(|_| "bad seq")?,
                    Some(("recv", v)) => n.recv = v.parse().map_err(|_| "bad seq")?,
                    _ => {}
                }
            }
            Ok(Line::Seq(n))
        }
        other => Err(format!("unknown step {other:?}")),
    }
}

/// One `key=value` of a record (both formats). Unknown keys are ignored: newer versions may
/// add some.
fn set_field(
    rec: &mut PendingReception,
    started: &mut Option<i64>,
    k: &str,
    v: String,
) -> Result<(), String> {
    match k {
        "commid" => rec.commid = v,
        "recvq_file" => rec.recvq_file = v,
        "modem" => rec.modem = v,
        "cidnum" => rec.cidnum = v,
        "cidname" => rec.cidname = v,
        "recipient" => rec.recipient = v,
        "gateway" => rec.gateway = v,
        "call_uuid" => rec.call_uuid = v,
        "started" => *started = Some(v.parse::<i64>().map_err(|_| "bad started".to_owned())?),
        "delivery" => {
            rec.delivery = DeliveryStage::parse(&v).ok_or_else(|| format!("bad delivery {v:?}"))?;
        }
        _ => {}
    }
    Ok(())
}

/// An older fsfax's per-file record (`fsfax-pending 1`), as it wrote them.
#[cfg(test)]
fn encode(rec: &PendingReception) -> String {
    let started = rec.started.to_string();
    let fields: [(&str, &str); 10] = [
        ("commid", &rec.commid),
        ("recvq_file", &rec.recvq_file),
        ("modem", &rec.modem),
        ("cidnum", &rec.cidnum),
        ("cidname", &rec.cidname),
        ("recipient", &rec.recipient),
        ("gateway", &rec.gateway),
        ("call_uuid", &rec.call_uuid),
        ("started", &started),
        ("delivery", rec.delivery.as_str()),
    ];
    let mut out = format!("{HEADER}\n");
    for (k, v) in fields {
        out.push_str(k);
        out.push('=');
        out.extend(utf8_percent_encode(v, VALUE_SET));
        out.push('\n');
    }
    out
}

fn read_record(path: &Path, name_commid: &str) -> Result<PendingReception, String> {
    let meta = fs::metadata(path).map_err(|e| format!("cannot stat: {e}"))?;
    if meta.len() > MAX_RECORD {
        return Err(format!("too large ({} bytes)", meta.len()));
    }
    let bytes = fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    let rec = decode(&text)?;
    if rec.commid != name_commid {
        return Err(format!(
            "commid {:?} does not match the file name",
            rec.commid
        ));
    }
    Ok(rec)
}

fn decode(text: &str) -> Result<PendingReception, String> {
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err("missing header line".to_owned());
    }
    let mut rec = PendingReception::default();
    let mut started = None;
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line without '=': {line:?}"))?;
        let v = percent_decode_str(v)
            .decode_utf8()
            .map_err(|_| format!("bad escape in {k}"))?
            .into_owned();
        set_field(&mut rec, &mut started, k, v)?;
    }
    check_commid(&rec.commid).map_err(|e| e.to_string())?;
    if rec.recvq_file.is_empty() {
        return Err("no recvq_file".to_owned());
    }
    rec.started = started.ok_or_else(|| "no started".to_owned())?;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn rec(commid: &str) -> PendingReception {
        PendingReception {
            commid: commid.into(),
            recvq_file: "recvq/fax000000003.tif".into(),
            modem: "freeswitch0".into(),
            cidnum: "+49 30 1234".into(),
            cidname: "Évil\nname=x %41\0".into(),
            recipient: "12345".into(),
            gateway: "gw1".into(),
            call_uuid: "8a6c0f0e-0000-4000-8000-000000000001".into(),
            started: 1_795_345_299,
            delivery: DeliveryStage::Received,
        }
    }

    fn markers(j: &Journal) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(j.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(PREFIX))
            .collect();
        names.sort();
        names
    }

    /// Waits until the writer has written what was posted before.
    fn settle(j: &Journal) {
        let _ = j.writer.commit_blocking(|_| ()).unwrap();
    }

    /// A job run with `write_or_commit` decides whether its answer waits for the sync: the
    /// stage it wrote is still unsynced after a job that said no, and synced after one that
    /// said yes.
    #[tokio::test]
    async fn a_job_says_whether_its_answer_waits_for_the_sync() {
        let spool = tempfile::tempdir().unwrap();
        let j = Journal::open(spool.path()).unwrap();
        j.add(&rec("000000007")).unwrap();
        let unsynced = || j.writer.write(|ctx| ctx.journal.unsynced_since().is_some());
        // The stage written by one job that says whether it waits for the sync.
        let stage = |stage, durable| {
            j.writer.write_or_commit(move |ctx| {
                let staged = ctx.journal.stage("000000007", stage);
                (staged.is_ok(), durable)
            })
        };
        let (staged, written) = stage(DeliveryStage::Logged, false).await.unwrap();
        let answered = std::time::Instant::now();
        assert!(staged && written.is_ok());
        // Only the writer's idle sync, a second later, may have synced it in between.
        let waits = unsynced().await.unwrap().0;
        assert!(
            waits || answered.elapsed() >= crate::hylafax::writer::IDLE_SYNC,
            "a written stage waits for a sync"
        );
        let (staged, written) = stage(DeliveryStage::Handed, true).await.unwrap();
        assert!(staged && written.is_ok());
        assert!(
            !unsynced().await.unwrap().0,
            "the committed stage is synced"
        );
        drop(j);
        let pending = Journal::open(spool.path()).unwrap().list().unwrap().pending;
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].delivery, DeliveryStage::Handed);
    }

    #[test]
    fn add_list_remove_across_restarts() {
        let spool = tempfile::tempdir().unwrap();
        let j = Journal::open(spool.path()).unwrap();
        assert_eq!(j.dir(), spool.path().join("recvq/.fsfax"));
        let mode = fs::metadata(j.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let p = j.add(&rec("000000012")).unwrap();
        assert_eq!(p, j.dir().join("pending-000000012"));
        j.add(&rec("000000002")).unwrap();
        assert_eq!(markers(&j), ["pending-000000002", "pending-000000012"]);
        // Receptions of this run are not the previous run's.
        assert!(j.list().unwrap().pending.is_empty());
        let journal = fs::read_to_string(j.dir().join(JOURNAL_FILE)).unwrap();
        assert!(!journal.contains("Évil\n"), "{journal}");
        drop(j);
        let j = Journal::open(spool.path()).unwrap();
        let scan = j.list().unwrap();
        assert!(scan.corrupt.is_empty());
        assert_eq!(scan.pending, vec![rec("000000002"), rec("000000012")]);
        j.remove("000000002").unwrap();
        j.remove("000000002").unwrap();
        settle(&j);
        assert_eq!(j.list().unwrap().pending, vec![rec("000000012")]);
        assert_eq!(markers(&j), ["pending-000000012"]);
        drop(j);
        let j = Journal::open(spool.path()).unwrap();
        assert_eq!(j.list().unwrap().pending, vec![rec("000000012")]);
        // The journal is invisible to HylaFAX's recvq tools (no `fax*` name in recvq).
        let names: Vec<_> = fs::read_dir(spool.path().join("recvq"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("fax"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_damaged_lines_are_set_aside() {
        let spool = tempfile::tempdir().unwrap();
        let j = Journal::open(spool.path()).unwrap();
        j.add(&rec("000000001")).unwrap();
        j.add(&rec("000000002")).unwrap();
        j.set_delivery("000000002", DeliveryStage::Handed).unwrap();
        drop(j);
        let path = spool.path().join(JOURNAL_DIR).join(JOURNAL_FILE);
        let text = fs::read_to_string(&path).unwrap();
        // Damage record 1's line, and end with half a line (a crash mid-write).
        let damaged = text.replacen("cidnum=+49", "cidnum=+48", 1);
        let mut torn = add_line(&rec("000000003"));
        torn.truncate(20);
        fs::write(&path, format!("{damaged}{torn}")).unwrap();
        let j = Journal::open(spool.path()).unwrap();
        let scan = j.list().unwrap();
        let mut two = rec("000000002");
        two.delivery = DeliveryStage::Handed;
        assert_eq!(scan.pending, vec![two]);
        assert_eq!(scan.corrupt.len(), 1, "{:?}", scan.corrupt);
        assert!(
            scan.corrupt[0]
                .moved_to
                .starts_with(j.dir().join("corrupt"))
        );
        assert!(
            fs::read_to_string(&scan.corrupt[0].moved_to)
                .unwrap()
                .contains("+48")
        );
        // The rewrite at start-up left only what is pending; a second start is clean.
        assert_eq!(markers(&j), ["pending-000000002"]);
        drop(j);
        let scan = Journal::open(spool.path()).unwrap().list().unwrap();
        assert!(scan.corrupt.is_empty());
        assert_eq!(scan.pending.len(), 1);
    }

    #[test]
    fn old_per_file_records_are_taken_in_and_bad_ones_set_aside() {
        let spool = tempfile::tempdir().unwrap();
        let dir = spool.path().join(JOURNAL_DIR);
        fs::create_dir_all(&dir).unwrap();
        let mut handed = rec("000000004");
        handed.delivery = DeliveryStage::Handed;
        fs::write(dir.join("pending-000000001"), encode(&rec("000000001"))).unwrap();
        fs::write(dir.join("pending-000000004"), encode(&handed)).unwrap();
        fs::write(dir.join("pending-000000005"), b"\xff\xfe garbage").unwrap();
        fs::write(
            dir.join("pending-000000006"),
            "fsfax-pending 1\ncommid=000000006\n",
        )
        .unwrap();
        fs::write(dir.join("pending-000000007"), encode(&rec("000000008"))).unwrap();
        fs::write(dir.join(".tmp-000000009-1"), b"half").unwrap();
        fs::write(dir.join("pending-000000010"), b"").unwrap();
        fs::write(dir.join("README"), b"not ours").unwrap();
        let j = Journal::open(spool.path()).unwrap();
        let scan = j.list().unwrap();
        assert_eq!(scan.pending, vec![rec("000000001"), handed.clone()]);
        assert_eq!(scan.corrupt.len(), 3);
        for c in &scan.corrupt {
            assert!(c.moved_to.starts_with(j.dir().join("corrupt")), "{c:?}");
            assert!(c.moved_to.exists());
        }
        assert!(!j.dir().join(".tmp-000000009-1").exists());
        assert!(j.dir().join("README").exists());
        // The records now live in the journal; their files are markers (links to the journal)
        // now, and a marker without a record goes.
        assert_eq!(markers(&j), ["pending-000000001", "pending-000000004"]);
        assert!(is_marker(&j.dir().join("pending-000000001")));
        let marker = fs::metadata(j.dir().join("pending-000000001")).unwrap();
        let journal = fs::metadata(j.dir().join(JOURNAL_FILE)).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(marker.ino(), journal.ino());
        drop(j);
        let again = Journal::open(spool.path()).unwrap().list().unwrap();
        assert!(again.corrupt.is_empty());
        assert_eq!(again.pending, vec![rec("000000001"), handed]);
    }

    #[test]
    fn bad_commid_is_refused() {
        let spool = tempfile::tempdir().unwrap();
        let j = Journal::open(spool.path()).unwrap();
        for bad in ["", "../x", "12a", "1/2"] {
            assert!(matches!(j.add(&rec(bad)), Err(JournalError::BadCommid(_))));
            assert!(matches!(j.remove(bad), Err(JournalError::BadCommid(_))));
        }
    }

    #[test]
    fn old_format_round_trip() {
        let r = rec("000000042");
        assert_eq!(decode(&encode(&r)).unwrap(), r);
    }

    #[test]
    fn the_journal_moves_the_sequence_files_past_its_numbers() {
        let spool = tempfile::tempdir().unwrap();
        fs::create_dir_all(spool.path().join("log")).unwrap();
        let j = Journal::open(spool.path()).unwrap();
        let mut r = rec("000000041");
        r.recvq_file = "recvq/fax000000017.tif".into();
        j.add(&r).unwrap();
        j.remove("000000041").unwrap();
        drop(j);
        // A crash of the machine took the sequence files' last updates with it.
        fs::write(spool.path().join("log/seqf"), "40").unwrap();
        fs::write(spool.path().join("recvq/seqf"), "3").unwrap();
        drop(Journal::open(spool.path()).unwrap());
        assert_eq!(fs::read(spool.path().join("log/seqf")).unwrap(), b"42");
        assert_eq!(fs::read(spool.path().join("recvq/seqf")).unwrap(), b"18");
        // Ahead of the journal: left alone.
        fs::write(spool.path().join("log/seqf"), "100").unwrap();
        drop(Journal::open(spool.path()).unwrap());
        assert_eq!(fs::read(spool.path().join("log/seqf")).unwrap(), b"100");
    }

    #[test]
    fn a_failed_write_leaves_the_journal_readable() {
        let spool = tempfile::tempdir().unwrap();
        let (mut log, _) = JournalLog::open(spool.path()).unwrap();
        log.add(&rec("000000001")).unwrap();
        log.flush().unwrap();
        let good = log.len;
        // The next batch cannot be written (as on a full disk).
        log.file = File::open(&log.path).unwrap();
        log.add(&rec("000000002")).unwrap();
        assert!(log.flush().is_err());
        log.file = open_append(&log.path).unwrap();
        assert_eq!(fs::metadata(&log.path).unwrap().len(), good);
        log.add(&rec("000000003")).unwrap();
        log.flush().unwrap();
        log.sync().unwrap();
        drop(log);
        let (_, scan) = JournalLog::open(spool.path()).unwrap();
        let commids: Vec<_> = scan.pending.iter().map(|r| r.commid.as_str()).collect();
        assert_eq!(commids, ["000000001", "000000003"]);
    }

    #[test]
    fn the_journal_is_rewritten_when_it_grows() {
        let spool = tempfile::tempdir().unwrap();
        let (mut log, _) = JournalLog::open(spool.path()).unwrap();
        log.compact_at = 4096;
        log.compact_min = 4096;
        for i in 1..200 {
            let c = format!("{i:09}");
            log.add(&rec(&c)).unwrap();
            log.done(&c).unwrap();
            log.flush().unwrap();
            log.maybe_compact();
        }
        log.add(&rec("000000999")).unwrap();
        log.flush().unwrap();
        assert!(log.len < 4096, "{}", log.len);
        drop(log);
        let (_, scan) = JournalLog::open(spool.path()).unwrap();
        assert_eq!(scan.pending, vec![rec("000000999")]);
    }

    proptest::proptest! {
        /// Any text in any field (newlines, `%`, `=`, spaces, NUL, non-ASCII) survives a line.
        #[test]
        fn any_values_round_trip(
            commid in "[0-9]{1,20}",
            recvq_file in ".+",
            fields in proptest::collection::vec(proptest::prelude::any::<String>(), 6),
            started in proptest::prelude::any::<i64>(),
        ) {
            let r = PendingReception {
                commid,
                recvq_file,
                modem: fields[0].clone(),
                cidnum: fields[1].clone(),
                cidname: fields[2].clone(),
                recipient: fields[3].clone(),
                gateway: fields[4].clone(),
                call_uuid: fields[5].clone(),
                started,
                delivery: DeliveryStage::Logged,
            };
            let mut out = Vec::new();
            push_line(&mut out, &add_line(&r));
            let text = String::from_utf8(out).unwrap();
            proptest::prop_assert_eq!(text.lines().count(), 1, "one line: {:?}", text);
            proptest::prop_assert_eq!(parse_line(text.trim_end_matches('\n')).unwrap(), Line::Add(r));
        }
    }

    #[test]
    fn delivery_stage_is_durable_and_old_records_read_as_received() {
        let spool = tempfile::tempdir().unwrap();
        let j = Journal::open(spool.path()).unwrap();
        j.add(&rec("000000005")).unwrap();
        j.set_delivery("000000005", DeliveryStage::Handed).unwrap();
        // Setting the stage of a record that is gone does not bring it back.
        j.set_delivery("000000007", DeliveryStage::Logged).unwrap();
        drop(j);
        let scan = Journal::open(spool.path()).unwrap().list().unwrap();
        assert_eq!(scan.pending.len(), 1);
        assert_eq!(scan.pending[0].delivery, DeliveryStage::Handed);
        // A record written before stages existed has no `delivery` line.
        let old = encode(&rec("000000006")).replace("delivery=received\n", "");
        assert!(!old.contains("delivery"));
        assert_eq!(decode(&old).unwrap().delivery, DeliveryStage::Received);
    }
}
