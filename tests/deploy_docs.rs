//! README.md (its deployment chapter in particular) names files, keys and lines an
//! admin will type; each must exist in the form the package ships.
//! Also what the README's test command prints when tests fail (scripts/failure-digest.py).

use std::path::Path;

fn repo(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn doc() -> String {
    repo("README.md")
}

/// Every `/usr/share/doc/fsfax/examples/...` path in the text is a file the package ships.
#[test]
fn example_paths_exist() {
    let doc = doc();
    let prefix = "/usr/share/doc/fsfax/examples/";
    let mut seen = 0;
    for (i, _) in doc.match_indices(prefix) {
        let rest = &doc[i + prefix.len()..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '`' || c == ')')
            .unwrap_or(rest.len());
        let rel = rest[..end].trim_end_matches(['.', ',']);
        if rel.is_empty() {
            continue; // the directory itself
        }
        let source = if let Some(r) = rel.strip_prefix("hylafax/") {
            format!("config/hylafax/{r}")
        } else if rel.starts_with("freeswitch-conf") || rel.starts_with("supervisor/") {
            rel.to_owned()
        } else {
            panic!("unknown example path {prefix}{rel}");
        };
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(&source).exists(),
            "{prefix}{rel}: no {source} in the repository"
        );
        seen += 1;
    }
    assert!(seen >= 4, "only {seen} example paths");
}

/// Every `[section] key` the text names is a key fsfax accepts.
#[test]
fn config_keys_exist() {
    let doc = doc();
    let mut seen = 0;
    for (i, _) in doc.match_indices("`[") {
        let rest = &doc[i + 2..];
        let Some(close) = rest.find(']') else {
            continue;
        };
        let section = &rest[..close];
        let after = &rest[close + 1..];
        let end = after.find('`').unwrap();
        let key = after[..end].trim();
        let keys = fsfax::config::KEYS
            .iter()
            .find(|(s, _)| *s == section)
            .unwrap_or_else(|| panic!("unknown section [{section}]"))
            .1;
        if !key.is_empty() {
            assert!(keys.contains(&key), "unknown key [{section}] {key}");
        }
        seen += 1;
    }
    assert!(seen >= 8, "only {seen} keys");
}

/// The HylaFAX lines shown are the snippet's, and the modem names the ones fsfaxd creates.
#[test]
fn hylafax_lines_match_the_snippet() {
    let doc = doc();
    for line in repo("config/hylafax/config.snippet")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        assert!(doc.contains(&format!("\n{line}\n")), "{line:?} missing");
    }
    assert!(doc.contains("touch /etc/hylafax/config.freeswitch$i"));
    // The unit's documented behaviour: not enabled by the package, reload is SIGHUP.
    let unit = repo("supervisor/fsfaxd.service");
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(doc.contains("systemctl reload fsfaxd"));
    assert!(doc.contains("systemctl enable --now fsfaxd"));
    // The sed that disables the wrapper's mounts comments out mount and umount lines only.
    let wrapper = "#!/bin/sh\nmount -o bind /etc/hylafax /var/spool/hylafax/etc\n\
                   /usr/lib/hylafax/bin/\"$name\" \"$@\"\ne=$?\numount /var/spool/hylafax/etc\nexit $e\n";
    let sed = doc
        .lines()
        .find(|l| l.starts_with("sed -i") && l.contains("hylafax_wrapper"))
        .unwrap();
    let script = sed.split('\'').nth(1).expect("sed script in single quotes");
    let out = std::process::Command::new("sed")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(wrapper.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let patched = String::from_utf8(out.stdout).unwrap();
    assert!(patched.contains("\n#mount -o bind"), "{patched}");
    assert!(patched.contains("\n#umount "), "{patched}");
    assert!(patched.contains("\n/usr/lib/hylafax/bin/"), "{patched}");
    assert!(patched.contains("\nexit $e"), "{patched}");
}

/// Runs scripts/failure-digest.py (what scripts/test.sh ends a failed run with) on `log`.
fn digest(log: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nextest.log");
    std::fs::write(&file, log).unwrap();
    let out = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/failure-digest.py"))
        .arg(&file)
        .output()
        .expect("python3 (scripts/test.sh installs it)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The last lines of a failed CI run name each failed test, where it panicked and its
/// expectation; a timed-out test is named too; a green run adds nothing.
#[test]
fn a_failed_run_ends_with_a_digest_naming_test_place_and_expectation() {
    let failed = "\
        FAIL [ 122.316s] (482/496) fsfax::send_hylafax faxq_shows_the_resumed_count
  stderr ───
    thread 'faxq_shows_the_resumed_count' (31560) panicked at tests/send_hylafax.rs:241:5:
    the retry did not finish the job:
    06:04:58 FaxQueuer[31660]: MODEM freeswitch2: READY
     TIMEOUT [ 600.002s] (490/496) fsfax::soak soak_mixed_run
────────────
     Summary [ 679.657s] 496 tests run: 494 passed, 2 failed, 0 skipped
        FAIL [ 122.316s] (482/496) fsfax::send_hylafax faxq_shows_the_resumed_count
";
    let text = digest(failed);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "test.sh: what failed, in short (each test's full output is above):",
            "  FAIL fsfax::send_hylafax faxq_shows_the_resumed_count at \
             tests/send_hylafax.rs:241:5: the retry did not finish the job:",
            "  TIMEOUT fsfax::soak soak_mixed_run",
        ],
        "{text}"
    );
    let green = "     Summary [ 500.1s] 496 tests run: 496 passed, 0 skipped\n";
    assert_eq!(digest(green), "");
}
