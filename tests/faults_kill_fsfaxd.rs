//! `kill -9` of fsfaxd with several receptions in flight: after the restart every document
//! reaches faxrcvd exactly once, and the journal is empty.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::fakefs::{CallSetup, FakeCall, RxScript, T38, tiff};
use support::fsfaxd::{Fsfaxd, script, wait_async};

/// Waits end as soon as what they wait for holds; this only bounds a hang.
const T: Duration = support::wait::HANG;

fn runs_per_file(d: &Fsfaxd) -> HashMap<String, usize> {
    let mut runs = HashMap::new();
    for line in d.faxrcvd_runs() {
        let file = line.split(' ').next().unwrap_or("").to_owned();
        *runs.entry(file).or_default() += 1;
    }
    runs
}

fn kill_9(d: &mut Fsfaxd) {
    d.signal(Signal::SIGKILL);
    assert_eq!(d.wait_exit(T), None, "killed by a signal, no exit code");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_receptions_then_restart_delivers_each_document_once() {
    let mut d = Fsfaxd::start(4, "");
    let mut calls = Vec::new();
    for i in 0..4 {
        calls.push(
            FakeCall::connect(
                d.addr,
                CallSetup {
                    caller_number: format!("4711{i}"),
                    // The senders stand still after the answer: all four are still in rxfax,
                    // with nothing written by the fake, when the test kills fsfaxd.
                    stall_after_pages: Some(0),
                    script: RxScript::RxOk {
                        pages: 3,
                        t38: T38::Negotiated,
                    },
                    ..CallSetup::default()
                },
            )
            .await
            .unwrap(),
        );
    }
    // All four are in rxfax (journalled) when fsfaxd dies.
    assert!(
        wait_async(T, || d.journal().len() == 4).await,
        "{:?}\n{}",
        d.journal(),
        d.log()
    );
    for c in &calls {
        assert!(c.wait_for(T, |l| l.rxfax_path.is_some()).await);
    }
    kill_9(&mut d);
    // FreeSWITCH's calls end with the socket; spandsp leaves what it had written: here 1, 2,
    // 3 pages, and (as the fake stood still) nothing for the last call.
    let mut documents = Vec::new();
    for (i, c) in calls.iter().enumerate() {
        assert!(c.wait_finished(T).await);
        let path = c.log().rxfax_path.unwrap();
        if i < 3 {
            tiff::write_received(&path, i + 1).unwrap();
        }
    }
    // What must be delivered is what exists in recvq now (the promise: every document that
    // exists reaches faxrcvd exactly once), read from the spool rather than assumed.
    for c in &calls {
        let path = c.log().rxfax_path.unwrap();
        if fsfax::tiff::count_pages(&path).is_ok_and(|p| p > 0) {
            documents.push(format!(
                "recvq/{}",
                path.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(
        documents.len() >= 3,
        "the three written documents: {documents:?}"
    );
    d.spawn();
    assert!(
        wait_async(Duration::from_secs(60), || d.journal().is_empty()).await,
        "recovery did not finish: {:?}\n{}",
        d.journal(),
        d.log()
    );
    let runs = runs_per_file(&d);
    for doc in &documents {
        assert_eq!(runs.get(doc), Some(&1), "{doc}: {runs:?}\n{}", d.log());
    }
    // Nothing else is delivered but a document that exists (with its pages): a late write by
    // the fake after the socket went would be a document too, and must then be delivered once.
    for (doc, n) in &runs {
        let pages = fsfax::tiff::count_pages(&d.spool().join(doc));
        assert!(
            *n == 1 && pages.as_ref().is_ok_and(|p| *p > 0),
            "{doc}: {n} faxrcvd runs, pages {pages:?}; written before the restart: {documents:?}\n{}",
            d.log()
        );
        if !documents.contains(doc) {
            eprintln!(
                "note: {doc} appeared after the calls ended (pages {pages:?}); delivered once"
            );
        }
    }
    let documents: Vec<String> = runs.keys().cloned().collect();
    // Each recovered fax has an xferfaxlog record saying it was recovered.
    for doc in &documents {
        let recs: Vec<_> = d
            .xferfaxlog()
            .into_iter()
            .filter(|r| r.get(4) == Some(doc))
            .collect();
        assert_eq!(recs.len(), 1, "{doc}: {recs:?}");
        assert!(recs[0][13].contains("recovered"), "{:?}", recs[0]);
    }
    // And the restarted daemon serves calls.
    let c = FakeCall::connect(d.addr, CallSetup::default())
        .await
        .unwrap();
    assert!(c.wait_finished(T).await);
    assert!(
        wait_async(T, || d.faxrcvd_runs().len() == documents.len() + 1).await,
        "{}",
        d.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_faxrcvd_runs_never_mails_a_fax_twice() {
    let mut d = Fsfaxd::start(3, "");
    // A slow faxrcvd (a mailer taking its time), outliving the fsfaxd that started it.
    let bin = d.spool().join("bin");
    std::fs::rename(bin.join("faxrcvd"), bin.join("faxrcvd.real")).unwrap();
    script(
        &bin.join("faxrcvd"),
        "#!/bin/sh\nmkdir -p \"$PWD/faxrcvd-started\"\ntouch \"$PWD/faxrcvd-started/$3\"\nsleep 2\nexec \"$PWD/bin/faxrcvd.real\" \"$@\"\n",
    );
    let mut calls = Vec::new();
    for i in 0..3 {
        calls.push(
            FakeCall::connect(
                d.addr,
                CallSetup {
                    caller_number: format!("4712{i}"),
                    ..CallSetup::default()
                },
            )
            .await
            .unwrap(),
        );
    }
    let started = d.spool().join("faxrcvd-started");
    assert!(
        wait_async(T, || std::fs::read_dir(&started)
            .map(|r| r.count())
            .unwrap_or(0)
            == 3)
        .await,
        "{}",
        d.log()
    );
    kill_9(&mut d);
    d.spawn();
    assert!(
        wait_async(Duration::from_secs(60), || d.journal().is_empty()
            && d.faxrcvd_runs().len() >= 3)
        .await,
        "{:?}\n{}",
        d.journal(),
        d.log()
    );
    // Give a wrongly repeated faxrcvd (2 s) time to show up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let runs = runs_per_file(&d);
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert!(
        runs.values().all(|&n| n == 1),
        "a fax was mailed twice: {runs:?}"
    );
    let recs = d.xferfaxlog();
    assert_eq!(recs.len(), 3, "one xferfaxlog record per fax: {recs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_reception_still_running_in_freeswitch_waits_for_its_call_to_end() {
    use fsfax::hylafax::journal::{Journal, PendingReception};
    use support::fakefs::{FakeConfig, FakeFs};

    // FreeSWITCH's rxfax goes on after fsfaxd died: the switch still has the call.
    let fs = FakeFs::start(FakeConfig::new()).await;
    let uuid = "6f1c2b3a-0000-4000-8000-000000000007";
    fs.hold_channel(uuid);

    // The spool as the killed fsfaxd left it: a document being written and its journal entry.
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    support::fsfaxd::prepare_spool(&spool);
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fax/test3.tif"),
        spool.join("recvq/fax000000007.tif"),
    )
    .unwrap();
    Journal::open(&spool)
        .unwrap()
        .add(&PendingReception {
            commid: "000000007".into(),
            recvq_file: "recvq/fax000000007.tif".into(),
            modem: "freeswitch0".into(),
            cidnum: "0401234".into(),
            cidname: "Alice".into(),
            recipient: "5000".into(),
            gateway: String::new(),
            call_uuid: uuid.into(),
            started: chrono::Local::now().timestamp(),
            delivery: Default::default(),
        })
        .unwrap();

    let d = Fsfaxd::start_on(
        &spool,
        1,
        &format!("\n[freeswitch]\nsocket = {}\npassword = ClueCon", fs.addr()),
    );
    // fsfaxd asks whether the call is still up, is told yes, waits and asks again: by the
    // second question it has seen the call up, whatever the machine's speed, and the document
    // is left alone meanwhile.
    let asked = format!("api uuid_exists {uuid}");
    assert!(
        wait_async(T, || fs
            .all_command_lines()
            .iter()
            .filter(|l| **l == asked)
            .count()
            >= 2)
        .await,
        "fsfaxd never asked twice whether the call is up; the fake recorded {:?}\n{}",
        fs.all_command_lines(),
        d.log()
    );
    assert!(
        d.faxrcvd_runs().is_empty(),
        "delivered while the fake still had the call: {:?}",
        d.faxrcvd_runs()
    );

    fs.end_channel(uuid);
    assert!(
        wait_async(T, || d.faxrcvd_runs().len() == 1).await,
        "{}",
        d.log()
    );
    assert!(d.faxrcvd_runs()[0].starts_with("recvq/fax000000007.tif 000000007"));
    // The entry goes once faxrcvd has exited, just after its own log line.
    assert!(
        wait_async(T, || d.journal().is_empty()).await,
        "{:?}",
        d.journal()
    );
}

/// The RECV record of `commid`.
fn recv_record(d: &Fsfaxd, commid: &str) -> Vec<String> {
    let recs: Vec<_> = d
        .xferfaxlog()
        .into_iter()
        .filter(|r| {
            r.get(1).map(String::as_str) == Some("RECV")
                && r.get(2).map(String::as_str) == Some(commid)
        })
        .collect();
    assert_eq!(recs.len(), 1, "one RECV record for {commid}: {recs:?}");
    recs.into_iter().next().unwrap()
}

fn unquote(s: &str) -> &str {
    s.trim_matches('"')
}

/// faxrcvd's error message argument (argv[4]) for `commid`.
fn faxrcvd_errmsg(d: &Fsfaxd, commid: &str) -> String {
    let call = d.faxrcvd_call(commid).expect("faxrcvd ran for the fax");
    let args: Vec<_> = call.iter().filter_map(|l| l.strip_prefix("ARG=")).collect();
    args.get(3).map(|s| (*s).to_owned()).unwrap_or_default()
}

/// fsfaxd killed (`kill -9`) while FreeSWITCH receives, the sender standing still after
/// page 1; FreeSWITCH goes on with the call; fsfaxd restarted with `extra` `[gofaxd]` lines.
/// Returns the restarted daemon, the call and the reception's commid once recovery shows the
/// reception on its modem and follows it on the Event Socket.
async fn killed_mid_reception(
    fs: &support::fakefs::FakeFs,
    script: RxScript,
    extra: &str,
) -> (Fsfaxd, FakeCall, String) {
    let mut d = Fsfaxd::start(
        1,
        &format!(
            "{extra}\n[freeswitch]\nsocket = {}\npassword = ClueCon",
            fs.addr()
        ),
    );
    // One switch: the call's events reach fsfaxd's inbound connection too, and the call
    // goes on inside FreeSWITCH when fsfaxd's socket dies.
    let c = FakeCall::connect(
        d.addr,
        CallSetup {
            caller_number: "0401234".into(),
            remote_station_id: "+49 40 5550".into(),
            stall_after_pages: Some(1),
            switch: Some(fs.switch()),
            spandsp_tiff: true,
            script,
            ..CallSetup::default()
        },
    )
    .await
    .unwrap();
    assert!(
        wait_async(T, || d.journal().len() == 1).await,
        "{}",
        d.log()
    );
    assert!(
        c.wait_for(T, |l| l
            .fired
            .iter()
            .any(|e| e.subclass() == "spandsp::rxfaxpageresult"))
            .await
    );
    let commid = d.journal()[0].trim_start_matches("pending-").to_owned();
    kill_9(&mut d);
    assert!(
        c.wait_finished(T).await,
        "the socket to the dead fsfaxd closed"
    );
    assert!(
        fs.active_calls().contains(&c.uuid().to_owned()) && !c.log().channel_ended,
        "FreeSWITCH still receives"
    );

    d.spawn();
    // Shown on its modem as receiving while FreeSWITCH receives, and said at start-up.
    assert!(
        wait_async(T, || d.status("freeswitch0") == "Receiving facsimile").await,
        "status {:?}\n{}",
        d.status("freeswitch0"),
        d.log()
    );
    assert!(
        wait_async(T, || d.log().contains("still in progress in FreeSWITCH")).await,
        "{}",
        d.log()
    );
    // Followed on an inbound connection: filtered on the call, subscribed to its result
    // and hangup.
    let follow = format!("filter Unique-ID {}", c.uuid());
    assert!(
        wait_async(T, || {
            let lines = fs.all_command_lines();
            lines.contains(&follow)
                && lines.iter().any(|l| {
                    l.starts_with("event plain")
                        && l.contains("spandsp::rxfaxresult")
                        && l.contains("CHANNEL_HANGUP")
                })
        })
        .await,
        "{:?}",
        fs.all_command_lines()
    );
    assert!(d.faxrcvd_runs().is_empty(), "{:?}", d.faxrcvd_runs());
    assert_eq!(d.status("freeswitch0"), "Receiving facsimile");
    (d, c, commid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reception_freeswitch_goes_on_with_after_kill_9_is_shown_followed_and_delivered_with_its_result()
 {
    use support::fakefs::{FakeConfig, FakeFs};

    let fs = FakeFs::start(FakeConfig::new()).await;
    let script = RxScript::RxOk {
        pages: 3,
        t38: T38::Negotiated,
    };
    let (d, c, commid) = killed_mid_reception(&fs, script, "").await;
    // The sender goes on: pages 2 and 3, the result, the hangup fsfaxd had queued.
    c.resume();
    assert!(
        wait_async(T, || d.faxrcvd_runs().len() == 1).await,
        "{}",
        d.log()
    );
    assert!(c.log().channel_ended);
    let rec = recv_record(&d, &commid);
    assert_eq!(unquote(&rec[8]), "+49 40 5550", "TSI: {rec:?}");
    assert_eq!(rec[10], "3", "pages: {rec:?}");
    let params: u32 = rec[9].parse().unwrap();
    assert_eq!((params >> 3) & 0xf, 5, "14400 bit/s: {rec:?}");
    assert_eq!(params >> 16 & 1, 1, "ECM: {rec:?}");
    assert_eq!(unquote(&rec[13]), "", "a clean fax: {rec:?}");
    // Answer to hangup as the channel's hangup event tells it (the fake plays the capture's
    // times), not 0:00:00.
    // (CHANNEL_HANGUP_COMPLETE of capture outbound-rxfax-t38-ok-all-events: 27.4 s).
    assert_eq!(rec[11], "0:00:27", "connect time: {rec:?}");
    assert_eq!(faxrcvd_errmsg(&d, &commid), "", "faxrcvd without an error");
    assert!(
        d.faxrcvd_call(&commid)
            .unwrap()
            .contains(&"HANGUPCAUSE=NORMAL_CLEARING".to_owned())
    );
    assert!(wait_async(T, || d.journal().is_empty()).await);
    assert!(wait_async(T, || d.status("freeswitch0") == "Running and idle").await);
    // The session log of the call tells the whole story.
    let session = d.session_log(&commid);
    assert!(
        session.contains("still in progress in FreeSWITCH"),
        "{session}"
    );
    assert!(session.contains("RECV: fax result OK"), "{session}");
    assert_eq!(d.faxrcvd_runs().len(), 1, "delivered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_sender_hanging_up_mid_fax_gives_its_real_result_though_the_hangup_comes_first()
{
    use support::fakefs::{FakeConfig, FakeFs};

    let fs = FakeFs::start(FakeConfig::new()).await;
    // CHANNEL_HANGUP, then rxfaxresult code 49 with 2 pages (capture
    // outbound-rxfax-t38-sender-hangup-linger-all-events).
    let script = RxScript::SenderHangsUpMidFax { after_pages: 2 };
    let (d, c, commid) = killed_mid_reception(&fs, script, "").await;
    c.resume();
    assert!(
        wait_async(T, || d.faxrcvd_runs().len() == 1).await,
        "{}",
        d.log()
    );
    let fired: Vec<String> = c
        .log()
        .fired
        .iter()
        .map(|e| format!("{} {}", e.name(), e.subclass()))
        .collect();
    let at = |what: &str| fired.iter().position(|f| f == what).unwrap();
    assert!(
        at("CHANNEL_HANGUP ") < at("CUSTOM spandsp::rxfaxresult"),
        "the switch said hangup first: {fired:?}"
    );
    let rec = recv_record(&d, &commid);
    assert_eq!(rec[10], "2", "{rec:?}");
    assert_eq!(unquote(&rec[8]), "+49 40 5550", "{rec:?}");
    assert_eq!(unquote(&rec[13]), "The call dropped prematurely", "{rec:?}");
    assert_eq!(faxrcvd_errmsg(&d, &commid), "The call dropped prematurely");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_following_at_once_and_the_next_start_delivers_the_fax_once() {
    use support::fakefs::{FakeConfig, FakeFs};

    let fs = FakeFs::start(FakeConfig::new()).await;
    let script = RxScript::RxOk {
        pages: 3,
        t38: T38::Negotiated,
    };
    // A shutdown timeout far beyond the hang bound: only a recovery that gives way to the
    // stop lets fsfaxd exit within it.
    let (mut d, c, commid) = killed_mid_reception(&fs, script, "shutdowntimeout = 10m").await;
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(T), Some(0), "{}", d.log());
    assert_eq!(d.journal().len(), 1, "left for the next start");
    assert!(d.faxrcvd_runs().is_empty());
    assert!(!c.log().channel_ended, "FreeSWITCH still receives");
    // The next start follows it again; the fax is delivered once with its result.
    d.spawn();
    assert!(
        wait_async(T, || d.status("freeswitch0") == "Receiving facsimile").await,
        "{}",
        d.log()
    );
    c.resume();
    assert!(
        wait_async(T, || d.faxrcvd_runs().len() == 1 && d.journal().is_empty()).await,
        "{}",
        d.log()
    );
    assert_eq!(unquote(&recv_record(&d, &commid)[13]), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_reception_whose_call_had_ended_is_judged_by_its_document() {
    use fsfax::hylafax::journal::{Journal, PendingReception};
    use support::fakefs::{FakeConfig, FakeFs};

    // FreeSWITCH is up and knows neither call any more.
    let fs = FakeFs::start(FakeConfig::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    support::fsfaxd::prepare_spool(&spool);
    let journal = Journal::open(&spool).unwrap();
    // 8: spandsp finished the document; 9: spandsp never closed it (PageNumber totals 1).
    for (n, finished) in [(8, true), (9, false)] {
        let file = format!("recvq/fax00000000{n}.tif");
        std::fs::write(
            spool.join(&file),
            tiff::spandsp_document(3, "+49 40 5550", finished).unwrap(),
        )
        .unwrap();
        journal
            .add(&PendingReception {
                commid: format!("00000000{n}"),
                recvq_file: file,
                modem: "freeswitch0".into(),
                cidnum: "0401234".into(),
                cidname: "Alice".into(),
                recipient: "5000".into(),
                gateway: String::new(),
                call_uuid: format!("6f1c2b3a-0000-4000-8000-00000000000{n}"),
                started: chrono::Local::now().timestamp() - 60,
                delivery: Default::default(),
            })
            .unwrap();
    }
    let d = Fsfaxd::start_on(
        &spool,
        1,
        &format!("\n[freeswitch]\nsocket = {}\npassword = ClueCon", fs.addr()),
    );
    assert!(
        wait_async(T, || d.faxrcvd_runs().len() == 2 && d.journal().is_empty()).await,
        "{}",
        d.log()
    );
    assert!(
        fs.all_command_lines()
            .contains(&"api uuid_exists 6f1c2b3a-0000-4000-8000-000000000008".to_owned()),
        "{:?}",
        fs.all_command_lines()
    );
    let clean = recv_record(&d, "000000008");
    assert_eq!(unquote(&clean[8]), "+49 40 5550", "{clean:?}");
    assert_eq!(clean[10], "3");
    let params: u32 = clean[9].parse().unwrap();
    assert_eq!(
        (params >> 3) & 0xf,
        5,
        "14400 bit/s from the DCS: {clean:?}"
    );
    assert_eq!(params >> 16 & 1, 1, "ECM from the DCS: {clean:?}");
    assert_eq!(clean[11], "0:00:12", "3 × FaxRecvTime: {clean:?}");
    assert_eq!(unquote(&clean[13]), "", "{clean:?}");
    assert_eq!(faxrcvd_errmsg(&d, "000000008"), "");
    let unfinished = recv_record(&d, "000000009");
    assert!(
        unquote(&unfinished[13]).contains("did not finish"),
        "{unfinished:?}"
    );
    assert!(faxrcvd_errmsg(&d, "000000009").contains("did not finish"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeswitch_that_accepts_and_never_answers_does_not_hold_a_stop_during_recovery() {
    use fsfax::hylafax::journal::{Journal, PendingReception};

    // A hung FreeSWITCH: the connection is accepted, the greeting never comes.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hung.local_addr().unwrap();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hung.accept().await {
            held.push(s);
            let _ = seen_tx.send(());
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    support::fsfaxd::prepare_spool(&spool);
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fax/test3.tif"),
        spool.join("recvq/fax000000005.tif"),
    )
    .unwrap();
    Journal::open(&spool)
        .unwrap()
        .add(&PendingReception {
            commid: "000000005".into(),
            recvq_file: "recvq/fax000000005.tif".into(),
            modem: "freeswitch0".into(),
            cidnum: "0401234".into(),
            cidname: "Alice".into(),
            recipient: "5000".into(),
            gateway: String::new(),
            call_uuid: "6f1c2b3a-0000-4000-8000-000000000005".into(),
            started: chrono::Local::now().timestamp(),
            delivery: Default::default(),
        })
        .unwrap();
    // Timeouts far beyond the hang bound: only a recovery that gives way to the stop lets
    // fsfaxd exit within it.
    let mut d = Fsfaxd::start_on(
        &spool,
        1,
        &format!(
            "shutdowntimeout = 10m\n[freeswitch]\nsocket = {addr}\npassword = ClueCon\n\
             connecttimeout = 10m\ncommandtimeout = 10m"
        ),
    );
    assert!(
        tokio::time::timeout(T, seen.recv()).await.is_ok(),
        "recovery never connected: {}",
        d.log()
    );
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(T), Some(0), "{}", d.log());
    assert!(d.faxrcvd_runs().is_empty());
    assert_eq!(d.journal().len(), 1, "left for the next start");
}
