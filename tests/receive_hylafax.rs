//! fsfaxd with a real HylaFAX (Debian's faxq, hfaxd, faxstat, bin/faxrcvd, faxinfo).
//! Needs root and the packages: run through scripts/test.sh (FSFAX_REAL_HYLAFAX=1).

mod support;

use std::path::Path;
use std::time::Duration;

use support::fakefs::{CallSetup, FakeCall};
use support::fsfaxd::{Fsfaxd, wait, wait_async};
use support::hylafax::HylafaxLab;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faxstat_shows_the_modems_and_real_faxrcvd_takes_the_fax() {
    let lab = HylafaxLab::start(2, Path::new("/bin/true"));
    // The modems' number, as faxgetty's config.<dev> has it (issue 12, item 13). fsfaxd runs
    // as the spool's owner: the lab's (empty) modem configs are given to it, as faxsetup's are.
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(lab.spool()).unwrap());
    for i in 0..2 {
        let config = lab.spool().join(format!("etc/config.freeswitch{i}"));
        std::os::unix::fs::chown(&config, Some(owner), None).unwrap();
    }
    let d = Fsfaxd::start_on(&lab.spool(), 2, "\n[gofaxsend]\nfaxnumber = +49 40 5550");
    let t = Duration::from_secs(120);
    let idle = wait(t, || {
        let s = lab.faxstat(&["-s"]);
        s.contains("Modem freeswitch0 (+49 40 5550): Running and idle")
            && s.contains("Modem freeswitch1 (+49 40 5550): Running and idle")
    });
    assert!(
        idle,
        "faxstat -s:\n{}\nfsfaxd:\n{}",
        lab.faxstat(&["-s"]),
        d.log()
    );
    // faxq knows the modems are ready (it answered our +dev:R).
    assert!(
        wait(t, || lab.syslog().contains("MODEM freeswitch0: READY")),
        "{}",
        lab.syslog()
    );

    let c = FakeCall::connect(
        d.addr,
        CallSetup {
            caller_number: "4711".into(),
            caller_name: "Alice Caller".into(),
            // The sender waits after page 1 until faxstat has shown the reception.
            stall_after_pages: Some(1),
            ..CallSetup::default()
        },
    )
    .await
    .unwrap();
    let receiving = wait_async(t, || {
        lab.faxstat(&["-s"])
            .contains("Modem freeswitch0 (+49 40 5550): Receiving facsimile")
    })
    .await;
    assert!(receiving, "faxstat -s:\n{}", lab.faxstat(&["-s"]));
    c.resume();
    assert!(c.wait_finished(t).await);
    let session = lab.spool().join("log/c000000001");
    let faxrcvd_done = wait_async(Duration::from_secs(120), || {
        std::fs::read_to_string(&session).is_ok_and(|s| s.contains("SESSION END"))
    })
    .await;
    assert!(faxrcvd_done, "{}", d.log());
    let text = std::fs::read_to_string(&session).unwrap();
    assert!(
        text.contains("bin/faxrcvd ended successfully"),
        "session log:\n{text}"
    );
    // faxinfo reads the document fsfaxd handed over.
    let info = std::process::Command::new("/usr/lib/hylafax/bin/faxinfo")
        .arg(lab.spool().join("recvq/fax000000001.tif"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.status.success(),
        "faxinfo: {out}{}",
        String::from_utf8_lossy(&info.stderr)
    );
    assert!(out.contains("Pages: 3"), "{out}");
    // fsfaxd added faxgetty's tags (FaxRecvParams, FaxRecvTime): the session as FreeSWITCH
    // reported it, not "0 bit/s" (issue 12, item 13).
    assert!(out.contains("SignalRate: 14400 bit/s"), "{out}");
    // Each page has them, once; the receive time is the call's (whole seconds, so the fake's
    // quick call may give 0: only its presence is checked).
    let doc = lab.spool().join("recvq/fax000000001.tif");
    let dump = std::process::Command::new("tiffdump")
        .arg(&doc)
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert_eq!(
        dump.matches("34908 (0x885c) LONG (4) 1<").count(),
        3,
        "{dump}"
    );
    assert_eq!(
        dump.matches("34910 (0x885e) LONG (4) 1<").count(),
        3,
        "{dump}"
    );
    // The document FreeSWITCH wrote (the fake writes this fixture) is still there byte for
    // byte: only the header's first-directory pointer changed, new directories are appended.
    let sent = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/fax")
            .join("test3.tif"),
    )
    .unwrap();
    let got = std::fs::read(&doc).unwrap();
    assert!(got.len() > sent.len() && got[8..sent.len()] == sent[8..] && got[..4] == sent[..4]);
    // faxrcvd mailed it (the lab's sendmail stub keeps each message).
    let mails = wait(t, || {
        std::fs::read_dir(lab.dir().join("mail"))
            .map(|d| d.count() > 0)
            .unwrap_or(false)
    });
    assert!(mails, "no mail from faxrcvd");
    let mail: String = std::fs::read_dir(lab.dir().join("mail"))
        .unwrap()
        .map(|m| std::fs::read_to_string(m.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(mail.contains("14400 bit/s"), "mail:\n{mail}");
    assert!(!mail.contains(" 0 bit/s"), "mail:\n{mail}");
    assert!(wait(t, || lab
        .faxstat(&["-s"])
        .contains("Modem freeswitch0 (+49 40 5550): Running and idle")));
}

/// Issue 12, items 4 and 5: `kill -9` of fsfaxd mid-reception while FreeSWITCH goes on
/// receiving. After the restart faxstat shows the reception on its modem; when FreeSWITCH is
/// done, the fax reaches HylaFAX's faxrcvd once, clean, with its sender and signal rate, and
/// faxinfo reads them from the document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reception_outliving_fsfaxd_shows_on_faxstat_and_reaches_faxrcvd_clean() {
    use nix::sys::signal::Signal;
    use support::fakefs::{FakeConfig, FakeFs, RxScript, T38};

    let lab = HylafaxLab::start(1, Path::new("/bin/true"));
    let fs = FakeFs::start(FakeConfig::new()).await;
    let mut d = Fsfaxd::start_on(
        &lab.spool(),
        1,
        &format!("\n[freeswitch]\nsocket = {}\npassword = ClueCon", fs.addr()),
    );
    let t = Duration::from_secs(120);
    let line = |s: String| {
        s.lines()
            .find(|l| l.contains("Modem freeswitch0"))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(wait(t, || line(lab.faxstat(&["-s"]))
        .contains("Running and idle")));
    let c = FakeCall::connect(
        d.addr,
        CallSetup {
            caller_number: "4711".into(),
            caller_name: "Alice Caller".into(),
            remote_station_id: "+49 40 5550".into(),
            stall_after_pages: Some(1),
            switch: Some(fs.switch()),
            spandsp_tiff: true,
            script: RxScript::RxOk {
                pages: 3,
                t38: T38::Negotiated,
            },
            ..CallSetup::default()
        },
    )
    .await
    .unwrap();
    assert!(
        c.wait_for(t, |l| l
            .fired
            .iter()
            .any(|e| e.subclass() == "spandsp::rxfaxpageresult"))
            .await
    );
    d.signal(Signal::SIGKILL);
    assert_eq!(d.wait_exit(t), None);
    assert!(c.wait_finished(t).await);
    d.spawn();
    let receiving = wait_async(t, || {
        line(lab.faxstat(&["-s"])).contains("Receiving facsimile")
    })
    .await;
    assert!(
        receiving,
        "faxstat -s:\n{}\nfsfaxd:\n{}",
        lab.faxstat(&["-s"]),
        d.log()
    );
    c.resume();
    let session = lab.spool().join("log/c000000001");
    let done = wait_async(t, || {
        std::fs::read_to_string(&session).is_ok_and(|s| s.contains("ended successfully"))
    })
    .await;
    assert!(done, "{}", d.log());
    let info = std::process::Command::new("/usr/lib/hylafax/bin/faxinfo")
        .arg(lab.spool().join("recvq/fax000000001.tif"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success(), "faxinfo: {out}");
    assert!(out.contains("Sender: +49 40 5550"), "{out}");
    assert!(out.contains("Pages: 3"), "{out}");
    assert!(out.contains("SignalRate: 14400 bit/s"), "{out}");
    assert!(!out.contains("TimeToRecv: 0:00:00"), "{out}");
    let mails = wait(t, || {
        std::fs::read_dir(lab.dir().join("mail"))
            .map(|d| d.count() > 0)
            .unwrap_or(false)
    });
    assert!(mails, "no mail from faxrcvd");
    let mail: String = std::fs::read_dir(lab.dir().join("mail"))
        .unwrap()
        .map(|m| std::fs::read_to_string(m.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(!mail.contains("with errors"), "mail:\n{mail}");
    assert!(!mail.contains("incomplete"), "mail:\n{mail}");
    assert!(!mail.contains("Errors were received"), "mail:\n{mail}");
    assert!(mail.contains("+49 40 5550"), "mail:\n{mail}");
    assert!(mail.contains("14400 bit/s"), "mail:\n{mail}");
    assert!(wait(t, || line(lab.faxstat(&["-s"]))
        .contains("Running and idle")));
    // Once: one RECV record, one mail.
    let log = std::fs::read_to_string(lab.spool().join("log/xferfaxlog")).unwrap();
    assert_eq!(
        log.lines().filter(|l| l.contains("\tRECV\t")).count(),
        1,
        "{log}"
    );
}
