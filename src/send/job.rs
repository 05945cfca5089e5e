//! The locked queue file of the job being sent, and the fields fsfaxsend owns in it. Every
//! field is written through a method named for what happened (a dial, the answer, a page), so
//! the qfile's tags and their errors live here only.

use std::path::Path;
use std::time::Duration;

use crate::hylafax::qfile::{QFile, QFileError};
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
        Ok(Job {
            q,
            note: None,
            dial_counted: false,
        })
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

    /// Says what is being dialled before the originate goes out, and raises `totdials` and
    /// `ndials` on the attempt's first originate only: faxsend dials once per attempt, and
    /// trying the next gateway is how this one dial reaches the number (a dead trunk must not
    /// use up `maxdials`).
    pub fn count_dial(&mut self, status: &str) {
        if !self.dial_counted {
            self.dial_counted = true;
            let (tot, n) = (self.q.totdials() + 1, self.q.ndials() + 1);
            self.set_u32("totdials", tot);
            self.set_u32("ndials", n);
        }
        self.progress(status);
    }

    /// The call was answered: one more try, and the dial count starts again.
    pub fn connected(&mut self, dialled: &str) {
        let tries = self.q.tottries() + 1;
        self.set_u32("tottries", tries);
        self.set_u32("ndials", 0);
        self.progress(&format!("Connected to {dialled}"));
    }

    /// The fax negotiated: the remote's id and the rate.
    pub fn negotiated(&mut self, csi: Option<&str>, rate: u32, ecm: bool) {
        if let Some(csi) = csi {
            self.set("csi", csi);
        }
        self.set("signalrate", &format!("{rate} bit/s"));
        self.progress(&format!("Sending {rate}{}", if ecm { "/ECM" } else { "" }));
    }

    /// One more page went through: `npages` is the job's total so far.
    pub fn page_sent(&mut self, npages: u32, format: Option<DataFormat>) {
        self.set_u32("npages", npages);
        if let Some(df) = format {
            self.set("dataformat", df.hylafax_name());
        }
        self.save();
    }

    /// The first unsent page of each document (`fax:` entries), so a retry resumes there.
    pub fn resume_at(&mut self, first_pages: &[u32]) {
        if let Err(e) = self.q.set_fax_first_pages(first_pages) {
            tracing::warn!("cannot record page progress: {e}");
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

    /// Writes the qfile as it is now.
    fn save(&mut self) {
        if let Err(e) = self.q.write() {
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
