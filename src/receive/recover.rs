//! Start-up recovery: receptions a previous fsfaxd journalled but never handed to faxrcvd.
//!
//! fsfaxd may have died (crash, SIGKILL, OOM, shutdown timeout) anywhere between the journal
//! write before `rxfax` and faxrcvd. FreeSWITCH's `rxfax` does not stop when our socket goes
//! (a real switch went on receiving for 40 s after a `kill -9`), so at start-up each entry is
//! one of two things:
//!
//! * **Still running in FreeSWITCH** (`uuid_exists`): shown on a virtual modem as receiving
//!   (faxstat, faxq) and logged, and followed to its end on a connection of its own to the
//!   Event Socket: `filter Unique-ID <uuid>` for each such call, then `event plain` for the
//!   hangup and the `spandsp::rx*` events (capture README: spandsp headers are lower case, and
//!   CHANNEL_HANGUP comes *before* `spandsp::rxfaxresult`, so the end waits for both, the
//!   result at most [`RESULT_AFTER_HANGUP`] after the hangup). Its real result (TSI, pages,
//!   rate, ECM, hangup cause) then goes to xferfaxlog and faxrcvd, as for a live call. Without
//!   events (no connection, or it closed) `uuid_exists` is asked every [`CALL_POLL`] until the
//!   call is gone. A subscription made before `uuid_exists` answered means no event of a call
//!   found up can be missed.
//! * **Already over**: the document itself is the evidence. spandsp writes the remote ident in
//!   `ImageDescription`, the received DCS in `FaxDcs` (rate, ECM, data format), the time per
//!   page in `FaxRecvTime`, and fixes up each page's `PageNumber` total when it closes the
//!   file. A readable document with spandsp's session marks on every page is a clean
//!   reception; one whose pages say spandsp never finished it is damaged; anything else is
//!   reported with [`RECOVERED`] (completeness unknown). An entry without a document is dropped.
//!
//! Every wait is bounded (`maxcallduration` from the call's start, the Event Socket command
//! timeout) and gives way at once to a stop: the entries not yet delivered stay for the next
//! start.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{Local, TimeZone};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::deliver::{self, Reception};
use super::modems::{Lease, Modems};
use super::outcome::{End, failure};
use super::rxfax::RESULT_AFTER_HANGUP;
use super::{Daemon, SwitchLink};
use crate::config::Config;
use crate::esl::{ClientConfig, EventStream, InboundClient, SessionItem};
use crate::fax::{Direction, EventHeaders, FaxResult, Update};
use crate::hylafax::Spool;
use crate::hylafax::journal::{Journal, PendingReception};
use crate::hylafax::sessionlog::SessionLog;
use crate::hylafax::xferfaxlog::DataFormat;
use crate::tifftags::{self, PageSession};

/// faxrcvd's error message for a recovered reception whose completeness nothing tells.
pub const RECOVERED: &str =
    "reception recovered after a restart of fsfaxd (the fax may be incomplete)";
/// A document changed this recently may still be written by FreeSWITCH (whose call can
/// outlive us): wait until it has been quiet this long.
const QUIET: Duration = Duration::from_secs(5);
/// How often to ask whether a followed call is still up (also with events: a lost event must
/// not leave a reception on a modem until `maxcallduration`).
const CALL_POLL: Duration = Duration::from_secs(5);
/// How long CHANNEL_HANGUP_COMPLETE may trail the hangup of a call whose result is in.
const HANGUP_COMPLETE_WAIT: Duration = Duration::from_secs(1);
/// Never wait longer than this for one document to be quiet.
const MAX_WAIT: Duration = Duration::from_secs(120);

/// The events that tell a followed reception's progress and end.
const EVENTS: &[&str] = &[
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CUSTOM",
    "spandsp::rxfaxnegociateresult",
    "spandsp::rxfaxpageresult",
    "spandsp::rxfaxresult",
];

