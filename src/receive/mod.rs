//! fsfaxd: receives faxes from FreeSWITCH into HylaFAX for every line at once, and runs the
//! virtual modems fsfaxsend sends with (the job of one faxgetty per modem).
//!
//! [`serve`] reads top to bottom like the daemon's life: spool and journal, virtual modems
//! announced to faxq, the listener for FreeSWITCH's outbound sockets (allow-listed peers
//! only), recovery of receptions a previous run left behind, then one task per call until
//! SIGTERM. SIGHUP re-reads the configuration for new calls. fsfaxd never forks.
//!
//! Files: [`modems`] (faxq, faxstat, FIFOs), `call` (one call, in protocol order), [`deliver`]
//! (xferfaxlog and faxrcvd), [`recover`] (the journal at start-up), [`recipient`] (SIP headers).

mod call;
pub mod deliver;
pub mod modems;
mod outcome;
pub mod recipient;
pub mod recover;
mod rxfax;
mod screen;

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Problem};
use crate::esl::{ClientConfig, EventStream, InboundClient};
use crate::hylafax::Spool;
use crate::hylafax::journal::{Journal, JournalError};
use crate::hylafax::modem::ModemError;
use modems::{Modems, RESYNC_INTERVAL};

/// After the shutdown timeout the remaining calls are hung up; this long is left for them to
/// notice before their tasks are dropped.
const HANGUP_WAIT: Duration = Duration::from_secs(15);

/// Why fsfaxd could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("spool {path}: {source}")]
    Spool { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("virtual modems: {0}")]
    Modem(#[from] ModemError),
    #[error("cannot listen on {addr} ([gofaxd] socket): {source}")]
    Listen { addr: String, source: io::Error },
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
}

