//! The connection task shared by the inbound client and the outbound session.
//!
//! One task owns the socket. It never stops reading: replies are matched to commands strictly
//! in order through a FIFO of oneshot senders, events go to an unbounded channel whose length
//! is counted (too many unread events close the connection instead of blocking replies), and
//! BACKGROUND_JOB / CHANNEL_EXECUTE_COMPLETE are matched to their waiters here, so a caller
//! that reads no events still gets its results.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::Stream;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::codec::{Encoder, FramedRead};

use super::codec::{Command, EslCodec};
use super::error::ClientError;
pub use super::error::CloseReason;
use super::frame::{DisconnectNotice, Event, Message};

/// Bytes one read may take: a few whole events (FreeSWITCH's are 2-10 KB).
const READ_CHUNK: usize = 64 * 1024;

thread_local! {
    /// Where connections read into, one buffer per thread: the frames in it are decoded in
    /// place, and only a frame cut off by the end of a read is kept, by its connection. An
    /// idle connection (most of them, most of the time: a fax takes minutes) holds no read
    /// buffer; with one each, 1,000 calls held 13 MiB of them.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// An item on an [`EventStream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionItem {
    /// An event (plain or JSON).
    Event(Event),
    /// A `text/disconnect-notice` (linger or disconnect).
    Disconnect(DisconnectNotice),
}

/// State shared between the task and its handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) peer: String,
    closed: Mutex<Option<CloseReason>>,
    /// FreeSWITCH said the outbound channel is gone (its CHANNEL_HANGUP or
    /// CHANNEL_HANGUP_COMPLETE, or a disconnect notice): no application will run any more.
    channel_gone: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub(crate) fn reason(&self) -> CloseReason {
        self.closed
            .lock()
            .map(|g| g.clone())
            .unwrap_or(None)
            .unwrap_or(CloseReason::PeerClosed)
    }

    /// Whether FreeSWITCH has said the outbound channel is gone.
    pub(crate) fn channel_gone(&self) -> bool {
        self.channel_gone.load(Ordering::Acquire)
    }

    fn is_closed(&self) -> bool {
        self.closed.lock().map(|g| g.is_some()).unwrap_or(true)
    }

    /// Why the connection closed, once it has.
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.is_closed().then(|| self.reason())
    }

    fn set_reason(&self, reason: CloseReason) {
        if let Ok(mut g) = self.closed.lock() {
            g.get_or_insert(reason);
        }
    }

    pub(crate) fn closed_error(&self) -> ClientError {
        ClientError::Closed {
            peer: self.peer.clone(),
            reason: self.reason(),
        }
    }
}

/// Events and disconnect notices of one connection. Ends (`None`) when the connection closes;
/// [`EventStream::close_reason`] then says why.
#[derive(Debug)]
pub struct EventStream {
    // Boxed: a channel allocates its slots 32 at a time, and 1,000 calls' idle slots of a
    // full item were 4 MiB of fsfaxd's memory.
    rx: mpsc::UnboundedReceiver<Box<SessionItem>>,
    queued: Arc<AtomicUsize>,
    shared: Arc<Shared>,
}

impl EventStream {
    /// Next item, or `None` once the connection is closed and every item was read.
    pub async fn recv(&mut self) -> Option<SessionItem> {
        let item = self.rx.recv().await;
        if item.is_some() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        item.map(|boxed| *boxed)
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        if self.shared.is_closed() {
            Some(self.shared.reason())
        } else {
            None
        }
    }

    /// The peer address, for log messages.
    pub fn peer(&self) -> &str {
        &self.shared.peer
    }
}

impl Stream for EventStream {
    type Item = SessionItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SessionItem>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(_)) = &polled {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        polled.map(|item| item.map(|boxed| *boxed))
    }
}

/// How a pending execute ended without its CHANNEL_EXECUTE_COMPLETE.
#[derive(Debug)]
pub(crate) enum ExecEnd {
    /// CHANNEL_HANGUP_COMPLETE or a disconnect notice: no more applications will complete.
    HungUp,
    /// The `sendmsg` was refused.
    Refused(String),
    /// The connection closed.
    Closed(ClientError),
}

pub(crate) type ReplyTx = oneshot::Sender<Result<Message, ClientError>>;
pub(crate) type JobTx = oneshot::Sender<Result<Event, ClientError>>;
pub(crate) type ExecTx = oneshot::Sender<Result<Event, ExecEnd>>;

