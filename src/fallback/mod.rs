//! The T.38 fallback list in FreeSWITCH's mod_db: every `db` command fsfax sends for it.
//!
//! The policy (station keys, trigger, expiry) is [`crate::fax::fallback`]; this module turns it
//! into `db` API commands over the Event Socket and reads mod_db's replies. fsfaxsend, fsfaxd's
//! receptions and the `fsfaxd fallback` admin commands all go through here, so no other code
//! builds a `db .../fallback/...` string.
//!
//! # Store
//! Realm `fallback`, key = the station key, value = Unix seconds: GOfax.IP's format, so entries
//! either program wrote apply to both.
//!
//! # Index
//! mod_db's `list` reply is cut at about 4 KiB (some 300 keys), and the `db` API has no other way
//! to enumerate a realm. fsfax therefore keeps an index beside the list: realm
//! `fallback-index-NNN` (NNN = the key's last three digits; `fallback-index-other` for keys
//! without them) holds the same keys, so each bucket's `list` stays far below the limit. Every
//! insert and delete made by fsfax updates both realms. Entries written without the index
//! (GOfax.IP, a hand-made `db insert`) are found through `list/fallback` while the realm fits in
//! one reply, join the index the next time a call meets them, and are otherwise reported as a
//! count (`count/fallback` minus what could be listed).
//!
//! # Replies (capture `inbound-api-db`)
//! `+OK` for insert/delete, the bare value for select, `true`/`false` for exists, a decimal for
//! count, comma-separated keys for list; `-ERR no reply` for a missing key or an empty realm;
//! `!err!` (which does not start with `-ERR`) for bad syntax.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use chrono::{Local, TimeZone};
use futures_util::StreamExt;
use futures_util::stream;

use crate::esl::{ClientError, InboundClient};
pub use crate::fax::fallback::db_key_safe;
use crate::fax::fallback::{self as policy, FallbackEntry};
use crate::fax::{Direction, FaxResult, T38Status};

pub use crate::fax::fallback::FALLBACK_REALM;

pub mod admin;

/// Realm prefix of fsfax's index buckets (`fallback-index-042`).
pub const INDEX_REALM_PREFIX: &str = "fallback-index-";
/// Bucket of keys that do not end in three digits.
const OTHER_BUCKET: &str = "other";
/// A `list` reply this long may have been cut by mod_db (4,096-byte buffer, measured 4,094).
const LIST_CUT: usize = 4000;
/// Commands in flight at once while listing; FreeSWITCH answers them in order.
const PIPELINE: usize = 32;

/// Errors of the fallback list. Each names FreeSWITCH's address and the command, or the input.
#[derive(Debug, thiserror::Error)]
pub enum FallbackError {
    /// The number cannot be a fallback key.
    #[error("{input:?} is not a usable station number for the fallback list ({why})")]
    BadNumber {
        /// What was given.
        input: String,
        /// Why it was refused.
        why: &'static str,
    },
    /// No reply in time (an inbound connection is closed after this).
    #[error("no reply from FreeSWITCH at {peer} to `{command}` within {after:?}")]
    Timeout {
        /// FreeSWITCH's address.
        peer: String,
        /// The command.
        command: String,
        /// The timeout.
        after: Duration,
    },
    /// The Event Socket failed (closed, refused, ...).
    #[error("`{command}` failed on FreeSWITCH at {peer}: {reason}")]
    Esl {
        /// FreeSWITCH's address.
        peer: String,
        /// The command.
        command: String,
        /// The socket error.
        reason: String,
    },
    /// mod_db answered `!err!`: it did not understand the command.
    #[error("mod_db at {peer} rejected `{command}` as bad syntax (!err!)")]
    Syntax {
        /// FreeSWITCH's address.
        peer: String,
        /// The command.
        command: String,
    },
    /// A reply that does not fit the command (`-ERR ...`, not a number, ...).
    #[error("unexpected reply from FreeSWITCH at {peer} to `{command}`: {reply:?}")]
    Unexpected {
        /// FreeSWITCH's address.
        peer: String,
        /// The command.
        command: String,
        /// The reply body.
        reply: String,
    },
}

