//! Outbound Event Socket session: FreeSWITCH connects to us from the dialplan with
//! `socket <host:port> async full`, one TCP connection per call.
//!
//! [`OutboundSession::start`] sends `connect`, checks the socket mode and returns the channel
//! data. Events (after [`OutboundSession::subscribe`]) and disconnect notices arrive on the
//! [`EventStream`] as [`SessionItem`](super::SessionItem)s.

use std::time::Duration;

use futures_util::future::{try_join, try_join_all};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::codec::FramedRead;

use super::client::{self, ClientError, describe, next_message};
use super::codec::{Command, CommandError, EslCodec};
use super::conn::{self, EventStream, ExecEnd, ExecTx, Handle, TaskOptions};
use super::frame::{Event, Headers, Limits, Message, Reply};

/// Timeouts and limits of an outbound session.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// Time allowed for the `connect` reply (default 5 s).
    pub connect_timeout: Duration,
    /// Default time allowed for each command's reply (default 10 s).
    pub command_timeout: Duration,
    /// Frame size limits.
    pub limits: Limits,
    /// Unread events allowed before the connection is closed (default 10 000).
    pub event_queue_max: usize,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            event_queue_max: 10_000,
        }
    }
}

/// Errors of an outbound session.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The dialplan did not use `async full`. GOfax.IP silently reported every such call as
    /// a success; we refuse it.
    #[error(
        "outbound event socket from {peer} is not 'async full' (Socket-Mode: {socket_mode:?}, \
         Control: {control:?}); use 'socket <host:port> async full' in the dialplan"
    )]
    NotAsyncFull {
        /// FreeSWITCH's address.
        peer: String,
        /// `Socket-Mode` as sent (empty when missing).
        socket_mode: String,
        /// `Control` as sent (empty when missing).
        control: String,
    },
    /// No `connect` reply in time.
    #[error("FreeSWITCH at {peer} sent no reply to 'connect' within {after:?}")]
    ConnectTimeout {
        /// FreeSWITCH's address.
        peer: String,
        /// The configured timeout.
        after: Duration,
    },
    /// The `connect` reply is not usable channel data.
    #[error("bad 'connect' reply from {peer}: {detail}")]
    BadConnectReply {
        /// FreeSWITCH's address.
        peer: String,
        /// What was wrong.
        detail: String,
    },
    /// An executed application did not complete: the channel hung up (or the socket
    /// disconnected) first.
    #[error("{app} on {peer} did not complete: the channel hung up first")]
    HungUp {
        /// FreeSWITCH's address.
        peer: String,
        /// The application.
        app: String,
    },
    /// Connection, timeout or command error.
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl From<CommandError> for OutboundError {
    fn from(e: CommandError) -> Self {
        OutboundError::Client(ClientError::Command(e))
    }
}

/// The channel data of the `connect` reply (a serialised CHANNEL_DATA event, URL-decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelData {
    /// All headers of the reply, in wire order.
    pub headers: Headers,
}

impl ChannelData {
    /// First header named `name`, case-insensitively (e.g. `variable_sip_h_Diversion`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
    /// `Unique-ID` of the channel (always present: checked by `start`).
    pub fn unique_id(&self) -> &str {
        self.get("Unique-ID").unwrap_or_default()
    }
    /// `Channel-Caller-ID-Number`.
    pub fn caller_id_number(&self) -> Option<&str> {
        self.get("Channel-Caller-ID-Number")
    }
    /// `Channel-Caller-ID-Name`.
    pub fn caller_id_name(&self) -> Option<&str> {
        self.get("Channel-Caller-ID-Name")
    }
    /// `Channel-Destination-Number`.
    pub fn destination_number(&self) -> Option<&str> {
        self.get("Channel-Destination-Number")
    }
}

/// Handle to one outbound session. Clone freely.
#[derive(Debug, Clone)]
pub struct OutboundSession {
    handle: Handle,
    channel_uuid: String,
    command_timeout: Duration,
}

/// An application started with [`OutboundSession::execute`].
#[derive(Debug)]
pub struct ExecHandle {
    app: String,
    application_uuid: String,
    rx: oneshot::Receiver<Result<Event, ExecEnd>>,
    peer: String,
}

impl ExecHandle {
    /// The `Event-UUID` we sent, reported back as `Application-UUID`.
    pub fn application_uuid(&self) -> &str {
        &self.application_uuid
    }

    /// The application name.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// Waits for this application's CHANNEL_EXECUTE_COMPLETE (read `Application-Response`
    /// from it). Fails if the channel hangs up (CHANNEL_HANGUP_COMPLETE or a disconnect notice)
    /// or the connection closes first. Needs CHANNEL_EXECUTE_COMPLETE in the subscription
    /// ([`OutboundSession::subscribe`] adds it). Matching happens in the connection task, so
    /// it works even if nobody reads the event stream.
    pub async fn completed(self) -> Result<Event, OutboundError> {
        match self.rx.await {
            Ok(Ok(event)) => Ok(event),
            Ok(Err(ExecEnd::HungUp)) => Err(OutboundError::HungUp {
                peer: self.peer,
                app: self.app,
            }),
            Ok(Err(ExecEnd::Refused(reply))) => Err(ClientError::CommandFailed {
                peer: self.peer,
                command: format!("execute {}", self.app),
                reply,
            }
            .into()),
            Ok(Err(ExecEnd::Closed(e))) => Err(e.into()),
            Err(_) => Err(OutboundError::HungUp {
                peer: self.peer,
                app: self.app,
            }),
        }
    }
}

