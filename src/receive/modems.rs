//! fsfaxd's virtual modems `freeswitch0..N-1`: what faxq and faxstat see of them.
//!
//! One shared table (behind a mutex) holds each modem's facts: a reception's hold (a lease
//! taken by a call), locked or sending for faxq/fsfaxsend, or down. Every change is turned into
//! the status text and the faxq messages of the effective `ModemState` and queued to one
//! writer thread, so a
//! call never waits on a FIFO (a full pipe can stall a write for a second) and messages leave
//! in order. When faxq is not running the messages are dropped, and the latest state of every
//! modem is sent again when faxq says `HELLO` and every [`RESYNC_INTERVAL`] while it is away.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::hylafax::Spool;
use crate::hylafax::modem::{
    self, DeviceFifoReader, DeviceMsg, FaxqFifo, FaxqMessage, ModemError, RecvEvent, VirtualModem,
    status,
};

/// The name a reception gets when every virtual modem is busy: FreeSWITCH still has the line,
/// so the fax is received, but faxq hears nothing about it.
pub const OVERFLOW_MODEM: &str = "freeswitch-overflow";
/// How often the modem states are sent again while faxq is unreachable.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// What faxq or fsfaxsend is doing with a modem (independent of receptions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outbound {
    Idle,
    /// faxq wrote `L` (it assigned the modem to a job).
    Locked,
    /// fsfaxsend wrote `SB`.
    Sending,
}

/// Whether a reception holds a modem.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Inbound {
    Free,
    /// A call took the modem; its commid once it has one.
    Held {
        commid: Option<String>,
    },
}

#[derive(Debug)]
struct Slot {
    modem: VirtualModem,
    inbound: Inbound,
    outbound: Outbound,
    /// fsfaxd is stopping: the modem is down whatever else it does.
    down: bool,
}

/// What a modem shows faxq and faxstat: the effective state of its slot.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ModemState {
    /// fsfaxd is stopping (`+dev:D`, "Down").
    Down,
    /// A reception holds it (`+dev:B`, its commid once known).
    Receiving { commid: Option<String> },
    /// fsfaxsend said `SB` (`+dev:U`).
    Sending,
    /// faxq said `L` (it counts the modem busy itself).
    Locked,
    /// Free for anything (`+dev:N`, `+dev:R`).
    Idle,
}

impl Slot {
    fn state(&self) -> ModemState {
        if self.down {
            return ModemState::Down;
        }
        if let Inbound::Held { commid } = &self.inbound {
            return ModemState::Receiving {
                commid: commid.clone(),
            };
        }
        match self.outbound {
            Outbound::Sending => ModemState::Sending,
            Outbound::Locked => ModemState::Locked,
            Outbound::Idle => ModemState::Idle,
        }
    }
}

impl ModemState {
    /// The status file's text.
    fn status(&self) -> &'static str {
        match self {
            ModemState::Down => status::DOWN,
            ModemState::Receiving { .. } => status::RECEIVING,
            ModemState::Sending => status::SENDING,
            ModemState::Locked => status::LOCKED,
            ModemState::Idle => status::IDLE,
        }
    }
}

