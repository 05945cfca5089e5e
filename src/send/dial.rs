//! Step 2 of an attempt: connect to FreeSWITCH, apply the station's T.38 fallback and the
//! per-destination overrides, then one originate per gateway, in order, until one answers or a
//! cause says the destination itself answered.

use chrono::Local;
use futures_util::future::{join, join_all, try_join_all};
use tracing::Instrument;
use uuid::Uuid;

use crate::config::{Config, Node};
use crate::esl::{
    AskAhead, ClientError, CloseReason, Command, CommandError, EventStream, InboundClient,
    OpenError, Opened, SessionItem,
};
use crate::fallback::{self, DbReply, FallbackDb, FallbackError, Lookup, StationKey, db_key_safe};
use crate::fax::dialstring::normalize_dial_number;
use crate::fax::outcome::{normalize_cause, should_fail_over};
use crate::fax::{Direction, FaxResult, LocalError, OriginateRequest};

use super::call::{CallEnd, EVENTS, EslSession, Stop, client_config, close_text};
use super::prepare::{self, Context};
use super::{Job, nodes};

/// An answered call, handed to the transfer step.
pub(super) struct Answered {
    pub session: EslSession,
    pub events: EventStream,
    pub uuid: Uuid,
    /// What the events said while dialling (the answer time).
    pub result: FaxResult,
}

/// The nodes to try, in order, and the first one's connection, opened on a thread of its own
/// while the job is prepared: connect, greeting, `auth` and the first leg's subscription (its
/// filters and the events) go out and are answered meanwhile, and so are the mod_db lookups
/// for the number as the qfile gives it ([`questions_ahead`]). Nothing is counted or written
/// for it: a job that is not dialled after all only closes the connection.
pub(super) struct Early {
    order: Vec<Node>,
    first: Option<FirstLeg>,
}

/// The first leg's identifiers and the connection subscribed to them.
struct FirstLeg {
    uuid: Uuid,
    job_uuid: String,
    opened: tokio::sync::oneshot::Receiver<Result<Opened, OpenError>>,
}

impl Early {
    /// Starts connecting to the first node, unless the job has no id (it cannot be sent).
    pub(super) fn start(cfg: &Config, job: &Job) -> Early {
        let jobid = job.q().jobid().ok();
        let order = nodes::order(
            &cfg.freeswitch,
            &cfg.hylafax.spooldir,
            jobid.unwrap_or_default(),
        );
        let first = jobid
            .and_then(|_| order.first())
            .and_then(|node| FirstLeg::open(cfg, node, questions_ahead(cfg, job)));
        Early { order, first }
    }
}

/// The mod_db lookups [`dial_node`] will make, as far as they are known before the job is
/// prepared: for the qfile's number with the configured call prefix. DynamicConfig may give
/// another prefix, and the dial then asks for its own number; the answers asked ahead are
/// only ever taken by the very same command.
fn questions_ahead(cfg: &Config, job: &Job) -> Vec<AskAhead> {
    let prefix = &cfg.gofaxsend.call_prefix;
    let external = prepare::external_number(job);
    let Ok(dialled) = normalize_dial_number(&format!("{prefix}{external}")) else {
        return Vec::new();
    };
    let fs = &cfg.freeswitch;
    let fallback = StationKey::outbound(&dialled, prefix)
        .filter(|_| fs.softmodem_fallback)
        .map(|key| AskAhead {
            command: fallback::cmd::select(&key),
            timeout: fs.fallback_lookup_timeout,
        });
    let overrides = override_list(&dialled).map(|command| AskAhead {
        command,
        timeout: fs.command_timeout,
    });
    fallback.into_iter().chain(overrides).collect()
}

impl FirstLeg {
    fn open(cfg: &Config, node: &Node, ahead: Vec<AskAhead>) -> Option<FirstLeg> {
        let uuid = Uuid::new_v4();
        let job_uuid = Uuid::new_v4().to_string();
        let commands = subscription(&uuid, &job_uuid, true).ok()?;
        let (tx, opened) = tokio::sync::oneshot::channel();
        let (socket, password) = (node.socket.clone(), node.password.clone());
        let client = client_config(&cfg.freeswitch);
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name("fsfax-connect".into())
            .spawn(move || {
                let _span = span.enter();
                let r =
                    InboundClient::connect_blocking(&socket, &password, &client, &commands, &ahead);
                let _ = tx.send(r);
            })
            .ok()?;
        Some(FirstLeg {
            uuid,
            job_uuid,
            opened,
        })
    }
}

