//! `fsfaxd fallback ...`: the admin's view of the fallback list.
//!
//! Each action connects to FreeSWITCH's inbound Event Socket (`[freeswitch] socket`), runs its
//! `db` commands through [`FallbackDb`] and returns the text for stdout (one line per entry or
//! change) and for stderr (notes). The binary prints them and maps errors to exit status 1.

use std::time::Duration;

use chrono::Local;
use futures_util::StreamExt;
use futures_util::stream;

use super::{
    FallbackDb, FallbackError, ListedEntry, PIPELINE, StationKey, local_time, parse_value,
};
use crate::config::{Config, format_duration};
use crate::esl::{ClientConfig, InboundClient};
use crate::fax::fallback::{self as fallback_policy, FallbackEntry};

/// One admin action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Every entry.
    List,
    /// One station's entry.
    Show(String),
    /// Put stations on the list now.
    Add(Vec<String>),
    /// Take stations off the list.
    Delete(Vec<String>),
    /// Delete entries older than this; with `dry_run`, only say which.
    Purge {
        /// Minimum age of the entries deleted.
        older_than: Duration,
        /// Change nothing.
        dry_run: bool,
    },
    /// Whether every node shares one mod_db.
    CheckNodes,
}

/// What an action prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// For stdout: entries or changes, one per line.
    pub stdout: String,
    /// For stderr: notes for the admin (what could not be listed, empty list, ...).
    pub stderr: String,
    /// The check found a problem (exit status 1).
    pub failed: bool,
}

/// Errors of an admin action: FreeSWITCH unreachable, or a `db` command that failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// `[freeswitch] socket` is empty.
    #[error(
        "[freeswitch] socket is not set; `fsfaxd fallback` needs FreeSWITCH's event socket (e.g. 127.0.0.1:8021)"
    )]
    NoSocket,
    /// Connecting or authenticating failed (names the address).
    #[error(transparent)]
    Connect(#[from] crate::esl::ClientError),
    /// A `db` command failed (names the address and the command), or a bad number.
    #[error(transparent)]
    Db(#[from] FallbackError),
}

/// Runs `action` against the FreeSWITCH of `cfg`.
pub async fn run(cfg: &Config, action: &Action) -> Result<Report, AdminError> {
    let fs = &cfg.freeswitch;
    if fs.socket.trim().is_empty() {
        return Err(AdminError::NoSocket);
    }
    // Check every number before connecting: a typo changes nothing.
    match action {
        Action::Add(numbers) => {
            for n in numbers {
                StationKey::from_number(n)?;
            }
        }
        Action::Delete(numbers) => {
            for n in numbers {
                candidates(n)?;
            }
        }
        Action::Show(n) => {
            candidates(n)?;
        }
        Action::List | Action::Purge { .. } => {}
        Action::CheckNodes => return Ok(check_nodes(cfg).await.report()),
    }
    let esl = ClientConfig {
        connect_timeout: fs.connect_timeout,
        auth_timeout: fs.connect_timeout,
        command_timeout: fs.command_timeout,
        ..ClientConfig::default()
    };
    let (client, _events) = InboundClient::connect(&fs.socket, &fs.password, &esl).await?;
    let db = FallbackDb::new(&client, fs.command_timeout);
    let now = Local::now().timestamp();
    let expiry = fs.softmodem_fallback_expiry;
    let mut out = Report::default();
    match action {
        Action::List => list(&db, now, expiry, &mut out).await?,
        Action::Show(number) => show(&db, number, now, expiry, &mut out).await?,
        Action::Add(numbers) => {
            for n in numbers {
                let key = StationKey::from_number(n)?;
                db.insert(&key, now).await?;
                tracing::info!(station = %key, "T.38 fallback: {key} added to the fallback list by the admin");
                out.stdout
                    .push_str(&format!("added {key} (audio from the next call)\n"));
            }
        }
        Action::Delete(numbers) => {
            for n in numbers {
                delete(&db, n, &mut out).await?;
            }
        }
        Action::Purge {
            older_than,
            dry_run,
        } => purge(&db, now, *older_than, *dry_run, &mut out).await?,
        // Answered before connecting.
        Action::CheckNodes => {}
    }
    Ok(out)
}

/// Realm of the probe key [`check_nodes`] writes (never the list's own realms).
pub const PROBE_REALM: &str = "fsfax-probe";

/// What one node said about the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeShare {
    /// It read the value written through the first node.
    Shares,
    /// It answered without the value: its mod_db is not the first node's.
    Own,
    /// It could not be asked (connection, login or command failed).
    Unreachable(String),
}

