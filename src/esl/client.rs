//! Inbound Event Socket client: we connect to FreeSWITCH (`[freeswitch] socket`, e.g. :8021).
//!
//! Modelled on tokio-postgres: [`InboundClient`] is a cheap cloneable handle; a spawned task
//! owns the socket (see `conn.rs`). Events arrive on the [`EventStream`] returned by
//! [`InboundClient::connect`].

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio_util::codec::FramedRead;

use super::codec::{Command, EslCodec};
use super::conn::{self, EventStream, Handle, JobTx, ReplyTx, SentAhead, TaskOptions};
pub use super::error::ClientError;
use super::error::CloseReason;
use super::frame::{Event, Limits, Message, Reply};

/// Timeouts and limits of an inbound connection.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// TCP connect timeout (default 5 s).
    pub connect_timeout: Duration,
    /// Time allowed for the `auth/request` greeting and the `auth` reply (default 5 s).
    pub auth_timeout: Duration,
    /// Default time allowed for each command's reply (default 10 s).
    pub command_timeout: Duration,
    /// Frame size limits.
    pub limits: Limits,
    /// Unread events allowed before the connection is closed (default 10 000).
    pub event_queue_max: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(5),
            auth_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            event_queue_max: 10_000,
        }
    }
}

/// True when an `api` body is an error (`-ERR ...`, including mod_db's `-ERR no reply\n`).
/// mod_db's `!err!` for bad syntax is not caught here: callers of `db` check for it.
pub fn is_err_reply(body: &str) -> bool {
    body.starts_with("-ERR")
}

/// Handle to an authenticated inbound connection. Clone freely; the connection closes when the
/// last handle and the [`EventStream`] are dropped, on [`InboundClient::exit`], on any timeout,
/// or when FreeSWITCH closes it.
#[derive(Debug, Clone)]
pub struct InboundClient {
    handle: Handle,
    command_timeout: Duration,
    /// Answers to `api` commands sent ahead ([`AskAhead`]), each for the first `api` call
    /// with the same command.
    asked: Arc<Mutex<Vec<AskedAnswer>>>,
}

/// Where the answer to a command sent ahead arrives.
#[derive(Debug)]
struct AskedAnswer {
    command: String,
    label: String,
    answer: tokio::sync::oneshot::Receiver<Result<Message, ClientError>>,
}

/// An `api` command for [`InboundClient::connect_blocking`] to send ahead: written behind the
/// commands that must succeed, its answer not waited for there. The first
/// [`InboundClient::api`] call with the same command takes that answer instead of asking
/// again, so a question whose command is known early is answered while the caller still
/// works out whether it needs it. An answer nobody takes is dropped with the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskAhead {
    /// The command as it would be given to [`InboundClient::api`].
    pub command: String,
    /// How long FreeSWITCH has to answer it, from the moment it was sent; a late answer
    /// closes the connection, as [`InboundClient::api_with_timeout`]'s would.
    pub timeout: Duration,
}

/// A `bgapi` accepted by FreeSWITCH; its result comes with the matching BACKGROUND_JOB event.
#[derive(Debug)]
pub struct BackgroundJob {
    job_uuid: String,
    rx: tokio::sync::oneshot::Receiver<Result<Event, ClientError>>,
    peer: String,
}

impl BackgroundJob {
    /// The Job-UUID we sent.
    pub fn job_uuid(&self) -> &str {
        &self.job_uuid
    }

    /// Waits for the BACKGROUND_JOB event and returns its body (e.g. `+OK <uuid>\n` or
    /// `-ERR USER_BUSY\n`). No timeout here: an originate may ring for minutes, so wrap it in
    /// `tokio::time::timeout` with the policy of the caller.
    pub async fn result(self) -> Result<String, ClientError> {
        self.event().await.map(|e| e.body.unwrap_or_default())
    }

    /// Like [`BackgroundJob::result`] but returns the whole event.
    pub async fn event(self) -> Result<Event, ClientError> {
        match self.rx.await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Closed {
                peer: self.peer,
                reason: CloseReason::Dropped,
            }),
        }
    }
}

