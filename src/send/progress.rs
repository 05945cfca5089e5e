//! The job's page progress, as faxsend keeps it and tells it: after every page the qfile says
//! how many pages the job has sent (`npages`, which faxstat and every client show as "3:5") and
//! where each document resumes (the `fax:` entries' first page), and faxq gets `*<job>:d` with
//! the page's `FaxSendInfo`; once a document has gone through, its `fax:` entry leaves the qfile
//! and faxq gets `*<job>:D` (faxsend's `notifyPageSent` and `notifyDocumentSent`).
//!
//! A document is taken out of the job only when it is certain to be delivered: one followed by
//! another document when that document's last page is confirmed (the receiver acknowledged it
//! and the fax goes on), the last one when the attempt's verdict is done. A call that confirmed
//! every page but ended without a result keeps its last entry, as before, for the verdict to
//! decide.

use std::time::Instant;

use crate::fax::FaxResult;
use crate::hylafax::modem::{FaxSendInfo, JobEvent};
use crate::hylafax::xferfaxlog::{DataFormat, Params};

use super::Job;
use super::document::JobDocument;

/// The documents of the job and how far this attempt got through them.
#[derive(Debug)]
pub(super) struct Progress {
    docs: Vec<Doc>,
    /// The job's `npages` before this attempt.
    before: u32,
    /// The job's pages: those sent before and those left in its documents.
    total: u32,
    /// Pages of this call accounted for so far.
    in_call: u32,
    /// When the current page started (the answer, then each confirmed page).
    page_started: Instant,
    /// When the current document started.
    doc_started: Instant,
}

#[derive(Debug)]
struct Doc {
    doc: JobDocument,
    /// Its `fax:` entry has left the qfile and faxq was told `D`.
    sent: bool,
}

/// What a page or a document message carries besides the counts.
#[derive(Debug, Clone)]
pub(super) struct Session {
    /// `Class2Params::encode` of the negotiated parameters.
    pub params: u32,
    /// The page encoding, for the qfile's `dataformat`.
    pub format: Option<DataFormat>,
    pub commid: String,
}

impl Session {
    /// What the call's events said so far.
    pub fn of(result: &FaxResult, commid: &str) -> Session {
        let format = result
            .encoding_name()
            .and_then(DataFormat::from_encoding_name);
        let params = Params {
            bit_rate: result.transfer_rate.unwrap_or(0),
            ecm: result.ecm_used,
            data_format: format.unwrap_or_default(),
            ..Params::default()
        };
        Session {
            params: params.encode(),
            format,
            commid: commid.to_string(),
        }
    }
}

impl Progress {
    /// `docs` as the qfile lists them; `before` is the job's `npages` now.
    pub fn new(docs: Vec<JobDocument>, before: u32) -> Progress {
        let now = Instant::now();
        let left: u32 = docs.iter().map(JobDocument::remaining).sum();
        Progress {
            docs: docs
                .into_iter()
                .map(|doc| Doc { doc, sent: false })
                .collect(),
            before,
            total: before + left,
            in_call: 0,
            page_started: now,
            doc_started: now,
        }
    }

    /// The job's pages sent before this attempt.
    pub fn before(&self) -> u32 {
        self.before
    }

    /// The pages of the job this attempt sent so far, 1-based: `(first, last)`.
    pub fn sent_range(&self) -> Option<(u32, u32)> {
        (self.in_call > 0).then(|| (self.before + 1, self.before + self.in_call))
    }

    /// The job's pages: those sent before this attempt and those its documents had left.
    pub fn job_pages(&self) -> u32 {
        self.total
    }

    /// What this attempt sent, in the job's page numbers, for the session log: "pages 3-12 of
    /// 12", "page 5 of 12", "no page of 12".
    pub fn describe_sent(&self) -> String {
        let total = self.total;
        match self.sent_range() {
            None => format!("no page of {total}"),
            Some((a, b)) if a == b => format!("page {a} of {total}"),
            Some((a, b)) => format!("pages {a}-{b} of {total}"),
        }
    }

    /// Every page of the job has been sent (by this attempt and those before).
    pub fn all_sent(&self) -> bool {
        self.before + self.in_call >= self.total
    }

    /// The call was answered: page times count from here.
    pub fn answered(&mut self) {
        let now = Instant::now();
        self.page_started = now;
        self.doc_started = now;
    }

