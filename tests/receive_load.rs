//! Many receptions at once: every call is its own task and shares nothing that can collide.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use support::fakefs::{CallSetup, FakeCall, RxScript, T38};
use support::fsfaxd::{Fsfaxd, wait, wait_async};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_receptions() {
    const N: usize = 200;
    let d = Fsfaxd::start(4, "");
    let mut calls = Vec::new();
    for i in 0..N {
        let setup = CallSetup {
            caller_number: format!("49{i:05}"),
            script: RxScript::RxOk {
                pages: 1 + (i % 3) as u32,
                t38: T38::Negotiated,
            },
            ..CallSetup::default()
        };
        calls.push(FakeCall::connect(d.addr, setup).await.unwrap());
    }
    let t = Duration::from_secs(120);
    assert!(
        wait_async(t, || d.faxrcvd_runs().len() >= N).await,
        "{} of {N} faxrcvd runs\n{}",
        d.faxrcvd_runs().len(),
        d.log()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for c in &calls {
        assert!(c.wait_finished(t).await);
    }
    let runs = d.faxrcvd_runs();
    assert_eq!(runs.len(), N, "each reception reaches faxrcvd once");
    let commids: HashSet<&str> = runs.iter().filter_map(|l| l.split(' ').nth(1)).collect();
    assert_eq!(commids.len(), N, "no commid twice");
    let files: HashSet<&str> = runs.iter().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(files.len(), N, "no recvq file twice");
    for f in &files {
        assert!(d.pages(f).is_some_and(|p| (1..=3).contains(&p)), "{f}");
    }
    assert!(wait(t, || d.xferfaxlog().len() == N));
    let logged: HashSet<String> = d.xferfaxlog().iter().map(|r| r[2].clone()).collect();
    assert_eq!(logged.len(), N);
    // Every modem is idle again, the journal is empty, and overflow calls were received too.
    for m in 0..4 {
        let name = format!("freeswitch{m}");
        assert!(wait(t, || d.status(&name) == "Running and idle"), "{name}");
    }
    assert!(d.journal().is_empty());
    let devices: HashSet<String> = d.xferfaxlog().iter().map(|r| r[3].clone()).collect();
    assert!(devices.contains("freeswitch0"));
    assert!(
        devices.iter().all(|dv| dv.starts_with("freeswitch")),
        "{devices:?}"
    );
}
