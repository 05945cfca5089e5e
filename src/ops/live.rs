//! What fsfaxd is doing right now, for `/readyz`, `/status` and `fsfaxd status`: the calls in
//! progress, the state of the shared connection to each FreeSWITCH node, whether the listener
//! takes calls, and the last warnings and errors it logged.
//!
//! One process-wide [`live`] record; the code that does the work updates it (a [`CallEntry`]
//! per reception, [`Live::switch_up`]/[`Live::switch_down`] from each node's connection
//! keeper).

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

/// The state of the shared Event Socket connection to one FreeSWITCH node.
#[derive(Debug, Clone)]
struct SwitchInfo {
    /// Where fsfaxd connects, as configured (`[freeswitch] socket` or a `node`).
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

impl SwitchInfo {
    fn new(peer: &str) -> Self {
        SwitchInfo {
            peer: peer.to_owned(),
            up: false,
            since: SystemTime::now(),
            last_error: Some("not connected yet".into()),
            last_heartbeat: None,
            heartbeat_interval: 0.0,
            reconnects: 0,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "socket": self.peer,
            "connected": self.up,
            "since": local_text(self.since),
            "seconds": self.since.elapsed().map_or(0, |d| d.as_secs()),
            "last_error": self.last_error,
            "last_heartbeat": self.last_heartbeat.map(local_text),
            "heartbeat_interval_seconds": self.heartbeat_interval,
            "reconnects": self.reconnects,
        })
    }

    /// Its `fsfax_freeswitch_up` series follows `up`.
    fn show(&self) {
        metrics().freeswitch_node_up(&self.peer, self.up);
    }
}

