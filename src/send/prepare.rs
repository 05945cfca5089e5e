//! Step 1 of an attempt: everything worked out before anything goes to FreeSWITCH. The job's
//! values, a commid and the session log, DynamicConfigOutgoing, the number and gateways, the
//! channel variables and the document FreeSWITCH will read, with the tag line imaged into it
//! when one is configured ([`super::tagline`]).

use crate::config::{CidName, Config};
use crate::fax::dialstring::{DialError, normalize_dial_number};
use crate::fax::{ChannelVars, Disposition, FaxOutcome, JobResult, LocalError};
use crate::hylafax::Spool;
use crate::hylafax::dynconfig::{self, DynConfigError, OutgoingConfig};
use crate::hylafax::qfile::QFileError;
use crate::hylafax::seqf::{self, SeqfError};
use crate::hylafax::sessionlog::SessionLog;

use super::document::{self, DocumentError, JobDocument};
use super::progress::Progress;
use super::tagline::{self, Unimageable};
use super::{Job, spool_relative};

/// DynamicConfigOutgoing output beyond this is ignored.
const SCRIPT_OUTPUT_MAX: usize = 64 * 1024;

/// Everything the call needs, worked out before anything goes to FreeSWITCH.
pub(super) struct Context {
    pub jobid: u32,
    pub commid: String,
    pub log: SessionLog,
    /// The number as dialled (call prefix included), checked.
    pub dialled: String,
    pub call_prefix: String,
    pub gateways: Vec<String>,
    pub vars: ChannelVars,
    /// The job's documents and how far this attempt got through them.
    pub progress: Progress,
    pub prepared: document::Prepared,
    /// The station was on the T.38 fallback list when the call was placed.
    pub fallback_listed: bool,
    /// The FreeSWITCH node the call was placed on (the last one tried); `None` before dialling.
    pub node: Option<crate::config::Node>,
}

