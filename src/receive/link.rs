//! fsfaxd's own Event Socket connection to each FreeSWITCH node
//! ([`SwitchLink`](super::SwitchLink)), kept up and watched.
//!
//! Each connection lives as long as fsfaxd, so a FreeSWITCH that vanishes without closing TCP
//! (power loss, a partition) would leave it open and silent, and the next fallback lookup
//! would find out the slow way. So on every new connection a watcher subscribes to HEARTBEAT
//! (FreeSWITCH sends one every 20 s by default, `event-heartbeat-interval` in switch.conf)
//! and learns the interval from the heartbeats themselves; when two are missed it probes the
//! switch with a command (the connection's command timeout, `fallbacklookuptimeout`). No
//! answer closes the connection, as any command timeout does; an answer (heartbeats off or
//! slower than thought) starts the wait again, so the watch is an idle timeout where no
//! heartbeats come. A keeper task per node connects at start-up and again after every loss,
//! with a back-off from 1 s doubling to 30 s. Each change shows, per node, in the metrics,
//! `/readyz` and `fsfaxd status`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Daemon;
use crate::config::Config;
use crate::esl::{ClientConfig, ClientError, CloseReason, EventStream, InboundClient, SessionItem};
use crate::ops::live::live;
use crate::ops::metrics::metrics;

/// FreeSWITCH's default heartbeat interval, assumed until two heartbeats were seen.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(20);
/// Bounds of a learnt interval.
const MIN_INTERVAL: Duration = Duration::from_millis(50);
const MAX_INTERVAL: Duration = Duration::from_secs(300);
/// The keeper's back-off between connection attempts.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// When the heartbeats say FreeSWITCH went silent.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// The last sign of life (a heartbeat, the connection, an answered probe).
    last: Instant,
    last_beat: Option<Instant>,
    /// The last two gaps between heartbeats.
    gaps: [Option<Duration>; 2],
}

impl Heartbeat {
    pub fn new(now: Instant) -> Heartbeat {
        Heartbeat {
            last: now,
            last_beat: None,
            gaps: [None, None],
        }
    }

    /// The interval expected between heartbeats: the longer of the last two gaps seen (two
    /// heartbeats delivered together do not shrink it), FreeSWITCH's default before that.
    pub fn interval(&self) -> Duration {
        let seen = self.gaps.iter().flatten().max().copied();
        seen.unwrap_or(DEFAULT_HEARTBEAT)
            .clamp(MIN_INTERVAL, MAX_INTERVAL)
    }

    /// Two heartbeats missed (and half an interval for the network): time to probe.
    pub fn deadline(&self) -> Instant {
        let i = self.interval();
        self.last + i * 2 + i / 2
    }

    /// A heartbeat arrived.
    pub fn beat(&mut self, now: Instant) {
        if let Some(prev) = self.last_beat {
            self.gaps = [self.gaps[1], Some(now - prev)];
        }
        self.last_beat = Some(now);
        self.last = now;
    }

    /// Another sign of life (an answered probe).
    pub fn alive(&mut self, now: Instant) {
        self.last = now;
    }

    /// The learnt interval in seconds, once there is one.
    pub fn seen_interval(&self) -> Option<f64> {
        self.gaps
            .iter()
            .any(Option::is_some)
            .then(|| self.interval().as_secs_f64())
    }
}

/// Connects to the FreeSWITCH node at `socket` (as configured) for the shared link: counts
/// the attempt, shows the node's state, and starts the watcher, which wakes `lost` when the
/// connection ends. `ever_up`: whether this node was ever connected (a later connection is a
/// reconnect).
pub(crate) async fn connect(
    socket: &str,
    password: &str,
    wait: Duration,
    lost: Arc<Notify>,
    ever_up: &AtomicBool,
) -> Result<InboundClient, ClientError> {
    let esl = ClientConfig {
        connect_timeout: wait,
        auth_timeout: wait,
        command_timeout: wait,
        ..ClientConfig::default()
    };
    match InboundClient::connect(socket, password, &esl).await {
        Ok((client, events)) => {
            metrics().freeswitch_connect(true);
            let reconnect = ever_up.swap(true, Ordering::AcqRel);
            if reconnect {
                metrics().freeswitch_reconnects.inc();
                tracing::info!(%socket, "connected to FreeSWITCH again");
            } else {
                tracing::info!(%socket, "connected to FreeSWITCH");
            }
            live().switch_up(socket, reconnect);
            tokio::spawn(watch(socket.to_owned(), client.clone(), events, lost));
            Ok(client)
        }
        Err(e) => {
            metrics().freeswitch_connect(false);
            live().switch_down(socket, &e.to_string());
            Err(e)
        }
    }
}