/// A leg's subscription: the filters first, so no other call's events are ever queued for us,
/// then (on the connection's first leg) the events themselves.
fn subscription(uuid: &Uuid, job_uuid: &str, first: bool) -> Result<Vec<Command>, CommandError> {
    let mut commands = vec![
        Command::filter("Unique-ID", &uuid.to_string())?,
        Command::filter("Job-UUID", job_uuid)?,
    ];
    if first {
        commands.push(Command::event_plain(EVENTS)?);
    }
    Ok(commands)
}

/// How one gateway's originate went.
enum Leg {
    /// Answered: the call and what its events said so far.
    Answered(Uuid, Box<FaxResult>),
    /// The originate failed with this cause.
    Failed(String),
}

/// Dials the job's number: through each FreeSWITCH node in turn ([`nodes::order`]) while a
/// node cannot take the call at all, and on a node through the gateways. `Err` says how the
/// attempt ended without an answer.
pub(super) async fn dial(
    cfg: &Config,
    ctx: &mut Context,
    job: &mut Job,
    stop: &mut Stop,
    early: Early,
) -> Result<Answered, CallEnd> {
    let Early { order, mut first } = early;
    let several = order.len() > 1;
    let mut ended = None;
    for (i, node) in order.iter().enumerate() {
        let named = several.then_some(node.socket.as_str());
        ctx.node = Some(node.clone());
        let opened_ahead = first.take();
        let ahead = opened_ahead.is_some();
        let mut tried = dial_node(cfg, ctx, job, stop, node, named, opened_ahead).await;
        if ahead && went_away_before_dialling(&tried) {
            // The connection opened ahead went away while the job was prepared (FreeSWITCH
            // restarted, say, while DynamicConfig ran): once more on a fresh one.
            ctx.log
                .log("FreeSWITCH closed the connection before the dial; connecting again");
            tried = dial_node(cfg, ctx, job, stop, node, named, None).await;
        }
        match tried {
            Ok(answered) => return Ok(answered),
            Err(NodeEnd { end, next_may_try }) => {
                let next = order.get(i + 1).filter(|_| next_may_try);
                let Some(next) = next else {
                    return Err(end);
                };
                let text = format!(
                    "FreeSWITCH node {} cannot take the call ({}); trying node {}",
                    node.socket,
                    end_text(&end),
                    next.socket
                );
                ctx.log.log(&text);
                tracing::warn!("{text}");
                ended = Some(end);
            }
        }
    }
    Err(ended.unwrap_or_else(|| {
        CallEnd::NoDial(
            LocalError::FreeswitchUnreachable,
            "no FreeSWITCH node configured".into(),
        )
    }))
}

/// Nothing was dialled and the event socket was lost (not refused, not a signal).
fn went_away_before_dialling(tried: &Result<Answered, NodeEnd>) -> bool {
    matches!(
        tried,
        Err(NodeEnd {
            end: CallEnd::NoDial(LocalError::EslDropped, _),
            ..
        })
    )
}

/// How an attempt on one node ended, and whether the next node may try the call.
struct NodeEnd {
    end: CallEnd,
    /// Nothing reached the destination through this node (unreachable, or every gateway
    /// down or unknown there).
    next_may_try: bool,
}

fn end_text(end: &CallEnd) -> String {
    match end {
        CallEnd::NoDial(_, why) | CallEnd::LocalAfterDial(_, why) => why.clone(),
        CallEnd::OriginateFailed { attempts, .. } => attempts.join("; "),
        CallEnd::Connected { .. } => "connected".into(),
    }
}

