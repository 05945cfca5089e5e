//! One send attempt, top to bottom: job values, DynamicConfigOutgoing, the document, the
//! event socket, one originate per gateway, the fax, the verdict and the logs.

use std::time::{Duration, Instant};

use chrono::{DateTime, Local};
use tokio::signal::unix::{Signal, SignalKind, signal};
use uuid::Uuid;

use crate::config::Config;
use crate::esl::{ClientConfig, ClientError, EventStream, InboundClient, SessionItem};
use crate::fallback::{self, FallbackDb, FallbackError, Lookup, StationKey};
use crate::fax::dialstring::{db_key_safe, normalize_dial_number};
use crate::fax::outcome::should_fail_over;
use crate::fax::{
    ChannelVars, Direction, FaxOutcome, FaxResult, JobResult, LocalError, OriginateRequest, Update,
};
use crate::hylafax::Spool;
use crate::hylafax::dynconfig::{self, OutgoingConfig};
use crate::hylafax::seqf;
use crate::hylafax::sessionlog::SessionLog;
use crate::hylafax::xferfaxlog::{self, DataFormat, Params, SendRecord, XferFaxLog};

use super::document::{self, JobDocument};
use super::{Attempt, Job, spool_relative};

/// Events the sender needs: call progress, the background originate result and spandsp's.
const EVENTS: &[&str] = &[
    "BACKGROUND_JOB",
    "CHANNEL_ANSWER",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_CALLSTATE",
    "CUSTOM",
    "spandsp::txfaxnegociateresult",
    "spandsp::txfaxpageresult",
    "spandsp::txfaxresult",
];
/// DynamicConfigOutgoing output beyond this is ignored.
const SCRIPT_OUTPUT_MAX: usize = 64 * 1024;
/// After a kill or a lost hangup, how long to wait for FreeSWITCH's last events.
const WRAP_UP: Duration = Duration::from_secs(10);
/// How often and how long to try getting the event socket back when it drops mid-call.
const RECONNECT_TRIES: u32 = 3;
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Runs one attempt of the job and returns its verdict with what the call learned.
pub async fn send(
    cfg: &Config,
    spool: &Spool,
    modem: &str,
    job: &mut Job,
    stop: &mut Stop,
) -> Attempt {
    let started = Instant::now();
    let start_time = Local::now();
    let mut ctx = match prepare(cfg, spool, modem, job).await {
        Ok(ctx) => ctx,
        Err(verdict) => return Attempt::verdict_only(verdict),
    };
    let call = place_call(cfg, &mut ctx, job, stop).await;
    let attempt = conclude(cfg, spool, modem, &mut ctx, job, call, started, start_time).await;
    ctx.log.log(&format!(
        "{}: {}",
        match attempt.verdict.disposition {
            crate::fax::Disposition::Done => "SEND DONE",
            crate::fax::Disposition::Retry => "SEND RETRY",
            crate::fax::Disposition::Failed => "SEND FAILED",
        },
        if attempt.verdict.status.is_empty() {
            "OK"
        } else {
            &attempt.verdict.status
        }
    ));
    ctx.log.end();
    attempt
}

/// Everything the call needs, worked out before anything goes to FreeSWITCH.
struct Context {
    jobid: u32,
    commid: String,
    log: SessionLog,
    /// The number as dialled (call prefix included), checked.
    dialled: String,
    call_prefix: String,
    gateways: Vec<String>,
    vars: ChannelVars,
    docs: Vec<JobDocument>,
    prepared: document::Prepared,
    /// The station was on the T.38 fallback list when the call was placed.
    fallback_listed: bool,
}

