//! fsfaxsend, one whole instant fax: exec to exit, and the process's own CPU time (user +
//! system, from wait4's rusage) per run, against the fake FreeSWITCH of the tests playing the
//! captured T.38 send with no delays (time scale 0). Each run is what faxq starts: `-m <modem>
//! sendq/q<job>` in the spool, a 2-page job (pages 2-3 of the 3-page fixture), info logging;
//! the qfile is written afresh before every run and must say done (2) afterwards.
//!
//! `cargo bench --bench send_run`. `FSFAX_SEND_STRACE=<file>` adds one run under `strace -f`
//! and prints its syscalls and syncs. The fsfaxsend run is the one that ships (the static musl
//! build of scripts/static-fsfaxsend.sh, built on first use); `FSFAX_BENCH_FSFAXSEND=<binary>`
//! runs another build.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use support::fakefs::{FakeConfig, FakeFs};
use support::send::{MODEM, SendEnv};

/// The fsfaxsend under test: the static build that ships, or `FSFAX_BENCH_FSFAXSEND=<binary>`.
fn binary() -> &'static Path {
    support::bench_fsfaxsend()
}

/// fsfaxsend as faxq starts it on a fresh `sendq/q1` (under `strace -f -o <trace>` when
/// given): `-m <modem> sendq/q1` in the spool, info logging, output dropped.
fn fsfaxsend(env: &SendEnv, trace: Option<&Path>) -> Command {
    env.qfile(1, "5551234", &[("test3.tif", 1)], &[]);
    let mut cmd = match trace {
        Some(out) => {
            let mut c = Command::new("strace");
            c.args(["-f", "-qq", "-o"]).arg(out).arg(binary());
            c
        }
        None => Command::new(binary()),
    };
    cmd.arg("-c")
        .arg(&env.conf)
        .args(["-m", MODEM, "sendq/q1"])
        .current_dir(&env.spool)
        .env(
            "FSFAX_LOG",
            std::env::var("FSFAX_BENCH_LOG").unwrap_or("info".into()),
        )
        // As faxq starts it: cargo's library path would send the loader through a dozen
        // directories for every shared library.
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("FSFAX_BENCH_STDERR").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
    cmd
}

/// One fsfaxsend run to its exit: (exec → exit, user + system CPU of fsfaxsend itself).
// The child is reaped with wait4 (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn one_run(env: &SendEnv) -> (Duration, Duration) {
    let mut cmd = fsfaxsend(env, None);
    let start = Instant::now();
    let child = cmd.spawn().expect("spawn fsfaxsend");
    let mut status = 0;
    // SAFETY: plain wait4 on our own child; rusage is written by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 2,
        "fsfaxsend exit status {status:#x}, not 2 (done)"
    );
    assert_eq!(
        env.field(1, "returned"),
        "2",
        "the fax was sent (send_done)"
    );
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (wall, tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// One run under `strace -f`: fsfaxsend's syscalls by name (its own, not the bench's).
fn traced_run(env: &SendEnv, out: &Path) -> Vec<(String, u64)> {
    let status = fsfaxsend(env, Some(out)).status().expect("strace");
    assert_eq!(status.code(), Some(2), "traced fsfaxsend did not say done");
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let mut counts = std::collections::BTreeMap::new();
    for line in text.lines() {
        // `<pid> name(...` with -f; strace pads the pid with spaces.
        let call = line
            .split_once(' ')
            .map_or(line, |(_, rest)| rest.trim_start());
        let name: String = call
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && call[name.len()..].starts_with('(') {
            *counts.entry(name).or_insert(0u64) += 1;
        }
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fs = rt.block_on(FakeFs::start(FakeConfig::new().time_scale(0.0)));
    let env = SendEnv::new(&fs.addr().to_string());
    let (mut runs, mut cpu) = (0u32, Duration::ZERO);
    c.bench_function("fsfaxsend instant 2-page fax, exec to exit", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (wall, used) = one_run(&env);
                total += wall;
                cpu += used;
                runs += 1;
            }
            total
        })
    });
    println!(
        "fsfaxsend CPU (user + system) per run: {:.2} ms over {runs} runs",
        cpu.as_secs_f64() * 1000.0 / f64::from(runs.max(1))
    );
    if let Some(out) = std::env::var_os("FSFAX_SEND_STRACE") {
        let counts = traced_run(&env, Path::new(&out));
        let all: u64 = counts.iter().map(|(_, n)| n).sum();
        let syncs: u64 = counts
            .iter()
            .filter(|(k, _)| {
                ["fsync", "fdatasync", "sync_file_range", "syncfs"].contains(&k.as_str())
            })
            .map(|(_, n)| n)
            .sum();
        let top: Vec<String> = counts
            .iter()
            .take(16)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!(
            "  strace: {all} syscalls, {syncs} syncs per run: {}",
            top.join(", ")
        );
    }
    drop(fs);
    rt.shutdown_timeout(Duration::from_secs(1));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(10));
    targets = bench
}
criterion_main!(benches);
