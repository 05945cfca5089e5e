//! Inbound mode: a fake FreeSWITCH listening like `:8021` for fsfaxsend / fsfaxd's db lookups.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::capture::{Capture, Event, url_encode};
use super::db::FakeDb;
use super::dial::{Leg, Originate};
use super::plan::{self, CallValues, FaxOutcome, Step, StepKind};
use super::scripts::CallScript;
use super::tiff;
use super::wire::{self, ClientCommand, CommandReader};

/// A frame the fake writes unprompted, to test the client's parser robustness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injection {
    /// Write the frame right after replying to the n-th command of a connection (1 = `auth`).
    pub after_command: usize,
    /// The bytes to write as they are.
    pub frame: Vec<u8>,
    /// Close the connection right after the frame.
    pub close: bool,
}

impl Injection {
    /// An event-plain frame whose `Content-Length` is not a number.
    pub fn malformed(after_command: usize) -> Injection {
        Injection {
            after_command,
            frame:
                b"Content-Length: abc\nContent-Type: text/event-plain\n\nEvent-Name: HEARTBEAT\n\n"
                    .to_vec(),
            close: false,
        }
    }

    /// An event-plain frame announcing (and sending) `len` bytes of body.
    pub fn huge(after_command: usize, len: usize) -> Injection {
        let mut frame =
            format!("Content-Length: {len}\nContent-Type: text/event-plain\n\n").into_bytes();
        frame.extend(std::iter::repeat_n(b'x', len));
        Injection {
            after_command,
            frame,
            close: false,
        }
    }

    /// A header block with an unknown Content-Type (gofaxip's library exits on these).
    pub fn unknown_content_type(after_command: usize) -> Injection {
        Injection {
            after_command,
            frame: b"Content-Type: text/event-xml\nContent-Length: 5\n\n<x/>\n".to_vec(),
            close: false,
        }
    }
}

/// Configuration of a [`FakeFs`].
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// ESL password (`auth <pw>`), default `ClueCon`.
    pub password: String,
    /// Script per gateway name (`sofia/gateway/<gw>/...`).
    pub gateways: HashMap<String, CallScript>,
    /// Script per dialled number; wins over `gateways`.
    pub numbers: HashMap<String, CallScript>,
    /// Script when neither matches. Default: a T.38 fax that succeeds.
    pub default_script: CallScript,
    /// Capture milliseconds are multiplied by this to get real delays. Default 0.001
    /// (a 29 s capture fax takes 29 ms). Use e.g. 0.05 to leave time for a SIGTERM mid-fax.
    pub time_scale: f64,
    /// `fax-remote-station-id` the far end reports. Default `+1 337` (the capture's).
    pub remote_station_id: String,
    /// Close every connection right after `+OK accepted`.
    pub drop_after_auth: bool,
    /// Unprompted frame written on every connection at a given point.
    pub inject: Option<Injection>,
    /// mod_db hangs: an `api db ...` never returns, and like a blocked api on the real switch
    /// it holds its connection (nothing more is answered there).
    pub db_silent: bool,
    /// HEARTBEAT events to subscribed connections every this long (FreeSWITCH's
    /// `event-heartbeat-interval`, 20 s by default); `None`: none.
    pub heartbeat: Option<Duration>,
    /// The node sees the HylaFAX spool at another path (an NFS mount on another host):
    /// `(theirs, real)`. A txfax path under `theirs` is read at the same place under `real`;
    /// any other path does not exist for this node.
    pub spool_mount: Option<(PathBuf, PathBuf)>,
    /// The address the node listens on, and the one its calls come from (default
    /// 127.0.0.1; any 127.x.y.z gives a second node its own loopback address).
    pub listen_ip: std::net::IpAddr,
    /// mod_db shared with other fake nodes (one database behind several switches, as
    /// mod_db in PostgreSQL). `None` (default): the node's own.
    pub shared_db: Option<FakeDb>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            password: "ClueCon".into(),
            gateways: HashMap::new(),
            numbers: HashMap::new(),
            default_script: CallScript::fax_ok(),
            time_scale: 0.001,
            remote_station_id: "+1 337".into(),
            drop_after_auth: false,
            inject: None,
            db_silent: false,
            heartbeat: Some(Duration::from_secs(20)),
            spool_mount: None,
            listen_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            shared_db: None,
        }
    }
}

impl FakeConfig {
    /// Defaults (password `ClueCon`, every call a successful T.38 fax).
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the ESL password.
    pub fn password(mut self, pw: &str) -> Self {
        self.password = pw.into();
        self
    }
    /// Script for a gateway.
    pub fn gateway(mut self, gw: &str, script: CallScript) -> Self {
        self.gateways.insert(gw.into(), script);
        self
    }
    /// Script for a dialled number (wins over the gateway's).
    pub fn number(mut self, number: &str, script: CallScript) -> Self {
        self.numbers.insert(number.into(), script);
        self
    }
    /// Script for unmatched legs.
    pub fn default_script(mut self, script: CallScript) -> Self {
        self.default_script = script;
        self
    }
    /// Time scale for capture delays (see [`FakeConfig::time_scale`]).
    pub fn time_scale(mut self, scale: f64) -> Self {
        self.time_scale = scale;
        self
    }
    /// Close connections right after authentication.
    pub fn drop_after_auth(mut self) -> Self {
        self.drop_after_auth = true;
        self
    }
    /// Inject a frame on every connection.
    pub fn inject(mut self, inj: Injection) -> Self {
        self.inject = Some(inj);
        self
    }
    /// Make mod_db hang (see [`FakeConfig::db_silent`]).
    /// HEARTBEAT every `interval` (FreeSWITCH: 20 s).
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = Some(interval);
        self
    }

    /// No HEARTBEAT events at all (a switch with its heartbeat off).
    pub fn no_heartbeat(mut self) -> Self {
        self.heartbeat = None;
        self
    }

    /// The node listens on `ip` (port from the OS) and its calls come from there.
    pub fn listen_on(mut self, ip: std::net::IpAddr) -> Self {
        self.listen_ip = ip;
        self
    }

    /// The node's mod_db is `db` (share one between nodes: mod_db in PostgreSQL).
    pub fn shared_db(mut self, db: FakeDb) -> Self {
        self.shared_db = Some(db);
        self
    }

    pub fn db_silent(mut self) -> Self {
        self.db_silent = true;
        self
    }

    /// The node sees the spool at `theirs` (the real spool is at `real`).
    pub fn spool_mount(mut self, theirs: &Path, real: &Path) -> Self {
        self.spool_mount = Some((theirs.to_path_buf(), real.to_path_buf()));
        self
    }

    /// Where a file this node was told about really is; `None` when the node cannot see it.
    pub fn local_path(&self, theirs: &str) -> Option<PathBuf> {
        let path = Path::new(theirs);
        match &self.spool_mount {
            None => Some(path.to_path_buf()),
            Some((mount, real)) => path.strip_prefix(mount).ok().map(|rel| real.join(rel)),
        }
    }

    /// The script a leg gets: by number, else by gateway, else the default.
    pub fn script_for(&self, leg: &Leg) -> CallScript {
        self.numbers
            .get(&leg.number)
            .or_else(|| self.gateways.get(&leg.gateway))
            .cloned()
            .unwrap_or_else(|| self.default_script.clone())
    }
}

