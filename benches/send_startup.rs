//! fsfaxsend start-up: time from exec to its `bgapi originate` reaching FreeSWITCH, and the
//! process's peak RSS, for one job against a minimal event-socket peer.
//!
//! The peer answers like FreeSWITCH (auth, filter, event, db lookups) and fails the originate
//! with `USER_BUSY` at once, so every iteration is one whole fsfaxsend run. The fsfaxsend is
//! the static build that ships (scripts/static-fsfaxsend.sh, built on first use), or
//! `FSFAX_BENCH_FSFAXSEND=<binary>`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

/// Serves one fsfaxsend connection; sends the instant its bgapi arrived on `seen`.
fn serve(stream: TcpStream, seen: mpsc::Sender<Instant>) {
    // As mod_event_socket does (listener_run): with Nagle on, a reply written while the one
    // before is unacknowledged waits for the client's delayed ACK, 40 ms on Linux, whenever
    // the client sends commands without waiting for each reply.
    let _ = stream.set_nodelay(true);
    let mut out = stream.try_clone().unwrap();
    let mut rd = BufReader::new(stream);
    let _ = out.write_all(b"Content-Type: auth/request\n\n");
    loop {
        let mut block = String::new();
        loop {
            let mut line = String::new();
            if rd.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line.trim().is_empty() {
                break;
            }
            block.push_str(&line);
        }
        let first = block.lines().next().unwrap_or_default().to_string();
        let reply = |text: &str| format!("Content-Type: command/reply\nReply-Text: {text}\n\n");
        let msg = if first.starts_with("auth ") {
            reply("+OK accepted")
        } else if first.starts_with("bgapi ") {
            let _ = seen.send(Instant::now());
            let job = block
                .lines()
                .find_map(|l| l.strip_prefix("Job-UUID: "))
                .unwrap_or("job")
                .to_string();
            let body = "-ERR USER_BUSY\n";
            let inner = format!(
                "Event-Name: BACKGROUND_JOB\nJob-UUID: {job}\nContent-Length: {}\n\n{body}",
                body.len()
            );
            format!(
                "{}Content-Length: {}\nContent-Type: text/event-plain\n\n{inner}",
                reply(&format!("+OK Job-UUID: {job}")),
                inner.len()
            )
        } else if first.starts_with("api ") {
            let body = "-ERR no reply\n";
            format!(
                "Content-Type: api/response\nContent-Length: {}\n\n{body}",
                body.len()
            )
        } else if first.starts_with("exit") {
            let _ = out.write_all(reply("+OK bye").as_bytes());
            return;
        } else {
            reply("+OK")
        };
        if out.write_all(msg.as_bytes()).is_err() {
            return;
        }
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    spool: std::path::PathBuf,
    conf: std::path::PathBuf,
    qfile: String,
    /// The static fsfaxsend that ships, or `FSFAX_BENCH_FSFAXSEND=<binary>` (another build,
    /// for before/after runs).
    binary: std::path::PathBuf,
}

fn setup(addr: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    for d in ["log", "sendq", "docq", "tmp"] {
        std::fs::create_dir_all(spool.join(d)).unwrap();
    }
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fax/test3.tif"),
        spool.join("docq/doc1.tif"),
    )
    .unwrap();
    let conf = dir.path().join("fsfax.conf");
    std::fs::write(
        &conf,
        format!(
            "[freeswitch]\nsocket = {addr}\npassword = ClueCon\ngateway = gw1\n\
             [hylafax]\nspooldir = {}\nmodems = 1\n",
            spool.display()
        ),
    )
    .unwrap();
    Setup {
        qfile: "sendq/q1".into(),
        binary: support::bench_fsfaxsend().into(),
        spool,
        conf,
        _dir: dir,
    }
}

fn write_qfile(s: &Setup) {
    std::fs::write(
        s.spool.join(&s.qfile),
        "jobid:1\nexternal:5551234\nnumber:5551234\nowner:bench\ntotdials:0\nndials:0\n\
         returned:7\nstatus:\nfax:0::docq/doc1.tif\n",
    )
    .unwrap();
}

/// Runs fsfaxsend once; returns (exec → bgapi, peak RSS in KiB).
// The child is reaped with wait4 (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn one_run(s: &Setup, seen: &mpsc::Receiver<Instant>) -> (Duration, i64) {
    write_qfile(s);
    let start = Instant::now();
    let child = Command::new(&s.binary)
        .arg("-c")
        .arg(&s.conf)
        .args(["-m", "freeswitch0", &s.qfile])
        .current_dir(&s.spool)
        .env("FSFAX_LOG", "error")
        // As faxq starts it: cargo's library path would send the loader through a dozen
        // directories for every shared library.
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn fsfaxsend");
    let at = seen
        .recv_timeout(Duration::from_secs(30))
        .expect("fsfaxsend never sent its originate");
    let mut status = 0;
    // SAFETY: plain wait4 on our own child; rusage is written by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    (at - start, usage.ru_maxrss)
}

fn bench(c: &mut Criterion) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || serve(stream, tx));
        }
    });
    let s = setup(&addr);
    let mut peak = 0;
    c.bench_function("fsfaxsend exec to bgapi originate", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (d, rss) = one_run(&s, &rx);
                total += d;
                peak = peak.max(rss);
            }
            total
        })
    });
    println!("fsfaxsend peak RSS over all runs: {peak} KiB");
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(10));
    targets = bench
}
criterion_main!(benches);
