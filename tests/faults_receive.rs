//! Fault injection on the real fsfaxd: FreeSWITCH vanishing at every step of a reception,
//! faxq's FIFO missing / without reader / full, and the spool disk full. The promise under
//! test: a document that exists reaches faxrcvd exactly once with an xferfaxlog record, a call
//! without one leaves an honest record (or nothing, before it was accepted), no journal entry
//! is left behind, and fsfaxd keeps serving the next call.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::fakefs::{CallSetup, FakeCall, RxScript, T38, tiff};
use support::fsfaxd::{Fsfaxd, script, wait, wait_async};

/// Waits end as soon as what they wait for holds; this only bounds a hang.
const T: Duration = support::wait::HANG;

/// Waits until fsfaxd is done with every call: modems idle, journal empty.
async fn settle(d: &Fsfaxd, modems: u32) {
    let idle = wait_async(T, || {
        (0..modems).all(|m| d.status(&format!("freeswitch{m}")) == "Running and idle")
            && d.journal().is_empty()
    })
    .await;
    assert!(
        idle,
        "fsfaxd did not settle: {:?}\n{}",
        d.journal(),
        d.log()
    );
}

/// Every faxrcvd run names a distinct document, and every document with pages had one.
fn assert_each_document_delivered_once(d: &Fsfaxd) {
    let mut runs: HashMap<String, usize> = HashMap::new();
    for line in d.faxrcvd_runs() {
        let file = line.split(' ').next().unwrap_or("").to_owned();
        *runs.entry(file).or_default() += 1;
    }
    for (file, n) in &runs {
        assert_eq!(*n, 1, "{file} reached faxrcvd {n} times");
    }
    for entry in std::fs::read_dir(d.spool().join("recvq")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("fax") && name.ends_with(".tif") {
            let rel = format!("recvq/{name}");
            if d.pages(&rel).unwrap_or(0) > 0 {
                assert_eq!(runs.get(&rel), Some(&1), "{rel} never reached faxrcvd");
                assert!(
                    d.xferfaxlog().iter().any(|r| r.get(4) == Some(&rel)),
                    "{rel} has no xferfaxlog record"
                );
            }
        }
    }
}

/// A normal call still goes through: fsfaxd kept serving.
async fn assert_still_serving(d: &Fsfaxd) {
    let before = d.faxrcvd_runs().len();
    let c = FakeCall::connect(d.addr, CallSetup::default())
        .await
        .unwrap();
    assert!(c.wait_finished(T).await, "{}", d.log());
    assert!(
        wait_async(T, || d.faxrcvd_runs().len() == before + 1).await,
        "the next call was not received:\n{}",
        d.log()
    );
}