impl InboundClient {
    /// Connects to `addr` (`host:port`), authenticates with `password` and spawns the
    /// connection task. The password is never logged.
    pub async fn connect(
        addr: &str,
        password: &str,
        cfg: &ClientConfig,
    ) -> Result<(InboundClient, EventStream), ClientError> {
        let peer = addr.to_owned();
        let auth = Command::auth(password)?;
        let stream = match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(addr)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(ClientError::Connect { peer, source }),
            Err(_) => {
                return Err(ClientError::ConnectTimeout {
                    peer,
                    after: cfg.connect_timeout,
                });
            }
        };
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        let mut reader = FramedRead::new(rd, EslCodec::new(cfg.limits));
        let handshake = async {
            greeting(&peer, next_message(&mut reader, &peer, "greeting").await?)?;
            wr.write_all(auth.as_bytes())
                .await
                .map_err(|e| ClientError::Esl {
                    peer: peer.clone(),
                    source: e.into(),
                })?;
            accepted(
                &peer,
                next_message(&mut reader, &peer, "authentication").await?,
            )
        };
        match tokio::time::timeout(cfg.auth_timeout, handshake).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(ClientError::AuthTimeout {
                    peer,
                    after: cfg.auth_timeout,
                });
            }
        }
        tracing::debug!(%peer, "ESL authenticated");
        Ok(InboundClient::run(peer, reader, wr, cfg, Vec::new()))
    }

    /// Spawns the task of an authenticated connection; `asked` went out already (each command
    /// with where the task sends its reply, and where the client takes it).
    fn run(
        peer: String,
        reader: FramedRead<OwnedReadHalf, EslCodec>,
        writer: tokio::net::tcp::OwnedWriteHalf,
        cfg: &ClientConfig,
        asked: Vec<(SentAhead, AskedAnswer)>,
    ) -> (InboundClient, EventStream) {
        let (sent_ahead, answers): (Vec<SentAhead>, Vec<AskedAnswer>) = asked.into_iter().unzip();
        let (handle, events) = conn::spawn(
            peer,
            reader,
            writer,
            TaskOptions {
                event_queue_max: cfg.event_queue_max,
                channel_uuid: None,
                sent_ahead,
            },
        );
        let client = InboundClient {
            handle,
            command_timeout: cfg.command_timeout,
            asked: Arc::new(Mutex::new(answers)),
        };
        (client, events)
    }

    /// [`InboundClient::connect`] without a runtime, for a thread of its own, so that the
    /// connection is opened while the caller does something else: connects, waits for the
    /// greeting, sends `auth` with `then` right behind it (FreeSWITCH reads and answers a
    /// socket's commands in order) and requires `+OK` to each. Every wait is bounded by the
    /// configured timeouts. The `ahead` commands go out behind `then`, their answers left for
    /// the client's first `api` calls with the same commands ([`AskAhead`]; one that cannot be
    /// a command is not sent). [`Opened::start`] turns the result into a client.
    pub fn connect_blocking(
        addr: &str,
        password: &str,
        cfg: &ClientConfig,
        then: &[Command],
        ahead: &[AskAhead],
    ) -> Result<Opened, OpenError> {
        let peer = addr.to_owned();
        let before_auth = |error| OpenError {
            error,
            authenticated: false,
        };
        let auth = Command::auth(password).map_err(|e| before_auth(e.into()))?;
        let stream = connect_std(addr, cfg.connect_timeout).map_err(before_auth)?;
        let _ = stream.set_nodelay(true);
        let mut opened = Opened {
            peer,
            stream,
            codec: EslCodec::new(cfg.limits),
            buffered: BytesMut::new(),
            cfg: cfg.clone(),
            asked: Vec::new(),
        };
        let deadline = Instant::now() + cfg.auth_timeout;
        let timed_out = |peer: &str| ClientError::AuthTimeout {
            peer: peer.to_owned(),
            after: cfg.auth_timeout,
        };
        opened
            .next_message("greeting", deadline, timed_out)
            .and_then(|msg| greeting(addr, msg))
            .map_err(before_auth)?;
        let mut out = auth.as_bytes().to_vec();
        for cmd in then {
            out.extend_from_slice(cmd.as_bytes());
        }
        let sent = Instant::now();
        for ask in ahead {
            let Ok(cmd) = Command::api(&ask.command) else {
                continue;
            };
            out.extend_from_slice(cmd.as_bytes());
            let (reply, answer): (ReplyTx, _) = tokio::sync::oneshot::channel();
            let label = cmd.label().to_owned();
            let to_task = SentAhead {
                label: label.clone(),
                sent,
                timeout: ask.timeout,
                reply,
            };
            let to_client = AskedAnswer {
                command: ask.command.clone(),
                label,
                answer,
            };
            opened.asked.push((to_task, to_client));
        }
        if let Err(e) = opened.stream.write_all(&out) {
            return Err(before_auth(ClientError::Esl {
                peer: opened.peer,
                source: e.into(),
            }));
        }
        opened
            .next_message("authentication", deadline, timed_out)
            .and_then(|msg| accepted(addr, msg))
            .map_err(before_auth)?;
        tracing::debug!(peer = %opened.peer, "ESL authenticated");
        for cmd in then {
            opened.expect_ok(cmd).map_err(|error| OpenError {
                error,
                authenticated: true,
            })?;
        }
        Ok(opened)
    }

    /// Why the connection closed, once it has (`None` while it is open).
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.handle.shared.close_reason()
    }

    /// The address this client is connected to.
    pub fn peer(&self) -> &str {
        self.handle.peer()
    }

    /// Sends any command and returns its reply (`CommandReply` or `ApiResponse`) as is.
    pub async fn send(&self, cmd: Command) -> Result<Message, ClientError> {
        self.send_with_timeout(cmd, self.command_timeout).await
    }

    /// [`InboundClient::send`] with a timeout other than the configured one.
    pub async fn send_with_timeout(
        &self,
        cmd: Command,
        timeout: Duration,
    ) -> Result<Message, ClientError> {
        self.handle.request(cmd, timeout, None, None).await
    }

    /// `api <cmd>`: returns the body exactly as FreeSWITCH sent it. `-ERR ...` bodies (such as
    /// mod_db's `-ERR no reply\n` for a missing key) are not errors here; see [`is_err_reply`].
    pub async fn api(&self, cmd: &str) -> Result<String, ClientError> {
        self.api_with_timeout(cmd, self.command_timeout).await
    }

    /// [`InboundClient::api`] with a timeout other than the configured one.
    pub async fn api_with_timeout(
        &self,
        cmd: &str,
        timeout: Duration,
    ) -> Result<String, ClientError> {
        if let Some(asked) = self.take_asked(cmd) {
            let msg = asked
                .answer
                .await
                .unwrap_or_else(|_| Err(self.handle.shared.closed_error()))?;
            return api_text(self.handle.peer(), asked.label, msg);
        }
        let cmd = Command::api(cmd)?;
        api_body(&self.handle, cmd, timeout).await
    }

    /// Where the answer to `cmd` arrives, if it was sent ahead and nobody took it yet.
    fn take_asked(&self, cmd: &str) -> Option<AskedAnswer> {
        let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        let at = asked.iter().position(|a| a.command == cmd)?;
        Some(asked.swap_remove(at))
    }

    /// `bgapi <cmd>` with a fresh Job-UUID. FreeSWITCH only delivers BACKGROUND_JOB to
    /// connections subscribed to it: include `BACKGROUND_JOB` (or `ALL`) in
    /// [`InboundClient::event_plain`] first, and if you install filters, also
    /// `filter Job-UUID <uuid>` (use [`InboundClient::bgapi_with_job_uuid`] to know it early).
    /// The matching event is consumed by the job and not put on the event stream.
    pub async fn bgapi(&self, cmd: &str) -> Result<BackgroundJob, ClientError> {
        self.bgapi_with_job_uuid(cmd, &super::codec::command_uuid().to_string())
            .await
    }

    /// [`InboundClient::bgapi`] with a Job-UUID chosen by the caller.
    pub async fn bgapi_with_job_uuid(
        &self,
        cmd: &str,
        job_uuid: &str,
    ) -> Result<BackgroundJob, ClientError> {
        let cmd = Command::bgapi(cmd, job_uuid)?;
        bgapi(&self.handle, cmd, self.command_timeout).await
    }

    /// `event plain <events...>`.
    pub async fn event_plain(&self, events: &[&str]) -> Result<Reply, ClientError> {
        self.command(Command::event_plain(events)?).await
    }

    /// `filter <header> <value>`.
    pub async fn filter(&self, header: &str, value: &str) -> Result<Reply, ClientError> {
        self.command(Command::filter(header, value)?).await
    }

    /// `filter delete <header> <value>`.
    pub async fn filter_delete(&self, header: &str, value: &str) -> Result<Reply, ClientError> {
        self.command(Command::filter_delete(header, value)?).await
    }

    /// `nixevent <events...>`.
    pub async fn nixevent(&self, events: &[&str]) -> Result<Reply, ClientError> {
        self.command(Command::nixevent(events)?).await
    }

    /// `exit`: FreeSWITCH answers `+OK bye` and closes; the event stream then ends.
    pub async fn exit(&self) -> Result<Reply, ClientError> {
        self.command(Command::exit()).await
    }

    /// Sends a command that answers `command/reply`; anything but `+OK` is an error.
    pub async fn command(&self, cmd: Command) -> Result<Reply, ClientError> {
        ok_reply(&self.handle, cmd, self.command_timeout).await
    }
}

