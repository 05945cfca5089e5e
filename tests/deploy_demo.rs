//! scripts/demo.sh, the main-job command: it prepares its local spool and starts fsfaxd in the
//! foreground; fsfaxd listens, shows its virtual modems as idle, and stops cleanly on Ctrl-C
//! (SIGINT) and on SIGTERM. Uses the debug build (FSFAX_DEMO_PROFILE=dev) to keep CI fast.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Bounds waits so a broken demo fails instead of hanging CI; never a speed assertion.
const PATIENCE: Duration = Duration::from_secs(600);

struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Demo {
    fn start(dir: &Path, socket: &str) -> Self {
        let mut child = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
            .env("FSFAX_DEMO_PROFILE", "dev")
            .env("FSFAX_DEMO_DIR", dir)
            .env("FSFAX_DEMO_SOCKET", socket)
            .env_remove("FSFAX_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle`; returns it.
    fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.log.push(line.clone());
                    if found {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = self.child.try_wait().unwrap() {
                        panic!(
                            "demo exited with {status} before {needle:?}: {:#?}",
                            self.log
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("no {needle:?} from the demo: {:#?}", self.log);
    }

    fn stop(mut self, signal: Signal) -> (ExitStatus, Vec<String>) {
        // demo.sh execs fsfaxd, so the script's pid is fsfaxd's.
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "demo ignored {signal}");
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.log.push(line);
        }
        (status, self.log)
    }
}

fn status_of(dir: &Path, modem: &str) -> String {
    std::fs::read_to_string(dir.join("spool/status").join(modem)).unwrap_or_default()
}

fn wait_for_status(dir: &Path, modem: &str, want: &str) {
    let deadline = Instant::now() + PATIENCE;
    while status_of(dir, modem).trim() != want {
        assert!(
            Instant::now() < deadline,
            "{modem}: {:?}, want {want:?}",
            status_of(dir, modem)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_once(dir: &Path, signal: Signal) {
    // Port 0: the OS picks a free one, which fsfaxd names in its "listening on" line.
    let mut demo = Demo::start(dir, "127.0.0.1:0");
    demo.wait_for_line("demo: configuration OK");
    let line = demo.wait_for_line("listening on 127.0.0.1:");
    let socket = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_default()
        .to_owned();
    assert!(
        socket
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.port() != 0),
        "{line}"
    );
    for modem in ["freeswitch0", "freeswitch4"] {
        wait_for_status(dir, modem, "Running and idle");
        assert!(dir.join(format!("spool/etc/config.{modem}")).exists());
    }
    // It really holds the port.
    assert!(
        TcpListener::bind(&socket).is_err(),
        "nothing listens on {socket}"
    );

    let (status, log) = demo.stop(signal);
    assert!(status.success(), "{signal}: exit {status}: {log:#?}");
    assert!(log.iter().any(|l| l.contains("fsfaxd stopped")), "{log:#?}");
    assert_eq!(status_of(dir, "freeswitch0").trim(), "Down");
    assert!(
        !log.iter().any(|l| l.contains("ERROR")),
        "errors in the demo: {log:#?}"
    );
}

#[test]
fn demo_starts_fsfaxd_in_the_foreground_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    // The demo's own configuration: the sample with only the spool (and port) changed.
    run_once(&demo_dir, Signal::SIGINT);
    let conf = std::fs::read_to_string(demo_dir.join("fsfax.conf")).unwrap();
    let sample =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/fsfax.conf")).unwrap();
    let changed: Vec<(&str, &str)> = sample
        .lines()
        .zip(conf.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(changed.len(), 2, "{changed:#?}");
    assert!(changed[0].1.starts_with("spooldir = ") && changed[0].1.ends_with("/demo/spool"));
    assert!(changed[1].1.starts_with("socket = 127.0.0.1:"));
    assert!(
        conf.contains("\nsocket = 127.0.0.1:8021\n"),
        "[freeswitch] socket untouched"
    );
    // A second run over the same demo directory (what a newcomer does) works too.
    run_once(&demo_dir, Signal::SIGTERM);
}