/// One originate the fake received.
#[derive(Clone, Debug)]
pub struct OriginateRecord {
    /// Connection index (0-based, accept order).
    pub conn: usize,
    /// `true` for `bgapi originate`, `false` for `api originate`.
    pub background: bool,
    /// The Job-UUID (bgapi only).
    pub job_uuid: Option<String>,
    /// The parsed argument (raw text in `originate.raw`).
    pub originate: Originate,
    /// Channel UUID of each leg that was tried, in order.
    pub leg_uuids: Vec<String>,
    /// When it was received.
    pub at: SystemTime,
    /// The result text once known: `+OK <uuid>\n` or `-ERR <CAUSE>\n`.
    pub result: Option<String>,
}

impl OriginateRecord {
    /// A channel variable as the first leg sees it (`[leg]` vars win over `{global}` ones).
    pub fn var(&self, name: &str) -> Option<String> {
        let leg = self.originate.legs().first().and_then(|l| {
            l.vars
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        });
        leg.or_else(|| {
            self.originate
                .vars
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }
}

#[derive(Debug, Default)]
struct ConnRecord {
    commands: Vec<ClientCommand>,
    raw_in: Vec<u8>,
    raw_out: Vec<u8>,
    closed: bool,
    ctl: Option<mpsc::UnboundedSender<SessionCtl>>,
}

#[derive(Debug)]
enum SessionCtl {
    Drop,
    Inject(Vec<u8>),
}

/// The fake's event bus: every session sees every event, as on the real switch.
#[derive(Default)]
struct Bus {
    subs: Mutex<Vec<mpsc::UnboundedSender<Arc<Event>>>>,
    log: Mutex<Vec<Arc<Event>>>,
    seq: AtomicU64,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Sets `Event-Sequence` and the `Event-Date-*` headers to now.
pub(crate) fn stamp(ev: &mut Event, seq: u64) {
    let now = chrono::Utc::now();
    ev.set("Event-Date-Timestamp", &now.timestamp_micros().to_string());
    ev.set(
        "Event-Date-Local",
        &url_encode(
            &now.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string(),
        ),
    );
    ev.set(
        "Event-Date-GMT",
        &url_encode(&now.format("%a, %d %b %Y %H:%M:%S GMT").to_string()),
    );
    ev.set("Event-Sequence", &seq.to_string());
}

impl Bus {
    fn subscribe(&self) -> mpsc::UnboundedReceiver<Arc<Event>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subs.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
        rx
    }
    fn publish(&self, ev: Event) {
        self.publish_as(ev, true);
    }

    /// Publishes `ev`; `logged`: kept for [`FakeFs::published`] (heartbeats are not).
    fn publish_as(&self, mut ev: Event, logged: bool) {
        let seq = 1000 + self.seq.fetch_add(1, Ordering::SeqCst);
        stamp(&mut ev, seq);
        let ev = Arc::new(ev);
        if logged {
            self.log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(ev.clone());
        }
        self.subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| s.send(ev.clone()).is_ok());
    }
}

struct CallCtl {
    kill: mpsc::UnboundedSender<String>,
}

struct Shared {
    cfg: FakeConfig,
    bus: Bus,
    conns: Mutex<Vec<ConnRecord>>,
    originates: Mutex<Vec<OriginateRecord>>,
    calls: Mutex<HashMap<String, CallCtl>>,
    kills: Mutex<Vec<String>>,
    db: FakeDb,
    cancel: CancellationToken,
    accepted: AtomicUsize,
    /// Channels this switch has that no originate made (e.g. a reception whose outbound
    /// socket went away while its rxfax goes on): only `uuid_exists` sees them.
    foreign: Mutex<HashSet<String>>,
    /// Scripts per number set while the fake runs ([`FakeFs::set_number_script`]).
    number_scripts: Mutex<HashMap<String, CallScript>>,
    /// The switch went silent: nothing is written on any connection (no replies, no events,
    /// no greeting on new ones), yet every connection stays open, as a host that lost power.
    silent: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// The script a leg gets: one set while running wins over the configuration's.
    fn script_for(&self, leg: &Leg) -> CallScript {
        let set = self
            .number_scripts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        set.get(&leg.number)
            .cloned()
            .unwrap_or_else(|| self.cfg.script_for(leg))
    }

    fn conn<R>(&self, id: usize, f: impl FnOnce(&mut ConnRecord) -> R) -> R {
        let mut g = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g[id])
    }
    fn update_orig(&self, idx: usize, f: impl FnOnce(&mut OriginateRecord)) {
        let mut g = self.originates.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = g.get_mut(idx) {
            f(r);
        }
    }
}

/// The switch side of a [`FakeFs`] that an outbound call ([`super::FakeCall`]) belongs to:
/// its events reach every inbound connection (subscriptions and filters apply), `uuid_exists`
/// and `uuid_kill` there know it, and it lives on when its outbound socket dies, as a real
/// switch's channel does (a `kill -9` of fsfaxd left FreeSWITCH receiving for 40 s).
#[derive(Clone)]
pub struct SwitchHandle {
    shared: Arc<Shared>,
}

impl SwitchHandle {
    /// The address the switch's calls come from.
    pub fn ip(&self) -> std::net::IpAddr {
        self.shared.cfg.listen_ip
    }

    /// Where a path this switch was given really is (see [`FakeConfig::spool_mount`]);
    /// `None` when the switch cannot see it.
    pub fn local_path(&self, theirs: &str) -> Option<PathBuf> {
        self.shared.cfg.local_path(theirs)
    }
}