fn setup(script: RxScript) -> CallSetup {
    CallSetup {
        script,
        time_scale: 0.01,
        ..CallSetup::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeswitch_vanishing_at_every_step_of_a_reception() {
    let d = Fsfaxd::start(2, "");
    // After connect, linger, the event subscription and the sendmsgs that follow.
    for n in 1..=8 {
        let c = FakeCall::connect(
            d.addr,
            CallSetup {
                vanish_after_command: Some(n),
                ..setup(RxScript::RxOk {
                    pages: 3,
                    t38: T38::Negotiated,
                })
            },
        )
        .await
        .unwrap();
        assert!(c.wait_finished(T).await, "vanish after command {n}");
        settle(&d, 2).await;
        assert!(
            d.faxrcvd_runs().is_empty(),
            "vanish after command {n}: no fax was sent"
        );
    }

    // After the answer (the sender stands still there until the switch vanishes).
    let c = FakeCall::connect(
        d.addr,
        CallSetup {
            stall_after_pages: Some(0),
            ..setup(RxScript::RxOk {
                pages: 3,
                t38: T38::Negotiated,
            })
        },
    )
    .await
    .unwrap();
    assert!(
        c.wait_for(T, |l| l.executed.iter().any(|(a, _)| a == "answer"))
            .await
    );
    c.vanish();
    assert!(c.wait_finished(T).await);
    settle(&d, 2).await;

    // Mid-rxfax, after the first page: spandsp has written that page when the switch dies.
    let c = FakeCall::connect(
        d.addr,
        CallSetup {
            stall_after_pages: Some(1),
            ..setup(RxScript::RxOk {
                pages: 3,
                t38: T38::Negotiated,
            })
        },
    )
    .await
    .unwrap();
    let paged = c
        .wait_for(T, |l| {
            l.delivered
                .iter()
                .any(|e| e.subclass() == "spandsp::rxfaxpageresult")
        })
        .await;
    assert!(paged, "{}", d.log());
    let partial = c.log().rxfax_path.unwrap();
    tiff::write_received(&partial, 1).unwrap();
    c.vanish();
    assert!(c.wait_finished(T).await);
    settle(&d, 2).await;
    let rel = format!("recvq/{}", partial.file_name().unwrap().to_string_lossy());
    let rec = d
        .xferfaxlog()
        .into_iter()
        .find(|r| r.get(4) == Some(&rel))
        .expect("the cut-off fax has its record");
    assert_eq!(rec[10], "1", "the one page received is counted: {rec:?}");
    assert_ne!(rec[13], "\"\"", "a cut-off fax is never logged as complete");

    // After the result: the fax is complete, whatever the socket does next.
    let c = FakeCall::connect(
        d.addr,
        setup(RxScript::RxOk {
            pages: 3,
            t38: T38::Negotiated,
        }),
    )
    .await
    .unwrap();
    let result = c
        .wait_for(T, |l| {
            l.delivered
                .iter()
                .any(|e| e.subclass() == "spandsp::rxfaxresult")
        })
        .await;
    assert!(result);
    c.vanish();
    assert!(c.wait_finished(T).await);
    settle(&d, 2).await;
    let full = c.log().rxfax_path.unwrap();
    let rel = format!("recvq/{}", full.file_name().unwrap().to_string_lossy());
    assert!(
        wait(T, || d.faxrcvd_runs().iter().any(|l| l.starts_with(&rel))),
        "{}",
        d.log()
    );

    assert_each_document_delivered_once(&d);
    assert_eq!(d.faxrcvd_runs().len(), 2, "{:?}", d.faxrcvd_runs());
    assert_still_serving(&d).await;
    assert_each_document_delivered_once(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeswitch_vanishing_during_dynamicconfig() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("dynconfig-started");
    let prog = dir.path().join("dynconfig");
    script(
        &prog,
        &format!(
            "#!/bin/sh\ntouch {}\nsleep 1\necho 'LocalIdentifier: +49 40 1'\n",
            marker.display()
        ),
    );
    let d = Fsfaxd::start(1, &format!("dynamicconfig = {}", prog.display()));
    let c = FakeCall::connect(
        d.addr,
        setup(RxScript::RxOk {
            pages: 3,
            t38: T38::Negotiated,
        }),
    )
    .await
    .unwrap();
    assert!(wait_async(T, || marker.exists()).await, "{}", d.log());
    c.vanish();
    assert!(c.wait_finished(T).await);
    settle(&d, 1).await;
    assert!(d.faxrcvd_runs().is_empty());
    assert_still_serving(&d).await;
    assert_each_document_delivered_once(&d);
}

/// A FIFO with its pipe buffer full and nobody draining it, kept open for the test's life.
fn full_fifo(path: &std::path::Path) -> std::fs::File {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap();
    let chunk = [b'x'; 4096];
    let mut total = 0;
    loop {
        match f.write(&chunk) {
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    assert!(total >= 4096, "the pipe took {total} bytes");
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faxq_fifo_missing_without_reader_or_full_never_stops_receptions() {
    // Missing: the harness spool has no FIFO at all.
    let d = Fsfaxd::start(1, "");
    assert!(!d.spool().join("FIFO").exists());
    assert_still_serving(&d).await;
    assert_each_document_delivered_once(&d);
    drop(d);

    // Present, nobody reading (faxq stopped): the FIFO stays as it is.
    let mut d = Fsfaxd::start(1, "");
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(d.wait_exit(T).is_some());
    nix::unistd::mkfifo(
        &d.spool().join("FIFO"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    d.spawn();
    assert_still_serving(&d).await;
    assert_still_serving(&d).await;

    // Full: faxq hung with its pipe buffer full. Writes must not block fsfaxd.
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(d.wait_exit(T).is_some());
    std::fs::remove_file(d.spool().join("FIFO")).unwrap();
    let _held = full_fifo(&d.spool().join("FIFO"));
    d.spawn();
    assert_still_serving(&d).await;
    assert_still_serving(&d).await;
    assert_each_document_delivered_once(&d);
    assert_eq!(d.faxrcvd_runs().len(), 4);
    assert!(!d.log().contains("panicked"), "{}", d.log());
}