/// A command for the task, with everything needed to route its results.
pub(crate) struct Request {
    pub(crate) cmd: Command,
    pub(crate) timeout: Duration,
    pub(crate) reply: ReplyTx,
    pub(crate) job: Option<JobTx>,
    pub(crate) exec: Option<ExecTx>,
}

/// Cheap cloneable sender side used by `InboundClient` and `OutboundSession`.
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    tx: mpsc::UnboundedSender<Box<Request>>,
    pub(crate) shared: Arc<Shared>,
}

impl Handle {
    /// Sends `req` and waits for its reply (the task enforces the timeout).
    pub(crate) async fn request(
        &self,
        cmd: Command,
        timeout: Duration,
        job: Option<JobTx>,
        exec: Option<ExecTx>,
    ) -> Result<Message, ClientError> {
        let (reply, rx) = oneshot::channel();
        let req = Box::new(Request {
            cmd,
            timeout,
            reply,
            job,
            exec,
        });
        if self.tx.send(req).is_err() {
            return Err(self.shared.closed_error());
        }
        match rx.await {
            Ok(result) => result,
            Err(_) => Err(self.shared.closed_error()),
        }
    }

    pub(crate) fn peer(&self) -> &str {
        &self.shared.peer
    }
}

/// Options of the task.
pub(crate) struct TaskOptions {
    pub(crate) event_queue_max: usize,
    /// The outbound channel: its CHANNEL_HANGUP_COMPLETE ends pending executes.
    pub(crate) channel_uuid: Option<String>,
    /// Commands already written on the socket before the task took it over, oldest first:
    /// their replies are the first ones the task reads.
    pub(crate) sent_ahead: Vec<SentAhead>,
}

/// A command written before the task took the connection over, and where its reply goes.
#[derive(Debug)]
pub(crate) struct SentAhead {
    pub(crate) label: String,
    /// When it was written: its reply is due `timeout` after that.
    pub(crate) sent: std::time::Instant,
    pub(crate) timeout: Duration,
    pub(crate) reply: ReplyTx,
}

