//! The reception itself, in protocol order: answer, journal the reception, `rxfax`, then
//! follow its events until [`CallEnding`] says the call is over. Everything waits with a
//! bound; a shutdown hangs the call up and leaves its journal entry for the next start.

use std::time::Duration;

use futures_util::future::{join3, try_join_all};
use tokio::time::{Instant, sleep_until, timeout, timeout_at};

use super::accept::Accepted;
use super::call::Call;
use super::outcome::End;
use crate::esl::{OutboundError, SessionItem};
use crate::fax::dialstring::encode_fax_ident;
use crate::fax::{Command, Cut, Finish, Gone, Input, Update};
use crate::hylafax::journal::{DeliveryStage, PendingReception};
use crate::hylafax::seqf::{self, SeqfError};
use crate::hylafax::writer::WriterGone;

/// How long a hangup we asked for may take before the channel is killed.
pub(super) const KILL_GRACE: Duration = Duration::from_secs(3);
/// How long the fax result may trail the hangup before we stop waiting for it.
pub(super) const RESULT_AFTER_HANGUP: Duration = Duration::from_secs(5);
/// Bound on the short exchanges at the end of a call (respond, exit, hangup).
pub(super) const SHORT: Duration = Duration::from_secs(5);

impl Call {
    /// Answer, journal, rxfax, follow. Returns the spool-relative file once rxfax was started.
    pub(super) async fn receive(&mut self, call: &Accepted) -> (Option<String>, End) {
        if let Some(end) = self.gone.clone() {
            // The caller left during screening: nothing to answer.
            return (None, end);
        }
        if let Err(end) = self.answer().await {
            return (None, end);
        }
        // The recvq file and the journal record that names it: one trip to the spool writer,
        // committed (synced) together with whatever else is due.
        let (recvq_file, path) = match self.allocate_and_journal(call).await {
            Ok(file) => file,
            Err(e) => {
                tracing::error!("{e}");
                return (None, End::Failed(e.to_string()));
            }
        };
        call.log.log(&format!("Rxfax to {}", path.display()));
        let sets = [
            Some(format!("fax_enable_t38={}", call.t38.enable)),
            Some(format!("fax_enable_t38_request={}", call.t38.request)),
            (!call.ident.is_empty())
                .then(|| format!("fax_ident={}", encode_fax_ident(&call.ident))),
        ];
        // The spool as FreeSWITCH sees it (`[freeswitch] spoolpath`, e.g. an NFS mount).
        let theirs = self
            .cfg
            .freeswitch
            .to_switch_path(self.daemon.spool.root(), &path);
        let path_arg = theirs.to_string_lossy().into_owned();
        // The `set`s, rxfax and the hangup behind it (a normal reception ends with our hangup
        // as soon as rxfax returns) go out together: FreeSWITCH runs a channel's applications
        // in the order they were queued, so nothing waits for a `set` to complete, which was
        // a round trip and a wake-up each. A caller who leaves meanwhile is seen by `follow`,
        // as one who leaves while rxfax starts. (`join3` polls, so queues, in order.)
        let s = &self.session;
        let (set, rxfax, _hangup) = join3(
            try_join_all(sets.iter().flatten().map(|set| s.execute("set", set))),
            s.execute("rxfax", &path_arg),
            s.execute("hangup", ""),
        )
        .await;
        if let Err(e) = set.and(rxfax) {
            return (Some(recvq_file), self.exec_failed(e).await);
        }
        call.lease.receiving();
        tracing::info!(file = %recvq_file, "receiving");
        let end = self.follow(call).await;
        (Some(recvq_file), end)
    }

    /// `ring_ready` and the answer delay, `answer`, then the configured silence.
    async fn answer(&mut self) -> Result<(), End> {
        let g = self.cfg.gofaxd.clone();
        if !g.answer_after.is_zero() {
            self.app("ring_ready", "").await?;
            self.app("sleep", &g.answer_after.as_millis().to_string())
                .await?;
        }
        self.app("answer", "").await?;
        if !g.wait_time.is_zero() {
            let arg = format!("silence_stream://{}", g.wait_time.as_millis());
            self.app("playback", &arg).await?;
        }
        Ok(())
    }

