//! After a reception: xferfaxlog, faxrcvd, and only then the journal entry goes.
//!
//! Shared by live calls and by start-up recovery. faxrcvd runs only for a document with at
//! least one readable page, and its error message is never empty unless the fax was received
//! completely (GOfax.IP passed an empty one for calls that produced nothing or were cut off).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local};

use crate::config::Config;
use crate::hylafax::Spool;
use crate::hylafax::faxrcvd::{self, FaxrcvdArgs, FaxrcvdError};
use crate::hylafax::journal::{DeliveryStage, Journal, JournalError};
use crate::hylafax::sessionlog::SessionLog;
use crate::hylafax::writer::{Ctx, SpoolWriter};
use crate::hylafax::xferfaxlog::{self, DataFormat, Params, RecvRecord, VerticalRes, XferFaxLog};
use crate::{tiff, tifftags};

/// Received documents are made world-readable: `faxstat -r` and hfaxd clients list only files
/// they can read (HylaFAX's `RecvFileMode` default 0600 hides them; measured).
pub const RECV_FILE_MODE: u32 = 0o644;

/// Everything known about one finished reception.
#[derive(Debug, Clone)]
pub struct Reception {
    pub commid: String,
    /// Spool-relative `recvq/faxNNNNNNNNN.tif`.
    pub recvq_file: String,
    pub modem: String,
    pub cidnum: String,
    pub cidname: String,
    pub recipient: String,
    pub gateway: String,
    /// When the call was accepted (or answered).
    pub started: DateTime<Local>,
    /// Why the reception is not a clean success; `None` = the fax result said OK.
    pub failure: Option<String>,
    /// What FreeSWITCH reported, for xferfaxlog and faxrcvd's environment.
    pub remote_id: String,
    pub pages_reported: u32,
    pub bit_rate: u32,
    pub ecm: bool,
    /// The pages' data format, from spandsp's encoding name.
    pub data_format: Option<DataFormat>,
    pub hangup_cause: String,
    pub duration: Duration,
    /// How far an earlier fsfaxd got handing this reception over (recovery only).
    pub delivery: DeliveryStage,
}

/// What the delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Pages in the document, `None` when there is no readable document.
    pub pages: Option<u32>,
    /// The error message given to xferfaxlog and faxrcvd.
    pub errmsg: String,
    /// faxrcvd was run (its exit status is logged, not judged).
    pub faxrcvd_ran: bool,
}

/// Writes the xferfaxlog record, runs faxrcvd for a document with pages, and removes the
/// journal entry once faxrcvd has run (or when there is nothing to hand over). A faxrcvd that
/// could not even be started keeps the entry, so the next start of fsfaxd delivers the fax.
///
/// fsfaxd's rule for blocking work (see `hylafax::writer`): the document itself (page count,
/// tags, permissions), xferfaxlog, the journal stages and the session log are read and
/// written by the spool writer thread. Every step is journalled before the next: the
/// document's examination, its xferfaxlog record and the `handed` stage go in one writer job,
/// committed (synced) before faxrcvd starts; the removal afterwards needs no sync.
pub async fn deliver(
    spool: &Spool,
    cfg: &Arc<Config>,
    journal: &Journal,
    rec: Reception,
    log: SessionLog,
) -> Delivered {
    let gone = Delivered {
        pages: None,
        errmsg: String::new(),
        faxrcvd_ran: false,
    };
    let path = spool.join(&rec.recvq_file);
    let rec = Arc::new(rec);
    let log = Arc::new(log);
    let (s, c, r, l) = (spool.clone(), cfg.clone(), rec.clone(), log.clone());
    // The call's span goes with the job, so its lines still name the call.
    let span = tracing::Span::current();
    // One writer job for the document and its record: one trip to the writer per delivery.
    let examined = journal
        .writer()
        .write_or_commit(move |ctx| {
            let _span = span.enter();
            let pages = examine(&path, &r, &l);
            let errmsg = error_message(&r, pages);
            log_received(&r, pages, &errmsg, &l);
            let hand_over = hand_over_wanted(&r, pages, &l);
            let staged = log_and_stage(ctx, &s, &c, &r, pages, &errmsg, hand_over);
            // Synced before faxrcvd may start.
            ((pages, errmsg, hand_over, staged), hand_over)
        })
        .await;
    let Ok(((pages, errmsg, hand_over, staged), written)) = examined else {
        // The writer is gone (fsfaxd is stopping): the journal entry stays for the next start.
        return gone;
    };
    if let Err(e) = staged
        .map_err(|e| e.to_string())
        .and_then(|()| written.map_err(|e| e.to_string()))
    {
        tracing::error!("journal: {e}; a restart of fsfaxd now could repeat this step");
    }
    let step = Step {
        spool,
        cfg,
        journal,
        rec: &rec,
        errmsg: &errmsg,
    };
    let faxrcvd_ran = step.hand_over(hand_over, &log).await;
    log.end();
    Delivered {
        pages,
        errmsg,
        faxrcvd_ran,
    }
}