/// The attempt on one node: connect (or take the connection opened ahead), the fallback list
/// and overrides, the gateways. `named`: the node's address when several are configured
/// (status and session log name it).
async fn dial_node(
    cfg: &Config,
    ctx: &mut Context,
    job: &mut Job,
    stop: &mut Stop,
    node: &Node,
    named: Option<&str>,
    first: Option<FirstLeg>,
) -> Result<Answered, NodeEnd> {
    let spooldir = &cfg.hylafax.spooldir;
    let interrupted = |sig: &str| NodeEnd {
        end: CallEnd::NoDial(LocalError::Interrupted, format!("{sig} before dialling")),
        next_may_try: false,
    };
    // The switch answered: it is up, and the session log says which one it is.
    let reached = |ctx: &Context| {
        nodes::mark_up(spooldir, &node.socket);
        if let Some(name) = named {
            ctx.log.log(&format!("Using FreeSWITCH node {name}"));
        }
    };
    let mut presubscribed = None;
    // A signal that came while the job was prepared wins over a connection already open.
    let connected = match first {
        None => tokio::select! {
            biased;
            sig = stop.recv() => return Err(interrupted(sig)),
            r = EslSession::connect(&cfg.freeswitch, node) => r,
        },
        Some(leg) => {
            let opened = tokio::select! {
                biased;
                sig = stop.recv() => return Err(interrupted(sig)),
                r = leg.opened => r,
            };
            match opened {
                Ok(Ok(opened)) => {
                    presubscribed = Some((leg.uuid, leg.job_uuid));
                    EslSession::from_opened(&cfg.freeswitch, node, opened)
                }
                Ok(Err(OpenError {
                    error,
                    authenticated: false,
                })) => Err(error),
                Ok(Err(OpenError { error, .. })) => {
                    // The switch is there; the subscription failed before anything was dialled.
                    reached(ctx);
                    ctx.log.log(&format!("{error}"));
                    return Err(NodeEnd {
                        end: CallEnd::NoDial(LocalError::EslDropped, error.to_string()),
                        next_may_try: true,
                    });
                }
                // The connecting thread is gone without a word (it cannot be, short of a bug).
                Err(_) => Err(ClientError::Closed {
                    peer: node.socket.clone(),
                    reason: CloseReason::Dropped,
                }),
            }
        }
    };
    let unreachable = |ctx: &Context, e: &ClientError| {
        nodes::mark_down(spooldir, &node.socket, &e.to_string());
        NodeEnd {
            end: unreachable_switch(ctx, e),
            next_may_try: true,
        }
    };
    let (mut session, mut events) = connected.map_err(|e| unreachable(ctx, &e))?;
    reached(ctx);
    // The station's fallback entry and the destination's overrides are asked for together.
    let client = &session.client;
    let fallback = async {
        match cfg.freeswitch.softmodem_fallback {
            true => lookup_fallback(cfg, &ctx.dialled, &ctx.call_prefix, client).await,
            false => None,
        }
    };
    let (fallback, overrides) = join(fallback, fetch_overrides(&ctx.dialled, client)).await;
    let db_answers = match fallback {
        Some((key, found)) => apply_fallback(ctx, &key, &found),
        None => true,
    };
    if db_answers {
        apply_overrides(ctx, &overrides);
    } else {
        // The lookup timed out and took the connection with it: dial on a fresh one; the
        // overrides, which wait on the same mod_db, are skipped.
        ctx.log
            .log("mod_db did not answer: per-destination overrides skipped for this attempt");
        presubscribed = None;
        events = session
            .reconnect()
            .await
            .map_err(|e| unreachable(ctx, &e))?;
    }
    let dialer = Dialer {
        cfg,
        ctx,
        job,
        stop,
        session,
        events,
        node: named.map(str::to_owned),
        presubscribed,
    };
    dialer.through_gateways().await.map_err(|end| {
        let next_may_try = match &end {
            CallEnd::OriginateFailed { attempts, .. } => {
                let causes: Vec<String> = attempts
                    .iter()
                    .map(|a| a.split_once(": ").map_or(a.as_str(), |(_, c)| c).to_owned())
                    .collect();
                nodes::node_could_not_place(&causes)
            }
            // The event socket failed before the first originate was sent.
            CallEnd::NoDial(e, _) => *e != LocalError::Interrupted,
            _ => false,
        };
        NodeEnd { end, next_may_try }
    })
}

