//! fsfaxd end to end: the real binary, a spool in a temp dir, and the fake FreeSWITCH calling
//! it the way `socket ... async full` does.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use support::fakefs::{CallSetup, Event, FakeCall, RxScript, T38};
use support::fsfaxd::{Fsfaxd, script, wait, wait_async};

/// Waits end as soon as what they wait for holds; this only bounds a hang.
const T: Duration = support::wait::HANG;

async fn call(d: &Fsfaxd, setup: CallSetup) -> FakeCall {
    FakeCall::connect(d.addr, setup).await.unwrap()
}

/// A call whose sender never starts a fax: quick, and it still gets a commid and a record.
async fn no_fax_call(d: &Fsfaxd) -> FakeCall {
    call(
        d,
        CallSetup {
            script: RxScript::NoFaxSender,
            ..CallSetup::default()
        },
    )
    .await
}

fn arg_lines(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("ARG="))
        .collect()
}

fn env_line<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t38_reception_reaches_recvq_xferfaxlog_and_faxrcvd() {
    let d = Fsfaxd::start(2, "enablet38 = true\nrequestt38 = true");
    // The status files are written by fsfaxd's writer thread, just after it listens.
    assert!(
        wait_async(T, || d.status("freeswitch0") == "Running and idle").await,
        "modem never shown idle: {:?}",
        d.status("freeswitch0")
    );
    let c = call(
        &d,
        CallSetup {
            caller_number: "+49 40 1234".into(),
            caller_name: "Alice Caller".into(),
            to_user: "5000".into(),
            gateway: Some("gw1".into()),
            // The sender waits after page 1 until the test has seen the modem's status.
            stall_after_pages: Some(1),
            ..CallSetup::default()
        },
    )
    .await;
    // faxstat shows what the modem does while the fax comes in.
    assert!(
        wait_async(T, || d.status("freeswitch0") == "Receiving facsimile").await,
        "modem never showed the reception: {:?}\n{}",
        d.status("freeswitch0"),
        d.log()
    );
    // Held a little longer, so the connect time (answer to hangup) is at least a second
    // whatever the machine's speed.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    c.resume();
    assert!(
        wait_async(T, || d.faxrcvd_call("000000001").is_some()).await,
        "{}",
        d.log()
    );
    assert!(
        c.wait_finished(T).await,
        "{}\n{:?}",
        d.log(),
        c.command_lines()
    );
    let executed: Vec<String> = c.executed().iter().map(|(a, _)| a.clone()).collect();
    assert_eq!(executed, ["answer", "set", "set", "set", "rxfax", "hangup"]);
    // The `set`s, rxfax and the hangup are queued together, unawaited: their completions are
    // filtered out at FreeSWITCH before the first one runs; the answer's still reaches fsfaxd.
    let lines = c.command_lines();
    let first_exec = lines.iter().position(|l| l.starts_with("sendmsg"));
    for app in ["set", "rxfax", "hangup", "socket"] {
        let filter = format!("filter Application -{app}");
        let at = lines.iter().position(|l| *l == filter);
        assert!(
            at.is_some() && at < first_exec,
            "no {filter:?} before the first sendmsg: {lines:?}"
        );
    }
    let log = c.log();
    let completions = |app: &str| {
        let n = |evs: &[Event]| {
            evs.iter()
                .filter(|e| e.name() == "CHANNEL_EXECUTE_COMPLETE")
                .filter(|e| e.get("Application") == Some(app))
                .count()
        };
        (n(&log.fired), n(&log.delivered))
    };
    assert_eq!(
        completions("set"),
        (3, 0),
        "set completions fired / delivered"
    );
    assert_eq!(
        completions("rxfax"),
        (1, 0),
        "rxfax completion fired / delivered"
    );
    assert_eq!(
        completions("answer"),
        (1, 1),
        "answer completion fired / delivered"
    );
    let vars = c.log().vars;
    assert!(vars.contains(&("fax_enable_t38".into(), "true".into())));
    assert!(vars.contains(&("fax_enable_t38_request".into(), "true".into())));
    assert!(vars.contains(&("fax_ident".into(), "ACME%20Fax".into())));
    let rxfax = c.log().rxfax_path.unwrap();
    assert_eq!(rxfax, d.spool().join("recvq/fax000000001.tif"));
    assert_eq!(d.pages("recvq/fax000000001.tif"), Some(3));

    let rcvd = d.faxrcvd_call("000000001").unwrap();
    assert_eq!(
        arg_lines(&rcvd),
        [
            "recvq/fax000000001.tif",
            "freeswitch0",
            "000000001",
            "",
            "+49 40 1234",
            "Alice Caller",
            "5000",
            "gw1"
        ]
    );
    assert_eq!(env_line(&rcvd, "HANGUPCAUSE"), Some("NORMAL_CLEARING"));
    assert_eq!(env_line(&rcvd, "TRANSFER_RATE"), Some("14400"));
    assert_eq!(
        env_line(&rcvd, "CWD").map(std::path::PathBuf::from),
        Some(d.spool().canonicalize().unwrap())
    );

    let log = d.xferfaxlog();
    assert_eq!(log.len(), 1, "{log:?}");
    let r = &log[0];
    assert_eq!(r.len(), 19);
    assert_eq!(
        &r[1..5],
        ["RECV", "000000001", "freeswitch0", "recvq/fax000000001.tif"]
    );
    assert_eq!(r[8], "\"+1 337\"", "remote TSI");
    assert_eq!(r[10], "3", "pages");
    // The answer time comes from `Caller-Channel-Answered-Time` (this subscription has no
    // CHANNEL_ANSWER or CHANNEL_CALLSTATE): an answered call has a connect time.
    assert_ne!(r[12], "0:00:00", "connect time: {r:?}");
    // HylaFAX's own recvstats charges the sender that time (and the three pages).
    let report = support::hylafax::recvstats(&d.spool().join("log/xferfaxlog"), &[]);
    let total: Vec<&str> = report
        .lines()
        .find(|l| l.trim_start().starts_with("Total"))
        .unwrap_or_else(|| panic!("no Total row in\n{report}"))
        .split_whitespace()
        .collect();
    assert_eq!(total[1], "3", "pages: {report}");
    assert_ne!(total[2], "0:00", "connect time: {report}");
    assert_eq!(r[13], "\"\"", "no error");
    assert_eq!(r[14], "\"Alice Caller\"");
    assert_eq!(r[15], "\"+49 40 1234\"");
    assert_eq!(r[16], "\"5000::gw1\"");

    assert!(wait(T, || d.status("freeswitch0") == "Running and idle"));
    assert!(wait(T, || d.journal().is_empty()), "{:?}", d.journal());
    let mode = std::fs::metadata(d.spool().join("recvq/fax000000001.tif"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap();
    assert_eq!(mode, 0o644);
    let session = || d.session_log("000000001");
    assert!(
        wait(T, || session().contains("SESSION END")),
        "{}",
        session()
    );
    assert!(
        session().contains("SESSION BEGIN 000000001"),
        "{}",
        session()
    );
    // Words an admin reads, not Rust's debug text (issue 12, item 10).
    assert!(session().contains("T.38 negotiated"), "{}", session());
    assert!(!session().contains("Some("), "{}", session());
}

/// Issue 12, item 10: a call that names no gateway is not logged `via gateway ""`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_gateway_is_not_logged_via_an_empty_one() {
    let d = Fsfaxd::start(1, "");
    let _c = call(&d, CallSetup::default()).await;
    assert!(wait_async(T, || d.faxrcvd_call("000000001").is_some()).await);
    let session = d.session_log("000000001");
    assert!(session.contains("Accepting call to 5000"), "{session}");
    assert!(!session.contains("via gateway"), "{session}");
    assert!(!d.log().contains("via gateway \"\""), "{}", d.log());
}

/// Issue 12, item 10: the faxrcvd command line reads as one an admin could type, not as a
/// Rust list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_faxrcvd_command_is_logged_as_a_command_line() {
    let d = Fsfaxd::start(1, "");
    let _c = call(&d, CallSetup::default()).await;
    let session = || d.session_log("000000001");
    assert!(
        wait_async(T, || session().contains(
            "bin/faxrcvd recvq/fax000000001.tif freeswitch0 000000001 ''"
        ))
        .await,
        "{}",
        session()
    );
    assert!(!session().contains("[\""), "{}", session());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g711_reception_with_answer_delay_and_wait_time() {
    let d = Fsfaxd::start(1, "enablet38 = false\nanswerafter = 100\nwaittime = 50");
    let c = call(
        &d,
        CallSetup {
            script: RxScript::RxOk {
                pages: 2,
                t38: T38::Off,
            },
            ..CallSetup::default()
        },
    )
    .await;
    assert!(
        wait_async(T, || d.faxrcvd_call("000000001").is_some()).await,
        "{}",
        d.log()
    );
    let executed = c.executed();
    assert_eq!(executed[0], ("ring_ready".into(), "".into()));
    assert_eq!(executed[1], ("sleep".into(), "100".into()));
    assert_eq!(executed[2].0, "answer");
    assert_eq!(
        executed[3],
        ("playback".into(), "silence_stream://50".into())
    );
    let vars = c.log().vars;
    assert!(vars.contains(&("fax_enable_t38".into(), "false".into())));
    assert_eq!(d.pages("recvq/fax000000001.tif"), Some(2));
    let rcvd = d.faxrcvd_call("000000001").unwrap();
    assert_eq!(arg_lines(&rcvd)[3], "", "complete fax: empty error message");
    assert!(wait(T, || d.xferfaxlog().len() == 1));
    assert_eq!(d.xferfaxlog()[0][10], "2");
}

/// With T.38 off in the configuration, a caller whose machine would use T.38 is received over
/// G.711, as mod_spandsp does with `fax_enable_t38=false`: the session log says "T.38 off" at
/// the answer and at the negotiation, never "T.38 negotiated".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_t38_disabled_a_t38_caller_is_received_over_audio() {
    let d = Fsfaxd::start(1, "enablet38 = false\nrequestt38 = false");
    let c = call(&d, CallSetup::default()).await;
    let session = || d.session_log("000000001");
    assert!(
        wait_async(T, || session().contains("SESSION END")).await,
        "{}",
        session()
    );
    assert!(
        c.log()
            .vars
            .contains(&("fax_enable_t38".into(), "false".into()))
    );
    assert!(
        session().contains("(T.38 off (audio only))"),
        "{}",
        session()
    );
    assert!(
        session().contains("remote \"+1 337\", T.38 off"),
        "{}",
        session()
    );
    assert!(!session().contains("T.38 negotiated"), "{}", session());
    assert_eq!(d.pages("recvq/fax000000001.tif"), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamicconfig_reject_responds_and_records_nothing() {
    let mut d = Fsfaxd::start(1, "");
    script(
        &d.spool().join("bin/dynconf"),
        "#!/bin/sh\necho \"$@\" > \"$PWD/dynconf.args\"\necho 'RejectCall: true'\n",
    );
    let extra = "dynamicconfig = bin/dynconf\nrejectcause = 403";
    append_gofaxd(&mut d, extra);
    let c = call(
        &d,
        CallSetup {
            caller_number: "666".into(),
            caller_name: "Spam".into(),
            ..CallSetup::default()
        },
    )
    .await;
    assert!(
        c.wait_finished(T).await,
        "{}\n{:?}",
        d.log(),
        c.command_lines()
    );
    assert_eq!(c.executed(), [("respond".to_string(), "403".to_string())]);
    let args = std::fs::read_to_string(d.spool().join("dynconf.args")).unwrap();
    assert_eq!(args.trim(), "freeswitch0 666 Spam 5000");
    assert!(
        !d.spool().join("log/seqf").exists(),
        "no commid for a rejected call"
    );
    assert!(d.xferfaxlog().is_empty());
    assert!(d.faxrcvd_runs().is_empty());
    assert!(wait(T, || d.status("freeswitch0") == "Running and idle"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_dynamicconfig_is_killed_and_the_call_accepted() {
    let mut d = Fsfaxd::start(1, "");
    script(&d.spool().join("bin/dynconf"), "#!/bin/sh\nsleep 60\n");
    append_gofaxd(
        &mut d,
        "dynamicconfig = bin/dynconf\ndynamicconfigtimeout = 500ms",
    );
    let _c = call(&d, CallSetup::default()).await;
    assert!(
        wait_async(T, || d.faxrcvd_call("000000001").is_some()).await,
        "{}",
        d.log()
    );
    assert!(d.log().contains("no answer within"), "{}", d.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_hanging_up_mid_fax_gives_a_partial_document_and_an_error() {
    let d = Fsfaxd::start(1, "");
    let c = call(
        &d,
        CallSetup {
            script: RxScript::SenderHangsUpMidFax { after_pages: 1 },
            ..CallSetup::default()
        },
    )
    .await;
    assert!(
        wait_async(T, || d.faxrcvd_call("000000001").is_some()).await,
        "{}",
        d.log()
    );
    assert!(
        c.wait_finished(T).await,
        "{}\n{:?}",
        d.log(),
        c.command_lines()
    );
    let rcvd = d.faxrcvd_call("000000001").unwrap();
    assert_eq!(arg_lines(&rcvd)[3], "The call dropped prematurely");
    assert_eq!(d.pages("recvq/fax000000001.tif"), Some(1));
    let log = d.xferfaxlog();
    assert_eq!(log[0][13], "\"The call dropped prematurely\"");
    assert_eq!(log[0][10], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeswitch_vanishing_mid_fax_is_logged_as_lost() {
    let d = Fsfaxd::start(1, "");
    let c = call(
        &d,
        CallSetup {
            script: RxScript::Vanish { after_pages: 1 },
            ..CallSetup::default()
        },
    )
    .await;
    assert!(
        c.wait_finished(T).await,
        "{}\n{:?}",
        d.log(),
        c.command_lines()
    );
    assert!(wait(T, || d.xferfaxlog().len() == 1), "{}", d.log());
    let r = &d.xferfaxlog()[0];
    assert!(
        r[13].starts_with("\"no fax result from FreeSWITCH (connection lost"),
        "{r:?}"
    );
    // The fake wrote no document: nothing for faxrcvd, and nothing left to recover.
    assert!(d.faxrcvd_runs().is_empty());
    assert!(wait(T, || d.journal().is_empty()));
    assert!(wait(T, || d.status("freeswitch0") == "Running and idle"));
}

/// fsfaxd takes commids from the same reserved blocks as fsfaxsend: after a crash of the
/// machine it resumes past the block reserved on the earlier boot too, so it never reuses a
/// commid fsfaxsend had (its own journal covers only its own receptions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_of_the_machine_the_commid_resumes_past_the_reserved_block() {
    let d = Fsfaxd::start(1, "");
    std::fs::write(
        d.spool().join("log/seqf"),
        support::seqf_reserved_on_another_boot(7, 500),
    )
    .unwrap();
    for _ in 0..2 {
        let c = no_fax_call(&d).await;
        assert!(c.wait_finished(T).await, "{}", d.log());
    }
    assert!(wait(T, || d.xferfaxlog().len() == 2), "{}", d.log());
    let mut commids: Vec<String> = d.xferfaxlog().iter().map(|r| r[2].clone()).collect();
    commids.sort();
    assert_eq!(commids, ["000000500", "000000501"]);
    assert_eq!(
        std::fs::read_to_string(d.spool().join("log/seqf")).unwrap(),
        support::seqf_reserved_on_this_boot(502, 600)
    );
}

/// A `log/seqf` that cannot give a commid (a directory where the file should be): the call is
/// refused with 503 and the log names the file; once the file is usable again, the next call
/// is received with a commid from a fresh block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_seqf_refuses_the_call_and_the_next_one_is_served() {
    let d = Fsfaxd::start(1, "");
    let seqf = d.spool().join("log/seqf");
    std::fs::create_dir(&seqf).unwrap();
    assert_rejected_with_503(&d).await;
    let log = d.log();
    assert!(
        log.contains("cannot allocate a commid") && log.contains("log/seqf"),
        "{log}"
    );
    std::fs::remove_dir(&seqf).unwrap();
    let c = no_fax_call(&d).await;
    assert!(c.wait_finished(T).await, "{}", d.log());
    assert!(wait(T, || d.xferfaxlog().len() == 1), "{}", d.log());
    assert_eq!(d.xferfaxlog()[0][2], "000000001");
    assert_eq!(
        std::fs::read_to_string(&seqf).unwrap(),
        support::seqf_reserved_on_this_boot(2, 101)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_fax_at_all_still_gets_its_xferfaxlog_line() {
    let d = Fsfaxd::start(1, "");
    let c = no_fax_call(&d).await;
    assert!(
        c.wait_finished(T).await,
        "{}\n{:?}",
        d.log(),
        c.command_lines()
    );
    assert!(wait(T, || d.xferfaxlog().len() == 1), "{}", d.log());
    let r = &d.xferfaxlog()[0];
    assert_eq!(r[10], "0");
    assert_ne!(r[13], "\"\"", "a call without a fax has a reason: {r:?}");
    assert!(d.faxrcvd_runs().is_empty());
    assert!(!d.spool().join("recvq/fax000000001.tif").exists());
    // No document: the record names no file (issue 12, item 11).
    assert_eq!(r[4], "", "{r:?}");
    assert!(wait(T, || d.journal().is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_rxfax_the_fax_reaches_faxrcvd_exactly_once_after_restart() {
    // hangupafterresult is long, so fsfaxd sits between the fax result and its hangup.
    let mut d = Fsfaxd::start(1, "hangupafterresult = 60s");
    let c = call(
        &d,
        CallSetup {
            script: RxScript::T38Hang { pages: 3 },
            ..CallSetup::default()
        },
    )
    .await;
    assert!(
        wait_async(T, || d.pages("recvq/fax000000001.tif") == Some(3)).await,
        "{}",
        d.log()
    );
    assert_eq!(d.journal(), ["pending-000000001"]);
    d.signal(Signal::SIGKILL);
    let _ = d.wait_exit(T);
    assert!(
        c.wait_finished(T).await,
        "{}\n{:?}",
        d.log(),
        c.command_lines()
    );
    assert!(d.faxrcvd_runs().is_empty());
    d.spawn();
    assert!(
        wait_async(T, || d.faxrcvd_runs().len() == 1).await,
        "{}",
        d.log()
    );
    let rcvd = d.faxrcvd_call("000000001").unwrap();
    assert!(arg_lines(&rcvd)[3].contains("recovered"), "{rcvd:?}");
    assert!(wait(T, || d.journal().is_empty()));
    // Another restart finds nothing left to deliver.
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(T), Some(0));
    d.spawn();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(d.faxrcvd_runs().len(), 1, "{:?}", d.faxrcvd_runs());
    assert_eq!(d.xferfaxlog().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_reception_finish_then_marks_modems_down() {
    let mut d = Fsfaxd::start(2, "");
    let c = call(
        &d,
        CallSetup {
            time_scale: 0.05,
            ..CallSetup::default()
        },
    )
    .await;
    assert!(c.wait_for(T, |l| l.rxfax_path.is_some()).await);
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(T), Some(0), "{}", d.log());
    let rcvd = d
        .faxrcvd_call("000000001")
        .expect("the reception completed");
    assert_eq!(arg_lines(&rcvd)[3], "");
    assert_eq!(d.pages("recvq/fax000000001.tif"), Some(3));
    assert_eq!(d.status("freeswitch0"), "Down");
    assert_eq!(d.status("freeswitch1"), "Down");
    assert!(d.journal().is_empty());
}

/// Issue 12, item 12: once fsfaxd has logged "fsfaxd stopped" nothing is left to wait for. At
/// the stop, work that must not hold the exit is pending: a metrics client and a status-socket
/// client that say nothing (each would hold its connection for 30 s), the Event Socket keeper in
/// its reconnect back-off (FreeSWITCH refuses), the xferfaxlog follower between polls, a
/// finished call's tasks. The exit is not bought by a timer: a daemon that waited for any of
/// those clients would still be running when the 30 s they are allowed are over, and this
/// test gives it half of that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_once_stopped_without_waiting_for_idle_clients_or_timers() {
    use std::io::Read;
    use std::time::Instant;
    let mut d = Fsfaxd::start(2, "metrics = 127.0.0.1:0");
    let c = call(&d, CallSetup::default()).await;
    assert!(c.wait_finished(T).await, "{}", d.log());
    assert!(
        wait(T, || d.faxrcvd_call("000000001").is_some()),
        "{}",
        d.log()
    );
    let mut idle_tcp = std::net::TcpStream::connect(d.metrics_addr()).unwrap();
    let mut idle_unix =
        std::os::unix::net::UnixStream::connect(d.spool().join("status/fsfaxd.sock")).unwrap();
    assert!(wait(T, || d.log().contains("cannot connect to FreeSWITCH")));
    d.signal(Signal::SIGTERM);
    assert!(
        wait(T, || d.log().contains("fsfaxd stopped")),
        "{}",
        d.log()
    );
    let stopped = Instant::now();
    // The connections' own limit (30 s): an exit waiting for them would come after it.
    let half_the_client_limit = Duration::from_secs(15);
    assert_eq!(d.wait_exit(T), Some(0), "{}", d.log());
    assert!(
        stopped.elapsed() < half_the_client_limit,
        "fsfaxd exited {:?} after logging that it stopped",
        stopped.elapsed()
    );
    // Nothing ran after the last word, and the idle clients were let go, not served.
    let log = d.log();
    assert!(
        log.trim_end().ends_with("fsfaxd stopped"),
        "lines after 'fsfaxd stopped':\n{log}"
    );
    let mut rest = Vec::new();
    idle_tcp
        .set_read_timeout(Some(support::wait::HANG))
        .unwrap();
    assert_eq!(idle_tcp.read_to_end(&mut rest).unwrap_or(0), 0);
    idle_unix
        .set_read_timeout(Some(support::wait::HANG))
        .unwrap();
    assert_eq!(idle_unix.read_to_end(&mut rest).unwrap_or(0), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_outside_the_allow_list_are_refused_before_anything_is_read() {
    let d = Fsfaxd::start(1, "allowedpeers = 10.0.0.0/8");
    let c = call(&d, CallSetup::default()).await;
    assert!(
        c.wait_finished(T).await,
        "{}\n{:?}",
        d.log(),
        c.command_lines()
    );
    assert!(c.command_lines().is_empty(), "{:?}", c.command_lines());
    assert!(wait(T, || d.log().contains("not in [gofaxd] allowedpeers")));
    assert!(d.xferfaxlog().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_without_full_control_is_refused() {
    let d = Fsfaxd::start(1, "");
    let c = call(
        &d,
        CallSetup {
            control_full: false,
            ..CallSetup::default()
        },
    )
    .await;
    assert!(
        c.wait_finished(T).await,
        "{}\n{:?}",
        d.log(),
        c.command_lines()
    );
    assert!(c.executed().is_empty());
    assert!(wait(T, || d.log().contains("async full")), "{}", d.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_beyond_the_modems_is_received_as_overflow() {
    let d = Fsfaxd::start(1, "hangupafterresult = 60s");
    // The first call holds freeswitch0 (T.38 hang until it is hung up).
    let first = hold_first_call(&d).await;
    let _second = call(&d, CallSetup::default()).await;
    assert!(
        wait_async(T, || d.faxrcvd_runs().len() == 1).await,
        "{}",
        d.log()
    );
    let rcvd = d.faxrcvd_call("000000002").unwrap();
    assert_eq!(arg_lines(&rcvd)[1], "freeswitch-overflow");
    first.hangup();
    assert!(
        wait_async(T, || d.faxrcvd_runs().len() == 2).await,
        "{}",
        d.log()
    );
    assert!(wait(T, || d.status("freeswitch0") == "Running and idle"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocateinbounddevices_rejects_a_call_when_no_modem_is_free() {
    let d = Fsfaxd::start(1, "allocateinbounddevices = true\nhangupafterresult = 60s");
    let first = hold_first_call(&d).await;
    assert_rejected_with_503(&d).await;
    first.hangup();
    assert!(
        wait_async(T, || d.faxrcvd_runs().len() == 1).await,
        "{}",
        d.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxinbound_rejects_with_503() {
    let d = Fsfaxd::start(2, "maxinbound = 1\nhangupafterresult = 60s");
    let first = hold_first_call(&d).await;
    assert_rejected_with_503(&d).await;
    first.hangup();
    assert!(wait_async(T, || d.faxrcvd_runs().len() == 1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_list_turns_t38_off_and_a_failed_t38_call_is_remembered() {
    // The list lives in the mod_db of the FreeSWITCH behind [freeswitch] socket.
    let fs = support::fakefs::FakeFs::start(support::fakefs::FakeConfig::new()).await;
    let d = Fsfaxd::start(
        1,
        &format!(
            "enablet38 = true\nrequestt38 = true\n\n[freeswitch]\nsoftmodemfallback = true\n\
             socket = {}\npassword = ClueCon",
            fs.addr()
        ),
    );
    let db = fs.db();
    db.seed(
        "fallback",
        "4711",
        &chrono::Utc::now().timestamp().to_string(),
    );
    let c = call(
        &d,
        CallSetup {
            db: db.clone(),
            ..CallSetup::default()
        },
    )
    .await;
    assert!(
        wait_async(T, || d.faxrcvd_runs().len() == 1).await,
        "{}",
        d.log()
    );
    let vars = c.log().vars;
    assert!(
        vars.contains(&("fax_enable_t38".into(), "false".into())),
        "{vars:?}"
    );
    assert!(
        fs.all_command_lines()
            .iter()
            .any(|l| l == "api db select/fallback/4711"),
        "{:?}",
        fs.all_command_lines()
    );
    assert!(!c.command_lines().iter().any(|l| l.starts_with("api db")));
    // An expired entry is removed and T.38 stays on (no expiry configured: only a dated one
    // in the future of "never" would apply, so use a caller without an entry).
    let c2 = call(
        &d,
        CallSetup {
            caller_number: "4912345".into(),
            db: db.clone(),
            ..CallSetup::default()
        },
    )
    .await;
    assert!(
        wait_async(T, || d.faxrcvd_runs().len() == 2).await,
        "{}",
        d.log()
    );
    assert!(
        c2.log()
            .vars
            .contains(&("fax_enable_t38".into(), "true".into()))
    );
}

/// Adds lines to `[gofaxd]` and restarts fsfaxd on the same spool.
fn append_gofaxd(d: &mut Fsfaxd, lines: &str) {
    let path = d.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace(
        "hangupafterresult = 1s\n",
        &format!("hangupafterresult = 1s\n{lines}\n"),
    );
    std::fs::write(&path, text).unwrap();
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(T), Some(0));
    d.spawn();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_for_new_calls_and_keeps_a_broken_file_out() {
    let d = Fsfaxd::start(1, "");
    let path = d.config_path();
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, "[gofaxd]\nnosuchkey = 1\n[hylafax\n").unwrap();
    d.signal(Signal::SIGHUP);
    assert!(
        wait(T, || d.log().contains("configuration not reloaded")),
        "{}",
        d.log()
    );
    std::fs::write(&path, good.replace("ident = ACME Fax", "ident = NEW-CSI")).unwrap();
    d.signal(Signal::SIGHUP);
    assert!(
        wait(T, || d.log().contains("configuration reloaded")),
        "{}",
        d.log()
    );
    let c = call(&d, CallSetup::default()).await;
    assert!(
        wait_async(T, || d.faxrcvd_runs().len() == 1).await,
        "{}",
        d.log()
    );
    assert!(
        c.log()
            .vars
            .contains(&("fax_ident".into(), "NEW-CSI".into()))
    );
}

/// A first call (commid 1) that has received its page and holds the first modem: a T.38 hang
/// until the test hangs it up, so it reaches faxrcvd only then.
async fn hold_first_call(d: &Fsfaxd) -> FakeCall {
    let first = call(
        d,
        CallSetup {
            script: RxScript::T38Hang { pages: 1 },
            ..CallSetup::default()
        },
    )
    .await;
    assert!(wait_async(T, || d.status("freeswitch0") == "Receiving facsimile").await);
    assert!(wait_async(T, || d.pages("recvq/fax000000001.tif") == Some(1)).await);
    first
}

/// The next call is refused with SIP 503 and nothing else.
async fn assert_rejected_with_503(d: &Fsfaxd) {
    let second = call(d, CallSetup::default()).await;
    assert!(second.wait_finished(T).await);
    assert_eq!(
        second.executed(),
        [("respond".to_string(), "503".to_string())]
    );
}

/// Issue 12, item 1 (capture `outbound-caller-cancels-during-screening`): the caller gives up
/// while DynamicConfig runs. FreeSWITCH reports the hangup and the linger notice at once; an
/// `execute` after that would get `+OK` and never complete. fsfaxd must end the call on that
/// word alone: no answer sent, the socket closed by fsfaxd (the fake never ends a linger and
/// DynamicConfig never returns, so nothing else can end the call), the modem free, and the
/// call in xferfaxlog with no connect time (item 3) and no file (item 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_cancels_during_screening_frees_the_modem_at_once() {
    let mut d = Fsfaxd::start(1, "");
    script(
        &d.spool().join("bin/dynconf"),
        "#!/bin/sh\necho $$ > \"$PWD/dynconf.running\"\nwhile [ ! -e \"$PWD/dynconf.go\" ]; do sleep 0.05; done\n",
    );
    append_gofaxd(
        &mut d,
        "dynamicconfig = bin/dynconf\ndynamicconfigtimeout = 1h",
    );
    let c = call(
        &d,
        CallSetup {
            caller_number: "4930123456".into(),
            ..CallSetup::default()
        },
    )
    .await;
    let running = d.spool().join("dynconf.running");
    assert!(
        wait_async(T, || running.exists()).await,
        "{}\n{:?}",
        d.log(),
        c.command_lines()
    );
    assert_eq!(d.status("freeswitch0"), "Answering the phone");
    // The caller waits at least two seconds before giving up (more on a slow machine, never
    // less), so a connect time counted from the call's arrival would show in the record.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    c.cancel();
    assert!(
        c.wait_finished(T).await,
        "fsfaxd did not end the call after the caller's hangup\n{}\n{:?}",
        d.log(),
        c.command_lines()
    );
    let lines = c.command_lines();
    assert_eq!(lines.last().map(String::as_str), Some("exit"), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l == "sendmsg"),
        "nothing is executed on a gone channel: {lines:?}"
    );
    assert!(c.executed().is_empty(), "{:?}", c.executed());
    assert!(
        wait_async(T, || d.status("freeswitch0") == "Running and idle").await,
        "{}",
        d.status("freeswitch0")
    );
    // The call is accounted for: no file, no connect time, the cause as the reason.
    assert!(
        wait_async(T, || d.xferfaxlog().len() == 1).await,
        "{}",
        d.log()
    );
    let r = &d.xferfaxlog()[0];
    assert_eq!(r[1], "RECV");
    assert_eq!(r[4], "", "no document: {r:?}");
    assert_eq!(r[10], "0", "{r:?}");
    assert_eq!(
        (r[11].as_str(), r[12].as_str()),
        ("0:00:00", "0:00:00"),
        "{r:?}"
    );
    assert!(r[13].contains("ORIGINATOR_CANCEL"), "{r:?}");
    assert!(d.faxrcvd_runs().is_empty());
    // DynamicConfig was stopped with the call, not left to run.
    let pid: i32 = std::fs::read_to_string(&running)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit(") ").next().is_some_and(|r| !r.starts_with('Z')))
    };
    assert!(
        wait_async(T, || !alive()).await,
        "DynamicConfig {pid} still runs"
    );

    // HylaFAX's own recvstats charges the caller who left no time, and a fax received after
    // it (DynamicConfig now lets calls through) its pages and its real connect time.
    std::fs::write(d.spool().join("dynconf.go"), "").unwrap();
    let fax = call(
        &d,
        CallSetup {
            caller_number: "4930999".into(),
            script: RxScript::RxOk {
                pages: 3,
                t38: T38::Off,
            },
            ..CallSetup::default()
        },
    )
    .await;
    assert!(fax.wait_finished(T).await, "{}", d.log());
    assert!(
        wait_async(T, || d.xferfaxlog().len() == 2).await,
        "{}",
        d.log()
    );
    let report = support::hylafax::recvstats(&d.spool().join("log/xferfaxlog"), &["-sender"]);
    let rows: Vec<Vec<&str>> = report
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .collect();
    let row = |cid: &str| {
        rows.iter()
            .find(|r| r.contains(&cid))
            .unwrap_or_else(|| panic!("no row for {cid} in\n{report}"))
    };
    // Sender, CIDName, CIDNumber, Pages, Time, Pg/min, Errs, TypRate, TypData (the first
    // row has no TSI, so its columns start one earlier).
    let left = row("4930123456");
    assert_eq!((left[2], left[3]), ("0", "0:00"), "{report}");
    let fax = row("4930999");
    let at = fax.iter().position(|c| *c == "4930999").unwrap();
    assert_eq!(fax[at + 1], "3", "{report}");
    let total = row("Total");
    assert_eq!(total[1], "3", "{report}");
}

/// Issue 12, item 7: started as root (as CI runs the tests), fsfaxd works as the spool's
/// owner after binding, so every file it leaves (xferfaxlog, seqf, session logs, the journal,
/// FIFOs, status) belongs to the owner, as faxgetty's do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_as_root_it_leaves_every_spool_file_to_the_spool_owner() {
    use std::os::unix::fs::MetadataExt;
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test needs root (CI runs the tests as root): it checks what fsfaxd started as root leaves"
    );
    let (_tmp, spool, uid) = uucp_spool();
    let d = Fsfaxd::start_on(&spool, 1, "");
    let proc_uid = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let uids = proc_uid
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .map(|u| u.parse::<u32>().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(uids, [uid; 4], "fsfaxd's real, effective, saved and fs uid");
    let c = call(&d, CallSetup::default()).await;
    assert!(
        wait_async(T, || d.faxrcvd_call("000000001").is_some()).await,
        "{}",
        d.log()
    );
    assert!(c.wait_finished(T).await);
    assert!(wait_async(T, || d.journal().is_empty()).await);
    // The received TIFF is FreeSWITCH's (here the fake's, running as root): not ours.
    let theirs = spool.join("recvq/fax000000001.tif");
    let root_owned: Vec<String> = walk(&spool)
        .into_iter()
        .filter(|p| *p != theirs && std::fs::symlink_metadata(p).unwrap().uid() != uid)
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        root_owned.is_empty(),
        "not the spool owner's: {root_owned:?}"
    );
    for f in [
        "log/xferfaxlog",
        "log/seqf",
        "recvq/seqf",
        "log/c000000001",
        "recvq/fax000000001.tif",
    ] {
        assert!(spool.join(f).exists(), "{f} missing");
    }
}

/// Issue 12, item 13: the admin `touch`ed etc/config.freeswitch0 as root (GOfax.IP's README
/// says to); fsfaxd, started as root, fills it with the number and identifier before it works
/// as the spool's owner, so `faxstat -s` shows `Modem freeswitch0 (+49 40 5550)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_as_root_it_fills_a_root_owned_modem_config_before_giving_up_root() {
    use std::os::unix::fs::MetadataExt;
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test needs root (CI runs the tests as root)"
    );
    let (_tmp, spool, _) = uucp_spool();
    let config = spool.join("etc/config.freeswitch0");
    let _ = std::fs::remove_file(&config);
    std::fs::write(&config, "").unwrap();
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    assert_eq!(std::fs::metadata(&config).unwrap().uid(), 0);
    let d = Fsfaxd::start_on(&spool, 1, "\n[gofaxsend]\nfaxnumber = +49 40 5550");
    assert!(
        wait_async(T, || d.log().contains("running as the spool's owner")).await,
        "{}",
        d.log()
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("FAXNumber:\t\t\"+49 40 5550\""),
        "{text:?}\n{}",
        d.log()
    );
    assert!(text.contains("LocalIdentifier:\t\"ACME Fax\""), "{text:?}");
    assert_eq!(
        std::fs::metadata(&config).unwrap().uid(),
        0,
        "the admin's file keeps its owner"
    );
    assert!(
        !d.log().contains("cannot fill the modem config"),
        "{}",
        d.log()
    );
}

/// A prepared spool in a fresh directory, every file uucp's (as on a HylaFAX host); returns
/// the directory, the spool and uucp's uid.
fn uucp_spool() -> (tempfile::TempDir, std::path::PathBuf, u32) {
    let uucp = nix::unistd::User::from_name("uucp")
        .unwrap()
        .expect("user uucp (Debian's base system has it)");
    let (uid, gid) = (uucp.uid.as_raw(), uucp.gid.as_raw());
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let spool = tmp.path().join("spool");
    support::fsfaxd::prepare_spool(&spool);
    for e in walk(&spool) {
        std::os::unix::fs::lchown(&e, Some(uid), Some(gid)).unwrap();
    }
    (tmp, spool, uid)
}

/// Every path under `root` (itself included).
fn walk(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                out.push(e.unwrap().path());
            }
        }
        i += 1;
    }
    out
}
