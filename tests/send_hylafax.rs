//! End to end with a real HylaFAX: `sendfax` queues a job, the real faxq runs the real
//! fsfaxsend as its SendFaxCmd, fsfaxsend talks to the fake FreeSWITCH, and faxq's own view of
//! the job (doneq/sendq, faxstat) shows what happened.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::fakefs::{CallScript, FakeConfig, FakeFs, FaxParams};
use support::hylafax::{HylafaxLab, SendFaxCmd};

/// A lab whose SendFaxCmd is fsfaxsend with a configuration pointing at `fs`.
struct Setup {
    lab: HylafaxLab,
    _cmd: SendFaxCmd,
}

fn setup(fs: &FakeFs) -> Setup {
    let cmd = SendFaxCmd::new();
    let conf = cmd.conf.clone();
    let lab = HylafaxLab::start(3, &cmd.wrapper);
    fs::write(
        &conf,
        format!(
            "[freeswitch]\nsocket = {}\npassword = ClueCon\ngateway = gw1\nident = +1 555 0100\n\
             [hylafax]\nspooldir = {}\nmodems = 3\nxferfaxlog = log/xferfaxlog\n\
             [gofaxsend]\nenablet38 = true\nrequestt38 = true\nfaxnumber = 4711\n\
             failedresponse = CALL_REJECTED\noriginatetimeout = 60s\nhangupafterresult = 1s\n",
            fs.addr(),
            lab.spool().display()
        ),
    )
    .unwrap();
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)).unwrap();
    lab.ready();
    Setup { lab, _cmd: cmd }
}

fn document() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fax/test3.tif")
}

fn state(lab: &HylafaxLab, job: u32) -> Option<String> {
    lab.qfile_field(job, "state")
}

#[tokio::test(flavor = "multi_thread")]
async fn faxq_runs_fsfaxsend_and_shows_done_requeued_and_failed() {
    let fs = FakeFs::start(
        FakeConfig::new()
            .number("5551001", CallScript::fax_ok())
            .number("5551002", CallScript::Busy)
            .number("5551003", CallScript::Rejected("CALL_REJECTED".into())),
    )
    .await;
    let s = setup(&fs);
    let lab = &s.lab;

    // One modem per job, so faxq dispatches all three in its first pass. (Without fsfaxd,
    // nothing re-announces a modem after a job, and faxq does not always look again.)
    let done = lab.submit("5551001", &document());
    let busy = lab.submit("5551002", &document());
    let failed = lab.submit("5551003", &document());
    // A bound for a hang only: faxq, fsfaxsend and the fake take well under a second each.
    // The busy job sleeps after each attempt: fsfaxsend never leaves it a `tts` equal to
    // faxq's clock, which faxq would retry at once (and then wait for a modem announcement
    // that, without fsfaxd, never comes).
    let settled = lab.wait_for(Duration::from_secs(300), |lab| {
        state(lab, done).as_deref() == Some("7")
            && state(lab, failed).as_deref() == Some("8")
            && state(lab, busy).as_deref() == Some("3")
            && lab.qfile_field(busy, "totdials").is_some_and(|d| d != "0")
            && lab
                .qfile_field(busy, "status")
                .is_some_and(|s| s.starts_with("Busy signal detected"))
    });
    assert!(
        settled,
        "jobs did not settle: done={:?} busy={:?} failed={:?}\n{}\n{}",
        state(lab, done),
        state(lab, busy),
        state(lab, failed),
        lab.faxstat(&["-s", "-d"]),
        lab.syslog()
    );

    // Done: faxq moved it to doneq with our fields.
    assert!(
        lab.qfile_path(done)
            .unwrap()
            .starts_with(lab.spool().join("doneq"))
    );
    assert_eq!(lab.qfile_field(done, "returned").as_deref(), Some("2"));
    assert_eq!(lab.qfile_field(done, "npages").as_deref(), Some("3"));
    assert_eq!(lab.qfile_field(done, "commid").map(|c| c.len()), Some(9));

    // Requeued with our status text, visible in faxstat.
    let status = lab.qfile_field(busy, "status").unwrap();
    assert!(status.starts_with("Busy signal detected"), "{status}");
    let shown = lab.wait_for(Duration::from_secs(120), |lab| {
        lab.faxstat(&["-s"]).contains("Busy signal detected")
    });
    assert!(
        shown,
        "faxstat -s does not show our status:\n{}",
        lab.faxstat(&["-s"])
    );

    // failedresponse: faxq failed the job for good.
    let status = lab.qfile_field(failed, "status").unwrap();
    assert!(
        status.starts_with("CALL_REJECTED (retry disabled)"),
        "{status}"
    );
    let done_list = lab.faxstat(&["-d"]);
    assert!(done_list.contains("CALL_REJECTED"), "{done_list}");

    // What went on the wire: one bgapi originate per dial faxq's qfiles count (the busy job's
    // totdials may have grown since the wait ended: faxq can retry it meanwhile).
    let busy_dials = |fs: &FakeFs| {
        fs.originates()
            .iter()
            .filter(|o| {
                o.originate
                    .legs()
                    .first()
                    .is_some_and(|l| l.number == "5551002")
            })
            .count()
    };
    assert!(fs.originates().iter().all(|o| o.background));
    let wire = busy_dials(&fs);
    let counted: usize = lab
        .qfile_field(busy, "totdials")
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    assert!(
        wire == counted || wire == counted + 1,
        "the busy job's totdials ({counted}) against the fake's originates for it ({wire})"
    );
    assert_eq!(fs.originates().len() - wire, 2, "{:#?}", fs.originates());
    let xfer = fs::read_to_string(lab.spool().join("log/xferfaxlog")).unwrap();
    let sends = xfer.lines().filter(|l| l.contains("\tSEND\t")).count();
    assert!(
        sends == 2 + counted || sends == 2 + wire,
        "one SEND record per attempt: {sends} records, {counted} busy dials counted, {wire} on the wire\n{xfer}"
    );
}

