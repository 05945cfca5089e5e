//! README.md (its deployment chapter in particular) names files, keys and lines an
//! admin will type; each must exist in the form the package ships.

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
