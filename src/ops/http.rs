//! fsfaxd's small HTTP endpoint (hyper 1, HTTP/1.1, on fsfaxd's own tokio runtime):
//!
//! | path | answers |
//! |---|---|
//! | `/metrics` | Prometheus/OpenMetrics text |
//! | `/healthz` | `200 ok`: the daemon's runtime answers (liveness) |
//! | `/readyz` | `200` or `503`, one line per check with its reason |
//! | `/status` | JSON: modems, calls in progress, FreeSWITCH, checks, recent errors |
//!
//! It listens on `[gofaxd] metrics` (TCP, allow-listed by `metricspeers`) when set, and always
//! on the unix socket [`SOCKET`] in the spool, which `fsfaxd status` uses.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use super::live::{SwitchState, live};
use super::metrics::{self, metrics};
use super::process::{ScrapeCollector, disk_space};
use crate::config::PeerNet;
use crate::receive::modems::Modems;

/// The unix socket `fsfaxd status` talks to, relative to the spool.
pub const SOCKET: &str = "status/fsfaxd.sock";
/// `/readyz` fails below this much free space on the spool's file system.
pub const MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;
/// A connection that has not finished its request by then is closed.
const CONNECTION_LIMIT: Duration = Duration::from_secs(30);

/// Everything the endpoint reports on.
pub struct Endpoint {
    registry: Registry,
    spool: PathBuf,
    modems: Modems,
    started: Instant,
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot listen on {addr} ([gofaxd] metrics): {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot create the status socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Endpoint {
    /// The endpoint for the daemon on `spool` with `modems`.
    pub fn new(spool: &Path, modems: Modems) -> Arc<Endpoint> {
        let mut registry = Registry::default();
        metrics::register(&mut registry, &modems.names());
        registry.register_collector(Box::new(ScrapeCollector {
            spool: spool.to_path_buf(),
        }));
        Arc::new(Endpoint {
            registry,
            spool: spool.to_path_buf(),
            modems,
            started: Instant::now(),
        })
    }

    /// The exposition text.
    pub fn metrics_text(&self) -> String {
        let (total, busy) = self.modems.usage();
        metrics().modems.set(total as i64);
        metrics().modems_busy.set(busy as i64);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The readiness checks: (name, ok, detail).
    pub fn checks(&self) -> Vec<(String, bool, String)> {
        let mut out = Vec::new();
        let accepting = live().accepting();
        out.push((
            "listener".into(),
            accepting,
            if accepting {
                "taking calls from FreeSWITCH".into()
            } else {
                "not taking calls (starting or stopping)".into()
            },
        ));
        out.push(spool_check(&self.spool));
        out.push(faxq_check(&self.spool.join("FIFO")));
        out.extend(freeswitch_checks(&live().switch_states()));
        out
    }

    /// `/readyz`: the status and its plain-text body.
    pub fn readyz(&self) -> (bool, String) {
        readyz_text(&self.checks())
    }

    /// `/status`: everything `fsfaxd status` shows, as JSON.
    pub fn status_json(&self) -> serde_json::Value {
        let checks: Vec<_> = self
            .checks()
            .into_iter()
            .map(|(name, ok, detail)| json!({"name": name, "ok": ok, "detail": detail}))
            .collect();
        let ready = checks.iter().all(|c| c["ok"] == true);
        let modems: Vec<_> = self
            .modems
            .snapshot()
            .into_iter()
            .map(|(name, state, commid)| json!({"name": name, "state": state, "commid": commid}))
            .collect();
        let mut v = live().to_json();
        let obj = v.as_object_mut().expect("live state is an object");
        obj.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        obj.insert("pid".into(), json!(std::process::id()));
        obj.insert(
            "uptime_seconds".into(),
            json!(self.started.elapsed().as_secs()),
        );
        obj.insert("spool".into(), json!(self.spool.display().to_string()));
        obj.insert("ready".into(), json!(ready));
        obj.insert("checks".into(), json!(checks));
        obj.insert("modems".into(), json!(modems));
        v
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
        }
        match req.uri().path() {
            "/metrics" => {
                let mut r = text(StatusCode::OK, self.metrics_text());
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                r
            }
            "/healthz" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" => {
                let (ready, body) = self.readyz();
                let code = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                text(code, body)
            }
            "/status" => {
                let mut r = text(StatusCode::OK, format!("{:#}\n", self.status_json()));
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                r
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /metrics, /healthz, /readyz or /status\n".into(),
            ),
        }
    }
}

/// One check per FreeSWITCH node, in the configured order: `freeswitch` when there is one,
/// `freeswitch <host:port>` for each of several. Every node's connection must be up: the calls
/// of a node without one lose their T.38 fallback lookups.
pub fn freeswitch_checks(states: &[SwitchState]) -> Vec<(String, bool, String)> {
    if states.is_empty() {
        return vec![(
            "freeswitch".into(),
            false,
            "Event Socket not connected: not connected yet".into(),
        )];
    }
    let several = states.len() > 1;
    states
        .iter()
        .map(|s| {
            let name = if several {
                format!("freeswitch {}", s.peer)
            } else {
                "freeswitch".into()
            };
            let detail = if s.up {
                "Event Socket connected and answering".into()
            } else {
                format!("Event Socket not connected: {}", s.why)
            };
            (name, s.up, detail)
        })
        .collect()
}

/// Ready when every check is; the text: `ready` or `not ready`, then one line per check.
pub fn readyz_text(checks: &[(String, bool, String)]) -> (bool, String) {
    let ready = checks.iter().all(|(_, ok, _)| *ok);
    let mut text = String::from(if ready { "ready\n" } else { "not ready\n" });
    for (name, ok, detail) in checks {
        text.push_str(&format!(
            "{} {name}: {detail}\n",
            if *ok { "ok  " } else { "FAIL" }
        ));
    }
    (ready, text)
}

fn text(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn spool_check(spool: &Path) -> (String, bool, String) {
    use nix::unistd::{AccessFlags, access};
    let name = || "spool".to_owned();
    if let Err(e) = access(&spool.join("recvq"), AccessFlags::W_OK) {
        return (
            name(),
            false,
            format!("{}/recvq not writable: {e}", spool.display()),
        );
    }
    match disk_space(spool) {
        Some((free, _)) if free < MIN_FREE_BYTES => (
            name(),
            false,
            format!(
                "{}: only {} MiB free (below {} MiB)",
                spool.display(),
                free / (1024 * 1024),
                MIN_FREE_BYTES / (1024 * 1024)
            ),
        ),
        Some((free, _)) => (
            name(),
            true,
            format!(
                "{} writable, {} MiB free",
                spool.display(),
                free / (1024 * 1024)
            ),
        ),
        None => (
            name(),
            false,
            format!("{}: cannot read its free space", spool.display()),
        ),
    }
}

/// Whether faxq reads its FIFO: opening it for writing without blocking fails with ENXIO
/// when no process has it open for reading. Nothing is written.
fn faxq_check(fifo: &Path) -> (String, bool, String) {
    use std::os::unix::fs::OpenOptionsExt;
    let (ok, detail) = match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
    {
        Ok(_) => (true, format!("{} has a reader", fifo.display())),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => (
            false,
            format!("{}: faxq is not running (no reader)", fifo.display()),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
            false,
            format!(
                "{}: missing (faxq creates it: is it running?)",
                fifo.display()
            ),
        ),
        Err(e) => (false, format!("{}: {e}", fifo.display())),
    };
    ("faxq".into(), ok, detail)
}

/// Serves one connection.
fn serve_connection<S>(endpoint: Arc<Endpoint>, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let service = service_fn(move |req: Request<Incoming>| {
            let endpoint = endpoint.clone();
            async move { Ok::<_, Infallible>(endpoint.respond(&req)) }
        });
        let conn = http1::Builder::new()
            .keep_alive(false)
            .serve_connection(TokioIo::new(stream), service);
        if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_LIMIT, conn).await {
            tracing::debug!("HTTP endpoint: {e}");
        }
    });
}