    /// Runs one application and waits for it to complete, within the call's limits.
    async fn app(&mut self, app: &str, arg: &str) -> Result<(), End> {
        let run = async {
            let exec = self.session.execute(app, arg).await?;
            exec.completed().await
        };
        let cap = Instant::from_std(self.ending.cap());
        let outcome = tokio::select! {
            _ = self.daemon.kill.cancelled() => Err(End::Shutdown),
            _ = sleep_until(cap) => Err(End::MaxDuration),
            r = run => Ok(r),
        };
        match outcome {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.exec_failed(e).await),
            Err(end) => {
                self.kill().await;
                Err(end)
            }
        }
    }

    async fn exec_failed(&mut self, e: OutboundError) -> End {
        match e {
            OutboundError::HungUp { .. } => {
                self.drain(Duration::from_millis(500)).await;
                tracing::info!(
                    cause = self.result.hangup_cause().unwrap_or(""),
                    "caller hung up before the fax started"
                );
                End::HungUpBeforeFax
            }
            other => {
                tracing::warn!("{other}");
                End::ConnectionLost(other.to_string())
            }
        }
    }

    /// Follows the reception's events until [`CallEnding`] says the call is over.
    async fn follow(&mut self, call: &Accepted) -> End {
        let mut shutdown_fed = false;
        let mut lost = String::new();
        // What the events said before rxfax counts too.
        let now = std::time::Instant::now();
        let r = &self.result;
        let seen = [
            r.final_result.is_some().then_some(Input::FaxResult),
            r.hangup.is_some().then_some(Input::Gone(Gone::Hangup)),
        ];
        for input in seen.into_iter().flatten() {
            if let Some(finish) = self.ending.on(input, now).finish {
                return end_of(finish, lost);
            }
        }
        let finish = loop {
            let deadline = Instant::from_std(self.ending.deadline());
            let input = tokio::select! {
                _ = self.daemon.kill.cancelled(), if !shutdown_fed => {
                    shutdown_fed = true;
                    Some(Input::Shutdown)
                }
                _ = sleep_until(deadline) => Some(Input::Clock),
                item = self.events.recv() => match item {
                    Some(SessionItem::Event(ev)) => self.on_event(&ev, call),
                    // The linger notice comes after the hangup; events may still follow it.
                    Some(SessionItem::Disconnect(n)) if n.disposition() == Some("linger") => {
                        Some(Input::Gone(Gone::LingerNotice))
                    }
                    Some(SessionItem::Disconnect(_)) => {
                        lost = "FreeSWITCH sent a disconnect notice".into();
                        Some(Input::ConnectionLost)
                    }
                    None => {
                        lost = self.events.close_reason().map(|r| r.to_string()).unwrap_or_default();
                        tracing::warn!("connection to FreeSWITCH lost during the reception: {lost}");
                        Some(Input::ConnectionLost)
                    }
                },
            };
            let Some(input) = input else { continue };
            let step = self.ending.on(input, std::time::Instant::now());
            if let Some(command) = step.command {
                self.send(command, call).await;
            }
            if let Some(finish) = step.finish {
                break finish;
            }
        };
        end_of(finish, lost)
    }

    /// Applies one event: the modem's page count, the session log, and what it means for the
    /// end of the call.
    fn on_event(&mut self, ev: &crate::esl::Event, call: &Accepted) -> Option<Input> {
        match self.result.apply(ev)? {
            Update::Page(n) => {
                call.lease.page(n);
                call.live.pages(n);
                call.log.log(&format!("RECV: page {n} received"));
                None
            }
            Update::Negotiated => {
                let r = &self.result;
                call.live.mode(match r.t38_status {
                    Some(crate::fax::T38Status::Negotiated) => "t38",
                    _ => "audio",
                });
                call.log.log(&format!(
                    "RECV: negotiated {} bit/s, ECM {}, remote {:?}, T.38 {}",
                    r.transfer_rate.unwrap_or(0),
                    r.ecm_used,
                    r.remote_station_id.as_deref().unwrap_or(""),
                    crate::fax::T38Status::describe(r.t38_status.as_ref())
                ));
                None
            }
            Update::FinalResult => {
                let r = &self.result;
                call.log.log(&format!(
                    "RECV: fax result {} (code {}), {} pages",
                    r.result_text().unwrap_or(""),
                    r.result_code().unwrap_or(0),
                    r.transferred_pages
                ));
                Some(Input::FaxResult)
            }
            Update::Hangup => Some(Input::Gone(Gone::Hangup)),
            Update::Answered => None,
        }
    }

    /// Sends what the call-ending machine asked for.
    async fn send(&mut self, command: Command, call: &Accepted) {
        match (command, self.ending.cut()) {
            (Command::HangUp, Some(Cut::HardCap)) => {
                tracing::warn!(
                    "reception still running after maxcallduration {:?}; hanging up",
                    self.cfg.gofaxd.max_call_duration
                );
                call.log.log("maxcallduration reached: hanging up");
            }
            (Command::HangUp, None) => {
                call.log.log("no hangup after the fax result: hanging up");
                tracing::info!(
                    "no hangup {:?} after the fax result; hanging up",
                    self.cfg.gofaxd.hangup_after_result
                );
            }
            _ => {}
        }
        match command {
            Command::HangUp => {
                let _ = timeout(SHORT, self.session.hangup("NORMAL_CLEARING")).await;
            }
            Command::Kill => self.uuid_kill().await,
        }
    }

    /// Applies whatever events arrive within `grace` (or until the call is complete).
    pub(super) async fn drain(&mut self, grace: Duration) {
        let end = Instant::now() + grace;
        while !self.result.is_complete() {
            match timeout_at(end, self.events.recv()).await {
                Ok(Some(SessionItem::Event(ev))) => {
                    self.result.apply(&ev);
                }
                Ok(Some(SessionItem::Disconnect(_))) => {}
                _ => break,
            }
            if self.result.hangup.is_some() && !self.result.answered() {
                break;
            }
        }
    }

    /// Before rxfax: hangs the channel up now; kills it if the hangup does not happen.
    async fn kill(&mut self) {
        let _ = timeout(SHORT, self.session.hangup("NORMAL_CLEARING")).await;
        let end = Instant::now() + KILL_GRACE;
        while self.result.hangup.is_none() {
            match timeout_at(end, self.events.recv()).await {
                Ok(Some(SessionItem::Event(ev))) => {
                    self.result.apply(&ev);
                }
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(_) => {
                    self.uuid_kill().await;
                    return;
                }
            }
        }
    }

    async fn uuid_kill(&self) {
        let cmd = format!("uuid_kill {}", self.session.channel_uuid());
        let _ = timeout(SHORT, self.session.api(&cmd)).await;
    }

    /// The next free recvq file, and the reception durably journalled under it: the record
    /// that makes a crash after this point recoverable. A record that cannot be written is
    /// logged; the fax is received anyway, but a crash during the call would orphan it.
    async fn allocate_and_journal(
        &self,
        call: &Accepted,
    ) -> Result<(String, std::path::PathBuf), RecvqError> {
        let caller = &call.caller;
        let mut rec = PendingReception {
            commid: call.commid.clone(),
            recvq_file: String::new(),
            modem: call.lease.name().to_owned(),
            cidnum: caller.cidnum.clone(),
            cidname: caller.cidname.clone(),
            recipient: caller.recipient.number.clone(),
            gateway: caller.gateway.clone(),
            call_uuid: self.session.channel_uuid().to_owned(),
            started: call.started.timestamp(),
            delivery: DeliveryStage::Received,
        };
        let spool = self.daemon.spool.clone();
        let committed = self
            .daemon
            .journal
            .commit_with(move |ctx| {
                let (rel, abs) = free_recvq_file(&spool)?;
                rec.recvq_file = rel.clone();
                Ok::<_, RecvqError>((rel, abs, ctx.journal.add(&rec)))
            })
            .await;
        let (found, synced) = match committed {
            Ok(done) => done,
            Err(_) => return Err(RecvqError::Writer(WriterGone)),
        };
        let (rel, abs, added) = found?;
        if let Err(e) = added.map(drop).and(synced) {
            tracing::error!(
                "{e}; receiving anyway, but a crash during this call would orphan the fax"
            );
        }
        Ok((rel, abs))
    }
}