impl OutboundSession {
    /// Takes over a connection FreeSWITCH opened to us: sends `connect`, checks that the
    /// socket is `async full`, and spawns the connection task.
    pub async fn start(
        stream: TcpStream,
        cfg: &OutboundConfig,
    ) -> Result<(OutboundSession, ChannelData, EventStream), OutboundError> {
        let peer = stream.peer_addr().ok();
        Self::start_from(stream, peer, cfg).await
    }

    /// [`OutboundSession::start`] for a connection whose peer is known (`accept` said it),
    /// without asking the socket again.
    pub async fn start_from(
        stream: TcpStream,
        peer: Option<std::net::SocketAddr>,
        cfg: &OutboundConfig,
    ) -> Result<(OutboundSession, ChannelData, EventStream), OutboundError> {
        let peer = peer.map_or_else(|| "unknown peer".to_owned(), |a| a.to_string());
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        let mut reader = FramedRead::new(rd, EslCodec::new(cfg.limits));
        let handshake = async {
            wr.write_all(Command::connect().as_bytes())
                .await
                .map_err(|e| ClientError::Esl {
                    peer: peer.clone(),
                    source: e.into(),
                })?;
            next_message(&mut reader, &peer, "connect").await
        };
        let reply = match tokio::time::timeout(cfg.connect_timeout, handshake).await {
            Ok(Ok(Message::CommandReply(reply))) => reply,
            Ok(Ok(other)) => {
                return Err(OutboundError::BadConnectReply {
                    peer,
                    detail: format!("expected command/reply, got {}", describe(&other)),
                });
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                return Err(OutboundError::ConnectTimeout {
                    peer,
                    after: cfg.connect_timeout,
                });
            }
        };
        let data = check_connect_reply(&peer, reply)?;
        let channel_uuid = data.unique_id().to_owned();
        tracing::debug!(%peer, uuid = %channel_uuid, "ESL outbound session connected");
        let (handle, events) = conn::spawn(
            peer,
            reader,
            wr,
            TaskOptions {
                event_queue_max: cfg.event_queue_max,
                channel_uuid: Some(channel_uuid.clone()),
                sent_ahead: Vec::new(),
            },
        );
        Ok((
            OutboundSession {
                handle,
                channel_uuid,
                command_timeout: cfg.command_timeout,
            },
            data,
            events,
        ))
    }

    /// FreeSWITCH's address.
    pub fn peer(&self) -> &str {
        self.handle.peer()
    }

    /// The channel's `Unique-ID`.
    pub fn channel_uuid(&self) -> &str {
        &self.channel_uuid
    }

    /// `filter Unique-ID <uuid>`, then `event plain <events...>` plus CHANNEL_EXECUTE_COMPLETE
    /// and CHANNEL_HANGUP_COMPLETE (needed by [`ExecHandle::completed`]). spandsp's events are
    /// CUSTOM subclasses, not part of `myevents`: pass them here, e.g.
    /// `["CHANNEL_CALLSTATE", "CUSTOM", "spandsp::rxfaxresult", ...]`.
    pub async fn subscribe(&self, uuid: &str, events: &[&str]) -> Result<(), OutboundError> {
        let filter = Command::filter("Unique-ID", uuid)?;
        // FreeSWITCH reads every word after `CUSTOM` as a subclass name, so the events we add
        // go in front of the caller's list, never after it.
        let mut list: Vec<&str> = Vec::with_capacity(events.len() + 2);
        for needed in ["CHANNEL_EXECUTE_COMPLETE", "CHANNEL_HANGUP_COMPLETE"] {
            if !events
                .iter()
                .any(|e| e.eq_ignore_ascii_case(needed) || *e == "ALL")
            {
                list.push(needed);
            }
        }
        list.extend_from_slice(events);
        let event = Command::event_plain(&list)?;
        // Both go out at once, the filter first: FreeSWITCH answers a socket's commands in
        // order, so no other channel's event can slip in between (`try_join` queues in order).
        try_join(self.command(filter), self.command(event)).await?;
        Ok(())
    }

    /// `filter <header> -<value>` for each of `values`, sent together: with the `Unique-ID`
    /// filter of [`Self::subscribe`] in place, FreeSWITCH stops sending this channel's events
    /// whose `header` is one of them (mod_event_socket's negative filter, matched
    /// case-insensitively; one filter per value, as its filters are a list).
    pub async fn filter_out(&self, header: &str, values: &[&str]) -> Result<(), OutboundError> {
        let commands = values
            .iter()
            .map(|v| Command::filter(header, &format!("-{v}")))
            .collect::<Result<Vec<_>, _>>()?;
        try_join_all(commands.into_iter().map(|c| self.command(c))).await?;
        Ok(())
    }