fn unreachable_switch(ctx: &Context, e: &ClientError) -> CallEnd {
    ctx.log.log(&format!("{e}"));
    CallEnd::NoDial(LocalError::FreeswitchUnreachable, e.to_string())
}

/// The attempt while it dials: the connection and what the originates need.
struct Dialer<'a> {
    cfg: &'a Config,
    ctx: &'a mut Context,
    job: &'a mut Job,
    stop: &'a mut Stop,
    session: EslSession,
    events: EventStream,
    /// The node's address when several are configured.
    node: Option<String>,
    /// The first leg's call and job UUIDs when the connection is already subscribed to them.
    presubscribed: Option<(Uuid, String)>,
}

impl Dialer<'_> {
    /// One originate per gateway until one answers or the cause says not to go on.
    async fn through_gateways(mut self) -> Result<Answered, CallEnd> {
        let mut attempts = Vec::new();
        let mut last_cause = String::new();
        let gateways = self.ctx.gateways.clone();
        for (i, gateway) in gateways.iter().enumerate() {
            // Each leg's lines name its own call in a span of their own; the job's span takes
            // the UUID of the call that answered, once (a failover never gives a line two).
            let (uuid, subscribed) = match self.presubscribed.take() {
                Some((uuid, job_uuid)) => (uuid, Some(job_uuid)),
                None => (Uuid::new_v4(), None),
            };
            let leg = tracing::info_span!("leg", gateway = %gateway, uuid = %uuid);
            let originate = self.originate(gateway, i, uuid, subscribed);
            let cause = match originate.instrument(leg).await? {
                Leg::Answered(uuid, result) => {
                    tracing::Span::current().record("uuid", tracing::field::display(uuid));
                    return Ok(Answered {
                        session: self.session,
                        events: self.events,
                        uuid,
                        result: *result,
                    });
                }
                Leg::Failed(cause) => cause,
            };
            attempts.push(format!("{gateway}: {cause}"));
            last_cause = cause.clone();
            let more = i + 1 < gateways.len();
            if !(more && should_fail_over(&cause, &self.cfg.gofaxsend.failover_causes)) {
                break;
            }
        }
        let _ = self.session.client.exit().await;
        Err(CallEnd::OriginateFailed {
            cause: last_cause,
            attempts,
        })
    }

    /// One originate through `gateway` (the `i`th), followed until it is answered or fails.
    /// `subscribed`: the Job-UUID when the connection is already subscribed to this leg.
    async fn originate(
        &mut self,
        gateway: &str,
        i: usize,
        uuid: Uuid,
        subscribed: Option<String>,
    ) -> Result<Leg, CallEnd> {
        let presubscribed = subscribed.is_some();
        let job_uuid = subscribed.unwrap_or_else(|| Uuid::new_v4().to_string());
        let log = &self.ctx.log;
        let request = OriginateRequest {
            uuid,
            gateway: gateway.to_owned(),
            number: self.ctx.dialled.clone(),
            vars: self.ctx.vars.clone(),
            txfax_path: self
                .cfg
                .freeswitch
                .to_switch_path(&self.cfg.hylafax.spooldir, &self.ctx.prepared.path),
            start_page: self.ctx.prepared.start_page,
            end_page: None,
        };
        let command = match request.build() {
            Ok(c) => c,
            Err(e) => {
                log.log(&format!("Gateway {gateway}: {e}"));
                return Ok(Leg::Failed(e.to_string()));
            }
        };
        let subscribed = match presubscribed {
            true => Ok(()),
            false => self.subscribe(&uuid, &job_uuid, i == 0).await,
        };
        if let Err(e) = subscribed {
            log.log(&format!("{e}"));
            return Err(dropped_before_originate(i, e.to_string()));
        }
        // FreeSWITCH went away after the subscription (a mod_db lookup may have seen it go):
        // nothing was dialled on this connection, and nothing is counted. The yield lets the
        // connection's task read a close that is already there (after the I/O driver's turn).
        tokio::task::yield_now().await;
        if let Some(reason) = self.session.client.close_reason() {
            let why = format!(
                "event socket connection to {} closed: {reason}",
                self.session.client.peer()
            );
            log.log(&why);
            return Err(dropped_before_originate(i, why));
        }
        let dialled = &self.ctx.dialled;
        let on = self
            .node
            .as_deref()
            .map(|n| format!(" on node {n}"))
            .unwrap_or_default();
        self.job
            .count_dial(&format!("Dialing {dialled} via {gateway}{on}"))
            .await;
        log.log(&format!(
            "DIAL {dialled} via gateway {gateway}{on} (call {uuid})"
        ));
        tracing::info!(number = %dialled, "originate");
        let (reply, result) = self.await_answer(&command, &job_uuid, uuid).await?;
        let reply = reply.trim();
        if reply.starts_with("+OK") {
            self.ctx
                .log
                .log(&format!("CONNECTED via gateway {gateway}"));
            tracing::info!("answered");
            return Ok(Leg::Answered(uuid, Box::new(result)));
        }
        let cause = normalize_cause(reply);
        self.ctx.log.log(&format!("Gateway {gateway}: {cause}"));
        tracing::info!(cause = %cause, "originate failed");
        Ok(Leg::Failed(cause))
    }

    /// The leg's [`subscription`]. Its commands go out together: FreeSWITCH reads and answers
    /// a socket's commands in order, so the filters still come first, and the dial waits one
    /// round trip, not three. (`try_join_all` polls in order, so the commands are queued in
    /// order.)
    async fn subscribe(&self, uuid: &Uuid, job_uuid: &str, first: bool) -> Result<(), ClientError> {
        let client = &self.session.client;
        let commands = subscription(uuid, job_uuid, first)?;
        try_join_all(commands.into_iter().map(|c| client.command(c))).await?;
        Ok(())
    }

    /// Sends the originate and waits for its BACKGROUND_JOB reply, within `originatetimeout`.
    async fn await_answer(
        &mut self,
        command: &str,
        job_uuid: &str,
        uuid: Uuid,
    ) -> Result<(String, FaxResult), CallEnd> {
        let log = &self.ctx.log;
        let dropped = |why: String| CallEnd::LocalAfterDial(LocalError::EslDropped, why);
        let background = match self
            .session
            .client
            .bgapi_with_job_uuid(command, job_uuid)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                // The originate may be running in FreeSWITCH even though its reply never came.
                log.log(&format!("{e}"));
                self.session.kill_after_drop(&uuid).await;
                return Err(dropped(e.to_string()));
            }
        };
        let mut result = FaxResult::for_channel(Direction::Send, uuid.to_string());
        let deadline = tokio::time::sleep(self.cfg.gofaxsend.originate_timeout);
        tokio::pin!(deadline);
        let background = background.result();
        tokio::pin!(background);
        let reply = loop {
            tokio::select! {
                r = &mut background => break r,
                item = self.events.recv() => match item {
                    Some(SessionItem::Event(ev)) => { result.apply(&ev); }
                    Some(SessionItem::Disconnect(_)) => {}
                    None => {
                        let why = close_text(&self.events);
                        log.log(&format!("Lost the event socket while dialling: {why}"));
                        self.session.kill_after_drop(&uuid).await;
                        return Err(dropped(why));
                    }
                },
                () = &mut deadline => {
                    let why = format!(
                        "no answer and no failure within {:?} ([gofaxsend] originatetimeout); \
                         call cancelled",
                        self.cfg.gofaxsend.originate_timeout
                    );
                    log.log(&why);
                    self.session.kill(&uuid).await;
                    return Err(CallEnd::LocalAfterDial(LocalError::Timeout, why));
                }
                sig = self.stop.recv() => {
                    log.log(&format!("{sig} while dialling; call cancelled"));
                    self.session.kill(&uuid).await;
                    let why = format!("{sig} while dialling");
                    return Err(CallEnd::LocalAfterDial(LocalError::Interrupted, why));
                }
            }
        };
        match reply {
            Ok(body) => Ok((body, result)),
            Err(e) => {
                log.log(&format!("{e}"));
                self.session.kill_after_drop(&uuid).await;
                Err(dropped(e.to_string()))
            }
        }
    }
}