/// A key that is safe in a `db` command: only `[A-Za-z0-9+*#._@-]`, never `/`, `,`, whitespace
/// or control characters. Built from a normalised station number, or taken as stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StationKey(String);

impl StationKey {
    /// The key of an inbound call's caller ID; `None` for unusable caller IDs (see
    /// [`policy::normalize_station`]).
    pub fn inbound(caller_id: &str) -> Option<StationKey> {
        policy::station_key_inbound(caller_id).and_then(|k| StationKey::stored(&k).ok())
    }

    /// The key of an outbound call: the dialled number with `call_prefix` removed once.
    pub fn outbound(dialled: &str, call_prefix: &str) -> Option<StationKey> {
        policy::station_key_outbound(dialled, call_prefix).and_then(|k| StationKey::stored(&k).ok())
    }

    /// An admin's number (`040 1234`, `+49 (40) 1234`), normalised like a caller ID.
    pub fn from_number(number: &str) -> Result<StationKey, FallbackError> {
        StationKey::inbound(number).ok_or_else(|| FallbackError::BadNumber {
            input: number.to_owned(),
            why: "3 to 32 digits with an optional leading +; separators ` -.()` are removed",
        })
    }

    /// A key exactly as stored (e.g. one GOfax.IP wrote), if it can go into a `db` command.
    pub fn stored(key: &str) -> Result<StationKey, FallbackError> {
        if db_key_safe(key) {
            Ok(StationKey(key.to_owned()))
        } else {
            Err(FallbackError::BadNumber {
                input: key.to_owned(),
                why: "not a valid mod_db key",
            })
        }
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The index bucket realm of this key (`fallback-index-234` for `0401234`).
    pub fn index_realm(&self) -> String {
        let b = self.0.as_bytes();
        let tail = b.len().checked_sub(3).map(|i| &self.0[i..]);
        match tail {
            Some(t) if t.bytes().all(|c| c.is_ascii_digit()) => format!("{INDEX_REALM_PREFIX}{t}"),
            _ => format!("{INDEX_REALM_PREFIX}{OTHER_BUCKET}"),
        }
    }
}

impl fmt::Display for StationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Every index bucket realm, in order.
pub fn index_realms() -> impl Iterator<Item = String> {
    (0..1000)
        .map(|n| format!("{INDEX_REALM_PREFIX}{n:03}"))
        .chain(std::iter::once(format!(
            "{INDEX_REALM_PREFIX}{OTHER_BUCKET}"
        )))
}

/// The `db` API commands of the fallback list. Realms are constants or built from a checked
/// key, and keys are [`StationKey`]s, so none of these can produce a broken command.
pub mod cmd {
    use super::{FALLBACK_REALM, StationKey};

    /// `db select/fallback/<key>`.
    pub fn select(key: &StationKey) -> String {
        format!("db select/{FALLBACK_REALM}/{key}")
    }
    /// `db exists/fallback/<key>`.
    pub fn exists(key: &StationKey) -> String {
        format!("db exists/{FALLBACK_REALM}/{key}")
    }
    /// `db insert/fallback/<key>/<unix seconds>`.
    pub fn insert(key: &StationKey, unix: i64) -> String {
        format!("db insert/{FALLBACK_REALM}/{key}/{unix}")
    }
    /// `db delete/fallback/<key>`.
    pub fn delete(key: &StationKey) -> String {
        format!("db delete/{FALLBACK_REALM}/{key}")
    }
    /// `db list/fallback`.
    pub fn list() -> String {
        format!("db list/{FALLBACK_REALM}")
    }
    /// `db count/fallback`.
    pub fn count() -> String {
        format!("db count/{FALLBACK_REALM}")
    }
    /// `db insert/fallback-index-NNN/<key>/<unix seconds>`.
    pub fn index_insert(key: &StationKey, unix: i64) -> String {
        format!("db insert/{}/{key}/{unix}", key.index_realm())
    }
    /// `db delete/fallback-index-NNN/<key>`.
    pub fn index_delete(key: &StationKey) -> String {
        format!("db delete/{}/{key}", key.index_realm())
    }
    /// `db list/<realm>` for one index bucket (from [`super::index_realms`]).
    pub(super) fn list_realm(realm: &str) -> String {
        format!("db list/{realm}")
    }
    /// `db count/<realm>` for one index bucket.
    pub(super) fn count_realm(realm: &str) -> String {
        format!("db count/{realm}")
    }
}

/// What a mod_db reply means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbReply {
    /// `+OK`.
    Ok,
    /// `-ERR no reply`: a missing key or an empty realm.
    Missing,
    /// `!err!`: bad syntax.
    SyntaxError,
    /// `true` / `false` (exists).
    Bool(bool),
    /// Anything else not starting with `-ERR`: a value, a count or a key list.
    Text(String),
    /// Another `-ERR ...`.
    Err(String),
}