/// The session log's line for what was received.
fn log_received(rec: &Reception, pages: Option<u32>, errmsg: &str, log: &SessionLog) {
    log.log(&format!(
        "RECV FAX {}: {} pages, {} bit/s, remote {:?}, hangup cause {}, {}",
        rec.recvq_file,
        pages.unwrap_or(0),
        rec.bit_rate,
        rec.remote_id,
        if rec.hangup_cause.is_empty() {
            "unknown"
        } else {
            &rec.hangup_cause
        },
        if errmsg.is_empty() { "OK" } else { errmsg }
    ));
}

/// Whether faxrcvd is to run: for a document with pages, unless a previous fsfaxd already
/// started it.
fn hand_over_wanted(rec: &Reception, pages: Option<u32>, log: &SessionLog) -> bool {
    match pages {
        Some(_) if rec.delivery == DeliveryStage::Handed => {
            log.log("faxrcvd was started by the previous fsfaxd: not run again");
            tracing::warn!(
                commid = %rec.commid,
                "faxrcvd was already started for this fax before fsfaxd stopped; not running it twice"
            );
            false
        }
        Some(_) => true,
        None => {
            log.log("no document with pages: faxrcvd not run");
            tracing::info!(file = %rec.recvq_file, "no fax document received; faxrcvd not run");
            false
        }
    }
}

/// The xferfaxlog record (unless a previous fsfaxd wrote it) and the journal stage that
/// follows it (`handed` when faxrcvd is to run), on the writer thread.
fn log_and_stage(
    ctx: &mut Ctx,
    spool: &Spool,
    cfg: &Config,
    rec: &Reception,
    pages: Option<u32>,
    errmsg: &str,
    hand_over: bool,
) -> Result<(), JournalError> {
    if rec.delivery < DeliveryStage::Logged {
        write_xferfaxlog(spool, cfg, rec, pages, errmsg);
    }
    let stage = if hand_over {
        DeliveryStage::Handed
    } else {
        DeliveryStage::Logged
    };
    if rec.delivery < stage {
        ctx.journal.stage(&rec.commid, stage)
    } else {
        Ok(())
    }
}

/// One reception's delivery, past the examination of its document and its record.
struct Step<'a> {
    spool: &'a Spool,
    cfg: &'a Arc<Config>,
    journal: &'a Journal,
    rec: &'a Arc<Reception>,
    errmsg: &'a str,
}

impl Step<'_> {
    /// Runs faxrcvd (when `run`), then removes the journal entry, unless faxrcvd could not
    /// even be started: the entry then steps back so the next start runs it. Whether faxrcvd
    /// ran.
    async fn hand_over(&self, run: bool, log: &SessionLog) -> bool {
        let (faxrcvd_ran, keep_journal) = if run {
            match run_faxrcvd(self.spool, self.cfg, self.rec, self.errmsg, log).await {
                Ok(()) => (true, false),
                Err(FaxrcvdError::Spawn { .. }) => (false, true),
                Err(_) => (true, false),
            }
        } else {
            (false, false)
        };
        self.release(keep_journal).await;
        faxrcvd_ran
    }

    /// The journal entry removed, or (`keep`) stepped back to `Logged`.
    async fn release(&self, keep: bool) {
        let commid = self.rec.commid.clone();
        if keep {
            // A step back, so the next start runs faxrcvd.
            let _ = self
                .journal
                .writer()
                .write(move |ctx| ctx.journal.stage(&commid, DeliveryStage::Logged))
                .await;
            tracing::error!(
                commid = %self.rec.commid,
                "faxrcvd could not be started; the reception stays in the journal and is delivered \
                 when fsfaxd starts again"
            );
        } else if let Err(e) = self.journal.remove(&commid) {
            tracing::error!("{e}");
        }
    }
}

