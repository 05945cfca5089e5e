//! scripts/demo.sh, the README's first command (issue 15, item 6): with no FreeSWITCH answering it
//! says plainly that it uses the simulator and how to use a real FreeSWITCH, then a real HylaFAX
//! lab, fsfaxd and the simulator carry one fax in and one job out; it prints what an admin looks
//! at and leaves nothing running or on disk. Needs root and Debian's HylaFAX, as every lab test;
//! the demo takes the lab lock itself. Uses the debug build (FSFAX_DEMO_PROFILE=dev).

mod support;

use std::fs::File;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bounds the run so a broken demo fails instead of hanging CI; never a speed assertion (the
/// first run may install HylaFAX).
const PATIENCE: Duration = Duration::from_secs(900);

/// The section of the demo's output after `==== title`, up to the next section.
fn section<'a>(out: &'a str, title: &str) -> &'a str {
    let start = out
        .find(&format!("==== {title}"))
        .unwrap_or_else(|| panic!("no {title:?} section:\n{out}"));
    let rest = &out[start..];
    let body = rest.split_once('\n').map_or("", |(_, b)| b);
    body.split("\n==== ").next().unwrap_or("")
}

#[test]
fn demo_receives_and_sends_a_fax_through_real_hylafax_and_cleans_up() {
    support::hylafax::require_real_hylafax();
    // A "FreeSWITCH" that accepts the connection and never greets: nothing answers as one.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let logs = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut child = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
        .env("FSFAX_DEMO_PROFILE", "dev")
        .env(
            "FSFAX_DEMO_FREESWITCH",
            silent.local_addr().unwrap().to_string(),
        )
        .env_remove("FSFAX_DEMO_KEEP")
        .env_remove("FSFAX_LOG")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    // Only a hang guard: a demo that never ends (one that waits for Ctrl-C) fails here.
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let all = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    let status = status.unwrap_or_else(|| panic!("the demo did not end by itself: {all}"));
    assert!(status.success(), "demo failed ({status}): {all}");

    // It says it is a simulator, and how to use a real FreeSWITCH.
    assert!(stderr.contains("no FreeSWITCH answers at"), "{all}");
    assert!(
        stderr.contains("THIS DEMO USES fsfax's FreeSWITCH SIMULATOR"),
        "{all}"
    );
    assert!(stderr.contains("FSFAX_DEMO_FREESWITCH=host:8021"), "{all}");

    // faxq: both modems up, the job done with its 3 pages.
    let faxstat = section(&stdout, "faxstat -s -d");
    assert!(faxstat.contains("Modem freeswitch0"), "{all}");
    assert!(faxstat.contains("Modem freeswitch1"), "{all}");
    let job = faxstat
        .lines()
        .find(|l| l.contains("5551234"))
        .unwrap_or_else(|| panic!("no job line: {all}"));
    let cols: Vec<&str> = job.split_whitespace().collect();
    assert_eq!(cols[2], "D", "job done: {job}");
    assert!(cols.contains(&"3:3"), "3 of 3 pages: {job}");

    // The received document, as HylaFAX reads it.
    let faxinfo = section(&stdout, "faxinfo of the received document");
    assert!(faxinfo.contains("recvq/fax000000001.tif"), "{all}");
    assert!(faxinfo.contains("Pages: 3"), "{all}");
    assert!(faxinfo.contains("Sender: +1 337"), "{all}");

    // One RECV and one SEND record, each of 3 pages.
    let records: Vec<Vec<&str>> = section(&stdout, "xferfaxlog")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').collect())
        .collect();
    let kinds: Vec<&str> = records.iter().map(|r| r[1]).collect();
    assert_eq!(kinds, ["RECV", "SEND"], "{all}");
    assert!(records.iter().all(|r| r[10] == "3"), "{all}");
    assert_eq!(records[1][4], cols[0], "the SEND record names the job");

    // Both session logs, inbound and outbound.
    let inbound = section(&stdout, "session log log/c000000001");
    assert!(
        inbound.contains("RECV FAX recvq/fax000000001.tif: 3 pages"),
        "{all}"
    );
    assert!(inbound.contains("faxrcvd ended successfully"), "{all}");
    let outbound = section(&stdout, "session log log/c000000002");
    assert!(outbound.contains("SEND DONE: OK"), "{all}");

    // fsfaxd's own view and its metrics.
    let status = section(&stdout, "fsfaxd status");
    assert!(status.contains(": ready"), "{all}");
    assert!(status.contains("ok   faxq"), "{all}");
    let metrics = section(&stdout, "/metrics (a few lines)");
    assert!(
        metrics.contains("fsfax_receptions_total{outcome=\"success\",mode=\"t38\"} 1"),
        "{all}"
    );
    assert!(stdout.contains("s after the build"), "{all}");

    // Nothing left: the demo directory is gone and fsfaxd is no longer running.
    let dir = stderr
        .split("starting a private HylaFAX in ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|lab| lab.strip_suffix("/lab"))
        .unwrap_or_else(|| panic!("no demo directory named: {all}"));
    assert!(
        !std::path::Path::new(dir).exists(),
        "{dir} left behind: {all}"
    );
    let pid: i32 = stderr
        .split("fsfaxd (pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no fsfaxd pid: {all}"));
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
        "fsfaxd {pid} still running"
    );
}