/// Why an attempt stops before dialling.
#[derive(Debug, thiserror::Error)]
pub(super) enum PrepareError {
    #[error("{0}")]
    Job(#[from] QFileError),
    #[error("{0}")]
    Commid(#[from] SeqfError),
    #[error("{program} exited with {status}: {stderr}")]
    ScriptExit {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("{0}")]
    Script(#[from] DynConfigError),
    #[error("Transmission rejected by DynamicConfig")]
    RejectedByScript,
    #[error("Cannot dial this number: {0}")]
    Number(#[from] DialError),
    #[error("No gateway configured ([freeswitch] gateway)")]
    NoGateway,
    #[error("{0}")]
    Inspect(DocumentError),
    #[error("{0}")]
    Document(#[from] DocumentError),
    /// `taglinefailure = retry` and the tag line cannot be drawn.
    #[error("{0}")]
    TagLine(#[from] Unimageable),
    /// An earlier attempt had every page confirmed by the receiver but stopped (killed, the
    /// machine down) before it wrote its verdict: nothing is left to send, the fax went out.
    #[error("All {npages} pages were confirmed by the receiver in an earlier attempt")]
    AlreadySent { npages: u32 },
}

impl PrepareError {
    /// The verdict: a job that cannot go out as it is fails, a local trouble is retried.
    pub fn verdict(&self) -> JobResult {
        let detail = self.to_string();
        let local = |error| {
            FaxOutcome::Local {
                error,
                detail: &detail,
                dial_attempted: false,
            }
            .classify(&[])
        };
        match self {
            PrepareError::AlreadySent { .. } => JobResult {
                disposition: Disposition::Done,
                status: detail,
                statuscode: 0,
                counts_as_dial: false,
                counts_as_try: false,
            },
            PrepareError::Commid(_) => local(LocalError::Internal),
            PrepareError::ScriptExit { .. } | PrepareError::Script(_) => {
                local(LocalError::ScriptFailed)
            }
            PrepareError::Document(e) if !e.is_permanent() => local(LocalError::Internal),
            PrepareError::TagLine(_) => local(LocalError::Internal),
            _ => FaxOutcome::Rejected { reason: &detail }.classify(&[]),
        }
    }
}

/// The job's values, DynamicConfigOutgoing and the document.
pub(super) async fn prepare(
    cfg: &Config,
    spool: &Spool,
    modem: &str,
    job: &mut Job,
) -> Result<Context, PrepareError> {
    let jobid = job.q().jobid()?;
    tracing::Span::current().record("job", jobid);
    let external = external_number(job);
    let (commid, log) = open_log(spool, modem, job, jobid, &external)?;
    let script = outgoing_config(cfg, spool, modem, job, jobid, &log).await?;
    if script.reject_call {
        log.log("Transmission rejected by DynamicConfig");
        return Err(PrepareError::RejectedByScript);
    }
    let call_prefix = script
        .call_prefix
        .clone()
        .unwrap_or_else(|| cfg.gofaxsend.call_prefix.clone());
    let dialled = normalize_dial_number(&format!("{call_prefix}{external}")).inspect_err(|e| {
        log.log(&format!("Cannot dial: {e}"));
    })?;
    let gateways = if script.gateways.is_empty() {
        cfg.freeswitch.gateways.clone()
    } else {
        script.gateways.clone()
    };
    if gateways.is_empty() {
        return Err(PrepareError::NoGateway);
    }
    let mut vars = channel_vars(cfg, job, &script);
    let docs = inspect_documents(spool, job).inspect_err(|e| log.log(&format!("Document: {e}")))?;
    if let Some(npages) = every_page_confirmed(job, &docs) {
        let e = PrepareError::AlreadySent { npages };
        log.log(&format!("{e}; nothing is left to send, the job is done"));
        for _ in &docs {
            job.document_sent(0);
        }
        job.save();
        return Err(e);
    }
    let prepared = documents(cfg, spool, &docs, jobid)
        .await
        .inspect_err(|e| log.log(&format!("Document: {e}")))?;
    let tagged = tagline::apply(cfg, spool, modem, job, &script, prepared, &log)?;
    if tagged.imaged {
        vars.fax_header = Some(tagline::NO_HEADER.to_string());
    }
    let prepared = tagged.prepared;
    Ok(Context {
        jobid,
        commid,
        log,
        dialled,
        call_prefix,
        gateways,
        vars,
        progress: Progress::new(docs, job.q().npages()),
        prepared,
        fallback_listed: false,
        node: None,
    })
}

/// The number as the job gives it (`external:`, else `number:`).
pub(super) fn external_number(job: &Job) -> String {
    let q = job.q();
    q.external()
        .or_else(|| q.number())
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A commid for this attempt, in the qfile at once, and its session log.
fn open_log(
    spool: &Spool,
    modem: &str,
    job: &mut Job,
    jobid: u32,
    external: &str,
) -> Result<(String, SessionLog), PrepareError> {
    // From this boot's reserved block; without a boot id, synced with the dial count, or
    // with the verdict when no dial comes (see `Job`).
    let (n, unsynced) = seqf::next_commid(&spool.log_seqf())?;
    if let Some(seqf) = unsynced {
        job.defer_sync(seqf);
    }
    let commid = seqf::format_commid(n);
    tracing::Span::current().record("commid", commid.as_str());
    let log = SessionLog::create(spool, n).unwrap_or_else(|e| {
        tracing::warn!("{e}");
        SessionLog::disabled(&commid)
    });
    log.begin(external);
    log.log(&format!(
        "SEND FAX: JOB {jobid} DEST {external} COMMID {commid} DEVICE '{modem}' USER {}",
        job.q().owner()
    ));
    job.set_commid(&commid);
    Ok((commid, log))
}

/// DynamicConfigOutgoing's settings, or the defaults when none is configured.
async fn outgoing_config(
    cfg: &Config,
    spool: &Spool,
    modem: &str,
    job: &Job,
    jobid: u32,
    log: &SessionLog,
) -> Result<OutgoingConfig, PrepareError> {
    let Some(program) = &cfg.gofaxsend.dynamic_config else {
        return Ok(OutgoingConfig::default());
    };
    let program = spool_relative(spool, program);
    log.log(&format!("Calling DynamicConfig {}", program.display()));
    let q = job.q();
    let number = q
        .number()
        .map_or_else(|| external_number(job), str::to_owned);
    let args = [
        modem.to_string(),
        q.owner().into_owned(),
        number,
        jobid.to_string(),
    ];
    let run = dynconfig::run(
        &program,
        &args,
        spool.root(),
        cfg.gofaxsend.dynamic_config_timeout,
        SCRIPT_OUTPUT_MAX,
    )
    .await;
    let out = run.inspect_err(|e| log.log(&format!("DynamicConfig failed: {e}")))?;
    if !out.success() {
        let e = PrepareError::ScriptExit {
            program: program.display().to_string(),
            status: out.status.to_string(),
            stderr: out.stderr.trim().to_string(),
        };
        log.log(&format!("DynamicConfig failed: {e}"));
        return Err(e);
    }
    let settings = out.settings();
    for w in &settings.warnings {
        tracing::warn!(script = %program.display(), "ignored DynamicConfig output line: {w}");
    }
    Ok(settings.outgoing())
}

/// The job's documents (its `fax:` entries), each checked against its file.
fn inspect_documents(spool: &Spool, job: &Job) -> Result<Vec<JobDocument>, PrepareError> {
    // Document paths in the qfile are relative to faxq's spool, which is our working
    // directory when faxq runs us (the qfile path is relative to it too).
    let cwd = std::env::current_dir().ok();
    let base = cwd.as_deref().unwrap_or(spool.root());
    let listed = match job.q().documents(base) {
        // Every document of a job that sent pages has gone: see [`every_page_confirmed`].
        Err(QFileError::NoFaxEntries { .. }) if job.q().npages() > 0 => Vec::new(),
        listed => listed?,
    };
    listed
        .into_iter()
        .map(|d| JobDocument::inspect(d.path, d.first_page_dir).map(|j| j.named(d.file)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(PrepareError::Inspect)
}

/// The job's `npages` when an earlier attempt already got every page confirmed: each `fax:`
/// entry starts past its last page, or (the attempt stopped between taking its finished
/// documents out and writing `returned:2`) no entry is left of a job that sent pages.
fn every_page_confirmed(job: &Job, docs: &[JobDocument]) -> Option<u32> {
    let npages = job.q().npages();
    let exhausted = docs.iter().all(|d| d.remaining() == 0);
    (npages > 0 && exhausted).then_some(npages)
}

/// The one file FreeSWITCH reads, made from the job's documents.
async fn documents(
    cfg: &Config,
    spool: &Spool,
    docs: &[JobDocument],
    jobid: u32,
) -> Result<document::Prepared, PrepareError> {
    let temp_dir = spool.join("tmp");
    document::sweep_stale(&temp_dir);
    let prepared = document::prepare(
        docs,
        &temp_dir,
        &jobid.to_string(),
        cfg.gofaxsend.tiffcp_timeout,
    )
    .await?;
    Ok(prepared)
}

/// Channel variables from the configuration, the qfile and DynamicConfigOutgoing.
fn channel_vars(cfg: &Config, job: &Job, script: &OutgoingConfig) -> ChannelVars {
    let q = job.q();
    let s = &cfg.gofaxsend;
    let tries = q.tottries();
    let mut ecm = q.desiredec().is_none_or(|ec| ec != 0);
    // desiredbr below 5 (14400 bit/s) asks for a slower modem than V.17.
    let mut v17 = q.desiredbr().is_none_or(|br| br >= 5);
    if s.disable_v17_after_retry > 0 && tries >= s.disable_v17_after_retry {
        v17 = false;
    }
    if s.disable_ecm_after_retry > 0 && tries >= s.disable_ecm_after_retry {
        ecm = false;
    }
    let cid_number = script
        .fax_number
        .clone()
        .unwrap_or_else(|| s.fax_number.clone());
    let cid_name = match &s.cid_name {
        CidName::Sender => q.sender().into_owned(),
        CidName::Number => q.number().unwrap_or_default().to_string(),
        CidName::CidNumber => cid_number.clone(),
        CidName::Fixed(name) => name.clone(),
        CidName::None => String::new(),
    };
    let mut vars = ChannelVars::new();
    vars.caller_id_number = Some(cid_number).filter(|n| !n.is_empty());
    vars.caller_id_name = Some(cid_name).filter(|n| !n.is_empty());
    vars.fax_ident = script
        .local_identifier
        .clone()
        .or_else(|| Some(cfg.freeswitch.ident.clone()));
    vars.fax_header = script
        .tag_line
        .clone()
        .or_else(|| Some(cfg.freeswitch.header.clone()));
    vars.use_ecm = Some(ecm);
    vars.disable_v17 = Some(!v17);
    vars.enable_t38 = Some(s.enable_t38);
    vars.enable_t38_request = Some(s.request_t38);
    vars.verbose = Some(cfg.freeswitch.verbose);
    vars
}
