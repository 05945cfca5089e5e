//! The send harness: the real fsfaxsend on real qfiles in a private spool, run as faxq runs it.
//! Used by `send_fakefs`, `faults_send` and `soak`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

pub const MODEM: &str = "freeswitch0";

/// How long fsfaxsend may run before a test calls it hung (every call the fake plays lasts
/// milliseconds).
pub use super::wait::HANG;

/// A spool, a configuration and a qfile for one fsfaxsend run.
pub struct SendEnv {
    pub _dir: tempfile::TempDir,
    pub spool: PathBuf,
    pub conf: PathBuf,
    /// Extra lines for the config sections, appended in order.
    pub fs_socket: String,
}

impl SendEnv {
    pub fn new(fs_socket: &str) -> SendEnv {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        for d in [
            "log", "sendq", "docq", "tmp", "status", "recvq", "etc", "bin",
        ] {
            fs::create_dir_all(spool.join(d)).unwrap();
        }
        let env = SendEnv {
            conf: dir.path().join("fsfax.conf"),
            _dir: dir,
            spool,
            fs_socket: fs_socket.to_string(),
        };
        env.write_config(&[], &[], &[]);
        env
    }

    /// Writes the configuration with extra `key = value` lines per section.
    pub fn write_config(&self, freeswitch: &[&str], gofaxsend: &[&str], gateways: &[&str]) {
        let gateways = if gateways.is_empty() {
            vec!["gw1"]
        } else {
            gateways.to_vec()
        };
        let mut text = format!(
            "[freeswitch]\nsocket = {}\npassword = ClueCon\nident = +1 555 0100\nheader = \"ACME Fax\"\n",
            self.fs_socket
        );
        for g in gateways {
            text.push_str(&format!("gateway = {g}\n"));
        }
        for l in freeswitch {
            text.push_str(l);
            text.push('\n');
        }
        text.push_str(&format!(
            "[hylafax]\nspooldir = {}\nmodems = 1\nxferfaxlog = log/xferfaxlog\n",
            self.spool.display()
        ));
        text.push_str(
            "[gofaxsend]\nenablet38 = true\nrequestt38 = true\nfaxnumber = 4711\ncidname = sender\nfailedresponse = CALL_REJECTED\n\
             hangupafterresult = 1s\n",
        );
        // Generous limits unless a test sets its own: a verdict must follow from what the fake
        // did on the wire, never from how fast a loaded machine runs the fake and fsfaxsend.
        for (key, value) in [("originatetimeout", "60s"), ("maxcallduration", "300s")] {
            if !gofaxsend.iter().any(|l| l.trim_start().starts_with(key)) {
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
        for l in gofaxsend {
            text.push_str(l);
            text.push('\n');
        }
        fs::write(&self.conf, text).unwrap();
    }

    /// Copies a fixture TIFF into docq and writes `sendq/q<job>` referencing it.
    pub fn qfile(&self, job: u32, number: &str, docs: &[(&str, u32)], extra: &[&str]) -> PathBuf {
        let mut faxes = String::new();
        for (i, (fixture, first)) in docs.iter().enumerate() {
            let name = format!("doc{job}-{i}.tif");
            fs::copy(fixture_tif(fixture), self.spool.join("docq").join(&name)).unwrap();
            faxes.push_str(&format!("fax:{first}::docq/{name}\n"));
        }
        let mut text = format!(
            "tts:0\nkilltime:1795356039\nretrytime:0\nstate:6\nnpages:0\ntotpages:3\nntries:0\n\
             ndials:0\ntotdials:0\nmaxdials:12\ntottries:0\nmaxtries:3\nresolution:98\n\
             desiredbr:13\ndesiredec:2\nexternal:{number}\nnumber:{number}\nmailaddr:root@vm\n\
             sender:Alice Sender\njobid:{job}\njobtag:tag {job}\nowner:root\nsignalrate:\n\
             dataformat:\ncommid:\ncsi:\nstatus:\nstatuscode:0\nreturned:7\nnotify:none\n"
        );
        for e in extra {
            text.push_str(e);
            text.push('\n');
        }
        text.push_str(&faxes);
        let path = self.spool.join("sendq").join(format!("q{job}"));
        fs::write(&path, text).unwrap();
        path
    }

    /// Runs fsfaxsend as faxq does (cwd = spool, `-m modem sendq/q<job>`), with a deadline.
    pub async fn run(&self, job: u32) -> i32 {
        let child = self.spawn(job);
        wait_exit(child, HANG).await
    }

    /// [`SendEnv::run`] without printing fsfaxsend's log (for long runs); the log is shown
    /// only when fsfaxsend did not exit normally.
    pub async fn run_quiet(&self, job: u32) -> i32 {
        exit_and_log(self.command(job, "warn", &[])).await.0
    }

    /// [`SendEnv::run`] that also returns fsfaxsend's log (info level and up).
    pub async fn run_logged(&self, job: u32) -> (i32, String) {
        exit_and_log(self.command(job, "info", &[])).await
    }

    /// [`SendEnv::run_logged`] on a machine without a boot id: fsfaxsend runs in a private
    /// mount namespace where `/proc/sys/kernel/random/boot_id` reads empty (needs root, as
    /// CI runs the tests).
    pub async fn run_logged_without_boot_id(&self, job: u32) -> (i32, String) {
        const MASK: &str =
            "mount --bind /dev/null /proc/sys/kernel/random/boot_id && exec \"$0\" \"$@\"";
        let wrapper = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            MASK,
        ];
        exit_and_log(self.command(job, "info", &wrapper)).await
    }

    pub fn spawn(&self, job: u32) -> tokio::process::Child {
        self.command(job, "debug", &[])
            .spawn()
            .expect("spawn fsfaxsend")
    }

    /// fsfaxsend as faxq runs it (cwd = spool, `-m modem sendq/q<job>`), logging at `level` to
    /// a pipe, run through `wrapper` (a program and its arguments, before fsfaxsend's path)
    /// when one is given.
    fn command(&self, job: u32, level: &str, wrapper: &[&str]) -> tokio::process::Command {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = tokio::process::Command::new(program);
                cmd.args(args).arg(super::fsfaxsend());
                cmd
            }
            None => tokio::process::Command::new(super::fsfaxsend()),
        };
        cmd.arg("-c")
            .arg(&self.conf)
            .args(["-m", MODEM, &format!("sendq/q{job}")])
            .current_dir(&self.spool)
            .env("FSFAX_LOG", level)
            .env("FSFAX_LOG_STDERR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Creates `FIFO.<modem>` and collects what fsfaxsend writes to it (fsfaxd's side).
    pub fn modem_fifo(&self) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
        self.collect_fifo(&format!("FIFO.{MODEM}"))
    }

