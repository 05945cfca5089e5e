//! Outbound mode: FreeSWITCH's `socket <addr> async full` connecting to fsfaxd's listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::capture::{Capture, Event, Message, url_decode, url_encode};
use super::db::FakeDb;
use super::inbound::{MYEVENTS, Subs, SwitchHandle, stamp};
use super::plan::{CallValues, FaxOutcome, SourceInfo, apply_fax, render};
use super::scripts::T38;
use super::tiff;
use super::wire::{self, ClientCommand, CommandReader};

/// What the calling fax machine does once `rxfax` runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RxScript {
    /// A complete fax of `pages` pages; a TIFF with that many pages is written at the rxfax path.
    RxOk {
        /// Pages sent (1..=12 give a real TIFF of that many pages).
        pages: u32,
        /// `fax-t38-status` reported.
        t38: T38,
    },
    /// The sender hangs up after `after_pages` pages: CHANNEL_HANGUP, then rxfaxresult code 49
    /// with those pages (capture `outbound-rxfax-t38-sender-hangup-linger-all-events`). A TIFF
    /// with the pages received is left; with 0 pages FreeSWITCH deletes it.
    SenderHangsUpMidFax {
        /// Pages received before the hangup.
        after_pages: u32,
    },
    /// The T.38 link goes bad: after `after_pages` pages the receiver retrains (a second
    /// rxfaxnegociateresult), then the sender gives up and hangs up as in
    /// [`RxScript::SenderHangsUpMidFax`] (code 49, T.38 negotiated, two negotiation events).
    RetrainThenHangUp {
        /// Pages received before the retrain.
        after_pages: u32,
    },
    /// Nobody sends a fax: rxfaxresult code 3 after a delay, no TIFF
    /// (capture `outbound-rxfax-no-fax-sender`).
    NoFaxSender,
    /// The caller hangs up soon after the answer: code 49, 0 pages, `refused`, no TIFF
    /// (capture `outbound-rxfax-sender-hangup-after-answer`).
    SenderHangsUpAfterAnswer,
    /// FreeSWITCH dies after `after_pages` pages: the socket closes with no notice.
    Vanish {
        /// Pages sent before the socket closes.
        after_pages: u32,
    },
    /// T.38 hang: all pages and the rxfaxresult arrive, but rxfax never returns and the call
    /// never hangs up until the client hangs up (hangup sendmsg / uuid_kill) or closes.
    T38Hang {
        /// Pages reported.
        pages: u32,
    },
}

/// How FreeSWITCH answers the `connect` command of an outbound socket.
#[derive(Clone, Debug)]
pub struct CallSetup {
    /// Caller number (`Channel-Caller-ID-Number`), default `4711`.
    pub caller_number: String,
    /// Caller name (`Channel-Caller-ID-Name`), default `sender`.
    pub caller_name: String,
    /// Called number (`variable_sip_to_user`, `Channel-Destination-Number`), default `5000`.
    pub to_user: String,
    /// Raw SIP Diversion header (`variable_sip_h_Diversion`), e.g. `<sip:1234@host>;reason=unconditional`.
    pub diversion: Option<String>,
    /// Gateway the call came from (`variable_sip_gateway`, `variable_sip_gateway_name`).
    pub gateway: Option<String>,
    /// Channel UUID (random by default).
    pub uuid: String,
    /// `Socket-Mode` header of the connect reply (`async`; `static` to test refusal).
    pub socket_mode: String,
    /// Whether the connect reply carries `Control: full`.
    pub control_full: bool,
    /// What the sender does.
    pub script: RxScript,
    /// Capture milliseconds (and sleep/playback durations) are multiplied by this. Default 0.001.
    pub time_scale: f64,
    /// mod_db answering `api db ...` on this socket (share a [`FakeDb`] with a `FakeFs`).
    pub db: FakeDb,
    /// `fax-remote-station-id` (the sender's TSI), default `+1 337`.
    pub remote_station_id: String,
    /// FreeSWITCH vanishes (socket closed, no notice) right after replying to the n-th command
    /// (1 = `connect`). `None` (default): never.
    pub vanish_after_command: Option<usize>,
    /// Raw bytes written unprompted right after replying to the n-th command (e.g. a
    /// malformed frame). `None` (default): nothing.
    pub inject_after_command: Option<(usize, Vec<u8>)>,
    /// The sender stands still inside rxfax after this many pages (0: right after the answer,
    /// before negotiation) until the call is hung up, killed or vanishes, or the test calls
    /// [`FakeCall::resume`]: a test can act "mid-fax" without racing the fake's clock.
    /// `None` (default): never.
    pub stall_after_pages: Option<u32>,
    /// `fax-bad-rows` reported on every page (the captures' 0 by default): a damaged image,
    /// which the T.38 fallback memory counts as T.38 trouble.
    pub bad_rows: u32,
    /// The switch this channel belongs to (see [`SwitchHandle`]): every event it fires is
    /// also published there, `uuid_exists`/`uuid_kill` on that switch know it, and when the
    /// outbound socket dies the channel goes on (rxfax, then the applications queued behind
    /// it), as on a real switch. `None` (default): the channel ends with its socket.
    pub switch: Option<SwitchHandle>,
    /// The received TIFF carries what spandsp writes: the remote ident in ImageDescription,
    /// the DCS in FaxDcs, FaxRecvTime and each page's PageNumber total (see
    /// [`tiff::write_received_spandsp`]). Default `false`: the fixture pages as they are.
    pub spandsp_tiff: bool,
}

impl Default for CallSetup {
    fn default() -> Self {
        CallSetup {
            caller_number: "4711".into(),
            caller_name: "sender".into(),
            to_user: "5000".into(),
            diversion: None,
            gateway: None,
            uuid: uuid::Uuid::new_v4().to_string(),
            socket_mode: "async".into(),
            control_full: true,
            script: RxScript::RxOk {
                pages: 3,
                t38: T38::Negotiated,
            },
            time_scale: 0.001,
            db: FakeDb::default(),
            remote_station_id: "+1 337".into(),
            vanish_after_command: None,
            inject_after_command: None,
            stall_after_pages: None,
            bad_rows: 0,
            switch: None,
            spandsp_tiff: false,
        }
    }
}