/// Delivers or drops every pending reception, oldest first; follows those FreeSWITCH still
/// runs. Returns how many were delivered.
pub(crate) async fn recover(daemon: &Daemon, cfg: &Arc<Config>) -> usize {
    let (spool, journal, stopping) = (&daemon.spool, &daemon.journal, &daemon.stopping);
    let scan = match journal.list_async().await {
        Ok(scan) => scan,
        Err(e) => {
            tracing::error!("cannot read the reception journal: {e}");
            return 0;
        }
    };
    if scan.pending.is_empty() {
        return 0;
    }
    // Subscribe before asking which calls are up, so nothing of a running call is missed.
    let Some(mut followers) = connect_followers(daemon, cfg, &scan.pending).await else {
        return 0;
    };
    let switch = &daemon.switch;
    let Some((running, ended)) = sort_pending(daemon, cfg, &followers, scan.pending).await else {
        return 0;
    };
    let following = running
        .into_iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
        .map(|(i, r)| {
            let followed: Vec<Followed> = r
                .into_iter()
                .map(|p| Followed::start(p, spool, journal, &daemon.modems, cfg))
                .collect();
            let follower = followers[i].take();
            follow(
                spool,
                cfg,
                journal,
                NodeOf { switch, index: i },
                follower,
                followed,
                stopping,
            )
        });
    let following: Vec<_> = following.collect();
    // Followers of nodes with nothing to follow leave now.
    for f in followers.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(2), f.client.exit()).await;
    }
    let (a, b) = tokio::join!(
        deliver_ended(spool, cfg, journal, ended, stopping),
        futures_util::future::join_all(following),
    );
    a + b.into_iter().sum::<usize>()
}

/// A connection following the pending receptions' calls on each node (`None` for a node
/// that cannot be reached, or when no entry names a call); `None` when fsfaxd is stopping.
async fn connect_followers(
    daemon: &Daemon,
    cfg: &Arc<Config>,
    pending: &[PendingReception],
) -> Option<Vec<Option<Follower>>> {
    let uuids: Vec<String> = pending
        .iter()
        .filter(|p| plausible_uuid(&p.call_uuid))
        .map(|p| p.call_uuid.clone())
        .collect();
    // Every node is asked: a call may be running on any of them.
    let switch = &daemon.switch;
    if uuids.is_empty() {
        return Some((0..switch.len()).map(|_| None).collect());
    }
    let uuids = &uuids;
    let connecting = (0..switch.len()).map(|i| async move {
        match Follower::connect(cfg, switch.socket(i), uuids).await {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(
                    node = %switch.socket(i),
                    "cannot follow interrupted receptions through the Event Socket ({e}); \
                     asking uuid_exists instead"
                );
                None
            }
        }
    });
    tokio::select! {
        f = futures_util::future::join_all(connecting) => Some(f),
        () = daemon.stopping.cancelled() => None,
    }
}

/// The pending receptions FreeSWITCH still runs, per node, and those whose call is over;
/// `None` when fsfaxd is stopping.
async fn sort_pending(
    daemon: &Daemon,
    cfg: &Config,
    followers: &[Option<Follower>],
    pending: Vec<PendingReception>,
) -> Option<(Vec<Vec<PendingReception>>, Vec<PendingReception>)> {
    let (switch, stopping) = (&daemon.switch, &daemon.stopping);
    let mut running: Vec<Vec<PendingReception>> = (0..switch.len()).map(|_| Vec::new()).collect();
    let mut ended = Vec::new();
    'pending: for pending in pending {
        for (i, follower) in followers.iter().enumerate() {
            let up = tokio::select! {
                up = call_exists(follower.as_ref(), cfg, NodeOf { switch, index: i }, &pending.call_uuid) => up,
                () = stopping.cancelled() => return None,
            };
            if up == Some(true) {
                if switch.len() > 1 {
                    tracing::info!(
                        commid = %pending.commid,
                        node = %switch.socket(i),
                        "interrupted reception still running on this FreeSWITCH node"
                    );
                }
                running[i].push(pending);
                continue 'pending;
            }
        }
        ended.push(pending);
    }
    tracing::info!(
        still_receiving = running.iter().map(Vec::len).sum::<usize>(),
        to_deliver = ended.len(),
        "receptions interrupted by a restart of fsfaxd"
    );
    Some((running, ended))
}

