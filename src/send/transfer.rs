//! Step 3 of an attempt: the answered call. Follows txfax's events, writes progress to the
//! qfile, and lets [`CallEnding`] say when the call is over and what to send to end it (hang up
//! shortly after the result, the hard cap, a signal).

use std::time::{Duration, Instant};

use super::Job;
use super::call::{CallEnd, Stop, close_text};
use super::dial::Answered;
use super::prepare::Context;
use super::progress::Session;
use crate::config::Config;
use crate::esl::{Event, SessionItem};
use crate::fax::{
    CallEnding, Command, Cut, FaxResult, Finish, Gone, Input, Limits, LocalError, Update,
};

/// After the hangup, how long to wait for FreeSWITCH's fax result (it follows the hangup).
const RESULT_AFTER_HANGUP: Duration = Duration::from_secs(10);
/// After our `uuid_kill`, how long the hangup may take before we kill again.
const HANGUP_GRACE: Duration = Duration::from_secs(3);

/// Follows the answered call until [`CallEnding`] says it is over.
pub(super) async fn transfer(
    cfg: &Config,
    ctx: &mut Context,
    job: &mut Job,
    stop: &mut Stop,
    answered: Answered,
) -> CallEnd {
    let answered_at = Instant::now();
    ctx.progress.answered();
    let mut call = Transfer {
        ctx,
        job,
        answered,
        ending: CallEnding::new(Limits {
            cap: answered_at + cfg.gofaxsend.max_call_duration,
            hangup_after_result: cfg.gofaxsend.hangup_after_result,
            result_after_hangup: RESULT_AFTER_HANGUP,
            hangup_grace: HANGUP_GRACE,
        }),
        max_call: cfg.gofaxsend.max_call_duration,
        signal: None,
        lost: None,
    };
    call.job.connected(&call.ctx.dialled);
    let finish = call.follow(stop).await;
    let _ = call.answered.session.client.exit().await;
    let cut_short = finish.cut.map(|cut| call.cut_text(cut));
    CallEnd::Connected {
        result: Box::new(call.answered.result),
        cut_short,
        answered_at,
    }
}

/// The call being followed.
struct Transfer<'a> {
    ctx: &'a mut Context,
    job: &'a mut Job,
    answered: Answered,
    ending: CallEnding,
    /// `[gofaxsend] maxcallduration`, for the texts.
    max_call: Duration,
    /// The first signal that cut the call short.
    signal: Option<&'static str>,
    /// Why the event socket was lost for good.
    lost: Option<String>,
}