    /// The call's `n`-th page (1-based, spandsp's `fax-document-transferred-pages`) went
    /// through. Returns the job's page number, or `None` for a page already counted.
    pub fn page(&mut self, job: &mut Job, n: u32, session: &Session) -> Option<u32> {
        if n <= self.in_call {
            return None;
        }
        let mut last_doc = None;
        while self.in_call < n {
            let Some(i) = self.take_page() else { break };
            self.in_call += 1;
            last_doc = Some(i);
        }
        let npages = self.before + self.in_call;
        // A finished document followed by another is delivered: it leaves the qfile now.
        let finished: Vec<usize> = (0..self.docs.len())
            .filter(|&i| {
                let d = &self.docs[i];
                !d.sent
                    && d.doc.remaining() == 0
                    && self.docs[i + 1..].iter().any(|l| l.doc.remaining() > 0)
            })
            .collect();
        for &i in &finished {
            job.document_sent(self.entry_index(i));
            self.docs[i].sent = true;
        }
        job.pages_sent(npages, &self.first_pages(), session.format);
        let now = Instant::now();
        if let Some(i) = last_doc {
            let info = self.info(npages, now - self.page_started, &self.docs[i].doc, session);
            job.tell(JobEvent::PageSent, Some(&info));
        }
        self.page_started = now;
        for i in finished {
            let info = self.info(npages, now - self.doc_started, &self.docs[i].doc, session);
            job.tell(JobEvent::DocumentDone, Some(&info));
            self.doc_started = now;
        }
        Some(npages)
    }

    /// The call is over: it sent `transferred` pages in all (spandsp's final count, which may
    /// exceed the page events seen), and `done` says whether the job is complete. Records the
    /// pages not yet recorded; when done, every document left goes out of the job with its `D`.
    pub fn conclude(&mut self, job: &mut Job, transferred: u32, done: bool, session: &Session) {
        if transferred > self.in_call {
            while self.in_call < transferred && self.take_page().is_some() {
                self.in_call += 1;
            }
        }
        let npages = self.before + self.in_call;
        let finishing: Vec<usize> = if done {
            (0..self.docs.len())
                .filter(|&i| !self.docs[i].sent)
                .collect()
        } else {
            Vec::new()
        };
        for &i in &finishing {
            job.document_sent(self.entry_index(i));
            self.docs[i].sent = true;
        }
        if self.in_call > 0 || done {
            job.pages_sent(npages, &self.first_pages(), session.format);
        }
        let now = Instant::now();
        for i in finishing {
            let info = self.info(npages, now - self.doc_started, &self.docs[i].doc, session);
            job.tell(JobEvent::DocumentDone, Some(&info));
            self.doc_started = now;
        }
    }

    /// Moves one page into the first document with pages left; its index.
    fn take_page(&mut self) -> Option<usize> {
        let i = self
            .docs
            .iter()
            .position(|d| !d.sent && d.doc.remaining() > 0)?;
        self.docs[i].doc.first_page += 1;
        Some(i)
    }

    /// The position of document `i` among the `fax:` entries still in the qfile.
    fn entry_index(&self, i: usize) -> usize {
        self.docs[..i].iter().filter(|d| !d.sent).count()
    }

    /// The first unsent page of every `fax:` entry still in the qfile.
    fn first_pages(&self) -> Vec<u32> {
        self.docs
            .iter()
            .filter(|d| !d.sent)
            .map(|d| d.doc.first_page)
            .collect()
    }

