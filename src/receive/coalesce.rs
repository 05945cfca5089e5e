//! Wake-up coalescing for fsfaxd's event loop.
//!
//! Under load the calls' events arrive apart: at 100 receptions at once, about two a
//! millisecond, each on its own socket. Parked in `epoll_wait`, the loop woke for nearly
//! every one of them, and a wake-up on this machine type (a virtual machine: an idle vCPU
//! is woken by an interrupt) cost more than handling the event. So when the loop is busy,
//! it waits a short [`WINDOW`] before it parks: what arrived in the meantime is then handled
//! in one wake-up. When it is not busy (its last park was longer than the window) it parks
//! at once, as before, so a quiet server answers without the delay and pays nothing.
//!
//! The delay is at most [`WINDOW`] per step of a call, against calls that take seconds and a
//! fax protocol (T.30) that FreeSWITCH runs itself; fsfaxd's timeouts are in seconds.
//! `cargo bench --bench receive_load`, 1,000 receptions at 100 at once: 15 -> 7 context
//! switches and 0.69-0.70 -> 0.60-0.61 ms of CPU per reception; all at once, 10 -> 5 and
//! 0.58-0.59 -> 0.52-0.53 ms (issue 13, eleventh part). A 3 ms window gained nothing more,
//! 5 ms made the calls longer. `FSFAX_COALESCE_MS=<n>` sets the window (0: off), for
//! measurements.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long a busy event loop lets events gather before it parks.
pub const WINDOW: Duration = Duration::from_millis(2);

/// When to wait before parking: the loop's last park, and whether it found work quickly.
#[derive(Debug, Clone, Copy)]
pub struct Coalescer {
    window: Duration,
    parked_at: Option<Instant>,
    busy: bool,
}

impl Coalescer {
    /// A coalescer with this window (zero: never waits).
    pub fn new(window: Duration) -> Self {
        Coalescer {
            window,
            parked_at: None,
            busy: false,
        }
    }

    /// How long to wait before the next park: the window when the loop is busy.
    pub fn wait(&self) -> Option<Duration> {
        (self.busy && !self.window.is_zero()).then_some(self.window)
    }

    /// The loop parks at `now` (after any wait).
    pub fn parking(&mut self, now: Instant) {
        self.parked_at = Some(now);
    }

    /// The loop woke up at `now`: busy when its park was shorter than the window.
    pub fn unparked(&mut self, now: Instant) {
        self.busy = self
            .parked_at
            .take()
            .is_some_and(|at| now.saturating_duration_since(at) < self.window);
    }
}

thread_local! {
    static STATE: Cell<Option<Coalescer>> = const { Cell::new(None) };
}

/// The window from `FSFAX_COALESCE_MS`, or [`WINDOW`].
pub fn window_from_env() -> Duration {
    std::env::var("FSFAX_COALESCE_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(WINDOW, Duration::from_millis)
}

/// Installs the coalescing on a runtime's threads (each thread keeps its own state).
pub fn install(builder: &mut tokio::runtime::Builder, window: Duration) {
    if window.is_zero() {
        return;
    }
    builder
        .on_thread_park(move || {
            if let Some(wait) = with_state(window, |c| c.wait()) {
                std::thread::sleep(wait);
            }
            // The park starts after the wait, however long the wait really took.
            with_state(window, |c| c.parking(Instant::now()));
        })
        .on_thread_unpark(move || with_state(window, |c| c.unparked(Instant::now())));
}

/// Runs `f` on this thread's coalescer (made with `window` on first use).
fn with_state<R>(window: Duration, f: impl FnOnce(&mut Coalescer) -> R) -> R {
    let mut c = STATE.get().unwrap_or_else(|| Coalescer::new(window));
    let r = f(&mut c);
    STATE.set(Some(c));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_millis(3);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_quiet_loop_parks_at_once() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(W);
        assert_eq!(c.wait(), None, "the first park never waits");
        c.parking(t0);
        // Woken 50 ms later: quiet.
        c.unparked(t0 + ms(50));
        assert_eq!(c.wait(), None);
    }

    #[test]
    fn a_busy_loop_waits_the_window_and_stays_busy_while_work_keeps_coming() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(W);
        c.parking(t0);
        // Woken 1 ms after parking: busy.
        c.unparked(t0 + ms(1));
        assert_eq!(c.wait(), Some(W));
        // After the wait the park found work at once: still busy.
        c.parking(t0 + ms(5));
        c.unparked(t0 + ms(5));
        assert_eq!(c.wait(), Some(W));
        // This time the park after the wait lasted 10 ms: quiet again.
        c.parking(t0 + ms(9));
        c.unparked(t0 + ms(19));
        assert_eq!(c.wait(), None);
    }

    #[test]
    fn a_park_exactly_as_long_as_the_window_is_quiet() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(W);
        c.parking(t0);
        c.unparked(t0 + W);
        assert_eq!(c.wait(), None);
        c.parking(t0 + W);
        c.unparked(t0 + W + W - ms(1));
        assert_eq!(c.wait(), Some(W));
    }

    #[test]
    fn a_zero_window_never_waits() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::ZERO);
        c.parking(t0);
        c.unparked(t0);
        assert_eq!(c.wait(), None);
    }

    #[test]
    fn an_unpark_without_a_park_is_not_busy() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(W);
        c.unparked(t0);
        assert_eq!(c.wait(), None);
    }
}