/// Binds `[gofaxd] metrics` (when set) and the status socket; the returned future serves
/// them until `stop`.
pub async fn start(
    endpoint: Arc<Endpoint>,
    addr: &str,
    peers: Vec<PeerNet>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, EndpointError> {
    let tcp = if addr.is_empty() {
        None
    } else {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| EndpointError::Listen {
                addr: addr.to_owned(),
                source,
            })?;
        let bound = l
            .local_addr()
            .map_or_else(|_| addr.to_owned(), |a| a.to_string());
        tracing::info!("metrics and health checks on http://{bound}/metrics");
        Some(l)
    };
    let path = endpoint.spool.join(SOCKET);
    // A socket a previous run left behind (nobody listens on it any more).
    let _ = std::fs::remove_file(&path);
    let unix = UnixListener::bind(&path).map_err(|source| EndpointError::Socket {
        path: path.clone(),
        source,
    })?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(accepted) = accept_tcp(tcp.as_ref()) => match accepted {
                    Ok((stream, peer)) if allowed(&peers, peer) => {
                        serve_connection(endpoint.clone(), stream);
                    }
                    Ok((_, peer)) => {
                        tracing::warn!(%peer, "metrics connection refused: peer not in [gofaxd] metricspeers");
                    }
                    Err(e) => {
                        tracing::warn!("metrics accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                accepted = unix.accept() => match accepted {
                    Ok((stream, _)) => serve_connection(endpoint.clone(), stream),
                    Err(e) => {
                        tracing::warn!("status socket accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        let _ = std::fs::remove_file(&path);
    }))
}

async fn accept_tcp(
    l: Option<&TcpListener>,
) -> Option<std::io::Result<(tokio::net::TcpStream, SocketAddr)>> {
    match l {
        Some(l) => Some(l.accept().await),
        None => std::future::pending().await,
    }
}

fn allowed(peers: &[PeerNet], peer: SocketAddr) -> bool {
    let ip = peer.ip().to_canonical();
    peers.iter().any(|net| net.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::live::Live;
    use crate::ops::live::two_nodes::{A, B, a_up_b_refused_in_both_orders, two_nodes};

    /// `/readyz` with every other check passing and the nodes as `l` has them.
    fn readyz_of(l: &Live) -> (bool, String) {
        let mut checks = vec![("listener".to_owned(), true, "taking calls".to_owned())];
        checks.extend(freeswitch_checks(&l.switch_states()));
        readyz_text(&checks)
    }

    #[test]
    fn not_ready_while_one_node_is_down_whichever_reported_last() {
        for l in a_up_b_refused_in_both_orders() {
            let (ready, text) = readyz_of(&l);
            assert!(!ready, "{text}");
            assert!(text.starts_with("not ready\n"), "{text}");
            assert!(
                text.contains(&format!(
                    "FAIL freeswitch {B}: Event Socket not connected: connection refused\n"
                )),
                "{text}"
            );
            assert!(
                text.contains(&format!(
                    "ok   freeswitch {A}: Event Socket connected and answering\n"
                )),
                "{text}"
            );
            assert_eq!(text.matches("FAIL").count(), 1, "{text}");
        }
    }

    #[test]
    fn ready_once_every_node_is_up() {
        let l = two_nodes();
        l.switch_up(B, false);
        let (ready, text) = readyz_of(&l);
        assert!(!ready, "{text}");
        assert!(
            text.contains(&format!(
                "FAIL freeswitch {A}: Event Socket not connected: not connected yet\n"
            )),
            "{text}"
        );
        l.switch_up(A, false);
        let (ready, text) = readyz_of(&l);
        assert!(ready, "{text}");
        assert!(text.starts_with("ready\n"), "{text}");
    }

    #[test]
    fn one_node_keeps_the_plain_check_name() {
        let l = Live::default();
        l.set_nodes(&[A.to_owned()]);
        l.switch_down(A, "timeout");
        let (ready, text) = readyz_of(&l);
        assert!(!ready);
        assert!(
            text.contains("FAIL freeswitch: Event Socket not connected: timeout\n"),
            "{text}"
        );
        l.switch_up(A, false);
        assert!(readyz_of(&l).1.contains("ok   freeswitch: "));
    }
}