/// Receptions whose call was over at start-up: judged by their documents.
async fn deliver_ended(
    spool: &Spool,
    cfg: &Arc<Config>,
    journal: &Journal,
    ended: Vec<PendingReception>,
    stopping: &CancellationToken,
) -> usize {
    let mut delivered = 0;
    for pending in ended {
        if stopping.is_cancelled() {
            tracing::info!("stopping: interrupted receptions left for the next start");
            break;
        }
        let path = spool.join(&pending.recvq_file);
        if !path.exists() {
            tracing::info!(
                commid = %pending.commid,
                file = %pending.recvq_file,
                "pending reception without a document (nothing was received); dropping it"
            );
            if let Err(e) = journal.remove(&pending.commid) {
                tracing::error!("{e}");
            }
            continue;
        }
        tokio::select! {
            () = wait_until_quiet(&path) => {}
            () = stopping.cancelled() => {
                tracing::info!("stopping: interrupted receptions left for the next start");
                break;
            }
        }
        let log = session_log(spool, journal, &pending.commid);
        log.log(&format!(
            "fsfaxd restarted: the call had ended; recovering {} from the document",
            pending.recvq_file
        ));
        let evidence = Evidence::read(&path).await;
        log.log(&format!("document evidence: {}", evidence.describe()));
        tracing::warn!(
            commid = %pending.commid,
            file = %pending.recvq_file,
            "delivering a reception interrupted by a restart of fsfaxd (call already over): {}",
            evidence.describe()
        );
        let rec = reception(&pending, None, &evidence, cfg);
        if deliver::deliver(spool, cfg, journal, rec, log)
            .await
            .faxrcvd_ran
        {
            delivered += 1;
        }
    }
    delivered
}

/// A reception FreeSWITCH still ran at start-up, followed to its end.
struct Followed {
    pending: PendingReception,
    result: FaxResult,
    lease: Option<Lease>,
    log: SessionLog,
    /// When FreeSWITCH said the call is gone (hangup event, or `uuid_exists` false).
    gone_at: Option<Instant>,
    /// When the fax result came.
    result_at: Option<Instant>,
    /// Answer to hangup, from a hangup event's caller profile (the answer itself came
    /// before the restart).
    connected: Option<Duration>,
    /// CHANNEL_HANGUP_COMPLETE came: nothing more will.
    hangup_complete: bool,
    /// `maxcallduration` after the call was accepted.
    cap: Instant,
}

impl Followed {
    fn start(
        pending: PendingReception,
        spool: &Spool,
        journal: &Journal,
        modems: &Modems,
        cfg: &Config,
    ) -> Self {
        let lease = modems.acquire_preferring(&pending.modem);
        if let Some(lease) = &lease {
            lease.commid(&pending.commid);
            lease.receiving();
        }
        let log = session_log(spool, journal, &pending.commid);
        log.log(&format!(
            "fsfaxd restarted: reception of {} still in progress in FreeSWITCH (call {}); following it",
            pending.recvq_file, pending.call_uuid
        ));
        tracing::warn!(
            commid = %pending.commid,
            file = %pending.recvq_file,
            call = %pending.call_uuid,
            modem = lease.as_ref().map_or("none free", |l| l.name()),
            "reception interrupted by a restart of fsfaxd is still in progress in FreeSWITCH; following it to its end"
        );
        let elapsed = Local::now().timestamp().saturating_sub(pending.started);
        let left = cfg
            .gofaxd
            .max_call_duration
            .saturating_sub(Duration::from_secs(u64::try_from(elapsed).unwrap_or(0)));
        Followed {
            result: FaxResult::for_channel(Direction::Receive, pending.call_uuid.clone()),
            pending,
            lease,
            log,
            gone_at: None,
            result_at: None,
            connected: None,
            hangup_complete: false,
            cap: Instant::now() + left,
        }
    }

    /// Applies one event of this call.
    fn apply(&mut self, ev: &crate::esl::Event) {
        if self.connected.is_none() {
            self.connected = connected_time(ev);
        }
        if ev.header("Event-Name").map(str::trim) == Some("CHANNEL_HANGUP_COMPLETE") {
            self.hangup_complete = true;
        }
        match self.result.apply(ev) {
            Some(Update::Page(n)) => {
                if let Some(lease) = &self.lease {
                    lease.page(n);
                }
                self.log.log(&format!("RECV: page {n} received"));
            }
            Some(Update::FinalResult) => {
                self.result_at.get_or_insert_with(Instant::now);
                let r = &self.result;
                self.log.log(&format!(
                    "RECV: fax result {} (code {}), {} pages",
                    r.result_text().unwrap_or(""),
                    r.result_code().unwrap_or(0),
                    r.transferred_pages
                ));
            }
            Some(Update::Hangup) => {
                self.gone_at.get_or_insert_with(Instant::now);
            }
            _ => {}
        }
    }

