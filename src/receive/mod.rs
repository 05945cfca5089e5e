//! fsfaxd: receives faxes from FreeSWITCH into HylaFAX for every line at once, and runs the
//! virtual modems fsfaxsend sends with (the job of one faxgetty per modem).
//!
//! [`run`] reads top to bottom like the daemon's life: spool and journal, virtual modems
//! announced to faxq, the listener for FreeSWITCH's outbound sockets (allow-listed peers
//! only), recovery of receptions a previous run left behind, then one task per call until
//! told to stop. Its owner (the binary: SIGTERM, SIGINT, SIGHUP) steers it through a channel
//! of [`Control`]s, so the daemon also runs in-process under a test. fsfaxd never forks.
//!
//! Files: [`modems`] (faxq, faxstat, FIFOs; `ModemState`), `call` (one call, in protocol
//! order), `accept` (a modem, screening, a commid, before the answer), `screen` (the caller,
//! DynamicConfig, the T.38 list), `rxfax` (answer, journal, rxfax, follow until
//! `fax::CallEnding` says the call is over), `conclude` (after the call: metrics, the
//! hand-over), `outcome` (how a reception ended), [`deliver`] (xferfaxlog and faxrcvd), [`recover`] (the journal at start-up),
//! [`recipient`] (SIP headers).
//!
//! Blocking I/O has one rule: nothing that syncs, locks or writes a spool file runs on the
//! thread the calls share (the binary runs them all on one; see `serve` in `bin/fsfaxd.rs`).
//! The journal, the sequence files, xferfaxlog and the session logs go to the one spool writer
//! thread (`hylafax::writer`: in order, one `fdatasync` for everything due together), and so
//! does the received document's examination (page count, TIFF tags, mode). The runtime's
//! blocking pool, which the binary bounds to two threads, keeps the rare rest (reading an
//! interrupted reception's document at start-up). So fsfaxd's threads are fixed: the
//! runtime's, the spool writer, the faxq FIFO writer, whatever the load.

mod accept;
mod call;
pub mod coalesce;
mod conclude;
pub mod deliver;
mod link;
pub mod modems;
mod outcome;
pub mod owner;
pub mod recipient;
pub mod recover;
mod rxfax;
mod screen;

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, FreeSwitchSection, Node, Problem};
use crate::esl::{ClientError, InboundClient};
use crate::hylafax::Spool;
use crate::hylafax::journal::{Journal, JournalError};
use crate::hylafax::modem::ModemError;
use crate::ops;
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
    #[error(transparent)]
    Endpoint(#[from] crate::ops::http::EndpointError),
}

/// What the daemon's owner tells it while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Re-read the configuration file for new calls (SIGHUP).
    Reload,
    /// Stop taking calls and let the running ones finish within `shutdowntimeout`; a second
    /// `Stop` hangs them up at once (SIGTERM, SIGINT).
    Stop,
}

/// Binds `[gofaxd] socket`, for [`run`].
pub async fn bind(config: &Config) -> Result<TcpListener, ServeError> {
    TcpListener::bind(&config.gofaxd.socket)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.gofaxd.socket.clone(),
            source,
        })
}

/// Each call holds a socket, a recvq file and a session log: raise the soft limit on open
/// files to the hard one (systemd and shells start daemons at 1024), so a busy line does not
/// run out of descriptors.
pub fn raise_file_limit() {
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
    /// One permit per reception in progress, `maxinbound` of them (`None`: no cap).
    inbound: Option<Arc<Semaphore>>,
    /// Cancelled when fsfaxd is told to stop: no new work starts (recovery leaves what it has
    /// not begun to deliver for the next start).
    pub(crate) stopping: CancellationToken,
    /// Cancelled when the shutdown timeout is over: calls hang up and leave their journal.
    pub(crate) kill: CancellationToken,
    /// The connection for T.38 fallback lookups and writes.
    pub(crate) switch: SwitchLink,
}

