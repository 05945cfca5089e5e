//! End to end with a real HylaFAX: `sendfax` queues a job, the real faxq runs the real
//! fsfaxsend as its SendFaxCmd, fsfaxsend talks to the fake FreeSWITCH, and faxq's own view of
//! the job (doneq/sendq, faxstat) shows what happened.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::fakefs::{CallScript, FakeConfig, FakeFs};
use support::hylafax::HylafaxLab;

/// A lab whose SendFaxCmd is fsfaxsend with a configuration pointing at `fs`.
struct Setup {
    lab: HylafaxLab,
    _cmd_dir: tempfile::TempDir,
}

fn setup(fs: &FakeFs) -> Setup {
    let cmd_dir = tempfile::Builder::new()
        .prefix("fsfax-sendcmd-")
        .tempdir()
        .unwrap();
    fs::set_permissions(cmd_dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let wrapper = cmd_dir.path().join("sendfaxcmd");
    let conf = cmd_dir.path().join("fsfax.conf");
    // faxq gives SendFaxCmd no arguments of its own; `bash -p` keeps faxq's euid (uucp).
    fs::write(
        &wrapper,
        format!(
            "#!/bin/bash -p\nexec {} -c {} \"$@\"\n",
            env!("CARGO_BIN_EXE_fsfaxsend"),
            conf.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let lab = HylafaxLab::start(3, &wrapper);
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
    Setup {
        lab,
        _cmd_dir: cmd_dir,
    }
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
    let settled = lab.wait_for(Duration::from_secs(300), |lab| {
        state(lab, done).as_deref() == Some("7")
            && state(lab, failed).as_deref() == Some("8")
            && lab.qfile_field(busy, "totdials").as_deref() == Some("1")
            && state(lab, busy).as_deref() == Some("3")
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
    let faxstat = lab.faxstat(&["-s"]);
    assert!(
        faxstat.contains("Busy signal detected"),
        "faxstat -s does not show our status:\n{faxstat}"
    );

    // failedresponse: faxq failed the job for good.
    let status = lab.qfile_field(failed, "status").unwrap();
    assert!(
        status.starts_with("CALL_REJECTED (retry disabled)"),
        "{status}"
    );
    let done_list = lab.faxstat(&["-d"]);
    assert!(done_list.contains("CALL_REJECTED"), "{done_list}");

    // What went on the wire: three bgapi originates, one per job.
    assert_eq!(fs.originates().len(), 3);
    assert!(fs.originates().iter().all(|o| o.background));
    let xfer = fs::read_to_string(lab.spool().join("log/xferfaxlog")).unwrap();
    assert_eq!(
        xfer.lines().filter(|l| l.contains("\tSEND\t")).count(),
        3,
        "{xfer}"
    );
}