impl std::fmt::Debug for SwitchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SwitchHandle")
    }
}

impl SwitchHandle {
    /// Publishes a channel event on the switch's bus (re-stamped like every bus event).
    pub(crate) fn publish(&self, ev: Event) {
        self.shared.bus.publish(ev);
    }

    /// The channel exists: `uuid_exists` says `true`; `uuid_kill <uuid> [cause]` sends the
    /// cause on `kill`.
    pub(crate) fn register(&self, uuid: &str, kill: mpsc::UnboundedSender<String>) {
        self.shared
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uuid.to_string(), CallCtl { kill });
    }

    /// The channel is gone.
    pub(crate) fn unregister(&self, uuid: &str) {
        self.shared
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uuid);
    }
}

/// A fake FreeSWITCH Event Socket (inbound mode) on `127.0.0.1:<random port>`.
///
/// Every accepted connection gets `auth/request`; after `auth` it answers commands like
/// FreeSWITCH 1.10.12 did in the captures (`tests/fixtures/esl`), runs `originate` calls per
/// [`CallScript`], keeps an in-memory mod_db, and records everything for assertions.
/// Dropping the `FakeFs` closes the listener, every session and every running call.
///
/// ```ignore
/// let fs = FakeFs::start(FakeConfig::new().gateway("b", CallScript::Busy)).await;
/// // point the client at fs.addr() ...
/// assert_eq!(fs.originates()[0].var("fax_enable_t38").as_deref(), Some("true"));
/// ```
pub struct FakeFs {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Drop for FakeFs {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

impl FakeFs {
    /// Binds `<listen_ip>:0` (127.0.0.1 unless set) and starts accepting. Must be called
    /// inside a tokio runtime.
    pub async fn start(cfg: FakeConfig) -> FakeFs {
        let listener = TcpListener::bind((cfg.listen_ip, 0))
            .await
            .unwrap_or_else(|e| panic!("fakefs: bind {}:0: {e}", cfg.listen_ip));
        let db = cfg.shared_db.clone().unwrap_or_default();
        let addr = listener.local_addr().expect("fakefs: local_addr");
        let shared = Arc::new(Shared {
            cfg,
            bus: Bus::default(),
            conns: Mutex::new(Vec::new()),
            originates: Mutex::new(Vec::new()),
            calls: Mutex::new(HashMap::new()),
            kills: Mutex::new(Vec::new()),
            db,
            cancel: CancellationToken::new(),
            accepted: AtomicUsize::new(0),
            foreign: Mutex::new(HashSet::new()),
            number_scripts: Mutex::new(HashMap::new()),
            silent: std::sync::atomic::AtomicBool::new(false),
        });
        if let Some(interval) = shared.cfg.heartbeat {
            tokio::spawn(heartbeats(shared.clone(), interval));
        }
        let sh = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = sh.cancel.cancelled() => break,
                    acc = listener.accept() => match acc {
                        Ok((stream, _)) => {
                            let id = {
                                let mut g = sh.conns.lock().unwrap_or_else(|e| e.into_inner());
                                g.push(ConnRecord::default());
                                g.len() - 1
                            };
                            sh.accepted.fetch_add(1, Ordering::SeqCst);
                            tokio::spawn(session(sh.clone(), id, stream));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    },
                }
            }
        });
        FakeFs { addr, shared }
    }

    /// This switch, for outbound calls that are to be its channels
    /// ([`super::CallSetup::switch`]).
    pub fn switch(&self) -> SwitchHandle {
        SwitchHandle {
            shared: self.shared.clone(),
        }
    }

    /// The switch stops writing anything, on every connection and on new ones, without
    /// closing a single one (a host that lost power or a partition).
    pub fn go_silent(&self) {
        self.shared.silent.store(true, Ordering::SeqCst);
    }

    /// Back from [`FakeFs::go_silent`]: new connections are served again (the old ones
    /// missed their replies; their clients will have given up on them).
    pub fn speak_again(&self) {
        self.shared.silent.store(false, Ordering::SeqCst);
    }

    /// The listening address (give it to the client as `[freeswitch] socket`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Number of connections accepted so far.
    pub fn connection_count(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Commands received, per connection (accept order), in order.
    pub fn commands(&self) -> Vec<Vec<ClientCommand>> {
        self.shared
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|c| c.commands.clone())
            .collect()
    }

    /// First lines of the commands of connection `conn` (`auth ClueCon`, `api db ...`).
    pub fn command_lines(&self, conn: usize) -> Vec<String> {
        self.commands()
            .get(conn)
            .map(|c| c.iter().map(|c| c.line.clone()).collect())
            .unwrap_or_default()
    }

    /// All command first lines of all connections, in connection then command order.
    pub fn all_command_lines(&self) -> Vec<String> {
        self.commands()
            .into_iter()
            .flatten()
            .map(|c| c.line)
            .collect()
    }

    /// Every byte received on connection `conn`.
    pub fn raw_received(&self, conn: usize) -> Vec<u8> {
        self.shared
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(conn)
            .map(|c| c.raw_in.clone())
            .unwrap_or_default()
    }

    /// Every byte written on connection `conn` (recorded once the write went through).
    pub fn raw_sent(&self, conn: usize) -> Vec<u8> {
        self.shared
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(conn)
            .map(|c| c.raw_out.clone())
            .unwrap_or_default()
    }

    /// Whether connection `conn` has ended.
    pub fn is_closed(&self, conn: usize) -> bool {
        self.shared
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(conn)
            .is_some_and(|c| c.closed)
    }

    /// The originates received so far (with their results once known).
    pub fn originates(&self) -> Vec<OriginateRecord> {
        self.shared
            .originates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The fake's mod_db (seed it before the test, read it after).
    pub fn db(&self) -> FakeDb {
        self.shared.db.clone()
    }

    /// What `pick` takes from each published event, in order, without copying the events (a
    /// long run publishes many).
    pub fn published_map<T>(&self, pick: impl FnMut(&Event) -> Option<T>) -> Vec<T> {
        let log = self
            .shared
            .bus
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut pick = pick;
        log.iter().filter_map(|e| pick(e)).collect()
    }

    /// Every event published on the fake's bus (whatever the subscriptions), in order.
    pub fn published(&self) -> Vec<Event> {
        self.shared
            .bus
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|e| (**e).clone())
            .collect()
    }

    /// Makes `uuid_exists <uuid>` answer `true` (a call the switch has that no originate on
    /// this fake made, such as a reception outliving fsfaxd) until [`FakeFs::end_channel`].
    pub fn hold_channel(&self, uuid: &str) {
        self.shared
            .foreign
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uuid.to_string());
    }

    /// Ends a channel made with [`FakeFs::hold_channel`].
    pub fn end_channel(&self, uuid: &str) {
        self.shared
            .foreign
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uuid);
    }

    /// UUIDs named in `uuid_kill` commands, in order (known or not).
    pub fn kills(&self) -> Vec<String> {
        self.shared
            .kills
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// From now on, calls to `number` follow `script` (e.g. a far end that took two pages and
    /// then hung, taking every page on the retry).
    pub fn set_number_script(&self, number: &str, script: CallScript) {
        self.shared
            .number_scripts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(number.to_string(), script);
    }

    /// Hangs up a running call from the switch's side with `cause` (an admin's `hupall`, a
    /// FreeSWITCH shutting down: `SYSTEM_SHUTDOWN`), ending it as a `uuid_kill` does (capture
    /// `inbound-txfax-t38-local-kill-midfax`) without recording a kill by a client. Returns
    /// whether the call existed.
    pub fn hang_up_call(&self, uuid: &str, cause: &str) -> bool {
        kill_call(&self.shared, uuid, cause)
    }

    /// UUIDs of channels that currently exist.
    pub fn active_calls(&self) -> Vec<String> {
        self.shared
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Closes connection `conn` abruptly (no notice).
    pub fn drop_connection(&self, conn: usize) {
        if let Some(tx) = self.shared.conn(conn, |c| c.ctl.clone()) {
            let _ = tx.send(SessionCtl::Drop);
        }
    }

    /// Writes `bytes` unprompted on connection `conn`.
    pub fn inject(&self, conn: usize, bytes: &[u8]) {
        if let Some(tx) = self.shared.conn(conn, |c| c.ctl.clone()) {
            let _ = tx.send(SessionCtl::Inject(bytes.to_vec()));
        }
    }

    /// Polls `pred` every 5 ms until it holds or `timeout` passes; returns whether it held.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&FakeFs) -> bool) -> bool {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            if pred(self) {
                return true;
            }
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops everything now (also done on drop).
    pub fn shutdown(&self) {
        self.shared.cancel.cancel();
    }
}

