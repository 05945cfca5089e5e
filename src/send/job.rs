//! The locked queue file of the job being sent, and the fields fsfaxsend owns in it.

use std::path::Path;
use std::time::Duration;

use crate::hylafax::qfile::{QFile, QFileError};

use super::Attempt;

/// How long to wait for another fsfaxsend holding the same qfile.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The job's qfile, locked for the whole attempt.
pub struct Job {
    q: QFile,
    /// Said in the final status whatever the verdict (e.g. "sent without tag line").
    note: Option<String>,
}

impl Job {
    /// Locks the qfile and marks the attempt as a retry at once, so that whatever happens next
    /// (a crash, `kill -9`, a power cut) faxq never reads this attempt as done.
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
        q.write()?;
        Ok(Job { q, note: None })
    }

    /// The parsed qfile.
    pub fn q(&self) -> &QFile {
        &self.q
    }

    /// The parsed qfile, for updates written by [`Job::save`] or [`Job::finish`].
    pub fn q_mut(&mut self) -> &mut QFile {
        &mut self.q
    }

    /// Sets the status shown by faxstat and writes the qfile. A write failure is logged, never
    /// fatal: the attempt goes on and the final write tries again.
    pub fn progress(&mut self, status: &str) {
        if let Err(e) = self.q.set("status", status) {
            tracing::warn!("{e}");
        }
        self.save();
    }

    /// Keeps `text` for the final status, after the verdict's own.
    pub fn note(&mut self, text: &str) {
        self.note = Some(text.to_string());
    }

    /// Writes the qfile as it is now.
    pub fn save(&mut self) {
        if let Err(e) = self.q.write() {
            tracing::warn!("cannot update the queue file: {e}");
        }
    }

    /// Writes the verdict (`status`, `statuscode`, `returned`, and what the call learned) and
    /// returns the exit status that agrees with it.
    pub fn finish(&mut self, attempt: &Attempt) -> u8 {
        let v = &attempt.verdict;
        let returned = v.disposition.returned();
        let mut set = |tag: &str, value: &str| {
            if let Err(e) = self.q.set(tag, value) {
                tracing::warn!("{e}");
            }
        };
        match &self.note {
            Some(note) if v.status.is_empty() => set("status", note),
            Some(note) => set("status", &format!("{}; {note}", v.status)),
            None => set("status", &v.status),
        }
        set("statuscode", &v.statuscode.to_string());
        set("returned", &returned.to_string());
        if let Some(csi) = &attempt.remote_id {
            set("csi", csi);
        }
        if let Some(rate) = attempt.signal_rate {
            set("signalrate", &format!("{rate} bit/s"));
        }
        if let Some(df) = &attempt.data_format {
            set("dataformat", df);
        }
        if let Some(commid) = &attempt.commid {
            set("commid", commid);
        }
        if let Err(e) = self.q.write() {
            // The qfile still says `returned:0` from the start of the attempt (or a later
            // progress write), so faxq retries: never a false "done".
            tracing::error!("cannot write the result into the queue file: {e}");
            return super::Disposition::Retry.returned();
        }
        returned
    }
}