    /// Why following ends now, if it does.
    fn over(&self, now: Instant, hangup_after_result: Duration) -> Option<End> {
        // CHANNEL_HANGUP_COMPLETE follows CHANNEL_HANGUP at once and carries the channel's
        // answer and hangup times: waited for, briefly.
        let settled = self.hangup_complete
            || self
                .gone_at
                .is_some_and(|at| now >= at + HANGUP_COMPLETE_WAIT);
        if self.result.is_complete() && settled {
            return Some(End::Complete);
        }
        if self
            .gone_at
            .is_some_and(|at| now >= at + RESULT_AFTER_HANGUP)
        {
            return Some(End::NoResult);
        }
        if self
            .result_at
            .is_some_and(|at| now >= at + hangup_after_result + RESULT_AFTER_HANGUP)
        {
            return Some(End::Complete);
        }
        (now >= self.cap).then_some(End::MaxDuration)
    }

    /// The next instant [`Followed::over`] may change its mind without an event.
    fn next_deadline(&self, hangup_after_result: Duration) -> Instant {
        let mut at = self.cap;
        if let Some(g) = self.gone_at {
            at = at.min(g + RESULT_AFTER_HANGUP);
            if self.result.final_result.is_some() {
                at = at.min(g + HANGUP_COMPLETE_WAIT);
            }
        }
        if let Some(r) = self.result_at {
            at = at.min(r + hangup_after_result + RESULT_AFTER_HANGUP);
        }
        at
    }
}

/// Follows the running receptions until each is over, delivering each as it ends.
async fn follow(
    spool: &Spool,
    cfg: &Arc<Config>,
    journal: &Journal,
    node: NodeOf<'_>,
    follower: Option<Follower>,
    calls: Vec<Followed>,
    stopping: &CancellationToken,
) -> usize {
    if calls.is_empty() {
        return 0;
    }
    let (client, mut events) = match follower {
        Some(Follower { client, events }) => (Some(client), Some(events)),
        None => (None, None),
    };
    let mut calls: HashMap<String, Followed> = calls
        .into_iter()
        .map(|c| (c.pending.call_uuid.to_ascii_lowercase(), c))
        .collect();
    let hangup_after_result = cfg.gofaxd.hangup_after_result;
    let mut poll = tokio::time::interval(CALL_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    let mut delivered = 0;
    while !calls.is_empty() {
        let deadline = calls
            .values()
            .map(|c| c.next_deadline(hangup_after_result))
            .min()
            .unwrap_or_else(|| Instant::now() + CALL_POLL);
        tokio::select! {
            () = stopping.cancelled() => {
                tracing::info!(
                    running = calls.len(),
                    "stopping: receptions still running in FreeSWITCH are left for the next start"
                );
                return delivered;
            }
            item = recv(&mut events) => on_item(item, &mut calls, &mut events),
            _ = poll.tick() => {
                let follower = if events.is_some() { client.as_ref() } else { None };
                poll_calls(&mut calls, follower, cfg, node, stopping).await;
            }
            () = tokio::time::sleep_until(deadline) => {}
        }
        let ending = Ending {
            spool,
            cfg,
            journal,
            client: client.as_ref(),
            stopping,
        };
        delivered += ending.end_over(&mut calls).await;
    }
    if let Some(client) = client {
        let _ = tokio::time::timeout(Duration::from_secs(2), client.exit()).await;
    }
    delivered
}

/// One item from the event connection: an event applied to its call, or the connection
/// gone (`uuid_exists` is asked from then on).
fn on_item(
    item: Option<SessionItem>,
    calls: &mut HashMap<String, Followed>,
    events: &mut Option<EventStream>,
) {
    match item {
        Some(SessionItem::Event(ev)) => {
            let uuid = ev
                .header("Unique-ID")
                .map(|u| u.trim().to_ascii_lowercase());
            if let Some(call) = uuid.and_then(|u| calls.get_mut(&u)) {
                call.apply(&ev);
            }
        }
        Some(SessionItem::Disconnect(_)) => {}
        None => {
            let why = events.as_ref().and_then(EventStream::close_reason);
            tracing::warn!(
                "Event Socket connection following interrupted receptions closed ({}); asking uuid_exists instead",
                why.map(|r| r.to_string()).unwrap_or_default()
            );
            *events = None;
        }
    }
}

/// Asks `uuid_exists` for each call not known to be gone; a call FreeSWITCH says is gone (or
/// cannot say about) is marked gone now.
async fn poll_calls(
    calls: &mut HashMap<String, Followed>,
    follower: Option<&InboundClient>,
    cfg: &Config,
    node: NodeOf<'_>,
    stopping: &CancellationToken,
) {
    let pending: Vec<String> = calls
        .iter()
        .filter(|(_, c)| c.gone_at.is_none())
        .map(|(u, _)| u.clone())
        .collect();
    for uuid in pending {
        let up = tokio::select! {
            up = exists(follower, cfg, node, &uuid) => up,
            () = stopping.cancelled() => continue,
        };
        // Gone, or FreeSWITCH cannot say: the document is all there will be.
        if up != Some(true) {
            if let Some(c) = calls.get_mut(&uuid) {
                c.gone_at.get_or_insert_with(Instant::now);
            }
        }
    }
}

/// What ending a followed reception needs.
struct Ending<'a> {
    spool: &'a Spool,
    cfg: &'a Arc<Config>,
    journal: &'a Journal,
    client: Option<&'a InboundClient>,
    stopping: &'a CancellationToken,
}

