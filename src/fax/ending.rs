//! [`CallEnding`]: when a fax call is over, and what to do to make it so. One machine for both
//! programs: fsfaxsend (txfax) and fsfaxd (rxfax) feed it what the call said and the clock,
//! and it answers with the command to send (hang up, kill) and the next deadline.
//!
//! What the real switch does (captures in `tests/fixtures/esl/`):
//! - `CHANNEL_HANGUP` comes *before* `spandsp::*faxresult`, so the result is waited for after a
//!   hangup, but only for a bounded time (a missing txfax file sends no spandsp event at all).
//! - mod_spandsp can leave a T.38 call up for minutes after the fax result: hang up ourselves
//!   shortly after it.
//! - A hangup we asked for may not happen: kill the channel after a grace.
//! - The hard cap (`maxcallduration`) and a shutdown end the call the same way, and the first
//!   of them is the reason the call was cut short.
//! - Once FreeSWITCH said the channel is gone (hangup events, the linger disconnect notice),
//!   [`CallEnding::channel_gone`] stays true: nothing sent to the channel can run any more.
//!
//! Pure: no sockets and no clock of its own. Every input carries `now`.

use std::time::{Duration, Instant};

/// The bounds one call ends within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The hard cap: the call is cut at this instant whatever it is doing.
    pub cap: Instant,
    /// After the fax result, how long FreeSWITCH has to hang up before we do.
    pub hangup_after_result: Duration,
    /// After the hangup, how long the fax result may trail it.
    pub result_after_hangup: Duration,
    /// After we asked for a hangup, how long it may take before the channel is killed.
    pub hangup_grace: Duration,
}

/// What the call said, or what happened to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The final `spandsp::*faxresult` arrived.
    FaxResult,
    /// FreeSWITCH said the channel is gone.
    Gone(Gone),
    /// The connection to FreeSWITCH is lost for good: nothing more will come.
    ConnectionLost,
    /// We are shutting down (SIGTERM, fsfaxd's shutdown timeout).
    Shutdown,
    /// The deadline from [`CallEnding::deadline`] passed.
    Clock,
}

/// How FreeSWITCH said the channel is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// `CHANNEL_HANGUP` or `CHANNEL_CALLSTATE` HANGUP: the fax result may still follow.
    Hangup,
    /// The linger disconnect notice: with `myevents` events may still follow it.
    LingerNotice,
    /// `CHANNEL_HANGUP_COMPLETE` or `CHANNEL_DESTROY`: the channel's last words.
    Complete,
}

/// A command for the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Ask for a normal hangup.
    HangUp,
    /// The hangup did not happen: kill the channel (`uuid_kill`).
    Kill,
}

/// Why we cut the call short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The hard cap passed.
    HardCap,
    /// We are shutting down.
    Shutdown,
    /// The connection to FreeSWITCH was lost.
    ConnectionLost,
}

/// How the call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finish {
    /// The fax result was seen.
    pub result: bool,
    /// FreeSWITCH said the channel is gone.
    pub gone: bool,
    /// The first reason we cut the call short, if we did.
    pub cut: Option<Cut>,
}

/// What to do after an input: a command to send first, then either finish or keep waiting
/// (until the next event or [`CallEnding::deadline`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Step {
    /// Send this to the channel.
    pub command: Option<Command>,
    /// The call is over.
    pub finish: Option<Finish>,
}

/// The bounded wait running, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// The result is in: hang up at this instant unless FreeSWITCH does.
    HangUp(Instant),
    /// We asked for the hangup: kill the channel at this instant if it is still up.
    Kill(Instant),
    /// The channel is gone (or killed): stop waiting for the result at this instant.
    GiveUp(Instant),
}

/// The call-ending machine of one call. See the module documentation.
#[derive(Debug, Clone)]
pub struct CallEnding {
    limits: Limits,
    result: bool,
    gone: bool,
    cut: Option<Cut>,
    wait: Option<Wait>,
    finished: Option<Finish>,
}

