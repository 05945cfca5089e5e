//! Waiting for what a test expects, bounded only to catch a hang.
//!
//! A test's verdict follows from what happened (on the wire, in the spool), never from the
//! machine's speed: every wait here returns as soon as its condition holds, and the bound a
//! test passes is a hang bound ([`HANG`] unless it has a reason), not a speed assertion.

use std::time::{Duration, Instant};

/// How long a test waits for something that must happen before calling it hung.
pub const HANG: Duration = Duration::from_secs(120);

/// Polls `pred` every 10 ms until it holds or `timeout` passes.
pub fn wait(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    pred()
}

/// Async version of [`wait`].
pub async fn wait_async(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if pred() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pred()
}

/// A free TCP port on 127.0.0.1 for a server that cannot listen on port 0 and report the port
/// it got (hfaxd). Prefer port 0 where the program reports its address (fsfaxd does).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}