impl Ending<'_> {
    /// Ends and delivers every call that is over now; how many were delivered.
    async fn end_over(&self, calls: &mut HashMap<String, Followed>) -> usize {
        let now = Instant::now();
        let hangup_after_result = self.cfg.gofaxd.hangup_after_result;
        let done: Vec<(String, End)> = calls
            .iter()
            .filter_map(|(u, c)| c.over(now, hangup_after_result).map(|e| (u.clone(), e)))
            .collect();
        let mut delivered = 0;
        for (uuid, end) in done {
            let Some(call) = calls.remove(&uuid) else {
                continue;
            };
            if let (End::MaxDuration | End::Complete, Some(client)) = (&end, self.client) {
                if call.result.hangup.is_none() && call.gone_at.is_none() {
                    // As a live call would: over its time, or the result is in and nobody
                    // hung up. Bounded by the command timeout.
                    let cmd = format!("uuid_kill {}", call.pending.call_uuid);
                    let kill = client.api(&cmd);
                    tokio::select! {
                        _ = kill => {}
                        () = self.stopping.cancelled() => {}
                    }
                }
            }
            let (spool, cfg, journal) = (self.spool, self.cfg, self.journal);
            if deliver_followed(spool, cfg, journal, call, end, self.stopping).await {
                delivered += 1;
            }
        }
        delivered
    }
}

/// Answer to hangup from an event's caller profile (`Caller-Channel-Answered-Time` and
/// `-Hangup-Time`, µs since the epoch; 0 until they happen).
fn connected_time(ev: &crate::esl::Event) -> Option<Duration> {
    let time = |h: &str| {
        ev.header(h)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|t| *t > 0)
    };
    let (answered, hung_up) = (
        time("Caller-Channel-Answered-Time")?,
        time("Caller-Channel-Hangup-Time")?,
    );
    hung_up
        .checked_sub(answered)
        .map(|us| Duration::from_secs(us / 1_000_000))
}

/// The next event, or never when there is no event connection.
async fn recv(events: &mut Option<EventStream>) -> Option<SessionItem> {
    match events {
        Some(e) => e.recv().await,
        None => std::future::pending().await,
    }
}

/// Frees the modem and hands the followed reception over.
async fn deliver_followed(
    spool: &Spool,
    cfg: &Arc<Config>,
    journal: &Journal,
    call: Followed,
    end: End,
    stopping: &CancellationToken,
) -> bool {
    let Followed {
        pending,
        result,
        lease,
        log,
        connected,
        ..
    } = call;
    if let Some(lease) = &lease {
        if result.transferred_pages > 0 {
            lease.document();
        }
    }
    drop(lease);
    let path = spool.join(&pending.recvq_file);
    tokio::select! {
        () = wait_until_quiet(&path) => {}
        () = stopping.cancelled() => {
            log.log("fsfaxd is stopping: reception left for recovery at the next start");
            return false;
        }
    }
    log.log(&format!(
        "Success: {}, Hangup Cause: {}, Result: {}, Pages: {}",
        result.success(),
        result.hangup_cause().unwrap_or(""),
        result.result_text().unwrap_or(""),
        result.transferred_pages
    ));
    if !path.exists() {
        log.log("the call ended without a document: nothing received");
        tracing::info!(
            commid = %pending.commid,
            "interrupted reception ended in FreeSWITCH without a document; dropping it"
        );
        if let Err(e) = journal.remove(&pending.commid) {
            tracing::error!("{e}");
        }
        log.end();
        return false;
    }
    let evidence = Evidence::read(&path).await;
    let rec = reception(&pending, Some((&result, &end, connected)), &evidence, cfg);
    tracing::info!(
        commid = %pending.commid,
        file = %pending.recvq_file,
        "interrupted reception ended in FreeSWITCH: {}",
        rec.failure.as_deref().unwrap_or("OK")
    );
    deliver::deliver(spool, cfg, journal, rec, log)
        .await
        .faxrcvd_ran
}

