//! supervisor/: the systemd unit (checked by `systemd-analyze verify` where it exists, and
//! always structurally), the Debian 12 bind-mount unit and the supervisor program file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fsfax::config::Config;

fn supervisor_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("supervisor")
}

fn read(name: &str) -> String {
    let path = supervisor_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sample_config() -> Config {
    Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fsfax.conf"))
        .unwrap_or_else(|e| panic!("config/fsfax.conf: {:?}", e.problems()))
}

/// `section -> key -> values` (systemd keys may repeat). Fails on lines that are neither.
fn parse_ini(text: &str, comments: &[char]) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(comments) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_owned());
            out.entry(name.to_owned()).or_default();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not key=value: {line}", i + 1));
        let s = section
            .as_ref()
            .unwrap_or_else(|| panic!("line {}: key outside a section", i + 1));
        out.get_mut(s)
            .unwrap()
            .entry(k.trim().to_owned())
            .or_default()
            .push(v.trim().to_owned());
    }
    out
}

/// systemd time spans as used in the files (`330`, `330s`, `5min`).
fn seconds(v: &str) -> u64 {
    if let Some(m) = v.strip_suffix("min") {
        m.parse::<u64>().unwrap() * 60
    } else {
        v.trim_end_matches('s').parse().unwrap()
    }
}

fn one<'a>(ini: &'a BTreeMap<String, BTreeMap<String, Vec<String>>>, s: &str, k: &str) -> &'a str {
    let values = ini
        .get(s)
        .and_then(|sec| sec.get(k))
        .unwrap_or_else(|| panic!("[{s}] {k} missing"));
    assert_eq!(values.len(), 1, "[{s}] {k} set more than once");
    &values[0]
}

#[test]
fn systemd_unit_structure() {
    let cfg = sample_config();
    let unit = parse_ini(&read("fsfaxd.service"), &['#', ';']);
    for section in ["Unit", "Service", "Install"] {
        assert!(unit.contains_key(section), "[{section}] missing");
    }
    assert!(!one(&unit, "Unit", "Description").is_empty());
    assert!(matches!(one(&unit, "Service", "Type"), "simple" | "notify"));
    let exec: Vec<&str> = one(&unit, "Service", "ExecStart")
        .split_whitespace()
        .collect();
    assert_eq!(exec, ["/usr/bin/fsfaxd", "-c", "/etc/fsfax.conf"]);
    assert_eq!(one(&unit, "Service", "User"), "uucp");
    assert_eq!(one(&unit, "Service", "Group"), "uucp");
    assert_eq!(one(&unit, "Service", "Restart"), "on-failure");
    assert_eq!(
        one(&unit, "Service", "ExecReload"),
        "/bin/kill -HUP $MAINPID"
    );
    let spool = cfg.hylafax.spooldir.to_str().unwrap();
    assert_eq!(one(&unit, "Service", "WorkingDirectory"), spool);
    assert!(
        one(&unit, "Service", "ReadWritePaths")
            .split_whitespace()
            .any(|p| p == spool),
        "ReadWritePaths must include the spool"
    );
    assert!(matches!(
        one(&unit, "Service", "ProtectSystem"),
        "full" | "strict"
    ));
    for key in [
        "PrivateTmp",
        "ProtectHome",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "RestrictNamespaces",
        "LockPersonality",
    ] {
        assert_eq!(one(&unit, "Service", key), "yes", "{key}");
    }
    // KillMode=process: SIGTERM to fsfaxd alone, so it drains, and a faxrcvd it started is
    // never killed by systemd (fsfaxd's journal would not run it again); the stop timeout
    // covers the drain.
    assert_eq!(one(&unit, "Service", "KillMode"), "process");
    assert!(
        Duration::from_secs(seconds(one(&unit, "Service", "TimeoutStopSec")))
            > cfg.gofaxd.shutdown_timeout,
        "TimeoutStopSec must exceed [gofaxd] shutdowntimeout"
    );
    assert!(
        one(&unit, "Service", "BindPaths").ends_with("/etc/hylafax:/var/spool/hylafax/etc"),
        "Debian's /etc/hylafax bind mount"
    );
    assert_eq!(one(&unit, "Install", "WantedBy"), "multi-user.target");
}

