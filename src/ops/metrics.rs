//! fsfaxd's Prometheus metrics: one process-wide set of families ([`metrics`]), counted by the
//! code that does the work, and the registry that exposes them ([`registry`]).
//!
//! Names follow Prometheus's conventions: the `fsfax_` prefix, `_total` on counters (added by
//! the exposition), base units (seconds, bytes). Labels are bounded: outcomes, modes and result
//! classes are fixed words, gateways and FreeSWITCH nodes are the ones configured; never a
//! number, a UUID or a commid.

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// A label set: fixed keys, values from a bounded set.
pub type Labels = Vec<(&'static str, String)>;

/// Durations of calls: 10 s to about 45 minutes.
const CALL_BUCKETS: [f64; 10] = [
    10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 300.0, 600.0, 1200.0, 2700.0,
];
/// Durations of helper programs (DynamicConfig, faxrcvd): 10 ms to 2 minutes.
const PROGRAM_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0];

fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// Every metric fsfaxd counts itself.
#[derive(Debug)]
pub struct Metrics {
    pub receptions_started: Counter,
    /// `outcome`: success, partial, failed, no_fax, rejected_dynamicconfig, rejected_busy;
    /// `mode`: t38, audio, none.
    pub receptions: Family<Labels, Counter>,
    pub reception_pages: Counter,
    pub reception_duration: Histogram,
    /// `class`: the spandsp completion code's group (see [`result_class`]).
    pub reception_results: Family<Labels, Counter>,
    pub receptions_in_progress: Gauge,
    pub modems: Gauge,
    pub modems_busy: Gauge,
    /// `outcome`: success, failed; `modem`: the record's device (xferfaxlog's SEND records
    /// name neither the gateway nor T.38).
    pub sends: Family<Labels, Counter>,
    pub send_pages: Family<Labels, Counter>,
    pub send_duration: Histogram,
    /// `result`: hit, miss, expired, timeout, error.
    pub fallback_lookups: Family<Labels, Counter>,
    pub fallback_added: Counter,
    pub fallback_cleared: Counter,
    /// `result`: ok, failed, timeout.
    pub dynamicconfig_runs: Family<Labels, Counter>,
    pub dynamicconfig_duration: Histogram,
    pub faxrcvd_runs: Family<Labels, Counter>,
    pub faxrcvd_duration: Histogram,
    /// `node`: a configured node's Event Socket address (`[freeswitch] socket` or a `node`);
    /// 1 while fsfaxd's shared connection to it is up.
    pub freeswitch_up: Family<Labels, Gauge>,
    /// `result`: ok, failed.
    pub freeswitch_connects: Family<Labels, Counter>,
    /// `reason`: heartbeat, closed, timeout, error.
    pub freeswitch_disconnects: Family<Labels, Counter>,
    pub freeswitch_reconnects: Counter,
    pub freeswitch_heartbeats: Counter,
    pub esl_command_timeouts: Counter,
    /// Calls refused because the peer is not in allowedpeers.
    pub connections_refused: Counter,
    /// `level`: error, warn.
    pub log_messages: Family<Labels, Counter>,
    pub build_info: Family<Labels, Gauge>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    receptions_started: Counter::default(),
    receptions: Family::default(),
    reception_pages: Counter::default(),
    reception_duration: Histogram::new(CALL_BUCKETS),
    reception_results: Family::default(),
    receptions_in_progress: Gauge::default(),
    modems: Gauge::default(),
    modems_busy: Gauge::default(),
    sends: Family::default(),
    send_pages: Family::default(),
    send_duration: Histogram::new(CALL_BUCKETS),
    fallback_lookups: Family::default(),
    fallback_added: Counter::default(),
    fallback_cleared: Counter::default(),
    dynamicconfig_runs: Family::default(),
    dynamicconfig_duration: Histogram::new(PROGRAM_BUCKETS),
    faxrcvd_runs: Family::default(),
    faxrcvd_duration: Histogram::new(PROGRAM_BUCKETS),
    freeswitch_up: Family::default(),
    freeswitch_connects: Family::default(),
    freeswitch_disconnects: Family::default(),
    freeswitch_reconnects: Counter::default(),
    freeswitch_heartbeats: Counter::default(),
    esl_command_timeouts: Counter::default(),
    connections_refused: Counter::default(),
    log_messages: Family::default(),
    build_info: Family::default(),
});

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    /// A reception ended: its outcome (see [`Metrics::receptions`]), mode and, when spandsp
    /// reported one, its completion code.
    pub fn reception_finished(
        &self,
        outcome: &str,
        mode: &str,
        pages: u32,
        seconds: Option<f64>,
        code: Option<u32>,
    ) {
        self.receptions
            .get_or_create(&labels([("outcome", outcome), ("mode", mode)]))
            .inc();
        self.reception_pages.inc_by(u64::from(pages));
        if let Some(s) = seconds {
            self.reception_duration.observe(s);
        }
        if let Some(code) = code {
            self.reception_results
                .get_or_create(&labels([("class", result_class(code))]))
                .inc();
        }
    }

    /// A send counted from its xferfaxlog SEND record (`modem`: the record's device).
    pub fn send_finished(&self, outcome: &str, modem: &str, pages: u32, secs: f64) {
        let set = labels([("outcome", outcome), ("modem", modem)]);
        self.sends.get_or_create(&set).inc();
        self.send_pages.get_or_create(&set).inc_by(u64::from(pages));
        self.send_duration.observe(secs);
    }

    pub fn fallback_lookup(&self, result: &str) {
        self.fallback_lookups
            .get_or_create(&labels([("result", result)]))
            .inc();
    }

    pub fn dynamicconfig(&self, result: &str, secs: f64) {
        self.dynamicconfig_runs
            .get_or_create(&labels([("result", result)]))
            .inc();
        self.dynamicconfig_duration.observe(secs);
    }

    pub fn faxrcvd(&self, result: &str, secs: f64) {
        self.faxrcvd_runs
            .get_or_create(&labels([("result", result)]))
            .inc();
        self.faxrcvd_duration.observe(secs);
    }

    pub fn freeswitch_connect(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.freeswitch_connects
            .get_or_create(&labels([("result", result)]))
            .inc();
    }

    /// The shared connection to the node at `node` went up or down.
    pub fn freeswitch_node_up(&self, node: &str, up: bool) {
        self.freeswitch_up
            .get_or_create(&labels([("node", node)]))
            .set(i64::from(up));
    }

    pub fn freeswitch_disconnect(&self, reason: &str) {
        self.freeswitch_disconnects
            .get_or_create(&labels([("reason", reason)]))
            .inc();
    }

    pub fn log_message(&self, level: &str) {
        self.log_messages
            .get_or_create(&labels([("level", level)]))
            .inc();
    }
}

