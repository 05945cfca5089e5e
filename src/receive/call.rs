//! One inbound fax call, from FreeSWITCH's `connect` to faxrcvd.
//!
//! FreeSWITCH runs `socket <fsfaxd> async full` for each call and connects to us. We `linger`
//! (without it a hangup brings neither CHANNEL_HANGUP nor the fax result, see the captures),
//! subscribe to this channel's call-state, hangup and spandsp receive events, screen the call
//! (DynamicConfig), answer, journal the reception, run `rxfax`, follow its events, hang up
//! shortly after the result (mod_spandsp can leave a T.38 call hanging after it), and hand the
//! document to faxrcvd. Everything waits with a bound; a shutdown hangs the call up and leaves
//! its journal entry for the next start.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tracing::{Instrument, field};

use super::Daemon;
use super::deliver::{self, Reception};
use super::modems::{Lease, OVERFLOW_MODEM};
use super::recipient::{self, Recipient};
use crate::config::{Config, DynamicConfigFailure};
use crate::esl::{
    ChannelData, EventStream, OutboundConfig, OutboundError, OutboundSession, SessionItem,
};
use crate::fallback::{self, FallbackDb, Lookup, StationKey};
use crate::fax::dialstring::encode_fax_ident;
use crate::fax::{Direction, FaxResult, Update};
use crate::hylafax::journal::{DeliveryStage, PendingReception};
use crate::hylafax::sessionlog::SessionLog;
use crate::hylafax::xferfaxlog::DataFormat;
use crate::hylafax::{dynconfig, seqf};

/// FreeSWITCH keeps the socket this long after the hangup, so CHANNEL_HANGUP and the fax
/// result (which comes after it) still reach us; bounded so a socket we forget cannot stay.
const LINGER: Duration = Duration::from_secs(30);
/// How long the fax result may trail the hangup before we stop waiting for it.
const RESULT_AFTER_HANGUP: Duration = Duration::from_secs(5);
/// How long a hangup we asked for may take before the channel is killed.
const KILL_GRACE: Duration = Duration::from_secs(3);
/// Bound on the short exchanges at the end of a call (respond, exit, hangup).
const SHORT: Duration = Duration::from_secs(5);

/// The channel events one reception needs; the spandsp ones are not part of `myevents`.
const EVENTS: &[&str] = &[
    "CHANNEL_CALLSTATE",
    "CHANNEL_HANGUP",
    "CUSTOM",
    "spandsp::rxfaxnegociateresult",
    "spandsp::rxfaxpageresult",
    "spandsp::rxfaxresult",
];

/// Who is calling whom, from the `connect` reply.
#[derive(Debug, Clone)]
struct Caller {
    cidnum: String,
    cidname: String,
    recipient: Recipient,
    gateway: String,
}

/// How the call part of a reception ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// The fax result and the hangup were both seen.
    Complete,
    /// The channel hung up before rxfax started.
    HungUpBeforeFax,
    /// The socket closed before the fax result came.
    ConnectionLost(String),
    /// The channel hung up and no fax result followed.
    NoResult,
    /// `maxcallduration` passed; we hung up.
    MaxDuration,
    /// fsfaxd is shutting down; we hung up. The journal entry stays for the next start.
    Shutdown,
    /// A local error ended the call before rxfax.
    Failed(String),
}

/// The DynamicConfig verdict.
enum Screen {
    Accept { ident: Option<String> },
    Reject,
}

/// Serves one connection FreeSWITCH opened to the listener (peer already allow-listed).
pub(crate) async fn handle(stream: TcpStream, daemon: Arc<Daemon>, cfg: Arc<Config>) {
    let esl = OutboundConfig {
        command_timeout: cfg.freeswitch.command_timeout,
        ..OutboundConfig::default()
    };
    let (session, data, events) = match OutboundSession::start(stream, &esl).await {
        Ok(started) => started,
        Err(e @ OutboundError::NotAsyncFull { .. }) => {
            tracing::error!("call refused: {e}");
            return;
        }
        Err(e) => {
            tracing::warn!("call dropped before it started: {e}");
            return;
        }
    };
    let span = tracing::info_span!(
        "call",
        uuid = %session.channel_uuid(),
        modem = field::Empty,
        commid = field::Empty
    );
    let deadline = Instant::now() + cfg.gofaxd.max_call_duration;
    let uuid = session.channel_uuid().to_owned();
    let call = Call {
        daemon,
        cfg,
        session,
        events,
        result: FaxResult::for_channel(Direction::Receive, uuid),
        deadline,
        fallback_listed: false,
    };
    call.run(data).instrument(span).await;
}