    /// Creates faxq's `FIFO` and collects what fsfaxsend tells faxq (faxq's side).
    pub fn faxq_fifo(&self) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
        self.collect_fifo("FIFO")
    }

    fn collect_fifo(&self, name: &str) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
        let path = self.spool.join(name);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        // Opened read-write, as fsfaxd does, so the reader never sees end-of-file.
        let mut rx = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&path)
            .unwrap();
        let sink = got.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 256];
            while let Ok(n) = rx.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        got
    }

    pub fn field(&self, job: u32, tag: &str) -> String {
        let text = fs::read(self.spool.join("sendq").join(format!("q{job}"))).unwrap();
        String::from_utf8_lossy(&text)
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{tag}:")).map(str::to_string))
            .unwrap_or_else(|| panic!("no {tag}: in q{job}"))
    }

    pub fn fields(&self, job: u32, tag: &str) -> Vec<String> {
        let text = fs::read(self.spool.join("sendq").join(format!("q{job}"))).unwrap();
        String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{tag}:")).map(str::to_string))
            .collect()
    }

    /// The session log of job `job`'s attempt (`log/c<commid>` after the qfile's `commid:`),
    /// empty while there is none.
    pub fn session_log(&self, job: u32) -> String {
        let commid = self.field(job, "commid");
        fs::read_to_string(self.spool.join(format!("log/c{commid}"))).unwrap_or_default()
    }

    pub fn xferfaxlog(&self) -> Vec<Vec<String>> {
        fs::read_to_string(self.spool.join("log/xferfaxlog"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect()
    }

    pub fn temp_files(&self) -> usize {
        fs::read_dir(self.spool.join("tmp")).unwrap().count()
    }
}

/// What the modem FIFO got, once it holds at least `len` bytes (fsfaxsend has exited by then;
/// the reader in this process may not have read it all yet). Bounded by [`HANG`].
pub async fn fifo_got(got: &std::sync::Mutex<Vec<u8>>, len: usize) -> Vec<u8> {
    let deadline = std::time::Instant::now() + HANG;
    loop {
        let now = got.lock().unwrap().clone();
        if now.len() >= len || std::time::Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn fixture_tif(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fax")
        .join(name)
}

pub async fn wait_exit(mut child: tokio::process::Child, limit: Duration) -> i32 {
    let log = collect_stderr(&mut child);
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(s) => s.unwrap(),
        Err(_) => {
            let _ = child.kill().await;
            panic!("fsfaxsend did not finish within {limit:?}");
        }
    };
    let log = log.await.unwrap();
    eprintln!("--- fsfaxsend log ---\n{log}");
    status
        .code()
        .unwrap_or_else(|| panic!("fsfaxsend died by a signal: {status:?}\n{log}"))
}

/// Runs `cmd` to its exit (bounded by [`HANG`]) and returns its exit code and stderr; a death
/// by a signal panics with the log.
async fn exit_and_log(mut cmd: tokio::process::Command) -> (i32, String) {
    let mut child = cmd.spawn().expect("spawn fsfaxsend");
    let log = collect_stderr(&mut child);
    let status = tokio::time::timeout(HANG, child.wait())
        .await
        .unwrap_or_else(|_| panic!("fsfaxsend hung: no exit within {HANG:?}"))
        .unwrap();
    let log = log.await.unwrap();
    let code = status
        .code()
        .unwrap_or_else(|| panic!("fsfaxsend died by a signal: {status:?}\n{log}"));
    (code, log)
}

/// Reads the child's stderr (a pipe) to its end, on a task of its own, as text.
fn collect_stderr(child: &mut tokio::process::Child) -> tokio::task::JoinHandle<String> {
    let stderr = child.stderr.take();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        if let Some(mut s) = stderr {
            let _ = s.read_to_end(&mut buf).await;
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}
