//! One inbound fax call, from FreeSWITCH's `connect` to faxrcvd.
//!
//! FreeSWITCH runs `socket <fsfaxd> async full` for each call and connects to us. We `linger`
//! (without it a hangup brings neither CHANNEL_HANGUP nor the fax result, see the captures),
//! subscribe to this channel's call-state, hangup and spandsp receive events, admit the call
//! (`maxinbound`, a virtual modem), screen it ([`screen`](super::screen): DynamicConfig, the
//! T.38 fallback list), then [`receive`](super::rxfax) it (answer, journal, `rxfax`, follow
//! until [`CallEnding`] says it is over), and hand the document to faxrcvd
//! ([`deliver`](super::deliver)).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::{Instrument, field};

use super::Daemon;
use super::deliver::{self, Reception};
use super::modems::{Lease, OVERFLOW_MODEM};
use super::outcome::{End, failure};
use super::rxfax::{KILL_GRACE, RESULT_AFTER_HANGUP, SHORT, next_number};
use super::screen::{self, Caller, Screen, T38};
use crate::config::Config;
use crate::esl::{
    ChannelData, EventStream, OutboundConfig, OutboundError, OutboundSession, SessionItem,
};
use crate::fax::{CallEnding, Direction, FaxResult, Limits};
use crate::hylafax::seqf;
use crate::hylafax::sessionlog::SessionLog;
use crate::hylafax::xferfaxlog::DataFormat;
use crate::ops::live::{CallEntry, live};
use crate::ops::metrics::metrics;

/// FreeSWITCH keeps the socket this long after the hangup, so CHANNEL_HANGUP and the fax
/// result (which comes after it) still reach us; bounded so a socket we forget cannot stay.
const LINGER: Duration = Duration::from_secs(30);

/// The channel events one reception needs; the spandsp ones are not part of `myevents`.
const EVENTS: &[&str] = &[
    "CHANNEL_CALLSTATE",
    "CHANNEL_HANGUP",
    "CUSTOM",
    "spandsp::rxfaxnegociateresult",
    "spandsp::rxfaxpageresult",
    "spandsp::rxfaxresult",
];

/// A call that was admitted, screened and given a commid: what the reception needs.
pub(super) struct Accepted {
    pub caller: Caller,
    pub commid: String,
    pub ident: String,
    pub t38: T38,
    pub lease: Lease,
    pub log: SessionLog,
    pub started: DateTime<Local>,
    /// The call as `fsfaxd status` shows it while it runs.
    pub live: CallEntry,
}

/// Serves one connection FreeSWITCH opened to the listener (peer already allow-listed).
pub(crate) async fn handle(stream: TcpStream, daemon: Arc<Daemon>, cfg: Arc<Config>) {
    // The FreeSWITCH node this call belongs to: what fsfaxd asks on its behalf goes there.
    let node = match stream.peer_addr() {
        Ok(peer) => daemon.switch.owner(peer.ip()).await,
        Err(_) => 0,
    };
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
    let ending = CallEnding::new(Limits {
        cap: std::time::Instant::now() + cfg.gofaxd.max_call_duration,
        hangup_after_result: cfg.gofaxd.hangup_after_result,
        result_after_hangup: RESULT_AFTER_HANGUP,
        hangup_grace: KILL_GRACE,
    });
    let uuid = session.channel_uuid().to_owned();
    let call = Call {
        daemon,
        cfg,
        session,
        events,
        result: FaxResult::for_channel(Direction::Receive, uuid),
        ending,
        gone: None,
        node,
    };
    call.run(data).instrument(span).await;
}

/// One call's connection and what its events said.
pub(super) struct Call {
    pub daemon: Arc<Daemon>,
    pub cfg: Arc<Config>,
    pub session: OutboundSession,
    pub events: EventStream,
    pub result: FaxResult,
    /// When the call is over, from the fax result, the hangup, the hard cap and shutdown.
    pub ending: CallEnding,
    /// Set once FreeSWITCH said the caller is gone (or the connection ended) before rxfax:
    /// nothing more is sent to the channel, nothing more is waited for.
    pub gone: Option<End>,
    /// Which FreeSWITCH node the call came from (an index into the daemon's
    /// [`SwitchLink`](super::SwitchLink)).
    pub node: usize,
}

