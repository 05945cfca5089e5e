//! `fsfaxd status`: asks the running daemon (its status socket in the spool, see
//! [`super::http::SOCKET`]) and prints what it is doing, for a person or, with `--json`, for a
//! script. Exit status: 0 running and ready, 1 running but not ready, 3 not running (LSB).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// Exit status when fsfaxd is running and ready.
pub const READY: u8 = 0;
/// Exit status when fsfaxd is running but not ready.
pub const NOT_READY: u8 = 1;
/// Exit status when fsfaxd is not running (LSB's "program is not running").
pub const NOT_RUNNING: u8 = 3;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("fsfaxd is not running on spool {spool} (no answer on {socket}: {source})")]
    NotRunning {
        spool: PathBuf,
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("fsfaxd at {socket} answered something unexpected: {what}")]
    BadAnswer { socket: PathBuf, what: String },
}

/// Fetches `/status` from the daemon on `spool`.
pub fn fetch(spool: &Path) -> Result<Value, StatusError> {
    let socket = spool.join(super::http::SOCKET);
    let not_running = |source| StatusError::NotRunning {
        spool: spool.to_path_buf(),
        socket: socket.clone(),
        source,
    };
    let mut stream = UnixStream::connect(&socket).map_err(not_running)?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(not_running)?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(not_running)?;
    stream
        .write_all(b"GET /status HTTP/1.0\r\nHost: fsfaxd\r\n\r\n")
        .map_err(not_running)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(not_running)?;
    let text = String::from_utf8_lossy(&answer);
    let bad = |what: String| StatusError::BadAnswer {
        socket: socket.clone(),
        what,
    };
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no HTTP header".into()))?;
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        return Err(bad(status_line.to_owned()));
    }
    serde_json::from_str(body).map_err(|e| bad(format!("not JSON: {e}")))
}

/// The exit status for a fetched status.
pub fn exit_code(status: &Value) -> u8 {
    if status["ready"] == true {
        READY
    } else {
        NOT_READY
    }
}

fn seconds_text(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s / 60) % 60),
    }
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// One FreeSWITCH node's connection, on one line.
fn switch_line(fs: &Value) -> String {
    let mut out = format!("FreeSWITCH {}: ", str_of(&fs["socket"]));
    if fs["connected"] == true {
        out.push_str(&format!(
            "connected for {}",
            seconds_text(fs["seconds"].as_u64().unwrap_or(0))
        ));
        if let Some(hb) = fs["last_heartbeat"].as_str() {
            out.push_str(&format!(", last heartbeat {hb}"));
        }
    } else {
        out.push_str(&format!(
            "NOT CONNECTED for {} ({})",
            seconds_text(fs["seconds"].as_u64().unwrap_or(0)),
            str_of(&fs["last_error"])
        ));
    }
    out.push_str(&format!(", {} reconnects\n", fs["reconnects"]));
    out
}

