//! Start-up recovery: receptions a previous fsfaxd journalled but never handed to faxrcvd.
//!
//! fsfaxd may have died (crash, SIGKILL, OOM, shutdown timeout) anywhere between the journal
//! write before `rxfax` and faxrcvd. A document that exists is delivered now, with an error
//! message saying so (its completeness is unknown); an entry without a document is dropped.
//! FreeSWITCH's `rxfax` does not stop when our socket goes, so a reception may still be
//! running: while its call is up (`uuid_exists`), the document is not touched. A stop while
//! recovery waits leaves the entries not yet delivered for the next start.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{Local, TimeZone};
use tokio_util::sync::CancellationToken;

use super::SwitchLink;
use super::deliver::{self, Reception};
use crate::config::Config;
use crate::hylafax::Spool;
use crate::hylafax::journal::{Journal, PendingReception};
use crate::hylafax::sessionlog::SessionLog;

/// faxrcvd's error message for a recovered reception.
pub const RECOVERED: &str =
    "reception recovered after a restart of fsfaxd (the fax may be incomplete)";
/// A document changed this recently may still be written by FreeSWITCH (whose call can
/// outlive us): wait until it has been quiet this long.
const QUIET: Duration = Duration::from_secs(5);
/// How often to ask whether an interrupted reception's call is still up.
const CALL_POLL: Duration = Duration::from_secs(5);
/// Never wait longer than this for one document.
const MAX_WAIT: Duration = Duration::from_secs(120);

/// Delivers or drops every pending reception, oldest first. Returns how many were delivered.
pub(crate) async fn recover(
    spool: &Spool,
    cfg: &Arc<Config>,
    journal: &Journal,
    switch: &SwitchLink,
    stopping: &CancellationToken,
) -> usize {
    let list = {
        let journal = journal.clone();
        tokio::task::spawn_blocking(move || journal.list()).await
    };
    let scan = match list {
        Ok(Ok(scan)) => scan,
        Ok(Err(e)) => {
            tracing::error!("cannot read the reception journal: {e}");
            return 0;
        }
        Err(e) => {
            tracing::error!("reading the reception journal did not run: {e}");
            return 0;
        }
    };
    let mut delivered = 0;
    for pending in scan.pending {
        let path = spool.join(&pending.recvq_file);
        if !path.exists() {
            tracing::info!(
                commid = %pending.commid,
                file = %pending.recvq_file,
                "pending reception without a document (nothing was received); dropping it"
            );
            if let Err(e) = journal.remove(&pending.commid) {
                tracing::error!("{e}");
            }
            continue;
        }
        let waited = async {
            wait_for_call_end(cfg, switch, &pending.call_uuid).await;
            wait_until_quiet(&path).await;
        };
        tokio::select! {
            () = waited => {}
            () = stopping.cancelled() => {
                tracing::info!("stopping: interrupted receptions left for the next start");
                break;
            }
        }
        tracing::warn!(
            commid = %pending.commid,
            file = %pending.recvq_file,
            "delivering a reception interrupted by a restart of fsfaxd"
        );
        let log = session_log(spool, &pending.commid);
        log.log(&format!(
            "fsfaxd restarted: recovering {}",
            pending.recvq_file
        ));
        let rec = reception(&pending);
        let done = deliver::deliver(spool, cfg, journal, rec, log).await;
        if done.faxrcvd_ran {
            delivered += 1;
        }
    }
    delivered
}

fn reception(p: &PendingReception) -> Reception {
    Reception {
        commid: p.commid.clone(),
        recvq_file: p.recvq_file.clone(),
        modem: p.modem.clone(),
        cidnum: p.cidnum.clone(),
        cidname: p.cidname.clone(),
        recipient: p.recipient.clone(),
        gateway: p.gateway.clone(),
        started: Local
            .timestamp_opt(p.started, 0)
            .single()
            .unwrap_or_else(Local::now),
        failure: Some(RECOVERED.to_owned()),
        remote_id: String::new(),
        pages_reported: 0,
        bit_rate: 0,
        ecm: false,
        data_format: None,
        hangup_cause: String::new(),
        duration: Duration::ZERO,
        delivery: p.delivery,
    }
}

/// Appends to the reception's own session log (it exists from the interrupted call).
fn session_log(spool: &Spool, commid: &str) -> SessionLog {
    let created = commid
        .parse::<u32>()
        .map_err(|e| e.to_string())
        .and_then(|n| SessionLog::create(spool, n).map_err(|e| e.to_string()));
    created.unwrap_or_else(|e| {
        tracing::warn!("session log for {commid}: {e}");
        SessionLog::disabled(commid)
    })
}

/// Waits while FreeSWITCH still has the interrupted call (its `rxfax` may still be writing the
/// document), at most `[gofaxd] maxcallduration`. FreeSWITCH unreachable or the call unknown:
/// the quiet-file check below is all there is.
async fn wait_for_call_end(cfg: &Config, switch: &SwitchLink, uuid: &str) {
    if uuid.is_empty() || !uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return;
    }
    let start = tokio::time::Instant::now();
    let mut logged = false;
    while start.elapsed() < cfg.gofaxd.max_call_duration {
        let Ok(client) = switch.client(cfg).await else {
            return;
        };
        match client.api(&format!("uuid_exists {uuid}")).await {
            Ok(reply) if reply.trim() == "true" => {
                if !logged {
                    tracing::info!(call = %uuid, "interrupted reception still in progress in FreeSWITCH; waiting for its end");
                    logged = true;
                }
                tokio::time::sleep(CALL_POLL).await;
            }
            _ => return,
        }
    }
}

async fn wait_until_quiet(path: &Path) {
    let start = tokio::time::Instant::now();
    loop {
        let age = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or(QUIET);
        if age >= QUIET || start.elapsed() >= MAX_WAIT {
            return;
        }
        tokio::time::sleep(QUIET - age).await;
    }
}