struct Call {
    daemon: Arc<Daemon>,
    cfg: Arc<Config>,
    session: OutboundSession,
    events: EventStream,
    result: FaxResult,
    deadline: Instant,
    /// The caller was on the T.38 fallback list when the call came in.
    fallback_listed: bool,
}

impl Call {
    async fn run(mut self, data: ChannelData) {
        if let Err(e) = self.prepare().await {
            tracing::warn!("call dropped: {e}");
            self.close().await;
            return;
        }
        let caller = self.caller(&data);
        tracing::info!(
            "incoming call to {} from {} <{}> via gateway {:?}",
            caller.recipient.number,
            caller.cidname,
            caller.cidnum,
            caller.gateway
        );
        if caller.recipient.source.is_none() {
            tracing::warn!(
                "no configured header (recipientheaders) holds a number; using the To user {:?}",
                caller.recipient.number
            );
        }
        let Some(_admitted) = self.daemon.admit(self.cfg.gofaxd.max_inbound) else {
            tracing::warn!(
                max = self.cfg.gofaxd.max_inbound,
                "maxinbound receptions already running; rejecting the call with 503"
            );
            self.reject("503").await;
            return;
        };
        let Some(lease) = self.take_modem() else {
            tracing::warn!(
                "every virtual modem is busy and allocateinbounddevices is set; rejecting the call with 503"
            );
            self.reject("503").await;
            return;
        };
        tracing::Span::current().record("modem", lease.name());

        let ident = match self.screen(&caller, lease.name()).await {
            Screen::Accept { ident } => ident.unwrap_or_else(|| self.cfg.freeswitch.ident.clone()),
            Screen::Reject => {
                let cause = self.cfg.gofaxd.reject_cause.to_string();
                tracing::info!("call rejected by DynamicConfig with {cause}");
                self.reject(&cause).await;
                return;
            }
        };

        let commid = match next_number(self.daemon.spool.log_seqf()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("cannot allocate a commid ({e}); rejecting the call with 503");
                self.reject("503").await;
                return;
            }
        };
        let commid_text = seqf::format_commid(commid);
        tracing::Span::current().record("commid", commid_text.as_str());
        let log = SessionLog::create(&self.daemon.spool, commid).unwrap_or_else(|e| {
            tracing::warn!("{e}");
            SessionLog::disabled(&commid_text)
        });
        log.begin(&caller.cidnum);
        log.log(&format!(
            "Inbound channel UUID: {}",
            self.session.channel_uuid()
        ));
        lease.commid(&commid_text);
        let started = Local::now();

        let (t38, t38_request) = self.t38_settings(&caller, &log).await;
        log.log(&format!(
            "Accepting call to {} from {} <{}> via gateway {:?} on {} (T.38 {}, request {})",
            caller.recipient.number,
            caller.cidname,
            caller.cidnum,
            caller.gateway,
            lease.name(),
            t38,
            t38_request
        ));

        let (recvq_file, end) = self
            .receive(
                &caller,
                &commid_text,
                &ident,
                (t38, t38_request),
                &lease,
                &log,
                started,
            )
            .await;
        if self.result.transferred_pages > 0 {
            lease.document();
        }
        log.log(&format!(
            "Success: {}, Hangup Cause: {}, Result: {}, Pages: {}",
            self.result.success,
            self.result.hangup_cause.as_deref().unwrap_or(""),
            self.result.result_text.as_deref().unwrap_or(""),
            self.result.transferred_pages
        ));
        self.remember_fallback(&caller, &log).await;
        self.close().await;
        let modem = lease.name().to_owned();
        // The line is free: faxq may use the modem while faxrcvd mails the fax.
        drop(lease);

