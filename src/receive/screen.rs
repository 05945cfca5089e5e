//! Who is calling and whether to take the call: the caller from the `connect` reply,
//! DynamicConfig's verdict, and the caller's T.38 fallback memory (looked up before the
//! answer, written after the call).

use chrono::Local;

use super::Daemon;
use super::recipient::{self, Recipient};
use crate::config::{Config, DynamicConfigFailure};
use crate::esl::ChannelData;
use crate::fallback::{self, FallbackDb, Lookup, StationKey};
use crate::fax::{Direction, FaxResult};
use crate::hylafax::dynconfig;
use crate::hylafax::sessionlog::SessionLog;

/// Who is calling whom, from the `connect` reply.
#[derive(Debug, Clone)]
pub(super) struct Caller {
    pub cidnum: String,
    pub cidname: String,
    pub recipient: Recipient,
    pub gateway: String,
}

impl Caller {
    pub fn from_channel(cfg: &Config, data: &ChannelData) -> Caller {
        let get = |k: &str| data.get(k).map(str::to_owned).unwrap_or_default();
        let gateway = data
            .get("variable_sip_gateway")
            .or_else(|| data.get("variable_sip_gateway_name"))
            .unwrap_or_default()
            .to_owned();
        Caller {
            cidnum: get("Channel-Caller-ID-Number"),
            cidname: get("Channel-Caller-ID-Name"),
            recipient: recipient::recipient(&cfg.gofaxd, |k| data.get(k)),
            gateway,
        }
    }
}

impl Caller {
    /// ` via gateway "gw"` for a log line, or nothing when FreeSWITCH named no gateway.
    pub fn via(&self) -> String {
        if self.gateway.is_empty() {
            String::new()
        } else {
            format!(" via gateway {:?}", self.gateway)
        }
    }
}

/// The DynamicConfig verdict.
pub(super) enum Screen {
    Accept { ident: Option<String> },
    Reject,
}

/// DynamicConfig: `<script> <modem> <cidnum> <cidname> <recipient> <gateway>`.
pub(super) async fn screen(daemon: &Daemon, cfg: &Config, caller: &Caller, modem: &str) -> Screen {
    let g = &cfg.gofaxd;
    let Some(program) = &g.dynamic_config else {
        return Screen::Accept { ident: None };
    };
    let program = cfg.spool_path(program);
    let args = [
        modem,
        &caller.cidnum,
        &caller.cidname,
        &caller.recipient.number,
        &caller.gateway,
    ];
    let began = std::time::Instant::now();
    let run = dynconfig::run(
        &program,
        args,
        daemon.spool.root(),
        g.dynamic_config_timeout,
        dynconfig::DEFAULT_MAX_OUTPUT,
    )
    .await;
    let result = match &run {
        Ok(out) if out.success() => "ok",
        Err(dynconfig::DynConfigError::Timeout { .. }) => "timeout",
        _ => "failed",
    };
    crate::ops::metrics::metrics().dynamicconfig(result, began.elapsed().as_secs_f64());
    let failure = match run {
        Ok(out) => {
            for line in out.stderr.lines().filter(|l| !l.trim().is_empty()) {
                tracing::info!("DynamicConfig {}: {line}", program.display());
            }
            if out.success() {
                let settings = out.settings();
                for w in &settings.warnings {
                    tracing::warn!("DynamicConfig {}: {w}", program.display());
                }
                let incoming = settings.incoming();
                if incoming.reject_call {
                    return Screen::Reject;
                }
                return Screen::Accept {
                    ident: incoming.local_identifier,
                };
            }
            format!(
                "DynamicConfig {} exited with {}",
                program.display(),
                out.status
            )
        }
        Err(e) => e.to_string(),
    };
    match g.dynamic_config_failure {
        DynamicConfigFailure::Accept => {
            tracing::error!("{failure}; accepting the call with the static configuration");
            Screen::Accept { ident: None }
        }
        DynamicConfigFailure::Reject => {
            tracing::error!("{failure}; rejecting the call (dynamicconfigfailure = reject)");
            Screen::Reject
        }
    }
}