/// Per-connection event subscription and filters (mod_event_socket semantics).
#[derive(Default, Debug)]
pub(crate) struct Subs {
    pub(crate) json: bool,
    pub(crate) enabled: bool,
    pub(crate) all: bool,
    pub(crate) names: HashSet<String>,
    pub(crate) custom_all: bool,
    pub(crate) subclasses: HashSet<String>,
    pub(crate) filters: Vec<(String, String)>,
}

/// Event names `myevents` subscribes (mod_event_socket's hard-coded list; no CUSTOM, no
/// CHANNEL_CALLSTATE, no PLAYBACK_*).
pub(crate) const MYEVENTS: &[&str] = &[
    "CHANNEL_ANSWER",
    "CHANNEL_APPLICATION",
    "CHANNEL_BRIDGE",
    "CHANNEL_CREATE",
    "CHANNEL_DATA",
    "CHANNEL_DESTROY",
    "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_ORIGINATE",
    "CHANNEL_UUID",
    "CHANNEL_OUTGOING",
    "CHANNEL_PARK",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_STATE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_UNPARK",
    "DETECTED_SPEECH",
    "DTMF",
    "MEDIA_BUG_START",
    "MEDIA_BUG_STOP",
];

impl Subs {
    /// `event <fmt> <tokens>`: ALL, event names, `CUSTOM` followed by subclasses.
    pub(crate) fn subscribe(&mut self, tokens: &[&str]) {
        self.enabled = true;
        let mut custom = false;
        let mut custom_sub = false;
        for t in tokens {
            if t.eq_ignore_ascii_case("ALL") {
                self.all = true;
            } else if *t == "CUSTOM" {
                custom = true;
            } else if custom || t.contains("::") {
                self.subclasses.insert((*t).to_string());
                custom_sub = true;
            } else {
                self.names.insert(t.to_ascii_uppercase());
            }
        }
        if custom && !custom_sub {
            self.custom_all = true;
        }
    }

    pub(crate) fn nix(&mut self, tokens: &[&str]) {
        for t in tokens {
            if t.eq_ignore_ascii_case("ALL") {
                self.all = false;
                self.names.clear();
                self.custom_all = false;
                self.subclasses.clear();
            } else {
                self.names.remove(&t.to_ascii_uppercase());
                self.subclasses.remove(*t);
            }
        }
    }

    /// Whether the event passes the subscription and the filters.
    pub(crate) fn wants(&self, ev: &Event) -> bool {
        if !self.enabled {
            return false;
        }
        let name = ev.name();
        let subscribed = self.all
            || self.names.contains(name)
            || (name == "CUSTOM" && (self.custom_all || self.subclasses.contains(&ev.subclass())));
        if !subscribed {
            return false;
        }
        filters_pass(&self.filters, ev)
    }
}

/// mod_event_socket filter semantics: with filters set, an event passes if a positive filter
/// matches (case-insensitive value), and is dropped if a `-` filter matches.
pub(crate) fn filters_pass(filters: &[(String, String)], ev: &Event) -> bool {
    if filters.is_empty() {
        return true;
    }
    let mut send = false;
    for (h, v) in filters {
        let Some(hv) = ev.get_ci(h) else { continue };
        let hv = super::capture::url_decode(hv);
        let (pos, cmp_to) = match v.strip_prefix('-') {
            Some(r) => (false, r.trim_start()),
            None => (true, v.strip_prefix('+').unwrap_or(v).trim_start()),
        };
        if send && pos {
            continue;
        }
        if hv.eq_ignore_ascii_case(cmp_to) {
            if pos {
                send = true;
            } else {
                return false;
            }
        }
    }
    send
}

enum Flow {
    Continue,
    Close,
}

struct Session {
    shared: Arc<Shared>,
    id: usize,
    wr: OwnedWriteHalf,
    authed: bool,
    subs: Subs,
    muted: bool,
}

