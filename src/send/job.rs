//! The locked queue file of the job being sent, and the fields fsfaxsend owns in it. Every
//! field is written through a method named for what happened (a dial, the answer, a page), so
//! the qfile's tags and their errors live here only.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use crate::hylafax::modem::{FaxSendInfo, FaxqFifo, FaxqMessage, JobEvent};
use crate::hylafax::qfile::{self, QFile, QFileError};
use crate::hylafax::xferfaxlog::DataFormat;

use super::Attempt;

/// How long to wait for another fsfaxsend holding the same qfile.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The job's qfile, locked for the whole attempt.
pub struct Job {
    q: QFile,
    /// Said in the final status whatever the verdict (e.g. "sent without tag line").
    note: Option<String>,
    /// This run (one attempt) has counted its dial.
    dial_counted: bool,
    /// faxq's FIFO, told about the job's progress as faxsend tells it (see [`Job::tell`]).
    faxq: Option<FaxqFifo>,
    /// Files this attempt wrote whose sync was put off (the commid's seqf on a machine without
    /// a boot id, see `seqf::next_commid`), until their background sync has been seen to
    /// succeed ([`Job::defer_sync`]).
    deferred: Vec<Deferred>,
}

/// A file whose sync was put off, and the background sync of it (`None`: none could start).
struct Deferred {
    file: File,
    sync: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Deferred {
    /// Done with the file: its background sync's outcome (`None`: none started, or it has
    /// not finished) counts when it succeeded; otherwise the file is synced here (a failure
    /// is logged: the qfile's own sync still follows).
    fn settle(self, background: Option<Result<std::io::Result<()>, tokio::task::JoinError>>) {
        match background {
            Some(Ok(Ok(()))) => return,
            Some(Ok(Err(e))) => tracing::warn!("background sync failed: {e}"),
            Some(Err(e)) => tracing::warn!("background sync lost: {e}"),
            None => {}
        }
        if let Err(e) = self.file.sync_data() {
            tracing::warn!("cannot sync a deferred spool file: {e}");
        }
    }
}

impl Job {
    /// Locks the qfile and marks the attempt as a retry at once, so that whatever happens next
    /// (a crash, `kill -9`) faxq never reads this attempt as done.
    ///
    /// The qfile is synced at two points only: before the call is placed (the dial count and
    /// this retry mark, [`Job::count_dial`]) and with the verdict ([`Job::finish`]). Every other
    /// write (this one, the commid, progress, pages) reaches faxq at once through the page
    /// cache and survives any death of fsfaxsend; a crash of the whole machine can take the
    /// qfile back to the dial, which is still an honest retry. Before this, each status line
    /// was synced: ten syncs for a 2-page fax, most of its run time (issue 13).
    pub fn open(path: &Path) -> Result<Job, QFileError> {
        let mut q = QFile::open_locked_timeout(path, LOCK_WAIT)?;
        q.set("returned", "0")?;
        q.set(
            "status",
            &format!(
                "Send attempt in progress (fsfaxsend pid {})",
                std::process::id()
            ),
        )?;
        q.write_cached()?;
        Ok(Job {
            q,
            note: None,
            dial_counted: false,
            faxq: None,
            deferred: Vec::new(),
        })
    }

    /// From here on, progress goes to faxq through `fifo` too: `*<job>:c` when the call is
    /// placed, `C` when it is answered, `d` per page and `D` per document sent, as faxsend's
    /// `notifyCallPlaced` / `notifyConnected` / `notifyPageSent` / `notifyDocumentSent` do.
    pub fn report_to(&mut self, fifo: FaxqFifo) {
        self.faxq = Some(fifo);
    }

    /// One job message to faxq. faxq only posts it to its triggers (`faxwatch`), except `D`,
    /// on which it releases the document's imaged file; nothing depends on delivery, so a
    /// faxq that is not running (or a full FIFO, bounded to about a second) is only logged.
    pub fn tell(&self, event: JobEvent, info: Option<&FaxSendInfo>) {
        let (Some(fifo), Ok(jobid)) = (&self.faxq, self.q.jobid()) else {
            return;
        };
        let info = info.map(FaxSendInfo::encode).unwrap_or_default();
        let sent = FaxqMessage::job(jobid, event, &info).and_then(|msg| fifo.send(&msg));
        if let Err(e) = sent {
            tracing::debug!(?event, "faxq not told: {e}");
        }
    }

    /// The parsed qfile, to read the job's values.
    pub fn q(&self) -> &QFile {
        &self.q
    }

    /// The attempt's communication id, written at once so faxstat shows it.
    pub fn set_commid(&mut self, commid: &str) {
        self.set("commid", commid);
        self.save();
    }

    /// `file` was written and its sync put off: it is synced now, in the background, while
    /// the attempt prepares the fax and connects to FreeSWITCH, and [`Job::count_dial`]
    /// waits for that sync before the dial (or [`Job::finish`] syncs it with the verdict).
    pub fn defer_sync(&mut self, file: File) {
        let sync = file
            .try_clone()
            .inspect_err(|e| tracing::warn!("cannot sync a spool file in the background: {e}"))
            .ok()
            .map(|dup| tokio::task::spawn_blocking(move || dup.sync_data()));
        self.deferred.push(Deferred { file, sync });
    }

