//! config/hylafax/: the example DynamicConfig, DynamicConfigOutgoing and FaxDispatch run as
//! fsfaxd, fsfaxsend and faxrcvd run them (from a spool whose etc/ holds them and their
//! tables), and their output is read by fsfax's own parser.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fsfax::hylafax::dynconfig::{self, DynSettings, IncomingConfig, OutgoingConfig};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/hylafax")
}

/// A spool with the examples installed in etc/, as the README says.
fn spool() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, etc.join(path.file_name().unwrap())).unwrap();
    }
    dir
}

async fn run(spool: &Path, script: &str, args: &[&str]) -> DynSettings {
    let out = dynconfig::run(
        Path::new(script),
        args,
        spool,
        Duration::from_secs(30),
        dynconfig::DEFAULT_MAX_OUTPUT,
    )
    .await
    .unwrap();
    assert!(
        out.success(),
        "{script} {args:?}: {} {}",
        out.status,
        out.stderr
    );
    assert!(out.stderr.is_empty(), "{script} {args:?}: {}", out.stderr);
    let settings = out.settings();
    assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
    settings
}

/// fsfaxd: `<modem> <cidnum> <cidname> <recipient> <gateway>`.
async fn incoming(spool: &Path, cidnum: &str) -> IncomingConfig {
    run(
        spool,
        "etc/DynamicConfig",
        &["freeswitch0", cidnum, "Some Name", "4930123456", "default"],
    )
    .await
    .incoming()
}

/// fsfaxsend: `<modem> <owner> <number> <jobid>`.
async fn outgoing(spool: &Path, owner: &str, number: &str) -> OutgoingConfig {
    run(
        spool,
        "etc/DynamicConfigOutgoing",
        &["freeswitch1", owner, number, "42"],
    )
    .await
    .outgoing()
}

#[tokio::test]
async fn dynamicconfig_screens_listed_callers() {
    let spool = spool();
    let p = spool.path();
    assert!(
        incoming(p, "+4989123456").await.reject_call,
        "listed with a comment"
    );
    assert!(incoming(p, "0301234567").await.reject_call);
    assert!(incoming(p, "").await.reject_call, "anonymous is listed");
    assert!(!incoming(p, "+4930999999").await.reject_call);
    // A prefix or a pattern of a listed number is not a match.
    assert!(!incoming(p, "+498912345").await.reject_call);
    assert!(!incoming(p, ".*").await.reject_call);
    assert!(!incoming(p, "-e").await.reject_call);
    // Hostile caller numbers are data, never code.
    assert!(!incoming(p, "$(touch pwned)`touch pwned`").await.reject_call);
    assert!(!p.join("pwned").exists());

    // No list: everyone is accepted.
    std::fs::remove_file(p.join("etc/blocked-callers")).unwrap();
    assert!(!incoming(p, "+4989123456").await.reject_call);
    assert_eq!(incoming(p, "").await, IncomingConfig::default());
}

#[tokio::test]
async fn dynamicconfig_outgoing_per_user() {
    let spool = spool();
    let p = spool.path();

    let alice = outgoing(p, "alice", "4940111").await;
    assert!(!alice.reject_call);
    assert_eq!(alice.fax_number.as_deref(), Some("+4930123456"));
    assert_eq!(
        alice.local_identifier.as_deref(),
        Some("+49 30 123456 ACME Sales")
    );
    assert!(alice.gateways.is_empty(), "`-` keeps [freeswitch] gateway");

    let bob = outgoing(p, "bob", "4940111").await;
    assert_eq!(bob.fax_number.as_deref(), Some("+4930123457"));
    assert_eq!(bob.gateways, ["backup-gw", "default"]);
    assert_eq!(bob.local_identifier, None);

    assert!(outgoing(p, "mallory", "4940111").await.reject_call);

    // Users not listed get the `*` line.
    let other = outgoing(p, "carol", "4940111").await;
    assert!(!other.reject_call);
    assert_eq!(other.fax_number.as_deref(), Some("+4930123400"));
    assert_eq!(other.gateways, ["default"]);
    assert_eq!(
        other.local_identifier.as_deref(),
        Some("+49 30 1234-0 ACME")
    );
    // A name that only looks like a listed one, or tries awk escapes, is not that user.
    assert_eq!(
        outgoing(p, "alice\\", "4940111")
            .await
            .fax_number
            .as_deref(),
        Some("+4930123400")
    );

    // Premium-rate numbers are refused for everyone.
    assert!(outgoing(p, "alice", "09001234").await.reject_call);
    assert!(outgoing(p, "carol", "+499001234").await.reject_call);

    // Without the table, the defaults of fsfax.conf apply.
    std::fs::remove_file(p.join("etc/fax-senders")).unwrap();
    assert_eq!(
        outgoing(p, "alice", "4940111").await,
        OutgoingConfig::default()
    );
}