/// Follows one connection's heartbeats until it closes; `peer`: the node's address as
/// configured (what the status and the metrics name it by).
async fn watch(peer: String, client: InboundClient, mut events: EventStream, lost: Arc<Notify>) {
    let mut hb = Heartbeat::new(Instant::now());
    if let Err(e) = client.event_plain(&["HEARTBEAT"]).await {
        tracing::warn!(%peer, "cannot subscribe to HEARTBEAT ({e}); probing when idle instead");
    }
    let mut silent = None;
    loop {
        tokio::select! {
            item = events.recv() => match item {
                Some(SessionItem::Event(ev)) if ev.name() == Some("HEARTBEAT") => {
                    hb.beat(Instant::now());
                    live().heartbeat(&peer, hb.seen_interval());
                }
                Some(_) => hb.alive(Instant::now()),
                None => break,
            },
            () = tokio::time::sleep_until(hb.deadline()) => {
                let quiet = hb.last.elapsed();
                tracing::debug!(%peer, "no heartbeat for {quiet:?}; probing FreeSWITCH");
                match client.event_plain(&["HEARTBEAT"]).await {
                    Ok(_) => hb.alive(Instant::now()),
                    // A timeout closes the connection; the stream ends next.
                    Err(e) => {
                        silent = Some(format!(
                            "FreeSWITCH silent: no heartbeat for {:.1}s and no answer to a probe ({e})",
                            quiet.as_secs_f64()
                        ));
                    }
                }
            }
        }
    }
    let reason = events.close_reason().unwrap_or(CloseReason::PeerClosed);
    let (label, text) = match (&silent, &reason) {
        (Some(text), _) => ("heartbeat", text.clone()),
        (None, CloseReason::CommandTimeout { .. }) => ("timeout", reason.to_string()),
        (None, CloseReason::PeerClosed) => ("closed", reason.to_string()),
        (None, _) => ("error", reason.to_string()),
    };
    metrics().freeswitch_disconnect(label);
    live().switch_down(&peer, &text);
    tracing::warn!(%peer, "connection to FreeSWITCH lost: {text}");
    lost.notify_one();
}

/// Keeps the shared connection to node `node` up while fsfaxd runs: connects at start-up and
/// again after each loss, backing off while FreeSWITCH does not answer.
pub(crate) async fn keep(daemon: Arc<Daemon>, cfg: Arc<Config>, node: usize) {
    let link = &daemon.switch;
    let socket = link.socket(node).to_owned();
    let mut backoff = BACKOFF_START;
    let mut failures = 0u32;
    loop {
        let attempt = tokio::select! {
            _ = daemon.stopping.cancelled() => return,
            r = link.client_of(&cfg, node) => r,
        };
        match attempt {
            Ok(client) => {
                failures = 0;
                let since = Instant::now();
                tokio::select! {
                    _ = daemon.stopping.cancelled() => return,
                    () = link.lost(node).notified() => {}
                }
                if client.close_reason().is_none() {
                    // A wake-up about an older connection: this one is still up.
                    continue;
                }
                if since.elapsed() > BACKOFF_MAX {
                    backoff = BACKOFF_START;
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(
                        %socket,
                        "FreeSWITCH Event Socket: {e}; trying again with back-off"
                    );
                } else {
                    tracing::debug!(%socket, "FreeSWITCH Event Socket: {e} (attempt {failures})");
                }
            }
        }
        tokio::select! {
            _ = daemon.stopping.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_missed_heartbeats_of_the_learnt_interval() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0);
        // Before any heartbeat: FreeSWITCH's default.
        assert_eq!(hb.deadline(), t0 + Duration::from_secs(50));
        let s = Duration::from_secs(1);
        hb.beat(t0 + s);
        assert_eq!(hb.seen_interval(), None);
        hb.beat(t0 + s * 2);
        hb.beat(t0 + s * 3);
        assert_eq!(hb.interval(), s);
        assert_eq!(hb.deadline(), t0 + s * 3 + s * 2 + s / 2);
        // Two heartbeats delivered together do not shrink it.
        hb.beat(t0 + s * 3 + Duration::from_millis(1));
        assert_eq!(hb.interval(), s);
        assert_eq!(hb.seen_interval(), Some(1.0));
    }
}