/// What the fake recorded about an outbound call.
#[derive(Clone, Debug, Default)]
pub struct CallLog {
    /// Commands the client sent, in order.
    pub commands: Vec<ClientCommand>,
    /// Every byte the client sent.
    pub raw_in: Vec<u8>,
    /// Every byte the fake sent.
    pub raw_out: Vec<u8>,
    /// Applications executed (started), in order: (name, argument).
    pub executed: Vec<(String, String)>,
    /// Variables set with the `set` app, in order.
    pub vars: Vec<(String, String)>,
    /// Every event the channel fired (before subscription filtering).
    pub fired: Vec<Event>,
    /// Events actually delivered to the client.
    pub delivered: Vec<Event>,
    /// Whether `linger` was requested.
    pub linger: bool,
    /// `linger`'s argument (seconds; `-1` without one), as the linger notice reports it.
    pub linger_time: String,
    /// Whether the connection has ended, and who closed it.
    pub finished: bool,
    /// `true` if the client closed first (EOF seen by the fake).
    pub client_closed: bool,
    /// The rxfax path, if rxfax ran.
    pub rxfax_path: Option<PathBuf>,
    /// The channel has ended (with [`CallSetup::switch`] it may outlive the connection).
    pub channel_ended: bool,
}

enum Ctl {
    Hangup(String),
    Vanish,
    /// Ends a [`CallSetup::stall_after_pages`] stall; ignored anywhere else.
    Resume,
    /// The linger ended (handled by the connection, not the channel).
    LingerExpires,
}

enum Out {
    Ev(Event),
    Raw(Vec<u8>),
    Close,
}

/// A fake FreeSWITCH channel connecting to an outbound-socket listener (fsfaxd).
///
/// `connect` dials `addr`, waits for `connect`, replies with channel data shaped like the
/// real connect reply, then answers `linger`, `filter`, `event`, `myevents`, `api` and each
/// `sendmsg` at once, and runs the applications in order emitting the captured event
/// sequences. Dropping the handle closes everything.
pub struct FakeCall {
    log: Arc<Mutex<CallLog>>,
    ctl: mpsc::UnboundedSender<Ctl>,
    cancel: CancellationToken,
    uuid: String,
}

impl Drop for FakeCall {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl FakeCall {
    /// Connects to `addr` and starts the session task. Fails if the TCP connect fails.
    pub async fn connect(addr: SocketAddr, setup: CallSetup) -> std::io::Result<FakeCall> {
        // A switch's calls come from its address (a second node on 127.0.0.2, say).
        let stream = match setup.switch.as_ref().map(SwitchHandle::ip) {
            Some(ip) if !ip.is_unspecified() => {
                let socket = match ip {
                    std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                    std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                };
                socket.bind((ip, 0).into())?;
                socket.connect(addr).await?
            }
            _ => TcpStream::connect(addr).await?,
        };
        let _ = stream.set_nodelay(true);
        let log = Arc::new(Mutex::new(CallLog::default()));
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let uuid = setup.uuid.clone();
        tokio::spawn(run(stream, setup, log.clone(), ctl_rx, cancel.clone()));
        Ok(FakeCall {
            log,
            ctl: ctl_tx,
            cancel,
            uuid,
        })
    }

    /// The channel UUID.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// A snapshot of everything recorded so far.
    pub fn log(&self) -> CallLog {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// First lines of the commands received (`connect`, `linger`, `sendmsg`, ...).
    pub fn command_lines(&self) -> Vec<String> {
        self.log().commands.iter().map(|c| c.line.clone()).collect()
    }

    /// Applications executed, in order.
    pub fn executed(&self) -> Vec<(String, String)> {
        self.log().executed
    }

    /// The far end hangs up now (NORMAL_CLEARING), as a caller hanging up would.
    pub fn hangup(&self) {
        let _ = self.ctl.send(Ctl::Hangup("NORMAL_CLEARING".into()));
    }

    /// The caller gives up before the call was answered (SIP CANCEL): CHANNEL_HANGUP,
    /// the `socket` app's CHANNEL_EXECUTE_COMPLETE, CHANNEL_CALLSTATE HANGUP and
    /// CHANNEL_HANGUP_COMPLETE with `ORIGINATOR_CANCEL`, then the linger notice, as in capture
    /// `outbound-caller-cancels-during-screening`. An `execute` after it gets `+OK` and never
    /// completes. On an answered call this is a hangup with that cause.
    pub fn cancel(&self) {
        let _ = self.ctl.send(Ctl::Hangup(CANCEL_CAUSE.into()));
    }

    /// The linger time of a hung-up call passes now: the disconnect notice the switch sends
    /// then, and the socket closes (capture `outbound-caller-cancels-during-screening`, +32 s).
    /// The fake never ends a linger on its own, so a test sees who ended the call.
    pub fn linger_expires(&self) {
        let _ = self.ctl.send(Ctl::LingerExpires);
    }

    /// The sender goes on after a [`CallSetup::stall_after_pages`] stall.
    pub fn resume(&self) {
        let _ = self.ctl.send(Ctl::Resume);
    }

    /// FreeSWITCH vanishes now: the socket is closed with no notice.
    pub fn vanish(&self) {
        let _ = self.ctl.send(Ctl::Vanish);
    }

    /// Whether the connection has ended (either side), without copying the log (a load run
    /// asks this of a thousand calls).
    pub fn finished(&self) -> bool {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).finished
    }

    /// Whether `rxfax` has started, without copying the log.
    pub fn in_rxfax(&self) -> bool {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rxfax_path
            .is_some()
    }

    /// Waits until the connection has ended (either side), up to `timeout`.
    pub async fn wait_finished(&self, timeout: Duration) -> bool {
        self.wait_for(timeout, |l| l.finished).await
    }

