//! Running `bin/faxrcvd` after a reception.
//!
//! argv (GOfax.IP's, which maps onto HylaFAX's `file devID commID error-msg callID…`):
//! `<prog> <recvq/faxNNNNNNNNN.tif> <modem> <commid> <errmsg> <cidnum> <cidname> <recipient>
//! <gateway>`, so FaxDispatch sees `CALLID1`=number, `CALLID2`=name, `CALLID3`=recipient,
//! `CALLID4`=gateway. Extra environment `HANGUPCAUSE`, `TRANSFER_RATE`; cwd = spool; a
//! timeout kills its process group (a stuck mailer must not pin the call handler forever).

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use super::process::{self, RunError};

/// Default time allowed for faxrcvd (it converts to PDF and mails).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Default bound on captured output.
pub const DEFAULT_MAX_OUTPUT: usize = 64 * 1024;

/// Errors running faxrcvd. Each names the program and the received file.
#[derive(Debug, thiserror::Error)]
pub enum FaxrcvdError {
    #[error("{program} for {file}: cannot start: {source}")]
    Spawn {
        program: PathBuf,
        file: String,
        source: std::io::Error,
    },
    #[error("{program} for {file}: cannot wait for it: {source}")]
    Wait {
        program: PathBuf,
        file: String,
        source: std::io::Error,
    },
    #[error("{program} for {file}: still running after {timeout:?}; killed")]
    Timeout {
        program: PathBuf,
        file: String,
        timeout: Duration,
    },
}

/// One reception to hand to faxrcvd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaxrcvdArgs {
    /// Spool-relative `recvq/faxNNNNNNNNN.tif`.
    pub file: String,
    pub modem: String,
    pub commid: String,
    /// Empty on success.
    pub errmsg: String,
    pub cidnum: String,
    pub cidname: String,
    pub recipient: String,
    pub gateway: String,
    /// `HANGUPCAUSE` (FreeSWITCH hangup cause).
    pub hangup_cause: String,
    /// `TRANSFER_RATE` in bit/s.
    pub transfer_rate: u32,
}

impl FaxrcvdArgs {
    /// The argv after the program name.
    pub fn argv(&self) -> [&str; 8] {
        [
            &self.file,
            &self.modem,
            &self.commid,
            &self.errmsg,
            &self.cidnum,
            &self.cidname,
            &self.recipient,
            &self.gateway,
        ]
    }
}

/// How faxrcvd ended.
#[derive(Debug, Clone)]
pub struct FaxrcvdOutcome {
    pub status: ExitStatus,
    /// stdout and stderr through one pipe, in the order faxrcvd wrote them (lossy UTF-8),
    /// for the session log.
    pub output: String,
    pub truncated: bool,
}

/// Runs `program` (relative paths with `/` resolve against `spool`, e.g. `bin/faxrcvd`).
pub async fn run(
    program: &Path,
    spool: &Path,
    args: &FaxrcvdArgs,
    timeout: Duration,
    max_output: usize,
) -> Result<FaxrcvdOutcome, FaxrcvdError> {
    let env = [
        ("HANGUPCAUSE", args.hangup_cause.clone()),
        ("TRANSFER_RATE", args.transfer_rate.to_string()),
    ];
    let began = std::time::Instant::now();
    let captured = process::run_bounded(
        program,
        args.argv(),
        spool,
        &env,
        timeout,
        max_output,
        process::Streams::Merged,
    )
    .await;
    let result = match &captured {
        Ok(c) if c.status.success() => "ok",
        Err(RunError::Timeout) => "timeout",
        _ => "failed",
    };
    crate::ops::metrics::metrics().faxrcvd(result, began.elapsed().as_secs_f64());
    let captured = captured.map_err(|e| match e {
        RunError::Spawn(source) => FaxrcvdError::Spawn {
            program: program.to_path_buf(),
            file: args.file.clone(),
            source,
        },
        RunError::Wait(source) => FaxrcvdError::Wait {
            program: program.to_path_buf(),
            file: args.file.clone(),
            source,
        },
        RunError::Timeout => FaxrcvdError::Timeout {
            program: program.to_path_buf(),
            file: args.file.clone(),
            timeout,
        },
    })?;
    Ok(FaxrcvdOutcome {
        status: captured.status,
        output: String::from_utf8_lossy(&captured.stdout).into_owned(),
        truncated: captured.stdout_truncated,
    })
}

/// The arguments as an admin would type them in a shell: plain words bare, others (empty,
/// spaces, quotes, `$`...) in single quotes. For the session log, never for running anything.
pub fn shell_words(args: &[&str]) -> String {
    let plain = |a: &str| {
        !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-_./:@,=".contains(c))
    };
    args.iter()
        .map(|a| {
            if plain(a) {
                (*a).to_owned()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn args() -> FaxrcvdArgs {
        FaxrcvdArgs {
            file: "recvq/fax000000001.tif".into(),
            modem: "freeswitch0".into(),
            commid: "000000007".into(),
            errmsg: String::new(),
            cidnum: "4711".into(),
            cidname: "Alice \"Caller\"".into(),
            recipient: "12345".into(),
            gateway: "gw1".into(),
            hangup_cause: "NORMAL_CLEARING".into(),
            transfer_rate: 14400,
        }
    }

    #[test]
    fn shell_words_read_like_a_command_line() {
        assert_eq!(
            shell_words(&["recvq/fax000000001.tif", "freeswitch0", "", "it's a \"x\""]),
            "recvq/fax000000001.tif freeswitch0 '' 'it'\\''s a \"x\"'"
        );
    }

    #[tokio::test]
    async fn argv_env_cwd_and_output() {
        let spool = tempfile::tempdir().unwrap();
        std::fs::create_dir(spool.path().join("bin")).unwrap();
        let p = spool.path().join("bin/faxrcvd");
        std::fs::write(
            &p,
            "#!/bin/sh\nfor a in \"$@\"; do printf '[%s]' \"$a\"; done\necho\n\
             echo \"$HANGUPCAUSE $TRANSFER_RATE $(pwd)\"\nprintf 'caf\\351\\n' >&2\necho last\nexit 0\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = run(
            Path::new("bin/faxrcvd"),
            spool.path(),
            &args(),
            Duration::from_secs(10),
            DEFAULT_MAX_OUTPUT,
        )
        .await
        .unwrap();
        assert!(out.status.success());
        // One pipe for both streams: the stderr line sits where faxrcvd wrote it.
        let cwd = spool.path().canonicalize().unwrap();
        assert_eq!(
            out.output,
            format!(
                "[recvq/fax000000001.tif][freeswitch0][000000007][][4711][Alice \"Caller\"]\
                 [12345][gw1]\nNORMAL_CLEARING 14400 {}\ncaf\u{fffd}\nlast\n",
                cwd.display()
            )
        );
    }

    #[tokio::test]
    async fn timeout_and_missing() {
        let spool = tempfile::tempdir().unwrap();
        let p = spool.path().join("slow");
        std::fs::write(&p, "#!/bin/sh\nsleep 100\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = run(&p, spool.path(), &args(), Duration::from_millis(200), 1024)
            .await
            .unwrap_err();
        assert!(matches!(e, FaxrcvdError::Timeout { .. }));
        assert!(e.to_string().contains("fax000000001.tif"));
        let e = run(
            Path::new("bin/nope"),
            spool.path(),
            &args(),
            Duration::from_secs(5),
            1024,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, FaxrcvdError::Spawn { .. }));
    }
}