/// One write for the writer thread.
#[derive(Debug)]
enum Action {
    Status(VirtualModem, &'static str),
    Faxq(FaxqMessage),
    /// Sent back when everything before it was written (used at shutdown).
    Flush(std::sync::mpsc::Sender<()>),
}

#[derive(Debug)]
struct Inner {
    slots: Mutex<Vec<Slot>>,
    writer: mpsc::UnboundedSender<Action>,
    faxq_unreachable: Arc<AtomicBool>,
    caps: String,
}

/// The virtual modems. Clone freely.
#[derive(Debug, Clone)]
pub struct Modems {
    inner: Arc<Inner>,
}

impl Modems {
    /// Creates `FIFO.<dev>`, `etc/config.<dev>` for `freeswitch0..count-1` (handing the FIFOs to
    /// uucp when running as root, since faxq skips FIFOs it cannot open), starts the writer
    /// thread and announces every modem ready.
    pub fn create(spool: &Spool, count: u32) -> Result<Modems, ModemError> {
        let owner = fax_user();
        let mut slots = Vec::new();
        for i in 0..count {
            let dev = format!("freeswitch{i}");
            let modem = VirtualModem::create(spool, &dev)?;
            if let Some((uid, gid)) = owner {
                // Status first so set_owner hands both files over.
                modem.write_status(status::INITIALIZING)?;
                modem.set_owner(uid, gid)?;
            }
            slots.push(Slot {
                modem,
                inbound: Inbound::Free,
                outbound: Outbound::Idle,
                down: false,
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let unreachable = Arc::new(AtomicBool::new(false));
        let faxq = FaxqFifo::new(spool);
        let flag = unreachable.clone();
        std::thread::Builder::new()
            .name("faxq-writer".into())
            .spawn(move || write_loop(rx, &faxq, &flag))
            .map_err(|source| ModemError::FifoOpen {
                path: spool.faxq_fifo(),
                source,
            })?;
        let modems = Modems {
            inner: Arc::new(Inner {
                slots: Mutex::new(slots),
                writer: tx,
                faxq_unreachable: unreachable,
                caps: modem::DEFAULT_CAPS.to_owned(),
            }),
        };
        modems.announce_all();
        Ok(modems)
    }

    /// Device names, in order.
    pub fn names(&self) -> Vec<String> {
        self.lock()
            .iter()
            .map(|s| s.modem.dev().to_owned())
            .collect()
    }

    /// (modems, modems held by a reception), for the metrics.
    pub fn usage(&self) -> (usize, usize) {
        let slots = self.lock();
        let busy = slots
            .iter()
            .filter(|s| matches!(s.inbound, Inbound::Held { .. }))
            .count();
        (slots.len(), busy)
    }

    /// Each modem's name, what it does (`idle`, `receiving`, `sending`, `locked` by faxq for
    /// a job, `down`) and the commid of its reception, for `fsfaxd status`.
    pub fn snapshot(&self) -> Vec<(String, &'static str, Option<String>)> {
        self.lock()
            .iter()
            .map(|s| {
                let (state, commid) = match s.state() {
                    ModemState::Down => ("down", None),
                    ModemState::Receiving { commid } => ("receiving", commid),
                    ModemState::Sending => ("sending", None),
                    ModemState::Locked => ("locked", None),
                    ModemState::Idle => ("idle", None),
                };
                (s.modem.dev().to_owned(), state, commid)
            })
            .collect()
    }

    /// Takes the first modem that is neither receiving, locked/sending nor down, and shows it
    /// busy (`+dev:B`, "Answering the phone"). `None` when every modem is in use.
    pub fn acquire(&self) -> Option<Lease> {
        self.acquire_preferring("")
    }

    /// [`Modems::acquire`], taking modem `dev` when it is free (a reception recovered after a
    /// restart goes back on the modem it was taken on).
    pub fn acquire_preferring(&self, dev: &str) -> Option<Lease> {
        let mut slots = self.lock();
        let idle = |s: &Slot| s.state() == ModemState::Idle;
        let idx = slots
            .iter()
            .position(|s| s.modem.dev() == dev && idle(s))
            .or_else(|| slots.iter().position(idle))?;
        let slot = &mut slots[idx];
        slot.inbound = Inbound::Held { commid: None };
        let dev = slot.modem.dev().to_owned();
        let modem = slot.modem.clone();
        drop(slots);
        self.faxq(FaxqMessage::busy(&dev));
        self.send(Action::Status(modem, status::ANSWERING));
        Some(Lease {
            modems: Some(self.clone()),
            index: idx,
            dev,
        })
    }

    /// Sends the current state of every modem again (faxq restarted, or it was unreachable).
    pub fn announce_all(&self) {
        let n = self.lock().len();
        for i in 0..n {
            self.announce(i);
        }
    }

    /// Re-announces everything if faxq was unreachable since the last try.
    pub fn resync_if_unreachable(&self) {
        if self.inner.faxq_unreachable.load(Ordering::Acquire) {
            tracing::debug!("faxq was unreachable; sending the modem states again");
            self.announce_all();
        }
    }

    /// Marks every modem down (`+dev:D`, "Down") and waits (bounded) until the writer has
    /// written everything queued.
    pub async fn shut_down(&self) {
        let n = {
            let mut slots = self.lock();
            for s in slots.iter_mut() {
                s.down = true;
            }
            slots.len()
        };
        for i in 0..n {
            self.announce(i);
        }
        self.flushed().await;
    }

    /// Waits (bounded) until the writer has written everything queued so far: the status
    /// files and faxq's messages.
    pub async fn flushed(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.send(Action::Flush(tx));
        let waited = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
        if !waited {
            tracing::warn!("faxq FIFO writer did not finish within 10s");
        }
    }

    /// Fills each empty `etc/config.<dev>` with the number and identifier (see
    /// [`VirtualModem::fill_config`]); failures are warnings.
    pub fn fill_configs(&self, number: &str, ident: &str) {
        let modems: Vec<VirtualModem> = self.lock().iter().map(|s| s.modem.clone()).collect();
        for m in modems {
            match m.fill_config(number, ident) {
                Ok(true) => tracing::info!(modem = m.dev(), number, ident, "modem config filled"),
                Ok(false) => {}
                Err(ModemError::Config { path, source })
                    if source.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    tracing::warn!(
                        "{}: cannot fill the modem config with the number and identifier \
                         (faxstat -s shows the modem without them): {source}; give the file \
                         to the spool's owner (chown uucp:uucp) or start fsfaxd as root",
                        path.display()
                    )
                }
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }

    /// Follows `FIFO.<dev>` of every modem (faxq's `HELLO`/`L`, fsfaxsend's `SB`/`SR`).
    pub fn spawn_fifo_readers(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let slots: Vec<(usize, VirtualModem)> = self
            .lock()
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.modem.clone()))
            .collect();
        slots
            .into_iter()
            .map(|(i, modem)| {
                let me = self.clone();
                tokio::spawn(async move { me.read_fifo(i, modem).await })
            })
            .collect()
    }

    async fn read_fifo(&self, idx: usize, modem: VirtualModem) {
        loop {
            let mut reader = match DeviceFifoReader::open(modem.fifo_path()) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(modem = modem.dev(), "{e}; retrying in 5s");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            loop {
                match reader.recv().await {
                    Ok(msg) => self.on_device_message(idx, modem.dev(), msg),
                    Err(e) => {
                        tracing::error!(modem = modem.dev(), "{e}; reopening in 1s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                }
            }
        }
    }

    fn on_device_message(&self, idx: usize, dev: &str, msg: DeviceMsg) {
        tracing::debug!(modem = dev, "FIFO message {msg:?}");
        {
            let mut slots = self.lock();
            let Some(slot) = slots.get_mut(idx) else {
                return;
            };
            match &msg {
                // faxq restarted: a lock it held before is gone with it.
                DeviceMsg::Hello if slot.outbound == Outbound::Locked => {
                    slot.outbound = Outbound::Idle
                }
                DeviceMsg::Hello => {}
                DeviceMsg::Lock => slot.outbound = Outbound::Locked,
                DeviceMsg::SendBegin => slot.outbound = Outbound::Sending,
                DeviceMsg::SendReady => slot.outbound = Outbound::Idle,
                DeviceMsg::Quit => {
                    tracing::info!(
                        modem = dev,
                        "ignoring quit request: fsfaxd serves every modem; stop it with SIGTERM"
                    );
                    return;
                }
                DeviceMsg::Other(text) => {
                    tracing::info!(modem = dev, "ignoring unknown FIFO message {text:?}");
                    return;
                }
            }
        }
        if msg == DeviceMsg::Hello {
            tracing::info!(modem = dev, "faxq said HELLO; announcing the modem");
        }
        self.announce(idx);
    }

    /// Queues the status text and faxq messages of modem `idx`'s effective state.
    fn announce(&self, idx: usize) {
        let (modem, state) = {
            let slots = self.lock();
            let Some(s) = slots.get(idx) else {
                return;
            };
            (s.modem.clone(), s.state())
        };
        let dev = modem.dev().to_owned();
        let text = state.status();
        match &state {
            ModemState::Down => self.faxq(FaxqMessage::down(&dev)),
            ModemState::Receiving { commid } => {
                self.faxq(FaxqMessage::busy(&dev));
                if let Some(commid) = commid {
                    self.faxq(FaxqMessage::commid(&dev, Some(commid)));
                }
            }
            ModemState::Sending => self.faxq(FaxqMessage::in_use(&dev)),
            // faxq already counts a modem it locked as busy.
            ModemState::Locked => {}
            ModemState::Idle => self.faxq(FaxqMessage::number(&dev, "")),
        }
        self.send(Action::Status(modem, text));
        if state == ModemState::Idle {
            self.faxq(FaxqMessage::ready(&dev, &self.inner.caps));
        }
    }

    fn release(&self, idx: usize, dev: &str) {
        self.faxq(FaxqMessage::recv(dev, RecvEvent::End, ""));
        self.faxq(FaxqMessage::commid(dev, None));
        if let Some(slot) = self.lock().get_mut(idx) {
            slot.inbound = Inbound::Free;
        }
        self.announce(idx);
    }

    fn set_commid(&self, idx: usize, commid: &str) {
        if let Some(slot) = self.lock().get_mut(idx) {
            slot.inbound = Inbound::Held {
                commid: Some(commid.to_owned()),
            };
        }
    }

    fn faxq(&self, msg: Result<FaxqMessage, ModemError>) {
        match msg {
            Ok(m) => self.send(Action::Faxq(m)),
            Err(e) => tracing::warn!("{e}"),
        }
    }

    fn status(&self, idx: usize, text: &'static str) {
        let modem = self.lock().get(idx).map(|s| s.modem.clone());
        if let Some(modem) = modem {
            self.send(Action::Status(modem, text));
        }
    }

    fn send(&self, action: Action) {
        // Only fails once the writer thread is gone (process exit).
        let _ = self.inner.writer.send(action);
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Slot>> {
        // A poisoned lock only means a panic elsewhere; the table itself is always consistent.
        self.inner
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A modem held by one reception. Dropping it ends the reception for faxq (`@dev:E`,
/// `+dev:I`) and makes the modem ready again, so no path out of a call can leak a busy modem.
#[derive(Debug)]
pub struct Lease {
    modems: Option<Modems>,
    index: usize,
    dev: String,
}

impl Lease {
    /// A reception without a virtual modem (`freeswitch-overflow` or `freeswitch`): the name
    /// goes to DynamicConfig, xferfaxlog and faxrcvd, and faxq hears nothing.
    pub fn unaccounted(name: &str) -> Lease {
        Lease {
            modems: None,
            index: 0,
            dev: name.to_owned(),
        }
    }

    /// The modem name for DynamicConfig, xferfaxlog and faxrcvd.
    pub fn name(&self) -> &str {
        &self.dev
    }

    /// The reception got its commid: `+dev:I<commid>`, `@dev:B`.
    pub fn commid(&self, commid: &str) {
        if let Some(m) = &self.modems {
            m.set_commid(self.index, commid);
            m.faxq(FaxqMessage::commid(&self.dev, Some(commid)));
            m.faxq(FaxqMessage::recv(&self.dev, RecvEvent::Begin, ""));
        }
    }

    /// rxfax started: "Receiving facsimile", `@dev:S`.
    pub fn receiving(&self) {
        if let Some(m) = &self.modems {
            m.status(self.index, status::RECEIVING);
            m.faxq(FaxqMessage::recv(&self.dev, RecvEvent::Start, ""));
        }
    }

    /// A page arrived: `@dev:P`.
    pub fn page(&self, n: u32) {
        if let Some(m) = &self.modems {
            m.faxq(FaxqMessage::recv(
                &self.dev,
                RecvEvent::Page,
                &n.to_string(),
            ));
        }
    }

    /// The document is complete: `@dev:D`.
    pub fn document(&self) {
        if let Some(m) = &self.modems {
            m.faxq(FaxqMessage::recv(&self.dev, RecvEvent::Document, ""));
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(m) = self.modems.take() {
            m.release(self.index, &self.dev);
        }
    }
}

/// The writer thread: one action at a time, in order.
fn write_loop(mut rx: mpsc::UnboundedReceiver<Action>, faxq: &FaxqFifo, unreachable: &AtomicBool) {
    while let Some(action) = rx.blocking_recv() {
        match action {
            Action::Status(modem, text) => {
                if let Err(e) = modem.write_status(text) {
                    tracing::warn!("{e}");
                }
            }
            Action::Faxq(msg) => match faxq.send(&msg) {
                Ok(()) => {
                    if unreachable.swap(false, Ordering::AcqRel) {
                        tracing::info!("faxq is reachable again");
                    }
                }
                Err(ModemError::FaxqNotRunning { path }) => {
                    if !unreachable.swap(true, Ordering::AcqRel) {
                        tracing::warn!(
                            fifo = %path.display(),
                            "faxq is not running; modem states will be sent when it is back"
                        );
                    }
                }
                Err(e) => {
                    unreachable.store(true, Ordering::Release);
                    tracing::warn!("{e}");
                }
            },
            Action::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// `uucp`'s ids when we run as root (faxq runs as uucp and must open our FIFOs).
fn fax_user() -> Option<(u32, u32)> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    match nix::unistd::User::from_name("uucp") {
        Ok(Some(u)) => Some((u.uid.as_raw(), u.gid.as_raw())),
        _ => {
            tracing::warn!("running as root but there is no user uucp; FIFOs stay root's");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn spool() -> (tempfile::TempDir, Spool) {
        let dir = tempfile::tempdir().unwrap();
        for d in ["etc", "status", "log", "recvq"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let spool = Spool::new(dir.path());
        (dir, spool)
    }

    fn status_of(spool: &Spool, dev: &str) -> String {
        std::fs::read_to_string(spool.status_file(dev)).unwrap_or_default()
    }

    async fn settle(m: &Modems) {
        let (tx, rx) = std::sync::mpsc::channel();
        m.send(Action::Flush(tx));
        tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn leases_take_free_modems_and_give_them_back() {
        let (_d, spool) = spool();
        let m = Modems::create(&spool, 2).unwrap();
        assert_eq!(m.names(), ["freeswitch0", "freeswitch1"]);
        assert!(Path::new(&spool.modem_config("freeswitch1")).exists());
        settle(&m).await;
        assert_eq!(status_of(&spool, "freeswitch0"), "Running and idle\n");
        let a = m.acquire().unwrap();
        let b = m.acquire().unwrap();
        assert_eq!((a.name(), b.name()), ("freeswitch0", "freeswitch1"));
        assert!(m.acquire().is_none(), "both modems are taken");
        a.commid("000000001");
        a.receiving();
        settle(&m).await;
        assert_eq!(status_of(&spool, "freeswitch0"), "Receiving facsimile\n");
        drop(a);
        settle(&m).await;
        assert_eq!(status_of(&spool, "freeswitch0"), "Running and idle\n");
        assert_eq!(m.acquire().unwrap().name(), "freeswitch0");
    }

    #[tokio::test]
    async fn sending_and_locked_modems_are_not_leased() {
        let (_d, spool) = spool();
        let m = Modems::create(&spool, 2).unwrap();
        m.on_device_message(0, "freeswitch0", DeviceMsg::SendBegin);
        m.on_device_message(1, "freeswitch1", DeviceMsg::Lock);
        assert!(m.acquire().is_none());
        settle(&m).await;
        assert_eq!(status_of(&spool, "freeswitch0"), "Sending facsimile\n");
        assert_eq!(status_of(&spool, "freeswitch1"), "Locked for sending\n");
        // A faxq restart forgets its lock; fsfaxsend's SB stays until SR.
        m.on_device_message(1, "freeswitch1", DeviceMsg::Hello);
        m.on_device_message(0, "freeswitch0", DeviceMsg::Hello);
        assert_eq!(m.acquire().unwrap().name(), "freeswitch1");
        m.on_device_message(0, "freeswitch0", DeviceMsg::SendReady);
        settle(&m).await;
        assert_eq!(status_of(&spool, "freeswitch0"), "Running and idle\n");
    }

    #[tokio::test]
    async fn faxq_messages_follow_the_reception() {
        let (dir, spool) = spool();
        let fifo = spool.faxq_fifo();
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let mut reader = DeviceFifoReader::open(&fifo).unwrap();
        let m = Modems::create(&spool, 1).unwrap();
        {
            let lease = m.acquire().unwrap();
            lease.commid("000000007");
            lease.receiving();
            lease.page(1);
            lease.document();
        }
        m.shut_down().await;
        let mut got = Vec::new();
        while got.last().map(String::as_str) != Some("+freeswitch0:D") {
            match tokio::time::timeout(Duration::from_secs(5), reader.recv()).await {
                Ok(Ok(DeviceMsg::Other(s))) => got.push(s),
                other => panic!("unexpected {other:?} after {got:?}"),
            }
        }
        assert_eq!(
            got,
            [
                "+freeswitch0:N",
                "+freeswitch0:Rpcbffff01",
                "+freeswitch0:B",
                "+freeswitch0:I000000007",
                "@freeswitch0:B",
                "@freeswitch0:S",
                "@freeswitch0:P1",
                "@freeswitch0:D",
                "@freeswitch0:E",
                "+freeswitch0:I",
                "+freeswitch0:N",
                "+freeswitch0:Rpcbffff01",
                "+freeswitch0:D",
            ]
        );
        assert_eq!(status_of(&spool, "freeswitch0"), "Down\n");
        drop(dir);
    }

    #[tokio::test]
    async fn unreachable_faxq_never_blocks_and_is_resynced() {
        let (_d, spool) = spool();
        // A FIFO with no reader: faxq is down.
        nix::unistd::mkfifo(
            &spool.faxq_fifo(),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let m = Modems::create(&spool, 1).unwrap();
        settle(&m).await;
        assert!(m.inner.faxq_unreachable.load(Ordering::Acquire));
        let mut reader = DeviceFifoReader::open(spool.faxq_fifo()).unwrap();
        m.resync_if_unreachable();
        let first = tokio::time::timeout(Duration::from_secs(5), reader.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first, DeviceMsg::Other("+freeswitch0:N".into()));
        settle(&m).await;
        assert!(!m.inner.faxq_unreachable.load(Ordering::Acquire));
    }
}
