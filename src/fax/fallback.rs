//! T.38 → audio ("softmodem") fallback policy.
//!
//! When a T.38 call to or from a station fails in a way that smells of T.38 trouble, the
//! station is remembered in mod_db (`db insert/fallback/<key>/<unix seconds>`, GOfax.IP's
//! format), and later calls with that station run with `fax_enable_t38=false` and
//! `fax_enable_t38_request=false`. This module decides the key, the trigger and the expiry;
//! the ESL round trips are the caller's.
//!
//! # Station keys ([`normalize_station`])
//! GOfax.IP keyed inbound calls by the raw caller ID and outbound calls by the dialled number
//! *including* the call prefix, so one station got two unrelated entries (weakness §6.6). Here
//! both directions use the number **as the remote is reachable without our own prefix**:
//! - inbound: the caller ID, with an empty prefix ([`station_key_inbound`]);
//! - outbound: the dialled number (`callprefix` + `external`) with the configured call prefix
//!   removed once from its front ([`station_key_outbound`]).
//!
//! With `callprefix = 0` (a PBX's outside line), the caller ID `040 1234` and the dialled
//! `0 0401234` both give `0401234`. Separators ` -.()` are removed; what remains must be an
//! optional leading `+` and 3 to 32 digits, not all zeros. `anonymous`, `unknown`, empty,
//! too short, `*`/`#` codes, and anything with `/`, `,`, other whitespace or control
//! characters give `None`: no fallback entry at all, rather than one shared by every withheld
//! caller. Numbers in different formats (`+49401234` vs `0401234`) are not unified: that would
//! need the country's numbering plan.
//!
//! # Trigger ([`should_remember`])
//! Only failed calls whose final result says `fax-t38-status: negotiated`: falling back to
//! audio cannot help a call that was not using T.38.
//!
//! | condition | send | receive | why |
//! |---|---|---|---|
//! | success | never | never | nothing to fix |
//! | no final result, or T.38 not negotiated | never | never | not a T.38 problem |
//! | code 2 T0_EXPIRED, 3 T1_EXPIRED | never | never | no fax at all (voice line, silence) |
//! | code 49 CALLDROPPED with no negotiation | never | never | hung up before the fax started |
//! | bad rows on any page (sum > 0) | yes | yes | image damaged in transit |
//! | more than one negotiation event | - | yes | the receiver retrained |
//! | pages transferred, no bad rows, no retrain | never | never | the link worked: a peer that vanished or hung up afterwards (receiver code 48 or 49) is not T.38 trouble |
//! | 6 CANNOT_TRAIN, 13 UNEXPECTED, 48 RETRYDCN (before the first page, as every row below) | yes | yes | link-level trouble |
//! | 14 TX_BADDCS, 15 TX_BADPG, 16 TX_ECMPHD, 18 TX_INVALRSP, 20 TX_PHBDEAD, 21 TX_PHDDEAD, 22 TX_T5EXP | yes | - | the receiver did not follow over T.38 |
//! | 23 RX_ECMPHD, 25 RX_INVALCMD, 26 RX_NOCARRIER, 27 RX_NOEOL, 28 RX_NOFAX, 30-34 RX_T2EXP*, 36 RX_DCNDATA, 37 RX_DCNFAX, 38 RX_DCNPHD, 40 RX_DCNNORTN | - | yes | image data or phase D lost over T.38 |
//! | anything else (incl. 49 after negotiation without bad rows) | no | no | an ordinary retry is enough |
//!
//! # Expiry ([`is_expired`], [`parse_entry`])
//! GOfax.IP stores decimal Unix seconds and never expires entries; fsfax's default expiry is a
//! week (`config::DEFAULT_FALLBACK_EXPIRY`). An entry older than the expiry no longer applies; an unreadable value counts as present and never
//! expires (logged), so a hand-made `db insert/fallback/<key>/yes` still works.

use super::result::{Direction, FaxResult, T38Status};
use std::time::Duration;
use tracing::warn;

/// The mod_db realm of the fallback list (GOfax.IP's).
pub const FALLBACK_REALM: &str = "fallback";

const MIN_DIGITS: usize = 3;
const MAX_DIGITS: usize = 32;