/// The reception's record: what the followed events said, the document filling the gaps.
fn reception(
    p: &PendingReception,
    followed: Option<(&FaxResult, &End, Option<Duration>)>,
    doc: &Evidence,
    cfg: &Config,
) -> Reception {
    let started = Local
        .timestamp_opt(p.started, 0)
        .single()
        .unwrap_or_else(Local::now);
    let max = cfg.gofaxd.max_call_duration;
    let dcs = doc.dcs;
    let doc_failure = || match &doc.verdict {
        Verdict::Complete => None,
        Verdict::Unknown => Some(RECOVERED.to_owned()),
        Verdict::Damaged(why) => Some(format!("{why} (recovered after a restart of fsfaxd)")),
    };
    let (failure, remote, rate, ecm, format, cause, pages, duration) = match followed {
        Some((r, end, connected)) => {
            let failure = match end {
                _ if r.final_result.is_some() => failure(r, end, max),
                // The call went on past its time: that is the failure, whatever the file.
                End::MaxDuration => failure(r, end, max),
                // No result seen (it may have come before we subscribed): the document says.
                _ => doc_failure(),
            };
            // Connect time starts at the answer: the channel's own times when a hangup event
            // gave them, else what the pages took, else since the call was accepted.
            let since_accepted = r
                .hangup_at_us()
                .map(|h| h / 1_000_000 - p.started)
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs);
            let duration = connected.or(doc.recv_time).or(since_accepted);
            (
                failure,
                r.remote_station_id
                    .clone()
                    .or_else(|| doc.remote_id.clone()),
                r.transfer_rate.or(dcs.map(|d| d.bit_rate)),
                r.ecm_used || dcs.is_some_and(|d| d.ecm),
                r.encoding_name()
                    .and_then(DataFormat::from_encoding_name)
                    .or(dcs.map(|d| d.data_format)),
                r.hangup_cause().unwrap_or_default().to_owned(),
                r.transferred_pages,
                duration,
            )
        }
        None => (
            doc_failure(),
            doc.remote_id.clone(),
            dcs.map(|d| d.bit_rate),
            dcs.is_some_and(|d| d.ecm),
            dcs.map(|d| d.data_format),
            String::new(),
            doc.pages,
            doc.recv_time,
        ),
    };
    Reception {
        commid: p.commid.clone(),
        recvq_file: p.recvq_file.clone(),
        modem: p.modem.clone(),
        cidnum: p.cidnum.clone(),
        cidname: p.cidname.clone(),
        recipient: p.recipient.clone(),
        gateway: p.gateway.clone(),
        started,
        failure,
        remote_id: remote.unwrap_or_default(),
        pages_reported: pages,
        bit_rate: rate.unwrap_or(0),
        ecm,
        data_format: format,
        hangup_cause: cause,
        duration: duration.unwrap_or_default(),
        delivery: p.delivery,
    }
}

/// What a received document says about its session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Evidence {
    pages: u32,
    remote_id: Option<String>,
    dcs: Option<Dcs>,
    /// `FaxRecvTime` summed over the pages, when every page has one.
    recv_time: Option<Duration>,
    verdict: Verdict,
}

/// Whether a document shows a complete reception.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Verdict {
    /// spandsp's session marks on every page, and nothing says it was cut short.
    Complete,
    /// Nothing either way (e.g. no session tags).
    #[default]
    Unknown,
    /// The document says it is damaged or unfinished.
    Damaged(String),
}

impl Evidence {
    async fn read(path: &Path) -> Evidence {
        let path = path.to_path_buf();
        let read = tokio::task::spawn_blocking(move || tifftags::read_session(&path)).await;
        match read {
            Ok(Ok(pages)) => Evidence::from_pages(&pages),
            Ok(Err(e)) => Evidence {
                verdict: Verdict::Damaged(format!("received document damaged: {e}")),
                ..Evidence::default()
            },
            Err(e) => {
                tracing::error!("reading the received document did not run: {e}");
                Evidence::default()
            }
        }
    }