impl Session {
    async fn send(&mut self, bytes: &[u8]) -> bool {
        if self.muted || self.shared.silent.load(Ordering::SeqCst) {
            return true;
        }
        // Recorded once written: what `raw_sent` shows has reached the client's socket.
        let sent = self.wr.write_all(bytes).await.is_ok();
        if sent {
            self.shared
                .conn(self.id, |c| c.raw_out.extend_from_slice(bytes));
        }
        sent
    }

    async fn send_event(&mut self, ev: &Event) -> bool {
        if !self.subs.wants(ev) {
            return true;
        }
        let bytes = if self.subs.json {
            ev.to_json_message()
        } else {
            ev.to_plain_message()
        };
        self.send(&bytes).await
    }
}

async fn session(shared: Arc<Shared>, id: usize, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let mut reader = CommandReader::new(rd);
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
    shared.conn(id, |c| c.ctl = Some(ctl_tx));
    let mut ev_rx = shared.bus.subscribe();
    let cancel = shared.cancel.clone();
    let mut s = Session {
        shared: shared.clone(),
        id,
        wr,
        authed: false,
        subs: Subs::default(),
        muted: false,
    };
    let mut n_cmds = 0usize;
    if s.send(b"Content-Type: auth/request\n\n").await {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                ctl = ctl_rx.recv() => match ctl {
                    Some(SessionCtl::Drop) | None => break,
                    Some(SessionCtl::Inject(b)) => { if !s.send(&b).await { break; } }
                },
                cmd = reader.next() => match cmd {
                    Ok(cmd) => {
                        n_cmds += 1;
                        shared.conn(id, |c| { c.raw_in.extend_from_slice(&cmd.raw); c.commands.push(cmd.clone()); });
                        match handle(&mut s, cmd, &mut ctl_rx).await {
                            Flow::Continue => {}
                            Flow::Close => break,
                        }
                        if let Some(inj) = shared.cfg.inject.clone().filter(|i| i.after_command == n_cmds) {
                            if !s.send(&inj.frame).await || inj.close { break; }
                        }
                    }
                    Err(_) => break,
                },
                ev = ev_rx.recv() => if let Some(ev) = ev {
                    if !s.send_event(&ev).await { break; }
                },
            }
        }
    }
    let _ = s.wr.shutdown().await;
    shared.conn(id, |c| {
        c.closed = true;
        c.ctl = None;
    });
}

async fn handle(
    s: &mut Session,
    cmd: ClientCommand,
    ctl: &mut mpsc::UnboundedReceiver<SessionCtl>,
) -> Flow {
    let verb = cmd.verb();
    let arg = cmd.arg().to_string();
    if !s.authed {
        if verb != "auth" {
            return if s.send(&wire::command_reply("-ERR command not found")).await {
                Flow::Continue
            } else {
                Flow::Close
            };
        }
        if arg == s.shared.cfg.password {
            s.authed = true;
            s.send(&wire::command_reply("+OK accepted")).await;
            return if s.shared.cfg.drop_after_auth {
                Flow::Close
            } else {
                Flow::Continue
            };
        }
        s.send(&wire::command_reply("-ERR invalid")).await;
        s.send(&wire::inbound_disconnect_notice()).await;
        return Flow::Close;
    }
    let tokens: Vec<&str> = arg.split_whitespace().collect();
    let reply = |t: &str| wire::command_reply(t);
    let out: Vec<u8> = match verb.as_str() {
        "auth" => reply("+OK accepted"),
        "event" => {
            let fmt = tokens
                .first()
                .copied()
                .unwrap_or("plain")
                .to_ascii_lowercase();
            if !matches!(fmt.as_str(), "plain" | "json" | "xml") {
                reply("-ERR invalid format")
            } else {
                s.subs.json = fmt == "json";
                s.subs.subscribe(&tokens[1..]);
                reply(&format!("+OK event listener enabled {fmt}"))
            }
        }
        "nixevent" => {
            s.subs.nix(&tokens);
            reply("+OK events nixed")
        }
        "noevents" => {
            s.subs = Subs {
                filters: std::mem::take(&mut s.subs.filters),
                ..Subs::default()
            };
            reply("+OK no longer listening for events")
        }
        "myevents" => {
            let toks: Vec<&str> = MYEVENTS.to_vec();
            s.subs.subscribe(&toks);
            if let Some(u) = tokens.first() {
                s.subs.filters.push(("Unique-ID".into(), (*u).to_string()));
            }
            reply("+OK Events Enabled")
        }
        "filter" => {
            let mut it = arg.splitn(2, ' ');
            let name = it.next().unwrap_or("").to_string();
            let val = it.next().map(|v| v.trim().to_string());
            if name.eq_ignore_ascii_case("delete") {
                let v = val.unwrap_or_default();
                let mut p = v.splitn(2, ' ');
                let h = p.next().unwrap_or("").to_string();
                let hv = p.next().map(str::to_string);
                if h.eq_ignore_ascii_case("all") {
                    s.subs.filters.clear();
                } else {
                    s.subs.filters.retain(|(k, fv)| {
                        !(k.eq_ignore_ascii_case(&h) && hv.as_ref().is_none_or(|x| x == fv))
                    });
                }
                reply(&format!(
                    "+OK filter deleted. [{h}]=[{}]",
                    hv.unwrap_or_default()
                ))
            } else if let Some(v) = val.filter(|v| !v.is_empty()) {
                s.subs.filters.push((name.clone(), v.clone()));
                reply(&format!("+OK filter added. [{name}]=[{v}]"))
            } else {
                reply("-ERR invalid syntax")
            }
        }
        "linger" => reply("+OK will linger"),
        "nolinger" => reply("+OK will not linger"),
        "exit" => {
            s.send(&reply("+OK bye")).await;
            s.send(&wire::inbound_disconnect_notice()).await;
            return Flow::Close;
        }
        "sendmsg" => {
            let uuid = tokens
                .first()
                .map(|u| u.to_string())
                .or_else(|| cmd.header("Unique-ID").map(str::to_string));
            if cmd
                .header("call-command")
                .is_some_and(|c| c.eq_ignore_ascii_case("hangup"))
            {
                if let Some(u) = uuid {
                    let cause = cmd
                        .header("hangup-cause")
                        .unwrap_or("NORMAL_CLEARING")
                        .to_string();
                    kill_call(&s.shared, &u, &cause);
                }
            }
            reply("+OK")
        }
        "api" => match api(s, &arg, None).await {
            ApiOut::Now(body) => wire::api_response(&body),
            ApiOut::Later(rx) => {
                // A blocking api holds the connection: no command is read and no event is
                // delivered until it returns (events queue up, as on the real switch).
                tokio::select! {
                    r = rx => match r { Ok(body) => wire::api_response(&body), Err(_) => return Flow::Close },
                    c = ctl.recv() => match c {
                        Some(SessionCtl::Drop) | None => return Flow::Close,
                        Some(SessionCtl::Inject(b)) => { s.send(&b).await; return Flow::Continue; }
                    },
                    _ = s.shared.cancel.cancelled() => return Flow::Close,
                }
            }
            ApiOut::Mute => {
                s.muted = true;
                Vec::new()
            }
        },
        "bgapi" => {
            let job = cmd
                .header("Job-UUID")
                .map(str::to_string)
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            if is_silent_originate(&s.shared, &arg) {
                s.muted = true;
                record_originate(&s.shared, s.id, &arg, Some(job));
                return Flow::Continue;
            }
            let r = format!(
                "Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job}\nJob-UUID: {job}\n\n"
            );
            if !s.send(r.as_bytes()).await {
                return Flow::Close;
            }
            match api(s, &arg, Some(job.clone())).await {
                ApiOut::Now(body) => {
                    publish_bg_job(&s.shared, &job, &arg, &body);
                }
                ApiOut::Later(_) | ApiOut::Mute => {}
            }
            Vec::new()
        }
        _ => reply("-ERR command not found"),
    };
    if !out.is_empty() && !s.send(&out).await {
        return Flow::Close;
    }
    Flow::Continue
}

