//! Several FreeSWITCH nodes for sending (`[freeswitch] socket` repeated, issue 16): fsfaxsend
//! moves to the next node only when a node cannot take the call at all, never after an
//! originate reached the destination; the node is named in the session log and the status;
//! a node found down is remembered in the spool; `spread` is stable per job; and a node that
//! sees the spool at another path gets the document under that path.

mod support;

use std::path::Path;

use support::fakefs::{CallScript, DropPoint, FakeConfig, FakeFs};
use support::send::SendEnv;
use support::wait::free_port;

/// A node where nothing listens (a port the OS just handed out and took back).
fn dead_node() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Two nodes: `first` as `socket`, the fake as a `node`.
fn two_nodes(first: &str, second: &FakeFs, extra: &[&str]) -> SendEnv {
    let env = SendEnv::new(first);
    let mut fs_lines = vec![format!("node = {}", second.addr())];
    fs_lines.extend(extra.iter().map(|s| (*s).to_owned()));
    let lines: Vec<&str> = fs_lines.iter().map(String::as_str).collect();
    env.write_config(&lines, &[], &[]);
    env
}

#[tokio::test]
async fn a_node_that_is_down_is_skipped_and_remembered() {
    let node2 = FakeFs::start(FakeConfig::new()).await;
    let node1 = dead_node();
    let env = two_nodes(&node1, &node2, &[]);
    env.qfile(1, "0401234", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(1).await, 2);
    assert_eq!(env.field(1, "returned"), "2");
    // One dial: none was counted for the node that could not be reached.
    assert_eq!(env.field(1, "totdials"), "1");
    assert_eq!(node2.originates().len(), 1);
    let log = env.session_log(1);
    assert!(
        log.contains(&format!("FreeSWITCH node {node1} cannot take the call")),
        "{log}"
    );
    assert!(
        log.contains(&format!("Using FreeSWITCH node {}", node2.addr())),
        "{log}"
    );
    assert!(
        log.contains(&format!("on node {}", node2.addr())),
        "the dial names the node: {log}"
    );
    // Remembered in the spool: the next job (another fsfaxsend) goes to node 2 first.
    let marks: Vec<_> = std::fs::read_dir(env.spool.join("tmp"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("fsfax-node-down.")
        })
        .collect();
    assert_eq!(marks.len(), 1, "{marks:?}");
    env.qfile(2, "0402222", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(2).await, 2);
    let log = env.session_log(2);
    assert!(!log.contains("cannot take the call"), "{log}");
    assert_eq!(node2.originates().len(), 2);
}

#[tokio::test]
async fn a_node_refusing_auth_is_skipped_and_a_node_password_is_used() {
    let node1 = FakeFs::start(FakeConfig::new().password("not-ours")).await;
    let node2 = FakeFs::start(FakeConfig::new().password("node2-secret")).await;
    let env = two_nodes(
        &node1.addr().to_string(),
        &node2,
        &[&format!("nodepassword = {} node2-secret", node2.addr())],
    );
    env.qfile(3, "0401234", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(3).await, 2);
    assert!(node1.originates().is_empty());
    assert_eq!(node2.originates().len(), 1);
    assert!(
        node1
            .all_command_lines()
            .iter()
            .any(|l| l == "auth ClueCon"),
        "{:?}",
        node1.all_command_lines()
    );
    assert!(
        node2
            .all_command_lines()
            .iter()
            .any(|l| l == "auth node2-secret"),
        "{:?}",
        node2.all_command_lines()
    );
    assert_eq!(env.field(3, "totdials"), "1");
}

#[tokio::test]
async fn every_gateway_down_on_a_node_moves_to_the_next_with_one_dial() {
    let node1 = FakeFs::start(FakeConfig::new().default_script(CallScript::GatewayDown)).await;
    let node2 = FakeFs::start(FakeConfig::new()).await;
    let env = SendEnv::new(&node1.addr().to_string());
    env.write_config(&[&format!("node = {}", node2.addr())], &[], &["gw1", "gw2"]);
    env.qfile(4, "0401234", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(4).await, 2);
    assert_eq!(node1.originates().len(), 2, "both gateways tried on node 1");
    assert_eq!(node2.originates().len(), 1);
    assert_eq!(env.field(4, "totdials"), "1");
}

