//! Virtual modems: what a faxgetty replacement must keep on disk and say through FIFOs.
//!
//! * `FIFO.<dev>` (mkfifo 0600), `status/<dev>` and `etc/config.<dev>` so faxstat lists the
//!   modem and faxq sends it `HELLO` at start-up.
//! * Messages to faxq's `<spool>/FIFO`: one `open(O_WRONLY|O_NONBLOCK)`/write/close per
//!   message, NUL-terminated. No reader (faxq down) is a typed [`ModemError::FaxqNotRunning`],
//!   never a hang (GOfax.IP blocked forever in `open`).
//! * Messages on `FIFO.<dev>` (faxq's `HELLO`/`L`, fsfaxsend's `SB`/`SR`): split on NUL and
//!   newline, so a burst like `SB\0SR\0` is two messages (GOfax.IP merged them).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Spool, lock};

/// Capabilities GOfax.IP announces with `+dev:R` (accepted by faxq for fine resolution too).
pub const DEFAULT_CAPS: &str = "pcbffff01";

/// Status texts as HylaFAX's faxgetty/faxsend write them to `status/<dev>`.
pub mod status {
    pub const INITIALIZING: &str = "Initializing server and modem";
    pub const IDLE: &str = "Running and idle";
    pub const WAITING_READY: &str = "Waiting for modem to come ready";
    pub const WAITING_FREE: &str = "Waiting for modem to come free";
    pub const SENDING: &str = "Sending facsimile";
    pub const ANSWERING: &str = "Answering the phone";
    pub const RECEIVING: &str = "Receiving facsimile";
    pub const LISTENING: &str = "Listening to rings from modem";
    pub const DOWN: &str = "Down";
    /// GOfax.IP's text after faxq's `L` (not a HylaFAX text, kept for familiarity).
    pub const LOCKED: &str = "Locked for sending";
}

/// Messages fsfaxsend writes to `FIFO.<dev>`.
pub const DEVICE_SEND_BEGIN: &str = "SB";
/// See [`DEVICE_SEND_BEGIN`].
pub const DEVICE_SEND_READY: &str = "SR";

/// Longest message we send; well under PIPE_BUF (atomic writes) and faxq's 2047-byte read.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// How long a write to a full FIFO is retried before giving up.
const FULL_RETRY: Duration = Duration::from_millis(20);
const FULL_RETRIES: u32 = 50;

/// Errors of the virtual-modem files and FIFOs. Each names the path or message.
#[derive(Debug, thiserror::Error)]
pub enum ModemError {
    #[error("invalid modem name {0:?} (empty, or contains '/', ':', NUL or a line break)")]
    BadDevice(String),
    #[error("invalid FIFO message {msg:?}: {reason}")]
    BadMessage { msg: String, reason: &'static str },
    #[error("{path}: exists and is not a FIFO")]
    NotAFifo { path: PathBuf },
    #[error("{path}: cannot create FIFO: {source}")]
    Mkfifo { path: PathBuf, source: io::Error },
    #[error("{path}: cannot change owner: {source}")]
    Chown { path: PathBuf, source: io::Error },
    #[error("{path}: cannot write modem status: {source}")]
    Status { path: PathBuf, source: io::Error },
    #[error("{path}: cannot fill the modem config: {source}")]
    Config { path: PathBuf, source: io::Error },
    #[error("{path}: faxq is not running (no reader on its FIFO)")]
    FaxqNotRunning { path: PathBuf },
    #[error("{path}: FIFO stayed full; message {msg:?} dropped")]
    FifoFull { path: PathBuf, msg: String },
    #[error("{path}: cannot open FIFO: {source}")]
    FifoOpen { path: PathBuf, source: io::Error },
    #[error("{path}: cannot write FIFO: {source}")]
    FifoWrite { path: PathBuf, source: io::Error },
    #[error("{path}: cannot read FIFO: {source}")]
    FifoRead { path: PathBuf, source: io::Error },
}

/// A validated message for faxq's FIFO (without its trailing NUL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaxqMessage(String);

/// Receive-progress events (`@dev:<c>`), used by faxwatch-style triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvEvent {
    /// `B`: receive begun.
    Begin,
    /// `S`: session started (info: session parameters).
    Start,
    /// `P`: page received.
    Page,
    /// `D`: document done.
    Document,
    /// `E`: receive ended.
    End,
}