/// fsfaxd's own inbound Event Socket connections, one per FreeSWITCH node ([freeswitch]
/// socket, then each `node`), shared by all calls, for what fsfaxd asks FreeSWITCH outside a
/// call: the T.38 fallback list and, at start-up, whether an interrupted reception's call is
/// still up. Not the call's own socket: FreeSWITCH answers a socket's commands in order, so a
/// hung mod_db would stall the call, and the command timeout would then close the socket and
/// lose it. Here a hung mod_db costs a lookup (bounded by fallbacklookuptimeout), never a
/// call; and calls do not each open a connection (GOfax.IP did).
///
/// What fsfaxd asks on behalf of a call goes to the node that owns the call: the node whose
/// address the call's socket came from ([`SwitchLink::owner`]). Every node's connection is
/// kept up and watched by a keeper of its own ([`link::keep`]), which shows its state.
#[derive(Debug)]
pub(crate) struct SwitchLink {
    nodes: Vec<NodeLink>,
    /// Addresses of the nodes given by name, resolved once when a call first needed them.
    resolved: tokio::sync::OnceCell<Vec<Vec<IpAddr>>>,
}

#[derive(Debug)]
struct NodeLink {
    node: Node,
    conn: tokio::sync::Mutex<Option<InboundClient>>,
    /// Woken when this node's connection is lost (see [`link`]).
    lost: Arc<tokio::sync::Notify>,
    /// Whether this node was ever connected (a later connection is a reconnect).
    ever_up: AtomicBool,
}

impl SwitchLink {
    pub(crate) fn new(fs: &FreeSwitchSection) -> SwitchLink {
        SwitchLink {
            nodes: fs
                .node_list()
                .into_iter()
                .map(|node| NodeLink {
                    node,
                    conn: tokio::sync::Mutex::new(None),
                    lost: Arc::default(),
                    ever_up: AtomicBool::new(false),
                })
                .collect(),
            resolved: tokio::sync::OnceCell::new(),
        }
    }

    /// How many nodes there are (at least one).
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Every node's Event Socket address, in the configured order.
    pub(crate) fn sockets(&self) -> Vec<String> {
        self.nodes.iter().map(|l| l.node.socket.clone()).collect()
    }

    /// Node `i`'s Event Socket address.
    pub(crate) fn socket(&self, i: usize) -> &str {
        &self.nodes[i.min(self.nodes.len() - 1)].node.socket
    }