    fn info(
        &self,
        npages: u32,
        took: std::time::Duration,
        doc: &JobDocument,
        session: &Session,
    ) -> FaxSendInfo {
        FaxSendInfo {
            secs: u32::try_from(took.as_secs()).unwrap_or(u32::MAX),
            npages,
            params: session.params,
            commid: session.commid.clone(),
            file: doc.item.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/fax")
            .join(name)
    }

    /// A job of two documents (3 and 12 pages) whose sources were converted by faxq.
    fn job(dir: &Path) -> (Job, Vec<JobDocument>) {
        let src = |n: &str| dir.join(n).display().to_string();
        for n in ["a.pdf.7", "b.pdf.7"] {
            std::fs::write(dir.join(n), b"source").unwrap();
        }
        let (a, b) = (fixture("test3.tif"), fixture("test12.tif"));
        let q = dir.join("q7");
        std::fs::write(
            &q,
            format!(
                "jobid:7\nnpages:0\nstate:6\nreturned:7\n!pdf:0::{}\nfax:0::{}\n!pdf:0::{}\nfax:0::{}\n",
                src("a.pdf.7"),
                a.display(),
                src("b.pdf.7"),
                b.display()
            ),
        )
        .unwrap();
        let docs = vec![
            JobDocument::inspect(a, 0).unwrap(),
            JobDocument::inspect(b, 0).unwrap(),
        ];
        (Job::open(&q).unwrap(), docs)
    }

    fn session() -> Session {
        Session {
            params: 0,
            format: Some(DataFormat::Mmr),
            commid: "000000001".into(),
        }
    }

    fn on_disk(job: &Job) -> crate::hylafax::qfile::QFileContent {
        let path = job.q().path().to_path_buf();
        crate::hylafax::qfile::QFileContent::parse(&path, &std::fs::read(&path).unwrap()).unwrap()
    }

    #[test]
    fn every_page_is_in_the_qfile_and_a_finished_document_leaves_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut job, docs) = job(dir.path());
        let mut p = Progress::new(docs, 0);
        assert_eq!(p.job_pages(), 15);
        assert_eq!(p.page(&mut job, 1, &session()), Some(1));
        let q = on_disk(&job);
        assert_eq!(q.npages(), 1);
        assert_eq!(q.get_all("fax").len(), 2);
        assert!(
            q.get_all("fax")[0].starts_with("1::"),
            "{:?}",
            q.get_all("fax")
        );
        assert_eq!(q.get("dataformat"), Some("2-D MMR"));
        // A repeated page event changes nothing.
        assert_eq!(p.page(&mut job, 1, &session()), None);
        // Page 3 ends the first document: a second one follows, so the first is delivered.
        assert_eq!(p.page(&mut job, 3, &session()), Some(3));
        let q = on_disk(&job);
        assert_eq!(q.npages(), 3);
        let faxes = q.get_all("fax");
        assert_eq!(faxes.len(), 1, "{faxes:?}");
        assert!(faxes[0].starts_with("0::") && faxes[0].ends_with("test12.tif"));
        // faxsend's renameSaved: the job's link to the source takes its base name.
        let sources = q.get_all("!pdf");
        assert!(sources[0].ends_with("/a.pdf"), "{sources:?}");
        assert!(dir.path().join("a.pdf").exists() && !dir.path().join("a.pdf.7").exists());
        assert_eq!(p.describe_sent(), "pages 1-3 of 15");

        // The call ends after page 5 without a result: the retry resumes at page 3 of b.
        p.conclude(&mut job, 5, false, &session());
        let q = on_disk(&job);
        assert_eq!(q.npages(), 5);
        assert!(q.get_all("fax")[0].starts_with("2::"));
        assert!(!p.all_sent());
    }

    #[test]
    fn a_done_job_keeps_no_document_and_a_resumed_one_counts_on() {
        let dir = tempfile::tempdir().unwrap();
        let (mut job, docs) = job(dir.path());
        let mut p = Progress::new(docs, 0);
        // spandsp's final count says more than the page events did.
        assert_eq!(p.page(&mut job, 2, &session()), Some(2));
        p.conclude(&mut job, 15, true, &session());
        let q = on_disk(&job);
        assert_eq!(q.npages(), 15);
        assert!(q.get_all("fax").is_empty());
        assert!(p.all_sent());

        // Resumed at page 3 of a 12-page document (pages 1-2 went before).
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("q8");
        let doc = fixture("test12.tif");
        std::fs::write(&q, format!("jobid:8\nnpages:2\nfax:2::{}\n", doc.display())).unwrap();
        let mut job = Job::open(&q).unwrap();
        let mut p = Progress::new(vec![JobDocument::inspect(doc, 2).unwrap()], 2);
        assert_eq!(p.job_pages(), 12);
        assert_eq!(p.page(&mut job, 1, &session()), Some(3));
        assert_eq!(p.page(&mut job, 10, &session()), Some(12));
        assert_eq!(p.describe_sent(), "pages 3-12 of 12");
        assert!(p.all_sent());
        // The last document stays until the verdict says done.
        assert_eq!(on_disk(&job).get_all("fax").len(), 1);
        assert!(on_disk(&job).get_all("fax")[0].starts_with("12::"));
    }
}