impl CallEnding {
    /// A call in progress, nothing seen yet.
    pub fn new(limits: Limits) -> CallEnding {
        CallEnding {
            limits,
            result: false,
            gone: false,
            cut: None,
            wait: None,
            finished: None,
        }
    }

    /// True once FreeSWITCH said the channel is gone: commands to it can no longer run.
    pub fn channel_gone(&self) -> bool {
        self.gone
    }

    /// True once the call was cut short by us (cap, shutdown, lost connection).
    pub fn cut(&self) -> Option<Cut> {
        self.cut
    }

    /// The hard cap.
    pub fn cap(&self) -> Instant {
        self.limits.cap
    }

    /// When to feed [`Input::Clock`] if nothing else happens first.
    pub fn deadline(&self) -> Instant {
        let cap = (self.cut.is_none()).then_some(self.limits.cap);
        let wait = self.wait.map(|w| match w {
            Wait::HangUp(t) | Wait::Kill(t) | Wait::GiveUp(t) => t,
        });
        [cap, wait]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.limits.cap)
    }

    /// Feeds one input at `now`.
    pub fn on(&mut self, input: Input, now: Instant) -> Step {
        if let Some(finish) = self.finished {
            return Step {
                command: None,
                finish: Some(finish),
            };
        }
        let step = match input {
            Input::FaxResult => self.on_result(now),
            Input::Gone(how) => self.on_gone(how, now),
            Input::ConnectionLost => {
                self.cut.get_or_insert(Cut::ConnectionLost);
                self.finish()
            }
            Input::Shutdown => self.cut_short(Cut::Shutdown, now),
            Input::Clock => self.on_clock(now),
        };
        if step.finish.is_some() {
            self.finished = step.finish;
        }
        step
    }

    fn on_result(&mut self, now: Instant) -> Step {
        self.result = true;
        if self.gone {
            return self.finish();
        }
        // After a cut our own hangup is already on its way; otherwise give FreeSWITCH a moment.
        if self.wait.is_none() {
            self.wait = Some(Wait::HangUp(now + self.limits.hangup_after_result));
        }
        Step::default()
    }

    fn on_gone(&mut self, how: Gone, now: Instant) -> Step {
        self.gone = true;
        if self.result || how == Gone::Complete {
            return self.finish();
        }
        // The result follows the hangup on the real switch: wait for it, bounded. A wait
        // already giving up keeps its (earlier) instant.
        if !matches!(self.wait, Some(Wait::GiveUp(_))) {
            self.wait = Some(Wait::GiveUp(now + self.limits.result_after_hangup));
        }
        Step::default()
    }

    fn cut_short(&mut self, why: Cut, now: Instant) -> Step {
        if self.cut.is_some() {
            return Step::default();
        }
        self.cut = Some(why);
        if self.gone {
            // Nothing to hang up; the wait for the result runs on.
            return Step::default();
        }
        self.wait = Some(Wait::Kill(now + self.limits.hangup_grace));
        Step {
            command: Some(Command::HangUp),
            finish: None,
        }
    }

    fn on_clock(&mut self, now: Instant) -> Step {
        match self.wait {
            Some(Wait::HangUp(t)) if now >= t => {
                self.wait = Some(Wait::Kill(now + self.limits.hangup_grace));
                Step {
                    command: Some(Command::HangUp),
                    finish: None,
                }
            }
            Some(Wait::Kill(t)) if now >= t => {
                // The channel ignored our hangup: kill it. With the result in, that is all;
                // without it, the result may still trail the hangup the kill brings.
                if self.result {
                    let mut step = self.finish();
                    step.command = Some(Command::Kill);
                    return step;
                }
                self.wait = Some(Wait::GiveUp(now + self.limits.result_after_hangup));
                Step {
                    command: Some(Command::Kill),
                    finish: None,
                }
            }
            Some(Wait::GiveUp(t)) if now >= t => self.finish(),
            _ if self.cut.is_none() && now >= self.limits.cap => self.cut_short(Cut::HardCap, now),
            _ => Step::default(),
        }
    }

    fn finish(&self) -> Step {
        Step {
            command: None,
            finish: Some(Finish {
                result: self.result,
                gone: self.gone,
                cut: self.cut,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER_RESULT: Duration = Duration::from_secs(5);
    const AFTER_HANGUP: Duration = Duration::from_secs(10);
    const GRACE: Duration = Duration::from_secs(3);
    const CAP: Duration = Duration::from_secs(600);

    struct Run {
        m: CallEnding,
        t0: Instant,
        now: Instant,
        commands: Vec<Command>,
        finish: Option<Finish>,
    }

    impl Run {
        fn new() -> Run {
            let t0 = Instant::now();
            Run {
                m: CallEnding::new(Limits {
                    cap: t0 + CAP,
                    hangup_after_result: AFTER_RESULT,
                    result_after_hangup: AFTER_HANGUP,
                    hangup_grace: GRACE,
                }),
                t0,
                now: t0,
                commands: Vec::new(),
                finish: None,
            }
        }

        fn at(&mut self, secs: u64) -> &mut Run {
            self.now = self.t0 + Duration::from_secs(secs);
            self
        }

        fn feed(&mut self, input: Input) -> &mut Run {
            assert!(self.finish.is_none(), "input {input:?} after the finish");
            let step = self.m.on(input, self.now);
            self.commands.extend(step.command);
            self.finish = step.finish;
            self
        }

        /// Lets the clock run to the machine's deadline, as a driver with no events does.
        fn sleep(&mut self) -> &mut Run {
            self.now = self.m.deadline();
            self.feed(Input::Clock)
        }

        fn elapsed(&self) -> Duration {
            self.now - self.t0
        }

        fn done(&self) -> Finish {
            self.finish.expect("finished")
        }
    }

    fn gone() -> Input {
        Input::Gone(Gone::Hangup)
    }

    #[test]
    fn send_capture_order_hangup_then_result_finishes_at_the_result() {
        // inbound-txfax-t38-ok: CHANNEL_HANGUP, spandsp::txfaxresult, ..., HANGUP_COMPLETE.
        let mut r = Run::new();
        r.at(30).feed(gone());
        assert!(r.finish.is_none() && r.m.channel_gone());
        assert_eq!(
            r.m.deadline(),
            r.t0 + Duration::from_secs(30) + AFTER_HANGUP
        );
        r.feed(Input::FaxResult);
        assert_eq!(
            r.done(),
            Finish {
                result: true,
                gone: true,
                cut: None
            }
        );
        assert!(r.commands.is_empty());
    }

    #[test]
    fn receive_order_result_then_our_queued_hangup() {
        let mut r = Run::new();
        r.at(30).feed(Input::FaxResult);
        assert_eq!(
            r.m.deadline(),
            r.t0 + Duration::from_secs(30) + AFTER_RESULT
        );
        r.at(31).feed(gone());
        assert_eq!(r.done().cut, None);
        assert!(r.done().result);
        assert!(r.commands.is_empty());
    }

    #[test]
    fn t38_hang_after_the_result_is_hung_up_then_killed() {
        let mut r = Run::new();
        r.at(30).feed(Input::FaxResult).sleep();
        assert_eq!(r.commands, [Command::HangUp]);
        assert_eq!(r.elapsed(), Duration::from_secs(30) + AFTER_RESULT);
        // Our hangup is answered: done, with the result.
        let mut answered = Run::new();
        answered.at(30).feed(Input::FaxResult).sleep();
        answered.at(36).feed(gone());
        assert!(answered.done().result && answered.done().cut.is_none());
        // Ignored: killed after the grace, and done (the result is in).
        r.sleep();
        assert_eq!(r.commands, [Command::HangUp, Command::Kill]);
        assert_eq!(r.elapsed(), Duration::from_secs(30) + AFTER_RESULT + GRACE);
        assert_eq!(
            r.done(),
            Finish {
                result: true,
                gone: false,
                cut: None
            }
        );
    }

    #[test]
    fn hangup_without_a_result_gives_up_after_a_bound() {
        // inbound-txfax-file-missing: no spandsp event at all.
        let mut r = Run::new();
        r.at(2).feed(gone()).sleep();
        assert_eq!(r.elapsed(), Duration::from_secs(2) + AFTER_HANGUP);
        assert_eq!(
            r.done(),
            Finish {
                result: false,
                gone: true,
                cut: None
            }
        );
        assert!(
            r.commands.is_empty(),
            "nothing to hang up on a gone channel"
        );
    }

    #[test]
    fn hangup_complete_is_the_channels_last_word() {
        let mut r = Run::new();
        r.at(2).feed(gone()).feed(Input::Gone(Gone::Complete));
        assert!(!r.done().result && r.done().gone);
    }

    #[test]
    fn linger_notice_counts_as_gone_and_the_result_may_follow_it() {
        // With myevents the linger notice comes before the last events.
        let mut r = Run::new();
        r.at(2).feed(Input::Gone(Gone::LingerNotice));
        assert!(r.m.channel_gone() && r.finish.is_none());
        r.feed(Input::FaxResult);
        assert!(r.done().result);
    }

    #[test]
    fn hard_cap_hangs_up_then_waits_for_the_last_events() {
        let mut r = Run::new();
        r.sleep();
        assert_eq!(r.elapsed(), CAP);
        assert_eq!(r.commands, [Command::HangUp]);
        assert_eq!(r.m.cut(), Some(Cut::HardCap));
        // The hangup comes, then the result (the capture's order after a kill).
        r.feed(gone()).feed(Input::FaxResult);
        assert_eq!(
            r.done(),
            Finish {
                result: true,
                gone: true,
                cut: Some(Cut::HardCap)
            }
        );
    }

    #[test]
    fn a_channel_that_ignores_everything_still_ends_in_bounded_time() {
        let mut r = Run::new();
        r.sleep().sleep().sleep();
        assert_eq!(r.commands, [Command::HangUp, Command::Kill]);
        assert_eq!(r.elapsed(), CAP + GRACE + AFTER_HANGUP);
        assert_eq!(
            r.done(),
            Finish {
                result: false,
                gone: false,
                cut: Some(Cut::HardCap)
            }
        );
    }

    #[test]
    fn shutdown_mid_fax_hangs_up_and_the_first_cut_wins() {
        let mut r = Run::new();
        r.at(10).feed(Input::Shutdown);
        assert_eq!(r.commands, [Command::HangUp]);
        r.at(11).feed(Input::Shutdown);
        assert_eq!(
            r.commands,
            [Command::HangUp],
            "a second signal sends nothing"
        );
        r.feed(gone()).feed(Input::FaxResult);
        assert_eq!(r.done().cut, Some(Cut::Shutdown));
    }

    #[test]
    fn shutdown_after_the_hangup_sends_nothing_and_keeps_the_bound() {
        let mut r = Run::new();
        r.at(10).feed(gone()).at(11).feed(Input::Shutdown);
        assert!(r.commands.is_empty());
        r.sleep();
        assert_eq!(r.elapsed(), Duration::from_secs(10) + AFTER_HANGUP);
        assert_eq!(r.done().cut, Some(Cut::Shutdown));
    }

    #[test]
    fn shutdown_after_the_result_hangs_up_at_once() {
        let mut r = Run::new();
        r.at(10).feed(Input::FaxResult).at(11).feed(Input::Shutdown);
        assert_eq!(r.commands, [Command::HangUp]);
        assert_eq!(r.m.deadline(), r.t0 + Duration::from_secs(11) + GRACE);
        r.feed(gone());
        assert_eq!(
            r.done(),
            Finish {
                result: true,
                gone: true,
                cut: Some(Cut::Shutdown)
            }
        );
    }

    #[test]
    fn a_lost_connection_ends_at_once() {
        let mut r = Run::new();
        r.at(10).feed(Input::FaxResult).feed(Input::ConnectionLost);
        assert_eq!(r.done().cut, Some(Cut::ConnectionLost));
        let mut r = Run::new();
        r.at(10).feed(Input::Shutdown).feed(Input::ConnectionLost);
        assert_eq!(r.done().cut, Some(Cut::Shutdown), "the first cut wins");
    }

    #[test]
    fn the_clock_before_any_deadline_changes_nothing() {
        let mut r = Run::new();
        r.at(1).feed(Input::Clock);
        assert!(r.finish.is_none() && r.commands.is_empty());
        assert_eq!(r.m.deadline(), r.t0 + CAP);
    }

    /// One thing that can happen to a call, for the orderings below.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum E {
        Result,
        Hangup,
        Cap,
        Shutdown,
    }

    /// Every order of result, hangup, cap and shutdown (each at its own second, the clock
    /// running to the machine's deadlines in between) ends, in bounded time, with what was
    /// seen and the first cut as its reason.
    #[test]
    fn every_order_of_result_hangup_cap_and_shutdown() {
        let all = [E::Result, E::Hangup, E::Cap, E::Shutdown];
        let mut orders = Vec::new();
        permute(&mut all.to_vec(), 0, &mut orders);
        assert_eq!(orders.len(), 24);
        for order in orders {
            let mut r = Run::new();
            let mut seen_result = false;
            let mut seen_gone = false;
            let mut first_cut = None;
            // One second apart, the cap at its own instant: closer than any bound, so no wait
            // runs out between two of them.
            let cap_at = order.iter().position(|e| *e == E::Cap).unwrap() as u64;
            let base = CAP.as_secs() - cap_at;
            for (i, e) in order.iter().enumerate() {
                if r.finish.is_some() {
                    break;
                }
                r.at(base + i as u64);
                match e {
                    E::Cap => {
                        r.feed(Input::Clock);
                        first_cut.get_or_insert(Cut::HardCap);
                    }
                    E::Result => {
                        r.feed(Input::FaxResult);
                        seen_result = true;
                    }
                    E::Hangup => {
                        r.feed(gone());
                        seen_gone = true;
                    }
                    E::Shutdown => {
                        r.feed(Input::Shutdown);
                        first_cut.get_or_insert(Cut::Shutdown);
                    }
                }
            }
            let mut rounds = 0;
            while r.finish.is_none() {
                r.sleep();
                rounds += 1;
                assert!(rounds < 5, "{order:?} never finishes");
            }
            let f = r.done();
            assert_eq!(f.result, seen_result, "{order:?}");
            assert_eq!(f.gone, seen_gone, "{order:?}");
            assert_eq!(
                f.cut,
                expected_cut(&order, seen_result && seen_gone, first_cut)
            );
            assert!(
                r.elapsed() <= CAP + 3 * GRACE + AFTER_HANGUP,
                "{order:?} took {:?}",
                r.elapsed()
            );
            // A hangup is asked for only while the channel is up; a kill only after a hangup.
            let hangups = r.commands.iter().filter(|c| **c == Command::HangUp).count();
            assert!(hangups <= 1, "{order:?}: {:?}", r.commands);
            if r.commands.contains(&Command::Kill) {
                assert_eq!(r.commands[0], Command::HangUp, "{order:?}");
            }
        }
    }

    /// With both result and hangup seen the call finished at the second of them, before any
    /// later cut; otherwise the first cut is the reason.
    fn expected_cut(order: &[E], both_seen: bool, first_cut: Option<Cut>) -> Option<Cut> {
        if !both_seen {
            return first_cut;
        }
        let both = order
            .iter()
            .rposition(|e| matches!(e, E::Result | E::Hangup))
            .unwrap();
        order[..both].iter().find_map(|e| match e {
            E::Cap => Some(Cut::HardCap),
            E::Shutdown => Some(Cut::Shutdown),
            _ => None,
        })
    }

    fn permute<T: Copy>(items: &mut Vec<T>, k: usize, out: &mut Vec<Vec<T>>) {
        if k == items.len() {
            out.push(items.clone());
            return;
        }
        for i in k..items.len() {
            items.swap(k, i);
            permute(items, k + 1, out);
            items.swap(k, i);
        }
    }
}