/// The event socket was lost before the `i`th gateway's originate: nothing was dialled when
/// it was the first; an earlier gateway's originate was.
fn dropped_before_originate(i: usize, why: String) -> CallEnd {
    match i {
        0 => CallEnd::NoDial(LocalError::EslDropped, why),
        _ => CallEnd::LocalAfterDial(LocalError::EslDropped, why),
    }
}

/// The station's entry in the T.38 fallback memory (`None`: the number has no station key).
async fn lookup_fallback(
    cfg: &Config,
    dialled: &str,
    call_prefix: &str,
    client: &InboundClient,
) -> Option<(StationKey, Lookup)> {
    let key = StationKey::outbound(dialled, call_prefix)?;
    let fs = &cfg.freeswitch;
    let db = FallbackDb::new(client, fs.fallback_lookup_timeout);
    let now = Local::now().timestamp();
    let found = fallback::lookup(&db, &key, now, fs.softmodem_fallback_expiry).await;
    Some((key, found))
}

/// The T.38 fallback memory: audio for stations that failed with T.38 before. Returns false
/// when FreeSWITCH did not answer and the connection is no longer usable.
fn apply_fallback(ctx: &mut Context, key: &StationKey, found: &Lookup) -> bool {
    if let Some(text) = found.describe(key, Direction::Send) {
        ctx.log.log(&text);
        match found {
            Lookup::Unavailable(_) => tracing::warn!(station = %key, "{text}"),
            _ => tracing::info!(station = %key, "{text}"),
        }
    }
    if found.audio() {
        ctx.vars.enable_t38 = Some(false);
        ctx.vars.enable_t38_request = Some(false);
    }
    ctx.fallback_listed = found.listed();
    !matches!(
        found,
        Lookup::Unavailable(FallbackError::Timeout { .. } | FallbackError::Esl { .. })
    )
}