/// Spawns the connection task; `reader` may already hold buffered bytes from the handshake
/// (whole frames too: events FreeSWITCH sent before we asked).
pub(crate) fn spawn(
    peer: String,
    reader: FramedRead<OwnedReadHalf, EslCodec>,
    writer: OwnedWriteHalf,
    mut opts: TaskOptions,
) -> (Handle, EventStream) {
    let pending = std::mem::take(&mut opts.sent_ahead)
        .into_iter()
        .map(|sent| Pending {
            label: sent.label,
            deadline: Instant::from_std(sent.sent) + sent.timeout,
            timeout: sent.timeout,
            reply: sent.reply,
            job: None,
            exec: None,
        })
        .collect();
    let shared = Arc::new(Shared {
        peer,
        closed: Mutex::new(None),
        channel_gone: std::sync::atomic::AtomicBool::new(false),
    });
    let (tx, req_rx) = mpsc::unbounded_channel();
    let (event_tx, event_rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let parts = reader.into_parts();
    let task = Task {
        shared: shared.clone(),
        read: parts.io,
        partial: parts.read_buf,
        writer,
        codec: parts.codec,
        out: BytesMut::new(),
        req_rx,
        events: event_tx,
        queued: queued.clone(),
        opts,
        pending,
        jobs: HashMap::new(),
        execs: HashMap::new(),
        handles_gone: false,
        events_gone: false,
        timed_out: None,
    };
    tokio::spawn(task.run());
    (
        Handle {
            tx,
            shared: shared.clone(),
        },
        EventStream {
            rx: event_rx,
            queued,
            shared,
        },
    )
}

struct Pending {
    label: String,
    deadline: Instant,
    timeout: Duration,
    reply: ReplyTx,
    job: Option<String>,
    exec: Option<String>,
}

struct Task {
    shared: Arc<Shared>,
    read: OwnedReadHalf,
    /// The start of a frame a read cut off (empty, without an allocation, between frames).
    partial: BytesMut,
    writer: OwnedWriteHalf,
    /// Decodes what comes in, encodes what goes out.
    codec: EslCodec,
    out: BytesMut,
    req_rx: mpsc::UnboundedReceiver<Box<Request>>,
    events: mpsc::UnboundedSender<Box<SessionItem>>,
    queued: Arc<AtomicUsize>,
    opts: TaskOptions,
    pending: VecDeque<Pending>,
    jobs: HashMap<String, JobTx>,
    execs: HashMap<String, ExecTx>,
    handles_gone: bool,
    events_gone: bool,
    timed_out: Option<usize>,
}

impl Task {
    async fn run(mut self) {
        if let Err(reason) = self.decode_partial() {
            self.shutdown(reason);
            return;
        }
        let reason = loop {
            if self.handles_gone && self.events_gone && self.pending.is_empty() {
                break CloseReason::Dropped;
            }
            let deadline = self.pending.iter().map(|p| p.deadline).min();
            tokio::select! {
                read = std::future::poll_fn(|cx| poll_read(&mut self.read, &mut self.partial, cx)) => {
                    if let Err(reason) = self.on_read(read) {
                        break reason;
                    }
                }
                req = self.req_rx.recv(), if !self.handles_gone => match req {
                    Some(req) => {
                        self.on_request(*req);
                        // Whatever else is queued goes out in the same write: commands sent
                        // together reach FreeSWITCH in one segment.
                        while let Ok(req) = self.req_rx.try_recv() {
                            self.on_request(*req);
                        }
                    }
                    None => self.handles_gone = true,
                },
                written = self.writer.write_buf(&mut self.out), if !self.out.is_empty() => {
                    match written {
                        Ok(0) => break CloseReason::PeerClosed,
                        Ok(_) => {}
                        Err(e) => break CloseReason::Io(e.to_string()),
                    }
                }
                () = sleep_until_opt(deadline), if deadline.is_some() => {
                    if let Some((index, reason)) = self.expired() {
                        self.timed_out = Some(index);
                        break reason;
                    }
                }
                () = self.events.closed(), if !self.events_gone => self.events_gone = true,
            }
        };
        self.shutdown(reason);
    }

    /// Handles what one read brought: the whole frames in it, and keeps a frame it cut off.
    fn on_read(&mut self, read: std::io::Result<Read>) -> Result<(), CloseReason> {
        match read {
            Ok(Read::Eof) => {
                self.codec
                    .check_eof(&self.partial)
                    .map_err(|e| CloseReason::Protocol(e.to_string()))?;
                Err(CloseReason::PeerClosed)
            }
            Ok(Read::Scratch(n)) => self.decode_scratch(n),
            Ok(Read::Partial) => self.decode_partial(),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(CloseReason::Io(e.to_string())),
        }
    }

    /// Between frames: handles the whole frames among the `n` bytes just read into the
    /// thread's buffer and keeps the rest.
    fn decode_scratch(&mut self, n: usize) -> Result<(), CloseReason> {
        SCRATCH.with_borrow(|scratch| {
            let got = &scratch[..n];
            let mut used = 0;
            while used < n {
                match self.codec.decode_slice(&got[used..]) {
                    Ok(Some((msg, len))) => {
                        used += len;
                        self.on_message(msg)?;
                    }
                    Ok(None) => break,
                    Err(e) => return Err(CloseReason::Protocol(e.to_string())),
                }
            }
            self.partial.extend_from_slice(&got[used..]);
            Ok(())
        })
    }

    /// Handles the whole frames at the start of `partial`; frees it once it is empty.
    fn decode_partial(&mut self) -> Result<(), CloseReason> {
        let mut used = 0;
        while used < self.partial.len() {
            match self.codec.decode_slice(&self.partial[used..]) {
                Ok(Some((msg, len))) => {
                    used += len;
                    self.on_message(msg)?;
                }
                Ok(None) => break,
                Err(e) => return Err(CloseReason::Protocol(e.to_string())),
            }
        }
        if used == self.partial.len() {
            self.partial = BytesMut::new();
        } else {
            bytes::Buf::advance(&mut self.partial, used);
        }
        Ok(())
    }

    fn on_request(&mut self, req: Request) {
        let label = req.cmd.label().to_owned();
        tracing::debug!(peer = %self.shared.peer, command = %label, "ESL send");
        if let Err(e) = self.codec.encode(&req.cmd, &mut self.out) {
            let _ = req.reply.send(Err(ClientError::Closed {
                peer: self.shared.peer.clone(),
                reason: CloseReason::Io(e.to_string()),
            }));
            return;
        }
        let job = match (req.cmd.job_uuid(), req.job) {
            (Some(id), Some(tx)) => {
                self.jobs.insert(id.to_owned(), tx);
                Some(id.to_owned())
            }
            _ => None,
        };
        let exec = match (req.cmd.event_uuid(), req.exec) {
            // Sent after the channel went: it gets its `+OK`, but never a completion (capture
            // outbound-caller-cancels-during-screening). Fail it now.
            (Some(_), Some(tx)) if self.shared.channel_gone.load(Ordering::Acquire) => {
                let _ = tx.send(Err(ExecEnd::HungUp));
                None
            }
            (Some(id), Some(tx)) => {
                self.execs.insert(id.to_owned(), tx);
                Some(id.to_owned())
            }
            _ => None,
        };
        self.pending.push_back(Pending {
            label,
            deadline: Instant::now() + req.timeout,
            timeout: req.timeout,
            reply: req.reply,
            job,
            exec,
        });
    }

    fn on_message(&mut self, msg: Message) -> Result<(), CloseReason> {
        match msg {
            Message::CommandReply(_) | Message::ApiResponse(_) => self.on_reply(msg),
            Message::Event(event) => self.on_event(event),
            Message::DisconnectNotice(notice) => {
                tracing::debug!(peer = %self.shared.peer, disposition = ?notice.disposition(), "ESL disconnect notice");
                self.channel_went();
                self.deliver(SessionItem::Disconnect(notice))
            }
            Message::RudeRejection(frame) => Err(CloseReason::Protocol(format!(
                "rude rejection: {}",
                frame.body_str().trim()
            ))),
            Message::AuthRequest => {
                tracing::warn!(peer = %self.shared.peer, "ignoring unexpected ESL auth/request");
                Ok(())
            }
            Message::Log(frame) => {
                tracing::debug!(peer = %self.shared.peer, log = %frame.body_str().trim_end(), "ESL log data");
                Ok(())
            }
            Message::Unknown { content_type, .. } => {
                tracing::warn!(peer = %self.shared.peer, %content_type, "skipping ESL message of unknown type");
                Ok(())
            }
        }
    }

    fn on_reply(&mut self, msg: Message) -> Result<(), CloseReason> {
        let Some(p) = self.pending.pop_front() else {
            return Err(CloseReason::Protocol(format!(
                "reply with no command waiting: {}",
                reply_summary(&msg)
            )));
        };
        let refused = match &msg {
            Message::CommandReply(r) => !r.is_ok(),
            _ => false,
        };
        if refused {
            let text = reply_summary(&msg);
            if let Some(job) = p.job.and_then(|id| self.jobs.remove(&id)) {
                let _ = job.send(Err(ClientError::CommandFailed {
                    peer: self.shared.peer.clone(),
                    command: p.label.clone(),
                    reply: text.clone(),
                }));
            }
            if let Some(exec) = p.exec.and_then(|id| self.execs.remove(&id)) {
                let _ = exec.send(Err(ExecEnd::Refused(text)));
            }
        }
        // A caller that gave up has dropped its receiver; the reply is still consumed in order.
        let _ = p.reply.send(Ok(msg));
        Ok(())
    }

    fn on_event(&mut self, event: Event) -> Result<(), CloseReason> {
        match event.name() {
            Some("BACKGROUND_JOB") => {
                if let Some(tx) = event.job_uuid().and_then(|id| self.jobs.remove(id)) {
                    // Consumed: the waiter is the only one interested in its own job.
                    let _ = tx.send(Ok(event));
                    return Ok(());
                }
            }
            Some("CHANNEL_EXECUTE_COMPLETE") => {
                if let Some(tx) = event
                    .get("Application-UUID")
                    .and_then(|id| self.execs.remove(id))
                {
                    // Nobody waits for a `set` queued ahead of rxfax: no copy of its event.
                    if !tx.is_closed() {
                        let _ = tx.send(Ok(event.clone()));
                    }
                }
            }
            Some("CHANNEL_HANGUP_COMPLETE") if self.ours(&event) => self.channel_went(),
            // The running application may still complete (its CHANNEL_EXECUTE_COMPLETE
            // follows the hangup); nothing sent from now on will run.
            Some("CHANNEL_HANGUP") if self.ours(&event) && self.opts.channel_uuid.is_some() => {
                self.shared.channel_gone.store(true, Ordering::Release);
            }
            _ => {}
        }
        self.deliver(SessionItem::Event(event))
    }

    fn deliver(&mut self, item: SessionItem) -> Result<(), CloseReason> {
        if self.events_gone {
            return Ok(());
        }
        let queued = self.queued.fetch_add(1, Ordering::AcqRel) + 1;
        if queued > self.opts.event_queue_max {
            return Err(CloseReason::EventQueueOverflow {
                max: self.opts.event_queue_max,
            });
        }
        if self.events.send(Box::new(item)).is_err() {
            self.events_gone = true;
        }
        Ok(())
    }

    /// Whether `event` is about this connection's outbound channel (any channel on a client).
    fn ours(&self, event: &Event) -> bool {
        match &self.opts.channel_uuid {
            Some(uuid) => event.unique_id() == Some(uuid.as_str()),
            None => true,
        }
    }

    /// The channel is gone: every pending execute fails now, and every later one at once.
    fn channel_went(&mut self) {
        self.shared.channel_gone.store(true, Ordering::Release);
        self.end_execs(|| ExecEnd::HungUp);
    }

    fn end_execs(&mut self, why: impl Fn() -> ExecEnd) {
        for (_, tx) in self.execs.drain() {
            let _ = tx.send(Err(why()));
        }
    }

    /// The first pending command whose deadline passed closes the connection.
    fn expired(&self) -> Option<(usize, CloseReason)> {
        let now = Instant::now();
        let index = self.pending.iter().position(|p| p.deadline <= now)?;
        let p = &self.pending[index];
        let reason = CloseReason::CommandTimeout {
            command: p.label.clone(),
            after: p.timeout,
        };
        Some((index, reason))
    }

    fn shutdown(mut self, reason: CloseReason) {
        if matches!(reason, CloseReason::CommandTimeout { .. }) {
            crate::ops::metrics::metrics().esl_command_timeouts.inc();
        }
        match &reason {
            CloseReason::PeerClosed | CloseReason::Dropped => {
                tracing::debug!(peer = %self.shared.peer, %reason, "ESL connection closed")
            }
            _ => tracing::warn!(peer = %self.shared.peer, %reason, "ESL connection closed"),
        }
        self.shared.set_reason(reason.clone());
        let peer = self.shared.peer.clone();
        let closed = || ClientError::Closed {
            peer: peer.clone(),
            reason: reason.clone(),
        };
        for (index, p) in self.pending.drain(..).enumerate() {
            let err = if self.timed_out == Some(index) {
                ClientError::Timeout {
                    peer: peer.clone(),
                    command: p.label.clone(),
                    after: p.timeout,
                }
            } else {
                closed()
            };
            let _ = p.reply.send(Err(err));
        }
        self.req_rx.close();
        while let Ok(req) = self.req_rx.try_recv() {
            let _ = req.reply.send(Err(closed()));
        }
        for (_, tx) in self.jobs.drain() {
            let _ = tx.send(Err(closed()));
        }
        for (_, tx) in self.execs.drain() {
            let _ = tx.send(Err(ExecEnd::Closed(closed())));
        }
        // Dropping the task drops the event sender (the stream ends) and both socket halves.
    }
}

/// What one read brought.
enum Read {
    /// The peer closed its side.
    Eof,
    /// This many bytes, at the start of the thread's [`SCRATCH`] buffer (there was no frame
    /// cut off to read onto). They are decoded before the task yields, so no other connection
    /// of the thread reads over them.
    Scratch(usize),
    /// More bytes, appended to the cut-off frame in `partial`.
    Partial,
}

/// One read from the socket: into the thread's buffer between frames, onto `partial` inside
/// one. tokio's `poll_read` takes a short read as "nothing left" and waits for the next
/// readiness event instead of asking the socket again (which would only say `EAGAIN`).
fn poll_read(
    read: &mut OwnedReadHalf,
    partial: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<Read>> {
    use tokio::io::{AsyncRead, ReadBuf};
    if partial.is_empty() {
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < READ_CHUNK {
                scratch.resize(READ_CHUNK, 0);
            }
            let mut buf = ReadBuf::new(scratch);
            match Pin::new(read).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(match buf.filled().len() {
                    0 => Read::Eof,
                    n => Read::Scratch(n),
                })),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    } else {
        partial.reserve(READ_CHUNK / 2);
        match tokio_util::io::poll_read_buf(Pin::new(read), cx, partial) {
            Poll::Ready(Ok(0)) => Poll::Ready(Ok(Read::Eof)),
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(Read::Partial)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn reply_summary(msg: &Message) -> String {
    match msg {
        Message::CommandReply(r) => r.text().to_owned(),
        Message::ApiResponse(body) => body.trim_end().to_owned(),
        other => format!("{other:?}"),
    }
}
