//! `flock(2)` helpers shared by the spool files (HylaFAX serialises writers with `flock`).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Poll interval while waiting for a contended lock.
const POLL: Duration = Duration::from_millis(20);

/// Takes an exclusive `flock` on `file`, blocking until it is granted.
pub(crate) fn lock_exclusive(file: &File) -> io::Result<()> {
    loop {
        // SAFETY: flock on a valid, open descriptor owned by `file`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Releases a `flock` taken on `file` (a descriptor that stays open after its use).
pub(crate) fn unlock(file: &File) {
    // SAFETY: flock on a valid, open descriptor owned by `file`.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
}

/// Takes an exclusive `flock`, giving up after `wait`. `Ok(false)` means it timed out.
pub(crate) fn lock_exclusive_bounded(file: &File, wait: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + wait;
    loop {
        // SAFETY: flock on a valid, open descriptor owned by `file`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => {}
            _ => return Err(err),
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        std::thread::sleep(POLL.min(deadline - now));
    }
}
