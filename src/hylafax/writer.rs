//! The spool writer: one thread that does fsfaxd's spool writes in order, with group commit.
//!
//! fsfaxd's rule for blocking I/O: nothing that syncs, takes a file lock or reads or writes a
//! spool file runs on the threads the calls share. The journal, the sequence files, xferfaxlog
//! and the session logs are written here, by one thread, in the order the calls asked; so is
//! the received document examined (its pages counted, HylaFAX's tags added, its mode set),
//! batched with the other calls' jobs instead of waking a blocking-pool thread for each
//! document (issue 13: 16 -> 10 context switches and about a tenth of the CPU per reception).
//!
//! Work arrives as jobs (closures on [`Ctx`]). The thread takes everything queued at once (a
//! batch), runs it, writes what the batch appended to the journal and the session logs (one
//! `write` per file), then, if any job asked for durability, makes one `fdatasync` of the
//! journal and answers every job of the batch together: one sync covers every record that
//! became due at the same time, and each caller waits for the sync that covers its own record.
//!
//! Answers mean: [`SpoolWriter::write`] — what the job wrote is in the page cache (it survives
//! a killed fsfaxd); [`SpoolWriter::commit`] — it is on disk (it survives a crash of the
//! machine). [`SpoolWriter::post`] is for session-log lines nobody waits for: they ride with the
//! next batch, written at the latest [`LAZY`] after they were posted.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::journal::JournalLog;

/// Longest a posted session-log line waits for a batch to ride with.
pub const LAZY: Duration = Duration::from_millis(50);
/// Records written without a sync (a removal, a `logged` stage) are synced this long after
/// the writer last had work, if no commit came first.
pub const IDLE_SYNC: Duration = Duration::from_secs(1);
/// How long a job somebody waits for gathers others before its batch runs. A reception waits
/// for the writer three or four times in a call of many seconds (its recvq number, its
/// journal entry, its delivery), so this adds well under 0.1 s to a call; under a steady load
/// of calls it lets one wake of this thread, one sync and one wake of the calls' thread serve
/// several calls, where each job had them to itself (issue 13: at 100 calls at once, 23 -> 17
/// context switches and 0.92 -> 0.77 ms of CPU per reception).
pub const GATHER: Duration = Duration::from_millis(20);

type Job = Box<dyn FnOnce(&mut Ctx) + Send>;
type Answer = Box<dyn FnOnce(io::Result<()>) + Send>;

/// The writer thread is gone (it could not be started, or the process is ending).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the spool writer thread is not running")]
pub struct WriterGone;

/// A handle on the writer thread. Clone freely; the thread writes what is queued and ends
/// when the last handle is dropped.
#[derive(Debug)]
pub struct SpoolWriter {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Mutex<Queue>,
    wake: Condvar,
    next_log: AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolWriter").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// A queued job has someone waiting for it: the writer starts its batch by this instant
    /// ([`GATHER`] after the first such job).
    urgent: Option<Instant>,
    /// When the oldest queued job nobody waits for was posted.
    lazy_since: Option<Instant>,
    /// The writer sleeps, until this instant (`None`: until woken).
    sleeping: Option<Option<Instant>>,
    handles: usize,
    gone: bool,
}