/// One FreeSWITCH node's connection as the readiness checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchState {
    /// The node's Event Socket address, as configured.
    pub peer: String,
    pub up: bool,
    /// Why it is down (or went down last); empty if it never was.
    pub why: String,
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
    /// One per FreeSWITCH node, in the configured order (the first is `[freeswitch] socket`).
    switches: Mutex<Vec<SwitchInfo>>,
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

    /// The FreeSWITCH nodes fsfaxd connects to (`[freeswitch] socket`, then each `node`), in
    /// the configured order: each shows as not connected until its keeper reports. A node's
    /// state already known is kept; a node no longer listed is forgotten.
    pub fn set_nodes(&self, peers: &[String]) {
        let mut all = lock(&self.switches);
        let mut next = Vec::with_capacity(peers.len());
        for peer in peers {
            if next.iter().any(|s: &SwitchInfo| &s.peer == peer) {
                continue;
            }
            let info = match all.iter().position(|s| &s.peer == peer) {
                Some(i) => all.swap_remove(i),
                None => SwitchInfo::new(peer),
            };
            info.show();
            next.push(info);
        }
        *all = next;
    }

    /// Changes the state of the node at `peer` (one not listed yet is added at the end).
    fn switch(&self, peer: &str, f: impl FnOnce(&mut SwitchInfo)) {
        let mut all = lock(&self.switches);
        let i = match all.iter().position(|s| s.peer == peer) {
            Some(i) => i,
            None => {
                all.push(SwitchInfo::new(peer));
                all.len() - 1
            }
        };
        f(&mut all[i]);
    }

    /// The shared connection to the FreeSWITCH node at `peer` is up.
    pub fn switch_up(&self, peer: &str, reconnect: bool) {
        self.switch(peer, |s| {
            s.up = true;
            s.since = SystemTime::now();
            if reconnect {
                s.reconnects += 1;
            }
            s.show();
        });
    }

    /// The shared connection to the node at `peer` is down (or could not be made), because of
    /// `why`.
    pub fn switch_down(&self, peer: &str, why: &str) {
        self.switch(peer, |s| {
            if s.up || s.last_error.as_deref() != Some(why) {
                s.since = SystemTime::now();
            }
            s.up = false;
            s.last_error = Some(why.into());
            s.show();
        });
    }

    /// A HEARTBEAT arrived from the node at `peer`; `interval` is the one seen between the
    /// last two.
    pub fn heartbeat(&self, peer: &str, interval: Option<f64>) {
        self.switch(peer, |s| {
            s.last_heartbeat = Some(SystemTime::now());
            if let Some(i) = interval {
                s.heartbeat_interval = i;
            }
        });
        metrics().freeswitch_heartbeats.inc();
    }

    /// Each node's connection, in the configured order: whether it is up, and if not why.
    pub fn switch_states(&self) -> Vec<SwitchState> {
        lock(&self.switches)
            .iter()
            .map(|s| SwitchState {
                peer: s.peer.clone(),
                up: s.up,
                why: s.last_error.clone().unwrap_or_default(),
            })
            .collect()
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

    /// The calls in progress, the connections to FreeSWITCH and the recent errors, as JSON:
    /// `freeswitch_nodes` has one object per node, `freeswitch` is the first node's (what it
    /// was when fsfaxd knew one node only).
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
        let nodes: Vec<Value> = lock(&self.switches)
            .iter()
            .map(SwitchInfo::to_json)
            .collect();
        let first = nodes
            .first()
            .cloned()
            .unwrap_or_else(|| SwitchInfo::new("").to_json());
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
            "freeswitch": first,
            "freeswitch_nodes": nodes,
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

/// Two nodes for the tests of the live state and of `/readyz`.
#[cfg(test)]
pub(crate) mod two_nodes {
    use super::Live;

    pub(crate) const A: &str = "192.0.2.1:8021";
    pub(crate) const B: &str = "192.0.2.2:8021";

    /// A live state that knows nodes `A` and `B`, neither connected yet.
    pub(crate) fn two_nodes() -> Live {
        let l = Live::default();
        l.set_nodes(&[A.to_owned(), B.to_owned()]);
        l
    }

    /// `A` up and `B` refused, once reported in each order.
    pub(crate) fn a_up_b_refused_in_both_orders() -> [Live; 2] {
        let a_then_b = two_nodes();
        a_then_b.switch_up(A, false);
        a_then_b.switch_down(B, "connection refused");
        let b_then_a = two_nodes();
        b_then_a.switch_down(B, "connection refused");
        b_then_a.switch_up(A, false);
        [a_then_b, b_then_a]
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

    use super::two_nodes::{A, B, a_up_b_refused_in_both_orders, two_nodes};

    #[test]
    fn each_node_keeps_its_own_state_whichever_reports_last() {
        for l in a_up_b_refused_in_both_orders() {
            let states = l.switch_states();
            assert_eq!(
                states,
                vec![
                    SwitchState {
                        peer: A.into(),
                        up: true,
                        why: "not connected yet".into()
                    },
                    SwitchState {
                        peer: B.into(),
                        up: false,
                        why: "connection refused".into()
                    },
                ]
            );
            let v = l.to_json();
            let nodes = v["freeswitch_nodes"].as_array().unwrap();
            assert_eq!(nodes.len(), 2, "{v:#}");
            assert_eq!(nodes[0]["socket"], A);
            assert_eq!(nodes[0]["connected"], true);
            assert_eq!(nodes[1]["socket"], B);
            assert_eq!(nodes[1]["connected"], false);
            assert_eq!(nodes[1]["last_error"], "connection refused");
            // `freeswitch` stays the first node's, as with one node.
            assert_eq!(v["freeswitch"], nodes[0], "{v:#}");
        }
    }

    #[test]
    fn a_node_that_never_connected_shows_down_with_a_reason() {
        let l = two_nodes();
        l.switch_up(B, false);
        let states = l.switch_states();
        assert_eq!(states[0].peer, A);
        assert!(!states[0].up);
        assert_eq!(states[0].why, "not connected yet");
        assert!(states[1].up);
        // Listing the nodes again keeps what is known.
        l.set_nodes(&[A.to_owned(), B.to_owned()]);
        assert_eq!(l.switch_states(), states);
    }

    #[test]
    fn heartbeats_and_reconnects_count_per_node() {
        let l = two_nodes();
        l.switch_up(A, false);
        l.switch_up(B, false);
        l.switch_down(B, "closed");
        l.switch_up(B, true);
        l.heartbeat(B, Some(1.5));
        let v = l.to_json();
        let nodes = v["freeswitch_nodes"].as_array().unwrap();
        assert_eq!(nodes[0]["reconnects"], 0);
        assert_eq!(nodes[0]["heartbeat_interval_seconds"], 0.0);
        assert!(nodes[0]["last_heartbeat"].is_null());
        assert_eq!(nodes[1]["reconnects"], 1);
        assert_eq!(nodes[1]["heartbeat_interval_seconds"], 1.5);
        assert!(nodes[1]["last_heartbeat"].is_string());
    }

    #[test]
    fn freeswitch_up_has_a_series_per_node() {
        // Addresses of their own: the metrics are process-wide.
        const C: &str = "192.0.2.3:8021";
        const D: &str = "192.0.2.4:8021";
        let mut reg = prometheus_client::registry::Registry::default();
        super::super::metrics::register(&mut reg, &[]);
        let text = || {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
            text
        };
        // Each node's series after each report, as (C, D).
        let assert_up = |c: u8, d: u8| {
            let t = text();
            for (node, up) in [(C, c), (D, d)] {
                let series = format!("fsfax_freeswitch_up{{node=\"{node}\"}} {up}\n");
                assert!(t.contains(&series), "no {series} in\n{t}");
            }
            t
        };
        let l = Live::default();
        l.set_nodes(&[C.to_owned(), D.to_owned()]);
        assert_up(0, 0);
        l.switch_down(D, "connection refused");
        l.switch_up(C, false);
        assert_up(1, 0);
        l.switch_up(D, false);
        l.switch_down(C, "closed");
        let t = assert_up(0, 1);
        assert!(t.contains("# TYPE fsfax_freeswitch_up gauge"), "{t}");
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
