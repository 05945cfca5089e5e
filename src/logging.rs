//! Logging to syslog (facility `daemon`) or stderr, with real levels.
//!
//! [`init`] picks the destination: stderr with `-f/--foreground` or when stderr is a terminal,
//! otherwise syslog; when no syslog socket answers at `/dev/log`, one warning goes to stderr and
//! logging stays on stderr. The filter comes from the `FSFAX_LOG` environment variable
//! (`RUST_LOG` syntax, e.g. `FSFAX_LOG=debug` or `FSFAX_LOG=info,fsfax::esl=debug`), default
//! `info`.
//!
//! Levels are honest: `error!` = an operation failed (a fax lost, a job failed), `warn!` =
//! something unexpected that fsfax worked around, `info!` = one line per call/job milestone,
//! `debug!` = protocol detail. Syslog priorities match (`info!` is `LOG_INFO`, not `LOG_NOTICE`).
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

use std::ffi::{CStr, CString};
use std::io::{self, IsTerminal, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;

use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Environment variable holding the log filter.
pub const FILTER_ENV: &str = "FSFAX_LOG";
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

impl Drop for LogGuard {
    fn drop(&mut self) {
        if self.destination == Destination::Syslog {
            // SAFETY: closelog takes no arguments and is harmless if already closed.
            unsafe { libc::closelog() };
        }
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
    let mut destination = if foreground || io::stderr().is_terminal() {
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
    if destination == Destination::Syslog {
        // SAFETY: `ident` is 'static and NUL-terminated, as openlog keeps the pointer.
        unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    }
    let ansi = destination == Destination::Stderr && io::stderr().is_terminal();
    let subscriber = build_subscriber(destination, LogWriter { destination }, filter, ansi);
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
    match destination {
        Destination::Stderr => Box::new(builder.finish()),
        Destination::Syslog => Box::new(builder.without_time().finish()),
    }
}

/// Ok if something accepts connections on the syslog socket (datagram, as journald and
/// rsyslog use, or stream).
fn syslog_reachable(path: &Path) -> io::Result<()> {
    let dgram = UnixDatagram::unbound().and_then(|s| s.connect(path));
    match dgram {
        Ok(()) => Ok(()),
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

/// Hands each event to syslog or stderr in one piece.
#[derive(Debug, Clone, Copy)]
struct LogWriter {
    destination: Destination,
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter::new(self.destination, Level::INFO)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> EventWriter {
        EventWriter::new(self.destination, *meta.level())
    }
}

/// Collects one formatted event and emits it when dropped, so a line is never split.
struct EventWriter {
    destination: Destination,
    level: Level,
    buf: Vec<u8>,
}

impl EventWriter {
    fn new(destination: Destination, level: Level) -> Self {
        EventWriter {
            destination,
            level,
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
        match self.destination {
            Destination::Stderr => {
                let _ = io::stderr().lock().write_all(&self.buf);
            }
            Destination::Syslog => {
                let line = syslog_line(&self.buf);
                // SAFETY: "%s" with one NUL-terminated string argument.
                unsafe {
                    libc::syslog(
                        libc::LOG_DAEMON | syslog_priority(self.level),
                        c"%s".as_ptr(),
                        line.as_ptr(),
                    )
                };
            }
        }
    }
}

/// tracing level → syslog priority, without syslog-tracing's shift (it logs `info!` as NOTICE).
fn syslog_priority(level: Level) -> libc::c_int {
    match level {
        Level::ERROR => libc::LOG_ERR,
        Level::WARN => libc::LOG_WARNING,
        Level::INFO => libc::LOG_INFO,
        Level::DEBUG | Level::TRACE => libc::LOG_DEBUG,
    }
}

/// One syslog message: padding and trailing newline dropped, NUL bytes (never valid in C strings)
/// replaced by `?` so a hostile value cannot truncate the line.
fn syslog_line(buf: &[u8]) -> CString {
    let trimmed = buf.trim_ascii();
    let bytes: Vec<u8> = trimmed
        .iter()
        .map(|&b| if b == 0 { b'?' } else { b })
        .collect();
    CString::new(bytes).unwrap_or_default()
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
    fn syslog_priorities_are_not_shifted() {
        assert_eq!(syslog_priority(Level::ERROR), libc::LOG_ERR);
        assert_eq!(syslog_priority(Level::WARN), libc::LOG_WARNING);
        assert_eq!(syslog_priority(Level::INFO), libc::LOG_INFO);
        assert_eq!(syslog_priority(Level::DEBUG), libc::LOG_DEBUG);
    }

    #[test]
    fn syslog_line_strips_newline_and_nuls() {
        assert_eq!(syslog_line(b" INFO a\0b\n").as_bytes(), b"INFO a?b");
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
        assert!(syslog_reachable(&stream_path).is_ok());
    }
}