/// Per-destination overrides an admin stored in mod_db (`override-<number>` realm): each
/// name with its value, in the list's order.
async fn fetch_overrides(dialled: &str, client: &InboundClient) -> Vec<(String, String)> {
    let Some(list) = override_list(dialled) else {
        return Vec::new();
    };
    let Ok(list) = client.api(&list).await else {
        return Vec::new();
    };
    let list = list.trim();
    if refused(list) || list.is_empty() {
        return Vec::new();
    }
    let names: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty() && db_key_safe(n))
        .collect();
    // Asked for together; FreeSWITCH answers in order.
    let realm = override_realm(dialled);
    let selects: Vec<String> = names
        .iter()
        .map(|name| format!("db select/{realm}/{name}"))
        .collect();
    let values = join_all(selects.iter().map(|select| client.api(select))).await;
    names
        .into_iter()
        .zip(values)
        .filter_map(|(name, value)| {
            let value = value.ok()?;
            let value = value.trim_end_matches('\n');
            (!refused(value)).then(|| (name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// The mod_db realm of `dialled`'s overrides.
fn override_realm(dialled: &str) -> String {
    format!("override-{dialled}")
}

/// The `api` command listing `dialled`'s overrides; `None` for a number that cannot be a key.
fn override_list(dialled: &str) -> Option<String> {
    db_key_safe(dialled).then(|| format!("db list/{}", override_realm(dialled)))
}

/// mod_db's answer is no value: a missing key, an error or its `!err!` for bad syntax.
fn refused(body: &str) -> bool {
    matches!(
        fallback::parse_reply(body),
        DbReply::Missing | DbReply::SyntaxError | DbReply::Err(_)
    )
}

/// Applies the destination's overrides, limited to fax and caller-ID variables.
fn apply_overrides(ctx: &mut Context, overrides: &[(String, String)]) {
    for (name, value) in overrides {
        match ctx.vars.apply_override(name, value) {
            Ok(()) => ctx
                .log
                .log(&format!("Override from mod_db: {name}={value}")),
            Err(e) => tracing::warn!("ignored mod_db override {name} of {}: {e}", ctx.dialled),
        }
    }
}