    /// `myevents`: this channel's core events (no CUSTOM, no CHANNEL_CALLSTATE).
    pub async fn myevents(&self) -> Result<Reply, OutboundError> {
        self.command(Command::myevents()).await
    }

    /// `linger [<secs>]`: keep the socket open after hangup to receive the final events.
    /// `None` lingers until we close the socket (FreeSWITCH never closes it then).
    pub async fn linger(&self, time: Option<Duration>) -> Result<Reply, OutboundError> {
        self.command(Command::linger(time)).await
    }

    /// Whether FreeSWITCH has said the channel is gone (CHANNEL_HANGUP, CHANNEL_HANGUP_COMPLETE,
    /// a disconnect notice).
    pub fn channel_gone(&self) -> bool {
        self.handle.shared.channel_gone()
    }

    /// Runs `app` with `arg` on the channel (`event-lock: true`, fresh `Event-UUID`). Returns
    /// once FreeSWITCH accepted the `sendmsg`; await [`ExecHandle::completed`] for the result.
    /// Once the channel is gone it fails at once with [`OutboundError::HungUp`], sending
    /// nothing: FreeSWITCH would answer `+OK` and never run it.
    pub async fn execute(&self, app: &str, arg: &str) -> Result<ExecHandle, OutboundError> {
        if self.channel_gone() {
            return Err(OutboundError::HungUp {
                peer: self.peer().to_owned(),
                app: app.to_owned(),
            });
        }
        let application_uuid = super::codec::command_uuid().to_string();
        let cmd = Command::execute(None, app, arg, Some(&application_uuid))?;
        let label = cmd.label().to_owned();
        let (tx, rx): (ExecTx, _) = oneshot::channel();
        let reply = self
            .handle
            .request(cmd, self.command_timeout, None, Some(tx))
            .await?;
        match reply {
            Message::CommandReply(r) if r.is_ok() => Ok(ExecHandle {
                app: app.to_owned(),
                application_uuid,
                rx,
                peer: self.peer().to_owned(),
            }),
            Message::CommandReply(r) => Err(ClientError::CommandFailed {
                peer: self.peer().to_owned(),
                command: label,
                reply: r.text().to_owned(),
            }
            .into()),
            other => Err(OutboundError::Client(ClientError::UnexpectedReply {
                peer: self.peer().to_owned(),
                command: label,
                got: describe(&other),
            })),
        }
    }

    /// Hangs the channel up now with `cause` (e.g. `NORMAL_CLEARING`, `CALL_REJECTED`), via
    /// `sendmsg` `call-command: hangup` (not queued behind running applications).
    pub async fn hangup(&self, cause: &str) -> Result<Reply, OutboundError> {
        let cmd = Command::hangup(None, cause)?;
        self.command(cmd).await
    }

    /// `api <cmd>` (allowed on a full-control socket); the body as sent.
    pub async fn api(&self, cmd: &str) -> Result<String, OutboundError> {
        let cmd = Command::api(cmd)?;
        Ok(client::api_body(&self.handle, cmd, self.command_timeout).await?)
    }

    /// `exit`: FreeSWITCH answers `+OK bye`, sends a disconnect notice and closes.
    pub async fn exit(&self) -> Result<Reply, OutboundError> {
        self.command(Command::exit()).await
    }

    /// Sends any command and returns its reply as is.
    pub async fn send(&self, cmd: Command) -> Result<Message, OutboundError> {
        Ok(self
            .handle
            .request(cmd, self.command_timeout, None, None)
            .await?)
    }

    async fn command(&self, cmd: Command) -> Result<Reply, OutboundError> {
        Ok(client::ok_reply(&self.handle, cmd, self.command_timeout).await?)
    }
}

fn check_connect_reply(peer: &str, reply: Reply) -> Result<ChannelData, OutboundError> {
    let socket_mode = reply.get("Socket-Mode").unwrap_or_default();
    let control = reply.get("Control").unwrap_or_default();
    if !socket_mode.eq_ignore_ascii_case("async") || !control.eq_ignore_ascii_case("full") {
        return Err(OutboundError::NotAsyncFull {
            peer: peer.to_owned(),
            socket_mode: socket_mode.to_owned(),
            control: control.to_owned(),
        });
    }
    if !reply.is_ok() {
        return Err(OutboundError::BadConnectReply {
            peer: peer.to_owned(),
            detail: format!("Reply-Text {:?}", reply.text()),
        });
    }
    if reply.get("Unique-ID").is_none_or(str::is_empty) {
        return Err(OutboundError::BadConnectReply {
            peer: peer.to_owned(),
            detail: "no Unique-ID".into(),
        });
    }
    Ok(ChannelData {
        headers: reply.headers,
    })
}
