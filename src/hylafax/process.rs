//! Running a helper program (DynamicConfig, faxrcvd) with a deadline and bounded output.
//!
//! The child gets its own process group so a timeout kills everything it started (a shell
//! script's `sleep`, a mailer), stdin is `/dev/null`, and output beyond the limit is read and
//! discarded so the child never blocks on a full pipe. A program whose two streams are only
//! logged (faxrcvd) writes both into one pipe ([`Streams::Merged`]): its lines stay in the
//! order it wrote them, and the run costs one pipe, one registration and one reader fewer.

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

/// Whether the program's stdout and stderr are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Streams {
    /// Two pipes: stdout is the answer (DynamicConfig), stderr a diagnostic.
    Separate,
    /// One pipe for both, in the order written; everything lands in [`Captured::stdout`].
    Merged,
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
    streams: Streams,
) -> Result<Captured, RunError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = tokio::process::Command::new(resolve_program(program, cwd));
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let merged = match streams {
        Streams::Separate => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            None
        }
        Streams::Merged => {
            let (read, write) = merged_pipe().map_err(RunError::Spawn)?;
            let write2 = write.try_clone().map_err(RunError::Spawn)?;
            cmd.stdout(Stdio::from(write)).stderr(Stdio::from(write2));
            Some(read)
        }
    };
    for (k, v) in env {
        cmd.env(k, v);
    }
    let spawned = cmd.spawn();
    // The command holds our copies of the merged pipe's write end: they must be closed for
    // the read to see the end when the program exits.
    drop(cmd);
    let mut child = spawned.map_err(RunError::Spawn)?;
    let pid = child.id();
    // A caller that stops waiting (the call it screens is gone) takes the whole group down.
    let mut group = GroupGuard(pid.and_then(|p| i32::try_from(p).ok()));
    let stdout: Option<Box<dyn AsyncRead + Unpin + Send>> = match merged {
        Some(read) => Some(Box::new(read)),
        None => child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn AsyncRead + Unpin + Send>),
    };
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

/// One pipe for a program's stdout and stderr: the read end registered with the runtime
/// (non-blocking), the write end as the program gets it (blocking, as a shell expects).
fn merged_pipe() -> io::Result<(tokio::net::unix::pipe::Receiver, std::os::fd::OwnedFd)> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use std::os::fd::AsRawFd;
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // Only the read end's file description: the program's end stays blocking.
    fcntl(read.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    let read = tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(read)?;
    Ok((read, write))
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