/// The group of a spandsp T.30 completion code (`t30.h`): `ok` (0), `link` (1-13: tones,
/// training, compatibility), `tx_phase` (14-22), `rx_phase` (23-40), `file` (41-47: TIFF),
/// `call` (48-49: retries, the call dropped), `negotiation` (50 and up), `unknown`.
pub fn result_class(code: u32) -> &'static str {
    match code {
        0 => "ok",
        1..=13 => "link",
        14..=22 => "tx_phase",
        23..=40 => "rx_phase",
        41..=47 => "file",
        48..=49 => "call",
        50..=61 => "negotiation",
        _ => "unknown",
    }
}

fn touch<M: prometheus_client::metrics::TypedMetric + Default>(f: &Family<Labels, M>, l: Labels)
where
    Family<Labels, M>: std::fmt::Debug,
{
    drop(f.get_or_create(&l));
}

/// Creates the series of every known label value at zero, so they exist from the first
/// scrape (`increase()` and alerts see the first event; `modems`: fsfaxd's own, for sends).
fn initialise(m: &Metrics, modems: &[String]) {
    for outcome in ["success", "partial", "failed", "no_fax"] {
        for mode in ["t38", "audio", "none"] {
            touch(
                &m.receptions,
                labels([("outcome", outcome), ("mode", mode)]),
            );
        }
    }
    for outcome in ["rejected_dynamicconfig", "rejected_busy"] {
        touch(
            &m.receptions,
            labels([("outcome", outcome), ("mode", "none")]),
        );
    }
    for class in [
        "ok",
        "link",
        "tx_phase",
        "rx_phase",
        "file",
        "call",
        "negotiation",
        "unknown",
    ] {
        touch(&m.reception_results, labels([("class", class)]));
    }
    for modem in modems {
        for outcome in ["success", "failed"] {
            let set = labels([("outcome", outcome), ("modem", modem)]);
            touch(&m.sends, set.clone());
            touch(&m.send_pages, set.clone());
        }
    }
    for result in ["hit", "miss", "expired", "timeout", "error"] {
        touch(&m.fallback_lookups, labels([("result", result)]));
    }
    for result in ["ok", "failed", "timeout"] {
        touch(&m.dynamicconfig_runs, labels([("result", result)]));
        touch(&m.faxrcvd_runs, labels([("result", result)]));
    }
    for result in ["ok", "failed"] {
        touch(&m.freeswitch_connects, labels([("result", result)]));
    }
    for reason in ["heartbeat", "closed", "timeout", "error"] {
        touch(&m.freeswitch_disconnects, labels([("reason", reason)]));
    }
    for level in ["error", "warn"] {
        touch(&m.log_messages, labels([("level", level)]));
    }
}

