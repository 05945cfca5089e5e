//! Logging to syslog (facility `daemon`) or stderr, with real levels.
//!
//! [`init`] picks the destination: stderr with `-f/--foreground`, with `FSFAX_LOG_STDERR=1` or
//! when stderr is a terminal, otherwise syslog; when no syslog socket answers at `/dev/log`, one warning goes to stderr and
//! logging stays on stderr. The filter comes from the `FSFAX_LOG` environment variable
//! (`RUST_LOG` syntax, e.g. `FSFAX_LOG=debug` or `FSFAX_LOG=info,fsfax::esl=debug`), default
//! `info`.
//!
//! Levels are honest: `error!` = an operation failed (a fax lost, a job failed), `warn!` =
//! something unexpected that fsfax worked around, `info!` = one line per call/job milestone,
//! `debug!` = protocol detail. Syslog lines go through the `syslog-tracing` crate, whose mapping
//! is lossless but shifted at the bottom: `error!` → `LOG_ERR`, `warn!` → `LOG_WARNING`,
//! `info!` → `LOG_NOTICE`, `debug!` → `LOG_INFO`, `trace!` → `LOG_DEBUG`. Filter the journal on
//! `-p notice` for the milestones, `-p info` to add protocol detail.
//!
//! # Span convention
//! Every line carries the fields of the spans it is inside, on syslog too
//! (`INFO call{uuid=... modem=freeswitch1}: fax received pages=3`). Open one span per call or
//! job, named `call`, with the identifiers an admin greps for; declare fields that are not
//! known yet as `Empty` and record them later:
//!
//! ```
//! let uuid = "6f1c...";
//! let span = tracing::info_span!(
//!     "call",
//!     uuid = %uuid,
//!     job = tracing::field::Empty,
//!     modem = tracing::field::Empty
//! );
//! let _entered = span.enter();
//! span.record("modem", "freeswitch1");
//! tracing::info!(pages = 3, "fax received");
//! ```
//!
//! Writes never fail loudly: fsfaxsend runs under faxq with stdout and stderr on a read-only
//! `/dev/null`, so every write error is ignored (no panic, no abort).

use std::ffi::CStr;
use std::io::{self, IsTerminal, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::sync::Arc;

use syslog_tracing::{Facility, InvalidCharAction, Options, Syslog, SyslogWriter};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Environment variable holding the log filter.
pub const FILTER_ENV: &str = "FSFAX_LOG";
/// Set to `1`, logs go to stderr even when it is not a terminal (fsfaxsend under a wrapper
/// that collects its output; the tests, whose result must not depend on whether a syslog
/// daemon happens to own `/dev/log`).
pub const STDERR_ENV: &str = "FSFAX_LOG_STDERR";
/// The filter used when [`FILTER_ENV`] is unset.
pub const DEFAULT_FILTER: &str = "info";
/// The local syslog socket.
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// syslog, facility `daemon`, tagged with the program's ident and pid.
    Syslog,
    /// Standard error, one line per event, with a timestamp.
    Stderr,
}

/// Keeps the logger set up; dropping it closes the syslog connection.
#[derive(Debug)]
pub struct LogGuard {
    destination: Destination,
}

impl LogGuard {
    /// Where log lines go.
    pub fn destination(&self) -> Destination {
        self.destination
    }
}

/// Sets up the global logger for program `ident` (`c"fsfaxd"`, `c"fsfaxsend"`).
///
/// `default_filter` applies when `FSFAX_LOG` is unset (use [`DEFAULT_FILTER`]). An invalid
/// `FSFAX_LOG` is reported as a warning and the default is used. If a global logger already
/// exists (tests), it is kept.
pub fn init(ident: &'static CStr, foreground: bool, default_filter: &str) -> LogGuard {
    let env = std::env::var(FILTER_ENV).ok();
    let (filter, filter_warning) = build_filter(env.as_deref(), default_filter);
    let forced = std::env::var_os(STDERR_ENV).is_some_and(|v| v == "1");
    let mut destination = if foreground || forced || io::stderr().is_terminal() {
        Destination::Stderr
    } else {
        Destination::Syslog
    };
    if destination == Destination::Syslog {
        if let Err(e) = syslog_reachable(Path::new(SYSLOG_SOCKET)) {
            write_stderr(&format!(
                "{}: warning: no syslog at {SYSLOG_SOCKET} ({e}); logging to stderr\n",
                ident.to_string_lossy()
            ));
            destination = Destination::Stderr;
        }
    }
    // The syslog connection lives as long as the global logger (for the process). Only one
    // can exist; a second `init` (tests) keeps the first logger anyway.
    let syslog = match destination {
        Destination::Syslog => Syslog::new(ident, Options::LOG_PID, Facility::Daemon)
            .map(|s| Arc::new(s.invalid_chars(InvalidCharAction::ReplaceWith('?')))),
        Destination::Stderr => None,
    };
    let ansi = destination == Destination::Stderr && io::stderr().is_terminal();
    let subscriber = build_subscriber(destination, LogWriter { syslog }, filter, ansi);
    // An existing global logger (a test harness) is not an error worth reporting.
    let _ = tracing::subscriber::set_global_default(subscriber);
    if let Some(warning) = filter_warning {
        tracing::warn!("{warning}");
    }
    LogGuard { destination }
}