    /// Says what is being dialled before the originate goes out, and raises `totdials` and
    /// `ndials` on the attempt's first originate only: faxsend dials once per attempt, and
    /// trying the next gateway is how this one dial reaches the number (a dead trunk must not
    /// use up `maxdials`). Returns once the count, and every file whose sync was put off, is
    /// durable.
    pub async fn count_dial(&mut self, status: &str) {
        let first = !self.dial_counted;
        if first {
            self.dial_counted = true;
            let (tot, n) = (self.q.totdials() + 1, self.q.ndials() + 1);
            self.set_u32("totdials", tot);
            self.set_u32("ndials", n);
        }
        self.set("status", status);
        for mut d in std::mem::take(&mut self.deferred) {
            let result = match d.sync.take() {
                Some(sync) => Some(sync.await),
                None => None,
            };
            d.settle(result);
        }
        // Durable before the originate: a machine that crashes mid-call comes back with the
        // dial counted and the attempt marked as a retry.
        self.write(true);
        if first {
            self.tell(JobEvent::CallPlaced, None);
        }
    }

    /// Makes the files whose sync was put off durable without waiting: a background sync
    /// already seen to succeed counts, any other file is synced here.
    fn settle_deferred_now(&mut self) {
        use futures_util::FutureExt;
        for mut d in std::mem::take(&mut self.deferred) {
            let result = d.sync.take().and_then(FutureExt::now_or_never);
            d.settle(result);
        }
    }

    /// The call was answered: one more try, and the dial count starts again.
    pub fn connected(&mut self, dialled: &str) {
        let tries = self.q.tottries() + 1;
        self.set_u32("tottries", tries);
        self.set_u32("ndials", 0);
        self.progress(&format!("Connected to {dialled}"));
        self.tell(JobEvent::Connected, None);
    }

    /// The fax negotiated: the remote's id and the rate.
    pub fn negotiated(&mut self, csi: Option<&str>, rate: u32, ecm: bool) {
        if let Some(csi) = csi {
            self.set("csi", csi);
        }
        self.set("signalrate", &format!("{rate} bit/s"));
        self.progress(&format!("Sending {rate}{}", if ecm { "/ECM" } else { "" }));
    }

    /// Pages went through: `npages` is the job's total so far, `first_pages` the first unsent
    /// page of each `fax:` entry still in the qfile, written together so that whatever stops
    /// the attempt next (even `kill -9`), the retry resumes at the page `npages` counts to.
    pub fn pages_sent(&mut self, npages: u32, first_pages: &[u32], format: Option<DataFormat>) {
        self.set_u32("npages", npages);
        if let Some(df) = format {
            self.set("dataformat", df.hylafax_name());
        }
        if let Err(e) = self.q.set_fax_first_pages(first_pages) {
            tracing::warn!("cannot record page progress: {e}");
        }
        self.save();
    }

    /// A document went through: its `fax:` entry (the `index`-th still in the qfile) leaves
    /// the job and its saved source takes its base name, as faxsend's `notifyDocumentSent`
    /// (`renameSaved`, then the item removed). Not written yet: the caller writes with the
    /// pages ([`Job::pages_sent`]) before telling faxq `D`.
    pub fn document_sent(&mut self, index: usize) {
        let removed = self.q.remove_fax_entry(index, |source| {
            let base = qfile::base_document(source);
            if base == source {
                return None;
            }
            let (from, to) = (bytes_path(source), bytes_path(&base));
            // faxq's cwd is the spool, and ours: the paths are relative to it, as faxsend's.
            if let Err(e) = std::fs::rename(from, to) {
                // Kept under its own name (faxsend would unlink it): faxq's cleanup finds it.
                tracing::warn!(from = %from.display(), "cannot rename the sent document's source: {e}");
                return None;
            }
            // A rename between two links of one file does nothing: then drop the job's link.
            let _ = std::fs::remove_file(from);
            Some(base)
        });
        if let Err(e) = removed {
            tracing::warn!("cannot remove the sent document from the queue file: {e}");
        }
    }

    /// Sets the status shown by faxstat and writes the qfile. A write failure is logged, never
    /// fatal: the attempt goes on and the final write tries again.
    pub fn progress(&mut self, status: &str) {
        self.set("status", status);
        self.save();
    }

    /// Keeps `text` for the final status: [`Job::finish`] adds it to the verdict's own, whatever
    /// the verdict (e.g. "Tag line not imaged: ...").
    pub fn note(&mut self, text: &str) {
        self.note = Some(text.to_string());
    }

