//! fsfaxd serving the calls of two FreeSWITCH nodes (issue 16, item 2): what it asks on
//! behalf of a call goes to the node the call came from, and recovery after a restart asks
//! every node. The second fake node lives on its own loopback address (127.0.0.2), and its
//! calls come from there, as a second media server's would.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use nix::sys::signal::Signal;
use support::fakefs::{CallSetup, FakeCall, FakeConfig, FakeFs, RxScript, T38};
use support::fsfaxd::{Fsfaxd, wait_async};

/// Waits end as soon as what they wait for holds; this only bounds a hang.
const T: Duration = support::wait::HANG;

const NODE2_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// fsfaxd with `node1` as `socket` and `node2` as a `node`, both allowed to connect.
fn daemon(modems: u32, node1: &FakeFs, node2: &FakeFs, extra: &str) -> Fsfaxd {
    Fsfaxd::start(
        modems,
        &format!(
            "allowedpeers = 127.0.0.0/8\n{extra}\n[freeswitch]\nsocket = {}\nnode = {}\n\
             password = ClueCon\nsoftmodemfallback = true",
            node1.addr(),
            node2.addr()
        ),
    )
}

fn db_commands(fs: &FakeFs) -> Vec<String> {
    fs.all_command_lines()
        .into_iter()
        .filter(|l| l.starts_with("api db "))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_asks_the_node_it_came_from_for_the_fallback_list() {
    // Two nodes with their own mod_db each: the caller is listed on node 2 only.
    let node1 = FakeFs::start(FakeConfig::new()).await;
    let node2 = FakeFs::start(FakeConfig::new().listen_on(NODE2_IP)).await;
    assert_eq!(node2.addr().ip(), NODE2_IP);
    node2.db().seed(
        "fallback",
        "4711",
        &chrono::Utc::now().timestamp().to_string(),
    );
    let d = daemon(2, &node1, &node2, "enablet38 = true\nrequestt38 = true");
    let setup = |fs: &FakeFs| CallSetup {
        switch: Some(fs.switch()),
        ..CallSetup::default()
    };
    // Both at once.
    let (c1, c2) = tokio::join!(
        FakeCall::connect(d.addr, setup(&node1)),
        FakeCall::connect(d.addr, setup(&node2))
    );
    let (c1, c2) = (c1.unwrap(), c2.unwrap());
    assert!(
        wait_async(T, || d.faxrcvd_runs().len() == 2).await,
        "{}",
        d.log()
    );
    let t38 = |c: &FakeCall| {
        c.log()
            .vars
            .iter()
            .find(|(k, _)| k == "fax_enable_t38")
            .map(|(_, v)| v.clone())
    };
    assert_eq!(t38(&c1).as_deref(), Some("true"), "{:?}", c1.log().vars);
    assert_eq!(
        t38(&c2).as_deref(),
        Some("false"),
        "node 2 lists the caller: {:?}",
        c2.log().vars
    );
    // Each node was asked about its own call only.
    let asked1 = db_commands(&node1);
    let asked2 = db_commands(&node2);
    assert!(
        asked1.iter().any(|l| l.contains("select/fallback/4711")),
        "{asked1:?}"
    );
    assert!(
        asked2.iter().any(|l| l.contains("select/fallback/4711")),
        "{asked2:?}"
    );
    let selects = |a: &[String]| a.iter().filter(|l| l.contains("select/fallback/")).count();
    assert_eq!(selects(&asked1), 1, "{asked1:?}");
    assert_eq!(selects(&asked2), 1, "{asked2:?}");
    assert!(
        d.log()
            .contains(&format!("on FreeSWITCH node {}", node2.addr())),
        "{}",
        d.log()
    );
    // Their lists differ, and fsfaxd says so, naming the node and the fix.
    let warning = format!(
        "FreeSWITCH node {} does not share the T.38 fallback list with {}",
        node2.addr(),
        node1.addr()
    );
    assert!(
        wait_async(T, || d.log().contains(&warning)).await,
        "{}",
        d.log()
    );
    assert!(d.log().contains("restart FreeSWITCH on it"));
    let (_, status) = d.status_cmd(&[]);
    assert!(
        status.contains("does not share the T.38 fallback list"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_one_db_raise_no_warning_and_a_listed_caller_gets_audio_on_both() {
    let db = support::fakefs::FakeDb::default();
    let node1 = FakeFs::start(FakeConfig::new().shared_db(db.clone())).await;
    let node2 = FakeFs::start(FakeConfig::new().listen_on(NODE2_IP).shared_db(db.clone())).await;
    db.seed(
        "fallback",
        "4711",
        &chrono::Utc::now().timestamp().to_string(),
    );
    let d = daemon(2, &node1, &node2, "enablet38 = true\nrequestt38 = true");
    // The start-up check ran: the probe was read through node 2.
    assert!(
        wait_async(T, || node2
            .all_command_lines()
            .iter()
            .any(|l| l.starts_with("api db select/fsfax-probe/")))
        .await,
        "{}",
        d.log()
    );
    for fs in [&node1, &node2] {
        let c = FakeCall::connect(
            d.addr,
            CallSetup {
                switch: Some(fs.switch()),
                ..CallSetup::default()
            },
        )
        .await
        .unwrap();
        assert!(c.wait_finished(T).await);
        let vars = c.log().vars;
        assert!(
            vars.contains(&("fax_enable_t38".into(), "false".into())),
            "{vars:?}"
        );
    }
    assert!(
        wait_async(T, || d.faxrcvd_runs().len() == 2).await,
        "{}",
        d.log()
    );
    assert!(!d.log().contains("does not share"), "{}", d.log());
    assert!(db.rows().iter().all(|(realm, _, _)| realm != "fsfax-probe"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_receptions_running_on_both_nodes_follows_each_on_its_node() {
    let node1 = FakeFs::start(FakeConfig::new()).await;
    let node2 = FakeFs::start(FakeConfig::new().listen_on(NODE2_IP)).await;
    let mut d = daemon(2, &node1, &node2, "");
    let setup = |fs: &FakeFs, caller: &str| CallSetup {
        caller_number: caller.into(),
        stall_after_pages: Some(1),
        switch: Some(fs.switch()),
        spandsp_tiff: true,
        script: RxScript::RxOk {
            pages: 3,
            t38: T38::Negotiated,
        },
        ..CallSetup::default()
    };
    let c1 = FakeCall::connect(d.addr, setup(&node1, "0401111"))
        .await
        .unwrap();
    let c2 = FakeCall::connect(d.addr, setup(&node2, "0402222"))
        .await
        .unwrap();
    let page_one = |c: &FakeCall| {
        c.log()
            .fired
            .iter()
            .any(|e| e.subclass() == "spandsp::rxfaxpageresult")
    };
    for c in [&c1, &c2] {
        assert!(c.wait_for(T, |_| page_one(c)).await);
    }
    assert!(
        wait_async(T, || d.journal().len() == 2).await,
        "{}",
        d.log()
    );
    d.signal(Signal::SIGKILL);
    assert_eq!(d.wait_exit(T), None, "killed by a signal");
    for c in [&c1, &c2] {
        assert!(
            c.wait_finished(T).await,
            "the socket to the dead fsfaxd closed"
        );
    }
    assert!(node1.active_calls().contains(&c1.uuid().to_owned()));
    assert!(node2.active_calls().contains(&c2.uuid().to_owned()));

    d.spawn();
    // Each call is followed on the node that has it: filtered there.
    let followed = |fs: &FakeFs, c: &FakeCall| {
        fs.all_command_lines()
            .contains(&format!("filter Unique-ID {}", c.uuid()))
    };
    assert!(
        wait_async(T, || followed(&node1, &c1) && followed(&node2, &c2)).await,
        "node 1: {:?}\nnode 2: {:?}\n{}",
        node1.all_command_lines(),
        node2.all_command_lines(),
        d.log()
    );
    assert!(
        wait_async(T, || d.status("freeswitch0") == "Receiving facsimile"
            && d.status("freeswitch1") == "Receiving facsimile")
        .await,
        "{}",
        d.log()
    );
    assert!(d.faxrcvd_runs().is_empty(), "{:?}", d.faxrcvd_runs());
    c1.resume();
    c2.resume();
    assert!(
        wait_async(T, || d.faxrcvd_runs().len() == 2).await,
        "{}",
        d.log()
    );
    assert!(
        wait_async(T, || d.journal().is_empty()).await,
        "{}",
        d.log()
    );
    // Each delivered once, with its three pages and its own caller.
    let recv: Vec<Vec<String>> = d
        .xferfaxlog()
        .into_iter()
        .filter(|r| r.get(1).map(String::as_str) == Some("RECV"))
        .collect();
    assert_eq!(recv.len(), 2, "{recv:?}");
    for r in &recv {
        assert_eq!(r[10], "3", "pages: {r:?}");
    }
    let runs = d.faxrcvd_runs();
    let files: std::collections::HashSet<&str> =
        runs.iter().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(files.len(), 2, "two documents, one run each: {runs:?}");
    assert!(
        d.log().contains("still running on this FreeSWITCH node"),
        "{}",
        d.log()
    );
}

/// A node that mounts the spool elsewhere (NFS on another host) is given the rxfax path under
/// `[freeswitch] spoolpath`, and the document it writes there is the one delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_seeing_the_spool_elsewhere_gets_the_rxfax_path_under_its_mount() {
    let theirs = format!("/srv/fsfax-test-{}", uuid::Uuid::new_v4().simple());
    let d = Fsfaxd::start(
        1,
        &format!("\n[freeswitch]\nspoolpath = {theirs}\npassword = ClueCon"),
    );
    let node = FakeFs::start(FakeConfig::new().spool_mount(theirs.as_ref(), &d.spool())).await;
    let c = FakeCall::connect(
        d.addr,
        CallSetup {
            switch: Some(node.switch()),
            ..CallSetup::default()
        },
    )
    .await
    .unwrap();
    assert!(
        wait_async(T, || d.faxrcvd_runs().len() == 1).await,
        "{}",
        d.log()
    );
    let given = c.log().rxfax_path.expect("rxfax ran");
    assert!(
        given.starts_with(&theirs),
        "rxfax path as the node sees the spool: {}",
        given.display()
    );
    let rel = given.strip_prefix(&theirs).unwrap();
    assert!(rel.starts_with("recvq"), "{}", rel.display());
    let run = &d.faxrcvd_runs()[0];
    assert!(
        run.starts_with(&rel.to_string_lossy().to_string()),
        "faxrcvd gets the spool's own path: {run}"
    );
    let rec = d
        .xferfaxlog()
        .into_iter()
        .find(|r| r.get(1).map(String::as_str) == Some("RECV"))
        .unwrap();
    assert_eq!(rec[10], "3", "the three pages the node wrote: {rec:?}");
}