/// The job's values, DynamicConfigOutgoing and the document. `Err` is the verdict when the
/// attempt cannot go on.
async fn prepare(
    cfg: &Config,
    spool: &Spool,
    modem: &str,
    job: &mut Job,
) -> Result<Context, JobResult> {
    let failed = |why: &str| FaxOutcome::Rejected { reason: why }.classify(&[]);
    let local = |error, detail: &str| {
        FaxOutcome::Local {
            error,
            detail,
            dial_attempted: false,
        }
        .classify(&[])
    };
    let q = job.q();
    let jobid = q.jobid().map_err(|e| failed(&e.to_string()))?;
    tracing::Span::current().record("job", jobid);
    let external = q
        .external()
        .or_else(|| q.number())
        .unwrap_or_default()
        .trim()
        .to_string();
    let number = q.number().unwrap_or(&external).to_string();
    let owner = q.owner().into_owned();

    let commid_n =
        seqf::next(&spool.log_seqf()).map_err(|e| local(LocalError::Internal, &e.to_string()))?;
    let commid = seqf::format_commid(commid_n);
    tracing::Span::current().record("commid", commid.as_str());
    let log = SessionLog::create(spool, commid_n).unwrap_or_else(|e| {
        tracing::warn!("{e}");
        SessionLog::disabled(&commid)
    });
    log.begin(&external);
    log.log(&format!(
        "SEND FAX: JOB {jobid} DEST {external} COMMID {commid} DEVICE '{modem}' USER {owner}"
    ));
    if let Err(e) = job.q_mut().set("commid", &commid) {
        tracing::warn!("{e}");
    }
    job.save();

    let script = match &cfg.gofaxsend.dynamic_config {
        Some(program) => {
            let program = spool_relative(spool, program);
            log.log(&format!("Calling DynamicConfig {}", program.display()));
            let args = [
                modem.to_string(),
                owner.clone(),
                number.clone(),
                jobid.to_string(),
            ];
            match dynconfig::run(
                &program,
                &args,
                spool.root(),
                cfg.gofaxsend.dynamic_config_timeout,
                SCRIPT_OUTPUT_MAX,
            )
            .await
            {
                Ok(out) if out.success() => {
                    let settings = out.settings();
                    for w in &settings.warnings {
                        tracing::warn!(script = %program.display(), "ignored DynamicConfig output line: {w}");
                    }
                    settings.outgoing()
                }
                Ok(out) => {
                    let detail = format!(
                        "{} exited with {}: {}",
                        program.display(),
                        out.status,
                        out.stderr.trim()
                    );
                    log.log(&format!("DynamicConfig failed: {detail}"));
                    return Err(local(LocalError::ScriptFailed, &detail));
                }
                Err(e) => {
                    log.log(&format!("DynamicConfig failed: {e}"));
                    return Err(local(LocalError::ScriptFailed, &e.to_string()));
                }
            }
        }
        None => OutgoingConfig::default(),
    };
    if script.reject_call {
        log.log("Transmission rejected by DynamicConfig");
        return Err(failed("Transmission rejected by DynamicConfig"));
    }

    let call_prefix = script
        .call_prefix
        .clone()
        .unwrap_or_else(|| cfg.gofaxsend.call_prefix.clone());
    let dialled = normalize_dial_number(&format!("{call_prefix}{external}")).map_err(|e| {
        log.log(&format!("Cannot dial: {e}"));
        failed(&format!("Cannot dial this number: {e}"))
    })?;
    let gateways = if script.gateways.is_empty() {
        cfg.freeswitch.gateways.clone()
    } else {
        script.gateways.clone()
    };
    if gateways.is_empty() {
        return Err(failed("No gateway configured ([freeswitch] gateway)"));
    }

    let mut vars = channel_vars(cfg, job, &script);
    // Document paths in the qfile are relative to faxq's spool, which is our working
    // directory when faxq runs us (the qfile path is relative to it too).
    let cwd = std::env::current_dir().ok();
    let base = cwd.as_deref().unwrap_or(spool.root());
    let entries = job
        .q()
        .documents(base)
        .map_err(|e| failed(&e.to_string()))?;
    let mut docs = Vec::with_capacity(entries.len());
    for d in entries {
        docs.push(
            JobDocument::inspect(d.path, d.first_page_dir).map_err(|e| failed(&e.to_string()))?,
        );
    }
    let temp_dir = spool.join("tmp");
    document::sweep_stale(&temp_dir);
    let prepared = document::prepare(
        &docs,
        &temp_dir,
        &jobid.to_string(),
        cfg.gofaxsend.tiffcp_timeout,
    )
    .await
    .map_err(|e| {
        log.log(&format!("Document: {e}"));
        if e.is_permanent() {
            failed(&e.to_string())
        } else {
            local(LocalError::Internal, &e.to_string())
        }
    })?;
    let tagged = super::tagline::apply(cfg, spool, modem, job, &script, prepared, &temp_dir, &log)?;
    if tagged.imaged {
        vars.fax_header = Some(super::tagline::NO_HEADER.to_string());
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
        docs,
        prepared,
        fallback_listed: false,
    })
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
    let cid_name = match s.cid_name.as_str() {
        "sender" => q.sender().into_owned(),
        "number" => q.number().unwrap_or_default().to_string(),
        "cidnum" => cid_number.clone(),
        other => other.to_string(),
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

/// How the call went, before classification.
enum CallEnd {
    /// FreeSWITCH could not be reached, or a command failed before any dial.
    NoDial(LocalError, String),
    /// Every gateway tried failed the originate; the last cause and each attempt's summary.
    OriginateFailed {
        cause: String,
        attempts: Vec<String>,
    },
    /// The call was answered; the result holds what the events said.
    Connected {
        result: Box<FaxResult>,
        /// Set when the end was ours (signal, hard cap, lost connection), not the call's.
        cut_short: Option<(LocalError, String)>,
        answered_at: Instant,
    },
    /// Something of ours failed after an originate was sent but before an answer.
    LocalAfterDial(LocalError, String),
}

/// Connects to FreeSWITCH, looks up the fallback and overrides, then tries the gateways in
/// order until one answers or a cause says the destination itself answered.
async fn place_call(cfg: &Config, ctx: &mut Context, job: &mut Job, stop: &mut Stop) -> CallEnd {
    let fs = &cfg.freeswitch;
    let esl_cfg = ClientConfig {
        connect_timeout: fs.connect_timeout,
        auth_timeout: fs.connect_timeout,
        command_timeout: fs.command_timeout,
        ..ClientConfig::default()
    };
    let connected = tokio::select! {
        r = InboundClient::connect(&fs.socket, &fs.password, &esl_cfg) => r,
        sig = stop.recv() => return CallEnd::NoDial(LocalError::Interrupted, format!("{sig} before dialling")),
    };
    let (client, events) = match connected {
        Ok(c) => c,
        Err(e) => {
            ctx.log.log(&format!("{e}"));
            return CallEnd::NoDial(LocalError::FreeswitchUnreachable, e.to_string());
        }
    };
    let mut session = EslSession {
        client,
        cfg: esl_cfg,
        socket: fs.socket.clone(),
        password: fs.password.clone(),
    };

    let mut events = events;
    let mut db_answers = true;
    if fs.softmodem_fallback && !apply_fallback(cfg, ctx, &session.client).await {
        // The lookup timed out and took the connection with it: dial on a fresh one, and
        // skip the overrides, which would wait on the same mod_db.
        db_answers = false;
        match InboundClient::connect(&fs.socket, &fs.password, &session.cfg).await {
            Ok((client, fresh)) => {
                session.client = client;
                events = fresh;
            }
            Err(e) => {
                ctx.log.log(&format!("{e}"));
                return CallEnd::NoDial(LocalError::FreeswitchUnreachable, e.to_string());
            }
        }
    }
    if db_answers {
        apply_overrides(ctx, &session.client).await;
    } else {
        ctx.log
            .log("mod_db did not answer: per-destination overrides skipped for this attempt");
    }

    let mut attempts = Vec::new();
    let mut last_cause = String::new();
    for (i, gateway) in ctx.gateways.clone().iter().enumerate() {
        let uuid = Uuid::new_v4();
        let job_uuid = Uuid::new_v4().to_string();
        tracing::Span::current().record("uuid", tracing::field::display(uuid));
        let request = OriginateRequest {
            uuid,
            gateway: gateway.clone(),
            number: ctx.dialled.clone(),
            vars: ctx.vars.clone(),
            txfax_path: ctx.prepared.path.clone(),
            start_page: ctx.prepared.start_page,
            end_page: None,
        };
        let command = match request.build() {
            Ok(c) => c,
            Err(e) => {
                ctx.log.log(&format!("Gateway {gateway}: {e}"));
                attempts.push(format!("{gateway}: {e}"));
                last_cause = e.to_string();
                continue;
            }
        };
        // Filters before the subscription, so no other call's events are ever queued for us.
        let subscribed = async {
            session
                .client
                .filter("Unique-ID", &uuid.to_string())
                .await?;
            session.client.filter("Job-UUID", &job_uuid).await?;
            if i == 0 {
                session.client.event_plain(EVENTS).await?;
            }
            Ok::<_, ClientError>(())
        };
        if let Err(e) = subscribed.await {
            ctx.log.log(&format!("{e}"));
            return if i == 0 {
                CallEnd::NoDial(LocalError::EslDropped, e.to_string())
            } else {
                CallEnd::LocalAfterDial(LocalError::EslDropped, e.to_string())
            };
        }

        count_dial(job, &format!("Dialing {} via {gateway}", ctx.dialled));
        ctx.log.log(&format!(
            "DIAL {} via gateway {gateway} (call {uuid})",
            ctx.dialled
        ));
        tracing::info!(gateway = %gateway, number = %ctx.dialled, "originate");
        let background = match session
            .client
            .bgapi_with_job_uuid(&command, &job_uuid)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                // The originate may be running in FreeSWITCH even though its reply never came.
                ctx.log.log(&format!("{e}"));
                kill_after_drop(&mut session, &uuid).await;
                return CallEnd::LocalAfterDial(LocalError::EslDropped, e.to_string());
            }
        };

        let mut result = FaxResult::for_channel(Direction::Send, uuid.to_string());
        let deadline = tokio::time::sleep(cfg.gofaxsend.originate_timeout);
        tokio::pin!(deadline);
        let background = background.result();
        tokio::pin!(background);
        let reply = loop {
            tokio::select! {
                r = &mut background => break r,
                item = events.recv() => match item {
                    Some(SessionItem::Event(ev)) => { result.apply(&ev); }
                    Some(SessionItem::Disconnect(_)) => {}
                    None => {
                        let why = close_text(&events);
                        ctx.log.log(&format!("Lost the event socket while dialling: {why}"));
                        kill_after_drop(&mut session, &uuid).await;
                        return CallEnd::LocalAfterDial(LocalError::EslDropped, why);
                    }
                },
                () = &mut deadline => {
                    let why = format!(
                        "no answer and no failure within {:?} ([gofaxsend] originatetimeout); call cancelled",
                        cfg.gofaxsend.originate_timeout
                    );
                    ctx.log.log(&why);
                    let _ = session.client.api(&format!("uuid_kill {uuid}")).await;
                    return CallEnd::LocalAfterDial(LocalError::Timeout, why);
                }
                sig = stop.recv() => {
                    ctx.log.log(&format!("{sig} while dialling; call cancelled"));
                    let _ = session.client.api(&format!("uuid_kill {uuid}")).await;
                    return CallEnd::LocalAfterDial(LocalError::Interrupted, format!("{sig} while dialling"));
                }
            }
        };
        let reply = match reply {
            Ok(body) => body,
            Err(e) => {
                ctx.log.log(&format!("{e}"));
                kill_after_drop(&mut session, &uuid).await;
                return CallEnd::LocalAfterDial(LocalError::EslDropped, e.to_string());
            }
        };
        let reply = reply.trim();
        if reply.starts_with("+OK") {
            ctx.log.log(&format!("CONNECTED via gateway {gateway}"));
            tracing::info!(gateway = %gateway, "answered");
            return run_fax(cfg, ctx, job, stop, &mut session, events, uuid, result).await;
        }
        let cause = crate::fax::outcome::normalize_cause(reply);
        ctx.log.log(&format!("Gateway {gateway}: {cause}"));
        tracing::info!(gateway = %gateway, cause = %cause, "originate failed");
        attempts.push(format!("{gateway}: {cause}"));
        last_cause = cause.clone();
        let more = i + 1 < ctx.gateways.len();
        if !(more && should_fail_over(&cause, &cfg.gofaxsend.failover_causes)) {
            break;
        }
    }
    let _ = session.client.exit().await;
    CallEnd::OriginateFailed {
        cause: last_cause,
        attempts,
    }
}

