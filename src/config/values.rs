//! Typed values of the configuration and their parsers and printers.
//!
//! Each parser returns `Err(text)` saying what is allowed; the caller adds file, line and key.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// gcfg booleans: `true|yes|on|1` and `false|no|off|0`, any case.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!(
            "`{s}` is not a boolean; use true/yes/on/1 or false/no/off/0"
        )),
    }
}

/// gcfg unsigned integers: decimal (a leading zero is still decimal) or `0x` hex; no sign.
pub fn parse_uint(s: &str, max: u64) -> Result<u64, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!(
            "`{s}` is negative; only whole numbers from 0 are allowed"
        ));
    }
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u64::from_str_radix(hex, 16).ok()
        }
        Some(_) => None,
        None if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => t.parse().ok(),
        None => None,
    };
    match parsed {
        Some(n) if n <= max => Ok(n),
        Some(_) => Err(format!("`{s}` is too large; the maximum is {max}")),
        None => Err(format!(
            "`{s}` is not a whole number; use decimal (`10`) or hex (`0xa`)"
        )),
    }
}

const UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// fsfax durations: `30` (seconds), `30s`, `500ms`, `5m`, `2h`, `30d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim();
    let bad = || {
        format!(
            "`{s}` is not a duration; use e.g. `30` (seconds), `30s`, `500ms`, `5m`, `2h`, `30d`"
        )
    };
    if number.is_empty() {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| bad())?;
    let per = if unit.is_empty() {
        1_000
    } else {
        UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, ms)| *ms)
            .ok_or_else(bad)?
    };
    n.checked_mul(per)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{s}` is too long"))
}

/// Prints a duration in the largest unit that divides it exactly (`300s` → `5m`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    for (name, per) in UNITS.iter().rev() {
        let per = u128::from(*per);
        if ms % per == 0 {
            return format!("{}{name}", ms / per);
        }
    }
    format!("{ms}ms")
}

/// An address or network a FreeSWITCH outbound-socket connection may come from (`allowedpeers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerNet {
    /// The network address (host bits cleared).
    pub addr: IpAddr,
    /// Prefix length: 32 or 128 for a single host.
    pub prefix_len: u8,
}

impl PeerNet {
    /// True if `ip` is inside this network. IPv4-mapped IPv6 peers (`::ffff:127.0.0.1`, as a
    /// dual-stack listener reports them) are compared as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = prefix_mask(32, self.prefix_len) as u32;
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = prefix_mask(128, self.prefix_len);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

fn prefix_mask(bits: u8, prefix_len: u8) -> u128 {
    if prefix_len == 0 {
        0
    } else {
        (u128::MAX << (128 - u32::from(prefix_len))) >> (128 - u32::from(bits))
    }
}

impl FromStr for PeerNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.trim(), Some(p.trim())),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
        };
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & prefix_mask(32, prefix_len) as u32).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & prefix_mask(128, prefix_len)).into()),
        };
        Ok(PeerNet { addr, prefix_len })
    }
}

impl fmt::Display for PeerNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix_len == full {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix_len)
        }
    }
}

/// Parses a comma-separated `allowedpeers` list; an empty list is refused (nobody could connect).
pub fn parse_peers(s: &str) -> Result<Vec<PeerNet>, String> {
    let peers = split_list(s)
        .map(PeerNet::from_str)
        .collect::<Result<Vec<_>, _>>()?;
    if peers.is_empty() {
        return Err("an empty list would refuse every connection; \
                    use `0.0.0.0/0, ::/0` to allow all"
            .into());
    }
    Ok(peers)
}

/// Splits a comma-separated list, trimming items and dropping empty ones.
pub fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|item| !item.is_empty())
}

/// A SIP header fsfaxd may take the recipient number from (`recipientheaders`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecipientHeader {
    /// `Diversion` (RFC 5806), GOfax.IP's only source.
    Diversion,
    /// `History-Info` (RFC 7044).
    HistoryInfo,
    /// `P-Called-Party-ID` (RFC 3455).
    PCalledPartyId,
    /// The user part of the `To` URI (what is used when `recipientfromdiversionheader` is off).
    To,
}

impl RecipientHeader {
    /// All headers, in the default order.
    pub const ALL: [RecipientHeader; 4] = [
        RecipientHeader::Diversion,
        RecipientHeader::HistoryInfo,
        RecipientHeader::PCalledPartyId,
        RecipientHeader::To,
    ];

    /// The configuration spelling (lower case header name).
    pub fn name(self) -> &'static str {
        match self {
            RecipientHeader::Diversion => "diversion",
            RecipientHeader::HistoryInfo => "history-info",
            RecipientHeader::PCalledPartyId => "p-called-party-id",
            RecipientHeader::To => "to",
        }
    }
}