/// Reads a mod_db api body.
pub fn parse_reply(body: &str) -> DbReply {
    let t = body.trim_end_matches(['\n', '\r']);
    match t {
        "+OK" => DbReply::Ok,
        "!err!" => DbReply::SyntaxError,
        "true" => DbReply::Bool(true),
        "false" => DbReply::Bool(false),
        _ if t.trim() == "-ERR no reply" => DbReply::Missing,
        _ if t.starts_with("-ERR") => DbReply::Err(t.to_owned()),
        _ => DbReply::Text(t.to_owned()),
    }
}

/// A connection that can run `api` commands: fsfaxsend's inbound client, a reception's own
/// outbound socket.
pub trait DbApi: Sync {
    /// FreeSWITCH's address, for messages.
    fn db_peer(&self) -> String;
    /// Runs `api <command>` and returns the body, waiting at most `timeout`.
    fn db_api(
        &self,
        command: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<String, FallbackError>> + Send;
}

impl DbApi for InboundClient {
    fn db_peer(&self) -> String {
        self.peer().to_owned()
    }

    async fn db_api(&self, command: &str, timeout: Duration) -> Result<String, FallbackError> {
        self.api_with_timeout(command, timeout)
            .await
            .map_err(|e| match e {
                ClientError::Timeout { peer, after, .. } => FallbackError::Timeout {
                    peer,
                    command: command.to_owned(),
                    after,
                },
                other => FallbackError::Esl {
                    peer: self.peer().to_owned(),
                    command: command.to_owned(),
                    reason: other.to_string(),
                },
            })
    }
}

/// The fallback list over one connection; every command waits at most `timeout`.
pub struct FallbackDb<'a, A: DbApi> {
    api: &'a A,
    timeout: Duration,
}

impl<'a, A: DbApi> FallbackDb<'a, A> {
    /// The list over `api`, each command bounded by `timeout`.
    pub fn new(api: &'a A, timeout: Duration) -> Self {
        FallbackDb { api, timeout }
    }

    /// The stored value of `key`, `None` when it is not on the list.
    pub async fn select(&self, key: &StationKey) -> Result<Option<String>, FallbackError> {
        let command = cmd::select(key);
        match self.run(&command).await? {
            DbReply::Missing => Ok(None),
            DbReply::Text(v) => Ok(Some(v)),
            // A value that happens to read like a reply is still a value.
            DbReply::Ok => Ok(Some("+OK".into())),
            DbReply::Bool(b) => Ok(Some(b.to_string())),
            other => Err(self.unexpected(command, other)),
        }
    }

    /// True when `key` is on the list.
    pub async fn exists(&self, key: &StationKey) -> Result<bool, FallbackError> {
        let command = cmd::exists(key);
        match self.run(&command).await? {
            DbReply::Bool(b) => Ok(b),
            other => Err(self.unexpected(command, other)),
        }
    }

    /// Puts `key` on the list (and in the index) as of `unix` seconds.
    pub async fn insert(&self, key: &StationKey, unix: i64) -> Result<(), FallbackError> {
        self.expect_ok(cmd::insert(key, unix)).await?;
        self.expect_ok(cmd::index_insert(key, unix)).await
    }

    /// Adds `key` to the index only (an entry that exists without it).
    pub async fn index(&self, key: &StationKey, unix: i64) -> Result<(), FallbackError> {
        self.expect_ok(cmd::index_insert(key, unix)).await
    }