/// A connection [`InboundClient::connect_blocking`] opened and authenticated, its commands
/// answered, not yet run by a task.
#[derive(Debug)]
pub struct Opened {
    peer: String,
    stream: std::net::TcpStream,
    codec: EslCodec,
    /// What arrived after the last reply (normally nothing, or answers to `asked`).
    buffered: BytesMut,
    cfg: ClientConfig,
    /// Sent behind the commands, not yet answered as far as the handshake read.
    asked: Vec<(SentAhead, AskedAnswer)>,
}

/// Why [`InboundClient::connect_blocking`] failed.
#[derive(Debug)]
pub struct OpenError {
    /// What went wrong, as [`InboundClient::connect`] or the command would say it.
    pub error: ClientError,
    /// FreeSWITCH had accepted the password: the switch is there, one of the commands sent
    /// behind `auth` failed.
    pub authenticated: bool,
}

impl Opened {
    /// The connection as an [`InboundClient`] and its events; must run inside the runtime.
    pub fn start(mut self) -> Result<(InboundClient, EventStream), ClientError> {
        let esl_error = |peer: &str, e: std::io::Error| ClientError::Esl {
            peer: peer.to_owned(),
            source: e.into(),
        };
        self.stream
            .set_nonblocking(true)
            .map_err(|e| esl_error(&self.peer, e))?;
        if !self.asked.is_empty() {
            self.take_in_what_arrived();
        }
        let stream = TcpStream::from_std(self.stream).map_err(|e| esl_error(&self.peer, e))?;
        let (rd, wr) = stream.into_split();
        let mut reader = FramedRead::new(rd, self.codec);
        *reader.read_buffer_mut() = self.buffered;
        Ok(InboundClient::run(
            self.peer, reader, wr, &self.cfg, self.asked,
        ))
    }

