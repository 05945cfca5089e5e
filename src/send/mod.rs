//! fsfaxsend: one HylaFAX queue file from modem lock to `returned:`, as a readable sequence.
//!
//! faxq runs us as `SendFaxCmd` with the spool as working directory and reads the qfile back
//! when we exit: a `returned:` other than 7 wins over our exit status. So the very first thing
//! done with the locked qfile is to write `returned:0` (retry): a crash, a panic (built with
//! `panic = "abort"`, which faxq reads as a failed command anyway) or a `kill -9` can then never
//! read as *done*. Every later exit path rewrites `returned:` with the honest verdict from
//! [`crate::fax::FaxOutcome::classify`].
//!
//! One call per gateway, each with a fresh `origination_uuid`, in the configured order:
//! FreeSWITCH's own `gw1|gw2` failover breaks on the real switch (the second leg asks for the
//! same UUID and is refused), so failover is ours, and only on causes that mean the gateway or
//! route failed (`[gofaxsend] failovercauses`).
//!
//! Files: `call` (one attempt as its steps), `prepare` (with `tagline`, the tag line drawn into
//! the document), `dial`, `transfer` (ended by `fax::CallEnding`), `conclude`, `progress` (the
//! pages and documents sent, in the qfile and told to faxq as faxsend tells it: `c`, `C`, `d`
//! per page, `D` per document), and `job` (the locked qfile, written through typed methods; the
//! verdict once, in `Job::finish`). fsfaxsend serves one call on a current-thread runtime: its
//! qfile writes and faxq messages run inline (a message waits at most about a second on a full
//! FIFO), as the only other task is that call's own socket reader.

mod call;
mod conclude;
mod dial;
pub mod document;
mod job;
mod nodes;
mod prepare;
mod progress;
mod tagline;
mod transfer;

use std::path::{Path, PathBuf};

use tracing::Instrument;

use crate::config::Config;
use crate::fax::{Disposition, FaxOutcome, JobResult};
use crate::hylafax::Spool;
use crate::hylafax::modem::{DeviceFifo, DeviceMsg, FaxqFifo};
use crate::hylafax::xferfaxlog::DataFormat;

pub use job::Job;

/// Why fsfaxsend has no configuration to send with: the file and the errors found in it
/// (each already logged). The job is requeued with this as its status.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} has errors (run fsfaxd --check-config -c {0})", path.display())]
pub struct ConfigUnusable {
    /// The configuration file.
    pub path: PathBuf,
    /// The errors found in it, as `--check-config` words them.
    pub errors: Vec<String>,
}

/// Runs fsfaxsend for `qfiles` on `modem` and returns the exit status for faxq (0 retry,
/// 1 failed, 2 done). `config` is the loaded configuration, or the reason it is unusable: the
/// job is then requeued with that reason as its status, so fixing the file lets it go out.
pub async fn run(config: Result<&Config, ConfigUnusable>, modem: &str, qfiles: &[PathBuf]) -> u8 {
    let Some(qfile) = qfiles.first() else {
        return Disposition::Failed.returned();
    };
    if qfiles.len() > 1 {
        tracing::warn!(
            extra = qfiles.len() - 1,
            "batching is not supported (set MaxBatchJobs: 1); faxq requeues the other jobs"
        );
    }
    let span = tracing::info_span!(
        "job",
        qfile = %qfile.display(),
        modem = %modem,
        job = tracing::field::Empty,
        commid = tracing::field::Empty,
        uuid = tracing::field::Empty
    );
    run_job(config, modem, qfile).instrument(span).await
}