    fn from_pages(pages: &[PageSession]) -> Evidence {
        let n = u32::try_from(pages.len()).unwrap_or(u32::MAX);
        let remote_id = pages
            .iter()
            .find_map(|p| p.description.as_deref())
            .and_then(|d| d.lines().next())
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty());
        let dcs = pages
            .iter()
            .rev()
            .find_map(|p| p.dcs.as_deref().and_then(Dcs::parse));
        let recv_time = pages
            .iter()
            .map(|p| p.recv_time.map(u64::from))
            .sum::<Option<u64>>()
            .filter(|_| !pages.is_empty())
            .map(Duration::from_secs);
        Evidence {
            pages: n,
            remote_id,
            dcs,
            recv_time,
            verdict: verdict(pages),
        }
    }

    fn describe(&self) -> String {
        let verdict = match &self.verdict {
            Verdict::Complete => "complete".to_owned(),
            Verdict::Unknown => "completeness unknown (no session tags)".to_owned(),
            Verdict::Damaged(why) => why.clone(),
        };
        format!(
            "{} pages, remote {:?}, {} bit/s, {verdict}",
            self.pages,
            self.remote_id.as_deref().unwrap_or(""),
            self.dcs.map_or(0, |d| d.bit_rate)
        )
    }
}

/// The verdict of a readable document's pages. spandsp writes each page with `PageNumber`
/// (n, 1) and rewrites the totals when it closes the file: pages of a multi-page document
/// still saying another total were never finished. A page without the received DCS is not
/// spandsp's work: then nothing is known.
fn verdict(pages: &[PageSession]) -> Verdict {
    if pages.is_empty() {
        return Verdict::Damaged("received document has no pages".into());
    }
    let n = pages.len();
    if let Some(total) = pages
        .iter()
        .filter_map(|p| p.page_number.map(|(_, t)| usize::from(t)))
        .find(|t| *t != 0 && *t != n)
    {
        return Verdict::Damaged(format!(
            "FreeSWITCH did not finish the document ({n} pages, its pages say {total})"
        ));
    }
    let marked = |p: &PageSession| p.dcs.as_deref().is_some_and(|d| Dcs::parse(d).is_some());
    if pages.iter().all(marked) {
        Verdict::Complete
    } else {
        Verdict::Unknown
    }
}

/// What a received DCS (T.30 Table 2, as spandsp writes it in `FaxDcs`: FIF octets in hex,
/// bit 1 the most significant bit of the first) says about the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dcs {
    bit_rate: u32,
    ecm: bool,
    data_format: DataFormat,
}

impl Dcs {
    fn parse(text: &str) -> Option<Dcs> {
        let bytes: Vec<u8> = text
            .split_whitespace()
            .map(|b| u8::from_str_radix(b, 16))
            .collect::<Result<_, _>>()
            .ok()?;
        if bytes.len() < 3 {
            return None;
        }
        let bit = |n: usize| {
            bytes
                .get((n - 1) / 8)
                .is_some_and(|b| b & (0x80 >> ((n - 1) % 8)) != 0)
        };
        // Bits 11-14: the modem and its rate.
        let bit_rate = match (bit(11), bit(12), bit(13), bit(14)) {
            (false, false, false, false) => 2400,
            (false, true, false, false) => 4800,
            (true, false, false, false) => 9600,
            (true, true, false, false) => 7200,
            (false, false, false, true) | (false, false, true, false) => 14400,
            (false, true, false, true) | (false, true, true, false) => 12000,
            (true, false, false, true) => 9600,
            (true, true, false, true) => 7200,
            _ => 0,
        };
        let data_format = if bit(78) {
            DataFormat::Jbig
        } else if bit(31) {
            DataFormat::Mmr
        } else if bit(16) {
            DataFormat::Mr
        } else {
            DataFormat::Mh
        };
        Some(Dcs {
            bit_rate,
            ecm: bit(27),
            data_format,
        })
    }
}

/// One of fsfaxd's FreeSWITCH nodes: the shared links and which node.
#[derive(Clone, Copy)]
struct NodeOf<'a> {
    switch: &'a SwitchLink,
    index: usize,
}

/// A dedicated Event Socket connection following the interrupted calls (not the shared one
/// of the fallback lookups: its filters would hide other events there, and a stalled follower
/// must not hold a lookup).
struct Follower {
    client: InboundClient,
    events: EventStream,
}

impl Follower {
    async fn connect(
        cfg: &Config,
        socket: &str,
        uuids: &[String],
    ) -> Result<Follower, crate::esl::ClientError> {
        let fs = &cfg.freeswitch;
        let password = fs.password_of(socket);
        let esl = ClientConfig {
            connect_timeout: fs.connect_timeout,
            auth_timeout: fs.command_timeout,
            command_timeout: fs.command_timeout,
            ..ClientConfig::default()
        };
        let (client, events) = InboundClient::connect(socket, &password, &esl).await?;
        for uuid in uuids {
            client.filter("Unique-ID", uuid).await?;
        }
        client.event_plain(EVENTS).await?;
        Ok(Follower { client, events })
    }
}