enum ApiOut {
    Now(Vec<u8>),
    Later(oneshot::Receiver<Vec<u8>>),
    Mute,
}

fn is_silent_originate(shared: &Shared, arg: &str) -> bool {
    let Some(rest) = arg.strip_prefix("originate ") else {
        return false;
    };
    Originate::parse(rest)
        .ok()
        .and_then(|o| o.legs().first().map(|l| shared.script_for(l)))
        .is_some_and(|s| s == CallScript::Silent)
}

fn record_originate(
    shared: &Shared,
    conn: usize,
    arg: &str,
    job: Option<String>,
) -> Option<(usize, Originate)> {
    let rest = arg.strip_prefix("originate")?.trim_start();
    let o = Originate::parse(rest).ok()?;
    let mut g = shared.originates.lock().unwrap_or_else(|e| e.into_inner());
    g.push(OriginateRecord {
        conn,
        background: job.is_some(),
        job_uuid: job,
        originate: o.clone(),
        leg_uuids: Vec::new(),
        at: SystemTime::now(),
        result: None,
    });
    Some((g.len() - 1, o))
}

fn template_event(cap: &str, name: &str) -> Event {
    Capture::load(cap)
        .events_ref()
        .iter()
        .map(|(_, e)| e)
        .find(|e| e.name() == name)
        .cloned()
        .unwrap_or_else(|| panic!("fakefs: no {name} template in {cap}"))
}

/// FreeSWITCH's `send_heartbeat` (switch_core.c): a HEARTBEAT event every `interval`, as in
/// the captures, with the uptime and session count of this fake.
async fn heartbeats(shared: Arc<Shared>, interval: Duration) {
    let template = template_event("inbound-txfax-t38-ok", "HEARTBEAT");
    let started = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if shared.silent.load(Ordering::SeqCst) {
            continue;
        }
        let mut ev = template.clone();
        let ms = started.elapsed().as_millis();
        ev.set("Uptime-msec", &ms.to_string());
        let n = shared.calls.lock().unwrap_or_else(|e| e.into_inner()).len();
        ev.set("Session-Count", &n.to_string());
        shared.bus.publish_as(ev, false);
    }
}

fn publish_api_event(shared: &Shared, cmd: &str, arg: &str) {
    // Built once: extracting a template re-reads the whole capture, and a listing sends
    // thousands of `db` commands.
    static API_TEMPLATE: std::sync::OnceLock<Event> = std::sync::OnceLock::new();
    let mut ev = API_TEMPLATE
        .get_or_init(|| template_event("inbound-txfax-t38-ok", "API"))
        .clone();
    ev.set("API-Command", &url_encode(cmd));
    ev.set("API-Command-Argument", &url_encode(arg));
    shared.bus.publish(ev);
}

fn publish_bg_job(shared: &Shared, job: &str, cmdline: &str, body: &[u8]) {
    let mut ev = template_event("inbound-txfax-t38-ok", "BACKGROUND_JOB");
    let (cmd, arg) = cmdline.split_once(' ').unwrap_or((cmdline, ""));
    ev.set("Job-UUID", job);
    ev.set("Job-Command", &url_encode(cmd));
    ev.set("Job-Command-Arg", &url_encode(arg));
    ev.body = Some(body.to_vec());
    shared.bus.publish(ev);
}

fn kill_call(shared: &Shared, uuid: &str, cause: &str) -> bool {
    let g = shared.calls.lock().unwrap_or_else(|e| e.into_inner());
    match g.get(uuid) {
        Some(c) => c.kill.send(cause.to_string()).is_ok(),
        None => false,
    }
}