/// Codes that trigger the fallback for a sender (see the module table).
const SEND_TRIGGERS: &[u32] = &[6, 13, 14, 15, 16, 18, 20, 21, 22, 48];
/// Codes that trigger the fallback for a receiver (see the module table).
const RECEIVE_TRIGGERS: &[u32] = &[
    6, 13, 23, 25, 26, 27, 28, 30, 31, 32, 33, 34, 36, 37, 38, 40, 48,
];

/// The fallback key of a station, or `None` when `number` is not a usable station number.
/// `call_prefix` is removed once from the front (pass `""` for caller IDs). See the module docs.
pub fn normalize_station(number: &str, call_prefix: &str) -> Option<String> {
    let number = strip_separators(number)?;
    let prefix = strip_separators(call_prefix).unwrap_or_default();
    let key = match number.strip_prefix(prefix.as_str()) {
        Some(rest) if !prefix.is_empty() => rest.to_owned(),
        _ => number,
    };
    let digits = key.strip_prefix('+').unwrap_or(&key);
    let plausible = (MIN_DIGITS..=MAX_DIGITS).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && digits.chars().any(|c| c != '0');
    (plausible && db_key_safe(&key)).then_some(key)
}

/// The key for an inbound call: the caller ID (`Channel-Caller-ID-Number`).
pub fn station_key_inbound(caller_id: &str) -> Option<String> {
    normalize_station(caller_id, "")
}

/// The key for an outbound call: the number as dialled, `call_prefix` included.
pub fn station_key_outbound(dialled: &str, call_prefix: &str) -> Option<String> {
    normalize_station(dialled, call_prefix)
}

/// Removes ` -.()`; `None` if anything else outside `[+0-9]` is left.
fn strip_separators(s: &str) -> Option<String> {
    let out: String = s
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let ok = out
        .char_indices()
        .all(|(i, c)| c.is_ascii_digit() || (c == '+' && i == 0));
    ok.then_some(out)
}

/// True when this failed T.38 call should put the station on the fallback list.
pub fn should_remember(direction: Direction, result: &FaxResult) -> bool {
    let Some(fin) = &result.final_result else {
        return false;
    };
    if fin.success {
        return false;
    }
    if result.t38_status != Some(T38Status::Negotiated) {
        return false;
    }
    let Some(code) = fin.code else {
        return false;
    };
    let no_fax_at_all = matches!(code, 0 | 2 | 3) || (code == 49 && result.negotiation_count == 0);
    if no_fax_at_all {
        return false;
    }
    if result.bad_rows_total() > 0 {
        return true;
    }
    if direction == Direction::Receive && result.negotiation_count > 1 {
        return true;
    }
    // Without damaged rows or a retrain, only a failure before the first page is evidence
    // of T.38 trouble: once pages flowed, the link worked, and a call that then ends (the
    // peer vanished, hung up, the line dropped) says nothing against T.38.
    if result.transferred_pages > 0 {
        return false;
    }
    match direction {
        Direction::Send => SEND_TRIGGERS.contains(&code),
        Direction::Receive => result.negotiation_count > 1 || RECEIVE_TRIGGERS.contains(&code),
    }
}

/// A stored fallback value, as read back with `db select/fallback/<key>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackEntry {
    /// Written at this Unix time (seconds).
    Since(i64),
    /// Present but not a date (hand-made entry): applies, never expires.
    Undated,
}

/// Parses a stored value: decimal Unix seconds, surrounding whitespace tolerated. Anything
/// else (negative, text) is logged and treated as [`FallbackEntry::Undated`].
pub fn parse_entry(value: &str) -> FallbackEntry {
    match value.trim().parse::<i64>() {
        Ok(t) if t >= 0 => FallbackEntry::Since(t),
        _ => {
            warn!(
                value,
                "fallback entry is not a Unix time; treating it as present without expiry"
            );
            FallbackEntry::Undated
        }
    }
}

/// True when an entry written at `entry_unix` is older than `expiry` at `now` (seconds).
/// `None` never expires; entries from the future (clock skew) are not expired.
pub fn is_expired(entry_unix: i64, now: i64, expiry: Option<Duration>) -> bool {
    let Some(expiry) = expiry else {
        return false;
    };
    let age = now.saturating_sub(entry_unix);
    age >= 0 && u64::try_from(age).is_ok_and(|a| a >= expiry.as_secs())
}