/// The result of [`check_nodes`]: each node (first one first) with what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCheck {
    pub nodes: Vec<(String, NodeShare)>,
}

impl SharedCheck {
    /// Whether every node shares the first node's list.
    pub fn all_shared(&self) -> bool {
        self.nodes.iter().all(|(_, s)| *s == NodeShare::Shares)
    }

    /// One line per node, and the verdict, for an admin.
    pub fn report(&self) -> Report {
        let mut out = Report::default();
        let first = self.nodes.first().map_or("", |(n, _)| n.as_str());
        if self.nodes.len() < 2 {
            out.stdout.push_str(&format!(
                "{first}: the only FreeSWITCH node; nothing to share\n"
            ));
            out.failed = !self.all_shared();
        }
        for (i, (node, share)) in self.nodes.iter().enumerate() {
            let line = match (i, share) {
                (0, NodeShare::Shares) => "keeps what is written through it".to_owned(),
                (0, NodeShare::Own) => "does not keep what is written through it: mod_db is \
                     failing there (PostgreSQL down?); FreeSWITCH answers +OK to a lost write"
                    .to_owned(),
                (_, NodeShare::Shares) => format!("shares the list with {first}"),
                (_, NodeShare::Own) => format!(
                    "does NOT share the list with {first}: its mod_db is its own (a node \
                     started while PostgreSQL was down keeps a private store); restart \
                     FreeSWITCH on it"
                ),
                (_, NodeShare::Unreachable(e)) => {
                    format!("cannot be asked: {e}")
                }
            };
            if self.nodes.len() >= 2 || *share != NodeShare::Shares {
                out.stdout.push_str(&format!("{node}: {line}\n"));
            }
        }
        if self.nodes.len() >= 2 {
            if self.all_shared() {
                out.stdout.push_str("all nodes share one fallback list\n");
            } else {
                out.failed = true;
                out.stderr
                    .push_str("fsfaxd: the FreeSWITCH nodes do not share one fallback list\n");
            }
        }
        out
    }
}

/// Writes a probe key through the first node, reads it back through every node (the first
/// too: mod_db answers `+OK` to writes it lost), then deletes it. Nodes are asked one after
/// the other, each bounded by the command timeout.
pub async fn check_nodes(cfg: &Config) -> SharedCheck {
    let fs = &cfg.freeswitch;
    let esl = ClientConfig {
        connect_timeout: fs.connect_timeout,
        auth_timeout: fs.connect_timeout,
        command_timeout: fs.command_timeout,
        ..ClientConfig::default()
    };
    let nodes = fs.node_list();
    let probe = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
    let value = Local::now().timestamp().to_string();
    let mut clients = Vec::with_capacity(nodes.len());
    for node in &nodes {
        clients.push(InboundClient::connect(&node.socket, &node.password, &esl).await);
    }
    let mut out = Vec::with_capacity(nodes.len());
    let first = match clients.first() {
        Some(Ok((c, _))) => Some(c.clone()),
        _ => None,
    };
    let written = match &first {
        Some(c) => c
            .api(&format!("db insert/{PROBE_REALM}/{probe}/{value}"))
            .await
            .map_err(|e| e.to_string()),
        None => Err("the first node cannot be reached".into()),
    };
    for (node, client) in nodes.iter().zip(&clients) {
        let share = match (client, &written) {
            (Err(e), _) => NodeShare::Unreachable(e.to_string()),
            (Ok(_), Err(e)) => NodeShare::Unreachable(format!("nothing to compare: {e}")),
            (Ok((c, _)), Ok(_)) => match c.api(&format!("db select/{PROBE_REALM}/{probe}")).await {
                Ok(got) if got.trim() == value => NodeShare::Shares,
                Ok(_) => NodeShare::Own,
                Err(e) => NodeShare::Unreachable(e.to_string()),
            },
        };
        out.push((node.socket.clone(), share));
    }
    if let Some(c) = &first {
        let _ = c.api(&format!("db delete/{PROBE_REALM}/{probe}")).await;
    }
    for (c, _) in clients.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(2), c.exit()).await;
    }
    SharedCheck { nodes: out }
}

