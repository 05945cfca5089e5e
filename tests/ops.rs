//! Operations, end to end with the real fsfaxd: `/metrics`, `/healthz`, `/readyz`,
//! `fsfaxd status`, sends counted from xferfaxlog, a FreeSWITCH that goes silent without
//! closing TCP, and the shipped Grafana dashboard and alert rules naming only metrics fsfaxd
//! exports.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::fakefs::{CallSetup, FakeCall, FakeConfig, FakeFs, RxScript, T38};
use support::fsfaxd::{Fsfaxd, metric_value, wait, wait_async};

const T: Duration = support::wait::HANG;

/// A faxq stand-in: the spool's `FIFO` with a reader, so fsfaxd sees faxq reachable.
fn faxq_fifo(spool: &Path) -> fs::File {
    let fifo = spool.join("FIFO");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeswitch_that_goes_silent_is_dropped_reconnected_and_shown() {
    let fs = FakeFs::start(FakeConfig::new().heartbeat(Duration::from_millis(200))).await;
    let d = Fsfaxd::start(
        1,
        &format!(
            "metrics = 127.0.0.1:0\n\n[freeswitch]\nsocket = {}\npassword = ClueCon\n\
             fallbacklookuptimeout = 1s",
            fs.addr()
        ),
    );
    let up_series = format!("fsfax_freeswitch_up{{node=\"{}\"}}", fs.addr());
    // Without faxq the daemon is alive but not ready, and says why.
    assert_eq!(d.http_get("/healthz"), (200, "ok\n".into()));
    let (code, body) = d.http_get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("FAIL faxq"), "{body}");
    let _faxq = faxq_fifo(&d.spool());
    assert!(
        wait(T, || d.http_get("/readyz").0 == 200),
        "never ready: {}\n{}",
        d.http_get("/readyz").1,
        d.log()
    );
    let (_, body) = d.http_get("/readyz");
    assert!(body.contains("ok   freeswitch"), "{body}");
    // fsfaxd subscribed to HEARTBEAT on its connection and counts what arrives.
    assert!(
        wait(T, || fs
            .command_lines(0)
            .contains(&"event plain HEARTBEAT".to_string())),
        "{:?}",
        fs.command_lines(0)
    );
    assert!(
        wait(T, || d
            .metric("fsfax_freeswitch_heartbeats_total")
            .unwrap_or(0.0)
            >= 3.0),
        "{}",
        d.http_get("/metrics").1
    );
    assert_eq!(d.metric(&up_series), Some(1.0));
    let (code, text) = d.status_cmd(&[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("connected for"), "{text}");

    // The host vanishes: nothing more on the wire, yet the fake closes nothing.
    fs.go_silent();
    assert!(
        wait(T, || fs.is_closed(0)),
        "fsfaxd kept the silent connection:\n{}",
        d.log()
    );
    assert!(
        wait(T, || d.http_get("/readyz").0 == 503),
        "{}",
        d.http_get("/readyz").1
    );
    let (_, body) = d.http_get("/readyz");
    assert!(body.contains("FAIL freeswitch"), "{body}");
    assert!(body.contains("no heartbeat"), "{body}");
    let metrics = d.http_get("/metrics").1;
    assert_eq!(metric_value(&metrics, &up_series), Some(0.0), "{metrics}");
    assert_eq!(
        metric_value(
            &metrics,
            "fsfax_freeswitch_disconnects_total{reason=\"heartbeat\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    let (code, text) = d.status_cmd(&[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("NOT CONNECTED"), "{text}");
    assert!(text.contains("no heartbeat"), "{text}");
    let (code, json) = d.status_cmd(&["--json"]);
    assert_eq!(code, 1, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["freeswitch"]["connected"], false, "{json}");

    // Back again: the keeper reconnects (with back-off) and everything says so.
    fs.speak_again();
    assert!(
        wait(T, || d.http_get("/readyz").0 == 200),
        "{}\n{}",
        d.http_get("/readyz").1,
        d.log()
    );
    let last = fs.connection_count() - 1;
    assert!(last >= 1);
    assert!(
        wait(T, || fs
            .command_lines(last)
            .contains(&"event plain HEARTBEAT".to_string())),
        "{:?}",
        fs.command_lines(last)
    );
    assert!(d.metric("fsfax_freeswitch_reconnects_total").unwrap_or(0.0) >= 1.0);
    assert_eq!(d.metric(&up_series), Some(1.0));
    let (code, json) = d.status_cmd(&["--json"]);
    assert_eq!(code, 0, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        v["freeswitch"]["reconnects"].as_u64().unwrap() >= 1,
        "{json}"
    );
    assert!(
        v["recent_errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["message"]
                .as_str()
                .unwrap()
                .contains("connection to FreeSWITCH lost")),
        "{json}"
    );
}

/// Two FreeSWITCH nodes, the second not answering (a closed port): fsfaxd is not ready, and
/// `/readyz`, the metrics and the status name that node and why, while the first shows up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_answer_keeps_fsfaxd_not_ready_and_is_named() {
    let fs = FakeFs::start(FakeConfig::new()).await;
    // A port bound for the whole test but never listened on: connections to it are refused,
    // and no other process can take it meanwhile.
    let holder = tokio::net::TcpSocket::new_v4().unwrap();
    holder.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = holder.local_addr().unwrap();
    let d = Fsfaxd::start(
        1,
        &format!(
            "metrics = 127.0.0.1:0\n\n[freeswitch]\nsocket = {}\nnode = {closed}\n\
             password = ClueCon\nfallbacklookuptimeout = 1s",
            fs.addr()
        ),
    );
    let _faxq = faxq_fifo(&d.spool());
    let up = format!(
        "ok   freeswitch {}: Event Socket connected and answering\n",
        fs.addr()
    );
    let down = format!(
        "FAIL freeswitch {closed}: Event Socket not connected: cannot connect to FreeSWITCH \
         event socket at {closed}"
    );
    // Both keepers have reported: the first node is up, the second refused.
    let mut readyz = (0, String::new());
    assert!(
        wait(T, || {
            readyz = d.http_get("/readyz");
            readyz.1.contains(&up) && readyz.1.contains(&down)
        }),
        "{}\n{}",
        readyz.1,
        d.log()
    );
    let (code, body) = readyz;
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("not ready\n"), "{body}");
    // The closed node is the only reason.
    assert_eq!(body.matches("FAIL").count(), 1, "{body}");
    let node = |addr: &dyn std::fmt::Display| format!("fsfax_freeswitch_up{{node=\"{addr}\"}}");
    let metrics = d.http_get("/metrics").1;
    assert_eq!(
        metric_value(&metrics, &node(&fs.addr())),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, &node(&closed)),
        Some(0.0),
        "{metrics}"
    );
    let (code, text) = d.status_cmd(&[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("FreeSWITCH {}: connected for", fs.addr())),
        "{text}"
    );
    assert!(
        text.contains(&format!("FreeSWITCH {closed}: NOT CONNECTED")),
        "{text}"
    );
    let (code, json) = d.status_cmd(&["--json"]);
    assert_eq!(code, 1, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let nodes = v["freeswitch_nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{json}");
    assert_eq!(nodes[0]["socket"], fs.addr().to_string(), "{json}");
    assert_eq!(nodes[1]["socket"], closed.to_string(), "{json}");
    assert_eq!(nodes[1]["connected"], false, "{json}");
    // `freeswitch` is still the first node's.
    assert_eq!(v["freeswitch"], nodes[0], "{json}");
    drop(holder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reception_shows_in_status_while_it_runs_and_in_metrics_after() {
    let d = Fsfaxd::start(2, "metrics = 127.0.0.1:0\nenablet38 = true");
    let before = d.http_get("/metrics").1;
    assert!(
        before.contains("# TYPE fsfax_receptions counter"),
        "{before}"
    );
    assert_eq!(metric_value(&before, "fsfax_modems"), Some(2.0));
    assert_eq!(
        metric_value(&before, "fsfax_build_info{version=\"0.1.0\"}"),
        Some(1.0)
    );
    assert!(metric_value(&before, "process_resident_memory_bytes").unwrap() > 0.0);
    assert!(metric_value(&before, "fsfax_spool_free_bytes").is_some());
    let c = FakeCall::connect(
        d.addr,
        CallSetup {
            caller_number: "0401234".into(),
            caller_name: "ACME".into(),
            to_user: "5000".into(),
            script: RxScript::RxOk {
                pages: 3,
                t38: T38::Negotiated,
            },
            stall_after_pages: Some(2),
            ..CallSetup::default()
        },
    )
    .await
    .unwrap();
    // Mid-fax: the call, its modem, its pages so far and T.38.
    let mut json = serde_json::Value::Null;
    assert!(
        wait_async(T, || {
            let (_, text) = d.status_cmd(&["--json"]);
            json = serde_json::from_str(&text).unwrap_or_default();
            json["calls"][0]["pages"] == 2
        })
        .await,
        "{json:#}\n{}",
        d.log()
    );
    let call = &json["calls"][0];
    assert_eq!(call["caller"], "0401234");
    assert_eq!(call["recipient"], "5000");
    assert_eq!(call["modem"], "freeswitch0");
    assert_eq!(call["mode"], "t38");
    assert_eq!(json["modems"][0]["state"], "receiving");
    assert_eq!(d.metric("fsfax_receptions_in_progress"), Some(1.0));
    assert_eq!(d.metric("fsfax_modems_busy"), Some(1.0));
    let (_, text) = d.status_cmd(&[]);
    assert!(
        text.contains("0401234 \"ACME\" -> 5000 on freeswitch0"),
        "{text}"
    );
    c.resume();
    assert!(c.wait_finished(T).await);
    assert!(
        wait_async(T, || d.faxrcvd_runs().len() == 1).await,
        "{}",
        d.log()
    );
    // faxrcvd runs before the call has quite finished its bookkeeping: wait for the call to
    // be over in the metrics, then read them all.
    assert!(
        wait_async(T, || d.metric("fsfax_receptions_in_progress") == Some(0.0)).await,
        "{}",
        d.log()
    );
    let after = d.http_get("/metrics").1;
    assert_eq!(
        metric_value(
            &after,
            "fsfax_receptions_total{outcome=\"success\",mode=\"t38\"}"
        ),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        metric_value(&after, "fsfax_receptions_started_total"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&after, "fsfax_reception_pages_total"),
        Some(3.0)
    );
    assert_eq!(
        metric_value(&after, "fsfax_reception_results_total{class=\"ok\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&after, "fsfax_faxrcvd_runs_total{result=\"ok\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&after, "fsfax_receptions_in_progress"),
        Some(0.0)
    );
}

const SEND_OK: &str = "12/04/26 10:00\tSEND\t000000042\tfreeswitch0\t7\t\"\"\tuser@host\t\"0401234\"\t\"+1 337\"\t2097152\t3\t0:01:10\t0:01:02\t\"\"\t\"\"\t\"\"\t\"\"\t\"user\"\t\"00 00 00\"\n";
const SEND_BUSY: &str = "12/04/26 10:05\tSEND\t000000043\tfreeswitch0\t8\t\"\"\tuser@host\t\"0401234\"\t\"\"\t0\t0\t0:00:10\t0:00:00\t\"Busy signal detected\"\t\"\"\t\"\"\t\"\"\t\"user\"\t\"00 00 00\"\n";

fn append(path: &Path, text: &str) {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_are_counted_from_xferfaxlog_once_across_restarts() {
    let ok = "fsfax_sends_total{outcome=\"success\",modem=\"freeswitch0\"}";
    let busy = "fsfax_sends_total{outcome=\"failed\",modem=\"freeswitch0\"}";
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    support::fsfaxd::prepare_spool(&spool);
    let log = spool.join("log/xferfaxlog");
    // History from before fsfaxd ever ran is not counted as new sends.
    append(&log, SEND_OK);
    let mut d = Fsfaxd::start_on(&spool, 1, "metrics = 127.0.0.1:0");
    // fsfaxd has taken its position (the end) before anything new is written.
    let state = spool.join("recvq/.fsfax/xferfaxlog.offset");
    assert!(wait(T, || state.exists()), "{}", d.log());
    append(&log, SEND_OK);
    append(&log, SEND_BUSY);
    assert!(
        wait(T, || d.metric(busy) == Some(1.0)),
        "{}",
        d.http_get("/metrics").1
    );
    assert_eq!(d.metric(ok), Some(1.0));
    assert_eq!(
        d.metric("fsfax_send_pages_total{outcome=\"success\",modem=\"freeswitch0\"}"),
        Some(3.0)
    );
    // Stopped; a send finishes meanwhile; started again: that one counts, the others do not.
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(T), Some(0), "{}", d.log());
    append(&log, SEND_OK);
    d.spawn();
    assert!(wait(T, || d.metric(ok) == Some(1.0)), "{}", d.log());
    // Rotated: the new file is read from its start.
    fs::rename(&log, spool.join("log/xferfaxlog.1")).unwrap();
    append(&log, SEND_BUSY);
    assert!(
        wait(T, || d.metric(busy) == Some(1.0)),
        "{}",
        d.http_get("/metrics").1
    );
    append(&log, SEND_OK);
    assert!(wait(T, || d.metric(ok) == Some(2.0)));
    // The marker line last: everything before it was read, and nothing twice.
    assert_eq!(d.metric(busy), Some(1.0));
}

#[test]
fn status_of_a_daemon_that_is_not_running_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    support::fsfaxd::prepare_spool(&spool);
    let conf = dir.path().join("fsfax.conf");
    fs::write(
        &conf,
        format!(
            "[freeswitch]\nsocket = 127.0.0.1:9\npassword = x\n[hylafax]\nspooldir = {}\n\
             [gofaxd]\nsocket = 127.0.0.1:0\n",
            spool.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fsfaxd"))
        .arg("-c")
        .arg(&conf)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["running"], false);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not running"),
        "{out:?}"
    );
}

/// The metric names an expression refers to (`fsfax_*`, `process_*`).
fn names_in(expr: &str, out: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts = expr[i..].starts_with("fsfax_") || expr[i..].starts_with("process_");
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts && boundary {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(expr.len(), |e| i + e);
            out.insert(expr[i..end].to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
}

/// Every series name a scrape can contain, from its `# TYPE` lines.
fn exported(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let (Some(name), Some(kind)) = (it.next(), it.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        for s in suffixes {
            out.insert(format!("{name}{s}"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alert_rules_query_only_metrics_fsfaxd_exports() {
    let d = Fsfaxd::start(1, "metrics = 127.0.0.1:0");
    let have = exported(&d.http_get("/metrics").1);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The dashboard: every `expr` of every panel's targets.
    let dash: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(root.join("config/grafana/fsfax.json")).unwrap())
            .unwrap();
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() >= 10, "only {} dashboard queries", exprs.len());
    // The alert rules: every `expr:` line (YAML block scalars included).
    let rules = fs::read_to_string(root.join("config/prometheus/fsfax-alerts.yml")).unwrap();
    let mut in_expr = false;
    let mut rule_exprs = 0;
    for line in rules.lines() {
        let t = line.trim_start();
        if let Some(e) = t.strip_prefix("expr:") {
            rule_exprs += 1;
            exprs.push(e.to_owned());
            in_expr = e.trim() == "|" || e.trim() == ">";
        } else if in_expr && line.starts_with("          ") {
            exprs.push(t.to_owned());
        } else {
            in_expr = false;
        }
    }
    assert!(rule_exprs >= 5, "only {rule_exprs} alert rules");
    let mut named = BTreeSet::new();
    for e in &exprs {
        names_in(e, &mut named);
    }
    assert!(named.len() >= 10, "{named:?}");
    let missing: Vec<_> = named.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\nexported: {have:?}"
    );
}

/// Under systemd (`Type=notify`, `WatchdogSec`): READY=1 once it takes calls, WATCHDOG=1 from
/// its runtime, STOPPING=1 on SIGTERM; read from a notify socket as systemd would.
#[test]
fn systemd_hears_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    support::fsfaxd::prepare_spool(&spool);
    let conf = dir.path().join("fsfax.conf");
    fs::write(
        &conf,
        format!(
            "[freeswitch]\nsocket = 127.0.0.1:9\npassword = x\n[hylafax]\nspooldir = {}\n\
             [gofaxd]\nsocket = 127.0.0.1:0\n",
            spool.display()
        ),
    )
    .unwrap();
    let sock_path = dir.path().join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fsfaxd"))
        .args(["-f", "-c"])
        .arg(&conf)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .stderr(fs::File::create(dir.path().join("log")).unwrap())
        .spawn()
        .unwrap();
    let mut heard = Vec::new();
    let mut buf = [0u8; 512];
    while !heard.iter().any(|m: &String| m.starts_with("WATCHDOG=1")) {
        let n = sock
            .recv(&mut buf)
            .expect("nothing from fsfaxd on NOTIFY_SOCKET");
        heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(heard.iter().any(|m| m.starts_with("READY=1")), "{heard:?}");
    // Ready means listening: the log already says where.
    let log = fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(log.contains("listening on"), "{log}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    loop {
        let n = sock.recv(&mut buf).expect("no STOPPING=1");
        if buf[..n].starts_with(b"STOPPING=1") {
            break;
        }
    }
    assert!(child.wait().unwrap().success());
}
