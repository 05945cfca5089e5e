//! Fault injection on the real fsfaxsend: FreeSWITCH closing the socket at every step of a
//! send, and `kill -9` at seeded random points. The promise under test: the qfile never says
//! `returned:2` (done) unless FreeSWITCH reported the fax as sent, and it always stays a qfile
//! faxq can read.

mod support;

use std::time::Duration;

use rand::{Rng, SeedableRng};
use support::fakefs::{CallScript, DropPoint, FakeConfig, FakeFs, Injection};
use support::send::SendEnv;

/// Whether the fake told anyone that this originate's fax went through.
fn fake_reported_success(fs: &FakeFs) -> bool {
    fs.published().iter().any(|e| {
        e.get_decoded("Event-Subclass").as_deref() == Some("spandsp::txfaxresult")
            && e.get_decoded("fax-success").as_deref() == Some("1")
    })
}

/// The qfile still parses as one and keeps what faxq needs.
fn assert_sane_qfile(env: &SendEnv, job: u32) {
    let path = env.spool.join("sendq").join(format!("q{job}"));
    let bytes = std::fs::read(&path).unwrap();
    let q = fsfax::hylafax::qfile::QFileContent::parse(&path, &bytes)
        .unwrap_or_else(|e| panic!("q{job} is no longer a qfile: {e}"));
    assert_eq!(q.jobid().unwrap(), job);
    // A job that is done keeps no document to send (faxsend takes each out once sent); one
    // with pages left keeps its document line. One whose every page was confirmed may be
    // caught between taking its document out and writing `returned:2`: the retry says done.
    let documents = q.get_all("fax").len();
    match (q.get("returned"), q.npages()) {
        (Some("2"), _) => assert_eq!(documents, 0, "a done job's document line"),
        (_, n) if n < 3 => assert_eq!(documents, 1, "the document line with {n} pages sent"),
        _ => assert!(documents <= 1, "{documents} document lines"),
    }
    assert!(q.get("external").is_some());
}