    /// Writes the verdict (`status`, `statuscode`, `returned`, and what the call learned) and
    /// returns the exit status that agrees with it. The one place the verdict is written.
    pub fn finish(&mut self, attempt: &Attempt) -> u8 {
        // No dial came: the commid's seqf is durable before the verdict that names the commid.
        self.settle_deferred_now();
        let v = &attempt.verdict;
        let returned = v.disposition.returned();
        let status = match &self.note {
            Some(note) if v.status.is_empty() => note.clone(),
            Some(note) => format!("{}; {note}", v.status),
            None => v.status.clone(),
        };
        self.set("status", &status);
        self.set("statuscode", &v.statuscode.to_string());
        self.set("returned", &returned.to_string());
        if v.disposition == super::Disposition::Retry {
            self.leave_retry_time_to_faxq();
        }
        if let Some(csi) = &attempt.remote_id {
            self.set("csi", csi);
        }
        if let Some(rate) = attempt.signal_rate {
            self.set("signalrate", &format!("{rate} bit/s"));
        }
        if let Some(df) = attempt.data_format {
            self.set("dataformat", df.hylafax_name());
        }
        if let Some(commid) = &attempt.commid {
            self.set("commid", commid);
        }
        if let Err(e) = self.q.write() {
            // The qfile still says `returned:0` from the start of the attempt (or a later
            // progress write), so faxq retries: never a false "done".
            tracing::error!("cannot write the result into the queue file: {e}");
            return super::Disposition::Retry.returned();
        }
        returned
    }

    /// A retry whose `tts:` is not yet in the past (a first attempt that ended in the second
    /// it was due) gets `tts:` one second back. faxq computes the retry time only for a `tts`
    /// before its own clock (`now + retrytime`, else its requeue interval) and retries a job
    /// whose `tts` *equals* it at once: a busy number was redialled in the same second, and
    /// the job then waited for a modem announcement that may never come. faxsend writes its
    /// own `tts:` (its JobReq* delays) on every retry; fsfax leaves the delay to faxq, as
    /// GOfax.IP does.
    fn leave_retry_time_to_faxq(&mut self) {
        let now = chrono::Utc::now().timestamp();
        if self.q.get_i64("tts").is_some_and(|tts| tts >= now) {
            self.set("tts", &(now - 1).to_string());
        }
    }

    /// Writes the qfile as it is now (not synced: see [`Job::open`]).
    pub fn save(&mut self) {
        self.write(false);
    }

    /// Writes the qfile, synced or not; a failure is logged, never fatal.
    fn write(&mut self, sync: bool) {
        let written = if sync {
            self.q.write()
        } else {
            self.q.write_cached()
        };
        if let Err(e) = written {
            tracing::warn!("cannot update the queue file: {e}");
        }
    }

    fn set(&mut self, tag: &str, value: &str) {
        if let Err(e) = self.q.set(tag, value) {
            tracing::warn!("cannot set {tag} in the queue file: {e}");
        }
    }

    fn set_u32(&mut self, tag: &str, value: u32) {
        if let Err(e) = self.q.set_u32(tag, value) {
            tracing::warn!("cannot set {tag} in the queue file: {e}");
        }
    }
}

fn bytes_path(b: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fax::{Disposition, JobResult};

    fn qfile(dir: &Path, tts: i64) -> std::path::PathBuf {
        let path = dir.join("q1");
        std::fs::write(
            &path,
            format!(
                "tts:{tts}\nkilltime:{}\nretrytime:0\nstate:6\nndials:0\ntotdials:0\n\
                 maxdials:12\nexternal:12345\nnumber:12345\njobid:1\nstatus:\nreturned:7\n\
                 fax:0::docq/doc1.tif\n",
                tts + 3600
            ),
        )
        .unwrap();
        path
    }

    fn finish(path: &Path, disposition: Disposition) -> Option<i64> {
        let mut job = Job::open(path).unwrap();
        let verdict = JobResult {
            disposition,
            status: "Busy signal detected".into(),
            statuscode: 0,
            counts_as_dial: true,
            counts_as_try: false,
        };
        job.finish(&super::super::Attempt::verdict_only(verdict));
        drop(job);
        let text = std::fs::read(path).unwrap();
        qfile::QFileContent::parse(path, &text)
            .unwrap()
            .get_i64("tts")
    }

    /// A retry that ends in the second its `tts` names leaves faxq a `tts` in the past, so
    /// faxq schedules the retry instead of redialling at once; a `tts` already past is kept,
    /// and a done job's is not touched.
    #[test]
    fn a_retry_never_leaves_a_tts_faxq_would_redial_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let now = chrono::Utc::now().timestamp();
        let path = qfile(dir.path(), now + 5);
        let tts = finish(&path, Disposition::Retry).unwrap();
        assert!(
            tts < chrono::Utc::now().timestamp(),
            "tts {tts} not in the past"
        );
        let path = qfile(dir.path(), now - 100);
        assert_eq!(finish(&path, Disposition::Retry), Some(now - 100));
        let path = qfile(dir.path(), now + 5);
        assert_eq!(finish(&path, Disposition::Done), Some(now + 5));
    }
}