/// Job-progress events (`*<jobid>:<c>`) a sender reports to faxq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEvent {
    /// `c`: call placed.
    CallPlaced,
    /// `C`: connected.
    Connected,
    /// `d`: page sent.
    PageSent,
    /// `D`: document done (faxq may unref the document).
    DocumentDone,
}

/// What a sender says about a page or a document in a `d`/`D` job message: HylaFAX's
/// `FaxSendInfo::encode`, `<time>,<npages>,<params>,<commid>,"<file>"` with the numbers in hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaxSendInfo {
    /// Seconds the page (`d`) or the whole document (`D`) took.
    pub secs: u32,
    /// The job's pages sent so far, this one included (`npages` as the qfile now says).
    pub npages: u32,
    /// The session parameters, `Class2Params::encode` (see `xferfaxlog::Params::encode`).
    pub params: u32,
    /// The attempt's communication id.
    pub commid: String,
    /// The document as the qfile names it (`docq/doc1.pdf;c0`); faxq unrefs it on `D`.
    pub file: String,
}

impl FaxSendInfo {
    /// The wire form faxq's `FaxSendInfo::decode` reads.
    pub fn encode(&self) -> String {
        format!(
            "{:x},{:x},{:x},{},\"{}\"",
            self.secs, self.npages, self.params, self.commid, self.file
        )
    }
}

impl FaxqMessage {
    /// The message text (no trailing NUL).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `+dev:R<caps>`: modem ready for jobs.
    pub fn ready(dev: &str, caps: &str) -> Result<Self, ModemError> {
        Self::modem(dev, 'R', caps)
    }

    /// `+dev:N<number>`: the modem's phone number (may be empty).
    pub fn number(dev: &str, number: &str) -> Result<Self, ModemError> {
        Self::modem(dev, 'N', number)
    }

    /// `+dev:B`: busy (receiving; faxq must not dispatch to it).
    pub fn busy(dev: &str) -> Result<Self, ModemError> {
        Self::modem(dev, 'B', "")
    }

    /// `+dev:U`: in use by an outbound job.
    pub fn in_use(dev: &str) -> Result<Self, ModemError> {
        Self::modem(dev, 'U', "")
    }

    /// `+dev:D`: down.
    pub fn down(dev: &str) -> Result<Self, ModemError> {
        Self::modem(dev, 'D', "")
    }

    /// `+dev:I<commid>`; `None` clears it (`+dev:I`).
    pub fn commid(dev: &str, commid: Option<&str>) -> Result<Self, ModemError> {
        Self::modem(dev, 'I', commid.unwrap_or(""))
    }

    /// `@dev:<B|S|P|D|E><info>`.
    pub fn recv(dev: &str, event: RecvEvent, info: &str) -> Result<Self, ModemError> {
        check_device(dev)?;
        let c = match event {
            RecvEvent::Begin => 'B',
            RecvEvent::Start => 'S',
            RecvEvent::Page => 'P',
            RecvEvent::Document => 'D',
            RecvEvent::End => 'E',
        };
        Self::checked(format!("@{dev}:{c}{info}"))
    }

    /// `*<jobid>:<c|C|d|D><info>`.
    pub fn job(jobid: u32, event: JobEvent, info: &str) -> Result<Self, ModemError> {
        let c = match event {
            JobEvent::CallPlaced => 'c',
            JobEvent::Connected => 'C',
            JobEvent::PageSent => 'd',
            JobEvent::DocumentDone => 'D',
        };
        Self::checked(format!("*{jobid}:{c}{info}"))
    }

    fn modem(dev: &str, code: char, arg: &str) -> Result<Self, ModemError> {
        check_device(dev)?;
        Self::checked(format!("+{dev}:{code}{arg}"))
    }

    fn checked(msg: String) -> Result<Self, ModemError> {
        check_message(&msg)?;
        Ok(Self(msg))
    }
}

/// Modem names end up in paths and FIFO messages.
pub fn check_device(dev: &str) -> Result<(), ModemError> {
    if dev.is_empty() || dev.contains(['/', ':', '\0', '\n', '\r']) || dev == "." || dev == ".." {
        return Err(ModemError::BadDevice(dev.to_owned()));
    }
    Ok(())
}