impl fmt::Display for RecipientHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses the ordered `recipientheaders` list: known names, each at most once, at least one.
pub fn parse_recipient_headers(s: &str) -> Result<Vec<RecipientHeader>, String> {
    let mut out = Vec::new();
    for item in split_list(s) {
        let header = RecipientHeader::ALL
            .into_iter()
            .find(|h| h.name().eq_ignore_ascii_case(item))
            .ok_or_else(|| {
                format!(
                    "unknown header `{item}`; use diversion, history-info, p-called-party-id, to"
                )
            })?;
        if out.contains(&header) {
            return Err(format!("`{item}` is listed twice"));
        }
        out.push(header);
    }
    if out.is_empty() {
        return Err("list at least one of diversion, history-info, p-called-party-id, to".into());
    }
    Ok(out)
}

/// What fsfaxd does with a call when the incoming DynamicConfig program fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DynamicConfigFailure {
    /// Answer the call with the static configuration (HylaFAX's and GOfax.IP's behaviour).
    #[default]
    Accept,
    /// Reject the call with `rejectcause` (safer when DynamicConfig screens callers).
    Reject,
}

impl fmt::Display for DynamicConfigFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DynamicConfigFailure::Accept => "accept",
            DynamicConfigFailure::Reject => "reject",
        })
    }
}

/// Parses `accept` or `reject` (any case).
pub fn parse_dynamic_config_failure(s: &str) -> Result<DynamicConfigFailure, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "accept" => Ok(DynamicConfigFailure::Accept),
        "reject" => Ok(DynamicConfigFailure::Reject),
        _ => Err(format!("`{s}` is not allowed; use `accept` or `reject`")),
    }
}

/// Hangup-cause names FreeSWITCH 1.10 can report (`switch_channel.c` cause table), used to
/// catch typos in `failedresponse` and `failovercauses`, which are matched exactly.
pub const HANGUP_CAUSES: &[&str] = &[
    "NONE",
    "UNALLOCATED_NUMBER",
    "NO_ROUTE_TRANSIT_NET",
    "NO_ROUTE_DESTINATION",
    "CHANNEL_UNACCEPTABLE",
    "CALL_AWARDED_DELIVERED",
    "NORMAL_CLEARING",
    "USER_BUSY",
    "NO_USER_RESPONSE",
    "NO_ANSWER",
    "SUBSCRIBER_ABSENT",
    "CALL_REJECTED",
    "NUMBER_CHANGED",
    "REDIRECTION_TO_NEW_DESTINATION",
    "EXCHANGE_ROUTING_ERROR",
    "DESTINATION_OUT_OF_ORDER",
    "INVALID_NUMBER_FORMAT",
    "FACILITY_REJECTED",
    "RESPONSE_TO_STATUS_ENQUIRY",
    "NORMAL_UNSPECIFIED",
    "NORMAL_CIRCUIT_CONGESTION",
    "NETWORK_OUT_OF_ORDER",
    "NORMAL_TEMPORARY_FAILURE",
    "SWITCH_CONGESTION",
    "ACCESS_INFO_DISCARDED",
    "REQUESTED_CHAN_UNAVAIL",
    "PRE_EMPTED",
    "FACILITY_NOT_SUBSCRIBED",
    "OUTGOING_CALL_BARRED",
    "INCOMING_CALL_BARRED",
    "BEARERCAPABILITY_NOTAUTH",
    "BEARERCAPABILITY_NOTAVAIL",
    "SERVICE_UNAVAILABLE",
    "BEARERCAPABILITY_NOTIMPL",
    "CHAN_NOT_IMPLEMENTED",
    "FACILITY_NOT_IMPLEMENTED",
    "SERVICE_NOT_IMPLEMENTED",
    "INVALID_CALL_REFERENCE",
    "INCOMPATIBLE_DESTINATION",
    "INVALID_MSG_UNSPECIFIED",
    "MANDATORY_IE_MISSING",
    "MESSAGE_TYPE_NONEXIST",
    "WRONG_MESSAGE",
    "IE_NONEXIST",
    "INVALID_IE_CONTENTS",
    "WRONG_CALL_STATE",
    "RECOVERY_ON_TIMER_EXPIRE",
    "MANDATORY_IE_LENGTH_ERROR",
    "PROTOCOL_ERROR",
    "INTERWORKING",
    "SUCCESS",
    "ORIGINATOR_CANCEL",
    "CRASH",
    "SYSTEM_SHUTDOWN",
    "LOSE_RACE",
    "MANAGER_REQUEST",
    "BLIND_TRANSFER",
    "ATTENDED_TRANSFER",
    "ALLOTTED_TIMEOUT",
    "USER_CHALLENGE",
    "MEDIA_TIMEOUT",
    "PICKED_OFF",
    "USER_NOT_REGISTERED",
    "PROGRESS_TIMEOUT",
    "INVALID_GATEWAY",
    "GATEWAY_DOWN",
    "INVALID_URL",
    "INVALID_PROFILE",
    "NO_PICKUP",
    "SRTP_READ_ERROR",
    "BOWOUT",
    "BUSY_EVERYWHERE",
    "DECLINE",
    "DOES_NOT_EXIST_ANYWHERE",
    "NOT_ACCEPTABLE",
    "UNWANTED",
    "NO_IDENTITY",
    "BAD_IDENTITY_INFO",
    "UNSUPPORTED_CERTIFICATE",
    "INVALID_IDENTITY",
    "STALE_DATE",
    "REJECT_ALL",
];