/// The answered call: follows txfax's events until the fax result and the hangup are in,
/// writing progress to the qfile; enforces the hard cap and hangs up shortly after the result.
#[allow(clippy::too_many_arguments)]
async fn run_fax(
    cfg: &Config,
    ctx: &mut Context,
    job: &mut Job,
    stop: &mut Stop,
    session: &mut EslSession,
    mut events: EventStream,
    uuid: Uuid,
    mut result: FaxResult,
) -> CallEnd {
    let answered_at = Instant::now();
    let pages_before = job.q().npages();
    {
        let q = job.q_mut();
        let tries = q.tottries() + 1;
        let _ = q.set_u32("tottries", tries);
        let _ = q.set_u32("ndials", 0);
    }
    job.progress(&format!("Connected to {}", ctx.dialled));

    let cap = tokio::time::sleep(cfg.gofaxsend.max_call_duration);
    tokio::pin!(cap);
    let mut cap_fired = false;
    // Armed once the fax result is in (hang up if FreeSWITCH does not) or we killed the call.
    let wrap_up = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(wrap_up);
    let mut wrap_armed = false;
    let mut cut_short: Option<(LocalError, String)> = None;
    let mut hangup_complete = false;

    while !hangup_complete {
        tokio::select! {
            item = events.recv() => match item {
                Some(SessionItem::Event(ev)) => {
                    if ev.unique_id() == Some(uuid.to_string().as_str())
                        && matches!(ev.name(), Some("CHANNEL_HANGUP_COMPLETE" | "CHANNEL_DESTROY"))
                    {
                        hangup_complete = true;
                    }
                    match result.apply(&ev) {
                        Some(Update::Negotiated) => {
                            let rate = result.transfer_rate.unwrap_or(0);
                            let ecm = if result.ecm_used { "/ECM" } else { "" };
                            if let Some(csi) = &result.remote_station_id {
                                let _ = job.q_mut().set("csi", csi);
                            }
                            let _ = job.q_mut().set("signalrate", &format!("{rate} bit/s"));
                            job.progress(&format!("Sending {rate}{ecm}"));
                            ctx.log.log(&format!(
                                "NEGOTIATED {rate} bit/s{}, remote {:?}, T.38 {:?}",
                                if result.ecm_used { " ECM" } else { "" },
                                result.remote_station_id.as_deref().unwrap_or(""),
                                result.t38_status
                            ));
                        }
                        Some(Update::Page(n)) => {
                            let _ = job.q_mut().set_u32("npages", pages_before + n);
                            if let Some(enc) = result.encoding_name() {
                                let _ = job.q_mut().set("dataformat", &hylafax_format(enc));
                            }
                            job.save();
                            ctx.log.log(&format!("SENT PAGE {n}"));
                        }
                        Some(Update::FinalResult) => {
                            ctx.log.log(&format!(
                                "FAX RESULT {} ({}), {} of {} pages",
                                result.result_code.map_or("-".into(), |c| c.to_string()),
                                result.result_text.as_deref().unwrap_or(""),
                                result.transferred_pages,
                                result.total_pages
                            ));
                            if !wrap_armed {
                                wrap_up.as_mut().reset(tokio::time::Instant::now() + cfg.gofaxsend.hangup_after_result);
                                wrap_armed = true;
                            }
                        }
                        Some(Update::Hangup) => {
                            ctx.log.log(&format!(
                                "HANGUP {}",
                                result.hangup_cause.as_deref().unwrap_or("")
                            ));
                            if !wrap_armed {
                                // The fax result follows CHANNEL_HANGUP; wait for it, bounded.
                                wrap_up.as_mut().reset(tokio::time::Instant::now() + WRAP_UP);
                                wrap_armed = true;
                            }
                        }
                        Some(Update::Answered) | None => {}
                    }
                    if result.final_result_seen && result.hangup_seen {
                        break;
                    }
                }
                Some(SessionItem::Disconnect(_)) => {}
                None => {
                    let why = close_text(&events);
                    ctx.log.log(&format!("Lost the event socket during the call: {why}"));
                    tracing::warn!("event socket lost during the call: {why}");
                    match resume(session, &uuid).await {
                        Some(stream) => {
                            ctx.log.log("Event socket back; the call is still up, following it again");
                            events = stream;
                        }
                        None => {
                            cut_short = Some((LocalError::EslDropped, format!(
                                "{why}; the fax result is unknown (the call may have completed)"
                            )));
                            break;
                        }
                    }
                }
            },
            () = &mut wrap_up, if wrap_armed => {
                if result.final_result_seen && !result.hangup_seen {
                    // mod_spandsp can leave a T.38 call up for minutes after the result.
                    ctx.log.log("Fax finished but the call is still up; hanging up");
                } else {
                    ctx.log.log("No final fax result after the hangup; giving up waiting");
                }
                let _ = session.client.api(&format!("uuid_kill {uuid}")).await;
                if result.final_result_seen || result.hangup_seen {
                    break;
                }
                wrap_up.as_mut().reset(tokio::time::Instant::now() + WRAP_UP);
            }
            () = &mut cap, if !cap_fired => {
                cap_fired = true;
                let why = format!(
                    "call longer than {:?} ([gofaxsend] maxcallduration); hung up",
                    cfg.gofaxsend.max_call_duration
                );
                ctx.log.log(&why);
                let _ = session.client.api(&format!("uuid_kill {uuid}")).await;
                cut_short.get_or_insert((LocalError::Timeout, why));
                wrap_up.as_mut().reset(tokio::time::Instant::now() + WRAP_UP);
                wrap_armed = true;
            }
            sig = stop.recv() => {
                ctx.log.log(&format!("{sig}: hanging up the call"));
                let _ = session.client.api(&format!("uuid_kill {uuid}")).await;
                cut_short.get_or_insert((LocalError::Interrupted, format!("{sig} during the call")));
                wrap_up.as_mut().reset(tokio::time::Instant::now() + WRAP_UP);
                wrap_armed = true;
            }
        }
    }
    let _ = session.client.exit().await;
    CallEnd::Connected {
        result: Box::new(result),
        cut_short,
        answered_at,
    }
}