        if end == End::Shutdown {
            log.log("fsfaxd is shutting down: reception left for recovery at the next start");
            tracing::warn!(
                "call hung up for shutdown; its reception is finished at the next start"
            );
            return;
        }
        let Some(recvq_file) = recvq_file else {
            // No rxfax ran: nothing to hand over, but the call is accounted for.
            let rec = self.reception(&caller, &commid_text, String::new(), &modem, started, &end);
            log.log(&format!(
                "call ended before the fax: {}",
                rec.failure.clone().unwrap_or_default()
            ));
            deliver::write_call_record(&self.daemon.spool, &self.cfg, &rec);
            log.end();
            return;
        };
        let rec = self.reception(&caller, &commid_text, recvq_file, &modem, started, &end);
        let done = deliver::deliver(
            &self.daemon.spool,
            &self.cfg,
            &self.daemon.journal,
            &rec,
            &log,
        )
        .await;
        tracing::info!(
            pages = done.pages.unwrap_or(0),
            faxrcvd = done.faxrcvd_ran,
            "reception finished: {}",
            if done.errmsg.is_empty() {
                "OK"
            } else {
                &done.errmsg
            }
        );
    }

    /// `linger`, then this channel's events.
    async fn prepare(&mut self) -> Result<(), OutboundError> {
        self.session.linger(Some(LINGER)).await?;
        let uuid = self.session.channel_uuid().to_owned();
        self.session.subscribe(&uuid, EVENTS).await
    }

    fn caller(&self, data: &ChannelData) -> Caller {
        let get = |k: &str| data.get(k).map(str::to_owned).unwrap_or_default();
        let gateway = data
            .get("variable_sip_gateway")
            .or_else(|| data.get("variable_sip_gateway_name"))
            .unwrap_or_default()
            .to_owned();
        Caller {
            cidnum: get("Channel-Caller-ID-Number"),
            cidname: get("Channel-Caller-ID-Name"),
            recipient: recipient::recipient(&self.cfg.gofaxd, |k| data.get(k)),
            gateway,
        }
    }

    /// A free virtual modem, or a name saying there is none.
    fn take_modem(&self) -> Option<Lease> {
        // Every reception is accounted on a virtual modem, so faxstat and faxq see it (GOfax.IP
        // only meant to, and never did). When all are busy the call is still received under a
        // name that says so (FreeSWITCH has the lines), unless allocateinbounddevices asks for
        // GOfax.IP's intent: no free modem, no call.
        match self.daemon.modems.acquire() {
            Some(lease) => Some(lease),
            None if self.cfg.gofaxd.allocate_inbound_devices => None,
            None => {
                tracing::warn!("every virtual modem is busy; receiving as {OVERFLOW_MODEM}");
                Some(Lease::unaccounted(OVERFLOW_MODEM))
            }
        }
    }

    /// DynamicConfig: `<script> <modem> <cidnum> <cidname> <recipient> <gateway>`.
    async fn screen(&self, caller: &Caller, modem: &str) -> Screen {
        let g = &self.cfg.gofaxd;
        let Some(program) = &g.dynamic_config else {
            return Screen::Accept { ident: None };
        };
        let program = self.cfg.spool_path(program);
        let args = [
            modem,
            &caller.cidnum,
            &caller.cidname,
            &caller.recipient.number,
            &caller.gateway,
        ];
        let failure = match dynconfig::run(
            &program,
            args,
            self.daemon.spool.root(),
            g.dynamic_config_timeout,
            dynconfig::DEFAULT_MAX_OUTPUT,
        )
        .await
        {
            Ok(out) => {
                for line in out.stderr.lines().filter(|l| !l.trim().is_empty()) {
                    tracing::info!("DynamicConfig {}: {line}", program.display());
                }
                if out.success() {
                    let settings = out.settings();
                    for w in &settings.warnings {
                        tracing::warn!("DynamicConfig {}: {w}", program.display());
                    }
                    let incoming = settings.incoming();
                    if incoming.reject_call {
                        return Screen::Reject;
                    }
                    return Screen::Accept {
                        ident: incoming.local_identifier,
                    };
                }
                format!(
                    "DynamicConfig {} exited with {}",
                    program.display(),
                    out.status
                )
            }
            Err(e) => e.to_string(),
        };
        match g.dynamic_config_failure {
            DynamicConfigFailure::Accept => {
                tracing::error!("{failure}; accepting the call with the static configuration");
                Screen::Accept { ident: None }
            }
            DynamicConfigFailure::Reject => {
                tracing::error!("{failure}; rejecting the call (dynamicconfigfailure = reject)");
                Screen::Reject
            }
        }
    }

    /// T.38 as configured, unless the caller is on the fallback list (mod_db, through the
    /// daemon's shared connection: see `SwitchLink`).
    async fn t38_settings(&mut self, caller: &Caller, log: &SessionLog) -> (bool, bool) {
        let configured = (self.cfg.gofaxd.enable_t38, self.cfg.gofaxd.request_t38);
        let fs = &self.cfg.freeswitch;
        if !fs.softmodem_fallback || !(configured.0 || configured.1) {
            return configured;
        }
        let Some(key) = StationKey::inbound(&caller.cidnum) else {
            return configured;
        };
        let client = match self.daemon.switch.client(&self.cfg).await {
            Ok(client) => client,
            Err(e) => {
                let text = format!("T.38 fallback list unavailable ({e}); T.38 as configured");
                log.log(&text);
                tracing::warn!(station = %key, "{text}");
                return configured;
            }
        };
        let db = FallbackDb::new(&client, fs.fallback_lookup_timeout);
        let now = Local::now().timestamp();
        let found = fallback::lookup(&db, &key, now, fs.softmodem_fallback_expiry).await;
        if let Some(text) = found.describe(&key, Direction::Receive) {
            log.log(&text);
            match &found {
                Lookup::Unavailable(_) => tracing::warn!(station = %key, "{text}"),
                _ => tracing::info!(station = %key, "{text}"),
            }
        }
        self.fallback_listed = found.listed();
        if found.audio() {
            (false, false)
        } else {
            configured
        }
    }

    /// Answer, journal, rxfax, follow. Returns the spool-relative file once rxfax was started.
    #[allow(clippy::too_many_arguments)]
    async fn receive(
        &mut self,
        caller: &Caller,
        commid: &str,
        ident: &str,
        (t38, t38_request): (bool, bool),
        lease: &Lease,
        log: &SessionLog,
        started: DateTime<Local>,
    ) -> (Option<String>, End) {
        let g = self.cfg.gofaxd.clone();
        if !g.answer_after.is_zero() {
            if let Err(end) = self.app("ring_ready", "").await {
                return (None, end);
            }
            let ms = g.answer_after.as_millis().to_string();
            if let Err(end) = self.app("sleep", &ms).await {
                return (None, end);
            }
        }
        if let Err(end) = self.app("answer", "").await {
            return (None, end);
        }
        if !g.wait_time.is_zero() {
            let arg = format!("silence_stream://{}", g.wait_time.as_millis());
            if let Err(end) = self.app("playback", &arg).await {
                return (None, end);
            }
        }
        let spool = self.daemon.spool.clone();
        let (recvq_file, path) = match allocate_recvq_file(spool).await {
            Ok(file) => file,
            Err(e) => {
                tracing::error!("{e}");
                return (None, End::Failed(e));
            }
        };
        log.log(&format!("Rxfax to {}", path.display()));
        self.journal(caller, commid, &recvq_file, lease.name(), started)
            .await;

        let sets = [
            format!("fax_enable_t38={t38}"),
            format!("fax_enable_t38_request={t38_request}"),
        ];
        for set in &sets {
            if let Err(end) = self.app("set", set).await {
                return (Some(recvq_file), end);
            }
        }
        if !ident.is_empty() {
            let set = format!("fax_ident={}", encode_fax_ident(ident));
            if let Err(end) = self.app("set", &set).await {
                return (Some(recvq_file), end);
            }
        }
        let path_arg = path.to_string_lossy().into_owned();
        if let Err(e) = self.session.execute("rxfax", &path_arg).await {
            return (Some(recvq_file), self.exec_failed(e).await);
        }
        // Queued behind rxfax: a normal reception ends with our hangup as soon as rxfax returns.
        let _ = self.session.execute("hangup", "").await;
        lease.receiving();
        tracing::info!(file = %recvq_file, "receiving");
        let end = self.follow(lease, log).await;
        (Some(recvq_file), end)
    }

    /// Runs one application and waits for it to complete, within the call's limits.
    async fn app(&mut self, app: &str, arg: &str) -> Result<(), End> {
        let run = async {
            let exec = self.session.execute(app, arg).await?;
            exec.completed().await
        };
        let outcome = tokio::select! {
            _ = self.daemon.kill.cancelled() => Err(End::Shutdown),
            _ = sleep_until(self.deadline) => Err(End::MaxDuration),
            r = run => Ok(r),
        };
        match outcome {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.exec_failed(e).await),
            Err(end) => {
                self.kill().await;
                Err(end)
            }
        }
    }

    async fn exec_failed(&mut self, e: OutboundError) -> End {
        match e {
            OutboundError::HungUp { .. } => {
                self.drain(Duration::from_millis(500)).await;
                tracing::info!(
                    cause = self.result.hangup_cause.as_deref().unwrap_or(""),
                    "caller hung up before the fax started"
                );
                End::HungUpBeforeFax
            }
            other => {
                tracing::warn!("{other}");
                End::ConnectionLost(other.to_string())
            }
        }
    }

    /// Follows the reception's events until the result and the hangup were both seen.
    async fn follow(&mut self, lease: &Lease, log: &SessionLog) -> End {
        let hangup_after_result = self.cfg.gofaxd.hangup_after_result;
        // After the fax result: when to hang up ourselves (the mod_spandsp T.38 hang).
        let mut hang_up_at: Option<Instant> = None;
        // After a hangup: when to stop waiting (for the result, or for our hangup to happen).
        let mut give_up_at: Option<Instant> = None;
        loop {
            if self.result.is_complete() {
                return End::Complete;
            }
            let wake = [Some(self.deadline), hang_up_at, give_up_at]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(self.deadline);
            tokio::select! {
                _ = self.daemon.kill.cancelled() => {
                    self.kill().await;
                    return End::Shutdown;
                }
                _ = sleep_until(wake) => {
                    let now = Instant::now();
                    if now >= self.deadline {
                        tracing::warn!(
                            "reception still running after maxcallduration {:?}; hanging up",
                            self.cfg.gofaxd.max_call_duration
                        );
                        log.log("maxcallduration reached: hanging up");
                        self.kill().await;
                        self.drain(RESULT_AFTER_HANGUP).await;
                        return End::MaxDuration;
                    }
                    if hang_up_at.is_some_and(|t| now >= t) {
                        hang_up_at = None;
                        log.log("no hangup after the fax result: hanging up");
                        tracing::info!("no hangup {hangup_after_result:?} after the fax result; hanging up");
                        let _ = timeout(SHORT, self.session.hangup("NORMAL_CLEARING")).await;
                        give_up_at = Some(now + KILL_GRACE);
                        continue;
                    }
                    if give_up_at.is_some_and(|t| now >= t) {
                        if !self.result.hangup_seen {
                            self.uuid_kill().await;
                        }
                        return if self.result.final_result_seen { End::Complete } else { End::NoResult };
                    }
                }
                item = self.events.recv() => match item {
                    Some(SessionItem::Event(ev)) => match self.result.apply(&ev) {
                        Some(Update::Page(n)) => {
                            lease.page(n);
                            log.log(&format!("RECV: page {n} received"));
                        }
                        Some(Update::Negotiated) => log.log(&format!(
                            "RECV: negotiated {} bit/s, ECM {}, remote {:?}, T.38 {:?}",
                            self.result.transfer_rate.unwrap_or(0),
                            self.result.ecm_used,
                            self.result.remote_station_id.as_deref().unwrap_or(""),
                            self.result.t38_status
                        )),
                        Some(Update::FinalResult) => {
                            log.log(&format!(
                                "RECV: fax result {} (code {}), {} pages",
                                self.result.result_text.as_deref().unwrap_or(""),
                                self.result.result_code.unwrap_or(0),
                                self.result.transferred_pages
                            ));
                            if !self.result.hangup_seen {
                                hang_up_at = Some(Instant::now() + hangup_after_result);
                            }
                        }
                        Some(Update::Hangup) => {
                            hang_up_at = None;
                            if !self.result.final_result_seen {
                                give_up_at = Some(Instant::now() + RESULT_AFTER_HANGUP);
                            }
                        }
                        Some(Update::Answered) | None => {}
                    },
                    // The linger notice comes after the hangup; events may still follow it.
                    Some(SessionItem::Disconnect(n)) if n.disposition() == Some("linger") => {}
                    Some(SessionItem::Disconnect(_)) => {
                        return End::ConnectionLost("FreeSWITCH sent a disconnect notice".into());
                    }
                    None => {
                        let why = self.events.close_reason().map(|r| r.to_string()).unwrap_or_default();
                        tracing::warn!("connection to FreeSWITCH lost during the reception: {why}");
                        return End::ConnectionLost(why);
                    }
                }
            }
        }
    }

    /// Applies whatever events arrive within `grace` (or until the call is complete).
    async fn drain(&mut self, grace: Duration) {
        let end = Instant::now() + grace;
        while !self.result.is_complete() {
            match timeout_at(end, self.events.recv()).await {
                Ok(Some(SessionItem::Event(ev))) => {
                    self.result.apply(&ev);
                }
                Ok(Some(SessionItem::Disconnect(_))) => {}
                _ => break,
            }
            if self.result.hangup_seen && !self.result.answered() {
                break;
            }
        }
    }

    /// Hangs the channel up now; kills it if the hangup does not happen.
    async fn kill(&mut self) {
        let _ = timeout(SHORT, self.session.hangup("NORMAL_CLEARING")).await;
        let end = Instant::now() + KILL_GRACE;
        while !self.result.hangup_seen {
            match timeout_at(end, self.events.recv()).await {
                Ok(Some(SessionItem::Event(ev))) => {
                    self.result.apply(&ev);
                }
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(_) => {
                    self.uuid_kill().await;
                    return;
                }
            }
        }
    }

    async fn uuid_kill(&self) {
        let cmd = format!("uuid_kill {}", self.session.channel_uuid());
        let _ = timeout(SHORT, self.session.api(&cmd)).await;
    }

    /// `respond <cause>` (a SIP rejection before answer), then `exit`.
    async fn reject(&mut self, cause: &str) {
        if let Ok(Ok(exec)) = timeout(SHORT, self.session.execute("respond", cause)).await {
            let _ = timeout(SHORT, exec.completed()).await;
        }
        self.close().await;
    }

    /// `exit`: FreeSWITCH closes the socket (the lingering channel is gone by then).
    async fn close(&self) {
        let _ = timeout(SHORT, self.session.exit()).await;
    }

    /// The durable record that makes a crash after this point recoverable.
    async fn journal(
        &self,
        caller: &Caller,
        commid: &str,
        recvq_file: &str,
        modem: &str,
        started: DateTime<Local>,
    ) {
        let rec = PendingReception {
            commid: commid.to_owned(),
            recvq_file: recvq_file.to_owned(),
            modem: modem.to_owned(),
            cidnum: caller.cidnum.clone(),
            cidname: caller.cidname.clone(),
            recipient: caller.recipient.number.clone(),
            gateway: caller.gateway.clone(),
            call_uuid: self.session.channel_uuid().to_owned(),
            started: started.timestamp(),
            delivery: DeliveryStage::Received,
        };
        let journal = self.daemon.journal.clone();
        match tokio::task::spawn_blocking(move || journal.add(&rec)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(
                "{e}; receiving anyway, but a crash during this call would orphan the fax"
            ),
            Err(e) => tracing::error!("journal write did not run: {e}"),
        }
    }

    /// Writes (or clears) the caller's T.38 fallback entry.
    async fn remember_fallback(&self, caller: &Caller, log: &SessionLog) {
        let fs = &self.cfg.freeswitch;
        if !fs.softmodem_fallback {
            return;
        }
        let Some(key) = StationKey::inbound(&caller.cidnum) else {
            return;
        };
        if !fallback::after_call_needed(
            Direction::Receive,
            &self.result,
            fs.softmodem_fallback_clear_on_success,
            self.fallback_listed,
        ) {
            return;
        }
        let client = match self.daemon.switch.client(&self.cfg).await {
            Ok(client) => client,
            Err(e) => {
                log.log(&format!("cannot update the T.38 fallback list: {e}"));
                tracing::warn!(station = %key, "cannot update the T.38 fallback list: {e}");
                return;
            }
        };
        let recorded = fallback::record_after_call(
            &client,
            fs,
            &key,
            Direction::Receive,
            &self.result,
            self.fallback_listed,
        )
        .await;
        if let Some(text) = recorded {
            log.log(&text);
        }
    }

    fn reception(
        &self,
        caller: &Caller,
        commid: &str,
        recvq_file: String,
        modem: &str,
        started: DateTime<Local>,
        end: &End,
    ) -> Reception {
        let r = &self.result;
        let duration = r
            .connected_seconds()
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or_else(|| (Local::now() - started).to_std().unwrap_or_default());
        Reception {
            commid: commid.to_owned(),
            recvq_file,
            modem: modem.to_owned(),
            cidnum: caller.cidnum.clone(),
            cidname: caller.cidname.clone(),
            recipient: caller.recipient.number.clone(),
            gateway: caller.gateway.clone(),
            started,
            failure: failure(r, end, self.cfg.gofaxd.max_call_duration),
            remote_id: r.remote_station_id.clone().unwrap_or_default(),
            pages_reported: r.transferred_pages,
            bit_rate: r.transfer_rate.unwrap_or(0),
            ecm: r.ecm_used,
            data_format: r.encoding_name().and_then(DataFormat::from_encoding_name),
            hangup_cause: r.hangup_cause.clone().unwrap_or_default(),
            duration,
            delivery: DeliveryStage::Received,
        }
    }
}