    /// Takes `key` off the list and out of the index (deleting a missing key is fine).
    pub async fn delete(&self, key: &StationKey) -> Result<(), FallbackError> {
        self.expect_ok(cmd::delete(key)).await?;
        self.expect_ok(cmd::index_delete(key)).await
    }

    /// `count/fallback`: every entry in the realm, indexed or not.
    pub async fn count(&self) -> Result<u64, FallbackError> {
        self.count_realm(cmd::count()).await
    }

    /// Every entry that can be found: `list/fallback` when the realm fits in one reply, else
    /// the index buckets plus what `list/fallback` shows. Values are read with `select`.
    pub async fn list(&self) -> Result<Listing, FallbackError> {
        let total = self.count().await?;
        let mut listing = Listing {
            realm_count: total,
            ..Listing::default()
        };
        if total == 0 {
            return Ok(listing);
        }
        let (direct, cut) = self.list_realm(cmd::list()).await?;
        let mut candidates: BTreeSet<String> = direct.into_iter().collect();
        let complete = !cut && candidates.len() as u64 == total;
        let mut indexed = BTreeSet::new();
        if !complete {
            let buckets: Vec<String> = index_realms().collect();
            let replies: Vec<_> = stream::iter(buckets.iter())
                .map(|realm| async move { (realm, self.list_realm(cmd::list_realm(realm)).await) })
                .buffered(PIPELINE)
                .collect()
                .await;
            for (realm, reply) in replies {
                let (keys, cut) = reply?;
                if cut {
                    let n = self.count_realm(cmd::count_realm(realm)).await?;
                    if n as usize > keys.len() {
                        listing.cut_buckets.push(realm.clone());
                    }
                }
                indexed.extend(keys);
            }
            candidates.extend(indexed.iter().cloned());
        }

        let mut safe = Vec::new();
        for key in candidates {
            match StationKey::stored(&key) {
                Ok(k) => safe.push(k),
                Err(_) => listing.unsafe_keys.push(key),
            }
        }
        let values: Vec<_> = stream::iter(safe)
            .map(|key| async move {
                let value = self.select(&key).await;
                (key, value)
            })
            .buffered(PIPELINE)
            .collect()
            .await;
        for (key, value) in values {
            match value? {
                Some(value) => listing.entries.push(ListedEntry {
                    entry: parse_value(&value),
                    key,
                    value,
                }),
                // In the index but gone from the list (deleted by hand or by GOfax.IP), or the
                // cut-off tail of a `list` reply.
                None if indexed.contains(key.as_str()) => listing.stale_index.push(key),
                None => {}
            }
        }
        let found = (listing.entries.len() + listing.unsafe_keys.len()) as u64;
        listing.unlisted = total.saturating_sub(found);
        Ok(listing)
    }

    /// Runs one command and reads its reply; `!err!` is an error here.
    async fn run(&self, command: &str) -> Result<DbReply, FallbackError> {
        let body = self.api.db_api(command, self.timeout).await?;
        match parse_reply(&body) {
            DbReply::SyntaxError => Err(FallbackError::Syntax {
                peer: self.api.db_peer(),
                command: command.to_owned(),
            }),
            reply => Ok(reply),
        }
    }

    async fn expect_ok(&self, command: String) -> Result<(), FallbackError> {
        match self.run(&command).await? {
            DbReply::Ok => Ok(()),
            other => Err(self.unexpected(command, other)),
        }
    }

    async fn count_realm(&self, command: String) -> Result<u64, FallbackError> {
        match self.run(&command).await? {
            DbReply::Text(t) => t
                .trim()
                .parse()
                .map_err(|_| self.unexpected(command, DbReply::Text(t))),
            DbReply::Missing => Ok(0),
            other => Err(self.unexpected(command, other)),
        }
    }