/// The verdict, the qfile counters and page progress, the fallback memory, xferfaxlog.
#[allow(clippy::too_many_arguments)]
async fn conclude(
    cfg: &Config,
    spool: &Spool,
    modem: &str,
    ctx: &mut Context,
    job: &mut Job,
    call: CallEnd,
    started: Instant,
    start_time: DateTime<Local>,
) -> Attempt {
    let failed_causes = &cfg.gofaxsend.failed_response;
    let mut attempt = match &call {
        CallEnd::NoDial(error, detail) => Attempt::verdict_only(
            FaxOutcome::Local {
                error: *error,
                detail,
                dial_attempted: false,
            }
            .classify(failed_causes),
        ),
        CallEnd::LocalAfterDial(error, detail) => Attempt::verdict_only(
            FaxOutcome::Local {
                error: *error,
                detail,
                dial_attempted: true,
            }
            .classify(failed_causes),
        ),
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
                if verdict.disposition != crate::fax::Disposition::Done {
                    verdict = FaxOutcome::Local {
                        error: *error,
                        detail,
                        dial_attempted: true,
                    }
                    .classify(failed_causes);
                    verdict.counts_as_try = true;
                }
            }
            Attempt {
                verdict,
                pages_sent: result.transferred_pages,
                remote_id: result.remote_station_id.clone(),
                signal_rate: result.transfer_rate,
                data_format: result.encoding_name().map(hylafax_format),
                ecm: result.ecm_used,
                connect_secs: answered_at.elapsed().as_secs(),
                job_secs: 0,
                commid: None,
            }
        }
    };
    attempt.commid = Some(ctx.commid.clone());
    attempt.job_secs = started.elapsed().as_secs();

    // Counters were only raised when an originate really went out; no dial, no SEND record.
    let dialled = !matches!(call, CallEnd::NoDial(..));
    if let CallEnd::Connected { result, .. } = &call {
        record_progress(ctx, job, result.transferred_pages);
        if cfg.freeswitch.softmodem_fallback {
            remember_fallback(cfg, ctx, result).await;
        }
    }
    if dialled {
        write_xferfaxlog(cfg, spool, modem, ctx, job, &attempt, start_time);
    }
    attempt
}