    /// Reads what the socket holds now into `buffered`, without waiting. The answers to the
    /// commands asked ahead may have come long before the connection is started (while the
    /// caller prepared its job); read here, the task hands them over before it looks at any
    /// deadline, so an answer that came in time never counts as late. An error or the end of
    /// the connection is left for the task to meet.
    fn take_in_what_arrived(&mut self) {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => self.buffered.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Reads until a whole message is in; `timed_out` names the error once `deadline` passed.
    fn next_message(
        &mut self,
        stage: &'static str,
        deadline: Instant,
        timed_out: impl Fn(&str) -> ClientError,
    ) -> Result<Message, ClientError> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.codec.decode_slice(&self.buffered) {
                Ok(Some((Message::Unknown { content_type, .. }, used))) => {
                    bytes::Buf::advance(&mut self.buffered, used);
                    tracing::warn!(peer = %self.peer, %content_type, "skipping ESL message of unknown type");
                    continue;
                }
                Ok(Some((msg, used))) => {
                    bytes::Buf::advance(&mut self.buffered, used);
                    return Ok(msg);
                }
                Ok(None) => {}
                Err(source) => {
                    return Err(ClientError::Esl {
                        peer: self.peer.clone(),
                        source,
                    });
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out(&self.peer));
            }
            let peer_error = |source: std::io::Error| ClientError::Esl {
                peer: self.peer.clone(),
                source: source.into(),
            };
            self.stream
                .set_read_timeout(Some(left))
                .map_err(peer_error)?;
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(ClientError::Unexpected {
                        peer: self.peer.clone(),
                        stage,
                        got: "end of connection".into(),
                    });
                }
                Ok(n) => self.buffered.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(peer_error(e)),
            }
        }
    }

    /// The reply to `cmd`, sent earlier, must be `+OK`.
    fn expect_ok(&mut self, cmd: &Command) -> Result<(), ClientError> {
        let after = self.cfg.command_timeout;
        let deadline = Instant::now() + after;
        let label = cmd.label().to_owned();
        let timed_out = |peer: &str| ClientError::Timeout {
            peer: peer.to_owned(),
            command: label.clone(),
            after,
        };
        let reply = match self.next_message("command", deadline, timed_out) {
            Ok(reply) => reply,
            Err(ClientError::Unexpected { peer, .. }) => {
                return Err(ClientError::Closed {
                    peer,
                    reason: CloseReason::PeerClosed,
                });
            }
            Err(e) => return Err(e),
        };
        ok(&self.peer, label, reply).map(drop)
    }
}

