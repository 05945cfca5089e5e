//! fsfaxsend, the real binary, on real qfiles against the fake FreeSWITCH: every test asserts
//! the qfile fields faxq reads, the exit status, the xferfaxlog line and what went on the wire.

mod support;

use std::fs;
use std::time::Duration;

use support::fakefs::{CallScript, DropPoint, FakeConfig, FakeFs, FaxParams};
use support::send::{MODEM, SendEnv, wait_exit};
use support::wait::{HANG, wait_async};

async fn fake(cfg: FakeConfig) -> FakeFs {
    FakeFs::start(cfg).await
}

#[tokio::test]
async fn t38_fax_is_done_with_every_field_faxq_reads() {
    let fs = fake(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    let fifo = env.modem_fifo();
    env.qfile(1, "0401234", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(1).await, 2);
    assert_eq!(
        support::send::fifo_got(&fifo, 6).await,
        b"SB\0SR\0",
        "fsfaxd is told begin and end"
    );
    assert_eq!(env.field(1, "returned"), "2");
    assert_eq!(env.field(1, "status"), "");
    assert_eq!(env.field(1, "npages"), "3");
    assert_eq!(env.field(1, "totdials"), "1");
    assert_eq!(env.field(1, "ndials"), "0");
    assert_eq!(env.field(1, "tottries"), "1");
    assert_eq!(env.field(1, "signalrate"), "14400 bit/s");
    assert_eq!(env.field(1, "csi"), "+1 337");
    let commid = env.field(1, "commid");
    assert_eq!(commid.len(), 9, "9-digit HylaFAX commid: {commid}");
    assert!(env.spool.join(format!("log/c{commid}")).exists());
    // HylaFAX's next number, then this boot's reserved block (issue 13).
    assert_eq!(
        fs::read_to_string(env.spool.join("log/seqf")).unwrap(),
        support::seqf_reserved_on_this_boot(2, 101)
    );

    let o = fs.originates();
    assert_eq!(o.len(), 1);
    assert!(o[0].background, "bgapi originate, never a blocking api");
    assert_eq!(o[0].originate.legs().len(), 1);
    assert_eq!(o[0].var("fax_enable_t38").as_deref(), Some("true"));
    assert_eq!(
        o[0].var("origination_caller_id_number").as_deref(),
        Some("4711")
    );
    assert_eq!(o[0].var("fax_start_page"), None);
    assert_eq!(o[0].originate.legs()[0].gateway, "gw1");

    let log = env.xferfaxlog();
    assert_eq!(log.len(), 1);
    let rec = &log[0];
    assert_eq!(rec.len(), 19, "{rec:?}");
    assert_eq!(rec[1], "SEND");
    assert_eq!(rec[2], commid);
    assert_eq!(rec[3], MODEM);
    assert_eq!(rec[4], "1");
    assert_eq!(rec[7], "\"0401234\"");
    assert_eq!(rec[8], "\"+1 337\"");
    assert_eq!(rec[10], "3");
    assert_eq!(rec[13], "\"\"");
    assert_eq!(env.temp_files(), 0);
}

/// After a crash of the machine, log/seqf may hold an update older than the numbers handed
/// out: the commid resumes at the limit of the block reserved on the earlier boot, so it is
/// never one an earlier attempt used; the block reserved on this boot is durable before the
/// commid reaches the qfile's synced dial count.
#[tokio::test]
async fn after_a_restart_of_the_machine_the_commid_resumes_past_the_reserved_block() {
    let fs = fake(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    fs::write(
        env.spool.join("log/seqf"),
        support::seqf_reserved_on_another_boot(42, 300),
    )
    .unwrap();
    env.qfile(1, "0401234", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(1).await, 2);
    assert_eq!(env.field(1, "commid"), "000000300");
    assert_eq!(env.xferfaxlog()[0][2], "000000300");
    assert!(env.spool.join("log/c000000300").exists());
    assert_eq!(
        fs::read_to_string(env.spool.join("log/seqf")).unwrap(),
        support::seqf_reserved_on_this_boot(301, 400)
    );
    // The next attempt takes the block's next number, no new block.
    env.qfile(2, "0401234", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(2).await, 2);
    assert_eq!(env.field(2, "commid"), "000000301");
    assert_eq!(
        fs::read_to_string(env.spool.join("log/seqf")).unwrap(),
        support::seqf_reserved_on_this_boot(302, 400)
    );
}

/// Without a boot id (no `/proc` to read it from) no block is reserved: the commid's seqf is
/// synced in the background and the dial waits for it, as before issue 13's reservations.
#[tokio::test]
async fn without_a_boot_id_each_commid_is_synced_and_no_block_is_reserved() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test needs root (CI runs the tests as root): it hides the boot id in a mount namespace"
    );
    let fs = fake(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    fs::write(env.spool.join("log/seqf"), "17").unwrap();
    env.qfile(1, "0401234", &[("test3.tif", 0)], &[]);
    let (code, log) = env.run_logged_without_boot_id(1).await;
    assert_eq!(code, 2, "{log}");
    assert_eq!(env.field(1, "returned"), "2");
    assert_eq!(env.field(1, "commid"), "000000017");
    assert_eq!(
        fs::read_to_string(env.spool.join("log/seqf")).unwrap(),
        "18"
    );
    assert!(!log.contains("sync"), "no sync failed: {log}");
    assert_eq!(fs.originates().len(), 1);
}

/// A `log/seqf` that cannot give a commid (here a directory where the file should be): the
/// job is requeued with a status naming the file, and no call is placed or counted.
#[tokio::test]
async fn an_unusable_seqf_requeues_the_job_without_a_dial() {
    let fs = fake(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    fs::create_dir(env.spool.join("log/seqf")).unwrap();
    env.qfile(1, "0401234", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(1).await, 0, "retry later");
    assert_eq!(env.field(1, "returned"), "0");
    let status = env.field(1, "status");
    assert!(
        status.contains("log/seqf"),
        "the status names the file: {status}"
    );
    assert_eq!(env.field(1, "totdials"), "0");
    assert!(fs.originates().is_empty());
}

#[tokio::test]
async fn g711_fax_is_done() {
    let fs = fake(FakeConfig::new().default_script(CallScript::fax_ok_g711())).await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.write_config(&[], &["enablet38 = false", "requestt38 = false"], &[]);
    env.qfile(2, "0402222", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(2).await, 2);
    assert_eq!(env.field(2, "returned"), "2");
    assert_eq!(
        fs.originates()[0].var("fax_enable_t38").as_deref(),
        Some("false")
    );
}

/// With T.38 off in the configuration, a receiver that would take T.38 gets the fax over G.711,
/// as mod_spandsp does with `fax_enable_t38=false`, and the session log says so.
#[tokio::test]
async fn with_t38_disabled_a_t38_receiver_gets_the_fax_over_audio() {
    let fs = fake(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.write_config(&[], &["enablet38 = false", "requestt38 = false"], &[]);
    env.qfile(2, "0402222", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(2).await, 2);
    assert_eq!(env.field(2, "returned"), "2");
    let session = env.session_log(2);
    assert!(session.contains(", T.38 off"), "{session}");
    assert!(!session.contains("T.38 negotiated"), "{session}");
}

/// The same for a fax that fails in training: the negotiation the session log reports is over
/// G.711, not T.38.
#[tokio::test]
async fn with_t38_disabled_a_training_failure_is_logged_as_audio() {
    let fs = fake(FakeConfig::new().default_script(CallScript::TrainingFailure)).await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.write_config(&[], &["enablet38 = false", "requestt38 = false"], &[]);
    env.qfile(2, "0402222", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(2).await, 0);
    assert_eq!(env.field(2, "returned"), "0");
    let session = env.session_log(2);
    assert!(session.contains("NEGOTIATED"), "{session}");
    assert!(session.contains(", T.38 off"), "{session}");
    assert!(!session.contains("T.38 negotiated"), "{session}");
}

#[tokio::test]
async fn several_documents_are_merged_and_sent_from_their_first_unsent_page() {
    let fs = fake(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.qfile(3, "0403333", &[("test3.tif", 2), ("test12.tif", 10)], &[]);
    assert_eq!(env.run(3).await, 2);
    let o = fs.originates();
    let path = o[0].originate.app_arg.clone().unwrap_or_default();
    assert!(
        path.contains("/tmp/fsfaxsend-"),
        "a merged temp file: {path}"
    );
    assert_eq!(env.field(3, "npages"), "3", "1 + 2 pages left to send");
    assert_eq!(
        env.temp_files(),
        0,
        "the merged file is removed after the call"
    );
}

#[tokio::test]
async fn busy_is_a_retry_that_counts_a_dial() {
    let fs = fake(FakeConfig::new().default_script(CallScript::Busy)).await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.qfile(4, "0404444", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(4).await, 0);
    assert_eq!(env.field(4, "returned"), "0");
    assert_eq!(
        env.field(4, "status"),
        "Busy signal detected [gw1: USER_BUSY]"
    );
    assert_eq!(env.field(4, "statuscode"), "1");
    assert_eq!(env.field(4, "totdials"), "1");
    assert_eq!(env.field(4, "ndials"), "1");
    assert_eq!(env.field(4, "tottries"), "0");
    let log = env.xferfaxlog();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0][13], "\"Busy signal detected [gw1: USER_BUSY]\"");
}

#[tokio::test]
async fn failedresponse_cause_fails_the_job() {
    let fs =
        fake(FakeConfig::new().default_script(CallScript::Rejected("CALL_REJECTED".into()))).await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.qfile(5, "0405555", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(5).await, 1);
    assert_eq!(env.field(5, "returned"), "1");
    assert!(
        env.field(5, "status")
            .starts_with("CALL_REJECTED (retry disabled)")
    );
    // Never 0 ("Call successful") for a failure (issue 12, item 9): E006 Unknown problem.
    assert_eq!(env.field(5, "statuscode"), "6");
}

#[tokio::test]
async fn first_gateway_down_fails_over_to_the_second_with_a_fresh_uuid() {
    let fs = fake(
        FakeConfig::new()
            .gateway("gw1", CallScript::GatewayDown)
            .gateway("gw2", CallScript::fax_ok()),
    )
    .await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.write_config(&[], &[], &["gw1", "gw2"]);
    env.qfile(6, "0406666", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(6).await, 2);
    let o = fs.originates();
    assert_eq!(o.len(), 2, "one originate per gateway");
    assert_eq!(o[0].originate.legs()[0].gateway, "gw1");
    assert_eq!(o[1].originate.legs()[0].gateway, "gw2");
    assert_ne!(o[0].var("origination_uuid"), o[1].var("origination_uuid"));
    assert!(o.iter().all(|r| r.originate.legs().len() == 1));
    // One attempt, one dial, however many gateways it took (issue 12, item 8).
    assert_eq!(env.field(6, "totdials"), "1");
    assert_eq!(env.field(6, "tottries"), "1");
}

#[tokio::test]
async fn first_gateway_503_fails_over() {
    let fs = fake(
        FakeConfig::new()
            .gateway(
                "gw1",
                CallScript::Rejected("NORMAL_TEMPORARY_FAILURE".into()),
            )
            .gateway("gw2", CallScript::fax_ok()),
    )
    .await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.write_config(&[], &[], &["gw1", "gw2"]);
    env.qfile(7, "0407777", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(7).await, 2);
    assert_eq!(fs.originates().len(), 2);
}

#[tokio::test]
async fn both_gateways_failing_names_each_attempt() {
    let fs = fake(
        FakeConfig::new()
            .gateway("gw1", CallScript::Unreachable)
            .gateway("gw2", CallScript::GatewayDown),
    )
    .await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.write_config(&[], &[], &["gw1", "gw2"]);
    env.qfile(8, "0408888", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(8).await, 0);
    let status = env.field(8, "status");
    assert!(
        status.contains("gw1: NORMAL_TEMPORARY_FAILURE") && status.contains("gw2: GATEWAY_DOWN"),
        "{status}"
    );
    assert_eq!(env.field(8, "totdials"), "1", "one attempt, one dial");
    assert_eq!(env.field(8, "ndials"), "1");
}

#[tokio::test]
async fn busy_destination_does_not_fail_over() {
    let fs = fake(
        FakeConfig::new()
            .gateway("gw1", CallScript::Busy)
            .gateway("gw2", CallScript::fax_ok()),
    )
    .await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.write_config(&[], &[], &["gw1", "gw2"]);
    env.qfile(9, "0409999", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(9).await, 0);
    assert_eq!(
        fs.originates().len(),
        1,
        "an answer from the destination is final"
    );
}

#[tokio::test]
async fn unknown_gateway_is_a_retry_naming_it() {
    let fs = fake(FakeConfig::new().default_script(CallScript::InvalidGateway)).await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.qfile(10, "0401010", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(10).await, 0);
    assert!(env.field(10, "status").contains("INVALID_GATEWAY"));
}

#[tokio::test]
async fn freeswitch_down_is_a_retry_that_burns_no_dial() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = SendEnv::new(&format!("127.0.0.1:{port}"));
    let fifo = env.modem_fifo();
    env.qfile(11, "0401111", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(11).await, 0);
    assert_eq!(
        support::send::fifo_got(&fifo, 6).await,
        b"SB\0SR\0",
        "the modem is freed again"
    );
    assert_eq!(env.field(11, "returned"), "0");
    assert!(env.field(11, "status").contains("Cannot reach FreeSWITCH"));
    assert_eq!(env.field(11, "statuscode"), "6", "never 0 for a failure");
    assert_eq!(env.field(11, "totdials"), "0");
    assert!(env.xferfaxlog().is_empty());
}

#[tokio::test]
async fn freeswitch_answering_nothing_times_out_and_kills_the_call() {
    let fs = fake(FakeConfig::new().default_script(CallScript::Silent)).await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.qfile(12, "0401212", &[("test3.tif", 0)], &[]);
    env.write_config(&["commandtimeout = 2s"], &[], &[]);
    assert_eq!(env.run(12).await, 0);
    let status = env.field(12, "status");
    assert!(status.contains("no reply"), "{status}");
    let uuid = fs.originates()[0].var("origination_uuid").unwrap();
    assert!(
        fs.kills().contains(&uuid),
        "the call FreeSWITCH may be placing is killed"
    );
}

#[tokio::test]
async fn connection_dropped_mid_fax_is_never_reported_done() {
    let fs = fake(
        FakeConfig::new()
            .default_script(CallScript::DropAfter(DropPoint::AfterPage(1)))
            .time_scale(0.01),
    )
    .await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.qfile(13, "0401313", &[("test12.tif", 0)], &[]);
    let code = env.run(13).await;
    assert_eq!(code, 0);
    assert_eq!(env.field(13, "returned"), "0");
    assert!(
        env.field(13, "status").contains("FreeSWITCH"),
        "{}",
        env.field(13, "status")
    );
}

#[tokio::test]
async fn sigterm_mid_fax_kills_the_call_and_records_progress_for_the_retry() {
    // The far end takes 4 pages, then the call stands still until it is killed: the signal
    // arrives mid-fax whatever the machine's speed.
    let fs = fake(
        FakeConfig::new().default_script(CallScript::Hang(FaxParams {
            pages: Some(4),
            ..FaxParams::default()
        })),
    )
    .await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.qfile(14, "0401414", &[("test12.tif", 0)], &[]);
    let child = env.spawn(14);
    let pid = child.id().unwrap() as i32;
    let paged = fs
        .wait_for(support::send::HANG, |fs| {
            fs.published()
                .iter()
                .filter(|e| {
                    e.get_decoded("Event-Subclass").as_deref() == Some("spandsp::txfaxpageresult")
                })
                .count()
                == 4
        })
        .await;
    assert!(
        paged,
        "the fake never sent its 4 pages: {:?}",
        fs.all_command_lines()
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let code = wait_exit(child, support::send::HANG).await;
    assert_eq!(code, 0, "a signal is a retry, never done or failed");
    assert_eq!(env.field(14, "returned"), "0");
    assert!(!fs.kills().is_empty(), "the call was killed");
    let first = env.fields(14, "fax")[0].clone();
    let dir: u32 = first.split(':').next().unwrap().parse().unwrap();
    assert_eq!(dir, 4, "progress recorded: fax:{first}");
    let npages: u32 = env.field(14, "npages").parse().unwrap();
    assert_eq!(npages, dir);

    // The retry, on a switch whose far end takes every page, resumes at the first unsent one.
    let fs = fake(FakeConfig::new()).await;
    let conf = fs::read_to_string(&env.conf).unwrap().replace(
        &format!("socket = {}", env.fs_socket),
        &format!("socket = {}", fs.addr()),
    );
    fs::write(&env.conf, conf).unwrap();
    let code = env.run(14).await;
    assert_eq!(code, 2);
    let o = fs.originates();
    assert_eq!(
        o.last().unwrap().var("fax_start_page"),
        Some(dir.to_string())
    );
    assert_eq!(env.field(14, "npages"), "12");
}

#[tokio::test]
async fn mid_fax_hangup_by_the_receiver_is_a_retry() {
    let fs = fake(FakeConfig::new().default_script(CallScript::MidFaxHangup {
        after_pages: 1,
        t38: true,
    }))
    .await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.qfile(15, "0401515", &[("test12.tif", 0)], &[]);
    assert_eq!(env.run(15).await, 0);
    assert!(
        env.field(15, "status")
            .contains("The call dropped prematurely")
    );
    assert_eq!(env.field(15, "tottries"), "1");
}

#[tokio::test]
async fn missing_document_on_the_switch_side_is_not_done() {
    let fs = fake(FakeConfig::new().default_script(CallScript::FileMissing)).await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.qfile(16, "0401616", &[("test3.tif", 0)], &[]);
    let code = env.run(16).await;
    assert_ne!(code, 2);
    assert_ne!(env.field(16, "returned"), "2");
}

#[tokio::test]
async fn t38_hang_after_the_result_is_hung_up_by_us() {
    let fs = fake(FakeConfig::new().default_script(CallScript::Hang(FaxParams::default()))).await;
    let env = SendEnv::new(&fs.addr().to_string());
    // Only the hard cap ends a call that hangs after its pages.
    env.write_config(&[], &["maxcallduration = 5s"], &[]);
    env.qfile(17, "0401717", &[("test3.tif", 0)], &[]);
    let code = env.run(17).await;
    assert!(!fs.kills().is_empty(), "we killed the hanging call");
    let pages = fs
        .published()
        .iter()
        .filter(|e| e.get_decoded("Event-Subclass").as_deref() == Some("spandsp::txfaxpageresult"))
        .count();
    // All pages went through before the hang: a retry would deliver it twice. (Should the cap
    // ever come first on a stalled machine, the fake shows fewer pages and a retry is right.)
    let expect = if pages == 3 { 2 } else { 0 };
    assert_eq!(
        code,
        expect,
        "the fake sent {pages} of 3 pages before the kill; status {}",
        env.field(17, "status")
    );
}

#[tokio::test]
async fn hard_cap_on_call_time_kills_the_call() {
    let fs = fake(
        FakeConfig::new()
            .default_script(CallScript::fax_ok())
            .time_scale(0.2),
    )
    .await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.write_config(&[], &["maxcallduration = 1s"], &[]);
    env.qfile(18, "0401818", &[("test12.tif", 0)], &[]);
    assert_eq!(env.run(18).await, 0);
    assert!(env.field(18, "status").contains("maxcallduration"));
    assert!(!fs.kills().is_empty());
}

/// A DynamicConfigOutgoing that creates the first path returned when it starts, then waits
/// until the test creates the second: the job is being prepared in between.
fn dynconfig_until_released(env: &SendEnv) -> (std::path::PathBuf, std::path::PathBuf) {
    dynconfig_until_released_with(env, &[])
}

/// [`dynconfig_until_released`] with these `[freeswitch]` lines in the configuration.
fn dynconfig_until_released_with(
    env: &SendEnv,
    freeswitch: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf) {
    let started = env.spool.join("dynconfig-started");
    let release = env.spool.join("dynconfig-release");
    let line = script(
        env,
        &format!(
            "touch {}; while [ ! -e {} ]; do sleep 0.05; done; echo 'RejectCall: no'",
            started.display(),
            release.display()
        ),
    );
    env.write_config(freeswitch, &[&line, "dynamicconfigtimeout = 200s"], &[]);
    (started, release)
}

fn script(env: &SendEnv, body: &str) -> String {
    let path = env.spool.join("bin/dynconf");
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    format!("dynamicconfig = {}", path.display())
}

#[tokio::test]
async fn dynamicconfig_reject_fails_without_dialling() {
    let fs = fake(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    let line = script(&env, "echo 'RejectCall: yes'");
    env.write_config(&[], &[&line], &[]);
    env.qfile(20, "0402020", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(20).await, 1);
    assert_eq!(
        env.field(20, "status"),
        "Transmission rejected by DynamicConfig"
    );
    assert!(fs.originates().is_empty());
}

#[tokio::test]
async fn dynamicconfig_that_hangs_is_a_retry_saying_why() {
    let fs = fake(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    let line = script(&env, "sleep 100");
    env.write_config(&[], &[&line, "dynamicconfigtimeout = 1s"], &[]);
    env.qfile(21, "0402121", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(21).await, 0);
    assert!(
        env.field(21, "status").contains("DynamicConfig"),
        "{}",
        env.field(21, "status")
    );
    assert!(fs.originates().is_empty());
    assert_eq!(env.field(21, "totdials"), "0");
}

#[tokio::test]
async fn dynamicconfig_garbage_is_ignored_and_its_settings_apply() {
    let fs = fake(
        FakeConfig::new()
            .gateway("gwx", CallScript::fax_ok())
            .gateway("gw1", CallScript::InvalidGateway),
    )
    .await;
    let env = SendEnv::new(&fs.addr().to_string());
    let line = script(
        &env,
        "printf '\\001\\377 garbage\\nno colon here\\nLocalIdentifier: +49 40 999\\nGateway: gwx , \\nFAXNumber: 0815\\n'",
    );
    env.write_config(&[], &[&line], &[]);
    env.qfile(22, "0402222", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(22).await, 2);
    let o = fs.originates();
    assert_eq!(o[0].originate.legs()[0].gateway, "gwx");
    assert_eq!(
        o[0].var("origination_caller_id_number").as_deref(),
        Some("0815")
    );
    let ident = o[0].var("fax_ident").unwrap();
    assert_eq!(support::fakefs::url_decode(&ident), "+49 40 999");
}

#[tokio::test]
async fn hostile_caller_name_and_number_never_reach_the_wire_raw() {
    let fs = fake(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.qfile(23, "0402323", &[("test3.tif", 0)], &[]);
    // A sender name with every dial-string metacharacter (a newline cannot be in a qfile value).
    let q = env.spool.join("sendq/q23");
    let text = fs::read_to_string(&q).unwrap().replace(
        "sender:Alice Sender",
        "sender:Eve' ,x=y}{|^^:a &system(rm) [z]",
    );
    fs::write(&q, text).unwrap();
    assert_eq!(env.run(23).await, 2);
    let o = fs.originates();
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].originate.legs().len(), 1, "{}", o[0].originate.raw);
    assert!(o[0].var("x").is_none(), "no injected variable");
    assert_eq!(o[0].originate.app.as_deref(), Some("txfax"));
    let raw = &o[0].originate.raw;
    assert_eq!(raw.matches("&txfax(").count(), 1, "{raw}");
    assert!(!raw.contains("&system"), "{raw}");

    env.qfile(24, "040 1234;evil", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(24).await, 1);
    assert!(
        env.field(24, "status").contains("Cannot dial"),
        "{}",
        env.field(24, "status")
    );
    assert_eq!(
        fs.originates().len(),
        1,
        "nothing dialled for the bad number"
    );
}

#[tokio::test]
async fn malformed_qfiles_fail_with_a_status_naming_the_problem() {
    let fs = fake(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    // No jobid.
    let q = env.qfile(30, "0403030", &[("test3.tif", 0)], &[]);
    let text = fs::read_to_string(&q).unwrap().replace("jobid:30\n", "");
    fs::write(&q, &text).unwrap();
    assert_eq!(env.run(30).await, 1);
    assert!(
        env.field(30, "status").contains("jobid"),
        "{}",
        env.field(30, "status")
    );
    let after = fs::read_to_string(&q).unwrap();
    assert!(after.contains("external:0403030") && after.contains("fax:0::docq/doc30-0.tif"));

    // A document that is gone.
    env.qfile(31, "0403131", &[("test3.tif", 0)], &[]);
    fs::remove_file(env.spool.join("docq/doc31-0.tif")).unwrap();
    assert_eq!(env.run(31).await, 1);
    assert!(
        env.field(31, "status").contains("doc31-0.tif"),
        "{}",
        env.field(31, "status")
    );

    // A 1 MiB comment line is kept as it is and the job goes out.
    let long = format!("comments:{}", "x".repeat(1 << 20));
    env.qfile(32, "0403232", &[("test3.tif", 0)], &[&long]);
    assert_eq!(env.run(32).await, 2);
    assert_eq!(env.field(32, "comments").len(), 1 << 20);

    // Binary garbage: the file cannot be understood, so it is left byte for byte as it was.
    let q = env.qfile(33, "0403333", &[("test3.tif", 0)], &[]);
    let mut bytes = fs::read(&q).unwrap();
    bytes.extend_from_slice(b"garbage:\x00\x01\x02\n");
    fs::write(&q, &bytes).unwrap();
    assert_eq!(env.run(33).await, 1);
    assert_eq!(fs::read(&q).unwrap(), bytes);
    assert!(fs.originates().len() == 1, "only the 1 MiB job was dialled");
}

#[tokio::test]
async fn t38_failure_remembers_the_station_and_the_next_send_uses_audio() {
    let fs = fake(FakeConfig::new().default_script(CallScript::TrainingFailure)).await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.write_config(&["softmodemfallback = true"], &["callprefix = 0"], &[]);
    env.qfile(40, "401234", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(40).await, 0);
    // The entry, and its line in fsfax's index (see src/fallback.rs).
    let rows = fs.db().rows();
    let realms: Vec<(&str, &str)> = rows
        .iter()
        .map(|(r, k, _)| (r.as_str(), k.as_str()))
        .collect();
    assert_eq!(
        realms,
        [("fallback", "401234"), ("fallback-index-234", "401234")],
        "{rows:?}"
    );

    env.qfile(41, "401234", &[("test3.tif", 0)], &[]);
    env.run(41).await;
    let o = fs.originates();
    let last = o.last().unwrap();
    assert_eq!(last.var("fax_enable_t38").as_deref(), Some("false"));
    assert_eq!(last.var("fax_enable_t38_request").as_deref(), Some("false"));
}

#[tokio::test]
async fn malformed_and_unknown_frames_from_freeswitch_do_not_break_the_send() {
    use support::fakefs::Injection;
    let fs = fake(FakeConfig::new().inject(Injection::unknown_content_type(2))).await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.qfile(50, "0405050", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(50).await, 2);

    let fs = fake(FakeConfig::new().inject(Injection::malformed(2))).await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.qfile(51, "0405151", &[("test3.tif", 0)], &[]);
    // A malformed frame closes the connection: an honest retry, never done.
    assert_eq!(env.run(51).await, 0);
    assert_eq!(env.field(51, "returned"), "0");
}

#[tokio::test]
async fn sigterm_before_dialling_is_an_honest_retry_and_nothing_is_dialled() {
    let fs = fake(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    // DynamicConfigOutgoing says it runs, then goes on until the test has sent the signal: the
    // signal arrives while preparing, whatever the machine's speed.
    let (started, release) = dynconfig_until_released(&env);
    env.qfile(60, "0406060", &[("test3.tif", 0)], &[]);
    let child = env.spawn(60);
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    let deadline = std::time::Instant::now() + support::send::HANG;
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "DynamicConfig never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    fs::write(&release, "").unwrap();
    let code = wait_exit(child, support::send::HANG).await;
    assert_eq!(code, 0, "a signal never reads as done or failed");
    assert_eq!(env.field(60, "returned"), "0");
    assert!(
        env.field(60, "status").contains("SIGTERM"),
        "{}",
        env.field(60, "status")
    );
    assert!(fs.originates().is_empty());
    assert_eq!(env.field(60, "totdials"), "0");
}

/// fsfaxsend connects to FreeSWITCH while it prepares the job. When that connection goes
/// away meanwhile (FreeSWITCH restarting while DynamicConfig runs), nothing is dialled on it,
/// no dial is counted for it, and the fax goes out on a fresh connection.
#[tokio::test]
async fn a_connection_lost_while_preparing_is_replaced_before_the_dial() {
    let fs = fake(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    let (started, release) = dynconfig_until_released(&env);
    env.qfile(61, "0406161", &[("test3.tif", 0)], &[]);
    let child = env.spawn(61);
    // The connection opened ahead has its subscription, and the job is still being prepared.
    let subscribed = || {
        fs.command_lines(0)
            .iter()
            .any(|l| l.starts_with("event plain"))
    };
    assert!(
        wait_async(HANG, || started.exists() && subscribed()).await,
        "no subscribed connection while DynamicConfig ran"
    );
    fs.drop_connection(0);
    // Closed on the fake's side before DynamicConfig ends: fsfaxsend can only find it gone.
    assert!(
        wait_async(HANG, || fs.is_closed(0)).await,
        "the fake never closed connection 0"
    );
    fs::write(&release, "").unwrap();
    let code = wait_exit(child, support::send::HANG).await;
    assert_eq!(code, 2, "{}", env.field(61, "status"));
    assert_eq!(env.field(61, "returned"), "2");
    assert_eq!(env.field(61, "totdials"), "1", "one dial, the one made");
    let originates = fs.originates();
    assert_eq!(originates.len(), 1);
    assert!(originates[0].conn > 0, "dialled on the fresh connection");
    assert!(
        !fs.command_lines(0).iter().any(|l| l.starts_with("bgapi")),
        "nothing sent on the lost connection"
    );
}

/// Lets the waiting DynamicConfig of `job` go on; the fax must then go out, dialled once:
/// returns that originate.
async fn release_and_send(
    fs: &FakeFs,
    env: &SendEnv,
    child: tokio::process::Child,
    release: &std::path::Path,
    job: u32,
) -> support::fakefs::OriginateRecord {
    fs::write(release, "").unwrap();
    let code = wait_exit(child, support::send::HANG).await;
    assert_eq!(code, 2, "{}", env.field(job, "status"));
    let mut originates = fs.originates();
    assert_eq!(originates.len(), 1, "{originates:?}");
    originates.remove(0)
}

/// The current time as mod_db's fallback entries store it.
fn unix_now() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string()
}

/// How often `line` went to FreeSWITCH on connection `conn`.
fn times_sent(fs: &FakeFs, conn: usize, line: &str) -> usize {
    fs.command_lines(conn).iter().filter(|l| *l == line).count()
}

/// fsfaxsend asks mod_db for the station's fallback entry and the destination's overrides on
/// the connection it opens while the job is prepared: the questions are out while
/// DynamicConfig still runs, and the dial uses their answers without asking again.
#[tokio::test]
async fn mod_db_is_asked_while_the_job_is_prepared_and_the_dial_uses_the_answers() {
    let fs = fake(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    let (started, release) = dynconfig_until_released_with(&env, &["softmodemfallback = true"]);
    fs.db().seed("fallback", "0406262", &unix_now());
    fs.db().seed("override-0406262", "fax_ident", "+49406262");
    env.qfile(62, "0406262", &[("test3.tif", 0)], &[]);
    let child = env.spawn(62);
    let (select, list) = (
        "api db select/fallback/0406262",
        "api db list/override-0406262",
    );
    let asked = || times_sent(&fs, 0, select) == 1 && times_sent(&fs, 0, list) == 1;
    assert!(
        wait_async(HANG, || started.exists() && asked()).await,
        "mod_db not asked while DynamicConfig ran: {:?}",
        fs.command_lines(0)
    );
    assert!(
        fs.originates().is_empty(),
        "dialled before DynamicConfig ended"
    );
    let dialled = release_and_send(&fs, &env, child, &release, 62).await;
    // The station is on the fallback list: audio. The override names the ident.
    assert_eq!(dialled.var("fax_enable_t38").as_deref(), Some("false"));
    assert_eq!(dialled.var("fax_ident").as_deref(), Some("+49406262"));
    // Asked once each, on the connection the fax went out on.
    assert_eq!(dialled.conn, 0);
    assert_eq!(
        (times_sent(&fs, 0, select), times_sent(&fs, 0, list)),
        (1, 1)
    );
}

/// A lookup's time runs from the question to its answer. An answer asked ahead that came in
/// time still counts when the job took longer to prepare than a lookup may take: no timeout,
/// no second connection, the station's entry applied.
#[tokio::test]
async fn an_answer_asked_ahead_counts_when_preparing_outlasts_the_lookup_timeout() {
    let fs = fake(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    let (started, release) = dynconfig_until_released_with(
        &env,
        &["softmodemfallback = true", "fallbacklookuptimeout = 1s"],
    );
    let stored = unix_now();
    fs.db().seed("fallback", "0406464", &stored);
    env.qfile(64, "0406464", &[("test3.tif", 0)], &[]);
    let child = env.spawn(64);
    // The fake's answer to the select (its body is the stored time) is on fsfaxsend's socket
    // while DynamicConfig runs (`raw_sent` records what was written).
    let answered = || String::from_utf8_lossy(&fs.raw_sent(0)).contains(&stored);
    assert!(
        wait_async(HANG, || started.exists() && answered()).await,
        "mod_db not asked and answered while DynamicConfig ran"
    );
    // Past the lookup timeout, counted from the question, before the job is prepared.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let dialled = release_and_send(&fs, &env, child, &release, 64).await;
    assert_eq!(dialled.conn, 0, "dialled on the connection opened ahead");
    assert_eq!(dialled.var("fax_enable_t38").as_deref(), Some("false"));
    assert_eq!(times_sent(&fs, 0, "api db select/fallback/0406464"), 1);
}

/// The questions asked ahead are for the qfile's number; when DynamicConfig gives the call
/// another prefix, the dial asks mod_db about the number it dials, and only that answer counts.
#[tokio::test]
async fn a_dynamicconfig_call_prefix_has_mod_db_asked_for_the_number_dialled() {
    let fs = fake(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    let line = script(&env, "echo 'CallPrefix: 9'");
    env.write_config(&[], &[&line], &[]);
    fs.db().seed("override-0406363", "fax_ident", "+49000000");
    fs.db().seed("override-90406363", "fax_ident", "+49406363");
    env.qfile(63, "0406363", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(63).await, 2, "{}", env.field(63, "status"));
    let originates = fs.originates();
    assert_eq!(originates.len(), 1);
    assert!(
        originates[0].originate.raw.contains("90406363"),
        "{}",
        originates[0].originate.raw
    );
    assert_eq!(originates[0].var("fax_ident").as_deref(), Some("+49406363"));
    let conn = originates[0].conn;
    assert_eq!(times_sent(&fs, conn, "api db list/override-90406363"), 1);
    assert_eq!(
        times_sent(&fs, conn, "api db list/override-0406363"),
        1,
        "asked ahead for the qfile's number, its answer unused"
    );
}

#[tokio::test]
async fn documents_are_read_from_faxqs_spool_even_when_spooldir_names_another() {
    let fs = fake(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.qfile(70, "0407070", &[("test3.tif", 0)], &[]);
    // The configuration names a different (existing) spool: logs and seqf go there, but the
    // documents are where faxq (our working directory) keeps them.
    let other = tempfile::tempdir().unwrap();
    for d in ["log", "tmp"] {
        fs::create_dir_all(other.path().join(d)).unwrap();
    }
    let conf = fs::read_to_string(&env.conf).unwrap().replace(
        &format!("spooldir = {}", env.spool.display()),
        &format!("spooldir = {}", other.path().display()),
    );
    fs::write(&env.conf, conf).unwrap();
    assert_eq!(env.run(70).await, 2);
    assert_eq!(env.field(70, "returned"), "2");
    assert!(
        other.path().join("log/seqf").exists(),
        "commids from the configured spool"
    );
}

/// Issue 12, item 10: a send resumed at page 3 of 12 names the job's pages in its session log,
/// not the call's ("SENT PAGE 1..10").
#[tokio::test]
async fn a_resumed_send_logs_the_jobs_page_numbers() {
    let fs = fake(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    // Pages 1-2 went in an earlier attempt: faxq's qfile says so.
    let q = env.qfile(21, "0402121", &[("test12.tif", 2)], &[]);
    let text = fs::read_to_string(&q)
        .unwrap()
        .replace("npages:0\n", "npages:2\n");
    fs::write(&q, text).unwrap();
    assert_eq!(env.run(21).await, 2);
    assert_eq!(env.field(21, "npages"), "12");
    let session = env.session_log(21);
    assert!(
        session.contains("SENT PAGE 3 of 12 (page 1 of this call)"),
        "{session}"
    );
    assert!(
        session.contains("SENT PAGE 12 of 12 (page 10 of this call)"),
        "{session}"
    );
    assert!(!session.contains("SENT PAGE 1 "), "{session}");
    // spandsp's own "10 of 12 pages" read as two pages missing: the result names the job's
    // pages, and the end of the attempt says the job is complete.
    assert!(
        session.contains(
            "pages 3-12 of 12 sent in this call (pages 1-2 in earlier attempts); every page of \
             the job is sent"
        ),
        "{session}"
    );
    assert!(!session.contains("10 of 12 pages"), "{session}");
    assert!(
        session.contains("pages 3-12 of 12 transferred in this attempt; the job is complete"),
        "{session}"
    );
}

/// Issue 12, item 10: after a failover every log line names one call, never two `uuid=`.
#[tokio::test]
async fn after_a_failover_each_log_line_names_one_call() {
    let fs = fake(
        FakeConfig::new()
            .gateway("gw1", CallScript::GatewayDown)
            .gateway("gw2", CallScript::fax_ok()),
    )
    .await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.write_config(&[], &[], &["gw1", "gw2"]);
    env.qfile(41, "0404141", &[("test3.tif", 0)], &[]);
    let (code, log) = env.run_logged(41).await;
    assert_eq!(code, 2, "{log}");
    let o = fs.originates();
    assert_eq!(o.len(), 2);
    let uuids: Vec<String> = o
        .iter()
        .map(|r| r.var("origination_uuid").unwrap())
        .collect();
    for line in log.lines() {
        assert!(
            line.matches("uuid=").count() <= 1,
            "two calls named: {line}"
        );
    }
    // The first leg's lines name the first call, and everything after the answer the second.
    let answered = log
        .lines()
        .position(|l| l.contains("answered"))
        .expect(&log);
    assert!(
        log.lines().nth(answered).unwrap().contains(&uuids[1]),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("originate failed") && l.contains(&uuids[0])),
        "{log}"
    );
    assert!(
        log.lines()
            .skip(answered + 1)
            .filter(|l| l.contains("uuid="))
            .all(|l| l.contains(&uuids[1])),
        "{log}"
    );
}

/// Issue 12, item 10: a FreeSWITCH that shuts down mid-fax (hangup cause SYSTEM_SHUTDOWN) is
/// named in the job's status, and the pages it took are kept for the retry.
#[tokio::test]
async fn a_freeswitch_shutdown_mid_fax_is_named_in_the_status() {
    let fs = fake(
        FakeConfig::new().default_script(CallScript::Hang(FaxParams {
            pages: Some(2),
            ..FaxParams::default()
        })),
    )
    .await;
    let env = SendEnv::new(&fs.addr().to_string());
    env.qfile(42, "0404242", &[("test3.tif", 0)], &[]);
    let child = env.spawn(42);
    let paged = fs
        .wait_for(support::send::HANG, |fs| page_events(fs) == 2)
        .await;
    assert!(paged, "the fake never sent its 2 pages");
    let uuid = fs.active_calls().pop().expect("the call is up");
    assert!(fs.hang_up_call(&uuid, "SYSTEM_SHUTDOWN"));
    assert_eq!(wait_exit(child, support::send::HANG).await, 0, "a retry");
    let status = env.field(42, "status");
    assert!(
        status.contains("FreeSWITCH shut down: SYSTEM_SHUTDOWN"),
        "{status}"
    );
    assert_eq!(env.field(42, "npages"), "2");
    assert!(
        env.fields(42, "fax")[0].starts_with("2::"),
        "resumes at page 3"
    );
    let session = env.session_log(42);
    assert!(session.contains("HANGUP SYSTEM_SHUTDOWN"), "{session}");
    assert!(
        session.contains("pages 1-2 of 3 transferred in this attempt"),
        "{session}"
    );
}

fn page_events(fs: &FakeFs) -> usize {
    fs.published()
        .iter()
        .filter(|e| e.get_decoded("Event-Subclass").as_deref() == Some("spandsp::txfaxpageresult"))
        .count()
}

/// The NUL-separated messages collected from a FIFO once there are at least `n` (bounded by
/// the hang guard).
async fn fifo_messages(got: &std::sync::Mutex<Vec<u8>>, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + support::send::HANG;
    loop {
        let bytes = got.lock().unwrap().clone();
        let msgs: Vec<String> = bytes
            .split(|&b| b == 0)
            .filter(|m| !m.is_empty())
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect();
        if msgs.len() >= n || std::time::Instant::now() >= deadline {
            return msgs;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Issue 15, item 3: faxq is told what faxsend tells it, in faxsend's order: `c` before the
/// dial, `C` at the answer, `d` with the page's FaxSendInfo after each page is in the qfile,
/// and `D` for each document once it has left the qfile.
#[tokio::test]
async fn faxq_hears_the_call_each_page_and_each_document() {
    let fs = fake(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    let faxq = env.faxq_fifo();
    env.qfile(43, "0404343", &[("test3.tif", 0), ("test3.tif", 1)], &[]);
    assert_eq!(env.run(43).await, 2);
    let commid = env.field(43, "commid");
    let msgs = fifo_messages(&faxq, 9).await;
    let kinds: Vec<&str> = msgs.iter().map(|m| &m[..5]).collect();
    assert_eq!(
        kinds,
        [
            "*43:c", "*43:C", "*43:d", "*43:d", "*43:d", "*43:D", "*43:d", "*43:d", "*43:D"
        ],
        "{msgs:#?}"
    );
    // FaxSendInfo: time,npages,params (hex),commid,"file".
    let info = |m: &str| -> (u32, String, String) {
        let mut f = m[5..].splitn(4, ',');
        let _secs = f.next().unwrap();
        let npages = u32::from_str_radix(f.next().unwrap(), 16).unwrap();
        let params = u32::from_str_radix(f.next().unwrap(), 16).unwrap();
        assert_ne!(params & (1 << 21), 0, "Class2Params encoding: {m}");
        let (c, file) = f.next().unwrap().split_once(',').unwrap();
        (npages, c.to_string(), file.to_string())
    };
    let pages: Vec<(u32, String, String)> = msgs.iter().skip(2).map(|m| info(m)).collect();
    let doc = |i: usize| format!("\"docq/doc43-{i}.tif\"");
    let want = [
        (1, doc(0)),
        (2, doc(0)),
        (3, doc(0)),
        (3, doc(0)),
        (4, doc(1)),
        (5, doc(1)),
        (5, doc(1)),
    ];
    for ((n, c, file), (wn, wfile)) in pages.iter().zip(want) {
        assert_eq!((*n, file.as_str()), (wn, wfile.as_str()), "{msgs:#?}");
        assert_eq!(c, &commid);
    }
    // Done: like faxsend, the qfile keeps no document to send.
    assert!(env.fields(43, "fax").is_empty());
    assert_eq!(env.field(43, "npages"), "5");
}
