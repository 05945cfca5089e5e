//! Load run for fsfaxd: the realistic mix of receptions (issue 13) from the fake FreeSWITCH
//! against the real daemon, `total` calls with at most `concurrency` in flight. Reports
//! fsfaxd's CPU time per reception (its own user + system time, not that of the faxrcvd it
//! runs), its peak RSS and peak OS thread count, and the wall time against what the calls
//! themselves take.
//!
//! The mix, per 20 calls: 8 T.38 successes and 4 audio (G.711) successes of 1 to 3 pages,
//! 2 T.38 faxes whose pages have bad rows, 2 retrains after a page followed by the sender
//! giving up, 2 senders hanging up mid-fax after a page, 1 sender hanging up after the answer
//! and 1 call with no fax sender (the last two leave no document). T.38 is enabled and
//! requested, and the T.38 fallback memory is on (mod_db in a fake FreeSWITCH), so every call
//! is looked up and the failures are written back. faxrcvd (a shell script) runs for every
//! document; every call gets an xferfaxlog record and a session log. Info logging on.
//!
//! `cargo bench --bench receive_load`: 1,000 calls 100 at a time, then 1,000 calls all at
//! once (held in rxfax until every one has started, so all are in flight together).
//! `FSFAX_LOAD_RUNS=1000x100,200x200` chooses (total x concurrency).
//! `FSFAX_BENCH_FSFAXD=<binary>` drives another fsfaxd build (an older commit's, for a
//! before/after comparison in the same conditions). `TMPDIR` chooses the file system of the
//! spools (see the README's performance section on why that matters here).
//! `FSFAX_LOAD_STRACE=<dir>` also traces fsfaxd's own threads (`strace -ff`, children left
//! out) and prints syscalls and syncs per reception; the CPU figures of a traced run are
//! meaningless.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::fakefs::{CallSetup, FakeCall, FakeConfig, FakeDb, FakeFs, RxScript, T38};
use support::fsfaxd::{Fsfaxd, wait_async};

/// Capture time × this = real time: a one-page fax takes about 0.4 s, three pages 0.55 s.
const TIME_SCALE: f64 = 0.02;

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

/// A field of `/proc/<pid>/status` (`VmHWM`, `Threads`), its first number.
fn status_field(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// What call `i` of the mix does, and whether it leaves a document for faxrcvd.
fn mix(i: usize) -> (RxScript, u32, bool) {
    let pages = 1 + (i % 3) as u32;
    let ok = |t38| RxScript::RxOk { pages, t38 };
    match i % 20 {
        0..=7 => (ok(T38::Negotiated), 0, true),
        8..=11 => (ok(T38::Off), 0, true),
        12 | 13 => (ok(T38::Negotiated), 7, true),
        14 | 15 => (RxScript::RetrainThenHangUp { after_pages: 1 }, 0, true),
        16 | 17 => (RxScript::SenderHangsUpMidFax { after_pages: 1 }, 0, true),
        18 => (RxScript::SenderHangsUpAfterAnswer, 0, false),
        _ => (RxScript::NoFaxSender, 0, false),
    }
}

fn setup(i: usize, db: &FakeDb, hold: bool) -> CallSetup {
    let (script, bad_rows, _) = mix(i);
    // Those two never reach a page: nothing to hold them at.
    let stallable = !matches!(
        script,
        RxScript::NoFaxSender | RxScript::SenderHangsUpAfterAnswer
    );
    CallSetup {
        caller_number: format!("49{i:06}"),
        script,
        bad_rows,
        db: db.clone(),
        time_scale: TIME_SCALE,
        stall_after_pages: (hold && stallable).then_some(0),
        ..CallSetup::default()
    }
}

/// Context switches (voluntary + involuntary) of all of fsfaxd's threads so far, living ones
/// only (its threads live as long as it does).
fn context_switches(pid: i32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .map(|t| {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            status
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                })
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// The peak of fsfaxd's OS threads, sampled every 2 ms until `stop`.
fn sample_threads(pid: i32, stop: Arc<AtomicUsize>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while stop.load(Ordering::Relaxed) == 0 {
            peak = peak.max(status_field(pid, "Threads"));
            std::thread::sleep(Duration::from_millis(2));
        }
        peak
    })
}

/// `strace -ff` of fsfaxd's threads (and, unavoidably, of the children it starts until they
/// exec; those files are left out of the count).
struct Trace {
    child: std::process::Child,
    dir: PathBuf,
}

impl Trace {
    fn start(pid: i32, dir: &Path) -> Trace {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        let child = std::process::Command::new("strace")
            .args(["-ff", "-qq", "-o"])
            .arg(dir.join("t"))
            .args(["-p", &pid.to_string()])
            .spawn()
            .expect("strace");
        std::thread::sleep(Duration::from_millis(500));
        Trace {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// Stops tracing; syscall name → count over fsfaxd's own threads.
    fn finish(mut self) -> HashMap<String, u64> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.child.wait();
        let mut counts = HashMap::new();
        for entry in std::fs::read_dir(&self.dir).unwrap().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if text.contains("execve(") {
                continue;
            }
            for line in text.lines() {
                let name: String = line
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && line[name.len()..].starts_with('(') {
                    *counts.entry(name).or_insert(0) += 1;
                }
            }
        }
        counts
    }
}

