//! One inbound fax call, from FreeSWITCH's `connect` to faxrcvd: the connection and the
//! order of the steps.
//!
//! FreeSWITCH runs `socket <fsfaxd> async full` for each call and connects to us. We `linger`
//! (without it a hangup brings neither CHANNEL_HANGUP nor the fax result, see the captures),
//! subscribe to this channel's call-state, hangup and spandsp receive events and admit the
//! call (`maxinbound`). Then, each step in a file of its own: [`accept`](super::accept) it (a
//! virtual modem, [`screen`](super::screen): DynamicConfig and the T.38 fallback list, a
//! commid), [`receive`](super::rxfax) it (answer, journal, `rxfax`, follow until
//! [`CallEnding`] says it is over), and [`conclude`](super::conclude) (the metrics, the
//! hand-over to faxrcvd through [`deliver`](super::deliver)). Here too: what every step
//! shares, following the channel while waiting ([`Call::unless_gone`]), rejecting and closing.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join3;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::{Instrument, field};

use super::Daemon;
use super::outcome::End;
use super::rxfax::{KILL_GRACE, RESULT_AFTER_HANGUP, SHORT};
use super::screen::Caller;
use crate::config::Config;
use crate::esl::{EventStream, OutboundConfig, OutboundError, OutboundSession, SessionItem};
use crate::fax::{CallEnding, Direction, FaxResult, Limits};
use crate::ops::metrics::metrics;

/// FreeSWITCH keeps the socket this long after the hangup, so CHANNEL_HANGUP and the fax
/// result (which comes after it) still reach us; bounded so a socket we forget cannot stay.
const LINGER: Duration = Duration::from_secs(30);

/// The channel events one reception needs; the spandsp ones are not part of `myevents`.
/// No CHANNEL_CALLSTATE: its ACTIVE and HANGUP (7 KB each) say nothing the answer's
/// completion (which carries `Caller-Channel-Answered-Time`) and CHANNEL_HANGUP do not.
const EVENTS: &[&str] = &[
    "CHANNEL_HANGUP",
    "CUSTOM",
    "spandsp::rxfaxnegociateresult",
    "spandsp::rxfaxpageresult",
    "spandsp::rxfaxresult",
];

/// The applications whose CHANNEL_EXECUTE_COMPLETE nobody waits for: the `set`s, rxfax and
/// the hangup queued together (see `receive`; the fax result and the hangup events say how
/// the reception ended) and the `socket` application that connected the call to us. Their
/// completions (6-8 KB each, a fifth of a reception's events) are not sent at all.
const UNAWAITED: &[&str] = &["set", "rxfax", "hangup", "socket"];

/// Serves one connection FreeSWITCH opened to the listener (peer already allow-listed).
pub(crate) async fn handle(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    daemon: Arc<Daemon>,
    cfg: Arc<Config>,
) {
    // The FreeSWITCH node this call belongs to: what fsfaxd asks on its behalf goes there.
    let node = daemon.switch.owner(peer.ip()).await;
    let esl = OutboundConfig {
        command_timeout: cfg.freeswitch.command_timeout,
        // A reception reads only the events' own headers (and spandsp's `variable_fax_*`);
        // the caller's variables come with the `connect` reply, which is never filtered.
        limits: crate::esl::Limits {
            event_variables: false,
            ..Default::default()
        },
        ..OutboundConfig::default()
    };
    let (session, data, events) = match OutboundSession::start_from(stream, Some(peer), &esl).await
    {
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
    // The `connect` reply (about 10 KB of channel variables) is read once, here, and not kept
    // for the length of the call.
    let caller = Caller::from_channel(&cfg, &data);
    drop(data);
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
    call.run(caller).instrument(span).await;
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
    async fn run(mut self, caller: Caller) {
        if let Err(e) = self.prepare().await {
            tracing::warn!("call dropped: {e}");
            self.close().await;
            return;
        }
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
        // Sent together, in this order; the replies come back in order (`try_join3` polls,
        // so queues, the linger first).
        let s = &self.session;
        try_join3(
            s.linger(Some(LINGER)),
            s.subscribe(s.channel_uuid(), EVENTS),
            s.filter_out("Application", UNAWAITED),
        )
        .await?;
        Ok(())
    }

    /// Runs `work` while following the channel's events: once FreeSWITCH says the caller is
    /// gone (CHANNEL_HANGUP, a disconnect notice, the socket closing) the wait ends at once
    /// with `None` and [`Call::gone`] says how; `work` is dropped (DynamicConfig's process
    /// group is killed with it).
    pub(super) async fn unless_gone<T>(
        &mut self,
        work: impl std::future::Future<Output = T>,
    ) -> Option<T> {
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
            if self.gone.is_none() && (self.result.hangup.is_some() || self.session.channel_gone())
            {
                self.gone = Some(End::HungUpBeforeFax);
            }
        }
        None
    }

    /// `respond <cause>` (a SIP rejection before answer), then `exit`.
    pub(super) async fn reject(&mut self, cause: &str) {
        if let Ok(Ok(exec)) = timeout(SHORT, self.session.execute("respond", cause)).await {
            let _ = timeout(SHORT, exec.completed()).await;
        }
        self.close().await;
    }

    /// `exit`: FreeSWITCH closes the socket (the lingering channel is gone by then).
    pub(super) async fn close(&self) {
        let _ = timeout(SHORT, self.session.exit()).await;
    }
}
