//! Session logs `log/c%09u` in HylaFAX's line format:
//! `Nov 22 11:11:25.13: [ 2533]: SESSION BEGIN 000000001 5554`.
//!
//! hfaxd serves these files to clients, so they follow faxsend/faxgetty's layout. A session log
//! is a diagnostic: a failed write is logged as a warning and never aborts a fax.
//!
//! fsfaxsend writes its one log itself ([`SessionLog::create`]); fsfaxd's calls hand their
//! lines to the spool writer thread ([`SessionLog::through`]), which writes each log's lines
//! of a batch with one `write`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Local, Timelike};

use super::Spool;
use super::seqf::format_commid;
use super::writer::SpoolWriter;

/// Errors creating a session log. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum SessionLogError {
    #[error("{path}: cannot create session log: {source}")]
    Create { path: PathBuf, source: io::Error },
}

/// An open session log (`LogFileMode` 0600, append-only).
#[derive(Debug)]
pub struct SessionLog {
    path: PathBuf,
    sink: Sink,
    commid: String,
    pid: u32,
}

#[derive(Debug)]
enum Sink {
    File(File),
    /// Lines go to the spool writer thread, which holds the file as log `id`.
    Writer {
        writer: SpoolWriter,
        id: u64,
    },
    None,
}

impl SessionLog {
    /// Creates (or appends to) `log/c%09u` for `commid` in `spool`.
    pub fn create(spool: &Spool, commid: u32) -> Result<Self, SessionLogError> {
        Self::create_at(&spool.session_log(commid), &format_commid(commid))
    }

    /// Creates (or appends to) the session log at `path`.
    pub fn create_at(path: &Path, commid: &str) -> Result<Self, SessionLogError> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| SessionLogError::Create {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            sink: Sink::File(file),
            commid: commid.to_owned(),
            pid: std::process::id(),
        })
    }

    /// `log/c%09u` for `commid` in `spool`, created (or appended to) and written by the
    /// spool writer thread: a failure to create it is logged there, and its lines dropped.
    pub fn through(writer: &SpoolWriter, spool: &Spool, commid: u32) -> Self {
        let path = spool.session_log(commid);
        let id = writer.new_log_id();
        let at = path.clone();
        writer.post(move |ctx| ctx.log_open(id, at));
        Self {
            path,
            sink: Sink::Writer {
                writer: writer.clone(),
                id,
            },
            commid: format_commid(commid),
            pid: std::process::id(),
        }
    }

    /// A log that writes nothing (used when the file could not be created).
    pub fn disabled(commid: &str) -> Self {
        Self {
            path: PathBuf::new(),
            sink: Sink::None,
            commid: commid.to_owned(),
            pid: std::process::id(),
        }
    }

    /// The file's path (empty when disabled).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// HylaFAX's header: `SESSION BEGIN <commid> <number>` and the software version line.
    pub fn begin(&self, number: &str) {
        self.log(&format!("SESSION BEGIN {} {number}", self.commid));
        self.log(&format!("fsfax {}", env!("CARGO_PKG_VERSION")));
    }

    /// `SESSION END`.
    pub fn end(&self) {
        self.log("SESSION END");
    }

    /// Appends `text` (each of its lines gets the timestamp/pid prefix). Never fails.
    pub fn log(&self, text: &str) {
        tracing::debug!(commid = %self.commid, "{text}");
        match &self.sink {
            Sink::None => {}
            Sink::File(file) => {
                let mut file: &File = file;
                let buf = format_lines(Local::now(), self.pid, text);
                // One write per call so concurrent writers (O_APPEND) never interleave inside a
                // line.
                if let Err(e) = file.write_all(buf.as_bytes()) {
                    tracing::warn!(path = %self.path.display(), "cannot write session log: {e}");
                }
            }
            Sink::Writer { writer, id } => {
                let buf = format_lines(Local::now(), self.pid, text);
                let id = *id;
                writer.post(move |ctx| ctx.log_line(id, buf.as_bytes()));
            }
        }
    }
}

impl Drop for SessionLog {
    fn drop(&mut self) {
        if let Sink::Writer { writer, id } = &self.sink {
            let id = *id;
            writer.post(move |ctx| ctx.log_close(id));
        }
    }
}