/// The job's line in `faxstat -s` (`JID Pri S Owner Number Pages Dials TTS Status`).
fn job_line(lab: &HylafaxLab, job: u32) -> Option<String> {
    lab.faxstat(&["-s"])
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&job.to_string()))
        .map(str::to_string)
}

/// Issue 15, item 3: faxq sees a send as faxsend shows it. The far end takes two pages of
/// three and then holds the call (the fake's `Hang`), so the test looks while the send is
/// running: faxstat shows the job running (`R`) at page 2 of 3, and faxq was told the call,
/// the answer and each page through its FIFO. The call then drops; faxq requeues the job, and
/// its retry (sent at once, as with `faxalter -a now`) resumes at page 3: the job ends done with
/// `npages` 3, not 2 + 3.
#[tokio::test(flavor = "multi_thread")]
async fn faxq_shows_the_running_send_page_by_page_and_the_resumed_count() {
    let number = "5552001";
    let fs = FakeFs::start(FakeConfig::new().number(
        number,
        CallScript::Hang(FaxParams {
            pages: Some(2),
            ..FaxParams::default()
        }),
    ))
    .await;
    let s = setup(&fs);
    let lab = &s.lab;
    let job = lab.submit(number, &document());

    // Held after page 2 until the test acts: what faxstat shows is the send in progress.
    let held = fs
        .wait_for(support::wait::HANG, |fs| {
            fs.published()
                .iter()
                .filter(|e| {
                    e.get_decoded("Event-Subclass").as_deref() == Some("spandsp::txfaxpageresult")
                })
                .count()
                == 2
        })
        .await;
    assert!(held, "the fake never sent 2 pages:\n{}", lab.syslog());
    let running = lab.wait_for(support::wait::HANG, |lab| {
        job_line(lab, job).is_some_and(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(2) == Some(&"R") && f.get(5) == Some(&"2:3")
        })
    });
    assert!(
        running,
        "faxstat does not show job {job} running at page 2 of 3:\n{}\n{}",
        lab.faxstat(&["-s"]),
        lab.syslog()
    );
    assert_eq!(lab.qfile_field(job, "state").as_deref(), Some("6"));
    assert_eq!(lab.qfile_field(job, "npages").as_deref(), Some("2"));
    // faxq received the call, the answer and both pages from fsfaxsend (its FIFO trace).
    let told = |msg: &str| lab.syslog().contains(&format!("*{job}:{msg}"));
    let heard = lab.wait_for(support::wait::HANG, |_| {
        told("c") && told("C") && lab.syslog().matches(&format!("*{job}:d")).count() == 2
    });
    assert!(
        heard,
        "faxq's trace lacks the job messages:\n{}",
        lab.syslog()
    );

    // The call drops; the retry meets a far end that takes every page.
    fs.set_number_script(number, CallScript::fax_ok());
    let uuid = fs.active_calls().pop().expect("the held call");
    assert!(fs.hang_up_call(&uuid, "NORMAL_CLEARING"));
    let requeued = lab.wait_for(support::wait::HANG, |lab| {
        lab.qfile_field(job, "state").as_deref() == Some("3")
    });
    assert!(requeued, "job not requeued:\n{}", lab.syslog());
    assert_eq!(lab.qfile_field(job, "npages").as_deref(), Some("2"));
    let fax = lab.qfile_field(job, "fax").unwrap_or_default();
    assert!(
        fax.starts_with("2:"),
        "resumes at the third page: fax:{fax}"
    );

    lab.send_now(job);
    // What fsfaxd does after a send (fsfaxsend's SR): the modem is announced ready again, which
    // pokes faxq's scheduler. faxq runs its scheduler at most once a second and drops a poke that
    // comes within that second (CI saw the resubmitted job sit "ready" for 2 minutes), so the
    // announcement is repeated until faxq has picked the job (active, 6) or finished it.
    let mut poked: Option<std::time::Instant> = None;
    let done = lab.wait_for(support::wait::HANG, |lab| {
        let state = lab.qfile_field(job, "state");
        let due = poked.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(2));
        let waiting = !matches!(state.as_deref(), Some("6" | "7" | "8"));
        if waiting && due {
            lab.ready();
            poked = Some(std::time::Instant::now());
        }
        state.as_deref() == Some("7")
    });
    assert!(done, "the retry did not finish the job:\n{}", lab.syslog());
    assert_eq!(lab.qfile_field(job, "npages").as_deref(), Some("3"));
    assert_eq!(lab.qfile_field(job, "tottries").as_deref(), Some("2"));
    let originates = fs.originates();
    assert_eq!(
        originates.last().unwrap().var("fax_start_page").as_deref(),
        Some("2"),
        "the retry starts at the third page"
    );
    // Like faxsend, the done job keeps no document to send, and faxq was told it went.
    assert_eq!(lab.qfile_field(job, "fax"), None);
    assert!(told("D"), "no D for the document:\n{}", lab.syslog());
    let shown = lab.faxstat(&["-d"]);
    assert!(
        shown
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&job.to_string()) && l.contains("3:3")),
        "{shown}"
    );
}