    /// Polls the log every 5 ms until `pred` holds or `timeout` passes.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&CallLog) -> bool) -> bool {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            if pred(&self.log()) {
                return true;
            }
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Templates from the outbound captures, rendered for this call.
struct Tpl {
    cv: CallValues,
}

const ALL_OK: &str = "outbound-rxfax-t38-ok-all-events";
const HUP_MID: &str = "outbound-rxfax-t38-sender-hangup-linger-all-events";
const RESPOND: &str = "outbound-reject-respond-404-linger-all-events";
const MYEV: &str = "outbound-rxfax-t38-ok-myevents";
const NOFAX: &str = "outbound-rxfax-no-fax-sender";
const HUP_ANS: &str = "outbound-rxfax-sender-hangup-after-answer";
const CANCEL: &str = "outbound-caller-cancels-during-screening";
const CANCEL_CAUSE: &str = "ORIGINATOR_CANCEL";

fn outbound_source(cap: &Capture) -> SourceInfo {
    let connect = cap
        .messages_ref()
        .iter()
        .map(|(_, m)| m)
        .find(|m| m.get("Event-Name") == Some("CHANNEL_DATA"));
    let g = |k: &str| {
        connect
            .as_ref()
            .and_then(|m| m.get(k))
            .map(url_decode)
            .unwrap_or_default()
    };
    let file = cap
        .records
        .iter()
        .filter(|r| r.to_fs)
        .find_map(|r| {
            let s = String::from_utf8_lossy(&r.bytes);
            if s.contains("execute-app-name: rxfax") {
                s.lines()
                    .find_map(|l| l.strip_prefix("execute-app-arg: ").map(str::to_string))
            } else {
                None
            }
        })
        .unwrap_or_default();
    SourceInfo {
        uuid: g("Unique-ID"),
        number: g("Channel-Destination-Number"),
        cid_num: g("Channel-Caller-ID-Number"),
        cid_name: g("Channel-Caller-ID-Name"),
        file,
        first_ts_us: g("Event-Date-Timestamp").parse().unwrap_or(0),
        ..SourceInfo::default()
    }
}

impl Tpl {
    /// The n-th event of capture `cap` matching `pred`, rendered for this call.
    fn nth(&self, cap: &str, n: usize, pred: impl Fn(&Event) -> bool) -> Event {
        let c = Capture::load(cap);
        let src = outbound_source(&c);
        let ev = c
            .events_ref()
            .iter()
            .map(|(_, e)| e)
            .filter(|e| e.uuid() == Some(src.uuid.as_str()) && pred(e))
            .nth(n)
            .unwrap_or_else(|| panic!("fakefs: no such event template in {cap}"));
        render(&src, ev, &self.cv)
    }
    fn ev(&self, cap: &str, name: &str) -> Event {
        self.nth(cap, 0, |e| e.name() == name)
    }
    fn app(&self, cap: &str, name: &str, app: &str) -> Event {
        self.nth(cap, 0, |e| {
            e.name() == name && e.get("Application") == Some(app)
        })
    }
    fn custom(&self, cap: &str, sub: &str, n: usize) -> Event {
        self.nth(cap, n, |e| e.name() == "CUSTOM" && e.subclass() == sub)
    }
    fn state(&self, cap: &str, state: &str) -> Event {
        self.nth(cap, 0, |e| {
            e.name() == "CHANNEL_STATE" && e.get("Channel-State") == Some(state)
        })
    }
    fn callstate(&self, cap: &str, to: &str) -> Event {
        self.nth(cap, 0, |e| {
            e.name() == "CHANNEL_CALLSTATE" && e.get("Channel-Call-State") == Some(to)
        })
    }
}

/// The connect reply: the captured CHANNEL_DATA header set with this call's values.
fn connect_reply(setup: &CallSetup, cv: &CallValues) -> Vec<u8> {
    let cap = Capture::load("outbound-rxfax-t38-ok");
    let src = outbound_source(&cap);
    let msg: Message = cap
        .messages_from_fs()
        .into_iter()
        .map(|(_, m)| m)
        .find(|m| m.get("Event-Name") == Some("CHANNEL_DATA"))
        .expect("fakefs: connect reply in outbound-rxfax-t38-ok");
    let mut ev = render(
        &src,
        &Event {
            headers: msg.headers.clone(),
            body: None,
        },
        cv,
    );
    stamp(&mut ev, 560);
    if let Some(gw) = &setup.gateway {
        ev.insert_after(
            "variable_recovery_profile_name",
            "variable_sip_gateway_name",
            &url_encode(gw),
        );
        ev.insert_after(
            "variable_recovery_profile_name",
            "variable_sip_gateway",
            &url_encode(gw),
        );
    }
    if let Some(d) = &setup.diversion {
        ev.insert_after(
            "variable_sip_req_host",
            "variable_sip_h_Diversion",
            &url_encode(d),
        );
    }
    ev.set("Socket-Mode", &setup.socket_mode);
    if !setup.control_full {
        ev.remove("Control");
    }
    let mut out = Vec::new();
    for (k, v) in &ev.headers {
        out.extend_from_slice(format!("{k}: {v}\n").as_bytes());
    }
    out.push(b'\n');
    out
}

struct Chan {
    tpl: Tpl,
    setup: CallSetup,
    log: Arc<Mutex<CallLog>>,
    out: mpsc::UnboundedSender<Out>,
    apps_done: usize,
    answered: bool,
    hung_up: bool,
    myevents: Arc<Mutex<bool>>,
    so_far: u32,
    /// When `answer` ran (µs since the epoch; 0 before): every later event carries it as
    /// `Caller-Channel-Answered-Time`, as FreeSWITCH's caller profile does. The templates'
    /// own value is the capture's, which a time scale below 1 would put after the hangup.
    answered_us: i64,
    outcome: FaxOutcome,
    /// The outbound socket is gone; the channel goes on (a switch-linked call only).
    socket_gone: Arc<std::sync::atomic::AtomicBool>,
}

fn scaled(setup: &CallSetup, ms: u64) -> Duration {
    Duration::from_micros((ms as f64 * setup.time_scale.max(0.0) * 1000.0) as u64)
}

struct App {
    name: String,
    arg: String,
    app_uuid: String,
    cmd: ClientCommand,
}

impl Chan {
    fn fire(&mut self, mut ev: Event) {
        ev.set(
            "Caller-Channel-Answered-Time",
            &self.answered_us.to_string(),
        );
        let remote = self.setup.remote_station_id.clone();
        if ev.name() == "CUSTOM"
            || ev.get("variable_fax_result_code").is_some()
            || ev.get("variable_fax_t38_status").is_some()
        {
            let local = self
                .log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .vars
                .iter()
                .rev()
                .find(|(k, _)| k == "fax_ident")
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| "SpanDSP Fax Ident".into());
            apply_fax(
                &mut ev,
                &self.outcome,
                self.so_far,
                self.so_far.max(self.outcome.transferred),
                &local,
                &remote,
            );
        }
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fired
            .push(ev.clone());
        if let Some(switch) = &self.setup.switch {
            switch.publish(ev.clone());
        }
        let _ = self.out.send(Out::Ev(ev));
    }