/// `%b %d %H:%M:%S.<centiseconds>: [%5d]: <line>\n` for every line of `text`.
fn format_lines(now: DateTime<Local>, pid: u32, text: &str) -> String {
    STAMP.with_borrow_mut(|cached| {
        let key = (
            now.timestamp(),
            now.nanosecond() % 1_000_000_000 / 10_000_000,
            pid,
        );
        if cached.0 != Some(key) {
            cached.0 = Some(key);
            cached.1 = stamp(now, pid);
        }
        let stamp = &cached.1;
        let lines = text.split('\n').count();
        let mut out = String::with_capacity(text.len() + lines * (stamp.len() + 1));
        for line in text.split('\n') {
            out.push_str(stamp);
            out.push_str(line.trim_end_matches('\r'));
            out.push('\n');
        }
        out
    })
}

/// A line prefix and the (second, centisecond, pid) it was made for.
type Stamp = (Option<(i64, u32, u32)>, String);

thread_local! {
    /// The last line prefix made: a busy fsfaxd writes many lines within one hundredth of a
    /// second, and the prefix is then the same.
    static STAMP: std::cell::RefCell<Stamp> = const { std::cell::RefCell::new((None, String::new())) };
}

/// `%b %d %H:%M:%S.<centiseconds>: [%5d]: ` (English month names, as HylaFAX's C locale).
fn stamp(now: DateTime<Local>, pid: u32) -> String {
    use chrono::Datelike;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {:02} {:02}:{:02}:{:02}.{:02}: [{:5}]: ",
        MONTHS[now.month0() as usize % 12],
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.nanosecond() % 1_000_000_000 / 10_000_000,
        pid
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn line_format_matches_hylafax() {
        let t = Local
            .with_ymd_and_hms(2026, 11, 22, 11, 11, 25)
            .unwrap()
            .with_nanosecond(130_000_000)
            .unwrap();
        assert_eq!(
            format_lines(t, 2533, "SESSION BEGIN 000000001 5554"),
            "Nov 22 11:11:25.13: [ 2533]: SESSION BEGIN 000000001 5554\n"
        );
        assert_eq!(
            format_lines(t, 7, "a\r\nb"),
            "Nov 22 11:11:25.13: [    7]: a\nNov 22 11:11:25.13: [    7]: b\n"
        );
    }

    /// The prefix made by hand is strftime's `%b %d %H:%M:%S` in the C locale, for every
    /// month; the cached one follows the turn of a hundredth and the pid.
    #[test]
    fn line_prefix_matches_strftime_and_follows_the_clock() {
        let at = |month, hms: (u32, u32, u32), nanos| {
            Local
                .with_ymd_and_hms(2026, month, 1, hms.0, hms.1, hms.2)
                .unwrap()
                .with_nanosecond(nanos)
                .unwrap()
        };
        for month in 1..=12 {
            let t = at(month, (4, 5, 6), 999_999_999);
            let expected = format!("{}.99: [   42]: x\n", t.format("%b %d %H:%M:%S"));
            assert_eq!(format_lines(t, 42, "x"), expected);
        }
        let t = at(1, (0, 0, 0), 10_000_000);
        assert_eq!(format_lines(t, 1, "a"), "Jan 01 00:00:00.01: [    1]: a\n");
        let later = t.with_nanosecond(20_000_000).unwrap();
        assert_eq!(
            format_lines(later, 1, "b"),
            "Jan 01 00:00:00.02: [    1]: b\n"
        );
        assert_eq!(
            format_lines(later, 2, "c"),
            "Jan 01 00:00:00.02: [    2]: c\n"
        );
    }

    #[test]
    fn create_begin_end() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("log")).unwrap();
        let spool = Spool::new(dir.path());
        let log = SessionLog::create(&spool, 12).unwrap();
        log.begin("5554");
        log.log("SEND FAX: JOB 22");
        log.end();
        let p = dir.path().join("log/c000000012");
        assert_eq!(log.path(), p);
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].ends_with("]: SESSION BEGIN 000000012 5554"));
        assert!(lines[1].ends_with(&format!("]: fsfax {}", env!("CARGO_PKG_VERSION"))));
        assert!(lines[3].ends_with("]: SESSION END"));
        assert!(lines[0].contains(&format!("[{:5}]", std::process::id())));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn failures_do_not_abort() {
        let dir = tempfile::tempdir().unwrap();
        let e = SessionLog::create(&Spool::new(dir.path().join("nope")), 1).unwrap_err();
        assert!(e.to_string().contains("c000000001"));
        let log = SessionLog::disabled("000000001");
        log.begin("1");
        log.log("nothing happens");
        assert_eq!(log.path(), Path::new(""));
        // A write error (device full) is swallowed.
        let full = SessionLog {
            path: "/dev/full".into(),
            sink: Sink::File(OpenOptions::new().append(true).open("/dev/full").unwrap()),
            commid: "1".into(),
            pid: 1,
        };
        full.log("still fine");
    }
}