/// A socket closed before anything was dialled: an honest retry that burns no dial.
#[tokio::test]
async fn socket_closed_before_dialling_is_a_retry_without_a_dial() {
    // Commands: 1 auth, 2 filter Unique-ID, 3 filter Job-UUID, 4 event plain, 5 bgapi originate.
    for (after, what) in [
        (1, "after auth"),
        (2, "after the first filter"),
        (3, "after the Job-UUID filter"),
        (4, "after the event subscription"),
    ] {
        let fs = FakeFs::start(FakeConfig::new().inject(Injection {
            after_command: after,
            frame: Vec::new(),
            close: true,
        }))
        .await;
        let env = SendEnv::new(&fs.addr().to_string());
        env.qfile(1, "0401234", &[("test3.tif", 0)], &[]);
        let code = env.run(1).await;
        assert_eq!(code, 0, "{what}");
        assert_eq!(env.field(1, "returned"), "0", "{what}");
        assert_eq!(env.field(1, "totdials"), "0", "{what}: no dial was made");
        assert_eq!(env.field(1, "ndials"), "0", "{what}: no dial was made");
        assert!(
            !env.field(1, "status").is_empty(),
            "{what}: a status says why"
        );
        assert!(fs.originates().is_empty(), "{what}");
        assert_sane_qfile(&env, 1);
    }
    let fs = FakeFs::start(FakeConfig::new().drop_after_auth()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.qfile(2, "0401234", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(2).await, 0);
    assert_eq!(env.field(2, "returned"), "0");
}

/// A socket closed once the call exists: a retry that counts the dial and never says done.
#[tokio::test]
async fn socket_closed_during_the_call_is_never_done() {
    for drop in [
        DropPoint::OnOriginate,
        DropPoint::AfterAnswer,
        DropPoint::AfterPage(1),
        DropPoint::AfterPage(2),
        DropPoint::AfterPage(3),
        DropPoint::BeforeResult,
    ] {
        let fs = FakeFs::start(
            FakeConfig::new()
                .default_script(CallScript::DropAfter(drop))
                .time_scale(0.002),
        )
        .await;
        let env = SendEnv::new(&fs.addr().to_string());
        env.qfile(3, "0401234", &[("test3.tif", 0)], &[]);
        let code = env.run(3).await;
        assert!(
            !fake_reported_success(&fs),
            "{drop:?}: the fake never said success"
        );
        assert_ne!(code, 2, "{drop:?}");
        assert_ne!(env.field(3, "returned"), "2", "{drop:?}");
        assert_eq!(code, 0, "{drop:?}: a lost switch is a retry, not a failure");
        assert_eq!(env.field(3, "totdials"), "1", "{drop:?}");
        assert!(
            env.field(3, "status").contains("FreeSWITCH"),
            "{drop:?}: {}",
            env.field(3, "status")
        );
        assert_sane_qfile(&env, 3);
        // Whatever happened on the wire is in xferfaxlog, once.
        assert_eq!(env.xferfaxlog().len(), 1, "{drop:?}");
        assert_eq!(env.temp_files(), 0, "{drop:?}: no merged file left behind");
    }
}

/// `kill -9` of fsfaxsend at seeded random points of a send: whatever the qfile says, it is
/// readable, and it says done only when FreeSWITCH reported the fax as sent.
#[tokio::test]
async fn kill_9_at_random_points_never_leaves_a_false_done() {
    let seed: u64 = std::env::var("FSFAX_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_fa11);
    eprintln!("kill -9 seed {seed} (FSFAX_FAULT_SEED to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // A 3-page T.38 capture fax at this scale takes about 0.9 s of events.
    let fs = FakeFs::start(FakeConfig::new().time_scale(0.03)).await;
    let mut killed_before_done = 0;
    for round in 0..14u32 {
        let env = SendEnv::new(&fs.addr().to_string());
        let job = 100 + round;
        env.qfile(job, "0401234", &[("test3.tif", 0)], &[]);
        let before = fs.published().len();
        let mut child = env.spawn(job);
        let delay = rng.gen_range(0..1400);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let _ = child.start_kill();
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .expect("fsfaxsend exits")
            .unwrap();
        let returned = env.field(job, "returned");
        let sent = fs.published()[before..].iter().any(|e| {
            e.get_decoded("Event-Subclass").as_deref() == Some("spandsp::txfaxresult")
                && e.get_decoded("fax-success").as_deref() == Some("1")
        });
        if returned == "2" {
            assert!(
                sent,
                "round {round} (kill after {delay} ms): done without a sent fax"
            );
        }
        if status.code().is_none() && returned != "2" {
            killed_before_done += 1;
        }
        assert_sane_qfile(&env, job);
        // The next run of the same job (faxq's retry) finishes it honestly.
        if returned != "2" {
            let code = env.run(job).await;
            assert_eq!(
                code, 2,
                "round {round}: the retry after kill -9 sends the fax"
            );
            assert_eq!(env.field(job, "returned"), "2");
            assert_sane_qfile(&env, job);
        }
    }
    assert!(
        killed_before_done > 0,
        "no kill landed before the end of a send"
    );
}

/// `kill -9` after the receiver confirmed the last page but before the verdict leaves a job
/// whose pages are all recorded: its document line starts past its last page, or (killed between
/// the document leaving the qfile and `returned:2`) no document line is left. faxq retries it;
/// the retry must say done without calling anyone, not "nothing to send" (failed).
#[tokio::test]
async fn a_retry_after_every_page_was_confirmed_is_done_without_a_call() {
    let fs = FakeFs::start(FakeConfig::new()).await;
    for (job, keep_line) in [(40u32, true), (41, false)] {
        let env = SendEnv::new(&fs.addr().to_string());
        let path = env.qfile(job, "0401234", &[("test3.tif", 3)], &[]);
        let mut text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("npages:0\n", "npages:3\n")
            .replace("returned:7\n", "returned:0\n");
        if !keep_line {
            text = text
                .lines()
                .filter(|l| !l.starts_with("fax:"))
                .map(|l| format!("{l}\n"))
                .collect();
        }
        std::fs::write(&path, text).unwrap();
        let before = fs.originates().len();
        let code = env.run(job).await;
        assert_eq!(code, 2, "job {job} (document line kept: {keep_line})");
        assert_eq!(env.field(job, "returned"), "2");
        assert_eq!(env.field(job, "npages"), "3", "the page count stays");
        assert!(
            env.field(job, "status")
                .contains("confirmed by the receiver"),
            "status says why: {}",
            env.field(job, "status")
        );
        assert_eq!(
            fs.originates().len(),
            before,
            "no call for a job with nothing left: {:?}",
            &fs.originates()[before..]
        );
        assert_sane_qfile(&env, job);
    }
}

/// A job with no page sent and no document is not done: it fails as malformed.
#[tokio::test]
async fn a_job_without_documents_or_sent_pages_fails() {
    let fs = FakeFs::start(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.qfile(42, "0401234", &[], &[]);
    let code = env.run(42).await;
    assert_eq!(code, 1);
    assert_eq!(env.field(42, "returned"), "1");
    assert!(fs.originates().is_empty(), "{:?}", fs.originates());
}