/// The received document: its pages (`None`: no readable document), with faxgetty's tags added
/// (once: not again after faxrcvd was handed it) and made readable for HylaFAX's clients. The
/// file is opened and read once for all three.
fn examine(path: &std::path::Path, rec: &Reception, log: &SessionLog) -> Option<u32> {
    let mut doc = match tifftags::Document::open(path) {
        Ok(doc) => doc,
        Err(tifftags::TagError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return None;
        }
        Err(e) => {
            log.log(&format!("received document unusable: {e}"));
            tracing::error!("received document unusable, not handed to faxrcvd: {e}");
            return None;
        }
    };
    let pages = document_pages(path, doc.data(), log)?;
    if rec.delivery < DeliveryStage::Handed {
        add_hylafax_tags(&mut doc, rec, log);
    }
    if let Err(e) = doc.set_mode(RECV_FILE_MODE) {
        tracing::warn!(file = %path.display(), "cannot make the received fax readable: {e}");
    }
    Some(pages)
}

/// Adds the tags faxgetty writes (FaxRecvParams, FaxRecvTime, the TSI as ImageDescription)
/// to each page that lacks them, so faxinfo and faxrcvd's mail show the real session. Failing
/// leaves the document as FreeSWITCH wrote it: a warning, never a lost fax.
///
/// No FaxDcs: the real DCS is not known here, and faxinfo prefers a non-empty FaxDcs over
/// FaxRecvParams (a synthetic one turned an ECM fax's "ErrCorrect: Yes" into "No").
fn add_hylafax_tags(doc: &mut tifftags::Document, rec: &Reception, log: &SessionLog) {
    let tags = |page: tifftags::PageInfo| fax_tags(rec, page);
    match doc.add_tags(tags) {
        Ok(0) => {}
        Ok(n) => tracing::debug!(file = %rec.recvq_file, "added {n} HylaFAX tags"),
        Err(e) => {
            log.log(&format!("HylaFAX tags not added: {e}"));
            tracing::warn!("{e}");
        }
    }
}

/// The tags for one page, from what FreeSWITCH reported of the session. A rate of 0 means
/// the session is unknown (a reception recovered after fsfaxd stopped: the journal keeps no
/// result); then no session tags are written, since FaxRecvParams has no "unknown" rate (its
/// code 0 is 2400 bit/s) and faxinfo's "0 bit/s" is the honest answer.
fn fax_tags(rec: &Reception, page: tifftags::PageInfo) -> Vec<(u16, tifftags::Value)> {
    let mut tags = Vec::new();
    if rec.bit_rate > 0 {
        let params = Params {
            bit_rate: rec.bit_rate,
            ecm: rec.ecm,
            data_format: rec.data_format.unwrap_or_default(),
            vres: page
                .lpi
                .map(VerticalRes::from_lpi)
                .unwrap_or(VerticalRes::Normal),
            width_code: tifftags::width_code(page.width),
            ..Params::default()
        };
        tags.push((
            tifftags::TAG_FAX_RECV_PARAMS,
            tifftags::Value::Long(params.encode()),
        ));
        // faxgetty stores each page's receive time and faxinfo adds them up; only the whole
        // call's is known, so it is shared out over the pages (the remainder on the last).
        let pages = page.pages.max(1) as u64;
        let secs = rec.duration.as_secs();
        let last = page.index as u64 + 1 == pages;
        let share = secs / pages + if last { secs % pages } else { 0 };
        tags.push((
            tifftags::TAG_FAX_RECV_TIME,
            tifftags::Value::Long(u32::try_from(share).unwrap_or(u32::MAX)),
        ));
    }
    if !rec.remote_id.is_empty() {
        tags.push((
            tifftags::TAG_IMAGE_DESCRIPTION,
            tifftags::Value::Ascii(rec.remote_id.clone()),
        ));
    }
    tags
}