    /// Whether the channel's events go on after its hangup: `linger`, or the socket is
    /// already gone (the switch fires them for its inbound listeners whatever the socket).
    fn linger(&self) -> bool {
        self.socket_gone.load(std::sync::atomic::Ordering::Acquire)
            || self.log.lock().unwrap_or_else(|e| e.into_inner()).linger
    }

    fn write_tiff(&self, path: &std::path::Path, pages: usize) {
        // The switch writes where it sees the spool; a path it cannot see fails (nothing).
        let local = match &self.setup.switch {
            Some(switch) => switch.local_path(&path.to_string_lossy()),
            None => Some(path.to_path_buf()),
        };
        let Some(path) = local else {
            return;
        };
        let path = path.as_path();
        let _ = if self.setup.spandsp_tiff {
            tiff::write_received_spandsp(path, pages, &self.setup.remote_station_id)
        } else {
            tiff::write_received(path, pages)
        };
    }

    fn exec_event(&self, name: &str, app: &App, response: Option<&str>) -> Event {
        let cap_app = match app.name.as_str() {
            "answer" | "playback" | "set" | "rxfax" | "hangup" => Some(ALL_OK),
            "respond" => Some(RESPOND),
            "ring_ready" | "sleep" => Some(MYEV),
            _ => None,
        };
        let mut ev = match cap_app {
            Some(c) => self.tpl.app(c, name, &app.name),
            None => self.tpl.app(ALL_OK, name, "set"),
        };
        ev.set("Application", &url_encode(&app.name));
        ev.set("Application-Data", &url_encode(&app.arg));
        ev.set("Application-UUID", &url_encode(&app.app_uuid));
        ev.set("variable_current_application", &url_encode(&app.name));
        ev.set("variable_current_application_data", &url_encode(&app.arg));
        if let Some(r) = response {
            ev.set("Application-Response", &url_encode(r));
        }
        ev
    }

    fn private_command(&self, app: &App) -> Event {
        let mut ev = self.tpl.ev(ALL_OK, "PRIVATE_COMMAND");
        let start = ev
            .headers
            .iter()
            .position(|(k, _)| k == "Event-Name")
            .unwrap_or(0);
        ev.headers.drain(..start);
        let mut pre = vec![(
            "Command".to_string(),
            url_encode(&String::from_utf8_lossy(&app.cmd.raw)),
        )];
        for (k, v) in &app.cmd.headers {
            pre.push((k.clone(), url_encode(v)));
        }
        pre.extend(ev.headers);
        ev.headers = pre;
        ev
    }

    async fn sleep(&self, ms: u64) {
        tokio::time::sleep(scaled(&self.setup, ms)).await;
    }