/// The status as a person reads it.
pub fn render(v: &Value) -> String {
    let mut out = String::new();
    let ready = v["ready"] == true;
    out.push_str(&format!(
        "fsfaxd {} (pid {}), up {}: {}\n",
        str_of(&v["version"]),
        v["pid"],
        seconds_text(v["uptime_seconds"].as_u64().unwrap_or(0)),
        if ready { "ready" } else { "NOT READY" }
    ));
    out.push_str(&format!("spool {}\n", str_of(&v["spool"])));
    out.push_str("\nChecks:\n");
    let checks = v["checks"].as_array().cloned().unwrap_or_default();
    let width = checks
        .iter()
        .map(|c| str_of(&c["name"]).len())
        .max()
        .unwrap_or(0)
        .max(10);
    for c in &checks {
        out.push_str(&format!(
            "  {} {:<width$} {}\n",
            if c["ok"] == true { "ok  " } else { "FAIL" },
            str_of(&c["name"]),
            str_of(&c["detail"])
        ));
    }
    // One line per node; a daemon from before `freeswitch_nodes` gives its one node only.
    let nodes = match v["freeswitch_nodes"].as_array() {
        Some(nodes) if !nodes.is_empty() => nodes.clone(),
        _ => vec![v["freeswitch"].clone()],
    };
    out.push('\n');
    for fs in &nodes {
        out.push_str(&switch_line(fs));
    }
    out.push_str("\nModems:\n");
    for m in v["modems"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<14} {:<10} {}\n",
            str_of(&m["name"]),
            str_of(&m["state"]),
            m["commid"]
                .as_str()
                .map_or(String::new(), |c| format!("commid {c}"))
        ));
    }
    let calls = v["calls"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!("\nCalls in progress: {}\n", calls.len()));
    for c in &calls {
        let mode = match str_of(&c["mode"]) {
            "t38" => "T.38",
            "audio" => "audio",
            _ => "mode not known yet",
        };
        out.push_str(&format!(
            "  {} \"{}\" -> {} on {} (commid {}): {}, {} pages, {}\n",
            str_of(&c["caller"]),
            str_of(&c["caller_name"]),
            str_of(&c["recipient"]),
            str_of(&c["modem"]),
            str_of(&c["commid"]),
            mode,
            c["pages"],
            seconds_text(c["seconds"].as_u64().unwrap_or(0)),
        ));
    }
    let errors = v["recent_errors"].as_array().cloned().unwrap_or_default();
    if !errors.is_empty() {
        out.push_str("\nLast warnings and errors (newest first):\n");
        for e in &errors {
            out.push_str(&format!(
                "  {} {:<5} {}\n",
                str_of(&e["time"]),
                str_of(&e["level"]),
                str_of(&e["message"])
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_what_an_admin_needs() {
        let v = json!({
            "version": "0.1.0", "pid": 42, "uptime_seconds": 3725, "spool": "/var/spool/hylafax",
            "ready": false,
            "checks": [{"name": "freeswitch", "ok": false, "detail": "Event Socket not connected: timeout"}],
            "freeswitch": {"socket": "127.0.0.1:8021", "connected": false, "seconds": 75,
                           "last_error": "timeout", "reconnects": 2},
            "modems": [{"name": "freeswitch0", "state": "receiving", "commid": "000000007"}],
            "calls": [{"caller": "0401234", "caller_name": "ACME", "recipient": "100",
                       "modem": "freeswitch0", "commid": "000000007", "mode": "t38",
                       "pages": 2, "seconds": 40}],
            "recent_errors": [{"time": "2026-12-04 10:00:00", "level": "warn", "message": "x"}],
        });
        let text = render(&v);
        assert!(text.contains("up 1h02m: NOT READY"), "{text}");
        assert!(text.contains("FAIL freeswitch"), "{text}");
        assert!(
            text.contains("NOT CONNECTED for 1m15s (timeout), 2 reconnects"),
            "{text}"
        );
        assert!(
            text.contains(
                "0401234 \"ACME\" -> 100 on freeswitch0 (commid 000000007): T.38, 2 pages, 40s"
            ),
            "{text}"
        );
        assert_eq!(exit_code(&v), NOT_READY);
    }

    #[test]
    fn one_line_per_freeswitch_node() {
        let node = |socket: &str, up: bool, error: &str| {
            json!({"socket": socket, "connected": up, "seconds": 5,
                   "last_error": error, "reconnects": 0})
        };
        let v = json!({
            "ready": false, "checks": [], "modems": [], "calls": [],
            "freeswitch": node("10.0.0.11:8021", true, ""),
            "freeswitch_nodes": [node("10.0.0.11:8021", true, ""),
                                 node("10.0.0.12:8021", false, "connection refused")],
        });
        let text = render(&v);
        assert!(
            text.contains("FreeSWITCH 10.0.0.11:8021: connected for 5s, 0 reconnects\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "FreeSWITCH 10.0.0.12:8021: NOT CONNECTED for 5s (connection refused), 0 reconnects\n"
            ),
            "{text}"
        );
        assert_eq!(text.matches("FreeSWITCH ").count(), 2, "{text}");
    }
}