async fn run_job(config: Result<&Config, ConfigUnusable>, modem: &str, qfile: &Path) -> u8 {
    // Before anything else: from here on SIGTERM (faxrm) ends the attempt through the honest
    // path below instead of killing the process, which faxq would record as a failure.
    let mut stop = call::Stop::new();

    // The qfile lock comes first: nothing below may run for a job another fsfaxsend holds.
    let mut job = match Job::open(qfile) {
        Ok(job) => job,
        Err(e) if e.is_unreadable_content() => {
            // Rewriting a file we cannot parse could only make it worse: it is left byte for
            // byte as it is, and with `returned:7` still in it faxq takes our exit status.
            tracing::error!("{e}; the job cannot be sent and is left for the admin (failed)");
            return Disposition::Failed.returned();
        }
        Err(e) => {
            // Without the qfile there is nothing to write; faxq falls back to our exit
            // status with `returned:7`, and 0 asks for a later retry.
            tracing::error!("{e}; asking faxq to retry later");
            return Disposition::Retry.returned();
        }
    };
    let attempt = match &config {
        Ok(config) => attempt(config, modem, &mut job, &mut stop).await,
        Err(why) => Attempt::verdict_only(
            FaxOutcome::Local {
                error: crate::fax::LocalError::Internal,
                detail: &format!("fsfaxsend configuration unusable: {why}"),
                dial_attempted: false,
            }
            .classify(&[]),
        ),
    };
    let code = job.finish(&attempt);
    if let Ok(config) = config {
        tell_modem(
            &Spool::new(&config.hylafax.spooldir),
            modem,
            DeviceMsg::SendReady,
        );
    }
    tracing::info!(
        returned = code,
        status = %attempt.verdict.status,
        "job attempt finished"
    );
    code
}

/// The attempt with a usable configuration, between the modem's `SB` and (after the verdict
/// is written) its `SR`.
async fn attempt(config: &Config, modem: &str, job: &mut Job, stop: &mut call::Stop) -> Attempt {
    // FreeSWITCH is connected to first, while everything else is done (issue 13).
    let early = dial::Early::start(config, job);
    let spool = Spool::new(&config.hylafax.spooldir);
    warn_if_elsewhere(&spool);
    job.report_to(FaxqFifo::new(&spool));
    tell_modem(&spool, modem, DeviceMsg::SendBegin);
    call::send(config, &spool, modem, job, stop, early).await
}

/// faxq runs us in its spool; a `[hylafax] spooldir` naming another directory means logs and
/// sequence numbers go to one spool and documents come from the other: say so.
fn warn_if_elsewhere(spool: &Spool) {
    use std::os::unix::fs::MetadataExt;
    // The same directory is the same inode: two stats, where comparing resolved paths took a
    // readlink per path component on every run.
    let id = |m: std::fs::Metadata| (m.dev(), m.ino());
    let here = std::fs::metadata(".").map(id);
    let configured = std::fs::metadata(spool.root()).map(id);
    if let (Ok(here), Ok(configured)) = (here, configured) {
        if here != configured {
            let cwd = std::env::current_dir().and_then(|d| d.canonicalize());
            tracing::warn!(
                cwd = %cwd.unwrap_or_default().display(),
                spooldir = %spool.root().display(),
                "fsfaxsend is not running in [hylafax] spooldir; documents are read relative \
                 to the working directory (faxq's spool), logs go to spooldir"
            );
        }
    }
}

/// Tells fsfaxd what its virtual modem is doing (`SB` sending, `SR` ready again). Never blocks:
/// with fsfaxd not running the message is dropped.
fn tell_modem(spool: &Spool, modem: &str, msg: DeviceMsg) {
    match DeviceFifo::new(spool, modem).and_then(|fifo| fifo.send_msg(&msg)) {
        Ok(delivery) => tracing::debug!(?delivery, %msg, "modem FIFO"),
        Err(e) => tracing::debug!("cannot tell fsfaxd {msg}: {e}"),
    }
}

/// What an attempt produced, for the qfile, xferfaxlog and the session log.
#[derive(Debug)]
pub struct Attempt {
    /// The verdict for faxq.
    pub verdict: JobResult,
    /// Pages this attempt transferred.
    pub pages_sent: u32,
    /// Remote station id (CSI), if the call got that far.
    pub remote_id: Option<String>,
    /// Negotiated signalling rate (bit/s).
    pub signal_rate: Option<u32>,
    /// Data format of the pages, from spandsp's encoding name.
    pub data_format: Option<DataFormat>,
    /// ECM used.
    pub ecm: bool,
    /// Seconds from answer to hangup.
    pub connect_secs: u64,
    /// Seconds of the whole attempt.
    pub job_secs: u64,
    /// The communication id of this attempt, when one was allocated.
    pub commid: Option<String>,
}

impl Attempt {
    fn verdict_only(verdict: JobResult) -> Attempt {
        Attempt {
            verdict,
            pages_sent: 0,
            remote_id: None,
            signal_rate: None,
            data_format: None,
            ecm: false,
            connect_secs: 0,
            job_secs: 0,
            commid: None,
        }
    }
}

/// Resolves a configured path (DynamicConfig, temp dir) against the spool, as faxq's cwd.
fn spool_relative(spool: &Spool, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        spool.join(p)
    }
}