/// The xferfaxlog record of a call that ended before rxfax: it happened, so it is logged
/// (by the spool writer: the append takes xferfaxlog's lock).
pub async fn write_call_record(
    writer: &SpoolWriter,
    spool: &Spool,
    cfg: &Arc<Config>,
    rec: Reception,
) {
    let (spool, cfg) = (spool.clone(), cfg.clone());
    let _ = writer
        .write(move |_| {
            let errmsg = error_message(&rec, None);
            write_xferfaxlog(&spool, &cfg, &rec, None, &errmsg);
        })
        .await;
}

/// Pages of the received document (read into `data`); `None` when it is empty or unreadable.
fn document_pages(path: &std::path::Path, data: &[u8], log: &SessionLog) -> Option<u32> {
    match tiff::count_pages_of(path, data) {
        Ok(0) => None,
        Ok(n) => Some(n),
        Err(e) => {
            // Kept for the admin; HylaFAX's tools would choke on it.
            log.log(&format!("received document unusable: {e}"));
            tracing::error!("received document unusable, not handed to faxrcvd: {e}");
            None
        }
    }
}

/// The reason for xferfaxlog and faxrcvd: empty only for a complete, readable fax.
pub fn error_message(rec: &Reception, pages: Option<u32>) -> String {
    match (&rec.failure, pages) {
        (None, Some(_)) => String::new(),
        (None, None) => "fax reported received, but no document with pages exists".to_owned(),
        (Some(why), _) => why.clone(),
    }
}

fn write_xferfaxlog(
    spool: &Spool,
    cfg: &Config,
    rec: &Reception,
    pages: Option<u32>,
    errmsg: &str,
) {
    let Some(path) = &cfg.hylafax.xferfaxlog else {
        return;
    };
    let (df, dcs) = xferfaxlog::session_params(rec.data_format, rec.bit_rate > 0);
    let record = RecvRecord {
        start: rec.started,
        commid: rec.commid.clone(),
        device: rec.modem.clone(),
        // Only a file that is there: FreeSWITCH deletes an aborted reception's empty TIFF.
        file: if !rec.recvq_file.is_empty() && spool.join(&rec.recvq_file).exists() {
            rec.recvq_file.clone()
        } else {
            String::new()
        },
        local_number: rec.recipient.clone(),
        tsi: rec.remote_id.clone(),
        params: Params {
            bit_rate: rec.bit_rate,
            ecm: rec.ecm,
            data_format: df,
            ..Params::default()
        },
        // The document is the truth; FreeSWITCH's count can differ after a cut-off call.
        npages: pages.unwrap_or(0),
        recvtime: rec.duration,
        reason: errmsg.to_owned(),
        cid_name: rec.cidname.clone(),
        cid_number: rec.cidnum.clone(),
        callid_rest: vec![rec.recipient.clone(), rec.gateway.clone()],
        dcs,
    };
    let log = XferFaxLog::new(spool.root(), &path.to_string_lossy());
    if let Err(e) = log.append(&record.to_line()) {
        tracing::error!("{e}");
    }
}