    /// Runs one app; returns false once the channel is gone.
    async fn run_app(
        &mut self,
        app: App,
        queue: &mut mpsc::UnboundedReceiver<App>,
        ctl: &mut mpsc::UnboundedReceiver<Ctl>,
    ) -> bool {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .executed
            .push((app.name.clone(), app.arg.clone()));
        self.fire(self.exec_event("CHANNEL_EXECUTE", &app, None));
        let mut response = "_none_".to_string();
        match app.name.as_str() {
            "answer" | "pre_answer" if !self.answered => {
                self.answered = true;
                self.answered_us = chrono::Utc::now().timestamp_micros();
                self.fire(self.tpl.ev(ALL_OK, "CHANNEL_ANSWER"));
                self.fire(self.tpl.callstate(ALL_OK, "ACTIVE"));
            }
            "ring_ready" => self.fire(self.tpl.ev(MYEV, "CHANNEL_PROGRESS")),
            "sleep" => self.sleep(app.arg.trim().parse().unwrap_or(0)).await,
            "playback" => {
                self.fire(self.tpl.ev(ALL_OK, "PLAYBACK_START"));
                let ms = app
                    .arg
                    .strip_prefix("silence_stream://")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1000);
                self.sleep(ms).await;
                self.fire(self.tpl.ev(ALL_OK, "PLAYBACK_STOP"));
                response = "FILE PLAYED".into();
            }
            "set" => {
                let (k, v) = app.arg.split_once('=').unwrap_or((&app.arg, ""));
                self.log
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .vars
                    .push((k.to_string(), v.to_string()));
            }
            "respond" => {
                let code: u32 = app
                    .arg
                    .split_whitespace()
                    .next()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                if code >= 300 {
                    let cause = match code {
                        404 => "UNALLOCATED_NUMBER",
                        486 => "USER_BUSY",
                        503 => "NORMAL_TEMPORARY_FAILURE",
                        480 => "NO_USER_RESPONSE",
                        _ => "CALL_REJECTED",
                    };
                    self.hangup_event(cause);
                    self.fire(self.exec_event("CHANNEL_EXECUTE_COMPLETE", &app, Some("_none_")));
                    self.teardown(cause, queue).await;
                    return false;
                }
            }
            "hangup" => {
                let cause = if app.arg.trim().is_empty() {
                    "NORMAL_CLEARING".to_string()
                } else {
                    app.arg.trim().to_string()
                };
                self.hangup_event(&cause);
                self.fire(self.exec_event("CHANNEL_EXECUTE_COMPLETE", &app, Some("_none_")));
                self.private_after(&app);
                self.teardown(&cause, queue).await;
                return false;
            }
            "rxfax" => return self.rxfax(app, queue, ctl).await,
            _ => {}
        }
        if self.hung_up {
            return false;
        }
        self.fire(self.exec_event("CHANNEL_EXECUTE_COMPLETE", &app, Some(&response)));
        self.private_after(&app);
        true
    }

    fn private_after(&mut self, app: &App) {
        // The captures show a PRIVATE_COMMAND after every app but the first.
        self.apps_done += 1;
        if self.apps_done > 1 {
            self.fire(self.private_command(app));
        }
    }

    /// Fires CHANNEL_HANGUP, or without linger sends only the disconnect notice and closes.
    fn hangup_event(&mut self, cause: &str) -> bool {
        self.hung_up = true;
        if !self.linger() {
            let _ = self
                .out
                .send(Out::Raw(wire::outbound_disconnect_notice(&self.setup.uuid)));
            let _ = self.out.send(Out::Close);
            return false;
        }
        let mut ev = self.tpl.ev(HUP_MID, "CHANNEL_HANGUP");
        replace_cause(&mut ev, cause);
        self.fire(ev);
        true
    }

    /// The caller cancelled before the answer (capture `CANCEL`): no app ever completes
    /// after this; the linger notice follows at once, the disconnect when the linger ends.
    async fn cancel_before_answer(&mut self) {
        self.hung_up = true;
        let linger_time = {
            let l = self.log.lock().unwrap_or_else(|e| e.into_inner());
            l.linger.then(|| l.linger_time.clone())
        };
        let Some(linger_time) = linger_time else {
            let _ = self
                .out
                .send(Out::Raw(wire::outbound_disconnect_notice(&self.setup.uuid)));
            let _ = self.out.send(Out::Close);
            return;
        };
        for ev in [
            self.tpl.ev(CANCEL, "CHANNEL_HANGUP"),
            self.tpl.ev(CANCEL, "CHANNEL_EXECUTE_COMPLETE"),
            self.tpl.callstate(CANCEL, "HANGUP"),
            self.tpl.ev(CANCEL, "CHANNEL_HANGUP_COMPLETE"),
        ] {
            self.fire(ev);
        }
        let chan_name = self
            .tpl
            .ev(CANCEL, "CHANNEL_HANGUP")
            .get("Channel-Name")
            .map(url_decode)
            .unwrap_or_default();
        let _ = self.out.send(Out::Raw(wire::linger_notice(
            &self.setup.uuid,
            &chan_name,
            &linger_time,
        )));
    }

    async fn teardown(&mut self, cause: &str, queue: &mut mpsc::UnboundedReceiver<App>) {
        if !self.linger() {
            return;
        }
        // Queued apps never run after the hangup; each still yields its PRIVATE_COMMAND, and
        // `set` runs as a zombie exec (capture outbound-rxfax-sender-txfax-file-missing).
        tokio::task::yield_now().await;
        let mut pending = Vec::new();
        while let Ok(a) = queue.try_recv() {
            pending.push(a);
        }
        for a in &pending {
            self.fire(self.private_command(a));
            if a.name == "set" {
                self.log
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .executed
                    .push((a.name.clone(), a.arg.clone()));
                self.fire(self.exec_event("CHANNEL_EXECUTE", a, None));
                self.fire(self.exec_event("CHANNEL_EXECUTE_COMPLETE", a, Some("_none_")));
            }
        }
        let from = if self.answered { "ACTIVE" } else { "RINGING" };
        let mut evs = vec![
            self.tpl.ev(ALL_OK, "CHANNEL_UNPARK"),
            self.tpl.app(ALL_OK, "CHANNEL_EXECUTE_COMPLETE", "socket"),
        ];
        evs.push(self.tpl.state(ALL_OK, "CS_HANGUP"));
        let mut cs = self.tpl.callstate(ALL_OK, "HANGUP");
        cs.set("Original-Channel-Call-State", from);
        evs.push(cs);
        evs.push(self.tpl.state(ALL_OK, "CS_REPORTING"));
        evs.push(self.tpl.ev(ALL_OK, "CHANNEL_HANGUP_COMPLETE"));
        let myevents = *self.myevents.lock().unwrap_or_else(|e| e.into_inner());
        let chan_name = self
            .tpl
            .ev(ALL_OK, "CHANNEL_UNPARK")
            .get("Channel-Name")
            .map(url_decode)
            .unwrap_or_default();
        for mut ev in evs {
            replace_cause(&mut ev, cause);
            let is_cs_hangup =
                ev.name() == "CHANNEL_STATE" && ev.get("Channel-State") == Some("CS_HANGUP");
            let is_complete = ev.name() == "CHANNEL_HANGUP_COMPLETE";
            self.fire(ev);
            // With myevents the linger notice came right after CS_HANGUP; otherwise after
            // CHANNEL_HANGUP_COMPLETE (captures outbound-rxfax-t38-ok-myevents / -all-events).
            if (myevents && is_cs_hangup) || (!myevents && is_complete) {
                let _ = self.out.send(Out::Raw(wire::linger_notice(
                    &self.setup.uuid,
                    &chan_name,
                    "-1",
                )));
            }
            tokio::task::yield_now().await;
        }
    }

    /// The client set `fax_enable_t38=false` on the channel (its last `set` of it counts).
    fn t38_disabled(&self) -> bool {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.vars
            .iter()
            .rev()
            .find(|(k, _)| k == "fax_enable_t38")
            .is_some_and(|(_, v)| v.eq_ignore_ascii_case("false"))
    }

    async fn rxfax(
        &mut self,
        app: App,
        queue: &mut mpsc::UnboundedReceiver<App>,
        ctl: &mut mpsc::UnboundedReceiver<Ctl>,
    ) -> bool {
        let path = PathBuf::from(&app.arg);
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rxfax_path = Some(path.clone());
        self.fire(self.tpl.ev(ALL_OK, "CODEC"));
        let script = self.setup.script.clone();
        let scripted = match &script {
            RxScript::RxOk { t38, .. } => *t38,
            RxScript::NoFaxSender | RxScript::SenderHangsUpAfterAnswer => T38::Refused,
            _ => T38::Negotiated,
        };
        // As mod_spandsp does: with `fax_enable_t38=false` on the channel, rxfax neither asks
        // for T.38 nor takes the caller's re-INVITE to it, and the fax goes over G.711 (`off`).
        let t38 = if self.t38_disabled() {
            T38::Off
        } else {
            scripted
        };
        self.outcome = FaxOutcome {
            success: false,
            code: 49,
            transferred: 0,
            t38,
            rate: 14400,
            ecm: true,
            encoding: None,
        };
        // Interruptible wait: a client hangup/kill or a forced vanish ends the fax early.
        let resumed = std::cell::Cell::new(false);
        macro_rules! wait {
            ($ms:expr) => {{
                let sleep = tokio::time::sleep(scaled(&self.setup, $ms));
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break None,
                        c = ctl.recv() => match c {
                            Some(Ctl::Resume) => { resumed.set(true); continue }
                            c => break c,
                        },
                    }
                }
            }};
        }
        // A stall: `None` when the test resumes the sender (also if it did so before the stall).
        macro_rules! stall {
            () => {{
                if resumed.get() {
                    None
                } else {
                    match ctl.recv().await {
                        Some(Ctl::Resume) => None,
                        c => c,
                    }
                }
            }};
        }
        let (pages, stop_after, mode) = match &script {
            RxScript::RxOk { pages, .. } => (*pages, None, 0),
            RxScript::SenderHangsUpMidFax { after_pages } => (*after_pages, Some(*after_pages), 1),
            RxScript::RetrainThenHangUp { after_pages } => (*after_pages, Some(*after_pages), 6),
            RxScript::Vanish { after_pages } => (*after_pages, Some(*after_pages), 2),
            RxScript::T38Hang { pages } => (*pages, None, 3),
            RxScript::NoFaxSender => (0, Some(0), 4),
            RxScript::SenderHangsUpAfterAnswer => (0, Some(0), 5),
        };
        // Stands still until the client or the test ends the call (never `None` while the
        // call exists: the connection task aborts this one when the socket goes).
        let stall = self.setup.stall_after_pages;
        let mut interrupted: Option<Ctl> = None;
        if mode == 4 || mode == 5 {
            interrupted = wait!(if mode == 4 { 41428 } else { 3426 });
        } else {
            interrupted = interrupted.or(wait!(8925));
            if interrupted.is_none() && stall == Some(0) {
                interrupted = stall!();
            }
            if interrupted.is_none() {
                self.fire(self.tpl.custom(ALL_OK, "spandsp::rxfaxnegociateresult", 0));
                for p in 1..=pages {
                    if let Some(c) = wait!(if p == 1 { 7187 } else { 3933 }) {
                        interrupted = Some(c);
                        break;
                    }
                    self.so_far = p;
                    let mut ev = self.tpl.custom(
                        ALL_OK,
                        "spandsp::rxfaxpageresult",
                        ((p - 1) as usize).min(2),
                    );
                    ev.set("fax-document-transferred-pages", &p.to_string());
                    if self.setup.bad_rows > 0 {
                        ev.set("fax-bad-rows", &self.setup.bad_rows.to_string());
                    }
                    self.fire(ev);
                    if stall == Some(p) {
                        interrupted = stall!();
                        if interrupted.is_some() {
                            break;
                        }
                    }
                }
                if mode == 6 && interrupted.is_none() {
                    self.fire(self.tpl.custom(ALL_OK, "spandsp::rxfaxnegociateresult", 0));
                }
            }
        }
        if let Some(Ctl::Vanish) = interrupted {
            let _ = self.out.send(Out::Close);
            return false;
        }
        let remote_hangup =
            matches!(interrupted, Some(Ctl::Hangup(_))) || mode == 1 || mode == 5 || mode == 6;
        if mode == 2 && interrupted.is_none() {
            let _ = stop_after;
            let _ = self.out.send(Out::Close);
            return false;
        }
        if remote_hangup {
            // The sender hung up mid-reception: HANGUP first, then the result.
            if self.so_far > 0 {
                self.write_tiff(&path, self.so_far as usize);
            } else {
                let _ = std::fs::remove_file(&path);
            }
            self.outcome.transferred = self.so_far;
            if !self.hangup_event("NORMAL_CLEARING") {
                return false;
            }
            let res = if mode == 5 {
                self.tpl.custom(HUP_ANS, "spandsp::rxfaxresult", 0)
            } else {
                self.tpl.custom(HUP_MID, "spandsp::rxfaxresult", 0)
            };
            self.fire(res);
            self.fire(self.tpl.ev(ALL_OK, "CODEC"));
            self.fire(self.exec_event("CHANNEL_EXECUTE_COMPLETE", &app, Some("_none_")));
            self.private_after(&app);
            self.teardown("NORMAL_CLEARING", queue).await;
            return false;
        }
        // The fax ended on its own.
        if mode == 4 {
            self.outcome.code = 3;
            self.fire(self.tpl.custom(NOFAX, "spandsp::rxfaxresult", 0));
        } else {
            self.outcome = FaxOutcome {
                success: true,
                code: 0,
                transferred: pages,
                t38,
                rate: 14400,
                ecm: true,
                encoding: None,
            };
            if pages > 0 {
                self.write_tiff(&path, pages as usize);
            }
            if let Some(c) = wait!(2336) {
                interrupted = Some(c);
            }
            if let Some(Ctl::Vanish) = interrupted {
                let _ = self.out.send(Out::Close);
                return false;
            }
            self.fire(self.tpl.custom(ALL_OK, "spandsp::rxfaxresult", 0));
            if mode == 3 {
                // T.38 hang: rxfax never returns; only a hangup from the client ends it.
                let mut c = ctl.recv().await;
                while let Some(Ctl::Resume) = c {
                    c = ctl.recv().await;
                }
                if let Some(Ctl::Vanish) | None = c {
                    let _ = self.out.send(Out::Close);
                    return false;
                }
                if !self.hangup_event("NORMAL_CLEARING") {
                    return false;
                }
                self.fire(self.tpl.ev(ALL_OK, "CODEC"));
                self.fire(self.exec_event("CHANNEL_EXECUTE_COMPLETE", &app, Some("_none_")));
                self.private_after(&app);
                self.teardown("NORMAL_CLEARING", queue).await;
                return false;
            }
        }
        self.fire(self.tpl.ev(ALL_OK, "CODEC"));
        self.fire(self.exec_event("CHANNEL_EXECUTE_COMPLETE", &app, Some("_none_")));
        self.private_after(&app);
        true
    }
}

