//! Runs the real fsfaxd binary on a spool in a temp dir, for the receive, fault, fallback and
//! long-run tests.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use super::wait::{wait, wait_async};

/// A faxrcvd that records each call: argv, `HANGUPCAUSE`, `TRANSFER_RATE` and the cwd in
/// `faxrcvd-calls/<commid>`, plus one line per run in `faxrcvd-calls.log`.
const FAXRCVD: &str = r#"#!/bin/sh
dir="$PWD/faxrcvd-calls"
mkdir -p "$dir"
{
  for a in "$@"; do printf 'ARG=%s\n' "$a"; done
  printf 'HANGUPCAUSE=%s\n' "$HANGUPCAUSE"
  printf 'TRANSFER_RATE=%s\n' "$TRANSFER_RATE"
  printf 'CWD=%s\n' "$PWD"
} > "$dir/$3.tmp" && mv "$dir/$3.tmp" "$dir/$3"
echo "$1 $3" >> "$PWD/faxrcvd-calls.log"
echo "mailed $1"
exit 0
"#;

/// One fsfaxd process with its own spool.
pub struct Fsfaxd {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    child: Option<Child>,
    extra: String,
    modems: u32,
}

impl Fsfaxd {
    /// Starts fsfaxd with `modems` modems and extra `[gofaxd]` lines (and optional extra
    /// sections after them), and waits until it listens.
    pub fn start(modems: u32, gofaxd_extra: &str) -> Fsfaxd {
        let dir = tempfile::tempdir().unwrap();
        prepare_spool(&dir.path().join("spool"));
        Fsfaxd::launch(dir, modems, gofaxd_extra)
    }

    /// Starts fsfaxd on an existing spool (e.g. a real HylaFAX lab's), with the spool's own
    /// `bin/faxrcvd`.
    pub fn start_on(spool: &Path, modems: u32, gofaxd_extra: &str) -> Fsfaxd {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(spool, dir.path().join("spool")).unwrap();
        Fsfaxd::launch(dir, modems, gofaxd_extra)
    }

    fn launch(dir: tempfile::TempDir, modems: u32, gofaxd_extra: &str) -> Fsfaxd {
        let mut d = Fsfaxd {
            dir,
            // Port 0: the OS picks a free port, read back from the "listening on" log line,
            // so tests running at once never race for one.
            addr: "127.0.0.1:0".parse().unwrap(),
            child: None,
            extra: gofaxd_extra.to_owned(),
            modems,
        };
        d.write_config();
        d.spawn();
        d
    }

    fn write_config(&self) {
        let conf = format!(
            "[freeswitch]\nsocket = 127.0.0.1:9\npassword = x\nident = ACME Fax\n\n\
             [hylafax]\nspooldir = {}\nmodems = {}\nxferfaxlog = log/xferfaxlog\n\n\
             [gofaxd]\nsocket = {}\nhangupafterresult = 1s\n{}\n",
            self.spool().display(),
            self.modems,
            self.addr,
            self.extra
        );
        fs::write(self.config_path(), conf).unwrap();
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("fsfax.conf")
    }

