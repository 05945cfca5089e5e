//! What happens after an inbound call: the result in the session log, the T.38 fallback
//! memory, the line freed, the reception counted in the metrics, and the [`Reception`] handed
//! to [`deliver`] (or, with no rxfax run, only accounted for; at shutdown, left for the next
//! start's recovery).

use std::time::Duration;

use chrono::{DateTime, Local};

use super::accept::Accepted;
use super::call::Call;
use super::deliver::{self, Reception};
use super::outcome::{End, failure};
use super::screen::{self, Caller};
use crate::hylafax::sessionlog::SessionLog;
use crate::hylafax::xferfaxlog::DataFormat;
use crate::ops::metrics::metrics;

impl Call {
    /// The call is over: the fallback memory, the line freed, then the hand-over to faxrcvd
    /// (or, at shutdown, to the next start).
    pub(super) async fn after_call(self, call: Accepted, recvq_file: Option<String>, end: End) {
        self.wrap_up(&call).await;
        let Accepted {
            caller,
            commid,
            lease,
            log,
            started,
            ..
        } = call;
        let modem = lease.name().to_owned();
        // The line is free: faxq may use the modem while faxrcvd mails the fax.
        drop(lease);
        if end == End::Shutdown {
            log.log("fsfaxd is shutting down: reception left for recovery at the next start");
            tracing::warn!(
                "call hung up for shutdown; its reception is finished at the next start"
            );
            return;
        }
        self.count(recvq_file.is_some());
        let rxfax_ran = recvq_file.is_some();
        let rec = self.reception(&caller, &commid, recvq_file, &modem, started, &end);
        if rxfax_ran {
            self.hand_over(rec, log).await;
        } else {
            self.account_no_fax(rec, log).await;
        }
    }

    /// The result in the session log, the T.38 fallback memory, the connection closed.
    async fn wrap_up(&self, call: &Accepted) {
        let Accepted {
            caller, lease, log, ..
        } = call;
        if self.result.transferred_pages > 0 {
            lease.document();
        }
        log.log(&format!(
            "Success: {}, Hangup Cause: {}, Result: {}, Pages: {}",
            self.result.success(),
            self.result.hangup_cause().unwrap_or(""),
            self.result.result_text().unwrap_or(""),
            self.result.transferred_pages
        ));
        let listed = call.t38.listed;
        screen::remember_fallback(
            &self.daemon,
            &self.cfg,
            self.node,
            caller,
            &self.result,
            listed,
            log,
        )
        .await;
        self.close().await;
    }

    /// No rxfax ran: nothing to hand over, but the call is accounted for (xferfaxlog).
    async fn account_no_fax(&self, rec: Reception, log: SessionLog) {
        log.log(&format!(
            "call ended before the fax: {}",
            rec.failure.clone().unwrap_or_default()
        ));
        let d = &self.daemon;
        deliver::write_call_record(d.journal.writer(), &d.spool, &self.cfg, rec).await;
        log.end();
    }

    /// The document to xferfaxlog and faxrcvd.
    async fn hand_over(&self, rec: Reception, log: SessionLog) {
        let d = &self.daemon;
        let done = deliver::deliver(&d.spool, &self.cfg, &d.journal, rec, log).await;
        tracing::info!(
            pages = done.pages.unwrap_or(0),
            faxrcvd = done.faxrcvd_ran,
            "reception finished: {}",
            if done.errmsg.is_empty() {
                "OK"
            } else {
                &done.errmsg
            }
        );
    }

    /// The reception's outcome in the metrics (a reception cut by shutdown is finished, and
    /// counted, by the next start's recovery... or not at all: it is not counted here).
    fn count(&self, rxfax_ran: bool) {
        let r = &self.result;
        let outcome = if !rxfax_ran {
            "no_fax"
        } else if r.success() {
            "success"
        } else if r.transferred_pages > 0 {
            "partial"
        } else if r.negotiation_count == 0 {
            "no_fax"
        } else {
            "failed"
        };
        let mode = match &r.t38_status {
            Some(crate::fax::T38Status::Negotiated) => "t38",
            Some(_) => "audio",
            None => "none",
        };
        let seconds = r.answered().then(|| r.connected_seconds()).flatten();
        metrics().reception_finished(
            outcome,
            mode,
            r.transferred_pages,
            seconds.map(|s| s.max(0) as f64),
            r.result_code(),
        );
    }

    /// Everything known about the reception, for xferfaxlog and faxrcvd.
    fn reception(
        &self,
        caller: &Caller,
        commid: &str,
        recvq_file: Option<String>,
        modem: &str,
        started: DateTime<Local>,
        end: &End,
    ) -> Reception {
        let r = &self.result;
        // Connect time starts at the answer: a call never answered has none (recvstats
        // charges what xferfaxlog says).
        let duration = if r.answered() {
            r.connected_seconds()
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs)
                .unwrap_or_else(|| (Local::now() - started).to_std().unwrap_or_default())
        } else {
            Duration::ZERO
        };
        Reception {
            commid: commid.to_owned(),
            recvq_file: recvq_file.unwrap_or_default(),
            modem: modem.to_owned(),
            cidnum: caller.cidnum.clone(),
            cidname: caller.cidname.clone(),
            recipient: caller.recipient.number.clone(),
            gateway: caller.gateway.clone(),
            started,
            failure: failure(r, end, self.cfg.gofaxd.max_call_duration),
            remote_id: r.remote_station_id.clone().unwrap_or_default(),
            pages_reported: r.transferred_pages,
            bit_rate: r.transfer_rate.unwrap_or(0),
            ecm: r.ecm_used,
            data_format: r.encoding_name().and_then(DataFormat::from_encoding_name),
            hangup_cause: r.hangup_cause().unwrap_or_default().to_owned(),
            duration,
            delivery: crate::hylafax::journal::DeliveryStage::Received,
        }
    }
}
