//! A real HylaFAX (Debian's faxq + hfaxd) in a private spool, for end-to-end tests.
//!
//! Wraps `tests/tools/hylafax-lab.sh`. The lab shares machine-wide state (`/var/lock/LCK..<modem>`,
//! `/dev/log`), so only one lab runs at a time on a machine: [`HylafaxLab::start`] takes an
//! exclusive lock on a file in the temp directory and holds it until the lab is dropped.
//!
//! These tests need root and the Debian packages; `scripts/test.sh` installs them and sets
//! `FSFAX_REAL_HYLAFAX=1`. Without them the test fails with a message saying so: a test that
//! silently passes without HylaFAX would prove nothing.
#![allow(dead_code)]

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub use super::wait::free_port;

/// A running HylaFAX lab. Stopped (faxq and hfaxd terminated) on drop.
pub struct HylafaxLab {
    dir: PathBuf,
    port: u16,
    _lock: nix::fcntl::Flock<File>,
    _tmp: tempfile::TempDir,
}

fn lab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/hylafax-lab.sh")
}

/// Fails the test with a clear message when the machine cannot run a real HylaFAX.
pub fn require_real_hylafax() {
    let root = nix::unistd::Uid::effective().is_root();
    let installed = Path::new("/usr/sbin/faxq").exists() && Path::new("/usr/sbin/hfaxd").exists();
    assert!(
        root && installed,
        "this test drives a real HylaFAX and needs root and Debian's hylafax-server/-client \
         (root: {root}, installed: {installed}); run it through scripts/test.sh, which installs them"
    );
}

/// faxq's SendFaxCmd for a lab: a wrapper running the real fsfaxsend with `-c <dir>/fsfax.conf`
/// (faxq gives SendFaxCmd no arguments of its own; `bash -p` keeps faxq's euid, uucp). The
/// directory is world-traversable; the test writes the configuration at the returned path.
pub struct SendFaxCmd {
    pub dir: tempfile::TempDir,
    pub wrapper: PathBuf,
    pub conf: PathBuf,
}