/// Why the reception is not a clean success (`None` when spandsp said OK).
fn failure(r: &FaxResult, end: &End, max: Duration) -> Option<String> {
    if r.final_result_seen {
        if r.success {
            return None;
        }
        return Some(match (&r.result_text, r.result_code) {
            (Some(t), _) if !t.trim().is_empty() => t.trim().to_owned(),
            (_, Some(code)) => format!("fax failed (spandsp code {code})"),
            _ => "fax failed".to_owned(),
        });
    }
    let cause = r.hangup_cause.as_deref().unwrap_or("unknown cause");
    Some(match end {
        End::HungUpBeforeFax => format!("caller hung up before the fax started ({cause})"),
        End::ConnectionLost(why) if why.is_empty() => {
            "no fax result from FreeSWITCH (connection lost)".to_owned()
        }
        End::ConnectionLost(why) => {
            format!("no fax result from FreeSWITCH (connection lost: {why})")
        }
        End::NoResult | End::Complete => {
            format!("no fax result from FreeSWITCH after the hangup ({cause})")
        }
        End::MaxDuration => format!(
            "reception exceeded maxcallduration ({}); hung up",
            crate::config::format_duration(max)
        ),
        End::Shutdown => "fsfaxd shut down during the reception".to_owned(),
        End::Failed(why) => why.clone(),
    })
}

