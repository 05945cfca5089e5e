//! Running a helper program (DynamicConfig, faxrcvd) with a deadline and bounded output.
//!
//! The child gets its own process group so a timeout kills everything it started (a shell
//! script's `sleep`, a mailer), stdin is `/dev/null`, and output beyond the limit is read and
//! discarded so the child never blocks on a full pipe.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// What a finished program produced.
#[derive(Debug, Clone)]
pub(crate) struct Captured {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

#[derive(Debug)]
pub(crate) enum RunError {
    Spawn(io::Error),
    Wait(io::Error),
    Timeout,
}

/// `program` with no `/` is searched in PATH; a relative path with `/` is taken against `cwd`.
pub(crate) fn resolve_program(program: &Path, cwd: &Path) -> PathBuf {
    let has_slash = program.as_os_str().as_encoded_bytes().contains(&b'/');
    if has_slash && program.is_relative() {
        cwd.join(program)
    } else {
        program.to_path_buf()
    }
}

/// Runs `program args…` in `cwd` with extra `env`, killing its process group at `timeout`.
pub(crate) async fn run_bounded<I, S>(
    program: &Path,
    args: I,
    cwd: &Path,
    env: &[(&str, String)],
    timeout: Duration,
    max_output: usize,
) -> Result<Captured, RunError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = tokio::process::Command::new(resolve_program(program, cwd));
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(RunError::Spawn)?;
    let pid = child.id();
    // A caller that stops waiting (the call it screens is gone) takes the whole group down.
    let mut group = GroupGuard(pid.and_then(|p| i32::try_from(p).ok()));
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let work = async {
        let (out, err, status) = tokio::join!(
            read_capped(stdout, max_output),
            read_capped(stderr, max_output),
            child.wait()
        );
        (out, err, status)
    };
    let finished = tokio::time::timeout(timeout, work).await;
    match finished {
        Ok(((stdout, stdout_truncated), (stderr, stderr_truncated), status)) => {
            group.0 = None;
            Ok(Captured {
                status: status.map_err(RunError::Wait)?,
                stdout,
                stderr,
                stdout_truncated,
                stderr_truncated,
            })
        }
        Err(_) => {
            group.0 = None;
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // The group id equals the child's pid (process_group(0)).
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            // Reap it; bounded in case it is stuck in uninterruptible sleep.
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            Err(RunError::Timeout)
        }
    }
}

/// Kills the child's process group when dropped while armed (the run was abandoned).
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Reads everything, keeping the first `max` bytes; returns whether more was discarded.
async fn read_capped<R: AsyncRead + Unpin>(reader: Option<R>, max: usize) -> (Vec<u8>, bool) {
    let Some(mut reader) = reader else {
        return (Vec::new(), false);
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                if n > room {
                    truncated = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (kept, truncated)
}