async fn api(s: &mut Session, cmdline: &str, job: Option<String>) -> ApiOut {
    let cmdline = cmdline.trim();
    let (cmd, arg) = match cmdline.split_once(char::is_whitespace) {
        Some((c, a)) => (c, a.trim()),
        None => (cmdline, ""),
    };
    let shared = s.shared.clone();
    let body: String = match cmd {
        "originate" => {
            if job.is_none() && is_silent_originate(&shared, cmdline) {
                record_originate(&shared, s.id, cmdline, None);
                return ApiOut::Mute;
            }
            let Some((idx, o)) = record_originate(&shared, s.id, cmdline, job.clone()) else {
                let b = "-USAGE: <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] [<context>] [<cid_name>] [<cid_num>] [<timeout_sec>]\n";
                return ApiOut::Now(b.as_bytes().to_vec());
            };
            let (tx, rx) = oneshot::channel();
            let sink = match job {
                Some(j) => Sink::Bg(j),
                None => Sink::Api(tx),
            };
            let ctl = shared.conn(s.id, |c| c.ctl.clone());
            tokio::spawn(run_originate(shared.clone(), ctl, o, sink, idx));
            return ApiOut::Later(rx);
        }
        "db" => {
            if shared.cfg.db_silent {
                return ApiOut::Mute;
            }
            let r = shared.db.api(arg);
            publish_api_event(&shared, cmd, arg);
            r
        }
        "uuid_kill" => {
            let mut it = arg.split_whitespace();
            let uuid = it.next().unwrap_or("").to_string();
            let cause = it.next().unwrap_or("NORMAL_CLEARING").to_string();
            shared
                .kills
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(uuid.clone());
            if kill_call(&shared, &uuid, &cause) {
                "+OK\n".into()
            } else {
                publish_api_event(&shared, cmd, arg);
                "-ERR No such channel!\n".into()
            }
        }
        "uuid_exists" => {
            let known = shared
                .calls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(arg)
                || shared
                    .foreign
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(arg);
            publish_api_event(&shared, cmd, arg);
            if known { "true" } else { "false" }.into()
        }
        "status" => {
            publish_api_event(&shared, cmd, arg);
            let n = shared.calls.lock().unwrap_or_else(|e| e.into_inner()).len();
            format!(
                "UP 0 years, 0 days, 0 hours, 1 minute, 0 seconds, 0 milliseconds, 0 microseconds\nFreeSWITCH (Version 1.10.12-release 64bit) is ready\n{n} session(s) since startup\n{n} session(s) - peak {n}, last 5min {n}\n0 session(s) per Sec out of max 30, peak 1, last 5min 1\n1000 session(s) max\nmin idle cpu 0.00/99.00\nCurrent Stack Size/Max 240K/8192K\n"
            )
        }
        "version" => {
            publish_api_event(&shared, cmd, arg);
            "FreeSWITCH Version 1.10.12-release~64bit (-release 64bit)\n".into()
        }
        _ => format!("-ERR {cmd} Command not found!\n"),
    };
    // mod_event_socket turns an empty api output into this.
    let body = if body.is_empty() {
        "-ERR no reply\n".to_string()
    } else {
        body
    };
    ApiOut::Now(body.into_bytes())
}

enum Sink {
    Api(oneshot::Sender<Vec<u8>>),
    Bg(String),
}

fn cause_of(script: &CallScript) -> String {
    match script {
        CallScript::Busy => "USER_BUSY".into(),
        CallScript::Rejected(c) => c.clone(),
        CallScript::NoAnswer(_) => "NO_ANSWER".into(),
        CallScript::Unreachable => "NORMAL_TEMPORARY_FAILURE".into(),
        CallScript::GatewayDown => "GATEWAY_DOWN".into(),
        CallScript::InvalidGateway => "INVALID_GATEWAY".into(),
        _ => "NORMAL_CLEARING".into(),
    }
}

fn leg_uuid(o: &Originate, leg: &Leg) -> Option<String> {
    leg.vars
        .iter()
        .rev()
        .find(|(k, _)| k == "origination_uuid")
        .or_else(|| o.vars.iter().rev().find(|(k, _)| k == "origination_uuid"))
        .map(|(_, v)| v.clone())
}

fn var_of(o: &Originate, leg: &Leg, name: &str) -> Option<String> {
    leg.vars
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .or_else(|| o.vars.iter().rev().find(|(k, _)| k == name))
        .map(|(_, v)| v.clone())
}

enum LegEnd {
    Finished,
    Killed,
    Dropped,
}

struct ResultSlot {
    sink: Option<Sink>,
    text: Option<String>,
    arg: String,
    rec: usize,
}

impl ResultSlot {
    fn emit(&mut self, shared: &Shared, template: Option<Event>) {
        let Some(text) = self.text.take() else { return };
        shared.update_orig(self.rec, |r| r.result = Some(text.clone()));
        match self.sink.take() {
            Some(Sink::Api(tx)) => {
                let _ = tx.send(text.into_bytes());
            }
            Some(Sink::Bg(job)) => match template {
                Some(mut ev) => {
                    ev.set("Job-UUID", &job);
                    ev.body = Some(text.into_bytes());
                    shared.bus.publish(ev);
                }
                None => publish_bg_job(
                    shared,
                    &job,
                    &format!("originate {}", self.arg),
                    text.as_bytes(),
                ),
            },
            None => {}
        }
    }
}

async fn run_originate(
    shared: Arc<Shared>,
    conn_ctl: Option<mpsc::UnboundedSender<SessionCtl>>,
    o: Originate,
    sink: Sink,
    rec: usize,
) {
    let legs: Vec<Leg> = o.legs().into_iter().cloned().collect();
    let mut slot = ResultSlot {
        sink: Some(sink),
        text: None,
        arg: o.raw.clone(),
        rec,
    };
    for (i, leg) in legs.iter().enumerate() {
        let last = i + 1 == legs.len();
        let uuid = leg_uuid(&o, leg).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        shared.update_orig(rec, |r| r.leg_uuids.push(uuid.clone()));
        let mut script = shared.script_for(leg);
        let is_fax_app = o.app.as_deref() == Some("txfax");
        let file = if is_fax_app {
            o.app_arg.clone().unwrap_or_default()
        } else {
            String::new()
        };
        let file_pages = shared
            .cfg
            .local_path(&file)
            .and_then(|p| tiff::count_pages(&p));
        if script.answers()
            && !matches!(script, CallScript::Silent | CallScript::FileMissing)
            && file_pages.is_none()
        {
            script = CallScript::FileMissing;
        }
        let file_pages = file_pages.unwrap_or(0) as u32;
        let start = var_of(&o, leg, "fax_start_page")
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
            .max(0) as u32;
        let end = var_of(&o, leg, "fax_end_page")
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|v| *v >= 0)
            .map(|v| v as u32)
            .unwrap_or(u32::MAX)
            .min(file_pages.saturating_sub(1));
        let send_pages = if file_pages == 0 || start > end {
            0
        } else {
            end - start + 1
        };
        let mut vars = o.vars.clone();
        vars.extend(leg.vars.iter().cloned());
        let cv = CallValues {
            uuid: uuid.clone(),
            job: match &slot.sink {
                Some(Sink::Bg(j)) => Some(j.clone()),
                _ => None,
            },
            arg: o.raw.clone(),
            vars,
            file: file.clone(),
            number: leg.number.clone(),
            gateway: leg.gateway.clone(),
            cid_num: var_of(&o, leg, "origination_caller_id_number").unwrap_or_default(),
            cid_name: var_of(&o, leg, "origination_caller_id_name").unwrap_or_default(),
            now_us: now_us(),
        };
        // As mod_spandsp does: with `fax_enable_t38=false` on the leg the fax goes over G.711
        // (the G.711 capture), and every spandsp event says `fax-t38-status: off`.
        let t38_off =
            var_of(&o, leg, "fax_enable_t38").is_some_and(|v| v.eq_ignore_ascii_case("false"));
        if t38_off {
            script = script.without_t38();
        }
        let (mut steps, mut outcome) = plan::leg_steps(&script, &cv, send_pages);
        if t38_off {
            outcome.t38 = super::scripts::T38::Off;
        }
        let next_same_uuid = legs
            .get(i + 1)
            .is_some_and(|n| leg_uuid(&o, n).as_deref() == Some(uuid.as_str()));
        let mut stop_after = script.answers();
        slot.text = if script.answers() {
            Some(format!("+OK {uuid}\n"))
        } else if last {
            Some(format!("-ERR {}\n", cause_of(&script)))
        } else if script.creates_channel() && next_same_uuid {
            // Leg 2 would ask for the same UUID while leg 1's session still exists.
            stop_after = true;
            Some("-ERR DESTINATION_OUT_OF_ORDER\n".into())
        } else {
            None
        };
        if slot.text.is_none() {
            steps.retain(|s| {
                !matches!(s.kind, StepKind::Result(_))
                    && !s.event().is_some_and(|e| {
                        e.name() == "API" && e.get("API-Command") == Some("originate")
                    })
            });
        }
        let local = var_of(&o, leg, "fax_ident").unwrap_or_else(|| "SpanDSP Fax Ident".into());
        let play = LegPlay {
            steps,
            outcome,
            total: file_pages,
            local: &local,
        };
        let end = run_leg(&shared, &conn_ctl, &cv, play, &mut slot).await;
        if !matches!(end, LegEnd::Finished) || stop_after || last {
            return;
        }
    }
}