impl SendFaxCmd {
    pub fn new() -> SendFaxCmd {
        let dir = tempfile::Builder::new()
            .prefix("fsfax-sendcmd-")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let wrapper = dir.path().join("sendfaxcmd");
        let conf = dir.path().join("fsfax.conf");
        fs::write(
            &wrapper,
            format!(
                "#!/bin/bash -p\nexec {} -c {} \"$@\"\n",
                super::fsfaxsend().display(),
                conf.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
        SendFaxCmd { dir, wrapper, conf }
    }
}

/// The machine-wide lab lock: blocks while another test (in this or another process) runs a
/// HylaFAX lab, and holds it until dropped.
pub fn lab_lock() -> nix::fcntl::Flock<File> {
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("fsfax-hylafax-lab.lock"))
        .expect("open lab lock file");
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the lab")
}

impl HylafaxLab {
    /// Brings up faxq and hfaxd with `modems` virtual modems `freeswitchN` whose `SendFaxCmd` is
    /// `send_cmd` (an absolute path). The lab directory is world-traversable so that faxq's
    /// euid (uucp) can reach the spool and the command.
    pub fn start(modems: u32, send_cmd: &Path) -> HylafaxLab {
        require_real_hylafax();
        let lock = lab_lock();
        let tmp = tempfile::Builder::new()
            .prefix("fsfax-hflab-")
            .tempdir()
            .expect("lab tempdir");
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let dir = tmp.path().join("lab");
        let port = free_port();
        let lab = HylafaxLab {
            dir,
            port,
            _lock: lock,
            _tmp: tmp,
        };
        let out = lab.script(&["start", &modems.to_string(), send_cmd.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "hylafax-lab.sh start failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    fn script(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(lab_script())
            .args(args)
            .env("HFLAB_DIR", &self.dir)
            .env("HFLAB_PORT", self.port.to_string())
            .output()
            .expect("run hylafax-lab.sh")
    }

    /// Announces the lab's modems to faxq as gofaxd does (`+dev:N`, status, `+dev:R<caps>`).
    pub fn ready(&self) {
        let out = self.script(&["ready"]);
        assert!(
            out.status.success(),
            "hylafax-lab.sh ready failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The spool directory (faxq's `-q`).
    pub fn spool(&self) -> PathBuf {
        self.dir.join("spool")
    }

    /// The lab root (holds `syslog.log`, `mail/`, `run/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `host:port` of the lab's hfaxd, for `-h` on client tools.
    pub fn server(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// Runs a HylaFAX client tool (faxstat, sendfax, faxinfo, ...) against this lab.
    pub fn client(&self, tool: &str, args: &[&str]) -> Output {
        Command::new(tool)
            .args(args)
            .env("FAXSERVER", self.server())
            .current_dir(self.spool())
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"))
    }

    /// `faxstat` output with the given flags (e.g. `-s`, `-d`).
    pub fn faxstat(&self, flags: &[&str]) -> String {
        let mut args = vec!["-h", "__SERVER__"];
        args.extend_from_slice(flags);
        let server = self.server();
        let args: Vec<&str> = args
            .into_iter()
            .map(|a| {
                if a == "__SERVER__" {
                    server.as_str()
                } else {
                    a
                }
            })
            .collect();
        let out = self.client("faxstat", &args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Submits a fax job with `sendfax -n` and returns its job id.
    pub fn submit(&self, number: &str, document: &Path) -> u32 {
        let server = self.server();
        let out = self.client(
            "sendfax",
            &[
                "-h",
                &server,
                "-n",
                "-d",
                number,
                document.to_str().unwrap(),
            ],
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "sendfax failed: {text}");
        // "request id is 1 (group id 1) for host localhost (1 file)"
        text.split("request id is ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no job id in sendfax output: {text}"))
    }

    /// Sends a sleeping job now, as an admin does through hfaxd's protocol (faxalter's `-a now`
    /// is refused for a job that is not suspended): `JSUSP`, and once faxq has suspended it
    /// (its qfile says `state:1`), `JPARM SENDTIME NOW` and `JSUBM` in a fresh session (an
    /// hfaxd session keeps the job as it first read it).
    pub fn send_now(&self, job: u32) {
        self.hfaxd(&[format!("JSUSP {job}")]);
        let suspended = self.wait_for(super::wait::HANG, |lab| {
            lab.qfile_field(job, "state").as_deref() == Some("1")
        });
        assert!(suspended, "faxq did not suspend job {job}");
        self.hfaxd(&[
            format!("JOB {job}"),
            "JPARM SENDTIME NOW".to_string(),
            format!("JSUBM {job}"),
        ]);
    }

    /// One hfaxd session as root: each command must succeed (a 2xx reply).
    fn hfaxd(&self, commands: &[String]) {
        use std::io::{BufRead, BufReader, Write};
        let stream = std::net::TcpStream::connect(("localhost", self.port)).expect("hfaxd");
        stream.set_read_timeout(Some(super::wait::HANG)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut reply = || {
            let mut all = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("hfaxd reply");
                all.push_str(&line);
                if line.len() < 4 || line.as_bytes()[3] == b' ' {
                    return all;
                }
            }
        };
        let greeting = reply();
        assert!(greeting.starts_with("220"), "{greeting}");
        for cmd in std::iter::once("USER root").chain(commands.iter().map(String::as_str)) {
            writer.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
            let r = reply();
            assert!(r.starts_with('2'), "hfaxd refused {cmd}: {r}");
        }
        let _ = writer.write_all(b"QUIT\r\n");
    }

    /// Where the job's qfile is now (`sendq/` while queued, `doneq/` once done or failed).
    pub fn qfile_path(&self, job: u32) -> Option<PathBuf> {
        ["sendq", "doneq"]
            .iter()
            .map(|q| self.spool().join(q).join(format!("q{job}")))
            .find(|p| p.exists())
    }

    /// The job's qfile as `tag -> first value`.
    pub fn qfile_field(&self, job: u32, tag: &str) -> Option<String> {
        let text = fs::read(self.qfile_path(job)?).ok()?;
        String::from_utf8_lossy(&text).lines().find_map(|l| {
            l.split_once(':')
                .filter(|(t, _)| *t == tag)
                .map(|(_, v)| v.to_string())
        })
    }

    /// Polls until `pred` holds or `timeout` passes; returns whether it held.
    pub fn wait_for(&self, timeout: Duration, mut pred: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if pred(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        pred(self)
    }

    /// faxq's trace log (syslog catcher), for failure messages.
    pub fn syslog(&self) -> String {
        fs::read_to_string(self.dir.join("syslog.log")).unwrap_or_default()
    }
}

impl Drop for HylafaxLab {
    fn drop(&mut self) {
        let _ = self.script(&["stop"]);
    }
}

/// HylaFAX's own `recvstats` (Debian's unmodified awk script, pointed at a private copy of what
/// it sources instead of /var/spool/hylafax) run on `xferfaxlog` with `args` (e.g. `-sender`).
/// Needs Debian's hylafax-server, which `scripts/test.sh` installs.
pub fn recvstats(xferfaxlog: &Path, args: &[&str]) -> String {
    const RECVSTATS: &str = "/usr/lib/hylafax/bin/recvstats";
    assert!(
        Path::new(RECVSTATS).exists(),
        "{RECVSTATS} missing: install Debian's hylafax-server (scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    for d in ["bin", "etc"] {
        fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    fs::copy(
        "/var/spool/hylafax/bin/common-functions",
        dir.path().join("bin/common-functions"),
    )
    .unwrap();
    fs::copy(
        "/etc/hylafax/setup.cache",
        dir.path().join("etc/setup.cache"),
    )
    .unwrap();
    let script = fs::read_to_string(RECVSTATS).unwrap().replace(
        "SPOOL=/var/spool/hylafax",
        &format!("SPOOL={}", dir.path().display()),
    );
    fs::write(dir.path().join("recvstats"), script).unwrap();
    let out = Command::new("bash")
        .arg(dir.path().join("recvstats"))
        .args(args)
        .arg(xferfaxlog)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "recvstats failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