/// A blocking TCP connect to `addr` (`host:port`, every address it resolves to in turn)
/// within `timeout` in all.
fn connect_std(addr: &str, timeout: Duration) -> Result<std::net::TcpStream, ClientError> {
    use std::net::ToSocketAddrs;
    let peer = addr.to_owned();
    let deadline = Instant::now() + timeout;
    let timed_out = || ClientError::ConnectTimeout {
        peer: addr.to_owned(),
        after: timeout,
    };
    let addrs = addr
        .to_socket_addrs()
        .map_err(|source| ClientError::Connect {
            peer: peer.clone(),
            source,
        })?;
    let mut last = None;
    for sa in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        match std::net::TcpStream::connect_timeout(&sa, left) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(timed_out()),
            Err(e) => last = Some(e),
        }
    }
    Err(ClientError::Connect {
        peer,
        source: last.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "could not resolve to any addresses",
            )
        }),
    })
}

/// Sends `cmd` and requires a `+OK` command/reply.
pub(crate) async fn ok_reply(
    handle: &Handle,
    cmd: Command,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    let label = cmd.label().to_owned();
    let reply = handle.request(cmd, timeout, None, None).await?;
    ok(handle.peer(), label, reply)
}

/// `reply`, the answer to the command `label`, must be a `+OK` command/reply.
fn ok(peer: &str, label: String, reply: Message) -> Result<Reply, ClientError> {
    match reply {
        Message::CommandReply(r) if r.is_ok() => Ok(r),
        Message::CommandReply(r) => Err(ClientError::CommandFailed {
            peer: peer.to_owned(),
            command: label,
            reply: r.text().to_owned(),
        }),
        other => Err(unexpected_reply(peer, label, &other)),
    }
}

/// The first message of a connection must be FreeSWITCH's `auth/request`.
fn greeting(peer: &str, msg: Message) -> Result<(), ClientError> {
    match msg {
        Message::AuthRequest => Ok(()),
        other => Err(handshake_error(peer, "greeting", other)),
    }
}

/// The reply to `auth` must accept the password.
fn accepted(peer: &str, msg: Message) -> Result<(), ClientError> {
    match msg {
        Message::CommandReply(r) if r.text() == "+OK accepted" => Ok(()),
        Message::CommandReply(_) => Err(ClientError::AuthFailed {
            peer: peer.to_owned(),
        }),
        other => Err(handshake_error(peer, "authentication", other)),
    }
}

/// Sends an `api` command and returns its body.
pub(crate) async fn api_body(
    handle: &Handle,
    cmd: Command,
    timeout: Duration,
) -> Result<String, ClientError> {
    let label = cmd.label().to_owned();
    let msg = handle.request(cmd, timeout, None, None).await?;
    api_text(handle.peer(), label, msg)
}