fn check_message(msg: &str) -> Result<(), ModemError> {
    let bad = |reason| {
        Err(ModemError::BadMessage {
            msg: msg.to_owned(),
            reason,
        })
    };
    if msg.contains('\0') {
        return bad("contains NUL (the record separator)");
    }
    if msg.contains(['\n', '\r']) {
        return bad("contains a line break");
    }
    if msg.is_empty() {
        return bad("empty");
    }
    if msg.len() > MAX_MESSAGE_LEN {
        return bad("too long");
    }
    Ok(())
}

/// Outcome of writing to a FIFO whose reader is optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// Nobody had the FIFO open for reading.
    NoReader,
}

/// faxq's command FIFO (`<spool>/FIFO`).
#[derive(Debug, Clone)]
pub struct FaxqFifo {
    path: PathBuf,
}

impl FaxqFifo {
    /// The FIFO of the given spool.
    pub fn new(spool: &Spool) -> Self {
        Self {
            path: spool.faxq_fifo(),
        }
    }

    /// A FIFO at an explicit path.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The FIFO path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one message. `FaxqNotRunning` when faxq has no reader (or the FIFO is missing):
    /// the caller should remember the state and re-announce later (e.g. on `HELLO`).
    /// Blocks at most about a second (full pipe); use from async code via `spawn_blocking`
    /// or accept the short, bounded stall.
    pub fn send(&self, msg: &FaxqMessage) -> Result<(), ModemError> {
        tracing::debug!(fifo = %self.path.display(), "FIFO message {}", msg.as_str());
        match write_fifo_message(&self.path, msg.as_str())? {
            Delivery::Delivered => Ok(()),
            Delivery::NoReader => Err(ModemError::FaxqNotRunning {
                path: self.path.clone(),
            }),
        }
    }
}

/// Writer for a modem's own `FIFO.<dev>` (fsfaxsend → fsfaxd: `SB` / `SR`).
#[derive(Debug, Clone)]
pub struct DeviceFifo {
    path: PathBuf,
}

impl DeviceFifo {
    /// `FIFO.<dev>` in the spool.
    pub fn new(spool: &Spool, dev: &str) -> Result<Self, ModemError> {
        check_device(dev)?;
        Ok(Self {
            path: spool.device_fifo(dev),
        })
    }

    /// The FIFO path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one [`DeviceMsg`] without blocking; see [`DeviceFifo::send`].
    pub fn send_msg(&self, msg: &DeviceMsg) -> Result<Delivery, ModemError> {
        self.send(msg.wire())
    }

    /// Sends `msg` (e.g. [`DEVICE_SEND_BEGIN`]) without blocking; no reader (fsfaxd not
    /// running) is not an error.
    pub fn send(&self, msg: &str) -> Result<Delivery, ModemError> {
        check_message(msg)?;
        let d = write_fifo_message(&self.path, msg)?;
        if d == Delivery::NoReader {
            tracing::debug!(fifo = %self.path.display(), "no reader; {msg} not delivered");
        }
        Ok(d)
    }
}