impl Clone for SpoolWriter {
    fn clone(&self) -> Self {
        self.inner.lock().handles += 1;
        SpoolWriter {
            inner: self.inner.clone(),
        }
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        let mut q = self.inner.lock();
        q.handles -= 1;
        if q.handles == 0 {
            drop(q);
            self.inner.wake.notify_one();
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SpoolWriter {
    /// Starts the thread, which owns the journal from now on.
    pub(crate) fn start(journal: JournalLog) -> io::Result<SpoolWriter> {
        let inner = Arc::new(Inner {
            queue: Mutex::new(Queue {
                handles: 1,
                ..Queue::default()
            }),
            wake: Condvar::new(),
            next_log: AtomicU64::new(1),
        });
        let thread = inner.clone();
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || run(&thread, Ctx::new(journal)))?;
        Ok(SpoolWriter { inner })
    }

    fn push(&self, job: Job, urgent: bool) -> Result<(), WriterGone> {
        let mut q = self.inner.lock();
        if q.gone {
            return Err(WriterGone);
        }
        q.jobs.push(job);
        let wake = if urgent {
            let due = *q.urgent.get_or_insert_with(|| Instant::now() + GATHER);
            // Asleep with no deadline, or one later than this job's batch is due.
            matches!(q.sleeping, Some(until) if until.is_none_or(|t| t > due))
        } else {
            let since = *q.lazy_since.get_or_insert_with(Instant::now);
            // Asleep with no deadline, or one later than this line may wait.
            matches!(q.sleeping, Some(until) if until.is_none_or(|t| t > since + LAZY))
        };
        drop(q);
        if wake {
            self.inner.wake.notify_one();
        }
        Ok(())
    }

    /// Queues `work` without waiting for it (session-log lines).
    pub fn post(&self, work: impl FnOnce(&mut Ctx) + Send + 'static) {
        let _ = self.push(Box::new(work), false);
    }

    /// Runs `work` on the writer thread; answers once what it wrote is written (a killed
    /// fsfaxd loses none of it). The second value is the outcome of writing what `work`
    /// appended to the journal (always `Ok` when it appended nothing).
    pub async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Ctx) -> T + Send + 'static,
    ) -> Result<(T, io::Result<()>), WriterGone> {
        self.ask(work, false).await
    }

    /// Runs `work` on the writer thread; answers once what it wrote is on disk: the journal's
    /// `fdatasync` that covers it, shared with every job of the same batch.
    pub async fn commit<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Ctx) -> T + Send + 'static,
    ) -> Result<(T, io::Result<()>), WriterGone> {
        self.ask(work, true).await
    }

    /// [`SpoolWriter::commit`] for a caller outside the runtime (tools, tests): blocks.
    pub fn commit_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Ctx) -> T + Send + 'static,
    ) -> Result<(T, io::Result<()>), WriterGone> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.push(
            Box::new(move |ctx: &mut Ctx| {
                let value = work(ctx);
                ctx.answer_after(true, Box::new(move |r| drop(tx.send((value, r)))));
            }),
            true,
        )?;
        rx.recv().map_err(|_| WriterGone)
    }

    /// Runs `work` on the writer thread; `work` says with its value whether the answer waits
    /// for the sync ([`SpoolWriter::commit`]) or only for the write ([`SpoolWriter::write`]).
    pub async fn write_or_commit<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Ctx) -> (T, bool) + Send + 'static,
    ) -> Result<(T, io::Result<()>), WriterGone> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.push(
            Box::new(move |ctx: &mut Ctx| {
                let (value, durable) = work(ctx);
                ctx.answer_after(durable, Box::new(move |r| drop(tx.send((value, r)))));
            }),
            true,
        )?;
        rx.await.map_err(|_| WriterGone)
    }

    async fn ask<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Ctx) -> T + Send + 'static,
        durable: bool,
    ) -> Result<(T, io::Result<()>), WriterGone> {
        self.write_or_commit(move |ctx| (work(ctx), durable)).await
    }

    /// Waits until everything queued before is written and synced (at shutdown).
    pub async fn flushed(&self) {
        let _ = self.commit(|ctx| ctx.journal.mark_dirty()).await;
    }

    /// A new session-log id (see [`Ctx::log_open`]).
    pub(crate) fn new_log_id(&self) -> u64 {
        self.inner.next_log.fetch_add(1, Ordering::Relaxed)
    }
}

/// What a job works with, on the writer thread.
pub struct Ctx {
    /// The reception journal.
    pub(crate) journal: JournalLog,
    logs: HashMap<u64, LogFile>,
    /// Answers due once the batch is written: (appended to the journal, answer).
    written: Vec<(bool, Answer)>,
    /// Answers due once the batch is synced.
    synced: Vec<(bool, Answer)>,
}

struct LogFile {
    path: PathBuf,
    file: Option<File>,
    buf: Vec<u8>,
    closing: bool,
}

impl Ctx {
    fn new(journal: JournalLog) -> Ctx {
        Ctx {
            journal,
            logs: HashMap::new(),
            written: Vec::new(),
            synced: Vec::new(),
        }
    }