    /// The keys of a `list` reply and whether it may have been cut.
    async fn list_realm(&self, command: String) -> Result<(Vec<String>, bool), FallbackError> {
        match self.run(&command).await? {
            DbReply::Missing => Ok((Vec::new(), false)),
            DbReply::Text(t) => {
                let keys = t
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .collect();
                Ok((keys, t.len() >= LIST_CUT))
            }
            // A realm whose only key is `true` or `false` or `+OK`.
            DbReply::Bool(b) => Ok((vec![b.to_string()], false)),
            DbReply::Ok => Ok((vec!["+OK".into()], false)),
            other => Err(self.unexpected(command, other)),
        }
    }

    fn unexpected(&self, command: String, reply: DbReply) -> FallbackError {
        let reply = match reply {
            DbReply::Ok => "+OK".into(),
            DbReply::Missing => "-ERR no reply".into(),
            DbReply::SyntaxError => "!err!".into(),
            DbReply::Bool(b) => b.to_string(),
            DbReply::Text(t) | DbReply::Err(t) => t,
        };
        FallbackError::Unexpected {
            peer: self.api.db_peer(),
            command,
            reply,
        }
    }
}

/// What [`FallbackDb::list`] found.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The entries, sorted by key.
    pub entries: Vec<ListedEntry>,
    /// `count/fallback`.
    pub realm_count: u64,
    /// Entries counted in the realm that could not be listed: written without fsfax's index
    /// while the realm is larger than one `list` reply.
    pub unlisted: u64,
    /// Index keys whose entry is gone (cleaned up by `purge`).
    pub stale_index: Vec<StationKey>,
    /// Keys in the realm that cannot be used in a `db` command (shown, not read).
    pub unsafe_keys: Vec<String>,
    /// Index buckets larger than one `list` reply (some of their keys may be missing).
    pub cut_buckets: Vec<String>,
}

/// One entry of a [`Listing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedEntry {
    /// The key as stored.
    pub key: StationKey,
    /// The stored value.
    pub value: String,
    /// The value read as a date.
    pub entry: FallbackEntry,
}

/// Reads a stored value without the warning [`policy::parse_entry`] logs (listing shows it).
fn parse_value(value: &str) -> FallbackEntry {
    match value.trim().parse::<i64>() {
        Ok(t) if t >= 0 => FallbackEntry::Since(t),
        _ => FallbackEntry::Undated,
    }
}

/// What a call's lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// Not on the list: T.38 as configured.
    NotListed,
    /// On the list and current: use audio.
    Audio {
        /// The stored value.
        value: String,
    },
    /// On the list but older than the expiry: ignored and removed (or not, see `removed`).
    Expired {
        /// The stored value.
        value: String,
        /// Why it could not be removed, if it could not.
        removed: Result<(), FallbackError>,
    },
    /// FreeSWITCH did not answer properly: T.38 as configured.
    Unavailable(FallbackError),
}

impl Lookup {
    /// True when the call must use audio.
    pub fn audio(&self) -> bool {
        matches!(self, Lookup::Audio { .. })
    }

    /// True when the station was on the list (current or expired).
    pub fn listed(&self) -> bool {
        matches!(self, Lookup::Audio { .. } | Lookup::Expired { .. })
    }

    /// The session-log line for this lookup (`None` when there is nothing to say).
    pub fn describe(&self, key: &StationKey, direction: Direction) -> Option<String> {
        let verb = match direction {
            Direction::Send => "sending",
            Direction::Receive => "receiving",
        };
        match self {
            Lookup::NotListed => None,
            Lookup::Audio { value } => Some(format!(
                "T.38 fallback: {key} is on the fallback list (since {}); {verb} with audio (G.711), T.38 off",
                since_text(value)
            )),
            Lookup::Expired { value, removed } => Some(match removed {
                Ok(()) => format!(
                    "T.38 fallback: entry for {key} (since {}) expired; removed, {verb} with T.38 as configured",
                    since_text(value)
                ),
                Err(e) => format!(
                    "T.38 fallback: entry for {key} (since {}) expired; ignored, but not removed: {e}",
                    since_text(value)
                ),
            }),
            Lookup::Unavailable(e) => Some(format!(
                "T.38 fallback: lookup for {key} failed ({e}); {verb} with T.38 as configured"
            )),
        }
    }
}