/// One `open(O_WRONLY|O_NONBLOCK)` / `write(msg\0)` / close.
fn write_fifo_message(path: &Path, msg: &str) -> Result<Delivery, ModemError> {
    let file = match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(Delivery::NoReader),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Delivery::NoReader),
        Err(source) => {
            return Err(ModemError::FifoOpen {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    // Never append messages to a regular file that replaced the FIFO.
    let is_fifo = file
        .metadata()
        .map(|m| m.file_type().is_fifo())
        .map_err(|source| ModemError::FifoOpen {
            path: path.to_path_buf(),
            source,
        })?;
    if !is_fifo {
        return Err(ModemError::NotAFifo {
            path: path.to_path_buf(),
        });
    }
    let mut record = Vec::with_capacity(msg.len() + 1);
    record.extend_from_slice(msg.as_bytes());
    record.push(0);
    let mut attempts = 0;
    loop {
        match (&file).write(&record) {
            // At most PIPE_BUF bytes: the kernel writes all of it or nothing.
            Ok(n) if n == record.len() => return Ok(Delivery::Delivered),
            Ok(n) => {
                return Err(ModemError::FifoWrite {
                    path: path.to_path_buf(),
                    source: io::Error::other(format!("short write ({n} of {})", record.len())),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && attempts < FULL_RETRIES => {
                attempts += 1;
                std::thread::sleep(FULL_RETRY);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(ModemError::FifoFull {
                    path: path.to_path_buf(),
                    msg: msg.to_owned(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // The reader went away between open and write.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => return Ok(Delivery::NoReader),
            Err(source) => {
                return Err(ModemError::FifoWrite {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
}

/// A message read from `FIFO.<dev>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceMsg {
    /// `HELLO` (any `H…`): faxq (re)started; answer with `+dev:N` and `+dev:R`.
    Hello,
    /// `L…`: faxq assigned the modem to a job.
    Lock,
    /// `SB`: fsfaxsend started a job on this modem.
    SendBegin,
    /// `SR`: fsfaxsend finished.
    SendReady,
    /// `Q`: quit request (faxquit on the device).
    Quit,
    /// Anything else (logged by the caller).
    Other(String),
}

impl DeviceMsg {
    /// The message as written to the FIFO.
    pub fn wire(&self) -> &str {
        match self {
            DeviceMsg::Hello => "HELLO",
            DeviceMsg::Lock => "L",
            DeviceMsg::SendBegin => DEVICE_SEND_BEGIN,
            DeviceMsg::SendReady => DEVICE_SEND_READY,
            DeviceMsg::Quit => "Q",
            DeviceMsg::Other(text) => text,
        }
    }
}

impl std::fmt::Display for DeviceMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.wire())
    }
}

/// Splits one read from `FIFO.<dev>` into messages: records end at NUL or newline,
/// surrounding whitespace is trimmed, empty records are dropped.
///
/// Writers send each message with one `write` of at most PIPE_BUF bytes and the reader reads
/// with a buffer as large as the pipe, so a record never spans two reads.
pub fn parse_device_messages(bytes: &[u8]) -> Vec<DeviceMsg> {
    bytes
        .split(|&b| b == 0 || b == b'\n')
        .map(|r| String::from_utf8_lossy(r).trim().to_owned())
        .filter(|r| !r.is_empty())
        .map(|r| match r.as_str() {
            DEVICE_SEND_BEGIN => DeviceMsg::SendBegin,
            DEVICE_SEND_READY => DeviceMsg::SendReady,
            "Q" => DeviceMsg::Quit,
            s if s.starts_with('H') => DeviceMsg::Hello,
            s if s.starts_with('L') => DeviceMsg::Lock,
            _ => DeviceMsg::Other(r),
        })
        .collect()
}

/// Async reader of `FIFO.<dev>`. Opened read-write, so it holds a writer itself and never
/// sees EOF when the last external writer closes (no spin, no re-open).
#[derive(Debug)]
pub struct DeviceFifoReader {
    path: PathBuf,
    rx: tokio::net::unix::pipe::Receiver,
    pending: std::collections::VecDeque<DeviceMsg>,
    buf: Vec<u8>,
}

impl DeviceFifoReader {
    /// Opens an existing FIFO (see [`VirtualModem::create`]). Needs a tokio runtime.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, ModemError> {
        let path = path.into();
        let rx = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&path)
            .map_err(|source| {
                if source.kind() == io::ErrorKind::InvalidInput {
                    ModemError::NotAFifo { path: path.clone() }
                } else {
                    ModemError::FifoOpen {
                        path: path.clone(),
                        source,
                    }
                }
            })?;
        Ok(Self {
            path,
            rx,
            pending: Default::default(),
            buf: vec![0; 65536],
        })
    }

    /// The next message; waits as long as needed (cancel-safe: no message is lost if the
    /// future is dropped, since buffered messages stay in `self`).
    pub async fn recv(&mut self) -> Result<DeviceMsg, ModemError> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Ok(m);
            }
            let n = self
                .rx
                .read(&mut self.buf)
                .await
                .map_err(|source| ModemError::FifoRead {
                    path: self.path.clone(),
                    source,
                })?;
            self.pending.extend(parse_device_messages(&self.buf[..n]));
        }
    }
}

/// The on-disk presence of one virtual modem: `FIFO.<dev>`, `status/<dev>`, `etc/config.<dev>`.
#[derive(Debug, Clone)]
pub struct VirtualModem {
    dev: String,
    fifo: PathBuf,
    status: PathBuf,
    config: PathBuf,
}

impl VirtualModem {
    /// Makes sure the modem's files exist: `FIFO.<dev>` (mkfifo 0600; an existing non-FIFO is
    /// an error), `etc/config.<dev>` (created empty if missing; never overwritten; a failure
    /// is only a warning since faxq dispatches without it). Does not touch the status file.
    pub fn create(spool: &Spool, dev: &str) -> Result<Self, ModemError> {
        check_device(dev)?;
        let m = Self {
            dev: dev.to_owned(),
            fifo: spool.device_fifo(dev),
            status: spool.status_file(dev),
            config: spool.modem_config(dev),
        };
        ensure_fifo(&m.fifo)?;
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&m.config)
        {
            Ok(_) => tracing::info!(path = %m.config.display(), "created empty modem config"),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => tracing::warn!(
                path = %m.config.display(),
                "cannot create modem config (faxstat will not list {dev}): {e}"
            ),
        }
        Ok(m)
    }

    /// Writes `FAXNumber` and `LocalIdentifier` into `etc/config.<dev>` when the file is empty
    /// (as fsfaxd created it), so `faxstat -s` shows `Modem freeswitch0 (+49 40 1234)` as for
    /// a faxgetty modem. A config with anything in it is the admin's and is left alone; an
    /// empty value is left out; quotes and line breaks are dropped from the values. Returns
    /// whether it wrote.
    pub fn fill_config(&self, number: &str, ident: &str) -> Result<bool, ModemError> {
        fill_modem_config(&self.config, number, ident)
    }

    /// The device name.
    pub fn dev(&self) -> &str {
        &self.dev
    }

    /// `FIFO.<dev>`.
    pub fn fifo_path(&self) -> &Path {
        &self.fifo
    }

    /// `status/<dev>`.
    pub fn status_path(&self) -> &Path {
        &self.status
    }

    /// Gives `FIFO.<dev>` (and the status file, if present) to `uid:gid`. faxq runs as
    /// `uucp` and silently skips a `FIFO.<dev>` it cannot open (no `HELLO`, no `L`), so a
    /// daemon running as root must hand the FIFO to the fax user.
    pub fn set_owner(&self, uid: u32, gid: u32) -> Result<(), ModemError> {
        for path in [&self.fifo, &self.status] {
            match std::os::unix::fs::chown(path, Some(uid), Some(gid)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound && path == &self.status => {}
                Err(source) => {
                    return Err(ModemError::Chown {
                        path: path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Writes the status text like faxgetty: open/create 0644, `flock`, truncate, text + `\n`.
    pub fn write_status(&self, text: &str) -> Result<(), ModemError> {
        let err = |source| ModemError::Status {
            path: self.status.clone(),
            source,
        };
        let text = text.replace(['\n', '\r'], " ");
        let file: File = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&self.status)
            .map_err(err)?;
        lock::lock_exclusive(&file).map_err(err)?;
        // Over the old text first, then cut what is left of it: the file keeps its block, so
        // on a full disk the status still changes (truncating first would free the block and
        // the write could then find none).
        let line = format!("{text}\n");
        file.write_all_at(line.as_bytes(), 0).map_err(err)?;
        file.set_len(line.len() as u64).map_err(err)?;
        Ok(())
    }

    /// Status file then `+dev:N<number>` and `+dev:R<caps>` (faxgetty's start-up / HELLO reply).
    pub fn set_ready(&self, faxq: &FaxqFifo, number: &str, caps: &str) -> Result<(), ModemError> {
        let n = FaxqMessage::number(&self.dev, number)?;
        let r = FaxqMessage::ready(&self.dev, caps)?;
        self.write_status(status::IDLE)?;
        faxq.send(&n)?;
        faxq.send(&r)
    }

    /// `+dev:B` then the status text (e.g. [`status::RECEIVING`]).
    pub fn set_busy(&self, faxq: &FaxqFifo, text: &str) -> Result<(), ModemError> {
        let sent = faxq.send(&FaxqMessage::busy(&self.dev)?);
        self.write_status(text)?;
        sent
    }

    /// `+dev:D` and status `Down`.
    pub fn set_down(&self, faxq: &FaxqFifo) -> Result<(), ModemError> {
        let sent = faxq.send(&FaxqMessage::down(&self.dev)?);
        self.write_status(status::DOWN)?;
        sent
    }
}

fn ensure_fifo(path: &Path) -> Result<(), ModemError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_fifo() => Ok(()),
        Ok(_) => Err(ModemError::NotAFifo {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
                Ok(()) => Ok(()),
                // Created concurrently: accept it if it is a FIFO.
                Err(nix::errno::Errno::EEXIST) => ensure_existing_fifo(path),
                Err(errno) => Err(ModemError::Mkfifo {
                    path: path.to_path_buf(),
                    source: io::Error::from(errno),
                }),
            }
        }
        Err(source) => Err(ModemError::Mkfifo {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn ensure_existing_fifo(path: &Path) -> Result<(), ModemError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_fifo() => Ok(()),
        _ => Err(ModemError::NotAFifo {
            path: path.to_path_buf(),
        }),
    }
}

/// [`VirtualModem::fill_config`] on `etc/config.<dev>` at `path`, without a modem (fsfaxd
/// calls it while still root, before it works as the spool's owner: an admin's `touch`ed
/// config file is root's).
pub fn fill_modem_config(path: &Path, number: &str, ident: &str) -> Result<bool, ModemError> {
    let err = |source| ModemError::Config {
        path: path.to_path_buf(),
        source,
    };
    let clean = |v: &str| v.replace(['"', '\n', '\r', '\\'], "").trim().to_owned();
    let (number, ident) = (clean(number), clean(ident));
    let mut text = String::new();
    if !number.is_empty() {
        text.push_str(&format!("FAXNumber:\t\t\"{number}\"\n"));
    }
    if !ident.is_empty() {
        text.push_str(&format!("LocalIdentifier:\t\"{ident}\"\n"));
    }
    if text.is_empty() {
        return Ok(false);
    }
    // Filled already (or the admin's): nothing to open for writing, which its owner alone may.
    match std::fs::metadata(path) {
        Ok(m) if m.len() > 0 => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        _ => {}
    }
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(err(e)),
    };
    lock::lock_exclusive(&file).map_err(err)?;
    if file.metadata().map_err(err)?.len() > 0 {
        return Ok(false);
    }
    use std::io::Write;
    file.write_all(text.as_bytes()).map_err(err)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    fn spool() -> (tempfile::TempDir, Spool) {
        let dir = tempfile::tempdir().unwrap();
        for d in ["etc", "status", "log"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let s = Spool::new(dir.path());
        (dir, s)
    }

    fn mkfifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }

    #[test]
    fn message_builders() {
        let d = "freeswitch0";
        let cases = [
            (
                FaxqMessage::ready(d, DEFAULT_CAPS),
                "+freeswitch0:Rpcbffff01",
            ),
            (FaxqMessage::number(d, ""), "+freeswitch0:N"),
            (FaxqMessage::number(d, "+49 30 1"), "+freeswitch0:N+49 30 1"),
            (FaxqMessage::busy(d), "+freeswitch0:B"),
            (FaxqMessage::in_use(d), "+freeswitch0:U"),
            (FaxqMessage::down(d), "+freeswitch0:D"),
            (
                FaxqMessage::commid(d, Some("000000099")),
                "+freeswitch0:I000000099",
            ),
            (FaxqMessage::commid(d, None), "+freeswitch0:I"),
            (FaxqMessage::recv(d, RecvEvent::Begin, ""), "@freeswitch0:B"),
            (
                FaxqMessage::recv(d, RecvEvent::Start, "x"),
                "@freeswitch0:Sx",
            ),
            (FaxqMessage::recv(d, RecvEvent::Page, ""), "@freeswitch0:P"),
            (
                FaxqMessage::recv(d, RecvEvent::Document, ""),
                "@freeswitch0:D",
            ),
            (FaxqMessage::recv(d, RecvEvent::End, ""), "@freeswitch0:E"),
            (FaxqMessage::job(17, JobEvent::CallPlaced, ""), "*17:c"),
            (FaxqMessage::job(17, JobEvent::Connected, ""), "*17:C"),
            (FaxqMessage::job(17, JobEvent::PageSent, "1"), "*17:d1"),
            (FaxqMessage::job(17, JobEvent::DocumentDone, ""), "*17:D"),
        ];
        for (m, want) in cases {
            assert_eq!(m.unwrap().as_str(), want);
        }
        // faxsend's `FaxSendInfo::encode`: hex numbers, the file quoted.
        let info = FaxSendInfo {
            secs: 26,
            npages: 3,
            params: 0x21_4068,
            commid: "000000042".into(),
            file: "docq/doc7.pdf;c0".into(),
        };
        assert_eq!(
            FaxqMessage::job(9, JobEvent::PageSent, &info.encode())
                .unwrap()
                .as_str(),
            "*9:d1a,3,214068,000000042,\"docq/doc7.pdf;c0\""
        );
        assert!(matches!(
            FaxqMessage::number(d, "1\n2"),
            Err(ModemError::BadMessage { .. })
        ));
        assert!(matches!(
            FaxqMessage::recv(d, RecvEvent::Page, "a\0b"),
            Err(ModemError::BadMessage { .. })
        ));
        assert!(matches!(
            FaxqMessage::ready(d, &"x".repeat(2000)),
            Err(ModemError::BadMessage { .. })
        ));
        for bad in ["", "a:b", "../x", "a/b", "a\nb"] {
            assert!(
                matches!(FaxqMessage::busy(bad), Err(ModemError::BadDevice(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn device_message_splitting() {
        use DeviceMsg::*;
        assert_eq!(parse_device_messages(b"HELLO\0"), vec![Hello]);
        assert_eq!(
            parse_device_messages(b"SB\0SR\0"),
            vec![SendBegin, SendReady]
        );
        assert_eq!(
            parse_device_messages(b"L\0SB\nSR\n\n\0 Q \0what\0"),
            vec![Lock, SendBegin, SendReady, Quit, Other("what".into())]
        );
        assert_eq!(parse_device_messages(b""), vec![]);
        assert_eq!(
            parse_device_messages(b"\xff\0"),
            vec![Other("\u{fffd}".into())]
        );
    }

    #[test]
    fn faxq_not_running_returns_quickly() {
        let (_d, s) = spool();
        let faxq = FaxqFifo::new(&s);
        let msg = FaxqMessage::ready("freeswitch0", DEFAULT_CAPS).unwrap();
        // Missing FIFO and FIFO without reader both mean "faxq down".
        assert!(matches!(
            faxq.send(&msg),
            Err(ModemError::FaxqNotRunning { .. })
        ));
        mkfifo(&s.faxq_fifo());
        let e = faxq.send(&msg).unwrap_err();
        assert!(matches!(e, ModemError::FaxqNotRunning { .. }));
        assert!(e.to_string().contains("FIFO"));
    }

    #[test]
    fn faxq_message_bytes_exact() {
        let (_d, s) = spool();
        mkfifo(&s.faxq_fifo());
        // O_RDWR reader so opening does not block and the writer sees a reader.
        let mut reader = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(s.faxq_fifo())
            .unwrap();
        let faxq = FaxqFifo::new(&s);
        faxq.send(&FaxqMessage::ready("freeswitch0", DEFAULT_CAPS).unwrap())
            .unwrap();
        faxq.send(&FaxqMessage::busy("freeswitch0").unwrap())
            .unwrap();
        let mut buf = [0u8; 256];
        let n = reader.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"+freeswitch0:Rpcbffff01\0+freeswitch0:B\0");
    }

    #[test]
    fn faxq_fifo_replaced_by_regular_file_is_refused() {
        let (_d, s) = spool();
        std::fs::write(s.faxq_fifo(), b"").unwrap();
        let e = FaxqFifo::new(&s)
            .send(&FaxqMessage::down("m").unwrap())
            .unwrap_err();
        assert!(matches!(e, ModemError::NotAFifo { .. }), "{e}");
        assert_eq!(std::fs::read(s.faxq_fifo()).unwrap(), b"");
    }

    #[test]
    fn full_fifo_gives_up() {
        let (_d, s) = spool();
        mkfifo(&s.faxq_fifo());
        let _reader = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(s.faxq_fifo())
            .unwrap();
        let faxq = FaxqFifo::new(&s);
        let msg = FaxqMessage::ready("m", &"x".repeat(1000)).unwrap();
        let mut result = Ok(());
        for _ in 0..200 {
            result = faxq.send(&msg);
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(ModemError::FifoFull { .. })));
    }

    #[test]
    fn virtual_modem_files() {
        let (_d, s) = spool();
        let m = VirtualModem::create(&s, "freeswitch0").unwrap();
        let meta = std::fs::symlink_metadata(s.device_fifo("freeswitch0")).unwrap();
        assert!(meta.file_type().is_fifo());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(s.modem_config("freeswitch0")).unwrap(), b"");
        // An empty config gets the number and identifier, once.
        assert!(m.fill_config("+49 40 1234", "ACME \"Fax\"").unwrap());
        assert_eq!(
            std::fs::read_to_string(s.modem_config("freeswitch0")).unwrap(),
            "FAXNumber:\t\t\"+49 40 1234\"\nLocalIdentifier:\t\"ACME Fax\"\n"
        );
        assert!(
            !m.fill_config("1", "x").unwrap(),
            "never over what is there"
        );
        std::fs::write(s.modem_config("freeswitch0"), b"").unwrap();
        // Never overwrite an existing config; re-create is idempotent.
        std::fs::write(s.modem_config("freeswitch0"), b"FAXNumber: 1\n").unwrap();
        VirtualModem::create(&s, "freeswitch0").unwrap();
        assert_eq!(
            std::fs::read(s.modem_config("freeswitch0")).unwrap(),
            b"FAXNumber: 1\n"
        );
        m.write_status("Receiving facsimile").unwrap();
        m.write_status(status::IDLE).unwrap();
        assert_eq!(
            std::fs::read_to_string(m.status_path()).unwrap(),
            "Running and idle\n"
        );
        std::fs::write(s.device_fifo("bad"), b"").unwrap();
        let e = VirtualModem::create(&s, "bad").unwrap_err();
        assert!(matches!(e, ModemError::NotAFifo { .. }));
        assert!(e.to_string().contains("FIFO.bad"));
    }

    #[test]
    fn set_owner_applies_to_fifo_and_tolerates_missing_status() {
        use std::os::unix::fs::MetadataExt;
        let (_d, s) = spool();
        let m = VirtualModem::create(&s, "own0").unwrap();
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        m.set_owner(uid, gid).unwrap();
        let meta = std::fs::metadata(m.fifo_path()).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid, gid));
        std::fs::remove_file(m.fifo_path()).unwrap();
        assert!(matches!(
            m.set_owner(uid, gid),
            Err(ModemError::Chown { .. })
        ));
    }

    #[test]
    fn set_ready_writes_status_even_without_faxq() {
        let (_d, s) = spool();
        let m = VirtualModem::create(&s, "freeswitch1").unwrap();
        let faxq = FaxqFifo::new(&s);
        let e = m.set_ready(&faxq, "", DEFAULT_CAPS).unwrap_err();
        assert!(matches!(e, ModemError::FaxqNotRunning { .. }));
        assert_eq!(
            std::fs::read_to_string(m.status_path()).unwrap(),
            "Running and idle\n"
        );
        assert!(m.set_down(&faxq).is_err());
        assert_eq!(std::fs::read_to_string(m.status_path()).unwrap(), "Down\n");
    }

    #[test]
    fn device_fifo_without_reader_is_skipped() {
        let (_d, s) = spool();
        let w = DeviceFifo::new(&s, "freeswitch0").unwrap();
        assert_eq!(w.send("SB").unwrap(), Delivery::NoReader);
        VirtualModem::create(&s, "freeswitch0").unwrap();
        assert_eq!(w.send("SB").unwrap(), Delivery::NoReader);
        assert!(matches!(w.send("S\nB"), Err(ModemError::BadMessage { .. })));
    }

    #[tokio::test]
    async fn async_reader_splits_bursts_and_survives_writer_close() {
        let (_d, s) = spool();
        let m = VirtualModem::create(&s, "freeswitch0").unwrap();
        let mut reader = DeviceFifoReader::open(m.fifo_path()).unwrap();
        let w = DeviceFifo::new(&s, "freeswitch0").unwrap();
        assert_eq!(w.send(DEVICE_SEND_BEGIN).unwrap(), Delivery::Delivered);
        assert_eq!(w.send(DEVICE_SEND_READY).unwrap(), Delivery::Delivered);
        assert_eq!(reader.recv().await.unwrap(), DeviceMsg::SendBegin);
        assert_eq!(reader.recv().await.unwrap(), DeviceMsg::SendReady);
        // All writers closed: the reader must wait, not report EOF or spin.
        let waited = tokio::time::timeout(Duration::from_millis(100), reader.recv()).await;
        assert!(waited.is_err());
        std::fs::write(m.fifo_path(), b"HELLO\0").unwrap();
        assert_eq!(reader.recv().await.unwrap(), DeviceMsg::Hello);
        std::fs::write(s.device_fifo("plain"), b"").unwrap();
        assert!(matches!(
            DeviceFifoReader::open(s.device_fifo("plain")),
            Err(ModemError::NotAFifo { .. })
        ));
    }
}