#[test]
fn mount_unit_structure() {
    let unit = parse_ini(&read("var-spool-hylafax-etc.mount"), &['#', ';']);
    assert_eq!(one(&unit, "Mount", "What"), "/etc/hylafax");
    let where_ = one(&unit, "Mount", "Where");
    // systemd requires a mount unit to be named after its mount point.
    assert_eq!(
        format!("{}.mount", where_.trim_start_matches('/').replace('/', "-")),
        "var-spool-hylafax-etc.mount"
    );
    assert_eq!(one(&unit, "Mount", "Options"), "bind");
    assert!(one(&unit, "Unit", "Before").contains("fsfaxd.service"));
}

fn systemd_analyze() -> Option<PathBuf> {
    ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Runs `systemd-analyze verify` on `text` saved as `name`; returns the complaints about it.
fn verify(analyze: &Path, name: &str, text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let mut complaints: Vec<String> = text
        .lines()
        .filter(|l| l.contains(&*path.to_string_lossy()) || l.contains(name))
        .map(str::to_owned)
        .collect();
    if !out.status.success() {
        complaints.push(format!(
            "systemd-analyze exited with {}: {text}",
            out.status
        ));
    }
    complaints
}

#[test]
fn systemd_analyze_verify() {
    let Some(analyze) = systemd_analyze() else {
        // The structural tests above still ran; say clearly that this one could not.
        eprintln!("systemd-analyze not installed: only the structural unit checks ran");
        return;
    };
    // verify needs ExecStart's binary to exist: point it at the one this test built.
    let service = read("fsfaxd.service").replace("/usr/bin/fsfaxd", env!("CARGO_BIN_EXE_fsfaxd"));
    let complaints = verify(&analyze, "fsfaxd.service", &service);
    assert!(complaints.is_empty(), "fsfaxd.service: {complaints:#?}");
    let mount = read("var-spool-hylafax-etc.mount");
    let complaints = verify(&analyze, "var-spool-hylafax-etc.mount", &mount);
    assert!(complaints.is_empty(), "mount unit: {complaints:#?}");

    // The check can fail: a mistyped value and an unknown key are reported.
    let broken = service
        .replace("Restart=on-failure", "Restart=sometimes")
        .replace("UMask=0022", "UMask=0022\nProtectSytem=yes");
    let complaints = verify(&analyze, "fsfaxd.service", &broken);
    assert!(
        complaints.iter().any(|c| c.contains("sometimes"))
            && complaints.iter().any(|c| c.contains("ProtectSytem")),
        "systemd-analyze missed the errors: {complaints:#?}"
    );
}

#[test]
fn supervisor_program_file() {
    let cfg = sample_config();
    let conf = parse_ini(&read("fsfaxd.supervisor.conf"), &[';', '#']);
    let p = "program:fsfaxd";
    assert_eq!(conf.len(), 1, "one program only: {:?}", conf.keys());
    let command: Vec<&str> = one(&conf, p, "command").split_whitespace().collect();
    assert_eq!(command, ["/usr/bin/fsfaxd", "-c", "/etc/fsfax.conf"]);
    assert_eq!(one(&conf, p, "user"), "uucp");
    assert_eq!(
        one(&conf, p, "directory"),
        cfg.hylafax.spooldir.to_str().unwrap()
    );
    assert!(matches!(
        one(&conf, p, "autorestart"),
        "true" | "unexpected"
    ));
    assert_eq!(one(&conf, p, "autostart"), "true");
    assert!(matches!(one(&conf, p, "stopsignal"), "TERM" | "INT"));
    let wait = Duration::from_secs(one(&conf, p, "stopwaitsecs").parse().unwrap());
    assert!(
        wait >= cfg.gofaxd.shutdown_timeout,
        "stopwaitsecs {wait:?} < shutdowntimeout {:?}",
        cfg.gofaxd.shutdown_timeout
    );
    // -f would send the logs to stderr: supervisor runs fsfaxd with syslog logging.
    assert!(!command.contains(&"-f"));
}
