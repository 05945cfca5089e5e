//! Accepting an admitted call, before anything is answered: a virtual modem (or a rejection),
//! DynamicConfig's verdict ([`screen`]), a commid and the session log, the T.38 settings for
//! this caller. Each is a step of its own; a rejection ends the call here.

use chrono::{DateTime, Local};

use super::call::Call;
use super::modems::{Lease, OVERFLOW_MODEM};
use super::rxfax::next_commid;
use super::screen::{self, Caller, Screen, T38};
use crate::hylafax::seqf;
use crate::hylafax::sessionlog::SessionLog;
use crate::ops::live::{CallEntry, live};
use crate::ops::metrics::metrics;

/// A call that was admitted, screened and given a commid: what the reception needs.
pub(super) struct Accepted {
    pub caller: Caller,
    pub commid: String,
    pub ident: String,
    pub t38: T38,
    pub lease: Lease,
    pub log: SessionLog,
    pub started: DateTime<Local>,
    /// The call as `fsfaxd status` shows it while it runs.
    pub live: CallEntry,
}

impl Call {
    /// A modem, DynamicConfig's verdict, a commid and the session log, the T.38 settings;
    /// `None` when the call was rejected.
    pub(super) async fn accept(&mut self, caller: Caller) -> Option<Accepted> {
        let lease = self.lease_modem().await?;
        tracing::Span::current().record("modem", lease.name());
        let ident = self.screen(&caller, &lease).await?;
        let (commid, log) = self.open_session(&caller).await?;
        lease.commid(&commid);
        let live = live().call(
            &caller.cidnum,
            &caller.cidname,
            &caller.recipient.number,
            lease.name(),
            &commid,
        );
        let started = Local::now();
        let t38 = self.t38(&caller, &log).await;
        self.log_accepted(&caller, &lease, &t38, &log);
        Some(Accepted {
            caller,
            commid,
            ident,
            t38,
            lease,
            log,
            started,
            live,
        })
    }

    /// A virtual modem for the call; the call is rejected (`None`) when there is none and
    /// allocateinbounddevices asks for one.
    async fn lease_modem(&mut self) -> Option<Lease> {
        let lease = self.take_modem();
        if lease.is_none() {
            tracing::warn!(
                "every virtual modem is busy and allocateinbounddevices is set; rejecting the call with 503"
            );
            metrics().reception_finished("rejected_busy", "none", 0, None, None);
            self.reject("503").await;
        }
        lease
    }

    /// A free virtual modem, or a name saying there is none.
    fn take_modem(&self) -> Option<Lease> {
        // Every reception is accounted on a virtual modem, so faxstat and faxq see it (GOfax.IP
        // only meant to, and never did). When all are busy the call is still received under a
        // name that says so (FreeSWITCH has the lines), unless allocateinbounddevices asks for
        // GOfax.IP's intent: no free modem, no call.
        match self.daemon.modems.acquire() {
            Some(lease) => Some(lease),
            None if self.cfg.gofaxd.allocate_inbound_devices => None,
            None => {
                tracing::warn!("every virtual modem is busy; receiving as {OVERFLOW_MODEM}");
                Some(Lease::unaccounted(OVERFLOW_MODEM))
            }
        }
    }

    /// DynamicConfig's verdict: the ident to answer with, or `None` when it rejected the
    /// call (rejected here). A caller gone during screening is accounted for later, with the
    /// configured ident.
    async fn screen(&mut self, caller: &Caller, lease: &Lease) -> Option<String> {
        let (daemon, cfg) = (self.daemon.clone(), self.cfg.clone());
        let screened = self
            .unless_gone(screen::screen(&daemon, &cfg, caller, lease.name()))
            .await;
        match screened {
            Some(Screen::Accept { ident }) => {
                Some(ident.unwrap_or_else(|| self.cfg.freeswitch.ident.clone()))
            }
            // Accounted for later (commid, session log, xferfaxlog), never answered.
            None => Some(self.cfg.freeswitch.ident.clone()),
            Some(Screen::Reject) => {
                let cause = self.cfg.gofaxd.reject_cause.to_string();
                tracing::info!("call rejected by DynamicConfig with {cause}");
                metrics().reception_finished("rejected_dynamicconfig", "none", 0, None, None);
                self.reject(&cause).await;
                None
            }
        }
    }

    /// A commid and the call's session log, begun; the call is rejected (`None`) when no
    /// commid can be had.
    async fn open_session(&mut self, caller: &Caller) -> Option<(String, SessionLog)> {
        let writer = self.daemon.journal.writer();
        let commid = match next_commid(writer, self.daemon.spool.log_seqf()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("cannot allocate a commid ({e}); rejecting the call with 503");
                metrics().reception_finished("failed", "none", 0, None, None);
                self.reject("503").await;
                return None;
            }
        };
        let commid_text = seqf::format_commid(commid);
        tracing::Span::current().record("commid", commid_text.as_str());
        let log = SessionLog::through(writer, &self.daemon.spool, commid);
        log.begin(&caller.cidnum);
        log.log(&format!(
            "Inbound channel UUID: {}",
            self.session.channel_uuid()
        ));
        Some((commid_text, log))
    }

    /// T.38 as configured, unless the caller is on the fallback list (asked only while the
    /// caller is still there).
    async fn t38(&mut self, caller: &Caller, log: &SessionLog) -> T38 {
        let configured = T38::configured(&self.cfg);
        if self.gone.is_some() {
            return configured;
        }
        let (daemon, cfg) = (self.daemon.clone(), self.cfg.clone());
        self.unless_gone(screen::t38_settings(&daemon, &cfg, self.node, caller, log))
            .await
            .unwrap_or(configured)
    }

    /// The session log's line before the answer: accepted with which T.38 settings, or the
    /// caller already gone.
    fn log_accepted(&self, caller: &Caller, lease: &Lease, t38: &T38, log: &SessionLog) {
        if self.gone.is_some() {
            let cause = self.result.hangup_cause().unwrap_or("no cause");
            log.log(&format!(
                "Call to {} from {} <{}> on {} ended before the answer: the caller hung up ({cause})",
                caller.recipient.number,
                caller.cidname,
                caller.cidnum,
                lease.name(),
            ));
            tracing::info!(cause, "caller hung up before the answer");
        } else {
            log.log(&format!(
                "Accepting call to {} from {} <{}>{} on {} ({})",
                caller.recipient.number,
                caller.cidname,
                caller.cidnum,
                caller.via(),
                lease.name(),
                t38_words(t38)
            ));
        }
    }
}

/// The T.38 settings of a call in an administrator's words.
fn t38_words(t38: &T38) -> &'static str {
    match (t38.enable, t38.request) {
        (true, true) => "T.38 on, and requested by us",
        (true, false) => "T.38 on if the caller asks for it",
        (false, false) => "T.38 off (audio only)",
        (false, true) => "T.38 off (audio only; requestt38 is set but enablet38 is not)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t38(enable: bool, request: bool) -> T38 {
        T38 {
            enable,
            request,
            listed: false,
        }
    }

    #[test]
    fn t38_settings_are_worded_for_an_admin() {
        assert_eq!(t38_words(&t38(true, true)), "T.38 on, and requested by us");
        assert_eq!(
            t38_words(&t38(true, false)),
            "T.38 on if the caller asks for it"
        );
        assert_eq!(t38_words(&t38(false, false)), "T.38 off (audio only)");
        assert_eq!(
            t38_words(&t38(false, true)),
            "T.38 off (audio only; requestt38 is set but enablet38 is not)"
        );
    }
}