async fn send(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    log: &Arc<Mutex<CallLog>>,
    b: Vec<u8>,
) -> bool {
    log.lock()
        .unwrap_or_else(|e| e.into_inner())
        .raw_out
        .extend_from_slice(&b);
    wr.write_all(&b).await.is_ok()
}

fn replace_cause(ev: &mut Event, cause: &str) {
    if cause == "NORMAL_CLEARING" {
        return;
    }
    for (k, v) in ev.headers.iter_mut() {
        if k == "Hangup-Cause" || k == "variable_hangup_cause" {
            *v = cause.to_string();
        }
    }
}

async fn run(
    stream: TcpStream,
    setup: CallSetup,
    log: Arc<Mutex<CallLog>>,
    mut ctl_rx: mpsc::UnboundedReceiver<Ctl>,
    cancel: CancellationToken,
) {
    let (rd, mut wr) = stream.into_split();
    let mut reader = CommandReader::new(rd);
    let cv = CallValues {
        uuid: setup.uuid.clone(),
        number: setup.to_user.clone(),
        cid_num: setup.caller_number.clone(),
        cid_name: setup.caller_name.clone(),
        now_us: chrono::Utc::now().timestamp_micros(),
        ..CallValues::default()
    };
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Out>();
    let (app_tx, app_rx) = mpsc::unbounded_channel::<App>();
    let (chan_ctl_tx, chan_ctl_rx) = mpsc::unbounded_channel::<Ctl>();
    let myevents = Arc::new(Mutex::new(false));
    let mut subs = Subs::default();
    let mut seq = 600u64;
    let socket_gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(switch) = &setup.switch {
        // uuid_kill on the switch hangs the channel up, socket or not.
        let (kill_tx, mut kill_rx) = mpsc::unbounded_channel::<String>();
        switch.register(&setup.uuid, kill_tx);
        let to_chan = chan_ctl_tx.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    k = kill_rx.recv() => match k {
                        Some(cause) => { let _ = to_chan.send(Ctl::Hangup(cause)); }
                        None => break,
                    },
                }
            }
        });
    }
    let rec = |log: &Arc<Mutex<CallLog>>, f: &dyn Fn(&mut CallLog)| {
        f(&mut log.lock().unwrap_or_else(|e| e.into_inner()))
    };
    // The channel's application thread.
    let chan = Chan {
        tpl: Tpl { cv: cv.clone() },
        setup: setup.clone(),
        log: log.clone(),
        out: out_tx.clone(),
        apps_done: 0,
        answered: false,
        hung_up: false,
        myevents: myevents.clone(),
        so_far: 0,
        answered_us: 0,
        outcome: FaxOutcome {
            success: false,
            code: 0,
            transferred: 0,
            t38: T38::Negotiated,
            rate: 14400,
            ecm: true,
            encoding: None,
        },
        socket_gone: socket_gone.clone(),
    };
    let chan_cancel = cancel.clone();
    let chan_task = tokio::spawn(async move {
        let mut chan = chan;
        let mut apps = app_rx;
        let mut ctl = chan_ctl_rx;
        let mut first = true;
        loop {
            tokio::select! {
                _ = chan_cancel.cancelled() => break,
                a = apps.recv() => match a {
                    Some(a) => {
                        if first {
                            // The parked channel picks up its first message ~20 ms later
                            // (all captures), after the client has queued its sendmsgs.
                            first = false;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        if !chan.run_app(a, &mut apps, &mut ctl).await { break; }
                    }
                    None => break,
                },
                c = ctl.recv() => match c {
                    Some(Ctl::Hangup(cause)) if cause == CANCEL_CAUSE && !chan.answered => {
                        chan.cancel_before_answer().await;
                        break;
                    }
                    Some(Ctl::Hangup(cause)) => {
                        if chan.hangup_event(&cause) { chan.teardown(&cause, &mut apps).await; }
                        break;
                    }
                    Some(Ctl::Vanish) => { let _ = chan.out.send(Out::Close); break; }
                    Some(Ctl::Resume | Ctl::LingerExpires) => {}
                    None => break,
                },
            }
        }
    });
    let mut connected = false;
    let mut client_closed = false;
    let mut n_cmds = 0usize;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            c = ctl_rx.recv() => match c {
                Some(Ctl::LingerExpires) => {
                    let _ = send(&mut wr, &log, wire::outbound_disconnect_notice(&setup.uuid)).await;
                    break;
                }
                Some(c) => { let _ = chan_ctl_tx.send(c); }
                None => break,
            },
            o = out_rx.recv() => match o {
                Some(Out::Ev(mut ev)) => {
                    if subs.wants(&ev) {
                        seq += 1;
                        stamp(&mut ev, seq);
                        rec(&log, &|l| l.delivered.push(ev.clone()));
                        if !send(&mut wr, &log, ev.to_plain_message()).await { break; }
                    }
                }
                Some(Out::Raw(b)) => { if !send(&mut wr, &log, b).await { break; } }
                Some(Out::Close) | None => break,
            },
            cmd = reader.next() => {
                let cmd = match cmd { Ok(c) => c, Err(_) => { client_closed = true; break; } };
                rec(&log, &|l| { l.raw_in.extend_from_slice(&cmd.raw); l.commands.push(cmd.clone()); });
                let verb = cmd.verb();
                let arg = cmd.arg().to_string();
                let toks: Vec<&str> = arg.split_whitespace().collect();
                let reply: Vec<u8> = if !connected {
                    if verb == "connect" {
                        connected = true;
                        connect_reply(&setup, &cv)
                    } else {
                        wire::command_reply("-ERR command not found")
                    }
                } else {
                    match verb.as_str() {
                        "linger" => {
                            let secs = toks.first().map_or("-1".to_owned(), |t| (*t).to_owned());
                            rec(&log, &|l| { l.linger = true; l.linger_time = secs.clone(); });
                            if secs == "-1" {
                                wire::command_reply("+OK will linger")
                            } else {
                                wire::command_reply(&format!("+OK will linger {secs} seconds"))
                            }
                        }
                        "nolinger" => { rec(&log, &|l| l.linger = false); wire::command_reply("+OK will not linger") }
                        "event" => {
                            subs.json = toks.first().is_some_and(|f| f.eq_ignore_ascii_case("json"));
                            subs.subscribe(toks.get(1..).unwrap_or(&[]));
                            wire::command_reply(&format!("+OK event listener enabled {}", toks.first().map(|f| f.to_ascii_lowercase()).unwrap_or_default()))
                        }
                        "myevents" => {
                            *myevents.lock().unwrap_or_else(|e| e.into_inner()) = true;
                            subs.subscribe(MYEVENTS);
                            subs.filters.push(("Unique-ID".into(), setup.uuid.clone()));
                            wire::command_reply("+OK Events Enabled")
                        }
                        "filter" => {
                            let mut it = arg.splitn(2, ' ');
                            let name = it.next().unwrap_or("").to_string();
                            match it.next().map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) {
                                Some(v) if !name.eq_ignore_ascii_case("delete") => {
                                    subs.filters.push((name.clone(), v.clone()));
                                    wire::command_reply(&format!("+OK filter added. [{name}]=[{v}]"))
                                }
                                Some(v) => {
                                    let (h, hv) = v.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).unwrap_or((v.clone(), String::new()));
                                    subs.filters.retain(|(k, fv)| !(k.eq_ignore_ascii_case(&h) && (hv.is_empty() || *fv == hv)));
                                    wire::command_reply(&format!("+OK filter deleted. [{h}]=[{hv}]"))
                                }
                                None => wire::command_reply("-ERR invalid syntax"),
                            }
                        }
                        "nixevent" => { subs.nix(&toks); wire::command_reply("+OK events nixed") }
                        "noevents" => { subs = Subs { filters: std::mem::take(&mut subs.filters), ..Subs::default() }; wire::command_reply("+OK no longer listening for events") }
                        "exit" => {
                            let _ = send(&mut wr, &log, wire::command_reply("+OK bye")).await;
                            let _ = send(&mut wr, &log, wire::outbound_disconnect_notice(&setup.uuid)).await;
                            break;
                        }
                        "sendmsg" => {
                            let cc = cmd.header("call-command").unwrap_or("").to_ascii_lowercase();
                            if cc == "execute" {
                                let name = cmd.header("execute-app-name").unwrap_or("").to_string();
                                let app_arg = cmd.header("execute-app-arg").map(str::to_string).unwrap_or_else(|| String::from_utf8_lossy(&cmd.body).to_string());
                                let app_uuid = cmd.header("Event-UUID").map(str::to_string).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                                let _ = app_tx.send(App { name, arg: app_arg, app_uuid, cmd: cmd.clone() });
                            } else if cc == "hangup" {
                                let cause = cmd.header("hangup-cause").unwrap_or("NORMAL_CLEARING").to_string();
                                let _ = chan_ctl_tx.send(Ctl::Hangup(cause));
                            }
                            wire::command_reply("+OK")
                        }
                        "api" => {
                            let (c, a) = arg.split_once(' ').unwrap_or((arg.as_str(), ""));
                            let body = match c {
                                "db" => setup.db.api(a.trim()),
                                "uuid_kill" => {
                                    if a.split_whitespace().next() == Some(setup.uuid.as_str()) {
                                        let _ = chan_ctl_tx.send(Ctl::Hangup("NORMAL_CLEARING".into()));
                                        "+OK\n".into()
                                    } else {
                                        "-ERR No such channel!\n".into()
                                    }
                                }
                                other => format!("-ERR {other} Command not found!\n"),
                            };
                            let body = if body.is_empty() { "-ERR no reply\n".to_string() } else { body };
                            wire::api_response(body.as_bytes())
                        }
                        _ => wire::command_reply("-ERR command not found"),
                    }
                };
                if !send(&mut wr, &log, reply).await { break; }
                n_cmds += 1;
                if let Some((_, b)) = setup.inject_after_command.as_ref().filter(|(n, _)| *n == n_cmds) {
                    if !send(&mut wr, &log, b.clone()).await { break; }
                }
                if setup.vanish_after_command == Some(n_cmds) { break; }
            }
        }
    }
    let _ = wr.shutdown().await;
    drop(wr);
    rec(&log, &|l| {
        l.finished = true;
        l.client_closed = client_closed;
    });
    let Some(switch) = setup.switch.clone() else {
        // Closing the socket ends a non-lingering channel; let the app thread finish quietly.
        chan_task.abort();
        rec(&log, &|l| l.channel_ended = true);
        return;
    };
    // A switch's channel outlives its socket: the test still steers it (resume, hangup),
    // and it ends when its applications do.
    socket_gone.store(true, std::sync::atomic::Ordering::Release);
    let forward = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    c = ctl_rx.recv() => match c {
                        Some(c) => { let _ = chan_ctl_tx.send(c); }
                        None => break,
                    },
                }
            }
        })
    };
    let mut chan_task = chan_task;
    tokio::select! {
        _ = &mut chan_task => {}
        _ = cancel.cancelled() => chan_task.abort(),
    }
    forward.abort();
    switch.unregister(&setup.uuid);
    rec(&log, &|l| l.channel_ended = true);
}
