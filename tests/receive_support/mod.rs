//! Runs the real fsfaxd binary on a spool in a temp dir, for the `receive_*` tests.
#![allow(dead_code)]

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        let port = free_port();
        let mut d = Fsfaxd {
            dir,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            child: None,
            extra: gofaxd_extra.to_owned(),
            modems,
        };
        d.write_config();
        d.spawn();
        d
    }

    /// Starts fsfaxd on an existing spool (e.g. a real HylaFAX lab's), with the spool's own
    /// `bin/faxrcvd`.
    pub fn start_on(spool: &Path, modems: u32, gofaxd_extra: &str) -> Fsfaxd {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(spool, dir.path().join("spool")).unwrap();
        let port = free_port();
        let mut d = Fsfaxd {
            dir,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
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
        let child = Command::new(env!("CARGO_BIN_EXE_fsfaxd"))
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
        let ok = wait(Duration::from_secs(20), || {
            fs::read_to_string(self.log_path())
                .map(|t| t[before.min(t.len())..].contains("listening on"))
                .unwrap_or(false)
        });
        assert!(ok, "fsfaxd did not start listening:\n{}", self.log());
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("fsfaxd.log")
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

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Polls `pred` every 10 ms until it holds or `timeout` passes.
pub fn wait(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    pred()
}

/// Async version of [`wait`].
pub async fn wait_async(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if pred() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pred()
}

/// Writes an executable script.
pub fn script(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}