/// The body of the reply to the `api` command `label`.
fn api_text(peer: &str, label: String, msg: Message) -> Result<String, ClientError> {
    match msg {
        Message::ApiResponse(body) => Ok(body),
        // FreeSWITCH refuses some api calls (e.g. permissions) with a command/reply.
        Message::CommandReply(r) => Err(ClientError::CommandFailed {
            peer: peer.to_owned(),
            command: label,
            reply: r.text().to_owned(),
        }),
        other => Err(unexpected_reply(peer, label, &other)),
    }
}

/// Sends a `bgapi` command and returns the job handle once FreeSWITCH accepted it.
pub(crate) async fn bgapi(
    handle: &Handle,
    cmd: Command,
    timeout: Duration,
) -> Result<BackgroundJob, ClientError> {
    let job_uuid = cmd.job_uuid().unwrap_or_default().to_owned();
    let label = cmd.label().to_owned();
    let (tx, rx): (JobTx, _) = tokio::sync::oneshot::channel();
    match handle.request(cmd, timeout, Some(tx), None).await? {
        Message::CommandReply(r) if r.is_ok() => Ok(BackgroundJob {
            job_uuid,
            rx,
            peer: handle.peer().to_owned(),
        }),
        Message::CommandReply(r) => Err(ClientError::CommandFailed {
            peer: handle.peer().to_owned(),
            command: label,
            reply: r.text().to_owned(),
        }),
        other => Err(unexpected_reply(handle.peer(), label, &other)),
    }
}

fn unexpected_reply(peer: &str, command: String, got: &Message) -> ClientError {
    ClientError::UnexpectedReply {
        peer: peer.to_owned(),
        command,
        got: describe(got),
    }
}

/// Reads the next message during a handshake; EOF and decode errors become errors.
pub(crate) async fn next_message(
    reader: &mut FramedRead<OwnedReadHalf, EslCodec>,
    peer: &str,
    stage: &'static str,
) -> Result<Message, ClientError> {
    loop {
        match reader.next().await {
            Some(Ok(Message::Unknown { content_type, .. })) => {
                tracing::warn!(%peer, %content_type, "skipping ESL message of unknown type");
            }
            Some(Ok(msg)) => return Ok(msg),
            Some(Err(source)) => {
                return Err(ClientError::Esl {
                    peer: peer.to_owned(),
                    source,
                });
            }
            None => {
                return Err(ClientError::Unexpected {
                    peer: peer.to_owned(),
                    stage,
                    got: "end of connection".into(),
                });
            }
        }
    }
}

fn handshake_error(peer: &str, stage: &'static str, msg: Message) -> ClientError {
    match msg {
        Message::RudeRejection(frame) => ClientError::Rejected {
            peer: peer.to_owned(),
            text: frame.body_str().trim().to_owned(),
        },
        other => ClientError::Unexpected {
            peer: peer.to_owned(),
            stage,
            got: describe(&other),
        },
    }
}

