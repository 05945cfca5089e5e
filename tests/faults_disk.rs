//! The spool disk full: a small tmpfs mounted in a test-private directory (when running as root
//! and `mount -t tmpfs` works), filled to the last byte; otherwise the spool's directories made
//! read-only (which stops a non-root fsfax the same way). fsfaxd and fsfaxsend must report
//! clear errors, never panic, never claim a fax they do not have, and recover once there is
//! room again.

mod support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::fakefs::{CallSetup, FakeCall, FakeConfig, FakeFs};
use support::fsfaxd::{Fsfaxd, prepare_spool, wait_async};
use support::send::SendEnv;

/// Waits end as soon as what they wait for holds; this only bounds a hang.
const T: Duration = support::wait::HANG;

/// A full file system under `dir`, undone on drop.
enum Full {
    /// A mounted tmpfs, with `filler` taking every free byte.
    Tmpfs { filler: PathBuf },
    /// Directories made read-only (0555).
    ReadOnly { dirs: Vec<PathBuf> },
}

impl Full {
    /// Mounts a 2 MiB tmpfs on `dir` (which must be empty); `None` if that is not possible.
    fn mount(dir: &Path) -> Option<()> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m,mode=0755", "fsfax-test"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(())
    }

    /// Fills the tmpfs on `dir`, or makes `dirs` read-only if `mounted` is false.
    fn fill(dir: &Path, mounted: bool, dirs: &[PathBuf]) -> Full {
        if mounted {
            let filler = dir.join("filler");
            let mut f = std::fs::File::create(&filler).unwrap();
            let chunk = vec![0u8; 64 * 1024];
            loop {
                if f.write_all(&chunk).is_err() {
                    break;
                }
            }
            // Small writes until not even one byte fits.
            while f.write_all(b"x").is_ok() {}
            let _ = f.sync_all();
            Full::Tmpfs { filler }
        } else {
            for d in dirs {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o555)).unwrap();
            }
            Full::ReadOnly {
                dirs: dirs.to_vec(),
            }
        }
    }

    /// Makes room again.
    fn free(&self) {
        match self {
            Full::Tmpfs { filler, .. } => std::fs::remove_file(filler).unwrap(),
            Full::ReadOnly { dirs } => {
                for d in dirs {
                    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
                }
            }
        }
    }
}

/// Unmounts on drop (lazily, so a still-open file cannot keep it).
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receptions_on_a_full_spool_fail_clearly_and_recover_when_there_is_room() {
    let base = tempfile::tempdir().unwrap();
    let spool = base.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let mounted = Full::mount(&spool).is_some();
    let _unmount = mounted.then(|| Mounted(spool.clone()));
    eprintln!(
        "disk full by {}",
        if mounted {
            "a full tmpfs"
        } else {
            "read-only directories"
        }
    );
    prepare_spool(&spool);
    let d = Fsfaxd::start_on(&spool, 1, "");
    let full = Full::fill(&spool, mounted, &[spool.join("recvq"), spool.join("log")]);

    for _ in 0..3 {
        let c = FakeCall::connect(d.addr, CallSetup::default())
            .await
            .unwrap();
        assert!(c.wait_finished(T).await, "the call must end:\n{}", d.log());
    }
    assert!(
        wait_async(T, || d.status("freeswitch0") == "Running and idle").await,
        "{}",
        d.log()
    );
    let log = d.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("No space left on device") || log.contains("Permission denied"),
        "the log says why:\n{log}"
    );
    assert!(
        d.faxrcvd_runs().is_empty(),
        "nothing was received, nothing is mailed"
    );
    // No document reached recvq complete; anything there is unreadable and was not claimed.
    for r in d.xferfaxlog() {
        assert_ne!(
            r[13], "\"\"",
            "a fax on a full disk is never logged as fine: {r:?}"
        );
    }

    full.free();
    let c = FakeCall::connect(d.addr, CallSetup::default())
        .await
        .unwrap();
    assert!(c.wait_finished(T).await);
    assert!(
        wait_async(T, || d.faxrcvd_runs().len() == 1).await,
        "the next call after the disk has room is received:\n{}",
        d.log()
    );
    assert!(wait_async(T, || d.journal().is_empty()).await);
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_on_a_full_spool_is_never_done_unless_sent() {
    let fs = FakeFs::start(FakeConfig::new()).await;
    let env = SendEnv::new(&fs.addr().to_string());
    // Mount over the harness's spool, then lay it out again inside the tmpfs.
    let mounted = Full::mount(&env.spool).is_some();
    let _unmount = mounted.then(|| Mounted(env.spool.clone()));
    for d in [
        "log", "sendq", "docq", "tmp", "status", "recvq", "etc", "bin",
    ] {
        std::fs::create_dir_all(env.spool.join(d)).unwrap();
    }
    // Two documents, the second from its third page: fsfaxsend must merge them in tmp/.
    env.qfile(1, "0401234", &[("test3.tif", 0), ("test12.tif", 2)], &[]);
    let full = Full::fill(
        &env.spool,
        mounted,
        &[env.spool.join("tmp"), env.spool.join("log")],
    );
    let code = env.run(1).await;
    let sent = fs.published().iter().any(|e| {
        e.get_decoded("Event-Subclass").as_deref() == Some("spandsp::txfaxresult")
            && e.get_decoded("fax-success").as_deref() == Some("1")
    });
    assert!(matches!(code, 0..=2), "exit {code}");
    if env.field(1, "returned") == "2" {
        assert!(sent, "done without a sent fax");
    }
    assert!(!sent, "nothing can be sent without the merged document");
    assert_eq!(code, 0, "a full disk is a retry, not a failed job");
    let status = env.field(1, "status");
    assert!(!status.is_empty(), "the status says why");
    assert!(fs.originates().is_empty(), "{status}");

    full.free();
    assert_eq!(
        env.run(1).await,
        2,
        "with room again the retry sends the fax"
    );
    assert_eq!(env.field(1, "returned"), "2");
}
