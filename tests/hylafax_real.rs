//! Our HylaFAX files and FIFO messages against the real Debian HylaFAX 6.0.7.
//!
//! Needs root and Debian's hylafax-server/-client, which `scripts/test.sh` installs. Without
//! them these tests fail and say what to install: a test that passes without HylaFAX would
//! prove nothing.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Local;
use fsfax::hylafax::Spool;
use fsfax::hylafax::modem::{DEFAULT_CAPS, DeviceFifoReader, DeviceMsg, FaxqFifo, VirtualModem};
use fsfax::hylafax::qfile::QFileContent;
use fsfax::hylafax::xferfaxlog::{DataFormat, Params, SendRecord, XferFaxLog, synthetic_dcs};
use support::fakefs::{CallScript, FakeConfig, FakeFs, FaxParams};
use support::send::SendEnv;

const XFERFAXSTATS: &str = "/usr/lib/hylafax/bin/xferfaxstats";

/// Fails the test, naming what to install, unless the real HylaFAX can run here.
fn require_real_hylafax() {
    support::hylafax::require_real_hylafax();
    assert!(
        Path::new(XFERFAXSTATS).exists() && Path::new("/usr/bin/faxstat").exists(),
        "{XFERFAXSTATS} or faxstat missing: install Debian's hylafax-server and hylafax-client \
         (scripts/test.sh does)"
    );
}

fn lab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/hylafax-lab.sh")
}

fn send_record(mailaddr: &str, owner: &str, dest: &str, pages: u32, reason: &str) -> SendRecord {
    let params = Params {
        bit_rate: 14400,
        ecm: true,
        data_format: DataFormat::Mmr,
        ..Params::default()
    };
    SendRecord {
        start: Local::now(),
        commid: "000000001".into(),
        device: "freeswitch0".into(),
        jobid: 7,
        jobtag: "tag\twith \"quotes\"".into(),
        mailaddr: mailaddr.into(),
        external: dest.into(),
        csi: "REMOTE\nCSI".into(),
        params,
        npages: pages,
        jobtime: Duration::from_secs(90),
        conntime: Duration::from_secs(60),
        reason: reason.into(),
        owner: owner.into(),
        dcs: synthetic_dcs(params.data_format),
    }
}