/// Parses the filter from the environment value, falling back to `default_filter`; the
/// second value explains a rejected environment value.
fn build_filter(env: Option<&str>, default_filter: &str) -> (EnvFilter, Option<String>) {
    let fallback = || EnvFilter::try_new(default_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    match env.map(str::trim).filter(|e| !e.is_empty()) {
        None => (fallback(), None),
        Some(value) => match EnvFilter::try_new(value) {
            Ok(filter) => (filter, None),
            Err(e) => (
                fallback(),
                Some(format!(
                    "ignoring {FILTER_ENV}={value:?} ({e}); using `{default_filter}`"
                )),
            ),
        },
    }
}

/// The line format: level, spans with their fields, message and fields; no colours unless
/// `ansi`; syslog lines carry no timestamp (syslog adds its own).
fn build_subscriber<W>(
    destination: Destination,
    writer: W,
    filter: EnvFilter,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .with_target(false)
        .log_internal_errors(false);
    // The last warnings and errors are kept for `fsfaxd status`.
    use tracing_subscriber::layer::SubscriberExt;
    let recent = crate::ops::recent::RecentErrors;
    match destination {
        Destination::Stderr => Box::new(builder.finish().with(recent)),
        Destination::Syslog => Box::new(builder.without_time().finish().with(recent)),
    }
}

/// Ok if something accepts connections on the syslog socket in a way the C library's
/// `syslog(3)` writes: datagrams (journald, rsyslog), or a stream, to which glibc falls back.
/// musl (fsfaxsend's static build) writes datagrams only: a stream socket there would take
/// nothing, so the lines go to stderr instead.
fn syslog_reachable(path: &Path) -> io::Result<()> {
    let dgram = UnixDatagram::unbound().and_then(|s| s.connect(path));
    match dgram {
        Ok(()) => Ok(()),
        Err(e) if cfg!(target_env = "musl") => Err(e),
        Err(e) => UnixStream::connect(path).map(drop).map_err(|_| e),
    }
}

/// Writes `text` to stdout, ignoring errors (stdout may be closed or read-only).
pub fn write_stdout(text: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Writes `text` to stderr, ignoring errors (stderr may be closed or read-only).
pub fn write_stderr(text: &str) {
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// Hands each event to syslog (through `syslog-tracing`) or stderr in one piece.
#[derive(Clone)]
struct LogWriter {
    /// `None`: stderr.
    syslog: Option<Arc<Syslog>>,
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter::new(self.syslog.as_ref().map(|s| s.make_writer()))
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> EventWriter {
        EventWriter::new(self.syslog.as_ref().map(|s| s.make_writer_for(meta)))
    }
}

/// Collects one formatted event and emits it when dropped, so a line is never split.
struct EventWriter {
    /// `None`: stderr.
    syslog: Option<SyslogWriter>,
    buf: Vec<u8>,
}

impl EventWriter {
    fn new(syslog: Option<SyslogWriter>) -> Self {
        EventWriter {
            syslog,
            buf: Vec::with_capacity(256),
        }
    }
}

impl Write for EventWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match &mut self.syslog {
            None => {
                let _ = io::stderr().lock().write_all(&self.buf);
            }
            Some(syslog) => {
                // One syslog(3) call per event, without the level's padding and the newline
                // (the priority carries the level); NULs become `?` in the crate.
                let _ = syslog.write_all(syslog_line(&self.buf));
                let _ = syslog.flush();
            }
        }
    }
}

/// One syslog message: the level's padding and the trailing newline dropped.
fn syslog_line(buf: &[u8]) -> &[u8] {
    buf.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    fn capture(destination: Destination, filter: &str, f: impl FnOnce()) -> String {
        let out = Capture::default();
        let subscriber = build_subscriber(destination, out.clone(), EnvFilter::new(filter), false);
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn lines_carry_span_fields_and_syslog_lines_no_timestamp() {
        let text = capture(Destination::Syslog, "info", || {
            let span = tracing::info_span!(
                "call",
                uuid = %"abc-1",
                job = tracing::field::Empty,
                modem = "freeswitch1"
            );
            let _e = span.enter();
            span.record("job", 42);
            tracing::info!(pages = 3, "fax received");
        });
        assert_eq!(
            text,
            " INFO call{uuid=abc-1 modem=\"freeswitch1\" job=42}: fax received pages=3\n"
        );
    }

    #[test]
    fn stderr_lines_have_a_timestamp_and_the_filter_applies() {
        let text = capture(Destination::Stderr, "warn", || {
            tracing::info!("hidden");
            tracing::warn!("shown");
        });
        assert!(!text.contains("hidden"), "{text}");
        let line = text.lines().next().unwrap();
        assert!(line.ends_with("WARN shown"), "{line}");
        assert!(line.starts_with(|c: char| c.is_ascii_digit()), "{line}");
    }

    #[test]
    fn filter_from_environment_value() {
        let (f, w) = build_filter(Some("debug"), "info");
        assert!(w.is_none());
        assert_eq!(f.to_string(), "debug");
        let (f, w) = build_filter(None, "warn");
        assert!(w.is_none());
        assert_eq!(f.to_string(), "warn");
        let (f, w) = build_filter(Some("info,[=bad"), "info");
        assert!(w.unwrap().contains("FSFAX_LOG"));
        assert_eq!(f.to_string(), "info");
    }

    #[test]
    fn syslog_line_strips_padding_and_newline() {
        assert_eq!(syslog_line(b" INFO a b\n"), b"INFO a b");
    }

    #[test]
    fn syslog_socket_detection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        assert!(syslog_reachable(&path).is_err());
        let _dgram = UnixDatagram::bind(&path).unwrap();
        assert!(syslog_reachable(&path).is_ok());
        let stream_path = dir.path().join("stream");
        let _listener = std::os::unix::net::UnixListener::bind(&stream_path).unwrap();
        assert_eq!(
            syslog_reachable(&stream_path).is_ok(),
            !cfg!(target_env = "musl")
        );
    }
}