/// Advances the `fax:` entries past the pages that went through, so a retry resumes there.
fn record_progress(ctx: &mut Context, job: &mut Job, pages: u32) {
    if pages == 0 {
        return;
    }
    document::apply_progress(&mut ctx.docs, pages);
    let firsts: Vec<u32> = ctx.docs.iter().map(|d| d.first_page).collect();
    if let Err(e) = job.q_mut().set_fax_first_pages(&firsts) {
        tracing::warn!("cannot record page progress: {e}");
    }
    ctx.log
        .log(&format!("{pages} pages transferred in this attempt"));
}

fn write_xferfaxlog(
    cfg: &Config,
    spool: &Spool,
    modem: &str,
    ctx: &Context,
    job: &Job,
    attempt: &Attempt,
    start_time: DateTime<Local>,
) {
    let Some(path) = &cfg.hylafax.xferfaxlog else {
        return;
    };
    let q = job.q();
    let connected = attempt.connect_secs > 0 || attempt.signal_rate.is_some();
    let (df, dcs) = xferfaxlog::session_format(attempt.data_format.as_deref(), connected);
    let record = SendRecord {
        start: start_time,
        commid: ctx.commid.clone(),
        device: modem.to_string(),
        jobid: ctx.jobid,
        jobtag: q.jobtag().into_owned(),
        mailaddr: q.mailaddr().into_owned(),
        external: q
            .external()
            .or_else(|| q.number())
            .unwrap_or_default()
            .to_string(),
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
    };
    let log = XferFaxLog::new(spool.root(), &path.to_string_lossy());
    if let Err(e) = log.append(&record.to_line()) {
        tracing::warn!("{e}");
    }
}