/// `seqf::next` off the async threads (it locks and fsyncs).
async fn next_number(path: std::path::PathBuf) -> Result<u32, String> {
    tokio::task::spawn_blocking(move || seqf::next(&path).map_err(|e| e.to_string()))
        .await
        .map_err(|e| e.to_string())?
}

/// The next free `recvq/faxNNNNNNNNN.tif` (a number whose file exists is skipped: another
/// program on the spool may have used it).
async fn allocate_recvq_file(
    spool: crate::hylafax::Spool,
) -> Result<(String, std::path::PathBuf), String> {
    for _ in 0..10 {
        let n = next_number(spool.recvq_seqf()).await?;
        let rel = seqf::recvq_relative(n);
        let abs = spool.join(&rel);
        if !abs.exists() {
            return Ok((rel, abs));
        }
        tracing::warn!(file = %abs.display(), "recvq file exists already; taking the next number");
    }
    Err("cannot find a free recvq file name (10 numbers in a row were taken)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fax::SimpleHeaders;

    fn final_result(success: bool, code: &str, text: &str) -> FaxResult {
        let mut r = FaxResult::new(Direction::Receive);
        r.apply(&SimpleHeaders::from_pairs([
            ("Event-Name", "CUSTOM"),
            ("Event-Subclass", "spandsp::rxfaxresult"),
            ("fax-success", if success { "1" } else { "0" }),
            ("fax-result-code", code),
            ("fax-result-text", text),
        ]));
        r
    }

    #[test]
    fn failure_texts_are_never_empty_for_a_failed_call() {
        let max = Duration::from_secs(3600);
        assert_eq!(
            failure(&final_result(true, "0", "OK"), &End::Complete, max),
            None
        );
        assert_eq!(
            failure(
                &final_result(false, "49", "The call dropped prematurely"),
                &End::Complete,
                max
            )
            .as_deref(),
            Some("The call dropped prematurely")
        );
        assert_eq!(
            failure(&final_result(false, "49", ""), &End::Complete, max).as_deref(),
            Some("fax failed (spandsp code 49)")
        );
        let none = FaxResult::new(Direction::Receive);
        for end in [
            End::HungUpBeforeFax,
            End::ConnectionLost(String::new()),
            End::ConnectionLost("peer closed".into()),
            End::NoResult,
            End::MaxDuration,
            End::Failed("disk full".into()),
        ] {
            let text = failure(&none, &end, max).unwrap_or_default();
            assert!(!text.is_empty(), "{end:?}");
        }
        assert_eq!(
            failure(&none, &End::ConnectionLost(String::new()), max).as_deref(),
            Some("no fax result from FreeSWITCH (connection lost)")
        );
    }
}