impl Transfer<'_> {
    async fn follow(&mut self, stop: &mut Stop) -> Finish {
        loop {
            let deadline = tokio::time::Instant::from_std(self.ending.deadline());
            let inputs = tokio::select! {
                item = self.answered.events.recv() => match item {
                    Some(SessionItem::Event(ev)) => self.on_event(&ev),
                    Some(SessionItem::Disconnect(_)) => [None, None],
                    None => [self.on_lost().await, None],
                },
                () = tokio::time::sleep_until(deadline) => [Some(Input::Clock), None],
                sig = stop.recv() => {
                    self.ctx.log.log(&format!("{sig}: hanging up the call"));
                    self.signal.get_or_insert(sig);
                    [Some(Input::Shutdown), None]
                }
            };
            for input in inputs.into_iter().flatten() {
                let before = self.ending.cut();
                let step = self.ending.on(input, Instant::now());
                if let Some(command) = step.command {
                    self.send(command, before).await;
                }
                if let Some(finish) = step.finish {
                    return finish;
                }
            }
        }
    }

    /// Applies one event: progress in the qfile and the log, and what it means for the end.
    fn on_event(&mut self, ev: &Event) -> [Option<Input>; 2] {
        let uuid = self.answered.uuid.to_string();
        let last_word = ev.unique_id() == Some(uuid.as_str())
            && matches!(
                ev.name(),
                Some("CHANNEL_HANGUP_COMPLETE" | "CHANNEL_DESTROY")
            );
        let input = match self.answered.result.apply(ev) {
            Some(Update::Negotiated) => {
                let result = &self.answered.result;
                let rate = result.transfer_rate.unwrap_or(0);
                self.job
                    .negotiated(result.remote_station_id.as_deref(), rate, result.ecm_used);
                self.ctx.log.log(&format!(
                    "NEGOTIATED {rate} bit/s{}, remote {:?}, T.38 {}",
                    if result.ecm_used { " ECM" } else { "" },
                    result.remote_station_id.as_deref().unwrap_or(""),
                    crate::fax::T38Status::describe(result.t38_status.as_ref())
                ));
                None
            }
            Some(Update::Page(n)) => {
                let session = Session::of(&self.answered.result, &self.ctx.commid);
                let progress = &mut self.ctx.progress;
                // The job's page, not the call's: a resumed send starts past page 1.
                if let Some(page) = progress.page(self.job, n, &session) {
                    let total = progress.job_pages();
                    let text = if progress.before() > 0 {
                        format!("SENT PAGE {page} of {total} (page {n} of this call)")
                    } else {
                        format!("SENT PAGE {page} of {total}")
                    };
                    self.ctx.log.log(&text);
                }
                None
            }
            Some(Update::FinalResult) => {
                let text = final_text(&self.answered.result, &self.ctx.progress);
                self.ctx.log.log(&text);
                Some(Input::FaxResult)
            }
            Some(Update::Hangup) => {
                let cause = self.answered.result.hangup_cause().unwrap_or("");
                self.ctx.log.log(&format!("HANGUP {cause}"));
                Some(Input::Gone(Gone::Hangup))
            }
            Some(Update::Answered) | None => None,
        };
        [input, last_word.then_some(Input::Gone(Gone::Complete))]
    }

    /// The event socket closed: get it back if the call is still up, else the end.
    async fn on_lost(&mut self) -> Option<Input> {
        let why = close_text(&self.answered.events);
        self.ctx
            .log
            .log(&format!("Lost the event socket during the call: {why}"));
        tracing::warn!("event socket lost during the call: {why}");
        let uuid = self.answered.uuid;
        match self.answered.session.resume(&uuid).await {
            Some(stream) => {
                self.ctx
                    .log
                    .log("Event socket back; the call is still up, following it again");
                self.answered.events = stream;
                None
            }
            None => {
                self.lost.get_or_insert(why);
                Some(Input::ConnectionLost)
            }
        }
    }

    /// Sends what the machine asked for; `before` is the cut before this input.
    async fn send(&mut self, command: Command, before: Option<Cut>) {
        let log = &self.ctx.log;
        match (command, before, self.ending.cut()) {
            (Command::HangUp, None, Some(Cut::HardCap)) => log.log(&cap_text(self.max_call)),
            (Command::HangUp, _, None) => {
                // mod_spandsp can leave a T.38 call up for minutes after the result.
                log.log("Fax finished but the call is still up; hanging up");
            }
            (Command::Kill, ..) => log.log("The call did not hang up; killing it again"),
            _ => {}
        }
        self.answered.session.kill(&self.answered.uuid).await;
    }

    /// The local error and its detail for a call we cut short.
    fn cut_text(&self, cut: Cut) -> (LocalError, String) {
        match cut {
            Cut::HardCap => (LocalError::Timeout, cap_text(self.max_call)),
            Cut::Shutdown => (
                LocalError::Interrupted,
                format!("{} during the call", self.signal.unwrap_or("signal")),
            ),
            Cut::ConnectionLost => (
                LocalError::EslDropped,
                format!(
                    "{}; the fax result is unknown (the call may have completed)",
                    self.lost.as_deref().unwrap_or("connection closed")
                ),
            ),
        }
    }
}

fn cap_text(max: Duration) -> String {
    format!("call longer than {max:?} ([gofaxsend] maxcallduration); hung up")
}

/// spandsp's result with the pages in the job's numbers: its own "10 of 12" counts the pages
/// of this call against the whole file, which reads as two pages missing when a resumed call
/// sent pages 3-12.
fn final_text(result: &FaxResult, progress: &super::progress::Progress) -> String {
    let code = result.result_code().map_or("-".into(), |c| c.to_string());
    let text = result.result_text().unwrap_or("");
    let mut line = format!(
        "FAX RESULT {code} ({text}): {} sent",
        progress.describe_sent()
    );
    if progress.before() > 0 {
        line.push_str(&format!(
            " in this call (pages 1-{} in earlier attempts)",
            progress.before()
        ));
    }
    if progress.all_sent() {
        line.push_str("; every page of the job is sent");
    }
    line
}