/// How the reception ended, from how the call did.
fn end_of(finish: Finish, lost: String) -> End {
    match finish.cut {
        Some(Cut::HardCap) => End::MaxDuration,
        Some(Cut::Shutdown) => End::Shutdown,
        Some(Cut::ConnectionLost) => End::ConnectionLost(lost),
        None if finish.result => End::Complete,
        None => End::NoResult,
    }
}

/// Why a call could not be taken.
#[derive(Debug, thiserror::Error)]
pub(super) enum RecvqError {
    #[error("{0}")]
    Seqf(#[from] SeqfError),
    #[error("{0}")]
    Writer(#[from] WriterGone),
    #[error("cannot find a free recvq file name (10 numbers in a row were taken)")]
    AllTaken,
}

/// The call's commid from `log/seqf`, taken by the spool writer (it locks). Not synced: the
/// journal carries every number a reception uses, and this boot's reserved block covers
/// fsfaxsend's (see `seqf::next_commid_unsynced`).
pub(super) async fn next_commid(
    writer: &crate::hylafax::writer::SpoolWriter,
    path: std::path::PathBuf,
) -> Result<u32, RecvqError> {
    Ok(writer
        .write(move |_| seqf::next_commid_unsynced(&path))
        .await?
        .0?)
}

/// The next free `recvq/faxNNNNNNNNN.tif` (a number whose file exists is skipped: another
/// program on the spool may have used it); run by the spool writer, which takes the number.
fn free_recvq_file(
    spool: &crate::hylafax::Spool,
) -> Result<(String, std::path::PathBuf), RecvqError> {
    for _ in 0..10 {
        let n = seqf::next_unsynced(&spool.recvq_seqf())?;
        let rel = seqf::recvq_relative(n);
        let abs = spool.join(&rel);
        if !abs.exists() {
            return Ok((rel, abs));
        }
        tracing::warn!(file = %abs.display(), "recvq file exists already; taking the next number");
    }
    Err(RecvqError::AllTaken)
}
