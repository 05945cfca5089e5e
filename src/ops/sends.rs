//! Sends counted from xferfaxlog. fsfaxsend is a short process that faxq starts per job, so
//! fsfaxd counts sends from the SEND records appended to the transfer log (fsfaxsend's and any
//! other sender's), as accounting tools do.
//!
//! The position read so far is kept in `recvq/.fsfax/xferfaxlog.offset` (the file's inode and
//! byte offset), written before the records are counted: a restart resumes where the last run
//! stopped, so records appended while fsfaxd was down are counted and none twice. A log that
//! was rotated (a new inode) is read from its start once the old one's last lines are read; a
//! truncated one (shorter than the offset, as `copytruncate` leaves it) too. The first start
//! ever begins at the end: history is not counted as new sends.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::metrics::metrics;

/// How often the log is looked at.
pub const POLL: Duration = Duration::from_secs(1);
/// The state file, relative to the spool.
pub const STATE: &str = "recvq/.fsfax/xferfaxlog.offset";

/// One SEND record's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Send {
    pub modem: String,
    pub pages: u32,
    pub connect_seconds: f64,
    /// Empty on success (HylaFAX writes the failure reason here).
    pub reason: String,
}

impl Send {
    pub fn outcome(&self) -> &'static str {
        if self.reason.is_empty() {
            "success"
        } else {
            "failed"
        }
    }
}

/// Parses a SEND line of HylaFAX's xferfaxlog format (see `hylafax::xferfaxlog`); `None` for
/// any other record or a line that is not one.
pub fn parse_send(line: &str) -> Option<Send> {
    let f: Vec<&str> = line.trim_end_matches(['\n', '\r']).split('\t').collect();
    if f.len() < 14 || f[1] != "SEND" {
        return None;
    }
    let reason = unquote(f[13]);
    Some(Send {
        modem: f[3].to_owned(),
        pages: f[10].parse().ok()?,
        connect_seconds: parse_time(f[12])?,
        reason,
    })
}

fn unquote(s: &str) -> String {
    let s = s.strip_prefix('"').unwrap_or(s);
    let s = s.strip_suffix('"').unwrap_or(s);
    s.replace("\\\"", "\"").trim().to_owned()
}

/// `H:MM:SS` or `MM:SS` (HylaFAX's `fmtTime`).
fn parse_time(s: &str) -> Option<f64> {
    let mut total = 0u64;
    for part in s.split(':') {
        total = total * 60 + part.trim().parse::<u64>().ok()?;
    }
    Some(total as f64)
}

/// Where reading stands: the file's inode and the offset of the next unread byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub inode: u64,
    pub offset: u64,
}

impl Position {
    fn load(path: &Path) -> Option<Position> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut it = text.split_whitespace();
        Some(Position {
            inode: it.next()?.parse().ok()?,
            offset: it.next()?.parse().ok()?,
        })
    }

    fn save(self, path: &Path) {
        let tmp = path.with_extension("offset.new");
        let written = std::fs::write(&tmp, format!("{} {}\n", self.inode, self.offset))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::warn!(
                "{}: cannot save the xferfaxlog position: {e}",
                path.display()
            );
        }
    }
}

/// Follows one xferfaxlog.
#[derive(Debug)]
pub struct Tail {
    log: PathBuf,
    state: PathBuf,
    open: Option<(File, Position)>,
    partial: Vec<u8>,
}

impl Tail {
    /// Follows `log`, keeping the position in `state`.
    pub fn new(log: PathBuf, state: PathBuf) -> Tail {
        Tail {
            log,
            state,
            open: None,
            partial: Vec::new(),
        }
    }

    /// Reads what was appended since the last call; the SEND records among it.
    pub fn poll(&mut self) -> Vec<Send> {
        let mut sends = Vec::new();
        if self.open.is_none() {
            self.open();
        }
        // The path now names another file (rotated): read the old one to its end first.
        let current = std::fs::metadata(&self.log).ok();
        if let Some((_, pos)) = &self.open {
            let rotated = current.as_ref().is_some_and(|m| m.ino() != pos.inode);
            let truncated = current
                .as_ref()
                .is_some_and(|m| m.ino() == pos.inode && m.len() < pos.offset);
            if truncated {
                tracing::info!(
                    "{}: truncated; reading it from the start",
                    self.log.display()
                );
                self.partial.clear();
                self.reopen_at_start();
            } else {
                self.read_new(&mut sends);
                if rotated {
                    tracing::info!(
                        "{}: rotated; reading the new file from the start",
                        self.log.display()
                    );
                    self.partial.clear();
                    self.reopen_at_start();
                }
            }
        }
        self.read_new(&mut sends);
        sends
    }

