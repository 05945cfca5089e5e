//! Step 4 of an attempt: the verdict from how the call ended, the page progress for a retry,
//! the T.38 fallback memory and the xferfaxlog record. The verdict itself reaches the qfile in
//! one place, [`Job::finish`].

use std::time::{Duration, Instant};

use chrono::{DateTime, Local};

use crate::config::Config;
use crate::esl::{ClientConfig, InboundClient};
use crate::fallback::{self, StationKey};
use crate::fax::{Direction, Disposition, FaxOutcome, FaxResult};
use crate::hylafax::Spool;
use crate::hylafax::xferfaxlog::{self, DataFormat, Params, SendRecord, XferFaxLog};

use super::call::CallEnd;
use super::prepare::{Context, external_number};
use super::progress::Session;
use super::{Attempt, Job};

/// When the attempt started, by the monotonic clock (durations) and the wall clock (records).
pub(super) struct Timing {
    pub started: Instant,
    pub start_time: DateTime<Local>,
}

/// The verdict, the qfile's page progress, the fallback memory, xferfaxlog.
pub(super) async fn conclude(
    cfg: &Config,
    spool: &Spool,
    modem: &str,
    ctx: &mut Context,
    job: &mut Job,
    call: CallEnd,
    timing: Timing,
) -> Attempt {
    let mut attempt = attempt(&call, &cfg.gofaxsend.failed_response);
    attempt.commid = Some(ctx.commid.clone());
    attempt.job_secs = timing.started.elapsed().as_secs();

    // Counters were only raised when an originate really went out; no dial, no SEND record.
    let dialled = !matches!(call, CallEnd::NoDial(..));
    if let CallEnd::Connected { result, .. } = &call {
        let done = attempt.verdict.disposition == Disposition::Done;
        record_progress(ctx, job, result, done);
        if cfg.freeswitch.softmodem_fallback {
            remember_fallback(cfg, ctx, result).await;
        }
    }
    if dialled {
        if let Some(path) = &cfg.hylafax.xferfaxlog {
            let record = send_record(modem, ctx, job, &attempt, timing.start_time);
            let log = XferFaxLog::new(spool.root(), &path.to_string_lossy());
            if let Err(e) = log.append(&record.to_line()) {
                tracing::warn!("{e}");
            }
        }
    }
    attempt
}

/// The verdict and what the call learned.
fn attempt(call: &CallEnd, failed_causes: &[String]) -> Attempt {
    let local = |error, detail: &str, dial_attempted| {
        FaxOutcome::Local {
            error,
            detail,
            dial_attempted,
        }
        .classify(failed_causes)
    };
    match call {
        CallEnd::NoDial(error, detail) => Attempt::verdict_only(local(*error, detail, false)),
        CallEnd::LocalAfterDial(error, detail) => {
            Attempt::verdict_only(local(*error, detail, true))
        }
        CallEnd::OriginateFailed { cause, attempts } => {
            let mut verdict = FaxOutcome::OriginateFailed { cause }.classify(failed_causes);
            // Name the gateway and cause of every attempt: "Busy signal detected [gw1: USER_BUSY]".
            if !attempts.is_empty() {
                verdict.status = format!("{} [{}]", verdict.status, attempts.join("; "));
            }
            Attempt::verdict_only(verdict)
        }
        CallEnd::Connected {
            result,
            cut_short,
            answered_at,
        } => {
            let mut verdict = FaxOutcome::Connected { result }.classify(failed_causes);
            if let Some((error, detail)) = cut_short {
                if verdict.disposition != Disposition::Done {
                    verdict = local(*error, detail, true);
                    verdict.counts_as_try = true;
                }
            }
            Attempt {
                verdict,
                pages_sent: result.transferred_pages,
                remote_id: result.remote_station_id.clone(),
                signal_rate: result.transfer_rate,
                data_format: result
                    .encoding_name()
                    .and_then(DataFormat::from_encoding_name),
                ecm: result.ecm_used,
                connect_secs: answered_at.elapsed().as_secs(),
                job_secs: 0,
                commid: None,
            }
        }
    }
}