async fn run(total: usize, concurrency: usize, fs: &FakeFs) {
    let db = fs.db();
    let d = Fsfaxd::start(
        8,
        &format!(
            "enablet38 = true\nrequestt38 = true\n\n[freeswitch]\nsoftmodemfallback = true\n\
             socket = {}\npassword = ClueCon\nfallbacklookuptimeout = 60s",
            fs.addr()
        ),
    );
    let pid = d.pid();
    eprintln!("fsfaxd pid {pid}");
    let docs = (0..total).filter(|&i| mix(i).2).count();
    let trace = std::env::var_os("FSFAX_LOAD_STRACE").map(|dir| Trace::start(pid, Path::new(&dir)));
    let stop = Arc::new(AtomicUsize::new(0));
    let threads = sample_threads(pid, stop.clone());
    let (user0, sys0) = cpu_split(pid);
    let switches0 = context_switches(pid);
    let started = Instant::now();
    let t = Duration::from_secs(600);
    let call_time = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let mut in_flight_at_peak = 0;
    if concurrency >= total {
        // All at once, held in rxfax until every call has started.
        let mut calls = Vec::with_capacity(total);
        for i in 0..total {
            let c = FakeCall::connect(d.addr, setup(i, &db, true)).await;
            calls.push((Instant::now(), c.expect("connect")));
        }
        let held = |c: &FakeCall| c.in_rxfax() || c.finished();
        assert!(
            wait_async(t, || calls.iter().all(|(_, c)| held(c))).await,
            "a call never reached rxfax"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        in_flight_at_peak = calls.iter().filter(|(_, c)| !c.finished()).count();
        for (_, c) in &calls {
            c.resume();
        }
        let mut sum = Duration::ZERO;
        let mut open: Vec<_> = calls;
        while !open.is_empty() {
            open.retain(|(at, c)| {
                let done = c.finished();
                if done {
                    sum += at.elapsed();
                }
                !done
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(started.elapsed() < t, "calls never finished");
        }
        *call_time.lock().unwrap() = sum;
    } else {
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (next, db, addr, call_time) = (next.clone(), db.clone(), d.addr, call_time.clone());
            workers.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return;
                    }
                    let at = Instant::now();
                    let c = FakeCall::connect(addr, setup(i, &db, false))
                        .await
                        .expect("connect");
                    while !c.finished() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    *call_time.lock().unwrap() += at.elapsed();
                    if std::env::var_os("FSFAX_LOAD_DEBUG").is_some() {
                        eprintln!("call {i} {:?}: {:?}", mix(i).0, at.elapsed());
                    }
                }
            });
        }
        while workers.join_next().await.is_some() {}
    }
    assert!(
        wait_async(t, || d.faxrcvd_runs().len() >= docs
            && d.xferfaxlog().len() >= total)
        .await,
        "{} of {docs} documents delivered, {} of {total} xferfaxlog records",
        d.faxrcvd_runs().len(),
        d.xferfaxlog().len()
    );
    let wall = started.elapsed().as_secs_f64();
    let (user1, sys1) = cpu_split(pid);
    let switches = context_switches(pid) - switches0;
    stop.store(1, Ordering::Relaxed);
    let peak_threads = threads.join().unwrap_or(0);
    let peak_rss = status_field(pid, "VmHWM");
    let counts = trace.map(Trace::finish);
    // Exactly once: no document twice, none missing, nothing left in the journal.
    let runs = d.faxrcvd_runs();
    assert_eq!(runs.len(), docs, "each document reaches faxrcvd once");
    let commids: std::collections::HashSet<_> =
        runs.iter().filter_map(|l| l.split(' ').nth(1)).collect();
    assert_eq!(commids.len(), docs, "no commid twice");
    assert_eq!(
        d.xferfaxlog().len(),
        total,
        "one xferfaxlog record per call"
    );
    assert!(
        wait_async(t, || d.journal().is_empty()).await,
        "journal left behind"
    );
    let (user, sys) = (user1 - user0, sys1 - sys0);
    let per = |s: f64| s * 1000.0 / total as f64;
    let needed = call_time.lock().unwrap().as_secs_f64() / concurrency.min(total) as f64;
    println!(
        "{total} receptions, {concurrency} at once: fsfaxd CPU {:.2} ms per reception \
         ({:.2} user + {:.2} system), {:.1} context switches; peak RSS {:.1} MiB; \
         peak {peak_threads} threads; wall {wall:.1} s (the calls' own time / concurrency: \
         {needed:.1} s){}",
        per(user + sys),
        per(user),
        per(sys),
        switches as f64 / total as f64,
        peak_rss as f64 / 1024.0,
        if in_flight_at_peak > 0 {
            format!("; {in_flight_at_peak} in flight at once")
        } else {
            String::new()
        }
    );
    if let Some(counts) = counts {
        let all: u64 = counts.values().sum();
        let syncs: u64 = ["fsync", "fdatasync", "sync_file_range", "syncfs"]
            .iter()
            .filter_map(|s| counts.get(*s))
            .sum();
        let mut top: Vec<_> = counts.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1));
        let top: Vec<String> = top
            .iter()
            .take(14)
            .map(|(k, v)| format!("{k} {:.1}", **v as f64 / total as f64))
            .collect();
        println!(
            "  strace: {:.1} syscalls and {:.2} syncs per reception; per reception: {}",
            all as f64 / total as f64,
            syncs as f64 / total as f64,
            top.join(", ")
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep that cheap.
    let testing = !std::env::args().any(|a| a == "--bench");
    let runs: Vec<(usize, usize)> = match std::env::var("FSFAX_LOAD_RUNS") {
        Ok(v) => v
            .split(',')
            .filter_map(|s| {
                let (n, c) = s.trim().split_once('x')?;
                Some((n.parse().ok()?, c.parse().ok()?))
            })
            .collect(),
        Err(_) if testing => vec![(20, 10), (20, 20)],
        Err(_) => vec![(1000, 100), (1000, 1000)],
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
    rt.block_on(async {
        let fs = FakeFs::start(FakeConfig::new()).await;
        for (total, concurrency) in runs {
            run(total, concurrency, &fs).await;
        }
    });
}