impl Call {
    async fn run(mut self, data: ChannelData) {
        if let Err(e) = self.prepare().await {
            tracing::warn!("call dropped: {e}");
            self.close().await;
            return;
        }
        let caller = Caller::from_channel(&self.cfg, &data);
        let switch = &self.daemon.switch;
        let node = if switch.len() > 1 {
            format!(" on FreeSWITCH node {}", switch.socket(self.node))
        } else {
            String::new()
        };
        tracing::info!(
            "incoming call to {} from {} <{}>{}{node}",
            caller.recipient.number,
            caller.cidname,
            caller.cidnum,
            caller.via()
        );
        metrics().receptions_started.inc();
        if caller.recipient.source.is_none() {
            tracing::warn!(
                "no configured header (recipientheaders) holds a number; using the To user {:?}",
                caller.recipient.number
            );
        }
        let Some(_admitted) = self.daemon.admit() else {
            tracing::warn!(
                max = self.cfg.gofaxd.max_inbound,
                "maxinbound receptions already running; rejecting the call with 503"
            );
            metrics().reception_finished("rejected_busy", "none", 0, None, None);
            self.reject("503").await;
            return;
        };
        let Some(call) = self.accept(caller).await else {
            return;
        };
        let (recvq_file, end) = self.receive(&call).await;
        self.after_call(call, recvq_file, end).await;
    }

    /// `linger`, then this channel's events.
    async fn prepare(&mut self) -> Result<(), OutboundError> {
        self.session.linger(Some(LINGER)).await?;
        let uuid = self.session.channel_uuid().to_owned();
        self.session.subscribe(&uuid, EVENTS).await
    }