/// Is the call up? On the follower's connection when there is one, else on the shared one.
/// `None`: FreeSWITCH could not say.
async fn call_exists(
    follower: Option<&Follower>,
    cfg: &Config,
    node: NodeOf<'_>,
    uuid: &str,
) -> Option<bool> {
    if !plausible_uuid(uuid) {
        return None;
    }
    exists(follower.map(|f| &f.client), cfg, node, uuid).await
}

async fn exists(
    client: Option<&InboundClient>,
    cfg: &Config,
    node: NodeOf<'_>,
    uuid: &str,
) -> Option<bool> {
    let cmd = format!("uuid_exists {uuid}");
    let reply = match client {
        Some(c) => c.api(&cmd).await,
        None => {
            node.switch
                .client_of(cfg, node.index)
                .await
                .ok()?
                .api(&cmd)
                .await
        }
    };
    match reply.ok()?.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn plausible_uuid(uuid: &str) -> bool {
    !uuid.is_empty() && uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Appends to the reception's own session log (it exists from the interrupted call).
/// Written by the spool writer thread, like a live call's.
fn session_log(spool: &Spool, journal: &Journal, commid: &str) -> SessionLog {
    match commid.parse::<u32>() {
        Ok(n) => SessionLog::through(journal.writer(), spool, n),
        Err(e) => {
            tracing::warn!("session log for {commid}: {e}");
            SessionLog::disabled(commid)
        }
    }
}

async fn wait_until_quiet(path: &Path) {
    let start = Instant::now();
    loop {
        let age = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or(QUIET);
        if age >= QUIET || start.elapsed() >= MAX_WAIT {
            return;
        }
        tokio::time::sleep(QUIET - age).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(dcs: Option<&str>, number: Option<(u16, u16)>) -> PageSession {
        PageSession {
            description: Some("+1 337".into()),
            dcs: dcs.map(str::to_owned),
            recv_time: Some(9),
            page_number: number,
        }
    }

    /// V.17 14400, fine, ECM, T.85 (bits 10, 14, 15, 27, 78 and the extension bits).
    const DCS: &str = "00 46 01 21 01 01 01 01 01 04";

    #[test]
    fn dcs_says_rate_ecm_and_format() {
        assert_eq!(
            Dcs::parse(DCS),
            Some(Dcs {
                bit_rate: 14400,
                ecm: true,
                data_format: DataFormat::Jbig
            })
        );
        // V.29 9600, 2-D MR, no ECM; V.27ter 4800 MMR.
        assert_eq!(
            Dcs::parse("00 61 00"),
            Some(Dcs {
                bit_rate: 9600,
                ecm: false,
                data_format: DataFormat::Mr
            })
        );
        let mmr = Dcs::parse("00 50 01 02").unwrap();
        assert_eq!((mmr.bit_rate, mmr.data_format), (4800, DataFormat::Mmr));
        assert_eq!(Dcs::parse("zz"), None);
        assert_eq!(Dcs::parse("00 46"), None);
    }

    #[test]
    fn a_document_is_damaged_only_on_evidence() {
        let spandsp = |n: u16, total: u16| -> Vec<PageSession> {
            (0..n).map(|i| page(Some(DCS), Some((i, total)))).collect()
        };
        // spandsp closed it: every page says the total.
        assert_eq!(verdict(&spandsp(3, 3)), Verdict::Complete);
        assert_eq!(verdict(&spandsp(1, 1)), Verdict::Complete);
        // Never closed: the totals still say 1.
        assert!(
            matches!(verdict(&spandsp(3, 1)), Verdict::Damaged(w) if w.contains("did not finish"))
        );
        // Not spandsp's (no DCS) and no totals: unknown.
        let plain: Vec<_> = (0..3).map(|i| page(None, Some((i, 0)))).collect();
        assert_eq!(verdict(&plain), Verdict::Unknown);
        assert!(matches!(verdict(&[]), Verdict::Damaged(_)));
        let e = Evidence::from_pages(&spandsp(3, 3));
        assert_eq!(e.pages, 3);
        assert_eq!(e.remote_id.as_deref(), Some("+1 337"));
        assert_eq!(e.recv_time, Some(Duration::from_secs(27)));
        assert_eq!(e.dcs.map(|d| d.bit_rate), Some(14400));
    }
}