/// HylaFAX's name for a spandsp encoding (`T.6` → `2-D MMR`), or the name as spandsp gave it.
fn hylafax_format(encoding: &str) -> String {
    DataFormat::from_encoding_name(encoding)
        .map(|df| df.hylafax_name().to_string())
        .unwrap_or_else(|| encoding.to_string())
}

/// Raises `totdials` and `ndials` and says what is being dialled, before the originate goes out.
fn count_dial(job: &mut Job, status: &str) {
    let q = job.q_mut();
    let (tot, n) = (q.totdials() + 1, q.ndials() + 1);
    let _ = q.set_u32("totdials", tot);
    let _ = q.set_u32("ndials", n);
    job.progress(status);
}

/// The T.38 fallback memory: audio for stations that failed with T.38 before. Returns false
/// when FreeSWITCH did not answer and the connection is no longer usable.
async fn apply_fallback(cfg: &Config, ctx: &mut Context, client: &InboundClient) -> bool {
    let Some(key) = StationKey::outbound(&ctx.dialled, &ctx.call_prefix) else {
        return true;
    };
    let fs = &cfg.freeswitch;
    let db = FallbackDb::new(client, fs.fallback_lookup_timeout);
    let now = Local::now().timestamp();
    let found = fallback::lookup(&db, &key, now, fs.softmodem_fallback_expiry).await;
    if let Some(text) = found.describe(&key, Direction::Send) {
        ctx.log.log(&text);
        match &found {
            Lookup::Unavailable(_) => tracing::warn!(station = %key, "{text}"),
            _ => tracing::info!(station = %key, "{text}"),
        }
    }
    if found.audio() {
        ctx.vars.enable_t38 = Some(false);
        ctx.vars.enable_t38_request = Some(false);
    }
    ctx.fallback_listed = found.listed();
    !matches!(
        found,
        Lookup::Unavailable(FallbackError::Timeout { .. } | FallbackError::Esl { .. })
    )
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
    let client = match InboundClient::connect(&fs.socket, &fs.password, &esl_cfg).await {
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

/// Per-destination overrides an admin stored in mod_db (`override-<number>` realm), limited to
/// fax and caller-ID variables.
async fn apply_overrides(ctx: &mut Context, client: &InboundClient) {
    if !db_key_safe(&ctx.dialled) {
        return;
    }
    let realm = format!("override-{}", ctx.dialled);
    let Ok(list) = client.api(&format!("db list/{realm}")).await else {
        return;
    };
    let list = list.trim();
    if list.starts_with("-ERR") || list == "!err!" || list.is_empty() {
        return;
    }
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !db_key_safe(name) {
            continue;
        }
        let Ok(value) = client.api(&format!("db select/{realm}/{name}")).await else {
            continue;
        };
        let value = value.trim_end_matches('\n');
        if value.starts_with("-ERR") || value == "!err!" {
            continue;
        }
        match ctx.vars.apply_override(name, value) {
            Ok(()) => ctx
                .log
                .log(&format!("Override from mod_db: {name}={value}")),
            Err(e) => tracing::warn!("ignored mod_db override {realm}/{name}: {e}"),
        }
    }
}

/// The inbound connection with what is needed to open it again.
struct EslSession {
    client: InboundClient,
    cfg: ClientConfig,
    socket: String,
    password: String,
}

/// After the event socket dropped mid-call: reconnects, and if the call still exists,
/// subscribes to it again and returns the new event stream.
async fn resume(session: &mut EslSession, uuid: &Uuid) -> Option<EventStream> {
    for _ in 0..RECONNECT_TRIES {
        tokio::time::sleep(RECONNECT_PAUSE).await;
        let Ok((client, events)) =
            InboundClient::connect(&session.socket, &session.password, &session.cfg).await
        else {
            continue;
        };
        let exists = async {
            client.filter("Unique-ID", &uuid.to_string()).await?;
            client.event_plain(EVENTS).await?;
            client.api(&format!("uuid_exists {uuid}")).await
        }
        .await;
        session.client = client;
        return match exists {
            Ok(reply) if reply.trim() == "true" => Some(events),
            _ => None,
        };
    }
    None
}

/// When the socket dropped before answer: make sure the call does not go on without us.
async fn kill_after_drop(session: &mut EslSession, uuid: &Uuid) {
    if let Ok((client, _)) =
        InboundClient::connect(&session.socket, &session.password, &session.cfg).await
    {
        let _ = client.api(&format!("uuid_kill {uuid}")).await;
        session.client = client;
    }
}

fn close_text(events: &EventStream) -> String {
    events
        .close_reason()
        .map_or_else(|| "connection closed".to_string(), |r| r.to_string())
}

/// SIGTERM (faxrm, shutdown) and SIGINT, as a future to select on. Created first thing, so a
/// signal that arrives while the job is being prepared is kept for the first place that waits.
pub struct Stop {
    term: Option<Signal>,
    int: Option<Signal>,
}

impl Stop {
    /// Installs the handlers; from here on these signals no longer kill the process.
    pub fn new() -> Stop {
        Stop {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    async fn recv(&mut self) -> &'static str {
        let term = async {
            match self.term.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let int = async {
            match self.int.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term => "SIGTERM",
            _ = int => "SIGINT",
        }
    }
}
