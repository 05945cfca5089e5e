//! What fsfaxd is doing right now, for `/readyz`, `/status` and `fsfaxd status`: the calls in
//! progress, the state of the shared connection to FreeSWITCH, whether the listener takes
//! calls, and the last warnings and errors it logged.
//!
//! One process-wide [`live`] record; the code that does the work updates it (a [`CallEntry`]
//! per reception, [`Live::switch_up`]/[`Live::switch_down`] from the connection keeper).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use serde_json::{Value, json};

use super::metrics::metrics;

/// How many warnings and errors `fsfaxd status` shows.
pub const RECENT_ERRORS: usize = 10;

/// One reception in progress.
#[derive(Debug, Clone)]
struct CallInfo {
    caller: String,
    caller_name: String,
    recipient: String,
    modem: String,
    commid: String,
    /// `t38`, `audio`, or empty before spandsp said.
    mode: String,
    pages: u32,
    since: Instant,
}

/// The shared Event Socket connection's state.
#[derive(Debug, Clone)]
struct SwitchInfo {
    /// Where fsfaxd connects (`[freeswitch] socket`).
    peer: String,
    up: bool,
    /// When it went up or down.
    since: SystemTime,
    /// Why it is down (or went down last).
    last_error: Option<String>,
    last_heartbeat: Option<SystemTime>,
    /// The heartbeat interval seen, in seconds (0 before two heartbeats).
    heartbeat_interval: f64,
    reconnects: u64,
}

impl Default for SwitchInfo {
    fn default() -> Self {
        SwitchInfo {
            peer: String::new(),
            up: false,
            since: SystemTime::now(),
            last_error: Some("not connected yet".into()),
            last_heartbeat: None,
            heartbeat_interval: 0.0,
            reconnects: 0,
        }
    }
}

/// A warning or error fsfaxd logged.
#[derive(Debug, Clone)]
struct Logged {
    at: SystemTime,
    level: &'static str,
    message: String,
}

/// The process-wide live state.
#[derive(Debug, Default)]
pub struct Live {
    calls: Mutex<BTreeMap<u64, CallInfo>>,
    next: AtomicU64,
    switch: Mutex<SwitchInfo>,
    errors: Mutex<VecDeque<Logged>>,
    accepting: AtomicBool,
}

static LIVE: LazyLock<Live> = LazyLock::new(Live::default);