    /// Node `i`'s shared client, connecting (again) when there is none or the last one
    /// closed.
    pub(crate) async fn client_of(
        &self,
        cfg: &Config,
        i: usize,
    ) -> Result<InboundClient, SwitchError> {
        let link = &self.nodes[i.min(self.nodes.len() - 1)];
        let fs = &cfg.freeswitch;
        let wait = fs.fallback_lookup_timeout;
        // Another call may be connecting; never wait on it longer than a lookup may take.
        let mut slot = tokio::time::timeout(wait, link.conn.lock())
            .await
            .map_err(|_| SwitchError::Busy {
                socket: link.node.socket.clone(),
                wait,
            })?;
        if let Some(client) = slot.as_ref() {
            if client.close_reason().is_none() {
                return Ok(client.clone());
            }
        }
        // A reloaded password applies to the next connection.
        let password = fs.password_of(&link.node.socket);
        let client = link::connect(
            &link.node.socket,
            &password,
            wait,
            link.lost.clone(),
            &link.ever_up,
        )
        .await?;
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Woken when node `i`'s connection is lost.
    pub(crate) fn lost(&self, i: usize) -> &tokio::sync::Notify {
        &self.nodes[i.min(self.nodes.len() - 1)].lost
    }

    /// The node a call whose socket came from `peer` belongs to: the node listed with that
    /// address (names resolved once), else the first (`[freeswitch] socket`).
    pub(crate) async fn owner(&self, peer: IpAddr) -> usize {
        if self.nodes.len() < 2 {
            return 0;
        }
        let peer = canonical(peer);
        let literal = |n: &NodeLink| host_of(&n.node.socket).parse::<IpAddr>().ok();
        if let Some(i) = self
            .nodes
            .iter()
            .position(|n| literal(n).map(canonical) == Some(peer))
        {
            return i;
        }
        let resolved = self
            .resolved
            .get_or_init(|| async {
                let mut all = Vec::with_capacity(self.nodes.len());
                for n in &self.nodes {
                    let found = match literal(n) {
                        Some(ip) => vec![ip],
                        None => tokio::time::timeout(
                            Duration::from_secs(2),
                            tokio::net::lookup_host(n.node.socket.clone()),
                        )
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .map(|addrs| addrs.map(|a| a.ip()).collect())
                        .unwrap_or_else(|| {
                            tracing::warn!(
                                node = %n.node.socket,
                                "cannot resolve this FreeSWITCH node's name; its calls are \
                                 served through the first node"
                            );
                            Vec::new()
                        }),
                    };
                    all.push(found.into_iter().map(canonical).collect());
                }
                all
            })
            .await;
        match resolved.iter().position(|ips| ips.contains(&peer)) {
            Some(i) => i,
            None => {
                tracing::debug!(%peer, "the call's address is no listed node; using the first");
                0
            }
        }
    }
}

/// How often fsfaxd checks that its FreeSWITCH nodes share one fallback list.
const SHARED_STORE_CHECK: Duration = Duration::from_secs(600);

/// With several nodes and the fallback list on: checks at start-up and every
/// [`SHARED_STORE_CHECK`] that every node sees what is written through the first (a node
/// started while PostgreSQL was down keeps a private mod_db), and says so when one does not.
async fn watch_shared_store(daemon: Arc<Daemon>, cfg: Arc<Config>) {
    let fs = &cfg.freeswitch;
    if fs.nodes.is_empty() || !fs.softmodem_fallback {
        return;
    }
    let mut was_shared = true;
    loop {
        let check = crate::fallback::admin::check_nodes(&cfg).await;
        let first = check
            .nodes
            .first()
            .map_or("", |(n, _)| n.as_str())
            .to_owned();
        for (node, share) in &check.nodes {
            use crate::fallback::admin::NodeShare;
            match share {
                NodeShare::Shares => {}
                NodeShare::Own => tracing::warn!(
                    %node,
                    "FreeSWITCH node {node} does not share the T.38 fallback list with {first}: \
                     its mod_db is its own (started while PostgreSQL was down?); restart \
                     FreeSWITCH on it (`fsfaxd fallback check-nodes` checks again)"
                ),
                NodeShare::Unreachable(e) => tracing::info!(
                    %node,
                    "cannot check that FreeSWITCH node {node} shares the fallback list: {e}"
                ),
            }
        }
        let shared = check.all_shared();
        if shared && !was_shared {
            tracing::info!("every FreeSWITCH node shares the T.38 fallback list again");
        }
        was_shared = shared;
        tokio::select! {
            () = daemon.stopping.cancelled() => return,
            () = tokio::time::sleep(SHARED_STORE_CHECK) => {}
        }
    }
}

/// `host` of `host:port` / `[v6]:port`.
fn host_of(socket: &str) -> &str {
    let host = socket.rsplit_once(':').map_or(socket, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// An IPv4 address mapped into IPv6 (a dual-stack listener's view) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Why the shared connection to FreeSWITCH is not there.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SwitchError {
    #[error("no connection to FreeSWITCH at {socket} within {wait:?}")]
    Busy { socket: String, wait: Duration },
    #[error(transparent)]
    Connect(#[from] ClientError),
}

impl Daemon {
    /// A place for one more reception (its permit, held for the call), unless `maxinbound`
    /// are running: `None` then.
    pub(crate) fn admit(&self) -> Option<Option<OwnedSemaphorePermit>> {
        match &self.inbound {
            None => Some(None),
            Some(places) => places.clone().try_acquire_owned().ok().map(Some),
        }
    }
}

/// The daemon itself, on the current runtime, until a [`Control::Stop`] (or the end of
/// `control`) and the drain after it.
pub async fn run(
    mut config: Config,
    listener: TcpListener,
    mut control: mpsc::Receiver<Control>,
) -> Result<(), ServeError> {
    let (root, spool) = open_spool(&mut config)?;
    let journal = Journal::open(spool.root())?;
    let modems = Modems::create(&spool, config.hylafax.modems)?;
    modems.fill_configs(&config.gofaxsend.fax_number, &config.freeswitch.ident);
    modems.flushed().await;
    let readers = modems.spawn_fifo_readers();
    // Every FreeSWITCH node shows as not connected until its keeper reports.
    let switch = SwitchLink::new(&config.freeswitch);
    ops::live::live().set_nodes(&switch.sockets());
    // Metrics, health checks and the status socket; they answer until the very end
    // (and say where before the listener does, for whoever waits for it).
    let ops_stop = CancellationToken::new();
    let endpoint = ops::http::Endpoint::new(&root, modems.clone());
    let g = &config.gofaxd;
    let endpoint = ops::http::start(
        endpoint,
        &g.metrics,
        g.metrics_peers.clone(),
        ops_stop.clone(),
    )
    .await?;
    let sends = config.hylafax.xferfaxlog.as_ref().map(|log| {
        let log = config.spool_path(log);
        tokio::spawn(ops::sends::follow(log, root.clone(), ops_stop.clone()))
    });
    tracing::info!(
        spool = %root.display(),
        modems = ?modems.names(),
        "listening on {} for FreeSWITCH",
        listener.local_addr().map_or_else(|_| config.gofaxd.socket.clone(), |a| a.to_string())
    );
    let max = config.gofaxd.max_inbound;
    let daemon = Arc::new(Daemon {
        spool,
        modems: modems.clone(),
        journal,
        inbound: (max > 0).then(|| Arc::new(Semaphore::new(max as usize))),
        stopping: CancellationToken::new(),
        kill: CancellationToken::new(),
        switch,
    });
    let mut config = Arc::new(config);
    let keepers: Vec<_> = (0..daemon.switch.len())
        .map(|i| tokio::spawn(link::keep(daemon.clone(), config.clone(), i)))
        .collect();
    let store_watch = tokio::spawn(watch_shared_store(daemon.clone(), config.clone()));
    let mut calls: JoinSet<()> = JoinSet::new();
    calls.spawn(recover_task(daemon.clone(), config.clone()));
    ops::live::live().set_accepting(true);
    tokio::spawn(ops::notify::watchdog(ops_stop.clone()));
    ops::notify::notify("READY=1\nSTATUS=taking calls");
    serve(&listener, &daemon, &mut config, &mut calls, &mut control).await;
    ops::live::live().set_accepting(false);
    ops::notify::notify("STOPPING=1");
    drop(listener);
    daemon.stopping.cancel();
    let grace = config.gofaxd.shutdown_timeout;
    drain(&mut calls, &daemon, grace, &mut control).await;
    // What the calls queued (removals, session-log lines) is on disk before fsfaxd exits.
    daemon.journal.writer().flushed().await;
    modems.shut_down().await;
    for reader in readers {
        reader.abort();
    }
    for keeper in keepers {
        keeper.abort();
    }
    store_watch.abort();
    ops_stop.cancel();
    let _ = endpoint.await;
    if let Some(sends) = sends {
        let _ = sends.await;
    }
    tracing::info!("fsfaxd stopped");
    Ok(())
}

/// The spool, made absolute (relative paths in the configuration are spool-relative; an
/// absolute spool keeps them so), with the directories fsfaxd writes in.
fn open_spool(config: &mut Config) -> Result<(PathBuf, Spool), ServeError> {
    let root = absolute(&config.hylafax.spooldir)?;
    config.hylafax.spooldir = root.clone();
    let spool = Spool::new(&root);
    for dir in ["recvq", "log", "status", "etc"] {
        let path = spool.join(dir);
        std::fs::create_dir_all(&path).map_err(|source| ServeError::Spool { path, source })?;
    }
    Ok((root, spool))
}

/// Receptions a previous run left behind, while fsfaxd runs.
async fn recover_task(daemon: Arc<Daemon>, config: Arc<Config>) {
    let n = recover::recover(&daemon, &config).await;
    if n > 0 {
        tracing::info!("{n} interrupted receptions delivered");
    }
}

/// Accepts FreeSWITCH's connections, one task per call, until told to stop.
async fn serve(
    listener: &TcpListener,
    daemon: &Arc<Daemon>,
    config: &mut Arc<Config>,
    calls: &mut JoinSet<()>,
    control: &mut mpsc::Receiver<Control>,
) {
    let mut resync = tokio::time::interval(RESYNC_INTERVAL);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Before reading a byte: only FreeSWITCH may talk to us.
                    if !allowed(config, peer.ip()) {
                        ops::metrics::metrics().connections_refused.inc();
                        tracing::warn!(%peer, "connection refused: peer not in [gofaxd] allowedpeers");
                        drop(stream);
                        continue;
                    }
                    tracing::debug!(%peer, "FreeSWITCH connected");
                    calls.spawn(call::handle(stream, peer, daemon.clone(), config.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = calls.join_next(), if !calls.is_empty() => {}
            _ = resync.tick() => daemon.modems.resync_if_unreachable(),
            order = control.recv() => match order {
                Some(Control::Reload) => reload(config),
                Some(Control::Stop) | None => return,
            },
        }
    }
}

/// Lets running receptions finish within `grace` (a second stop cuts it short), then hangs
/// up the rest; their journal entries stay for the next start.
async fn drain(
    calls: &mut JoinSet<()>,
    daemon: &Daemon,
    grace: Duration,
    control: &mut mpsc::Receiver<Control>,
) {
    if !calls.is_empty() {
        tracing::info!(
            running = calls.len(),
            "no new calls; waiting up to {grace:?} for running receptions"
        );
    }
    let second_stop = async {
        loop {
            match control.recv().await {
                Some(Control::Stop) => return,
                Some(Control::Reload) => tracing::info!("stopping: reload ignored"),
                None => std::future::pending::<()>().await,
            }
        }
    };
    let finished = tokio::select! {
        r = tokio::time::timeout(grace, join_all(calls)) => r.is_ok(),
        () = second_stop => false,
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
        (
            "[freeswitch] socket and node",
            fresh.freeswitch.socket != current.freeswitch.socket
                || fresh.freeswitch.nodes != current.freeswitch.nodes,
        ),
        (
            "[gofaxd] maxinbound",
            fresh.gofaxd.max_inbound != current.gofaxd.max_inbound,
        ),
        (
            "[gofaxd] metrics",
            fresh.gofaxd.metrics != current.gofaxd.metrics
                || fresh.gofaxd.metrics_peers != current.gofaxd.metrics_peers,
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
    fresh.freeswitch.socket = current.freeswitch.socket.clone();
    fresh.freeswitch.nodes = current.freeswitch.nodes.clone();
    fresh.gofaxd.max_inbound = current.gofaxd.max_inbound;
    fresh.gofaxd.metrics = current.gofaxd.metrics.clone();
    fresh.gofaxd.metrics_peers = current.gofaxd.metrics_peers.clone();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon runs in-process: no signals, a listener and a control channel from the test.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_in_process_until_told_to_stop() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[freeswitch]\nsocket = 127.0.0.1:9\npassword = x\n\
             [hylafax]\nspooldir = {}\nmodems = 1\n[gofaxd]\nsocket = 127.0.0.1:9\n",
            dir.path().display()
        );
        let config = Config::parse(&text, std::path::Path::new("test.conf")).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (control, orders) = mpsc::channel(1);
        let daemon = tokio::spawn(run(config, listener, orders));
        let status = dir.path().join("status/freeswitch0");
        let read = || std::fs::read_to_string(&status).unwrap_or_default();
        for _ in 0..100 {
            if read().trim() == "Running and idle" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(read().trim(), "Running and idle");
        // A connection that closes before a byte is a call dropped before it started.
        drop(tokio::net::TcpStream::connect(addr).await.unwrap());
        control.send(Control::Stop).await.unwrap();
        let stopped = tokio::time::timeout(Duration::from_secs(10), daemon).await;
        assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
        assert_eq!(read().trim(), "Down");
    }
}