/// A destination that answered (busy, rejected) was reached: another node would call it again.
#[tokio::test]
async fn a_busy_or_rejecting_destination_is_never_tried_through_another_node() {
    let node1 = FakeFs::start(
        FakeConfig::new()
            .number("0401111", CallScript::Busy)
            .number("0402222", CallScript::Rejected("CALL_REJECTED".into())),
    )
    .await;
    let node2 = FakeFs::start(FakeConfig::new()).await;
    let env = two_nodes(&node1.addr().to_string(), &node2, &[]);
    env.qfile(5, "0401111", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(5).await, 0, "busy: retry");
    env.qfile(6, "0402222", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(6).await, 1, "rejected: failed");
    assert_eq!(node1.originates().len(), 2);
    assert!(
        node2.originates().is_empty(),
        "{:?}",
        node2.all_command_lines()
    );
}

/// Node 1 dies mid-fax: an honest retry (pages may have gone), not another node at once. The
/// retry, with node 1 gone, goes through node 2.
#[tokio::test]
async fn a_node_dying_mid_call_gives_a_retry_and_the_retry_uses_the_other_node() {
    let node1 = FakeFs::start(
        FakeConfig::new().default_script(CallScript::DropAfter(DropPoint::AfterPage(1))),
    )
    .await;
    let node2 = FakeFs::start(FakeConfig::new()).await;
    let env = two_nodes(&node1.addr().to_string(), &node2, &[]);
    env.qfile(7, "0401234", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(7).await, 0);
    assert_eq!(env.field(7, "returned"), "0");
    assert!(
        node2.originates().is_empty(),
        "never after an originate reached the destination"
    );
    node1.shutdown();
    assert_eq!(env.run(7).await, 2);
    assert_eq!(node2.originates().len(), 1);
    assert_eq!(env.field(7, "returned"), "2");
}

#[tokio::test]
async fn spread_starts_each_job_on_its_own_node_and_a_retry_on_the_same() {
    let node1 = FakeFs::start(FakeConfig::new().number("0409999", CallScript::Busy)).await;
    let node2 = FakeFs::start(FakeConfig::new().number("0409999", CallScript::Busy)).await;
    let env = two_nodes(
        &node1.addr().to_string(),
        &node2,
        &["nodeselection = spread"],
    );
    for job in [10, 11] {
        env.qfile(job, "0409999", &[("test3.tif", 0)], &[]);
        assert_eq!(env.run(job).await, 0);
    }
    // Job 10 starts on node 1, job 11 on node 2 (jobid modulo the nodes).
    assert_eq!(node1.originates().len(), 1);
    assert_eq!(node2.originates().len(), 1);
    // The retry of job 11 goes to node 2 again.
    assert_eq!(env.run(11).await, 0);
    assert_eq!(node1.originates().len(), 1);
    assert_eq!(node2.originates().len(), 2);
}

/// The node sees the spool at /mnt/hylafax-spool: txfax gets the document under that path.
#[tokio::test]
async fn a_node_seeing_the_spool_elsewhere_gets_the_document_under_its_path() {
    let mount = Path::new("/mnt/hylafax-spool");
    let env = SendEnv::new("127.0.0.1:1");
    let node = FakeFs::start(FakeConfig::new().spool_mount(mount, &env.spool)).await;
    let env = SendEnv {
        fs_socket: node.addr().to_string(),
        ..env
    };
    env.write_config(&[&format!("spoolpath = {}", mount.display())], &[], &[]);
    env.qfile(12, "0401234", &[("test3.tif", 0)], &[]);
    assert_eq!(env.run(12).await, 2, "the node found the document");
    let o = node.originates();
    let arg = o[0].originate.app_arg.clone().unwrap();
    assert!(arg.starts_with("/mnt/hylafax-spool/"), "{arg}");
    assert_eq!(env.field(12, "npages"), "3");
}
