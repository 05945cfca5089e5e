//! fsfax's FreeSWITCH simulator, for `scripts/demo.sh`: the fake FreeSWITCH the integration
//! tests use (`tests/support/fakefs`), replaying the Event Socket exchanges captured from a real
//! FreeSWITCH 1.10.12 with mod_spandsp. It is NOT a FreeSWITCH: no SIP, no audio, no T.30; the
//! pages it "receives" or "sends" are made up from the captures.
//!
//! ```text
//! fs_simulator serve ADDR_FILE   inbound Event Socket (password ClueCon) on 127.0.0.1:<free
//!                                port>, written to ADDR_FILE; every originate ends in a
//!                                3-page fax sent; runs until SIGTERM/SIGINT
//! fs_simulator call FSFAXD_ADDR  one inbound fax call to fsfaxd (its `socket ... async full`
//!                                side): 3 pages from <4711> "sender" to 5000
//! ```

#[allow(dead_code, unused_imports)]
#[path = "../tests/support/fakefs/mod.rs"]
mod fakefs;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use fakefs::{CallSetup, FakeCall, FakeConfig, FakeFs};
use tokio::signal::unix::{SignalKind, signal};

/// How long one simulated call may take before the simulator gives up on it.
const CALL_LIMIT: Duration = Duration::from_secs(60);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", file] => serve(file).await,
        ["call", addr] => match addr.parse::<SocketAddr>() {
            Ok(addr) => call(addr).await,
            Err(e) => usage(&format!("{addr}: {e}")),
        },
        _ => usage("expected `serve ADDR_FILE` or `call FSFAXD_ADDR`"),
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("fs_simulator: {problem}");
    ExitCode::from(2)
}

async fn serve(file: &str) -> ExitCode {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("fs_simulator: cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    let fs = FakeFs::start(FakeConfig::new()).await;
    if let Err(e) = std::fs::write(file, format!("{}\n", fs.addr())) {
        eprintln!("fs_simulator: cannot write {file}: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!(
        "fs_simulator: simulated FreeSWITCH Event Socket on {} (password ClueCon)",
        fs.addr()
    );
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    for o in fs.originates() {
        eprintln!(
            "fs_simulator: originate {}",
            o.var("origination_uuid").unwrap_or_default()
        );
    }
    ExitCode::SUCCESS
}

async fn call(addr: SocketAddr) -> ExitCode {
    let setup = CallSetup {
        // Real time, roughly: the demo shows a call, not a test's fast-forward.
        time_scale: 0.01,
        ..CallSetup::default()
    };
    let c = match FakeCall::connect(addr, setup).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fs_simulator: cannot reach fsfaxd at {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !c.wait_finished(CALL_LIMIT).await {
        eprintln!("fs_simulator: the call to {addr} did not end within {CALL_LIMIT:?}");
        return ExitCode::FAILURE;
    }
    let apps: Vec<String> = c.executed().into_iter().map(|(app, _)| app).collect();
    eprintln!(
        "fs_simulator: call from <4711> to 5000 ended; fsfaxd ran: {}",
        apps.join(", ")
    );
    ExitCode::SUCCESS
}