/// One-line description of a message for errors.
pub(crate) fn describe(msg: &Message) -> String {
    match msg {
        Message::AuthRequest => "auth/request".into(),
        Message::CommandReply(r) => format!("command/reply {:?}", r.text()),
        Message::ApiResponse(b) => format!("api/response {:?}", b.trim_end()),
        Message::Event(e) => format!("event {}", e.name().unwrap_or("?")),
        Message::DisconnectNotice(n) => {
            format!("disconnect-notice ({})", n.disposition().unwrap_or("?"))
        }
        Message::RudeRejection(f) => format!("rude-rejection {:?}", f.body_str().trim()),
        Message::Log(_) => "log/data".into(),
        Message::Unknown { content_type, .. } => format!("unknown content type {content_type:?}"),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    use super::*;
    use crate::esl::SessionItem;

    /// The next command block the client sent, up to its blank line; `None` at the end.
    fn read_block(rd: &mut BufReader<std::net::TcpStream>) -> Option<String> {
        let mut block = String::new();
        loop {
            let mut line = String::new();
            if rd.read_line(&mut line).unwrap() == 0 {
                return None;
            }
            if line == "\n" {
                return Some(block);
            }
            block.push_str(&line);
        }
    }

    /// A peer that greets, reads `commands` command blocks, then writes `reply` and closes
    /// when `close` (else keeps the socket open until the client goes). Returns its address
    /// and the blocks it read.
    fn peer(
        commands: usize,
        reply: &'static str,
        close: bool,
    ) -> (String, std::thread::JoinHandle<Vec<String>>) {
        greeting_peer(move |mut out, mut rd| {
            let mut blocks = Vec::new();
            while blocks.len() < commands {
                let Some(block) = read_block(&mut rd) else {
                    return blocks;
                };
                blocks.push(block);
            }
            out.write_all(reply.as_bytes()).unwrap();
            if !close {
                // Until the client closes.
                let mut rest = Vec::new();
                let _ = rd.read_to_end(&mut rest);
            }
            blocks
        })
    }

    /// A port for one client, served on a thread by `serve` once the client is greeted
    /// (`auth/request` sent): `serve` gets the writing side and a reader of the command
    /// blocks. Returns the address and the thread.
    fn greeting_peer<T: Send + 'static>(
        serve: impl FnOnce(std::net::TcpStream, BufReader<std::net::TcpStream>) -> T + Send + 'static,
    ) -> (String, std::thread::JoinHandle<T>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let served = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut out = stream.try_clone().unwrap();
            out.write_all(b"Content-Type: auth/request\n\n").unwrap();
            serve(out, BufReader::new(stream))
        });
        (addr, served)
    }

    fn subscription() -> Vec<Command> {
        vec![
            Command::filter("Unique-ID", "u-1").unwrap(),
            Command::event_plain(&["CHANNEL_ANSWER"]).unwrap(),
        ]
    }

    const OK: &str = "Content-Type: command/reply\nReply-Text: +OK\n\n";
    const ACCEPTED: &str = "Content-Type: command/reply\nReply-Text: +OK accepted\n\n";

    #[test]
    fn commands_go_out_behind_auth_and_what_follows_their_replies_reaches_the_events() {
        let event = "Event-Name: CHANNEL_ANSWER\nUnique-ID: u-1\n\n";
        let frame = format!(
            "Content-Length: {}\nContent-Type: text/event-plain\n\n{event}",
            event.len()
        );
        let reply: &'static str = format!("{ACCEPTED}{OK}{OK}{frame}").leak();
        let (addr, served) = peer(3, reply, false);
        let opened = InboundClient::connect_blocking(
            &addr,
            "ClueCon",
            &ClientConfig::default(),
            &subscription(),
            &[],
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let name = rt.block_on(async move {
            let (client, mut events) = opened.start().unwrap();
            let item = events.recv().await;
            drop(client);
            match item {
                Some(SessionItem::Event(e)) => e.name().map(str::to_owned),
                _ => None,
            }
        });
        assert_eq!(name.as_deref(), Some("CHANNEL_ANSWER"));
        // The connection's task goes with the runtime; the peer then sees the end.
        drop(rt);
        let blocks = served.join().unwrap();
        assert_eq!(
            blocks,
            [
                "auth ClueCon\n",
                "filter Unique-ID u-1\n",
                "event plain CHANNEL_ANSWER\n"
            ]
        );
    }

    /// An `api/response` frame with `body`.
    fn api_response(body: &str) -> String {
        format!(
            "Content-Type: api/response\nContent-Length: {}\n\n{body}",
            body.len()
        )
    }

    #[test]
    fn answers_asked_ahead_go_once_to_the_first_api_call_with_the_same_command() {
        // Answers the handshake and the two commands asked ahead once all five are in, then
        // every later command with its own text.
        let (addr, served) = greeting_peer(|mut out, mut rd| {
            let mut blocks: Vec<String> = Vec::new();
            loop {
                let Some(block) = read_block(&mut rd) else {
                    return blocks;
                };
                blocks.push(block);
                let reply = match blocks.len() {
                    1..=4 => continue,
                    5 => format!(
                        "{ACCEPTED}{OK}{OK}{}{}",
                        api_response("va\n"),
                        api_response("vb\n")
                    ),
                    _ => api_response(&format!("answer to {}", blocks.last().unwrap().trim())),
                };
                out.write_all(reply.as_bytes()).unwrap();
            }
        });
        let ask = |command: &str| AskAhead {
            command: command.into(),
            timeout: Duration::from_secs(60),
        };
        let opened = InboundClient::connect_blocking(
            &addr,
            "ClueCon",
            &ClientConfig::default(),
            &subscription(),
            &[ask("db select/a"), ask("db list/b"), ask("bad\ncommand")],
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let answers = rt.block_on(async move {
            let (client, _events) = opened.start().unwrap();
            let mut answers = Vec::new();
            for cmd in ["db list/b", "other", "db select/a", "db select/a"] {
                answers.push(client.api(cmd).await.unwrap());
            }
            answers
        });
        drop(rt);
        assert_eq!(
            answers,
            [
                "vb\n",
                "answer to api other",
                "va\n",
                "answer to api db select/a"
            ]
        );
        // Asked once each, ahead, behind the subscription; the command that cannot be one
        // (a newline in it) never went out; the second select was asked again.
        assert_eq!(
            served.join().unwrap(),
            [
                "auth ClueCon\n",
                "filter Unique-ID u-1\n",
                "event plain CHANNEL_ANSWER\n",
                "api db select/a\n",
                "api db list/b\n",
                "api other\n",
                "api db select/a\n",
            ]
        );
    }

    /// How [`InboundClient::connect_blocking`] with the subscription fails against a peer
    /// that answers `reply` to it and closes.
    fn refused(password: &str, reply: &'static str) -> OpenError {
        let (addr, _served) = peer(3, reply, true);
        let cfg = ClientConfig::default();
        InboundClient::connect_blocking(&addr, password, &cfg, &subscription(), &[]).unwrap_err()
    }

    #[test]
    fn a_refused_password_is_an_auth_failure_before_authentication() {
        let e = refused(
            "wrong",
            "Content-Type: command/reply\nReply-Text: -ERR invalid\n\n",
        );
        assert!(!e.authenticated);
        let failed = matches!(e.error, ClientError::AuthFailed { .. });
        assert!(failed, "{}", e.error);
    }

    #[test]
    fn a_refused_command_fails_after_authentication_naming_it() {
        let reply = "Content-Type: command/reply\nReply-Text: -ERR no such event\n\n";
        let e = refused("ClueCon", format!("{ACCEPTED}{OK}{reply}").leak());
        assert!(e.authenticated);
        match &e.error {
            ClientError::CommandFailed { command, reply, .. } => {
                assert!(command.starts_with("event plain"), "{command}");
                assert_eq!(reply, "-ERR no such event");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn a_close_after_auth_is_a_closed_connection_after_authentication() {
        let e = refused("ClueCon", ACCEPTED);
        assert!(e.authenticated);
        assert!(matches!(e.error, ClientError::Closed { .. }), "{}", e.error);
    }

    #[test]
    fn an_acl_rejection_instead_of_the_greeting_is_a_rejection_naming_its_text() {
        // What mod_event_socket sends a client its ACL refuses, then it closes.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let body = "Access Denied, go away.\n";
        let frame = format!(
            "Content-Type: text/rude-rejection\nContent-Length: {}\n\n{body}",
            body.len()
        );
        let refusing = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(frame.as_bytes()).unwrap();
        });
        let cfg = ClientConfig::default();
        let e = InboundClient::connect_blocking(&addr, "ClueCon", &cfg, &subscription(), &[])
            .unwrap_err();
        refusing.join().unwrap();
        assert!(!e.authenticated);
        match &e.error {
            ClientError::Rejected { text, .. } => assert_eq!(text, "Access Denied, go away."),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn a_peer_that_never_greets_is_an_auth_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cfg = ClientConfig {
            auth_timeout: Duration::from_millis(200),
            ..ClientConfig::default()
        };
        // Accepted by the kernel (the backlog), never answered.
        let e = InboundClient::connect_blocking(&addr, "ClueCon", &cfg, &[], &[]).unwrap_err();
        assert!(!e.authenticated);
        assert!(
            matches!(e.error, ClientError::AuthTimeout { .. }),
            "{}",
            e.error
        );
        drop(listener);
    }

    #[test]
    fn nobody_listening_is_a_connect_error_naming_the_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let e =
            InboundClient::connect_blocking(&addr, "ClueCon", &ClientConfig::default(), &[], &[])
                .unwrap_err();
        assert!(!e.authenticated);
        assert!(
            matches!(e.error, ClientError::Connect { .. }),
            "{}",
            e.error
        );
        assert!(e.error.to_string().contains(&addr), "{}", e.error);
    }
}
