//! Load run for fsfaxd: N simultaneous inbound calls from the fake FreeSWITCH against the real
//! daemon. Reports fsfaxd's CPU time per call (its own work: user + system time of the fsfaxd
//! process, not of the faxrcvd it runs) and its peak RSS with N calls held at once.
//!
//! `cargo bench --bench receive_load` (N = 100 and 1000; `FSFAX_LOAD_CALLS=200,500` to choose).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::fakefs::{CallSetup, FakeCall, RxScript};
use support::fsfaxd::{Fsfaxd, wait_async};

/// (user, system) CPU seconds of process `pid` itself.
fn cpu_split(pid: i32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    (ticks(11) / hz, ticks(12) / hz)
}

/// user + system CPU seconds of process `pid` itself.
fn cpu_seconds(pid: i32) -> f64 {
    let (user, system) = cpu_split(pid);
    user + system
}

/// `VmHWM` (peak RSS) of `pid` in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn run(n: usize) {
    // Calls stay up after their fax until the caller hangs up, so all n are held at once.
    let d = Fsfaxd::start(8, "hangupafterresult = 1h\nmaxcallduration = 2h");
    let pid = d.pid();
    let cpu_before = cpu_seconds(pid);
    let (user_before, _) = cpu_split(pid);
    let started = Instant::now();
    let mut calls = Vec::with_capacity(n);
    for i in 0..n {
        let setup = CallSetup {
            caller_number: format!("49{i:06}"),
            script: RxScript::T38Hang { pages: 1 },
            time_scale: 0.0005,
            ..CallSetup::default()
        };
        calls.push(FakeCall::connect(d.addr, setup).await.expect("connect"));
    }
    let t = Duration::from_secs(300);
    for c in &calls {
        assert!(
            c.wait_for(t, |log| log.rxfax_path.is_some()).await,
            "a call never reached rxfax"
        );
    }
    // Every call has received its page and is being held.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak = peak_rss_kib(pid);
    for c in &calls {
        c.hangup();
    }
    assert!(
        wait_async(t, || d.faxrcvd_runs().len() >= n).await,
        "{} of {n} receptions delivered",
        d.faxrcvd_runs().len()
    );
    let cpu = cpu_seconds(pid) - cpu_before;
    let user = cpu_split(pid).0 - user_before;
    println!(
        "{n:>5} concurrent receptions: fsfaxd peak RSS {:.1} MiB, CPU {:.2} ms per call \
         ({:.2} ms user, {:.2} ms system; {:.2} s in {:.1} s)",
        peak as f64 / 1024.0,
        cpu * 1000.0 / n as f64,
        user * 1000.0 / n as f64,
        (cpu - user) * 1000.0 / n as f64,
        cpu,
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep that cheap.
    let testing = !std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = match std::env::var("FSFAX_LOAD_CALLS") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) if testing => vec![10],
        Err(_) => vec![100, 1000],
    };
    // The bench holds both ends of every call; fsfaxd raises its own limit.
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    // SAFETY: single-threaded at this point; the variable is read by the harness when it
    // spawns fsfaxd.
    unsafe { std::env::set_var("FSFAX_TEST_LOG", "info") };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for n in sizes {
        rt.block_on(run(n));
    }
}
