//! The fsfaxd and fsfaxsend command lines: version, --check-config, usage errors, and
//! surviving faxq's read-only stdout/stderr.

use std::fs::{self, File};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod support;

const FSFAXD: &str = env!("CARGO_BIN_EXE_fsfaxd");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The fsfaxsend under test (the shipped static build under scripts/test.sh).
fn fsfaxsend() -> String {
    support::fsfaxsend().to_string_lossy().into_owned()
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/gofax.conf")
}

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env_remove("FSFAX_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("binary runs")
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The fixture with its spool directory replaced (and optional further line edits).
fn fixture_copy(dir: &Path, spool: &Path, edits: &[(&str, &str)]) -> (PathBuf, String) {
    let mut text = fs::read_to_string(fixture()).unwrap().replace(
        "spooldir = /var/spool/hylafax",
        &format!("spooldir = {}", spool.display()),
    );
    for (from, to) in edits {
        assert!(text.contains(from), "fixture lacks {from:?}");
        text = text.replacen(from, to, 1);
    }
    let path = dir.join("fsfax.conf");
    fs::write(&path, &text).unwrap();
    (path, text)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.starts_with(needle))
        .unwrap_or_else(|| panic!("no line {needle:?}"))
        + 1
}

#[test]
fn fsfaxd_version_exits_zero() {
    let out = run(FSFAXD, &["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("fsfaxd {VERSION}\n")
    );
}

#[test]
fn fsfaxsend_version_exits_zero() {
    let out = run(&fsfaxsend(), &["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("fsfaxsend {VERSION}\n")
    );
}

#[test]
fn check_config_on_the_unchanged_fixture() {
    let fixture = fixture();
    let out = run(FSFAXD, &["--check-config", "-c", fixture.to_str().unwrap()]);
    let lines = stderr_lines(&out);
    if Path::new("/var/spool/hylafax").is_dir() {
        assert_eq!(out.status.code(), Some(0), "{lines:?}");
        assert!(lines.is_empty(), "{lines:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("header = ACME Fax Services\n"), "{stdout}");
    } else {
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("gofax.conf:19: error: [hylafax] spooldir:"),
            "{lines:?}"
        );
        assert!(
            lines[0].contains("/var/spool/hylafax does not exist"),
            "{lines:?}"
        );
    }
}

#[test]
fn check_config_with_existing_spool_prints_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let (conf, _) = fixture_copy(dir.path(), dir.path(), &[]);
    // -c after the flag and before it both work.
    for args in [
        ["--check-config", "-c", conf.to_str().unwrap()],
        ["-c", conf.to_str().unwrap(), "--check-config"],
    ] {
        let out = run(FSFAXD, &args);
        assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
        assert!(out.stderr.is_empty(), "{:?}", stderr_lines(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        for expected in [
            "gateway = default\ngateway = backup-gw\n",
            "password = ********\n",
            "answerafter = 2000\n",
            "disableecmafterretry = 3\n",
            "failedresponse = UNALLOCATED_NUMBER\nfailedresponse = CALL_REJECTED\n",
            "allowedpeers = 127.0.0.1, ::1\n",
        ] {
            assert!(stdout.contains(expected), "{expected:?} not in\n{stdout}");
        }
        assert!(!stdout.contains("ClueCon"));
    }
}

#[test]
fn check_config_with_missing_spool_reports_only_that() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("no-such-spool");
    let (conf, _) = fixture_copy(dir.path(), &spool, &[]);
    let out = run(FSFAXD, &["-c", conf.to_str().unwrap(), "--check-config"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        lines[0],
        format!(
            "{}:19: error: [hylafax] spooldir: {} does not exist",
            conf.display(),
            spool.display()
        )
    );
}

#[test]
fn check_config_reports_every_problem_of_a_mangled_copy_with_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (conf, text) = fixture_copy(
        dir.path(),
        dir.path(),
        &[
            ("gateway = default", "gatway = default"),
            ("verbose = false", "verbose = maybe"),
            ("modems = 5", "modems = -5"),
            ("[gofaxsend]", "[gofaxsnd]"),
        ],
    );
    let out = run(FSFAXD, &["--check-config", "-c", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let lines = stderr_lines(&out);
    let file = conf.display().to_string();
    let expected = [
        (
            line_of(&text, "gatway"),
            "[freeswitch] gatway: unknown key",
            "did you mean `gateway`?",
        ),
        (
            line_of(&text, "verbose"),
            "[freeswitch] verbose:",
            "not a boolean",
        ),
        (line_of(&text, "modems"), "[hylafax] modems:", "negative"),
        (
            line_of(&text, "[gofaxsnd]"),
            "unknown section `[gofaxsnd]`",
            "did you mean `[gofaxsend]`?",
        ),
    ];
    assert_eq!(lines.len(), expected.len(), "{lines:#?}");
    for (line, (number, what, hint)) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(&format!("{file}:{number}: error: ")),
            "{line} (want line {number})"
        );
        assert!(line.contains(what) && line.contains(hint), "{line}");
    }
}

#[test]
fn fsfaxd_start_with_a_broken_config_exits_one_with_the_problems() {
    let dir = tempfile::tempdir().unwrap();
    let (conf, _) = fixture_copy(
        dir.path(),
        dir.path(),
        &[("verbose = false", "verbose = maybe")],
    );
    let out = run(FSFAXD, &["-f", "-c", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("verbose: `maybe` is not a boolean"),
        "{stderr}"
    );
}

#[test]
fn sample_config_checks_clean_apart_from_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fsfax.conf");
    let text = fs::read_to_string(sample).unwrap().replace(
        "spooldir = /var/spool/hylafax",
        &format!("spooldir = {}", dir.path().display()),
    );
    let conf = dir.path().join("fsfax.conf");
    fs::write(&conf, text).unwrap();
    let out = run(FSFAXD, &["--check-config", "-c", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{:?}", stderr_lines(&out));
    assert!(out.stderr.is_empty(), "{:?}", stderr_lines(&out));
}

#[test]
fn fsfaxsend_usage_errors_exit_one_and_leave_the_qfile_alone() {
    let dir = tempfile::tempdir().unwrap();
    let qfile = dir.path().join("q1");
    fs::write(&qfile, "state:6\nreturned:7\n").unwrap();
    let q = qfile.to_str().unwrap();
    for args in [
        vec![],
        vec![q],
        vec!["-m", "freeswitch0"],
        vec!["-m", "freeswitch0", "--bogus", q],
        vec!["-m", "../../etc", q],
        vec!["-c"],
    ] {
        let out = run(&fsfaxsend(), &args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {:?}",
            stderr_lines(&out)
        );
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    assert_eq!(fs::read_to_string(&qfile).unwrap(), "state:6\nreturned:7\n");
}

#[test]
fn fsfaxsend_takes_config_before_or_after_other_arguments() {
    let missing = "/nonexistent-fsfax-dir/fsfax.conf";
    for args in [
        ["-c", missing, "-m", "freeswitch0", "sendq/q1"],
        ["-m", "freeswitch0", "sendq/q1", "-c", missing],
    ] {
        let out = run(&fsfaxsend(), &args);
        // A configuration error asks faxq to retry (0): the admin can fix the file.
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(missing), "{args:?}: {stderr}");
    }
}

/// faxq runs the send command with stdout and stderr on a read-only /dev/null and stdin on
/// /dev/full: every write fails, and that must never become a panic or a signal.
fn run_like_faxq(bin: &str, args: &[&str]) -> std::process::ExitStatus {
    let read_only = || Stdio::from(File::open("/dev/null").unwrap());
    Command::new(bin)
        .args(args)
        .env_remove("FSFAX_LOG")
        .stdin(Stdio::from(File::open("/dev/full").unwrap()))
        .stdout(read_only())
        .stderr(read_only())
        .status()
        .expect("binary runs")
}

#[test]
fn fsfaxsend_survives_read_only_stdout_and_stderr() {
    let fixture = fixture();
    let conf = fixture.to_str().unwrap();
    let cases: [(&[&str], i32); 5] = [
        (&["-c", conf, "-m", "freeswitch0", "sendq/q1"], 0),
        (
            &[
                "-c",
                "/nonexistent/fsfax.conf",
                "-m",
                "freeswitch0",
                "sendq/q1",
            ],
            0,
        ),
        (&["-m", "freeswitch0"], 1),
        (&["--help"], 0),
        (&["--version"], 0),
    ];
    for (args, code) in cases {
        let status = run_like_faxq(&fsfaxsend(), args);
        assert_eq!(status.signal(), None, "{args:?} died from a signal");
        assert_eq!(status.code(), Some(code), "{args:?}");
    }
}

#[test]
fn fsfaxd_survives_read_only_stdout_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let (conf, _) = fixture_copy(dir.path(), dir.path(), &[]);
    let status = run_like_faxq(FSFAXD, &["--check-config", "-c", conf.to_str().unwrap()]);
    assert_eq!(status.signal(), None);
    assert_eq!(status.code(), Some(0));
    let status = run_like_faxq(FSFAXD, &["--no-such-flag"]);
    assert_eq!(status.signal(), None);
    assert_eq!(status.code(), Some(2));
}

/// Issue 16: `--check-config` names what cannot work with several nodes, with its line: a
/// node listed twice, a password for a node that is not there, a spoolpath that is not
/// absolute.
#[test]
fn check_config_reports_node_keys_that_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    fs::create_dir(&spool).unwrap();
    let (conf, text) = fixture_copy(
        dir.path(),
        &spool,
        &[(
            "socket = 127.0.0.1:8021",
            "socket = 127.0.0.1:8021\nnode = 10.0.0.12:8021\nnode = 127.0.0.1:8021\n\
             nodepassword = 10.0.0.99:8021 secret\nspoolpath = mnt/hylafax",
        )],
    );
    let out = run(FSFAXD, &["-c", conf.to_str().unwrap(), "--check-config"]);
    assert_eq!(out.status.code(), Some(1), "{:?}", stderr_lines(&out));
    let lines = stderr_lines(&out);
    let c = conf.display();
    let expect = [
        format!(
            "{c}:{}: error: [freeswitch] node: 127.0.0.1:8021 is listed twice",
            line_of(&text, "node = 127.0.0.1:8021")
        ),
        format!(
            "{c}:{}: error: [freeswitch] nodepassword: 10.0.0.99:8021 is not a node",
            line_of(&text, "nodepassword")
        ),
        format!(
            "{c}:{}: error: [freeswitch] spoolpath: mnt/hylafax is not an absolute path",
            line_of(&text, "spoolpath")
        ),
    ];
    for e in &expect {
        assert!(
            lines.iter().any(|l| l.starts_with(e.as_str())),
            "{e}\nin {lines:#?}"
        );
    }
}