    /// (Re)starts the process on the same spool and waits until it listens.
    pub fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let before = fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .len();
        // `FSFAX_BENCH_FSFAXD=<binary>`: the load bench drives another build (an older
        // commit's, for a before/after run on the same machine at the same time).
        let binary = std::env::var_os("FSFAX_BENCH_FSFAXD")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_fsfaxd")));
        let child = Command::new(binary)
            .args(["-f", "-c"])
            .arg(self.config_path())
            // Debug logs help when a test fails; the load benchmark asks for less.
            .env(
                "FSFAX_LOG",
                std::env::var("FSFAX_TEST_LOG").unwrap_or_else(|_| "debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let mut bound = None;
        let ok = wait(Duration::from_secs(60), || {
            let text = fs::read_to_string(self.log_path()).unwrap_or_default();
            bound = listening_addr(&text[before.min(text.len())..]);
            bound.is_some()
        });
        assert!(ok, "fsfaxd did not start listening:\n{}", self.log());
        if let Some(addr) = bound {
            if self.addr.port() == 0 {
                // A restart listens on the same port again, as a daemon restarted by systemd.
                self.addr = addr;
                self.write_config();
            }
            assert_eq!(addr, self.addr, "fsfaxd listens where the config says");
        }
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("fsfaxd.log")
    }

    /// The session log `log/c<commid>` (commid as HylaFAX prints it), empty while there is none.
    pub fn session_log(&self, commid: &str) -> String {
        fs::read_to_string(self.spool().join(format!("log/c{commid}"))).unwrap_or_default()
    }

    /// fsfaxd's own log (stderr).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The faxrcvd record of `commid`: its argv and environment lines.
    pub fn faxrcvd_call(&self, commid: &str) -> Option<Vec<String>> {
        let text = fs::read_to_string(self.spool().join("faxrcvd-calls").join(commid)).ok()?;
        Some(text.lines().map(str::to_owned).collect())
    }

    /// Lines of `faxrcvd-calls.log` (`<file> <commid>` per run).
    pub fn faxrcvd_runs(&self) -> Vec<String> {
        fs::read_to_string(self.spool().join("faxrcvd-calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// xferfaxlog records, split into fields.
    pub fn xferfaxlog(&self) -> Vec<Vec<String>> {
        fs::read_to_string(self.spool().join("log/xferfaxlog"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect()
    }

    pub fn status(&self, modem: &str) -> String {
        fs::read_to_string(self.spool().join("status").join(modem))
            .unwrap_or_default()
            .trim_end()
            .to_owned()
    }

    /// Pending journal records.
    pub fn journal(&self) -> Vec<String> {
        fs::read_dir(self.spool().join("recvq/.fsfax"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("pending-"))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn pages(&self, rel: &str) -> Option<u32> {
        fsfax::tiff::count_pages(&self.spool().join(rel)).ok()
    }
}

impl Drop for Fsfaxd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Creates the spool directories fsfaxd needs and the recording `bin/faxrcvd`.
pub fn prepare_spool(spool: &Path) {
    for d in ["recvq", "log", "status", "etc", "bin"] {
        fs::create_dir_all(spool.join(d)).unwrap();
    }
    let faxrcvd = spool.join("bin/faxrcvd");
    fs::write(&faxrcvd, FAXRCVD).unwrap();
    fs::set_permissions(&faxrcvd, fs::Permissions::from_mode(0o755)).unwrap();
}

/// The address in fsfaxd's "listening on <addr> for FreeSWITCH" log line.
fn listening_addr(log: &str) -> Option<SocketAddr> {
    log.lines().find_map(|l| {
        let rest = &l[l.find("listening on ")? + "listening on ".len()..];
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Writes an executable script.
pub fn script(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

impl Fsfaxd {
    /// Where the current run serves `/metrics` (`[gofaxd] metrics`, port 0 read back from its
    /// "metrics and health checks on http://<addr>/metrics" log line).
    pub fn metrics_addr(&self) -> SocketAddr {
        let mut found = None;
        let ok = wait(super::wait::HANG, || {
            found = self.log().lines().rev().find_map(|l| {
                let rest = &l[l.find("health checks on http://")? + 24..];
                rest.split('/').next()?.parse().ok()
            });
            found.is_some()
        });
        assert!(ok, "fsfaxd never said where /metrics is:\n{}", self.log());
        found.unwrap()
    }

    /// `GET <path>` on the metrics endpoint: the status code and the body.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics_addr(), path)
    }

    /// `fsfaxd status <args>` with this daemon's configuration: exit code and stdout.
    pub fn status_cmd(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_fsfaxd"))
            .arg("-c")
            .arg(self.config_path())
            .arg("status")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// The value of one series in `/metrics` (`name{labels}` exactly as exposed, or a bare
    /// name), `None` when absent.
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.http_get("/metrics").1, series)
    }
}

/// A one-shot HTTP/1.0 GET; the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: fsfaxd\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_owned())
}

/// The value of `series` in an exposition text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}