/// The causes that move a send to the next gateway; defined once, in the outcome table.
pub use crate::fax::outcome::DEFAULT_FAILOVER_CAUSES;

/// A warning for a hangup-cause name FreeSWITCH never reports, or `None` if it is known.
pub fn check_hangup_cause(name: &str) -> Option<String> {
    if HANGUP_CAUSES.contains(&name) {
        return None;
    }
    let upper = name.to_ascii_uppercase();
    if HANGUP_CAUSES.contains(&upper.as_str()) {
        return Some(format!(
            "`{name}` never matches: hangup causes are compared exactly; write `{upper}`"
        ));
    }
    let mut message = format!("`{name}` is not a FreeSWITCH hangup cause, so it never matches");
    if let Some(near) = nearest(&upper, HANGUP_CAUSES.iter().copied()) {
        message.push_str(&format!("; did you mean `{near}`?"));
    }
    Some(message)
}

/// The candidate closest to `word`, if it is close enough to be a plausible typo.
pub fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .map(|c| (strsim::levenshtein(&word, &c.to_ascii_lowercase()), c))
        .filter(|(distance, c)| *distance <= (c.len().max(word.len()) / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// Writes a string value so the gcfg tokenizer reads it back unchanged: bare when that is
/// unambiguous, otherwise in double quotes with gcfg's escapes.
pub fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && !s.starts_with([' ', '\t'])
        && !s.ends_with([' ', '\t'])
        && !s.contains(['"', '\\', ';', '#', '\n', '\r', '\t']);
    if plain {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_in_any_case() {
        for t in ["true", "YES", "On", "1"] {
            assert_eq!(parse_bool(t), Ok(true), "{t}");
        }
        for f in ["false", "No", "OFF", "0"] {
            assert_eq!(parse_bool(f), Ok(false), "{f}");
        }
        assert!(parse_bool("maybe").is_err());
        assert!(parse_bool("").is_err());
    }

    #[test]
    fn integers_decimal_hex_and_leading_zero() {
        assert_eq!(parse_uint("010", 100), Ok(10));
        assert_eq!(parse_uint("0x1F", 100), Ok(31));
        assert_eq!(parse_uint("0X10", 100), Ok(16));
        let neg = parse_uint("-1", 100).unwrap_err();
        assert!(neg.contains("negative"), "{neg}");
        assert!(parse_uint("101", 100).is_err());
        assert!(parse_uint("0x", 100).is_err());
        assert!(parse_uint("1.5", 100).is_err());
        assert!(parse_uint("", 100).is_err());
    }

    #[test]
    fn durations_and_their_printing() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        for bad in ["", "s", "-5s", "5x", "1.5h", "99999999999999999999"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn peer_networks() {
        let lo: PeerNet = "127.0.0.1".parse().unwrap();
        assert!(lo.contains("127.0.0.1".parse().unwrap()));
        assert!(lo.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!lo.contains("127.0.0.2".parse().unwrap()));
        let net: PeerNet = "10.1.2.3/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains("10.200.0.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let v6: PeerNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        let all: PeerNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<PeerNet>().is_err());
        assert!("host.example".parse::<PeerNet>().is_err());
        assert!(parse_peers(" , ").is_err());
    }

    #[test]
    fn recipient_header_lists() {
        assert_eq!(
            parse_recipient_headers("To, Diversion"),
            Ok(vec![RecipientHeader::To, RecipientHeader::Diversion])
        );
        assert!(parse_recipient_headers("to, to").is_err());
        assert!(parse_recipient_headers("from").is_err());
        assert!(parse_recipient_headers("").is_err());
    }

    #[test]
    fn hangup_cause_checks() {
        assert_eq!(check_hangup_cause("CALL_REJECTED"), None);
        assert!(
            check_hangup_cause("call_rejected")
                .unwrap()
                .contains("CALL_REJECTED")
        );
        assert!(
            check_hangup_cause("CALL_REJECTD")
                .unwrap()
                .contains("did you mean `CALL_REJECTED`")
        );
        for c in DEFAULT_FAILOVER_CAUSES {
            assert!(HANGUP_CAUSES.contains(c), "{c}");
        }
        for answer in [
            "USER_BUSY",
            "UNALLOCATED_NUMBER",
            "CALL_REJECTED",
            "NO_ANSWER",
            "NO_USER_RESPONSE",
        ] {
            assert!(!DEFAULT_FAILOVER_CAUSES.contains(&answer), "{answer}");
        }
    }

    #[test]
    fn quoting_round_trips_through_the_tokenizer() {
        for s in [
            "plain",
            "ACME Fax Services",
            "",
            " lead",
            "a;b",
            "q\"x\\y",
            "tab\tz",
            "#",
        ] {
            let text = format!("k = {}\n", quote(s));
            let (items, errors) = super::super::syntax::tokenize(&text);
            assert!(errors.is_empty(), "{text}: {errors:?}");
            match &items[0] {
                super::super::syntax::Item::Entry { value, .. } => {
                    assert_eq!(value.as_deref(), Some(s), "{text}")
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