/// True when a stored value still forces audio at `now`: [`parse_entry`] + [`is_expired`].
pub fn entry_active(value: &str, now: i64, expiry: Option<Duration>) -> bool {
    match parse_entry(value) {
        FallbackEntry::Since(t) => !is_expired(t, now, expiry),
        FallbackEntry::Undated => true,
    }
}

/// True when `s` can be one `/`-separated field of a mod_db API command (`db insert/<realm>/
/// <key>/<value>`): non-empty, at most 255 bytes, only `[A-Za-z0-9+*#._@-]`. That excludes
/// `/` and `,` (mod_db separators), whitespace and control characters (ESL line and argument
/// splitting), quotes and `\` (removed by FreeSWITCH's argument cleanup) and `^` (custom
/// separator syntax).
pub fn db_key_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '+' | '*' | '#' | '.' | '_' | '@' | '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fax::capture::load;

    #[test]
    fn station_keys_agree_across_directions() {
        assert_eq!(station_key_inbound("040 1234").as_deref(), Some("0401234"));
        assert_eq!(
            station_key_outbound("0 0401234", "0").as_deref(),
            Some("0401234")
        );
        assert_eq!(
            station_key_outbound("00401234", "0").as_deref(),
            Some("0401234")
        );
        // Prefix not present: the number stays as dialled.
        assert_eq!(
            station_key_outbound("0401234", "9").as_deref(),
            Some("0401234")
        );
        assert_eq!(
            normalize_station("+49 (40) 123-4", "").as_deref(),
            Some("+49401234")
        );
        assert_eq!(
            normalize_station("+49401234", "").as_deref(),
            Some("+49401234")
        );
    }

    #[test]
    fn unusable_station_numbers() {
        for bad in [
            "",
            "anonymous",
            "Anonymous",
            "unknown",
            "12",
            "0000000000",
            "+000",
            "04/01234",
            "0401,234",
            "0401\t234",
            "0401\n234",
            "*31#0401234",
            "040+1234",
            "+",
            &"1".repeat(33),
        ] {
            assert_eq!(normalize_station(bad, ""), None, "{bad:?}");
        }
        // The prefix is removed before the length check.
        assert_eq!(station_key_outbound("012", "0"), None);
        // A bad prefix is ignored rather than used.
        assert_eq!(
            station_key_outbound("0401234", "0/").as_deref(),
            Some("0401234")
        );
    }

    fn failed_t38(direction: Direction, code: u32, negotiations: u32) -> FaxResult {
        let mut r = FaxResult::new(direction);
        r.final_result = Some(crate::fax::FinalResult::with_code(code));
        r.negotiation_count = negotiations;
        r.t38_status = Some(T38Status::Negotiated);
        r
    }

    #[test]
    fn trigger_table() {
        assert!(should_remember(
            Direction::Send,
            &failed_t38(Direction::Send, 6, 1)
        ));
        assert!(should_remember(
            Direction::Send,
            &failed_t38(Direction::Send, 21, 1)
        ));
        assert!(!should_remember(
            Direction::Send,
            &failed_t38(Direction::Send, 28, 1)
        ));
        assert!(should_remember(
            Direction::Receive,
            &failed_t38(Direction::Receive, 28, 1)
        ));
        assert!(!should_remember(
            Direction::Receive,
            &failed_t38(Direction::Receive, 21, 1)
        ));
        // Retrain on the receiver, with an otherwise ordinary code.
        assert!(should_remember(
            Direction::Receive,
            &failed_t38(Direction::Receive, 49, 2)
        ));
        assert!(!should_remember(
            Direction::Send,
            &failed_t38(Direction::Send, 49, 2)
        ));
        // Never: no fax at all, hangup before negotiation, not T.38, success, no result.
        for code in [2, 3] {
            assert!(!should_remember(
                Direction::Receive,
                &failed_t38(Direction::Receive, code, 2)
            ));
        }
        let mut r = failed_t38(Direction::Send, 49, 0);
        r.pages.push(crate::fax::PageResult {
            bad_rows: 3,
            ..Default::default()
        });
        assert!(
            !should_remember(Direction::Send, &r),
            "49 before negotiation"
        );
        r.negotiation_count = 1;
        assert!(
            should_remember(Direction::Send, &r),
            "bad rows after negotiation"
        );
        r.t38_status = Some(T38Status::Refused);
        assert!(!should_remember(Direction::Send, &r));
        let mut ok = failed_t38(Direction::Send, 0, 1);
        ok.final_result.as_mut().unwrap().success = true;
        assert!(!should_remember(Direction::Send, &ok));
        let mut pending = failed_t38(Direction::Send, 6, 1);
        pending.final_result = None;
        assert!(!should_remember(Direction::Send, &pending));
    }

    /// Issue 12, item 6: a sending switch killed mid-fax after pages flowed fine left the
    /// receiver with code 48 and one negotiation: not T.38 trouble. The same code before the
    /// first page still is.
    #[test]
    fn a_peer_that_vanished_after_clean_pages_is_not_t38_trouble() {
        let mut r = failed_t38(Direction::Receive, 48, 1);
        r.transferred_pages = 3;
        assert!(!should_remember(Direction::Receive, &r));
        let mut s = failed_t38(Direction::Send, 48, 1);
        s.transferred_pages = 2;
        assert!(!should_remember(Direction::Send, &s));
        assert!(should_remember(
            Direction::Receive,
            &failed_t38(Direction::Receive, 48, 1)
        ));
        // Evidence still counts after pages: a retrain, bad rows.
        r.negotiation_count = 2;
        assert!(should_remember(Direction::Receive, &r));
        s.pages.push(crate::fax::PageResult {
            bad_rows: 1,
            ..Default::default()
        });
        assert!(should_remember(Direction::Send, &s));
    }

    #[test]
    fn captures_do_not_trigger() {
        for (name, dir) in [
            ("inbound-txfax-t38-ok", Direction::Send),
            ("inbound-txfax-t38-remote-hangup-midfax", Direction::Send),
            (
                "outbound-rxfax-sender-hangup-after-answer",
                Direction::Receive,
            ),
            ("outbound-rxfax-no-fax-sender", Direction::Receive),
            ("outbound-rxfax-t38-uuid-kill-midfax", Direction::Receive),
        ] {
            let cap = load(name);
            let mut r = FaxResult::for_channel(dir, cap.call_uuid().unwrap());
            for ev in &cap.events {
                r.apply(ev);
            }
            assert!(r.final_result.is_some(), "{name} has a final result");
            assert!(!should_remember(dir, &r), "{name}");
        }
    }

    #[test]
    fn expiry() {
        let day = Some(Duration::from_secs(86_400));
        assert!(!is_expired(1_000, 1_000 + 86_399, day));
        assert!(is_expired(1_000, 1_000 + 86_400, day));
        assert!(!is_expired(1_000, i64::MAX, None));
        assert!(!is_expired(2_000, 1_000, day), "future entry");
        assert!(!is_expired(i64::MIN, i64::MAX, Some(Duration::MAX)));
        assert_eq!(
            parse_entry(" 1795345788\n"),
            FallbackEntry::Since(1_795_345_788)
        );
        assert_eq!(parse_entry("yes"), FallbackEntry::Undated);
        assert_eq!(parse_entry("-5"), FallbackEntry::Undated);
        assert!(entry_active("yes", 0, day));
        assert!(entry_active("1000", 1_500, day));
        assert!(!entry_active("1000", 1_000 + 86_400, day));
        assert!(entry_active("1000", i64::MAX, None));
    }

    #[test]
    fn db_tokens() {
        for ok in [
            "fallback",
            "override-0401234",
            "+49401234",
            "fax_enable_t38",
            "1795345788",
        ] {
            assert!(db_key_safe(ok), "{ok}");
        }
        for bad in [
            "",
            "a/b",
            "a,b",
            "a b",
            "a\tb",
            "a\n",
            "'a'",
            "a\\b",
            "^^:a",
            &"1".repeat(256),
        ] {
            assert!(!db_key_safe(bad), "{bad:?}");
        }
    }
}