/// What one leg plays: its steps, the fax outcome it reports, the document's page count and
/// the local station id.
struct LegPlay<'a> {
    steps: Vec<Step>,
    outcome: FaxOutcome,
    total: u32,
    local: &'a str,
}

async fn run_leg(
    shared: &Arc<Shared>,
    conn_ctl: &Option<mpsc::UnboundedSender<SessionCtl>>,
    cv: &CallValues,
    play: LegPlay<'_>,
    slot: &mut ResultSlot,
) -> LegEnd {
    let LegPlay {
        steps,
        mut outcome,
        total,
        local,
    } = play;
    let (kill_tx, mut kill_rx) = mpsc::unbounded_channel::<String>();
    let registered = steps.iter().any(|s| {
        s.event()
            .is_some_and(|e| e.uuid() == Some(cv.uuid.as_str()))
    });
    if registered {
        shared
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cv.uuid.clone(), CallCtl { kill: kill_tx });
    }
    let remote = shared.cfg.remote_station_id.clone();
    let mut answered = false;
    let mut so_far = 0u32;
    let mut killed: Option<String> = None;
    let scale = shared.cfg.time_scale.max(0.0);
    let unregister = |shared: &Shared| {
        shared
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&cv.uuid);
    };
    let mut queue: std::collections::VecDeque<Step> = steps.into();
    let mut in_tail = false;
    let mut was_killed = false;
    while let Some(step) = queue.pop_front() {
        let wait =
            Duration::from_micros((step.delay_ms as f64 * scale * 1000.0) as u64) + step.extra;
        let wait_kill = matches!(step.kind, StepKind::WaitKill);
        if !in_tail && wait.is_zero() && !wait_kill {
            // No delay (time scale 0, an instant switch): a timer would still take a tick of
            // the clock, so the step only yields, then sees a kill that is already there.
            tokio::task::yield_now().await;
            if shared.cancel.is_cancelled() {
                unregister(shared);
                return LegEnd::Dropped;
            }
            if let Ok(c) = kill_rx.try_recv() {
                killed = Some(c);
            }
        } else if !in_tail {
            let cause = tokio::select! {
                _ = shared.cancel.cancelled() => { unregister(shared); return LegEnd::Dropped; }
                k = kill_rx.recv(), if registered => k,
                _ = tokio::time::sleep(wait), if !wait_kill => None,
            };
            if let Some(c) = cause {
                killed = Some(c);
            }
        } else if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        } else {
            tokio::task::yield_now().await;
        }
        if let Some(cause) = killed.take() {
            // Switch to the uuid_kill ending; the current step is abandoned.
            if answered {
                slot.emit(shared, None);
            }
            outcome.success = false;
            outcome.code = 49;
            queue = plan::kill_steps(answered, &cause, cv).into();
            if !answered {
                slot.text = Some(format!("-ERR {cause}\n"));
            }
            in_tail = true;
            was_killed = true;
            continue;
        }
        match step.kind {
            StepKind::Ev(mut ev) => {
                match (ev.name(), ev.subclass().as_str()) {
                    ("CHANNEL_ANSWER", _) => answered = true,
                    ("CUSTOM", "spandsp::txfaxpageresult") => so_far += 1,
                    _ => {}
                }
                if ev.uuid() == Some(cv.uuid.as_str()) {
                    plan::apply_fax(&mut ev, &outcome, so_far, total, local, &remote);
                }
                if ev.name() == "CHANNEL_DESTROY" {
                    unregister(shared);
                }
                shared.bus.publish(ev);
            }
            StepKind::Result(ev) => slot.emit(shared, Some(ev)),
            StepKind::WaitKill => {
                let cause = tokio::select! {
                    _ = shared.cancel.cancelled() => { unregister(shared); return LegEnd::Dropped; }
                    k = kill_rx.recv() => k,
                };
                if let Some(c) = cause {
                    killed = Some(c);
                    queue.push_front(Step {
                        delay_ms: 0,
                        extra: Duration::ZERO,
                        kind: StepKind::Ev(Event {
                            headers: vec![],
                            body: None,
                        }),
                    });
                    // The next loop turn sees `killed` and switches to the kill ending.
                    in_tail = false;
                }
            }
            StepKind::Drop => {
                if let Some(tx) = conn_ctl {
                    let _ = tx.send(SessionCtl::Drop);
                }
                unregister(shared);
                return LegEnd::Dropped;
            }
        }
    }
    unregister(shared);
    if was_killed {
        LegEnd::Killed
    } else {
        LegEnd::Finished
    }
}