    /// A modem, DynamicConfig's verdict, a commid and the session log, the T.38 settings;
    /// `None` when the call was rejected.
    async fn accept(&mut self, caller: Caller) -> Option<Accepted> {
        let Some(lease) = self.take_modem() else {
            tracing::warn!(
                "every virtual modem is busy and allocateinbounddevices is set; rejecting the call with 503"
            );
            metrics().reception_finished("rejected_busy", "none", 0, None, None);
            self.reject("503").await;
            return None;
        };
        tracing::Span::current().record("modem", lease.name());
        let (daemon, cfg) = (self.daemon.clone(), self.cfg.clone());
        let screened = self
            .unless_gone(screen::screen(&daemon, &cfg, &caller, lease.name()))
            .await;
        let ident = match screened {
            Some(Screen::Accept { ident }) => {
                ident.unwrap_or_else(|| self.cfg.freeswitch.ident.clone())
            }
            // Accounted for below (commid, session log, xferfaxlog), never answered.
            None => self.cfg.freeswitch.ident.clone(),
            Some(Screen::Reject) => {
                let cause = self.cfg.gofaxd.reject_cause.to_string();
                tracing::info!("call rejected by DynamicConfig with {cause}");
                metrics().reception_finished("rejected_dynamicconfig", "none", 0, None, None);
                self.reject(&cause).await;
                return None;
            }
        };
        let writer = self.daemon.journal.writer();
        let commid = match next_number(writer, self.daemon.spool.log_seqf()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("cannot allocate a commid ({e}); rejecting the call with 503");
                metrics().reception_finished("failed", "none", 0, None, None);
                self.reject("503").await;
                return None;
            }
        };
        let commid_text = seqf::format_commid(commid);
        tracing::Span::current().record("commid", commid_text.as_str());
        let log = SessionLog::through(writer, &self.daemon.spool, commid);
        log.begin(&caller.cidnum);
        log.log(&format!(
            "Inbound channel UUID: {}",
            self.session.channel_uuid()
        ));
        lease.commid(&commid_text);
        let entry = live().call(
            &caller.cidnum,
            &caller.cidname,
            &caller.recipient.number,
            lease.name(),
            &commid_text,
        );
        let started = Local::now();
        let configured = T38::configured(&self.cfg);
        let t38 = match self.gone {
            Some(_) => configured,
            None => self
                .unless_gone(screen::t38_settings(
                    &daemon, &cfg, self.node, &caller, &log,
                ))
                .await
                .unwrap_or(configured),
        };
        if self.gone.is_some() {
            let cause = self.result.hangup_cause.as_deref().unwrap_or("no cause");
            log.log(&format!(
                "Call to {} from {} <{}> on {} ended before the answer: the caller hung up ({cause})",
                caller.recipient.number,
                caller.cidname,
                caller.cidnum,
                lease.name(),
            ));
            tracing::info!(cause, "caller hung up before the answer");
        } else {
            log.log(&format!(
                "Accepting call to {} from {} <{}>{} on {} (T.38 {}, request {})",
                caller.recipient.number,
                caller.cidname,
                caller.cidnum,
                caller.via(),
                lease.name(),
                t38.enable,
                t38.request
            ));
        }
        Some(Accepted {
            caller,
            commid: commid_text,
            ident,
            t38,
            lease,
            log,
            started,
            live: entry,
        })
    }

    /// The call is over: the fallback memory, the line freed, then the hand-over to faxrcvd
    /// (or, at shutdown, to the next start).
    async fn after_call(self, call: Accepted, recvq_file: Option<String>, end: End) {
        let Accepted {
            caller, lease, log, ..
        } = &call;
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
        let listed = call.t38.listed;
        screen::remember_fallback(
            &self.daemon,
            &self.cfg,
            self.node,
            caller,
            &self.result,
            listed,
            log,
        )
        .await;
        self.close().await;
        let Accepted {
            caller,
            commid,
            lease,
            log,
            started,
            ..
        } = call;
        let modem = lease.name().to_owned();
        // The line is free: faxq may use the modem while faxrcvd mails the fax.
        drop(lease);
        if end != End::Shutdown {
            self.count(recvq_file.is_some());
        }
        if end == End::Shutdown {
            log.log("fsfaxd is shutting down: reception left for recovery at the next start");
            tracing::warn!(
                "call hung up for shutdown; its reception is finished at the next start"
            );
            return;
        }
        let rec = self.reception(&caller, &commid, recvq_file.clone(), &modem, started, &end);
        if recvq_file.is_none() {
            // No rxfax ran: nothing to hand over, but the call is accounted for.
            log.log(&format!(
                "call ended before the fax: {}",
                rec.failure.clone().unwrap_or_default()
            ));
            let d = &self.daemon;
            deliver::write_call_record(d.journal.writer(), &d.spool, &self.cfg, rec).await;
            log.end();
            return;
        }
        let d = &self.daemon;
        let done = deliver::deliver(&d.spool, &self.cfg, &d.journal, rec, log).await;
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

    /// Runs `work` while following the channel's events: once FreeSWITCH says the caller is
    /// gone (CHANNEL_HANGUP, a disconnect notice, the socket closing) the wait ends at once
    /// with `None` and [`Call::gone`] says how; `work` is dropped (DynamicConfig's process
    /// group is killed with it).
    async fn unless_gone<T>(&mut self, work: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::pin!(work);
        while self.gone.is_none() {
            tokio::select! {
                out = &mut work => return Some(out),
                item = self.events.recv() => match item {
                    Some(SessionItem::Event(ev)) => {
                        self.result.apply(&ev);
                    }
                    Some(SessionItem::Disconnect(_)) => {}
                    None => {
                        let why = self.events.close_reason().map(|r| r.to_string()).unwrap_or_default();
                        self.gone = Some(End::ConnectionLost(why));
                    }
                },
            }
            if self.gone.is_none() && (self.result.hangup_seen || self.session.channel_gone()) {
                self.gone = Some(End::HungUpBeforeFax);
            }
        }
        None
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

    /// The reception's outcome in the metrics (a reception cut by shutdown is finished, and
    /// counted, by the next start's recovery... or not at all: it is not counted here).
    fn count(&self, rxfax_ran: bool) {
        let r = &self.result;
        let outcome = if !rxfax_ran {
            "no_fax"
        } else if r.final_result_seen && r.success {
            "success"
        } else if r.transferred_pages > 0 {
            "partial"
        } else if r.negotiation_count == 0 {
            "no_fax"
        } else {
            "failed"
        };
        let mode = match &r.t38_status {
            Some(crate::fax::T38Status::Negotiated) => "t38",
            Some(_) => "audio",
            None => "none",
        };
        let seconds = r.answered().then(|| r.connected_seconds()).flatten();
        metrics().reception_finished(
            outcome,
            mode,
            r.transferred_pages,
            seconds.map(|s| s.max(0) as f64),
            r.final_result_seen.then_some(r.result_code).flatten(),
        );
    }

    fn reception(
        &self,
        caller: &Caller,
        commid: &str,
        recvq_file: Option<String>,
        modem: &str,
        started: DateTime<Local>,
        end: &End,
    ) -> Reception {
        let r = &self.result;
        // Connect time starts at the answer: a call never answered has none (recvstats
        // charges what xferfaxlog says).
        let duration = if r.answered() {
            r.connected_seconds()
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs)
                .unwrap_or_else(|| (Local::now() - started).to_std().unwrap_or_default())
        } else {
            Duration::ZERO
        };
        Reception {
            commid: commid.to_owned(),
            recvq_file: recvq_file.unwrap_or_default(),
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
            delivery: crate::hylafax::journal::DeliveryStage::Received,
        }
    }
}