/// xferfaxstats (unmodified awk, pointed at a private spool instead of the Debian bind mount)
/// must read our 19-field SEND records, even with tabs/quotes/newlines in free text.
#[test]
fn xferfaxstats_reads_our_send_records() {
    require_real_hylafax();
    let spool = tempfile::tempdir().unwrap();
    for d in ["bin", "etc", "log"] {
        std::fs::create_dir(spool.path().join(d)).unwrap();
    }
    install_xferfaxstats(spool.path());

    let log = XferFaxLog::new(spool.path(), "log/xferfaxlog");
    log.append(&send_record("alice@example.com", "alice", "5550001", 3, "").to_line())
        .unwrap();
    log.append(
        &send_record(
            "alice@example.com",
            "alice",
            "5550001",
            2,
            "Remote\tfax \"hung up\"\nearly",
        )
        .to_line(),
    )
    .unwrap();
    let logfile = spool.path().join("log/xferfaxlog");
    let text = std::fs::read_to_string(&logfile).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(text.lines().all(|l| l.split('\t').count() == 19));

    let run = |key: &str| xferfaxstats(spool.path(), key, &logfile);
    let by_sender = run("-sender");
    let row = by_sender
        .lines()
        .find(|l| l.starts_with("alice@example.com (alice)"))
        .unwrap_or_else(|| panic!("no sender row in:\n{by_sender}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    // Sender, (owner), Pages, Time, Pg/min, Errs, TypRate, TypData "2-D MMR"
    assert_eq!(cols[2], "5", "{row}");
    assert_eq!(cols[5], "1", "{row}");
    assert_eq!(cols[3], "2:00", "{row}");
    assert_eq!(cols[6], "14400", "{row}");
    assert_eq!(&cols[7..], ["2-D", "MMR"], "{row}");
    let by_dest = run("-dest");
    assert!(
        by_dest.lines().any(|l| l.starts_with("5550001 ")),
        "{by_dest}"
    );
}

/// Copies Debian's xferfaxstats (unmodified awk, pointed at `spool` instead of the Debian bind
/// mount) and what it sources into `spool`.
fn install_xferfaxstats(spool: &Path) {
    for d in ["bin", "etc"] {
        std::fs::create_dir_all(spool.join(d)).unwrap();
    }
    std::fs::copy(
        "/var/spool/hylafax/bin/common-functions",
        spool.join("bin/common-functions"),
    )
    .unwrap();
    std::fs::copy("/etc/hylafax/setup.cache", spool.join("etc/setup.cache")).unwrap();
    let script = std::fs::read_to_string(XFERFAXSTATS).unwrap().replace(
        "SPOOL=/var/spool/hylafax",
        &format!("SPOOL={}", spool.display()),
    );
    std::fs::write(spool.join("xferfaxstats"), script).unwrap();
}

/// xferfaxstats `key` (e.g. `-sender`) on `logfile`, as installed by [`install_xferfaxstats`].
fn xferfaxstats(spool: &Path, key: &str, logfile: &Path) -> String {
    let out = Command::new("sh")
        .arg(spool.join("xferfaxstats"))
        .arg(key)
        .arg(logfile)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Issue 12, item 2: the SEND record of a fax sent as JBIG, 2-D MR or 2-D MMR says so to the
/// real xferfaxstats (it said 1-D MH for every send), as the qfile's `dataformat:` does.
#[tokio::test]
async fn xferfaxstats_shows_the_data_format_each_send_used() {
    require_real_hylafax();
    for (encoding, name) in [("T.85", "JBIG"), ("T.4 2-D", "2-D MR"), ("T.6", "2-D MMR")] {
        let fs = FakeFs::start(
            FakeConfig::new().default_script(CallScript::FaxOk(FaxParams {
                encoding: Some(encoding.into()),
                ..FaxParams::default()
            })),
        )
        .await;
        let env = SendEnv::new(&fs.addr().to_string());
        env.qfile(1, "0401234", &[("test3.tif", 0)], &[]);
        assert_eq!(env.run(1).await, 2, "{encoding}");
        assert_eq!(env.field(1, "dataformat"), name, "{encoding}");
        install_xferfaxstats(&env.spool);
        let logfile = env.spool.join("log/xferfaxlog");
        let report = xferfaxstats(&env.spool, "-sender", &logfile);
        let row = report
            .lines()
            .rev()
            .find(|l| l.trim_end().ends_with(name))
            .unwrap_or_else(|| panic!("{encoding}: no row with {name}:\n{report}"));
        assert!(!row.contains("1-D MH"), "{encoding}: {row}\n{report}");
    }
}

struct Lab {
    dir: PathBuf,
    port: u16,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl Lab {
    fn start() -> Self {
        // One lab at a time on a machine (faxq's lock files are machine-wide).
        let lock = support::hylafax::lab_lock();
        let pid = std::process::id();
        let lab = Lab {
            dir: PathBuf::from(format!("/tmp/fsfax-hylafax-real-{pid}")),
            port: support::hylafax::free_port(),
            _lock: lock,
        };
        lab.start_faxq(false);
        lab
    }

    /// (Re)starts faxq and hfaxd; `keep` keeps the spool (faxq then scans our modem files).
    fn start_faxq(&self, keep: bool) {
        let out = Command::new("bash")
            .arg(lab_script())
            .args(["start", "0"])
            .env("HFLAB_DIR", &self.dir)
            .env("HFLAB_PORT", self.port.to_string())
            .env("HFLAB_KEEP", if keep { "1" } else { "0" })
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "hylafax-lab.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn script(&self, args: &[&str]) -> std::process::Output {
        Command::new("bash")
            .arg(lab_script())
            .args(args)
            .env("HFLAB_DIR", &self.dir)
            .env("HFLAB_PORT", self.port.to_string())
            .env("HFLAB_KEEP", "1")
            .output()
            .unwrap()
    }

    fn spool(&self) -> Spool {
        Spool::new(self.dir.join("spool"))
    }

    fn faxstat_jobs(&self) -> String {
        let out = Command::new("/usr/bin/faxstat")
            .args(["-h", &format!("localhost:{}", self.port), "-s", "-d"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The last lines faxq logged (the lab's syslog catcher), for failure messages.
    fn syslog_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("syslog.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    fn faxstat(&self) -> String {
        let out = Command::new("/usr/bin/faxstat")
            .args(["-h", &format!("localhost:{}", self.port), "-s"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.script(&["stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A modem made only by modem.rs: a restarted faxq finds it and says `HELLO`, dispatches a
/// job to it (and sends `L` on its FIFO), faxstat shows our status file text, and the qfile
/// faxq hands over parses and round-trips.
#[test]
fn real_faxq_and_faxstat_see_our_virtual_modem() {
    require_real_hylafax();
    let lab = Lab::start();
    let spool = lab.spool();
    let dev = "fsfaxreal0";
    let modem = VirtualModem::create(&spool, dev).unwrap();
    // faxq runs as uucp and skips FIFOs it cannot open.
    let uucp = nix::unistd::User::from_name("uucp")
        .unwrap()
        .expect("no uucp user");
    modem
        .set_owner(uucp.uid.as_raw(), uucp.gid.as_raw())
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut reader = rt
        .block_on(async { DeviceFifoReader::open(modem.fifo_path()) })
        .unwrap();

    // A restarted faxq greets every modem that has FIFO.<dev> and etc/config.<dev>.
    lab.start_faxq(true);
    let hello =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(120), reader.recv()).await });
    assert_eq!(
        hello.expect("no HELLO from faxq").unwrap(),
        DeviceMsg::Hello
    );

    let faxq = FaxqFifo::new(&spool);
    modem.set_ready(&faxq, "", DEFAULT_CAPS).unwrap();
    let status = wait_for("faxstat modem line", Duration::from_secs(120), || {
        let s = lab.faxstat();
        s.contains(&format!("Modem {dev} (): Running and idle"))
            .then_some(s)
    });
    assert!(!status.contains("No status"), "{status}");

    // Only our modem is ready, so faxq must dispatch the job to it.
    let out = lab.script(&["submit", "5550002"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lock =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(120), reader.recv()).await });
    let Ok(lock) = lock else {
        panic!(
            "faxq never locked {dev} for the job (no L on FIFO.{dev} within 120 s).\n\
             faxstat -s -d:\n{}\nfaxq's log:\n{}",
            lab.faxstat_jobs(),
            lab.syslog_tail()
        );
    };
    assert_eq!(lock.unwrap(), DeviceMsg::Lock);

    let record_dir = wait_for("SendFaxCmd record", Duration::from_secs(120), || {
        let dir = lab.dir.join("sendfaxcmd");
        std::fs::read_dir(&dir).ok()?.find_map(|e| {
            let p = e.ok()?.path();
            let info = std::fs::read_to_string(p.join("info")).ok()?;
            info.contains("exit=").then_some(p)
        })
    });
    let info = std::fs::read_to_string(record_dir.join("info")).unwrap();
    assert!(info.contains("argv[2]=fsfaxreal0"), "{info}");
    let qfile = std::fs::read(record_dir.join("qfile.before")).unwrap();
    let q = QFileContent::parse("qfile.before", &qfile).unwrap();
    assert_eq!(q.to_bytes(), qfile, "qfile must round-trip byte for byte");
    assert!(q.jobid().unwrap() >= 1);
    assert_eq!(q.number(), Some("5550002"));
    assert_eq!(q.get("returned"), Some("7"));
    assert!(!q.get_all("fax").is_empty());

    modem.write_status("Receiving facsimile").unwrap();
    wait_for("faxstat busy text", Duration::from_secs(120), || {
        lab.faxstat()
            .contains(&format!("Modem {dev} (): Receiving facsimile"))
            .then_some(())
    });
    modem.set_down(&faxq).unwrap();
    wait_for("faxstat down text", Duration::from_secs(120), || {
        lab.faxstat()
            .contains(&format!("Modem {dev} (): Down"))
            .then_some(())
    });
}
