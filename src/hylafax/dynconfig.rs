//! DynamicConfig scripts (HylaFAX's per-call configuration hook).
//!
//! Incoming: `<script> <modem> <cidnum> <cidname> <recipient> <gateway>`; outgoing:
//! `<script> <modem> <owner> <number> <jobid>`. The caller builds the argv; this module runs
//! the program without a shell, with a timeout that kills its whole process group and bounded
//! output capture, and parses the output the way HylaFAX applies config lines: `Key: value`,
//! key case-insensitive, a later line overrides an earlier one, `#` comments and blank lines
//! ignored, other lines reported as warnings.
//!
//! Values: a `"..."` value is unquoted with HylaFAX's escapes. An unquoted value is the whole
//! trimmed rest of the line (GOfax.IP compatible; HylaFAX would stop at the first blank, which
//! silently truncates a `LocalIdentifier: My Company`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use super::process::{self, RunError, Streams};

/// Default output bound per stream.
pub const DEFAULT_MAX_OUTPUT: usize = 64 * 1024;

/// Errors running a DynamicConfig program. Each names the program.
#[derive(Debug, thiserror::Error)]
pub enum DynConfigError {
    #[error("DynamicConfig {program}: cannot start: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("DynamicConfig {program}: cannot wait for it: {source}")]
    Wait {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("DynamicConfig {program}: no answer within {timeout:?}; killed")]
    Timeout { program: PathBuf, timeout: Duration },
}

/// What the program did. A non-zero exit is recorded, not an error: the caller decides.
#[derive(Debug, Clone)]
pub struct DynOutput {
    pub status: ExitStatus,
    /// stdout, lossily decoded.
    pub stdout: String,
    /// stderr, lossily decoded (for the log; GOfax.IP discarded it).
    pub stderr: String,
    /// Output beyond the bound was discarded.
    pub truncated: bool,
}

impl DynOutput {
    /// Exit status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The parsed settings from stdout.
    pub fn settings(&self) -> DynSettings {
        DynSettings::parse(&self.stdout)
    }
}

/// Runs `program args…` in `cwd` (no shell; argv passed as is; stdin `/dev/null`).
pub async fn run<I, S>(
    program: &Path,
    args: I,
    cwd: &Path,
    timeout: Duration,
    max_output: usize,
) -> Result<DynOutput, DynConfigError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let captured = process::run_bounded(
        program,
        args,
        cwd,
        &[],
        timeout,
        max_output,
        Streams::Separate,
    )
    .await
    .map_err(|e| match e {
        RunError::Spawn(source) => DynConfigError::Spawn {
            program: program.to_path_buf(),
            source,
        },
        RunError::Wait(source) => DynConfigError::Wait {
            program: program.to_path_buf(),
            source,
        },
        RunError::Timeout => DynConfigError::Timeout {
            program: program.to_path_buf(),
            timeout,
        },
    })?;
    Ok(DynOutput {
        status: captured.status,
        stdout: String::from_utf8_lossy(&captured.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&captured.stderr).into_owned(),
        truncated: captured.stdout_truncated || captured.stderr_truncated,
    })
}

/// Parsed `Key: value` lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DynSettings {
    /// `(lower-case key, value)` in output order.
    entries: Vec<(String, String)>,
    /// Lines that were neither settings, comments nor blank.
    pub warnings: Vec<String>,
}

/// Options HylaFAX honours for an incoming call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncomingConfig {
    pub reject_call: bool,
    pub local_identifier: Option<String>,
}

/// Options for an outgoing job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutgoingConfig {
    pub reject_call: bool,
    pub local_identifier: Option<String>,
    pub tag_line: Option<String>,
    pub fax_number: Option<String>,
    pub call_prefix: Option<String>,
    /// `Gateway:` split on `,`, each trimmed, empty ones dropped.
    pub gateways: Vec<String>,
}