/// The keys a number may be stored under: normalised (as fsfax writes it), and the text as
/// given when that is a valid key too (GOfax.IP stored raw caller IDs and dialled numbers).
fn candidates(number: &str) -> Result<Vec<StationKey>, FallbackError> {
    let raw = StationKey::stored(number.trim()).ok();
    match (StationKey::from_number(number), raw) {
        (Ok(k), Some(r)) if r != k => Ok(vec![k, r]),
        (Ok(k), _) => Ok(vec![k]),
        (Err(_), Some(r)) => Ok(vec![r]),
        (Err(e), None) => Err(e),
    }
}

async fn list(
    db: &FallbackDb<'_, InboundClient>,
    now: i64,
    expiry: Option<Duration>,
    out: &mut Report,
) -> Result<(), FallbackError> {
    let listing = db.list().await?;
    for e in &listing.entries {
        out.stdout.push_str(&entry_line(e, now, expiry));
        out.stdout.push('\n');
    }
    for k in &listing.unsafe_keys {
        out.stdout.push_str(&format!(
            "{k:?} (key not usable in a db command; not read)\n"
        ));
    }
    if listing.realm_count == 0 {
        out.stderr.push_str("the fallback list is empty\n");
    }
    let expired = listing
        .entries
        .iter()
        .filter(|e| matches!(e.entry, FallbackEntry::Since(t) if crate::fax::fallback::is_expired(t, now, expiry)))
        .count();
    if expired > 0 {
        out.stderr.push_str(&format!(
            "{expired} entries are past softmodemfallbackexpiry and no longer apply; `fsfaxd fallback purge --older-than {}` removes them\n",
            expiry.map(format_duration).unwrap_or_default()
        ));
    }
    note_gaps(&listing, out);
    Ok(())
}

/// Says honestly what the listing could not show.
fn note_gaps(listing: &super::Listing, out: &mut Report) {
    if listing.unlisted > 0 {
        out.stderr.push_str(&format!(
            "{} of the {} entries in realm `fallback` are not in fsfax's index (written by GOfax.IP or by hand) and do not fit in mod_db's 4 KiB `list` reply, so they cannot be listed; `fsfaxd fallback show NUMBER` and `delete NUMBER` work on them, and a call with such a station adds it to the index\n",
            listing.unlisted, listing.realm_count
        ));
    }
    for b in &listing.cut_buckets {
        out.stderr.push_str(&format!(
            "index bucket `{b}` is larger than one mod_db `list` reply; some of its entries may be missing above\n"
        ));
    }
    if !listing.stale_index.is_empty() {
        out.stderr.push_str(&format!(
            "{} index entries point to stations no longer on the list; `fsfaxd fallback purge` removes them\n",
            listing.stale_index.len()
        ));
    }
}

async fn show(
    db: &FallbackDb<'_, InboundClient>,
    number: &str,
    now: i64,
    expiry: Option<Duration>,
    out: &mut Report,
) -> Result<(), FallbackError> {
    let keys = candidates(number)?;
    let mut found = false;
    for key in &keys {
        if let Some(value) = db.select(key).await? {
            found = true;
            let entry = ListedEntry {
                key: key.clone(),
                entry: parse_value(&value),
                value,
            };
            out.stdout.push_str(&entry_line(&entry, now, expiry));
            out.stdout.push('\n');
        }
    }
    if !found {
        out.stdout
            .push_str(&format!("{}: not on the fallback list\n", keys[0]));
    }
    Ok(())
}

async fn delete(
    db: &FallbackDb<'_, InboundClient>,
    number: &str,
    out: &mut Report,
) -> Result<(), FallbackError> {
    let keys = candidates(number)?;
    let mut found = false;
    for key in &keys {
        let listed = db.exists(key).await?;
        // Also clears a stale index line when the entry itself is gone.
        db.delete(key).await?;
        if listed {
            found = true;
            tracing::info!(station = %key, "T.38 fallback: {key} cleared from the fallback list by the admin");
            out.stdout.push_str(&format!("deleted {key}\n"));
        }
    }
    if !found {
        out.stdout
            .push_str(&format!("{}: not on the fallback list\n", keys[0]));
    }
    Ok(())
}