    /// Opens the log at the saved position (or, the first time ever, at its end).
    fn open(&mut self) {
        let Ok(file) = File::open(&self.log) else {
            return;
        };
        let Ok(meta) = file.metadata() else { return };
        let pos = match Position::load(&self.state) {
            Some(p) if p.inode == meta.ino() && p.offset <= meta.len() => p,
            Some(_) => {
                tracing::info!(
                    "{}: not the file read before (rotated or truncated while fsfaxd was down); \
                     counting it from the start",
                    self.log.display()
                );
                Position {
                    inode: meta.ino(),
                    offset: 0,
                }
            }
            None => {
                let p = Position {
                    inode: meta.ino(),
                    offset: meta.len(),
                };
                p.save(&self.state);
                p
            }
        };
        self.open = Some((file, pos));
    }

    fn reopen_at_start(&mut self) {
        self.open = File::open(&self.log).ok().and_then(|f| {
            let inode = f.metadata().ok()?.ino();
            let pos = Position { inode, offset: 0 };
            pos.save(&self.state);
            Some((f, pos))
        });
    }

    fn read_new(&mut self, sends: &mut Vec<Send>) {
        let Some((file, pos)) = &mut self.open else {
            return;
        };
        let mut buf = Vec::new();
        if file.seek(SeekFrom::Start(pos.offset)).is_err() || file.read_to_end(&mut buf).is_err() {
            return;
        }
        if buf.is_empty() {
            return;
        }
        pos.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        // Saved before counting, at the end of the last whole line.
        Position {
            inode: pos.inode,
            offset: pos.offset - self.partial.len() as u64,
        }
        .save(&self.state);
        for line in String::from_utf8_lossy(&complete).lines() {
            if let Some(send) = parse_send(line) {
                sends.push(send);
            }
        }
    }
}

/// Counts the SEND records appended to `log` until `stop`; the position is kept in the
/// spool's [`STATE`] file.
pub async fn follow(log: PathBuf, spool: PathBuf, stop: CancellationToken) {
    let mut tail = Tail::new(log, spool.join(STATE));
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (t, sends) = match tokio::task::spawn_blocking(move || {
            let sends = tail.poll();
            (tail, sends)
        })
        .await
        {
            Ok(done) => done,
            Err(_) => return,
        };
        tail = t;
        for s in sends {
            metrics().send_finished(s.outcome(), &s.modem, s.pages, s.connect_seconds);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const OK: &str = "12/04/26 10:00\tSEND\t000000042\tfreeswitch0\t7\t\"\"\tuser@host\t\"0401234\"\t\"+1 337\"\t2097152\t3\t0:01:10\t0:01:02\t\"\"\t\"\"\t\"\"\t\"\"\t\"user\"\t\"00 00 00\"\n";
    const BUSY: &str = "12/04/26 10:05\tSEND\t000000043\tfreeswitch1\t8\t\"\"\tuser@host\t\"0401234\"\t\"\"\t0\t0\t0:00:10\t0:00:00\t\"Busy signal detected\"\t\"\"\t\"\"\t\"\"\t\"user\"\t\"00 00 00\"\n";
    const RECV: &str = "12/04/26 10:06\tRECV\t000000044\tfreeswitch0\trecvq/fax000000044.tif\t\"\"\tfax\t\"100\"\t\"x\"\t0\t1\t0:00:30\t0:00:30\t\"\"\t\"\"\t\"\"\t\"\"\t\"\"\t\"00 00 00\"\n";

    #[test]
    fn parses_send_records_only() {
        let s = parse_send(OK).unwrap();
        assert_eq!(s.pages, 3);
        assert_eq!(s.connect_seconds, 62.0);
        assert_eq!(s.outcome(), "success");
        assert_eq!(parse_send(BUSY).unwrap().outcome(), "failed");
        assert_eq!(parse_send(RECV), None);
        assert_eq!(parse_send("garbage"), None);
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn resumes_without_losing_or_repeating_and_follows_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("xferfaxlog");
        let state = dir.path().join("offset");
        append(&log, OK);
        // First start ever: the history is not counted.
        let mut t = Tail::new(log.clone(), state.clone());
        assert!(t.poll().is_empty());
        append(&log, BUSY);
        // Half a line is left for the next poll.
        append(&log, &OK[..20]);
        assert_eq!(t.poll().len(), 1);
        drop(t);
        // "Restart": the rest of the line, written while down, is counted once.
        append(&log, &OK[20..]);
        append(&log, RECV);
        let mut t = Tail::new(log.clone(), state.clone());
        let got = t.poll();
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(t.poll().is_empty());
        // Rotation: the old file's last line, then the new file from its start.
        append(&log, BUSY);
        std::fs::rename(&log, dir.path().join("xferfaxlog.1")).unwrap();
        append(&log, OK);
        let got = t.poll();
        assert_eq!(got.len(), 2, "{got:?}");
        // Truncation (copytruncate).
        std::fs::write(&log, "").unwrap();
        assert!(t.poll().is_empty());
        append(&log, OK);
        assert_eq!(t.poll().len(), 1);
    }
}