/// The process's live state.
pub fn live() -> &'static Live {
    &LIVE
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn local_text(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Local>::from(t)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

impl Live {
    /// A reception started on `modem`: shown until the returned entry is dropped.
    pub fn call(
        &'static self,
        caller: &str,
        caller_name: &str,
        recipient: &str,
        modem: &str,
        commid: &str,
    ) -> CallEntry {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.calls).insert(
            id,
            CallInfo {
                caller: caller.into(),
                caller_name: caller_name.into(),
                recipient: recipient.into(),
                modem: modem.into(),
                commid: commid.into(),
                mode: String::new(),
                pages: 0,
                since: Instant::now(),
            },
        );
        metrics().receptions_in_progress.inc();
        CallEntry { live: self, id }
    }

    /// Whether the listener takes calls (false before it runs and once fsfaxd stops).
    pub fn set_accepting(&self, on: bool) {
        self.accepting.store(on, Ordering::Release);
    }

    pub fn accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }

    /// The shared connection to FreeSWITCH at `peer` is up.
    pub fn switch_up(&self, peer: &str, reconnect: bool) {
        let mut s = lock(&self.switch);
        s.peer = peer.into();
        s.up = true;
        s.since = SystemTime::now();
        if reconnect {
            s.reconnects += 1;
        }
        metrics().freeswitch_up.set(1);
    }

    /// The shared connection is down (or could not be made), because of `why`.
    pub fn switch_down(&self, peer: &str, why: &str) {
        let mut s = lock(&self.switch);
        if s.up || s.last_error.as_deref() != Some(why) {
            s.since = SystemTime::now();
        }
        s.peer = peer.into();
        s.up = false;
        s.last_error = Some(why.into());
        metrics().freeswitch_up.set(0);
    }

    /// A HEARTBEAT arrived; `interval` is the one seen between the last two.
    pub fn heartbeat(&self, interval: Option<f64>) {
        let mut s = lock(&self.switch);
        s.last_heartbeat = Some(SystemTime::now());
        if let Some(i) = interval {
            s.heartbeat_interval = i;
        }
        metrics().freeswitch_heartbeats.inc();
    }

    /// Whether the shared connection is up, and if not why.
    pub fn switch_state(&self) -> (bool, String) {
        let s = lock(&self.switch);
        (s.up, s.last_error.clone().unwrap_or_default())
    }

    /// Keeps a warning or error for `fsfaxd status` (the last [`RECENT_ERRORS`]).
    pub fn logged(&self, level: &'static str, message: String) {
        let mut q = lock(&self.errors);
        if q.len() == RECENT_ERRORS {
            q.pop_front();
        }
        q.push_back(Logged {
            at: SystemTime::now(),
            level,
            message,
        });
    }

    /// The calls in progress, FreeSWITCH's connection and the recent errors, as JSON.
    pub fn to_json(&self) -> Value {
        let calls: Vec<Value> = lock(&self.calls)
            .values()
            .map(|c| {
                json!({
                    "caller": c.caller,
                    "caller_name": c.caller_name,
                    "recipient": c.recipient,
                    "modem": c.modem,
                    "commid": c.commid,
                    "mode": if c.mode.is_empty() { "unknown" } else { c.mode.as_str() },
                    "pages": c.pages,
                    "seconds": c.since.elapsed().as_secs(),
                })
            })
            .collect();
        let s = lock(&self.switch).clone();
        let errors: Vec<Value> = lock(&self.errors)
            .iter()
            .rev()
            .map(|e| {
                json!({
                    "time": local_text(e.at),
                    "unix": unix(e.at),
                    "level": e.level,
                    "message": e.message,
                })
            })
            .collect();
        json!({
            "calls": calls,
            "freeswitch": {
                "socket": s.peer,
                "connected": s.up,
                "since": local_text(s.since),
                "seconds": s.since.elapsed().map_or(0, |d| d.as_secs()),
                "last_error": s.last_error,
                "last_heartbeat": s.last_heartbeat.map(local_text),
                "heartbeat_interval_seconds": s.heartbeat_interval,
                "reconnects": s.reconnects,
            },
            "recent_errors": errors,
        })
    }
}

/// One reception shown in the status while it lives.
#[derive(Debug)]
pub struct CallEntry {
    live: &'static Live,
    id: u64,
}

impl CallEntry {
    fn update(&self, f: impl FnOnce(&mut CallInfo)) {
        if let Some(c) = lock(&self.live.calls).get_mut(&self.id) {
            f(c);
        }
    }

    /// Pages received so far.
    pub fn pages(&self, n: u32) {
        self.update(|c| c.pages = n);
    }

    /// `t38` or `audio`, once spandsp said.
    pub fn mode(&self, mode: &str) {
        self.update(|c| c.mode = mode.into());
    }

    /// The commid, once allocated.
    pub fn commid(&self, commid: &str) {
        self.update(|c| c.commid = commid.into());
    }
}

impl Drop for CallEntry {
    fn drop(&mut self) {
        lock(&self.live.calls).remove(&self.id);
        metrics().receptions_in_progress.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_show_while_they_live() {
        let entry = live().call("0401234", "ACME", "100", "freeswitch0", "000000042");
        entry.pages(2);
        entry.mode("t38");
        let v = live().to_json();
        let call = v["calls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["commid"] == "000000042")
            .cloned()
            .unwrap();
        assert_eq!(call["pages"], 2);
        assert_eq!(call["mode"], "t38");
        drop(entry);
        let v = live().to_json();
        assert!(
            !v["calls"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["commid"] == "000000042")
        );
    }

    #[test]
    fn recent_errors_are_bounded() {
        let l = Live::default();
        for i in 0..RECENT_ERRORS + 5 {
            l.logged("warn", format!("w{i}"));
        }
        let v = l.to_json();
        let errors = v["recent_errors"].as_array().unwrap();
        assert_eq!(errors.len(), RECENT_ERRORS);
        assert_eq!(errors[0]["message"], format!("w{}", RECENT_ERRORS + 4));
    }
}