/// The T.38 settings for a call.
#[derive(Debug, Clone, Copy)]
pub(super) struct T38 {
    pub enable: bool,
    pub request: bool,
    /// The caller was on the T.38 fallback list when the call came in.
    pub listed: bool,
}

impl T38 {
    /// T.38 as configured, without the fallback list.
    pub fn configured(cfg: &Config) -> T38 {
        T38 {
            enable: cfg.gofaxd.enable_t38,
            request: cfg.gofaxd.request_t38,
            listed: false,
        }
    }
}

/// T.38 as configured, unless the caller is on the fallback list (mod_db, through the
/// daemon's shared connection: see `SwitchLink`).
pub(super) async fn t38_settings(
    daemon: &Daemon,
    cfg: &Config,
    caller: &Caller,
    log: &SessionLog,
) -> T38 {
    let configured = T38 {
        enable: cfg.gofaxd.enable_t38,
        request: cfg.gofaxd.request_t38,
        listed: false,
    };
    let fs = &cfg.freeswitch;
    if !fs.softmodem_fallback || !(configured.enable || configured.request) {
        return configured;
    }
    let Some(key) = StationKey::inbound(&caller.cidnum) else {
        return configured;
    };
    let client = match daemon.switch.client(cfg).await {
        Ok(client) => client,
        Err(e) => {
            crate::ops::metrics::metrics().fallback_lookup("error");
            let text = format!("T.38 fallback list unavailable ({e}); T.38 as configured");
            log.log(&text);
            tracing::warn!(station = %key, "{text}");
            return configured;
        }
    };
    let db = FallbackDb::new(&client, fs.fallback_lookup_timeout);
    let now = Local::now().timestamp();
    let found = fallback::lookup(&db, &key, now, fs.softmodem_fallback_expiry).await;
    crate::ops::metrics::metrics().fallback_lookup(match &found {
        Lookup::Audio { .. } => "hit",
        Lookup::NotListed => "miss",
        Lookup::Expired { .. } => "expired",
        Lookup::Unavailable(crate::fallback::FallbackError::Timeout { .. }) => "timeout",
        Lookup::Unavailable(_) => "error",
    });
    if let Some(text) = found.describe(&key, Direction::Receive) {
        log.log(&text);
        match &found {
            Lookup::Unavailable(_) => tracing::warn!(station = %key, "{text}"),
            _ => tracing::info!(station = %key, "{text}"),
        }
    }
    let listed = found.listed();
    if found.audio() {
        T38 {
            enable: false,
            request: false,
            listed,
        }
    } else {
        T38 {
            listed,
            ..configured
        }
    }
}

/// Writes (or clears) the caller's T.38 fallback entry after the call.
pub(super) async fn remember_fallback(
    daemon: &Daemon,
    cfg: &Config,
    caller: &Caller,
    result: &FaxResult,
    listed: bool,
    log: &SessionLog,
) {
    let fs = &cfg.freeswitch;
    if !fs.softmodem_fallback {
        return;
    }
    let Some(key) = StationKey::inbound(&caller.cidnum) else {
        return;
    };
    if !fallback::after_call_needed(
        Direction::Receive,
        result,
        fs.softmodem_fallback_clear_on_success,
        listed,
    ) {
        return;
    }
    let client = match daemon.switch.client(cfg).await {
        Ok(client) => client,
        Err(e) => {
            log.log(&format!("cannot update the T.38 fallback list: {e}"));
            tracing::warn!(station = %key, "cannot update the T.38 fallback list: {e}");
            return;
        }
    };
    let recorded =
        fallback::record_after_call(&client, fs, &key, Direction::Receive, result, listed).await;
    if let Some(text) = recorded {
        log.log(&text);
    }
}