async fn purge(
    db: &FallbackDb<'_, InboundClient>,
    now: i64,
    older_than: Duration,
    dry_run: bool,
    out: &mut Report,
) -> Result<(), FallbackError> {
    let listing = db.list().await?;
    let old: Vec<&ListedEntry> = listing
        .entries
        .iter()
        .filter(|e| matches!(e.entry, FallbackEntry::Since(t) if crate::fax::fallback::is_expired(t, now, Some(older_than))))
        .collect();
    let verb = if dry_run { "would delete" } else { "deleted" };
    if !dry_run {
        let results: Vec<Result<(), FallbackError>> = stream::iter(old.iter())
            .map(|e| db.delete(&e.key))
            .buffered(PIPELINE)
            .collect()
            .await;
        results.into_iter().collect::<Result<(), _>>()?;
        for key in &listing.stale_index {
            db.delete(key).await?;
        }
    }
    for e in &old {
        out.stdout
            .push_str(&format!("{verb} {}\n", entry_line(e, now, None).trim_end()));
        if !dry_run {
            tracing::info!(station = %e.key, "T.38 fallback: {} purged from the fallback list by the admin", e.key);
        }
    }
    out.stderr.push_str(&format!(
        "{verb} {} of {} listed entries older than {}\n",
        old.len(),
        listing.entries.len(),
        format_duration(older_than)
    ));
    let undated = listing
        .entries
        .iter()
        .filter(|e| e.entry == FallbackEntry::Undated)
        .count();
    if undated > 0 {
        out.stderr.push_str(&format!(
            "{undated} entries have no date and were kept; delete them by number\n"
        ));
    }
    note_gaps(&listing, out);
    Ok(())
}

/// An age in the two largest units: `3d 4h`, `5h 12m`, `42s`; `in the future` for skewed clocks.
pub fn age_text(secs: i64) -> String {
    if secs < 0 {
        return "in the future".into();
    }
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// One line of `fsfaxd fallback list` / `show`: key, date added (local time), age, and
/// `expired` when older than `expiry`.
pub fn entry_line(entry: &ListedEntry, now: i64, expiry: Option<Duration>) -> String {
    match entry.entry {
        FallbackEntry::Since(t) => {
            let expired = if fallback_policy::is_expired(t, now, expiry) {
                "  expired"
            } else {
                ""
            };
            format!(
                "{:<20} {}  {:>8}{expired}",
                entry.key.as_str(),
                local_time(t),
                age_text(now - t)
            )
        }
        FallbackEntry::Undated => format!(
            "{:<20} (value {:?}: no date, never expires)",
            entry.key.as_str(),
            entry.value
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_map_to_normalised_and_raw_keys() {
        let k = |s: &str| StationKey::stored(s).unwrap();
        assert_eq!(candidates("0401234").unwrap(), vec![k("0401234")]);
        assert_eq!(
            candidates("040-1234").unwrap(),
            vec![k("0401234"), k("040-1234")]
        );
        assert_eq!(candidates("+49 (40) 1234").unwrap(), vec![k("+49401234")]);
        assert_eq!(candidates("anonymous").unwrap(), vec![k("anonymous")]);
        for bad in ["12/34", "", "a,b", "04 01/2"] {
            assert!(candidates(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ages_and_lines() {
        assert_eq!(age_text(42), "42s");
        assert_eq!(age_text(125), "2m 5s");
        assert_eq!(age_text(3 * 3600 + 60), "3h 1m");
        assert_eq!(age_text(3 * 86_400 + 4 * 3600), "3d 4h");
        assert_eq!(age_text(-5), "in the future");
        let e = ListedEntry {
            key: StationKey::stored("0401234").unwrap(),
            value: "1000".into(),
            entry: FallbackEntry::Since(1000),
        };
        let day = Some(Duration::from_secs(86_400));
        let line = entry_line(&e, 1000 + 86_400, day);
        assert!(line.starts_with("0401234 "), "{line}");
        assert!(line.contains(&local_time(1000)), "{line}");
        assert!(line.ends_with("1d 0h  expired"), "{line}");
        assert!(!entry_line(&e, 1000 + 60, day).contains("expired"));
        assert!(!entry_line(&e, i64::MAX / 2, None).contains("expired"));
    }
}