/// Runs the receive daemon until SIGTERM/SIGINT; the exit status for the binary.
pub fn serve(config: Config) -> ExitCode {
    raise_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime);
    let outcome = runtime.and_then(|rt| rt.block_on(run(config)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Each call holds a socket, a recvq file and a session log: raise the soft limit on open
/// files to the hard one (systemd and shells start daemons at 1024), so a busy line does not
/// run out of descriptors.
fn raise_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!("cannot raise the open-file limit from {soft}: {e}"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the open-file limit: {e}"),
    }
}

/// State every call shares.
#[derive(Debug)]
pub(crate) struct Daemon {
    pub(crate) spool: Spool,
    pub(crate) modems: Modems,
    pub(crate) journal: Journal,
    /// Receptions in progress (for `maxinbound`).
    inbound: AtomicU32,
    /// Cancelled when the shutdown timeout is over: calls hang up and leave their journal.
    pub(crate) kill: CancellationToken,
    /// The connection for T.38 fallback lookups and writes.
    pub(crate) switch: SwitchLink,
}

/// One inbound Event Socket connection ([freeswitch] socket), shared by all calls, for what
/// fsfaxd asks FreeSWITCH outside a call: the T.38 fallback list and, at start-up, whether an
/// interrupted reception's call is still up. Not the call's own socket: FreeSWITCH answers a
/// socket's commands in order, so a hung mod_db would stall the call, and the command timeout
/// would then close the socket and lose it. Here a hung mod_db costs a lookup (bounded by
/// fallbacklookuptimeout), never a call; and calls do not each open a connection (GOfax.IP did).
#[derive(Debug, Default)]
pub(crate) struct SwitchLink {
    conn: tokio::sync::Mutex<Option<(InboundClient, EventStream)>>,
}

impl SwitchLink {
    /// The shared client, connecting (again) when there is none or the last one closed.
    pub(crate) async fn client(&self, cfg: &Config) -> Result<InboundClient, String> {
        let fs = &cfg.freeswitch;
        let wait = fs.fallback_lookup_timeout;
        // Another call may be connecting; never wait on it longer than a lookup may take.
        let mut slot = tokio::time::timeout(wait, self.conn.lock())
            .await
            .map_err(|_| {
                format!(
                    "no connection to FreeSWITCH at {} within {wait:?}",
                    fs.socket
                )
            })?;
        if let Some((client, events)) = slot.as_ref() {
            if events.close_reason().is_none() {
                return Ok(client.clone());
            }
        }
        let esl = ClientConfig {
            connect_timeout: wait,
            auth_timeout: wait,
            command_timeout: wait,
            ..ClientConfig::default()
        };
        let (client, events) = InboundClient::connect(&fs.socket, &fs.password, &esl)
            .await
            .map_err(|e| e.to_string())?;
        *slot = Some((client.clone(), events));
        Ok(client)
    }
}

/// One admitted reception; dropping it frees its place under `maxinbound`.
#[derive(Debug)]
pub(crate) struct Admission {
    daemon: Arc<Daemon>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.daemon.inbound.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Daemon {
    /// A place for one more reception, unless `max` (> 0) are running.
    pub(crate) fn admit(self: &Arc<Self>, max: u32) -> Option<Admission> {
        let before = self.inbound.fetch_add(1, Ordering::AcqRel);
        if max > 0 && before >= max {
            self.inbound.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Admission {
            daemon: self.clone(),
        })
    }
}

/// The daemon itself, on the current runtime.
pub async fn run(mut config: Config) -> Result<(), ServeError> {
    let root = absolute(&config.hylafax.spooldir)?;
    // Relative paths in the configuration are spool-relative; an absolute spool keeps them so.
    config.hylafax.spooldir = root.clone();
    let spool = Spool::new(&root);
    for dir in ["recvq", "log", "status", "etc"] {
        let path = spool.join(dir);
        std::fs::create_dir_all(&path).map_err(|source| ServeError::Spool { path, source })?;
    }
    let journal = Journal::open(spool.root())?;
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(ServeError::Signals)?;

    let modems = Modems::create(&spool, config.hylafax.modems)?;
    let readers = modems.spawn_fifo_readers();
    let listener = match TcpListener::bind(&config.gofaxd.socket).await {
        Ok(l) => l,
        Err(source) => {
            modems.shut_down().await;
            return Err(ServeError::Listen {
                addr: config.gofaxd.socket.clone(),
                source,
            });
        }
    };
    tracing::info!(
        spool = %root.display(),
        modems = ?modems.names(),
        "listening on {} for FreeSWITCH",
        listener.local_addr().map_or_else(|_| config.gofaxd.socket.clone(), |a| a.to_string())
    );
    let daemon = Arc::new(Daemon {
        spool,
        modems: modems.clone(),
        journal,
        inbound: AtomicU32::new(0),
        kill: CancellationToken::new(),
        switch: SwitchLink::default(),
    });
    let mut config = Arc::new(config);
    let mut calls: JoinSet<()> = JoinSet::new();
    {
        let (daemon, config) = (daemon.clone(), config.clone());
        calls.spawn(async move {
            let n = recover::recover(&daemon.spool, &config, &daemon.journal, &daemon.switch).await;
            if n > 0 {
                tracing::info!("{n} interrupted receptions delivered");
            }
        });
    }
    let mut resync = tokio::time::interval(RESYNC_INTERVAL);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Before reading a byte: only FreeSWITCH may talk to us.
                    if !allowed(&config, peer.ip()) {
                        tracing::warn!(%peer, "connection refused: peer not in [gofaxd] allowedpeers");
                        drop(stream);
                        continue;
                    }
                    tracing::debug!(%peer, "FreeSWITCH connected");
                    calls.spawn(call::handle(stream, daemon.clone(), config.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = calls.join_next(), if !calls.is_empty() => {}
            _ = resync.tick() => daemon.modems.resync_if_unreachable(),
            _ = hup.recv() => reload(&mut config),
            _ = term.recv() => {
                tracing::info!("SIGTERM: stopping");
                break;
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: stopping");
                break;
            }
        }
    }
    drop(listener);
    drain(
        &mut calls,
        &daemon,
        config.gofaxd.shutdown_timeout,
        &mut term,
    )
    .await;
    modems.shut_down().await;
    for reader in readers {
        reader.abort();
    }
    tracing::info!("fsfaxd stopped");
    Ok(())
}

/// Lets running receptions finish within `grace` (a second SIGTERM cuts it short), then hangs
/// up the rest; their journal entries stay for the next start.
async fn drain(calls: &mut JoinSet<()>, daemon: &Daemon, grace: Duration, term: &mut Signal) {
    if !calls.is_empty() {
        tracing::info!(
            running = calls.len(),
            "no new calls; waiting up to {grace:?} for running receptions"
        );
    }
    let finished = tokio::select! {
        r = tokio::time::timeout(grace, join_all(calls)) => r.is_ok(),
        _ = term.recv() => false,
    };
    if finished {
        return;
    }
    tracing::warn!(
        running = calls.len(),
        "shutdown timeout over: hanging up the remaining calls (finished at the next start)"
    );
    daemon.kill.cancel();
    if tokio::time::timeout(HANGUP_WAIT, join_all(calls))
        .await
        .is_err()
    {
        calls.abort_all();
        join_all(calls).await;
    }
}

async fn join_all(calls: &mut JoinSet<()>) {
    while calls.join_next().await.is_some() {}
}

/// Is `ip` in `[gofaxd] allowedpeers`? (IPv4-mapped IPv6 addresses count as IPv4.)
fn allowed(config: &Config, ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    config
        .gofaxd
        .allowed_peers
        .iter()
        .any(|net| net.contains(ip))
}

/// SIGHUP: re-read the file; new calls use it, running calls keep theirs. The spool, the
/// modems and the listen address need a restart and are kept.
fn reload(current: &mut Arc<Config>) {
    let path = current.source.path.clone();
    tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration");
    let mut fresh = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            for p in e.problems() {
                tracing::error!("{p}");
            }
            tracing::error!("configuration not reloaded; keeping the previous one");
            return;
        }
    };
    let problems = fresh.validate();
    for p in &problems {
        if p.is_error() {
            tracing::error!("{p}");
        } else {
            tracing::warn!("{p}");
        }
    }
    if problems.iter().any(Problem::is_error) {
        tracing::error!("configuration not reloaded; keeping the previous one");
        return;
    }
    let kept = [
        (
            "[hylafax] spooldir",
            fresh.hylafax.spooldir != current.hylafax.spooldir,
        ),
        (
            "[hylafax] modems",
            fresh.hylafax.modems != current.hylafax.modems,
        ),
        (
            "[gofaxd] socket",
            fresh.gofaxd.socket != current.gofaxd.socket,
        ),
    ];
    for (key, changed) in kept {
        if changed {
            tracing::warn!("{key} changed: takes effect after a restart of fsfaxd");
        }
    }
    fresh.hylafax.spooldir = current.hylafax.spooldir.clone();
    fresh.hylafax.modems = current.hylafax.modems;
    fresh.gofaxd.socket = current.gofaxd.socket.clone();
    *current = Arc::new(fresh);
    tracing::info!("configuration reloaded");
}

fn absolute(path: &std::path::Path) -> Result<PathBuf, ServeError> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .map_err(|source| ServeError::Spool {
            path: path.to_path_buf(),
            source,
        })
}