impl DynSettings {
    /// Parses program output.
    pub fn parse(text: &str) -> Self {
        let mut s = Self::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                s.warnings.push(format!(
                    "line {}: missing ':' in {:?}",
                    i + 1,
                    truncate(line)
                ));
                continue;
            };
            let key = key.trim().to_ascii_lowercase();
            if key.is_empty() {
                s.warnings
                    .push(format!("line {}: empty key in {:?}", i + 1, truncate(line)));
                continue;
            }
            match unquote(value.trim()) {
                Some(v) => s.entries.push((key, v)),
                None => s.warnings.push(format!(
                    "line {}: missing closing quote in {:?}",
                    i + 1,
                    truncate(line)
                )),
            }
        }
        s
    }

    /// The value of `key` (case-insensitive); the last occurrence wins.
    pub fn get(&self, key: &str) -> Option<&str> {
        let key = key.to_ascii_lowercase();
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean HylaFAX-style: `true|yes|on|1` (any case) is true, anything else false.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).map(parse_bool)
    }

    /// `RejectCall`, `LocalIdentifier`.
    pub fn incoming(&self) -> IncomingConfig {
        IncomingConfig {
            reject_call: self.get_bool("RejectCall").unwrap_or(false),
            local_identifier: self.non_empty("LocalIdentifier"),
        }
    }

    /// `RejectCall`, `LocalIdentifier`, `TagLine`, `FAXNumber`, `CallPrefix`, `Gateway`.
    pub fn outgoing(&self) -> OutgoingConfig {
        OutgoingConfig {
            reject_call: self.get_bool("RejectCall").unwrap_or(false),
            local_identifier: self.non_empty("LocalIdentifier"),
            tag_line: self.non_empty("TagLine"),
            fax_number: self.non_empty("FAXNumber"),
            call_prefix: self.non_empty("CallPrefix"),
            gateways: self
                .get("Gateway")
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    fn non_empty(&self, key: &str) -> Option<String> {
        self.get(key).filter(|v| !v.is_empty()).map(str::to_owned)
    }
}

/// HylaFAX `getBoolean` plus `1`.
pub fn parse_bool(v: &str) -> bool {
    let v = v.trim();
    ["true", "yes", "on", "1"]
        .iter()
        .any(|t| v.eq_ignore_ascii_case(t))
}

/// `"..."` with HylaFAX's escapes (`\n \t \r \b \f \v`, `\nnn` octal, `\<c>`); `None` if the
/// closing quote is missing. Unquoted values are returned as they are.
pub(super) fn unquote(v: &str) -> Option<String> {
    let Some(rest) = v.strip_prefix('"') else {
        return Some(v.to_owned());
    };
    let mut out = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'v' => out.push('\u{b}'),
                d @ '0'..='7' => {
                    let mut n = d.to_digit(8).unwrap_or(0);
                    for _ in 0..2 {
                        match chars.peek().and_then(|c| c.to_digit(8)) {
                            Some(x) => {
                                n = n * 8 + x;
                                chars.next();
                            }
                            None => break,
                        }
                    }
                    out.push(char::from_u32(n).unwrap_or('\u{fffd}'));
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn parse_like_hylafax() {
        let s = DynSettings::parse(
            "# comment\n\nRejectCall: no\nrejectcall: On\nLocalIdentifier:  My Company  \n\
             garbage line\nTagLine: \"Page %%p\\tof \\\"x\\\"\"\nGateway: gw1, ,gw2 ,\n\
             FAXNumber:\nCallPrefix: 0\n:novalue\n",
        );
        assert_eq!(s.get("REJECTCALL"), Some("On"));
        assert_eq!(s.get_bool("RejectCall"), Some(true));
        let out = s.outgoing();
        assert!(out.reject_call);
        assert_eq!(out.local_identifier.as_deref(), Some("My Company"));
        assert_eq!(out.tag_line.as_deref(), Some("Page %%p\tof \"x\""));
        assert_eq!(out.gateways, vec!["gw1", "gw2"]);
        assert_eq!(out.fax_number, None);
        assert_eq!(out.call_prefix.as_deref(), Some("0"));
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        assert!(s.warnings[0].contains("garbage line"));
        let inc = s.incoming();
        assert!(inc.reject_call);
        assert_eq!(inc.local_identifier.as_deref(), Some("My Company"));
    }

    #[test]
    fn booleans() {
        for t in ["true", "YES", "on", "1", " On "] {
            assert!(parse_bool(t), "{t}");
        }
        for f in ["false", "no", "off", "0", "", "2", "y"] {
            assert!(!parse_bool(f), "{f}");
        }
        assert_eq!(DynSettings::parse("").incoming(), IncomingConfig::default());
        let s = DynSettings::parse("x: \"open\nok: \"\\101\\60\"\n");
        assert_eq!(s.get("ok"), Some("A0"));
        assert_eq!(s.get("x"), None);
        assert_eq!(s.warnings.len(), 1);
    }

    #[tokio::test]
    async fn runs_without_shell_and_parses() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(
            dir.path(),
            "dyn.sh",
            "printf 'RejectCall: false\\nLocalIdentifier: %s|%s|%s\\n' \"$1\" \"$2\" \"$(pwd)\"\n\
             echo oops >&2",
        );
        let out = run(
            &p,
            ["freeswitch0", "a b; rm -rf /", "$(x)"],
            dir.path(),
            Duration::from_secs(10),
            DEFAULT_MAX_OUTPUT,
        )
        .await
        .unwrap();
        assert!(out.success());
        assert_eq!(out.stderr, "oops\n");
        let cwd = dir.path().canonicalize().unwrap();
        assert_eq!(
            out.settings().incoming().local_identifier,
            Some(format!("freeswitch0|a b; rm -rf /|{}", cwd.display()))
        );
        // Relative path with '/' resolves against cwd.
        let rel = run(
            Path::new("./dyn.sh"),
            ["x"],
            dir.path(),
            Duration::from_secs(10),
            DEFAULT_MAX_OUTPUT,
        )
        .await
        .unwrap();
        assert!(rel.success());
    }

    #[tokio::test]
    async fn hanging_script_is_killed_with_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        let p = script(
            dir.path(),
            "hang.sh",
            &format!("(sleep 2; touch {}) &\nsleep 100", marker.display()),
        );
        let started = std::time::Instant::now();
        let e = run(
            &p,
            [] as [&str; 0],
            dir.path(),
            Duration::from_millis(300),
            1024,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, DynConfigError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("hang.sh"));
        // Far below the script's 100 s: the kill worked.
        assert!(started.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            !marker.exists(),
            "background child of the script was not killed"
        );
    }

    #[tokio::test]
    async fn huge_output_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(
            dir.path(),
            "big.sh",
            "echo 'RejectCall: yes'\nhead -c 10485760 /dev/zero | tr '\\0' 'x'\n\
             head -c 1000000 /dev/zero >&2",
        );
        let out = run(
            &p,
            [] as [&str; 0],
            dir.path(),
            Duration::from_secs(30),
            64 * 1024,
        )
        .await
        .unwrap();
        assert!(out.truncated);
        assert_eq!(out.stdout.len(), 64 * 1024);
        assert!(out.stderr.len() <= 64 * 1024 * 3);
        assert!(out.settings().incoming().reject_call);
    }

    #[tokio::test]
    async fn nonzero_missing_and_binary() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(dir.path(), "fail.sh", "echo 'RejectCall: true'; exit 3");
        let out = run(
            &p,
            [] as [&str; 0],
            dir.path(),
            Duration::from_secs(10),
            1024,
        )
        .await
        .unwrap();
        assert!(!out.success());
        assert_eq!(out.status.code(), Some(3));
        assert!(out.settings().incoming().reject_call);

        let e = run(
            Path::new("/nonexistent/dynconf"),
            [] as [&str; 0],
            dir.path(),
            Duration::from_secs(10),
            1024,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, DynConfigError::Spawn { .. }));
        assert!(e.to_string().contains("/nonexistent/dynconf"));

        let p = script(
            dir.path(),
            "bin.sh",
            "printf 'LocalIdentifier: caf\\351\\nRejectCall: \\377\\000\\n'",
        );
        let out = run(
            &p,
            [] as [&str; 0],
            dir.path(),
            Duration::from_secs(10),
            1024,
        )
        .await
        .unwrap();
        let s = out.settings();
        assert_eq!(
            s.incoming().local_identifier.as_deref(),
            Some("caf\u{fffd}")
        );
        assert!(!s.incoming().reject_call);
    }
}
