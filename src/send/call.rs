//! One send attempt, as its steps: [`prepare`](super::prepare) (job values, DynamicConfig, the
//! document), [`dial`](super::dial) (one originate per gateway), [`transfer`](super::transfer)
//! (the answered call until it is over) and [`conclude`](super::conclude) (verdict, progress,
//! fallback memory, xferfaxlog). This file holds the sequence and what the steps share: the
//! event-socket session, how a call ended, and the stop signal.

use std::time::Instant;

use chrono::Local;
use tokio::signal::unix::{Signal, SignalKind, signal};
use uuid::Uuid;

use crate::config::{Config, FreeSwitchSection, Node};
use crate::esl::{ClientConfig, ClientError, EventStream, InboundClient, Limits, Opened};
use crate::fax::{Disposition, FaxResult, LocalError};
use crate::hylafax::Spool;

use super::conclude::{self, Timing};
use super::prepare::{self, Context};
use super::{Attempt, Job, dial, transfer};

/// Events the sender needs: call progress, the background originate result and spandsp's.
pub(super) const EVENTS: &[&str] = &[
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
/// How often and how long to try getting the event socket back when it drops mid-call.
const RECONNECT_TRIES: u32 = 3;
const RECONNECT_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs one attempt of the job and returns its verdict with what the call learned.
pub async fn send(
    cfg: &Config,
    spool: &Spool,
    modem: &str,
    job: &mut Job,
    stop: &mut Stop,
    early: dial::Early,
) -> Attempt {
    let timing = Timing {
        started: Instant::now(),
        start_time: Local::now(),
    };
    let mut ctx = match prepare::prepare(cfg, spool, modem, job).await {
        Ok(ctx) => ctx,
        Err(e) => return Attempt::verdict_only(e.verdict()),
    };
    let call = match dial::dial(cfg, &mut ctx, job, stop, early).await {
        Ok(answered) => transfer::transfer(cfg, &mut ctx, job, stop, answered).await,
        Err(end) => end,
    };
    let attempt = conclude::conclude(cfg, spool, modem, &mut ctx, job, call, timing).await;
    log_verdict(&ctx, &attempt);
    attempt
}

fn log_verdict(ctx: &Context, attempt: &Attempt) {
    let v = &attempt.verdict;
    let what = match v.disposition {
        Disposition::Done => "SEND DONE",
        Disposition::Retry => "SEND RETRY",
        Disposition::Failed => "SEND FAILED",
    };
    let status = if v.status.is_empty() { "OK" } else { &v.status };
    ctx.log.log(&format!("{what}: {status}"));
    ctx.log.end();
}

/// How the call went, before classification.
pub(super) enum CallEnd {
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

/// The inbound connection with what is needed to open it again.
pub(super) struct EslSession {
    pub client: InboundClient,
    cfg: ClientConfig,
    socket: String,
    password: String,
}

impl EslSession {
    /// Connects to FreeSWITCH's `node` with the configured timeouts.
    pub async fn connect(
        fs: &FreeSwitchSection,
        node: &Node,
    ) -> Result<(EslSession, EventStream), ClientError> {
        let cfg = client_config(fs);
        let (client, events) = InboundClient::connect(&node.socket, &node.password, &cfg).await?;
        Ok((EslSession::new(client, cfg, node), events))
    }

    /// The session of a connection opened ahead ([`super::dial::Early`]).
    pub fn from_opened(
        fs: &FreeSwitchSection,
        node: &Node,
        opened: Opened,
    ) -> Result<(EslSession, EventStream), ClientError> {
        let (client, events) = opened.start()?;
        Ok((EslSession::new(client, client_config(fs), node), events))
    }

    fn new(client: InboundClient, cfg: ClientConfig, node: &Node) -> EslSession {
        EslSession {
            client,
            cfg,
            socket: node.socket.clone(),
            password: node.password.clone(),
        }
    }

    /// A fresh connection in place of this one.
    pub async fn reconnect(&mut self) -> Result<EventStream, ClientError> {
        let (client, events) =
            InboundClient::connect(&self.socket, &self.password, &self.cfg).await?;
        self.client = client;
        Ok(events)
    }

    /// `uuid_kill`; a failure is only logged by FreeSWITCH's absence of a hangup.
    pub async fn kill(&self, uuid: &Uuid) {
        let _ = self.client.api(&format!("uuid_kill {uuid}")).await;
    }

    /// After the event socket dropped mid-call: reconnects, and if the call still exists,
    /// subscribes to it again and returns the new event stream.
    pub async fn resume(&mut self, uuid: &Uuid) -> Option<EventStream> {
        for _ in 0..RECONNECT_TRIES {
            tokio::time::sleep(RECONNECT_PAUSE).await;
            let Ok((client, events)) =
                InboundClient::connect(&self.socket, &self.password, &self.cfg).await
            else {
                continue;
            };
            let exists = async {
                client.filter("Unique-ID", &uuid.to_string()).await?;
                client.event_plain(EVENTS).await?;
                client.api(&format!("uuid_exists {uuid}")).await
            }
            .await;
            self.client = client;
            return match exists {
                Ok(reply) if reply.trim() == "true" => Some(events),
                _ => None,
            };
        }
        None
    }

    /// When the socket dropped before answer: make sure the call does not go on without us.
    pub async fn kill_after_drop(&mut self, uuid: &Uuid) {
        if self.reconnect().await.is_ok() {
            self.kill(uuid).await;
        }
    }
}

/// The inbound connection's timeouts, from `[freeswitch]`.
pub(super) fn client_config(fs: &FreeSwitchSection) -> ClientConfig {
    ClientConfig {
        connect_timeout: fs.connect_timeout,
        auth_timeout: fs.connect_timeout,
        command_timeout: fs.command_timeout,
        // The call's events are read for their own headers and spandsp's `variable_fax_*`:
        // the 150 and more channel variables each of them repeats are not decoded.
        limits: Limits {
            event_variables: false,
            ..Limits::default()
        },
        ..ClientConfig::default()
    }
}

/// Why the event stream closed, in words.
pub(super) fn close_text(events: &EventStream) -> String {
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

    /// The next signal's name.
    pub(super) async fn recv(&mut self) -> &'static str {
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