/// Registers every family on `registry` (under `fsfax_`); `modems`: fsfaxd's virtual modems.
pub fn register(registry: &mut Registry, modems: &[String]) {
    let m = metrics();
    initialise(m, modems);
    m.build_info
        .get_or_create(&labels([("version", env!("CARGO_PKG_VERSION"))]))
        .set(1);
    let r = registry.sub_registry_with_prefix("fsfax");
    r.register(
        "build_info",
        "fsfaxd's version (always 1)",
        m.build_info.clone(),
    );
    r.register(
        "receptions_started",
        "Calls fsfaxd accepted to receive (after allowedpeers)",
        m.receptions_started.clone(),
    );
    r.register(
        "receptions",
        "Receptions finished, by outcome (success, partial, failed, no_fax, rejected_dynamicconfig, rejected_busy) and mode (t38, audio, none)",
        m.receptions.clone(),
    );
    r.register(
        "reception_pages",
        "Pages received",
        m.reception_pages.clone(),
    );
    r.register_with_unit(
        "reception_duration",
        "Connect time of receptions that were answered",
        Unit::Seconds,
        m.reception_duration.clone(),
    );
    r.register(
        "reception_results",
        "spandsp completion codes of receptions, by class (ok, link, tx_phase, rx_phase, file, call, negotiation, unknown)",
        m.reception_results.clone(),
    );
    r.register(
        "receptions_in_progress",
        "Receptions running now",
        m.receptions_in_progress.clone(),
    );
    r.register("modems", "Virtual modems", m.modems.clone());
    r.register(
        "modems_busy",
        "Virtual modems held by a reception now",
        m.modems_busy.clone(),
    );
    r.register(
        "sends",
        "Send attempts recorded in xferfaxlog (SEND records of fsfaxsend and any other sender), by outcome (success, failed) and modem",
        m.sends.clone(),
    );
    r.register(
        "send_pages",
        "Pages sent, from xferfaxlog SEND records",
        m.send_pages.clone(),
    );
    r.register_with_unit(
        "send_duration",
        "Connect time of sends, from xferfaxlog SEND records",
        Unit::Seconds,
        m.send_duration.clone(),
    );
    r.register(
        "fallback_lookups",
        "T.38 fallback list lookups for receptions, by result (hit, miss, expired, timeout, error)",
        m.fallback_lookups.clone(),
    );
    r.register(
        "fallback_entries_added",
        "Stations fsfaxd put on the T.38 fallback list",
        m.fallback_added.clone(),
    );
    r.register(
        "fallback_entries_cleared",
        "Stations fsfaxd took off the T.38 fallback list",
        m.fallback_cleared.clone(),
    );
    r.register(
        "dynamicconfig_runs",
        "DynamicConfig runs, by result (ok, failed, timeout)",
        m.dynamicconfig_runs.clone(),
    );
    r.register_with_unit(
        "dynamicconfig_duration",
        "How long DynamicConfig ran",
        Unit::Seconds,
        m.dynamicconfig_duration.clone(),
    );
    r.register(
        "faxrcvd_runs",
        "faxrcvd runs, by result (ok, failed, timeout)",
        m.faxrcvd_runs.clone(),
    );
    r.register_with_unit(
        "faxrcvd_duration",
        "How long faxrcvd ran",
        Unit::Seconds,
        m.faxrcvd_duration.clone(),
    );
    r.register(
        "freeswitch_up",
        "1 while fsfaxd's own Event Socket connection to a FreeSWITCH node is up, by node (its configured host:port: [freeswitch] socket or a node line)",
        m.freeswitch_up.clone(),
    );
    r.register(
        "freeswitch_connects",
        "Connection attempts to FreeSWITCH's Event Socket, by result (ok, failed)",
        m.freeswitch_connects.clone(),
    );
    r.register(
        "freeswitch_disconnects",
        "Losses of the Event Socket connection, by reason (heartbeat: FreeSWITCH went silent; closed; timeout; error)",
        m.freeswitch_disconnects.clone(),
    );
    r.register(
        "freeswitch_reconnects",
        "Connections to FreeSWITCH made again after one was lost",
        m.freeswitch_reconnects.clone(),
    );
    r.register(
        "freeswitch_heartbeats",
        "HEARTBEAT events received from FreeSWITCH",
        m.freeswitch_heartbeats.clone(),
    );
    r.register(
        "esl_command_timeouts",
        "Event Socket commands FreeSWITCH did not answer in time (the connection is closed)",
        m.esl_command_timeouts.clone(),
    );
    r.register(
        "connections_refused",
        "Connections to [gofaxd] socket refused (peer not in allowedpeers)",
        m.connections_refused.clone(),
    );
    r.register(
        "log_messages",
        "Warnings and errors fsfaxd logged, by level (error, warn)",
        m.log_messages.clone(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_spandsp_codes() {
        assert_eq!(result_class(0), "ok");
        assert_eq!(result_class(6), "link");
        assert_eq!(result_class(28), "rx_phase");
        assert_eq!(result_class(49), "call");
        assert_eq!(result_class(99), "unknown");
    }

    #[test]
    fn exposition_names_follow_conventions() {
        let mut reg = Registry::default();
        register(&mut reg, &["freeswitch0".to_owned()]);
        metrics().reception_finished("success", "t38", 2, Some(31.0), Some(0));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(text.contains("# TYPE fsfax_receptions counter"), "{text}");
        assert!(
            text.contains("fsfax_receptions_total{outcome=\"success\",mode=\"t38\"}"),
            "{text}"
        );
        assert!(
            text.contains("fsfax_reception_duration_seconds_bucket"),
            "{text}"
        );
        assert!(text.contains("fsfax_build_info{version="), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