    fn answer_after(&mut self, durable: bool, answer: Answer) {
        let entry = (self.journal.take_appended(), answer);
        if durable {
            self.synced.push(entry);
        } else {
            self.written.push(entry);
        }
    }

    /// Opens (creating, 0600, append) the session log `id` at `path`. A failure is logged
    /// once; the lines of that log are then dropped (a session log never stops a fax).
    pub(crate) fn log_open(&mut self, id: u64, path: PathBuf) {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path);
        let file = match file {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!("{}: cannot create session log: {e}", path.display());
                None
            }
        };
        self.logs.insert(
            id,
            LogFile {
                path,
                file,
                buf: Vec::new(),
                closing: false,
            },
        );
    }

    /// Appends `text` to session log `id` (written with the batch).
    pub(crate) fn log_line(&mut self, id: u64, text: &[u8]) {
        if let Some(log) = self.logs.get_mut(&id) {
            if log.file.is_some() {
                log.buf.extend_from_slice(text);
            }
        }
    }

    /// Closes session log `id` once its lines are written.
    pub(crate) fn log_close(&mut self, id: u64) {
        if let Some(log) = self.logs.get_mut(&id) {
            log.closing = true;
        }
    }

    /// The end of a batch: the session logs, the journal, the answers.
    fn finish_batch(&mut self) {
        self.logs.retain(|_, log| {
            if let (Some(file), false) = (&mut log.file, log.buf.is_empty()) {
                // One write per file and batch; O_APPEND keeps other writers' lines whole.
                if let Err(e) = file.write_all(&log.buf) {
                    tracing::warn!(path = %log.path.display(), "cannot write session log: {e}");
                }
                log.buf.clear();
            }
            !log.closing
        });
        let written = self.journal.flush();
        for (appended, answer) in self.written.drain(..) {
            answer(if appended { copy(&written) } else { Ok(()) });
        }
        if !self.synced.is_empty() {
            let synced = written.and_then(|()| self.journal.sync());
            for (appended, answer) in self.synced.drain(..) {
                answer(if appended { copy(&synced) } else { Ok(()) });
            }
        }
        self.journal.maybe_compact();
    }
}

fn copy(r: &io::Result<()>) -> io::Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    }
}

enum Next {
    Batch(Vec<Job>),
    IdleSync,
    Exit,
}

fn run(inner: &Inner, mut ctx: Ctx) {
    loop {
        let idle_sync = ctx.journal.unsynced_since().map(|t| t + IDLE_SYNC);
        match next(inner, idle_sync) {
            Next::Batch(jobs) => {
                for job in jobs {
                    ctx.journal.take_appended();
                    job(&mut ctx);
                }
                ctx.finish_batch();
            }
            Next::IdleSync => {
                if let Err(e) = ctx.journal.sync() {
                    tracing::error!("{e}");
                }
            }
            Next::Exit => {
                ctx.finish_batch();
                let _ = ctx.journal.sync();
                return;
            }
        }
    }
}

/// Waits for the next batch: [`GATHER`] after the first queued job with a waiter, [`LAZY`]
/// after the first line nobody waits for, or an idle sync when there is nothing to do.
fn next(inner: &Inner, idle_sync: Option<Instant>) -> Next {
    let mut q = inner.lock();
    loop {
        let now = Instant::now();
        let lazy_due = q.lazy_since.map(|t| t + LAZY);
        // A job with a waiter takes the lines nobody waits for with it.
        let due = match (q.urgent, lazy_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if due.is_some_and(|t| t <= now) || (q.handles == 0 && !q.jobs.is_empty()) {
            q.urgent = None;
            q.lazy_since = None;
            return Next::Batch(std::mem::take(&mut q.jobs));
        }
        if q.handles == 0 {
            q.gone = true;
            return Next::Exit;
        }
        if q.jobs.is_empty() && idle_sync.is_some_and(|t| t <= now) {
            return Next::IdleSync;
        }
        let until = match (due, idle_sync.filter(|_| q.jobs.is_empty())) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        q.sleeping = Some(until);
        q = match until {
            Some(t) => {
                inner
                    .wake
                    .wait_timeout(q, t.saturating_duration_since(now))
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => inner.wake.wait(q).unwrap_or_else(|e| e.into_inner()),
        };
        q.sleeping = None;
    }
}