/// Looks `key` up before a call; an expired entry is removed. Never fails: trouble is
/// [`Lookup::Unavailable`], which means "T.38 as configured".
pub async fn lookup<A: DbApi>(
    db: &FallbackDb<'_, A>,
    key: &StationKey,
    now: i64,
    expiry: Option<Duration>,
) -> Lookup {
    let value = match db.select(key).await {
        Ok(Some(v)) => v,
        Ok(None) => return Lookup::NotListed,
        Err(e) => return Lookup::Unavailable(e),
    };
    if policy::entry_active(&value, now, expiry) {
        return Lookup::Audio { value };
    }
    let removed = db.delete(key).await;
    Lookup::Expired { value, removed }
}

/// What a call changed on the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The station was put on the list.
    Added,
    /// The station was taken off after a successful T.38 call.
    Cleared,
    /// Nothing changed (an entry met by the call may have joined the index).
    Unchanged,
}

impl Change {
    /// The session-log line for this change (`None` for no change).
    pub fn describe(self, key: &StationKey) -> Option<String> {
        match self {
            Change::Added => Some(format!(
                "T.38 fallback: {key} added to the fallback list; the next calls with it use audio (G.711)"
            )),
            Change::Cleared => Some(format!(
                "T.38 fallback: {key} cleared from the fallback list after a successful T.38 fax"
            )),
            Change::Unchanged => None,
        }
    }
}

/// True when [`after_call`] may have something to write, so a caller can skip connecting.
pub fn after_call_needed(
    direction: Direction,
    result: &FaxResult,
    clear_on_success: bool,
    was_listed: bool,
) -> bool {
    let t38_success = result.success() && result.t38_status == Some(T38Status::Negotiated);
    policy::should_remember(direction, result) || (clear_on_success && t38_success) || was_listed
}

/// [`after_call`] for fsfaxsend and fsfaxd alike: updates the list through `client` with the
/// configured timeout and clear-on-success policy, logs the change or the failure to syslog,
/// and returns the line for the call's session log (`None` when nothing changed).
pub async fn record_after_call(
    client: &InboundClient,
    fs: &crate::config::FreeSwitchSection,
    key: &StationKey,
    direction: Direction,
    result: &FaxResult,
    was_listed: bool,
) -> Option<String> {
    let db = FallbackDb::new(client, fs.fallback_lookup_timeout);
    let now = Local::now().timestamp();
    let change = after_call(
        &db,
        key,
        direction,
        result,
        fs.softmodem_fallback_clear_on_success,
        was_listed,
        now,
    )
    .await;
    match change {
        Ok(change) => {
            let m = crate::ops::metrics::metrics();
            match change {
                Change::Added => {
                    m.fallback_added.inc();
                }
                Change::Cleared => {
                    m.fallback_cleared.inc();
                }
                Change::Unchanged => {}
            }
            let text = change.describe(key)?;
            tracing::info!(station = %key, "{text}");
            Some(text)
        }
        Err(e) => {
            let text = format!("cannot update the T.38 fallback list: {e}");
            tracing::warn!(station = %key, "{text}");
            Some(text)
        }
    }
}

/// After a call: remember the station when the call failed the T.38 way
/// ([`policy::should_remember`]); with `clear_on_success`, forget it after a successful T.38
/// call. `was_listed` (from the lookup) adds an entry met by the call to the index, so entries
/// GOfax.IP wrote become listable.
pub async fn after_call<A: DbApi>(
    db: &FallbackDb<'_, A>,
    key: &StationKey,
    direction: Direction,
    result: &FaxResult,
    clear_on_success: bool,
    was_listed: bool,
    now: i64,
) -> Result<Change, FallbackError> {
    if policy::should_remember(direction, result) {
        db.insert(key, now).await?;
        return Ok(Change::Added);
    }
    let t38_success = result.success() && result.t38_status == Some(T38Status::Negotiated);
    if clear_on_success && t38_success && db.exists(key).await? {
        db.delete(key).await?;
        return Ok(Change::Cleared);
    }
    if was_listed && db.exists(key).await? {
        db.index(key, now).await?;
    }
    Ok(Change::Unchanged)
}