/// Sources etc/FaxDispatch the way bin/faxrcvd does (bash, from the spool) and returns
/// SENDTO, FILETYPE, SIGNALRATE and NOTIFY_FAXMASTER.
fn dispatch(spool: &Path, recipient: &str, rate: &str, cause: &str) -> [String; 4] {
    let out = Command::new("bash")
        .args([
            "-c",
            "set -u; SIGNALRATE=unset; . etc/FaxDispatch; \
             printf '%s\\n' \"$SENDTO\" \"$FILETYPE\" \"$SIGNALRATE\" \"$NOTIFY_FAXMASTER\"; \
             set | grep -c '^fsfax_' || true",
        ])
        .current_dir(spool)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("CALLID1", "+4989555")
        .env("CALLID2", "Caller Name")
        .env("CALLID3", recipient)
        .env("CALLID4", "default")
        .env("TRANSFER_RATE", rate)
        .env("HANGUPCAUSE", cause)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    // FaxDispatch runs inside faxrcvd: it must not leave its own variables behind.
    assert_eq!(lines[4], "0", "leftover fsfax_ variables");
    [0, 1, 2, 3].map(|i| lines[i].to_owned())
}

#[test]
fn faxdispatch_routes_by_recipient() {
    let spool = spool();
    let p = spool.path();
    assert_eq!(
        dispatch(p, "4930123456", "14400", "NORMAL_CLEARING"),
        ["sales@example.com", "pdf", "14400 bit/s", "errors"]
    );
    assert_eq!(
        dispatch(p, "4930123457", "9600", "NORMAL_CLEARING"),
        ["accounts@example.com", "tif", "9600 bit/s", "errors"]
    );
    // Anything else goes to the `*` line; an unusual hang-up tells the faxmaster.
    assert_eq!(
        dispatch(p, "4930999999", "", "RECOVERY_ON_TIMER_EXPIRE"),
        ["office@example.com", "pdf", "unset", "always"]
    );
    // Without a table, everything goes to the FaxMaster alias.
    std::fs::remove_file(p.join("etc/fax-recipients")).unwrap();
    assert_eq!(
        dispatch(p, "4930123456", "14400", "NORMAL_CLEARING"),
        ["FaxMaster", "pdf", "14400 bit/s", "errors"]
    );
}

#[test]
fn hylafax_config_snippet() {
    let text = std::fs::read_to_string(examples().join("config.snippet")).unwrap();
    let s = DynSettings::parse(&text);
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!(s.get("SendFaxCmd"), Some("/usr/bin/fsfaxsend"));
    assert_eq!(s.get("MaxBatchJobs"), Some("1"));
}

#[test]
fn scripts_are_executable_and_fsfax_conf_names_them() {
    use std::os::unix::fs::PermissionsExt;
    for script in ["DynamicConfig", "DynamicConfigOutgoing"] {
        let mode = std::fs::metadata(examples().join(script))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{script} is not executable");
    }
    // The sample fsfax.conf shows where they go.
    let conf =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fsfax.conf"))
            .unwrap();
    assert!(conf.contains(";dynamicconfig = etc/DynamicConfig\n"));
    assert!(conf.contains(";dynamicconfig = etc/DynamicConfigOutgoing\n"));
}