/// Records the pages spandsp's final count adds to the page events (so a retry resumes at the
/// first unsent page) and, for a job that is done, takes its documents out as faxsend does.
fn record_progress(ctx: &mut Context, job: &mut Job, result: &FaxResult, done: bool) {
    let session = Session::of(result, &ctx.commid);
    let progress = &mut ctx.progress;
    progress.conclude(job, result.transferred_pages, done, &session);
    if progress.sent_range().is_none() {
        return;
    }
    let mut text = format!("{} transferred in this attempt", progress.describe_sent());
    if done {
        text.push_str("; the job is complete");
    } else if progress.all_sent() {
        text.push_str("; every page went through but the fax did not end cleanly");
    }
    ctx.log.log(&text);
}

/// The attempt's SEND record for xferfaxlog.
fn send_record(
    modem: &str,
    ctx: &Context,
    job: &Job,
    attempt: &Attempt,
    start: DateTime<Local>,
) -> SendRecord {
    let q = job.q();
    let connected = attempt.connect_secs > 0 || attempt.signal_rate.is_some();
    let (df, dcs) = xferfaxlog::session_params(attempt.data_format, connected);
    SendRecord {
        start,
        commid: ctx.commid.clone(),
        device: modem.to_string(),
        jobid: ctx.jobid,
        jobtag: q.jobtag().into_owned(),
        mailaddr: q.mailaddr().into_owned(),
        external: external_number(job),
        csi: attempt.remote_id.clone().unwrap_or_default(),
        params: Params {
            bit_rate: attempt.signal_rate.unwrap_or(0),
            ecm: attempt.ecm,
            data_format: df,
            ..Params::default()
        },
        npages: attempt.pages_sent,
        jobtime: Duration::from_secs(attempt.job_secs),
        conntime: Duration::from_secs(attempt.connect_secs),
        reason: attempt.verdict.status.clone(),
        owner: q.owner().into_owned(),
        dcs,
    }
}

/// Writes (or clears) the fallback entry for the station after the call.
async fn remember_fallback(cfg: &Config, ctx: &Context, result: &FaxResult) {
    let Some(key) = StationKey::outbound(&ctx.dialled, &ctx.call_prefix) else {
        return;
    };
    let fs = &cfg.freeswitch;
    let nothing_to_do = !fallback::after_call_needed(
        Direction::Send,
        result,
        fs.softmodem_fallback_clear_on_success,
        ctx.fallback_listed,
    );
    if nothing_to_do {
        return;
    }
    // A fresh connection: the call's own may be gone by now.
    let esl_cfg = ClientConfig {
        connect_timeout: fs.connect_timeout,
        auth_timeout: fs.connect_timeout,
        command_timeout: fs.fallback_lookup_timeout,
        ..ClientConfig::default()
    };
    // The node that placed the call: with a shared mod_db any node would do, without one the
    // entry belongs where this station's next call will look for it first.
    let node = ctx
        .node
        .clone()
        .or_else(|| fs.node_list().into_iter().next());
    let Some(node) = node else {
        return;
    };
    let client = match InboundClient::connect(&node.socket, &node.password, &esl_cfg).await {
        Ok((client, _events)) => client,
        Err(e) => {
            tracing::warn!(station = %key, "cannot update the T.38 fallback list: {e}");
            return;
        }
    };
    let recorded = fallback::record_after_call(
        &client,
        fs,
        &key,
        Direction::Send,
        result,
        ctx.fallback_listed,
    )
    .await;
    if let Some(text) = recorded {
        ctx.log.log(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fax::SimpleHeaders;

    /// The SEND record's data format comes from spandsp's encoding name as a `DataFormat`,
    /// not from the qfile's HylaFAX name read back (which made every record MH).
    #[test]
    fn the_data_format_reaches_the_send_record() {
        let mut result = FaxResult::new(Direction::Send);
        result.apply(&SimpleHeaders::from_pairs([
            ("Event-Name", "CUSTOM"),
            ("Event-Subclass", "spandsp::txfaxpageresult"),
            ("fax-document-transferred-pages", "1"),
            ("fax-encoding-name", "T.6"),
        ]));
        let call = CallEnd::Connected {
            result: Box::new(result),
            cut_short: None,
            answered_at: Instant::now(),
        };
        let attempt = attempt(&call, &[]);
        assert_eq!(attempt.data_format, Some(DataFormat::Mmr));
        let (df, dcs) = xferfaxlog::session_params(attempt.data_format, true);
        assert_eq!(df, DataFormat::Mmr);
        assert!(!dcs.is_empty());
    }
}