/// `2026-01-05 14:03:11 (1795345788)` for a dated value, the value itself otherwise.
fn since_text(value: &str) -> String {
    match parse_value(value) {
        FallbackEntry::Since(t) => format!("{} = {t}", local_time(t)),
        FallbackEntry::Undated => format!("{value:?}, no date"),
    }
}

/// Unix seconds as local time, `YYYY-MM-DD HH:MM:SS`.
pub fn local_time(unix: i64) -> String {
    Local
        .timestamp_opt(unix, 0)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| format!("@{unix}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn keys_refuse_what_would_break_a_db_command() {
        for bad in ["12/34", "", "0401,234", "040 1234\n", "a b", "x\u{7}"] {
            assert!(StationKey::stored(bad).is_err(), "{bad:?}");
        }
        assert_eq!(StationKey::inbound("12/34"), None);
        assert_eq!(StationKey::inbound(""), None);
        assert_eq!(
            StationKey::inbound("+49 (40) 1234").map(|k| cmd::select(&k)),
            Some("db select/fallback/+49401234".to_string())
        );
        assert_eq!(
            StationKey::outbound("00401234", "0").map(|k| k.to_string()),
            Some("0401234".into())
        );
        let e = StationKey::from_number("12/34").unwrap_err().to_string();
        assert!(e.contains("12/34"), "{e}");
    }

    #[test]
    fn commands_and_index_buckets() {
        let k = StationKey::from_number("040 1234").unwrap();
        assert_eq!(cmd::insert(&k, 17), "db insert/fallback/0401234/17");
        assert_eq!(cmd::delete(&k), "db delete/fallback/0401234");
        assert_eq!(cmd::exists(&k), "db exists/fallback/0401234");
        assert_eq!(
            cmd::index_insert(&k, 17),
            "db insert/fallback-index-234/0401234/17"
        );
        assert_eq!(
            cmd::index_delete(&k),
            "db delete/fallback-index-234/0401234"
        );
        assert_eq!(cmd::count(), "db count/fallback");
        assert_eq!(
            StationKey::stored("anonymous").unwrap().index_realm(),
            "fallback-index-other"
        );
        let realms: Vec<String> = index_realms().collect();
        assert_eq!(realms.len(), 1001);
        assert!(realms.contains(&k.index_realm()));
        assert!(realms.contains(&"fallback-index-other".to_string()));
    }

    #[test]
    fn replies_as_captured() {
        assert_eq!(parse_reply("+OK"), DbReply::Ok);
        assert_eq!(parse_reply("-ERR no reply\n"), DbReply::Missing);
        assert_eq!(parse_reply("!err!"), DbReply::SyntaxError);
        assert_eq!(parse_reply("true"), DbReply::Bool(true));
        assert_eq!(parse_reply("false"), DbReply::Bool(false));
        assert_eq!(
            parse_reply("1795345788"),
            DbReply::Text("1795345788".into())
        );
        assert_eq!(
            parse_reply("-ERR db Command not found!\n"),
            DbReply::Err("-ERR db Command not found!".into())
        );
    }

    /// A mod_db in memory with the real `list` cut, for the listing logic.
    #[derive(Default)]
    struct MemDb {
        rows: Mutex<Vec<(String, String, String)>>,
        commands: Mutex<Vec<String>>,
    }

    impl DbApi for MemDb {
        fn db_peer(&self) -> String {
            "mem".into()
        }
        async fn db_api(&self, command: &str, _t: Duration) -> Result<String, FallbackError> {
            self.commands.lock().unwrap().push(command.to_owned());
            let arg = command.strip_prefix("db ").unwrap();
            let f: Vec<&str> = arg.splitn(4, '/').collect();
            let mut rows = self.rows.lock().unwrap();
            let out = match f[0] {
                "insert" => {
                    rows.retain(|r| !(r.0 == f[1] && r.1 == f[2]));
                    rows.push((f[1].into(), f[2].into(), f[3].into()));
                    "+OK".to_string()
                }
                "delete" => {
                    rows.retain(|r| !(r.0 == f[1] && r.1 == f[2]));
                    "+OK".into()
                }
                "select" => rows
                    .iter()
                    .find(|r| r.0 == f[1] && r.1 == f[2])
                    .map(|r| r.2.clone())
                    .unwrap_or_default(),
                "exists" => rows.iter().any(|r| r.0 == f[1] && r.1 == f[2]).to_string(),
                "count" => rows.iter().filter(|r| r.0 == f[1]).count().to_string(),
                "list" => {
                    let mut s: String = rows
                        .iter()
                        .filter(|r| r.0 == f[1])
                        .map(|r| format!("{},", r.1))
                        .collect();
                    s.truncate(4095);
                    s.pop();
                    s
                }
                _ => "!err!".into(),
            };
            Ok(if out.is_empty() {
                "-ERR no reply\n".into()
            } else {
                out
            })
        }
    }

    #[tokio::test]
    async fn listing_goes_past_the_list_cut_and_counts_what_it_cannot_see() {
        let mem = MemDb::default();
        let db = FallbackDb::new(&mem, Duration::from_secs(1));
        // GOfax.IP's entries, without index: 400 ten-digit keys are more than one reply.
        for i in 0..400 {
            mem.rows.lock().unwrap().push((
                "fallback".into(),
                format!("0401{i:06}"),
                "1000".into(),
            ));
        }
        for i in 0..50 {
            db.insert(&StationKey::stored(&format!("0409{i:06}")).unwrap(), 2000)
                .await
                .unwrap();
        }
        // A stale index key.
        db.index(&StationKey::stored("0407777").unwrap(), 1)
            .await
            .unwrap();
        let l = db.list().await.unwrap();
        assert_eq!(l.realm_count, 450);
        let indexed = l
            .entries
            .iter()
            .filter(|e| e.key.as_str().starts_with("0409"))
            .count();
        assert_eq!(indexed, 50);
        let seen = l.entries.len() as u64;
        assert!(seen < 450 && seen > 300, "{seen}");
        assert_eq!(l.unlisted, 450 - seen);
        assert_eq!(l.stale_index, vec![StationKey::stored("0407777").unwrap()]);

        // A small realm is listed in one reply, without touching the index.
        let small = MemDb::default();
        let sdb = FallbackDb::new(&small, Duration::from_secs(1));
        sdb.insert(&StationKey::stored("0401234").unwrap(), 5)
            .await
            .unwrap();
        small.commands.lock().unwrap().clear();
        let l = sdb.list().await.unwrap();
        assert_eq!(l.entries.len(), 1);
        assert_eq!(l.unlisted, 0);
        let cmds = small.commands.lock().unwrap().clone();
        assert!(
            cmds.iter().all(|c| !c.contains("fallback-index")),
            "{cmds:?}"
        );
    }

    #[tokio::test]
    async fn lookup_expires_and_after_call_indexes_old_entries() {
        let mem = MemDb::default();
        let db = FallbackDb::new(&mem, Duration::from_secs(1));
        let k = StationKey::stored("0401234").unwrap();
        assert!(matches!(lookup(&db, &k, 10, None).await, Lookup::NotListed));
        mem.rows
            .lock()
            .unwrap()
            .push(("fallback".into(), "0401234".into(), "100".into()));
        let day = Some(Duration::from_secs(86_400));
        let l = lookup(&db, &k, 200, day).await;
        assert!(l.audio() && l.listed());
        // Met by a call: joins the index.
        let r = FaxResult::new(Direction::Send);
        let change = after_call(&db, &k, Direction::Send, &r, false, true, 200)
            .await
            .unwrap();
        assert_eq!(change, Change::Unchanged);
        assert!(
            mem.rows
                .lock()
                .unwrap()
                .iter()
                .any(|r| r.0 == "fallback-index-234")
        );
        let l = lookup(&db, &k, 100 + 86_400, day).await;
        assert!(
            matches!(
                l,
                Lookup::Expired {
                    removed: Ok(()),
                    ..
                }
            ),
            "{l:?}"
        );
        assert!(mem.rows.lock().unwrap().is_empty());
    }
}