async fn run_faxrcvd(
    spool: &Spool,
    cfg: &Config,
    rec: &Reception,
    errmsg: &str,
    log: &SessionLog,
) -> Result<(), FaxrcvdError> {
    let program: PathBuf = cfg.spool_path(&cfg.gofaxd.faxrcvd_cmd);
    let args = FaxrcvdArgs {
        file: rec.recvq_file.clone(),
        modem: rec.modem.clone(),
        commid: rec.commid.clone(),
        errmsg: errmsg.to_owned(),
        cidnum: rec.cidnum.clone(),
        cidname: rec.cidname.clone(),
        recipient: rec.recipient.clone(),
        gateway: rec.gateway.clone(),
        hangup_cause: rec.hangup_cause.clone(),
        transfer_rate: rec.bit_rate,
    };
    log.log(&format!(
        "Calling {} {}",
        program.display(),
        crate::hylafax::faxrcvd::shell_words(&args.argv())
    ));
    let outcome = faxrcvd::run(
        &program,
        spool.root(),
        &args,
        cfg.gofaxd.faxrcvd_timeout,
        faxrcvd::DEFAULT_MAX_OUTPUT,
    )
    .await;
    match &outcome {
        Ok(done) => {
            let output = done.output.trim_end();
            if done.status.success() {
                log.log(&format!("{} ended successfully", program.display()));
                tracing::info!(commid = %rec.commid, file = %rec.recvq_file, "faxrcvd done");
            } else {
                log.log(&format!("{} ended with {}", program.display(), done.status));
                tracing::warn!(commid = %rec.commid, "faxrcvd ended with {}", done.status);
            }
            for line in output.lines() {
                log.log(&format!("faxrcvd: {line}"));
                tracing::info!(commid = %rec.commid, "faxrcvd: {line}");
            }
            if done.truncated {
                log.log("faxrcvd: (output truncated)");
            }
        }
        Err(e) => {
            log.log(&e.to_string());
            tracing::error!(commid = %rec.commid, "{e}");
        }
    }
    outcome.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(failure: Option<&str>) -> Reception {
        Reception {
            commid: "000000001".into(),
            recvq_file: "recvq/fax000000001.tif".into(),
            modem: "freeswitch0".into(),
            cidnum: "4711".into(),
            cidname: "Alice".into(),
            recipient: "5000".into(),
            gateway: "gw".into(),
            started: Local::now(),
            failure: failure.map(str::to_owned),
            remote_id: "+1 337".into(),
            pages_reported: 3,
            bit_rate: 14400,
            ecm: true,
            data_format: None,
            hangup_cause: "NORMAL_CLEARING".into(),
            duration: Duration::from_secs(30),
            delivery: DeliveryStage::Received,
        }
    }

    #[test]
    fn errmsg_is_empty_only_for_a_complete_document() {
        assert_eq!(error_message(&rec(None), Some(3)), "");
        assert!(!error_message(&rec(None), None).is_empty());
        assert_eq!(
            error_message(&rec(Some("The call dropped prematurely")), Some(1)),
            "The call dropped prematurely"
        );
        assert!(!error_message(&rec(Some("x")), None).is_empty());
    }

    #[test]
    fn session_tags_only_for_a_known_session() {
        let page = |index| tifftags::PageInfo {
            index,
            pages: 3,
            width: Some(1728),
            lpi: Some(196),
        };
        let mut r = rec(None);
        r.duration = Duration::from_secs(31);
        r.data_format = Some(DataFormat::Mr);
        let tags: Vec<_> = (0..3).map(|i| fax_tags(&r, page(i))).collect();
        // vr fine (1), br 14400 (5) << 3, A4 width (0), unlimited length (2) << 12,
        // df 2-D MR (1) << 14, ECM << 16, the 6.x flag.
        let params = 1 | (5 << 3) | (2 << 12) | (1 << 14) | (1 << 16) | (1 << 21);
        let times: Vec<u32> = tags
            .iter()
            .map(|t| {
                assert!(
                    t.contains(&(tifftags::TAG_FAX_RECV_PARAMS, tifftags::Value::Long(params)))
                );
                assert!(t.contains(&(
                    tifftags::TAG_IMAGE_DESCRIPTION,
                    tifftags::Value::Ascii("+1 337".into())
                )));
                match t
                    .iter()
                    .find(|(tag, _)| *tag == tifftags::TAG_FAX_RECV_TIME)
                {
                    Some((_, tifftags::Value::Long(s))) => *s,
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(times, [10, 10, 11]);
        // Recovered: nothing known of the session, no made-up rate.
        let mut r = rec(Some("recovered"));
        r.bit_rate = 0;
        r.remote_id.clear();
        assert!(fax_tags(&r, page(0)).is_empty());
    }
}
