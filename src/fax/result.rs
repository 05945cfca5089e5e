//! [`FaxResult`]: what one call did, accumulated from its FreeSWITCH events.
//!
//! Events recognised (by `Event-Name`, then `Event-Subclass` for `CUSTOM`):
//!
//! | event | effect |
//! |---|---|
//! | `CHANNEL_ANSWER` | answered time (first one wins) |
//! | `CHANNEL_CALLSTATE` `Channel-Call-State: ACTIVE` | answered time (first one wins) |
//! | `CHANNEL_CALLSTATE` `HANGUP`, `CHANNEL_HANGUP`, `CHANNEL_HANGUP_COMPLETE` | [`Hangup`]: time, `Hangup-Cause` |
//! | `spandsp::{tx,rx}faxnegociateresult` (sic) | negotiation count +1, rate, ECM, station ids, T.38 status |
//! | `spandsp::{tx,rx}faxpageresult` | one [`PageResult`], transferred pages |
//! | `spandsp::{tx,rx}faxresult` | [`FinalResult`]: success, code, text; pages, rate, ECM, ids, T.38 status |
//!
//! Only the subclasses of the result's own [`Direction`] count (`tx*` for a send, `rx*` for a
//! receive). Times come from the event's own `Event-Date-Timestamp` (µs since the epoch), not
//! from when we processed it, so a slow reader does not distort durations.
//!
//! Order matters: FreeSWITCH sends `CHANNEL_HANGUP` **before** `spandsp::txfaxresult` (captures
//! `inbound-txfax-*`), so a call is only [`FaxResult::is_complete`] once both were seen. When the
//! final result never comes (e.g. `txfax` with a missing file sends no spandsp event at all) the
//! caller stops after a grace period following the hangup.

use super::headers::EventHeaders;
use tracing::debug;

/// Which side of the fax this call is: we send (`txfax`) or we receive (`rxfax`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We transmit (fsfaxsend, `txfax`): `spandsp::tx*` events.
    Send,
    /// We receive (fsfaxd, `rxfax`): `spandsp::rx*` events.
    Receive,
}

impl Direction {
    /// The `tx`/`rx` prefix of this direction's spandsp subclasses.
    fn prefix(self) -> &'static str {
        match self {
            Direction::Send => "tx",
            Direction::Receive => "rx",
        }
    }
}

/// mod_spandsp's `fax-t38-status` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum T38Status {
    /// T.38 was used for the fax.
    Negotiated,
    /// We asked for T.38 (re-INVITE) and have no answer yet.
    Requested,
    /// T.38 was asked for and refused; the fax ran over audio.
    Refused,
    /// T.38 was not enabled; the fax ran over audio.
    Off,
    /// Any other value, kept verbatim.
    Other(String),
}

impl T38Status {
    /// Parses the header value (case-insensitive, trimmed).
    pub fn parse(value: &str) -> Self {
        let v = value.trim();
        if v.eq_ignore_ascii_case("negotiated") {
            T38Status::Negotiated
        } else if v.eq_ignore_ascii_case("requested") {
            T38Status::Requested
        } else if v.eq_ignore_ascii_case("refused") {
            T38Status::Refused
        } else if v.eq_ignore_ascii_case("off") {
            T38Status::Off
        } else {
            T38Status::Other(v.to_owned())
        }
    }

    /// The status as spandsp writes it (`negotiated`, `off`, ...), for logs an admin reads.
    pub fn as_str(&self) -> &str {
        match self {
            T38Status::Negotiated => "negotiated",
            T38Status::Requested => "requested",
            T38Status::Refused => "refused",
            T38Status::Off => "off",
            T38Status::Other(v) => v,
        }
    }

    /// `status` as words for a log line: `unknown` when FreeSWITCH reported none.
    pub fn describe(status: Option<&T38Status>) -> &str {
        status.map_or("unknown", T38Status::as_str)
    }
}

impl std::fmt::Display for T38Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Statistics of one page, from a `spandsp::*faxpageresult` event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageResult {
    /// Page number: `fax-document-transferred-pages` after this event (1-based).
    pub page: u32,
    /// `fax-bad-rows`.
    pub bad_rows: u32,
    /// `fax-longest-bad-row-run`.
    pub longest_bad_row_run: u32,
    /// `fax-encoding-name`, e.g. `T.4 1-D`, `T.6`, `T.85(L0)`.
    pub encoding_name: Option<String>,
    /// `fax-image-resolution` in **pixels per metre** (x, y), e.g. (8040, 3850).
    pub image_resolution: Option<(u32, u32)>,
    /// `fax-image-pixel-size` (width, length) in pixels.
    pub image_pixel_size: Option<(u32, u32)>,
    /// `fax-image-size` in bytes.
    pub image_size: Option<u64>,
}

impl PageResult {
    /// The resolution in dots per inch, rounded: (8040, 3850) ppm → (204, 98).
    pub fn resolution_dpi(&self) -> Option<(u32, u32)> {
        self.image_resolution
            .map(|(x, y)| (ppm_to_dpi(x), ppm_to_dpi(y)))
    }
}

/// Pixels per metre to dots per inch, rounded to the nearest integer.
fn ppm_to_dpi(ppm: u32) -> u32 {
    // 1 inch = 0.0254 m; integer maths with rounding: ppm * 254 / 10000.
    ((u64::from(ppm) * 254 + 5_000) / 10_000) as u32
}

/// What an event changed, so the caller can write progress (qfile, status file, logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The call was answered (first `CHANNEL_ANSWER` or `CHANNEL_CALLSTATE` ACTIVE).
    Answered,
    /// A negotiation (phase B) event arrived; the receiver sends one per retrain.
    Negotiated,
    /// Page `n` (1-based) was transferred.
    Page(u32),
    /// The final `spandsp::*faxresult` arrived.
    FinalResult,
    /// The first hangup event arrived (`CHANNEL_HANGUP`, `CHANNEL_CALLSTATE` HANGUP or
    /// `CHANNEL_HANGUP_COMPLETE`, whichever came first).
    Hangup,
}

/// What the final `spandsp::*faxresult` event said (only that event sets these).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinalResult {
    /// `fax-success: 1` (should a second final result come, a success in either counts).
    pub success: bool,
    /// `fax-result-code` (spandsp T.30 completion code, see [`super::outcome`]).
    pub code: Option<u32>,
    /// `fax-result-text`, e.g. `OK`, `The call dropped prematurely`.
    pub text: Option<String>,
}

#[cfg(test)]
impl FinalResult {
    /// A final result that reported T.30 completion code `code` and no success.
    pub(crate) fn with_code(code: u32) -> Self {
        FinalResult {
            code: Some(code),
            ..Default::default()
        }
    }
}

/// The call's hangup, from the first hangup event (`CHANNEL_HANGUP`, `CHANNEL_CALLSTATE`
/// HANGUP or `CHANNEL_HANGUP_COMPLETE`, whichever came first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hangup {
    /// `Hangup-Cause` of the first hangup event that carried one, e.g. `NORMAL_CLEARING`
    /// (a later hangup event fills it when the first had none).
    pub cause: Option<String>,
    /// `Event-Date-Timestamp` (µs since the epoch) of the first hangup event.
    pub at_us: Option<i64>,
}

/// Everything known about one call's fax, accumulated from its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaxResult {
    direction: Direction,
    /// When set, events whose `Unique-ID` differs are ignored.
    channel_uuid: Option<String>,
    /// Negotiation events seen (sender: one per fax; receiver: one per (re)training).
    pub negotiation_count: u32,
    /// One entry per transferred page, in order (a repeated page number replaces its entry).
    pub pages: Vec<PageResult>,
    /// `fax-document-transferred-pages` (final result wins; page events raise it).
    pub transferred_pages: u32,
    /// `fax-document-total-pages` (final result wins; page events set it when non-zero).
    pub total_pages: u32,
    /// Set once the final `spandsp::*faxresult` arrived: what it said.
    pub final_result: Option<FinalResult>,
    /// `fax-transfer-rate` in bit/s from the latest negotiation or final result.
    pub transfer_rate: Option<u32>,
    /// True once any negotiation or final result said `fax-ecm-used: on` (never reset).
    pub ecm_used: bool,
    /// `fax-remote-station-id` (latest non-empty value).
    pub remote_station_id: Option<String>,
    /// `fax-local-station-id` (latest non-empty value).
    pub local_station_id: Option<String>,
    /// `fax-t38-status` from the latest negotiation or final result.
    pub t38_status: Option<T38Status>,
    /// True if FreeSWITCH reported V.17 disabled (`variable_fax_v17_disabled: 1`).
    pub v17_disabled: bool,
    /// When the call was answered (µs since the epoch): the `Event-Date-Timestamp` of
    /// CHANNEL_ANSWER or CHANNEL_CALLSTATE ACTIVE, else the `Caller-Channel-Answered-Time` of
    /// the first event that carries one.
    pub answered_at_us: Option<i64>,
    /// Set once any hangup event arrived (`CHANNEL_HANGUP`, `CHANNEL_CALLSTATE` HANGUP,
    /// `CHANNEL_HANGUP_COMPLETE`): its time and cause.
    pub hangup: Option<Hangup>,
}

impl FaxResult {
    /// An empty result for a call in `direction`, accepting events of any channel (the caller
    /// filters by UUID).
    pub fn new(direction: Direction) -> Self {
        FaxResult {
            direction,
            channel_uuid: None,
            negotiation_count: 0,
            pages: Vec::new(),
            transferred_pages: 0,
            total_pages: 0,
            final_result: None,
            transfer_rate: None,
            ecm_used: false,
            remote_station_id: None,
            local_station_id: None,
            t38_status: None,
            v17_disabled: false,
            answered_at_us: None,
            hangup: None,
        }
    }

    /// An empty result that ignores events whose `Unique-ID` is not `uuid` (case-insensitive).
    /// Events without a `Unique-ID` are still accepted.
    pub fn for_channel(direction: Direction, uuid: impl Into<String>) -> Self {
        FaxResult {
            channel_uuid: Some(uuid.into()),
            ..FaxResult::new(direction)
        }
    }

    /// The direction given at construction.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Feeds one event. Returns what changed, or `None` for events that do not matter here.
    pub fn apply(&mut self, ev: &impl EventHeaders) -> Option<Update> {
        if let (Some(want), Some(got)) = (&self.channel_uuid, ev.header("Unique-ID")) {
            if !want.eq_ignore_ascii_case(got.trim()) {
                return None;
            }
        }
        let name = ev.header("Event-Name")?.trim();
        let update = match name {
            "CHANNEL_ANSWER" => self.on_answer(ev),
            "CHANNEL_CALLSTATE" => match ev.header("Channel-Call-State").map(str::trim) {
                Some("ACTIVE") => self.on_answer(ev),
                Some("HANGUP") => self.on_hangup(ev),
                _ => None,
            },
            "CHANNEL_HANGUP" | "CHANNEL_HANGUP_COMPLETE" => self.on_hangup(ev),
            "CUSTOM" => self.on_custom(ev),
            _ => None,
        };
        if self.answered_at_us.is_none() {
            // Every channel event after the answer carries its time (the answer's own
            // completion, spandsp's events, the hangup): a subscription without
            // CHANNEL_ANSWER or CHANNEL_CALLSTATE still learns it.
            self.answered_at_us = answered_time(ev);
        }
        update
    }

    /// True once both the final fax result and a hangup were seen: nothing more will come.
    pub fn is_complete(&self) -> bool {
        self.final_result.is_some() && self.hangup.is_some()
    }

    /// True when the final result arrived and said `fax-success: 1`.
    pub fn success(&self) -> bool {
        self.final_result.as_ref().is_some_and(|f| f.success)
    }

    /// The final result's `fax-result-code`, if it arrived and carried one.
    pub fn result_code(&self) -> Option<u32> {
        self.final_result.as_ref().and_then(|f| f.code)
    }

    /// The final result's `fax-result-text`, if it arrived and carried one.
    pub fn result_text(&self) -> Option<&str> {
        self.final_result.as_ref().and_then(|f| f.text.as_deref())
    }

    /// The hangup's `Hangup-Cause`, if a hangup event carried one.
    pub fn hangup_cause(&self) -> Option<&str> {
        self.hangup.as_ref().and_then(|h| h.cause.as_deref())
    }

    /// The first hangup event's `Event-Date-Timestamp` (µs since the epoch).
    pub fn hangup_at_us(&self) -> Option<i64> {
        self.hangup.as_ref().and_then(|h| h.at_us)
    }

    /// True when the call was answered (an answer or ACTIVE call state was seen).
    pub fn answered(&self) -> bool {
        self.answered_at_us.is_some()
    }

    /// Sum of `fax-bad-rows` over all pages.
    pub fn bad_rows_total(&self) -> u64 {
        self.pages.iter().map(|p| u64::from(p.bad_rows)).sum()
    }

    /// The last page's encoding name (what HylaFAX calls the data format).
    pub fn encoding_name(&self) -> Option<&str> {
        self.pages
            .iter()
            .rev()
            .find_map(|p| p.encoding_name.as_deref())
    }

    /// Call duration from answer to hangup, in whole seconds (event times, not processing times).
    pub fn connected_seconds(&self) -> Option<i64> {
        match (self.answered_at_us, self.hangup_at_us()) {
            (Some(a), Some(h)) if h >= a => Some((h - a) / 1_000_000),
            _ => None,
        }
    }

    fn on_answer(&mut self, ev: &impl EventHeaders) -> Option<Update> {
        if self.answered_at_us.is_some() {
            return None;
        }
        // An answer without a timestamp still counts; 0 marks "answered, time unknown".
        self.answered_at_us = Some(event_time(ev).unwrap_or(0));
        Some(Update::Answered)
    }

    fn on_hangup(&mut self, ev: &impl EventHeaders) -> Option<Update> {
        if let Some(hangup) = &mut self.hangup {
            if hangup.cause.is_none() {
                hangup.cause = non_empty(ev.header("Hangup-Cause"));
            }
            return None;
        }
        self.hangup = Some(Hangup {
            cause: non_empty(ev.header("Hangup-Cause")),
            at_us: event_time(ev),
        });
        Some(Update::Hangup)
    }

    fn on_custom(&mut self, ev: &impl EventHeaders) -> Option<Update> {
        let subclass = ev.header("Event-Subclass")?.trim().to_ascii_lowercase();
        let rest = subclass.strip_prefix("spandsp::")?;
        let Some(kind) = rest.strip_prefix(self.direction.prefix()) else {
            debug!(subclass = %subclass, direction = ?self.direction, "ignoring spandsp event of the other direction");
            return None;
        };
        match kind {
            "faxnegociateresult" => Some(self.on_negotiation(ev)),
            "faxpageresult" => self.on_page(ev),
            "faxresult" => Some(self.on_final(ev)),
            _ => None,
        }
    }

    fn on_negotiation(&mut self, ev: &impl EventHeaders) -> Update {
        self.negotiation_count = self.negotiation_count.saturating_add(1);
        self.take_link_info(ev);
        Update::Negotiated
    }

    fn on_page(&mut self, ev: &impl EventHeaders) -> Option<Update> {
        let Some(n) = parse_u32(ev.header("fax-document-transferred-pages")) else {
            debug!("page event without a usable fax-document-transferred-pages; ignored");
            return None;
        };
        if let Some(total) = parse_u32(ev.header("fax-document-total-pages")).filter(|t| *t > 0) {
            self.total_pages = total;
        }
        let page = PageResult {
            page: n,
            bad_rows: parse_u32(ev.header("fax-bad-rows")).unwrap_or(0),
            longest_bad_row_run: parse_u32(ev.header("fax-longest-bad-row-run")).unwrap_or(0),
            encoding_name: non_empty(ev.header("fax-encoding-name")),
            image_resolution: parse_pair(ev.header("fax-image-resolution")),
            image_pixel_size: parse_pair(ev.header("fax-image-pixel-size")),
            image_size: ev
                .header("fax-image-size")
                .and_then(|v| v.trim().parse().ok()),
        };
        // A page sent again (same count) replaces its entry rather than adding a phantom page.
        match self.pages.iter_mut().find(|p| p.page == n) {
            Some(existing) => *existing = page,
            None => self.pages.push(page),
        }
        if n > self.transferred_pages {
            self.transferred_pages = n;
            Some(Update::Page(n))
        } else {
            None
        }
    }

    fn on_final(&mut self, ev: &impl EventHeaders) -> Update {
        let fin = self.final_result.get_or_insert_with(FinalResult::default);
        fin.success |= ev.header("fax-success").map(str::trim) == Some("1");
        if let Some(code) = parse_u32(ev.header("fax-result-code")) {
            fin.code = Some(code);
        }
        if let Some(text) = non_empty(ev.header("fax-result-text")) {
            fin.text = Some(text);
        }
        // The final counters are authoritative, even when lower than the page events said.
        if let Some(n) = parse_u32(ev.header("fax-document-transferred-pages")) {
            self.transferred_pages = n;
        }
        if let Some(t) = parse_u32(ev.header("fax-document-total-pages")) {
            self.total_pages = t;
        }
        self.take_link_info(ev);
        Update::FinalResult
    }

    /// Fields shared by negotiation and final events.
    fn take_link_info(&mut self, ev: &impl EventHeaders) {
        if let Some(rate) = parse_u32(ev.header("fax-transfer-rate")) {
            self.transfer_rate = Some(rate);
        }
        if ev
            .header("fax-ecm-used")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("on"))
        {
            self.ecm_used = true;
        }
        if let Some(id) = non_empty(ev.header("fax-remote-station-id")) {
            self.remote_station_id = Some(id);
        }
        if let Some(id) = non_empty(ev.header("fax-local-station-id")) {
            self.local_station_id = Some(id);
        }
        if let Some(status) = ev.header("fax-t38-status").filter(|v| !v.trim().is_empty()) {
            self.t38_status = Some(T38Status::parse(status));
        }
        let v17_off = |name| ev.header(name).map(str::trim) == Some("1");
        if v17_off("fax-v17-disabled") || v17_off("variable_fax_v17_disabled") {
            self.v17_disabled = true;
        }
    }
}

/// `Caller-Channel-Answered-Time` (µs since the epoch), when the channel was answered (it is
/// `0` before).
fn answered_time(ev: &impl EventHeaders) -> Option<i64> {
    ev.header("Caller-Channel-Answered-Time")
        .and_then(|v| v.trim().parse().ok())
        .filter(|t: &i64| *t > 0)
}

/// `Event-Date-Timestamp` in µs, when present and numeric.
fn event_time(ev: &impl EventHeaders) -> Option<i64> {
    ev.header("Event-Date-Timestamp")
        .and_then(|v| v.trim().parse().ok())
}

fn parse_u32(v: Option<&str>) -> Option<u32> {
    v.and_then(|s| s.trim().parse().ok())
}

/// `"8040x3850"` → `(8040, 3850)`.
fn parse_pair(v: Option<&str>) -> Option<(u32, u32)> {
    let (a, b) = v?.trim().split_once(['x', 'X'])?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

fn non_empty(v: Option<&str>) -> Option<String> {
    v.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fax::capture::{Capture, load};
    use crate::fax::headers::SimpleHeaders;

    /// Runs every event of `capture` for its call through a fresh result.
    fn replay(name: &str, direction: Direction) -> (FaxResult, Vec<Update>, Capture) {
        let cap = load(name);
        let uuid = cap.call_uuid().expect("capture has a call");
        let mut result = FaxResult::for_channel(direction, uuid);
        let updates = cap
            .events
            .iter()
            .filter_map(|ev| result.apply(ev))
            .collect();
        (result, updates, cap)
    }

    #[test]
    fn t38_send_ok() {
        let (r, updates, _) = replay("inbound-txfax-t38-ok", Direction::Send);
        assert!(r.success());
        assert_eq!(r.result_code(), Some(0));
        assert_eq!(r.result_text(), Some("OK"));
        assert_eq!((r.transferred_pages, r.total_pages), (3, 3));
        assert_eq!(r.transfer_rate, Some(14400));
        assert!(r.ecm_used);
        assert_eq!(r.t38_status, Some(T38Status::Negotiated));
        assert_eq!(r.hangup_cause(), Some("NORMAL_CLEARING"));
        assert_eq!(r.remote_station_id.as_deref(), Some("+1 337"));
        assert_eq!(r.local_station_id.as_deref(), Some("+1 337"));
        assert_eq!(r.negotiation_count, 1);
        assert_eq!(r.pages.len(), 3);
        assert_eq!(r.pages[0].image_resolution, Some((8040, 3850)));
        assert_eq!(r.pages[0].resolution_dpi(), Some((204, 98)));
        assert_eq!(r.pages[0].image_pixel_size, Some((1728, 1146)));
        assert_eq!(r.encoding_name(), Some("T.85(L0)"));
        assert_eq!(r.bad_rows_total(), 0);
        assert!(r.is_complete());
        assert!(r.final_result.is_some() && r.hangup.is_some());
        // Event times, in order, and the answer before the hangup.
        let (a, h) = (r.answered_at_us.unwrap(), r.hangup_at_us().unwrap());
        assert!(
            a > 1_700_000_000_000_000 && h > a,
            "answered {a} hangup {h}"
        );
        assert!(r.connected_seconds().unwrap() >= 1);
        // CHANNEL_HANGUP precedes the txfaxresult on the wire.
        assert_eq!(
            updates,
            vec![
                Update::Answered,
                Update::Negotiated,
                Update::Page(1),
                Update::Page(2),
                Update::Page(3),
                Update::Hangup,
                Update::FinalResult,
            ]
        );
    }

    /// A reception subscribes to neither CHANNEL_ANSWER nor CHANNEL_CALLSTATE: the answer
    /// time comes from the events it does get (the answer's completion, the hangup), and is
    /// the one those events would have given.
    #[test]
    fn answer_time_without_answer_or_callstate_events() {
        let name = "outbound-rxfax-sender-hangup-after-answer";
        let (all, _, cap) = replay(name, Direction::Receive);
        let uuid = cap.call_uuid().expect("capture has a call");
        let mut r = FaxResult::for_channel(Direction::Receive, uuid);
        let mut seen = Vec::new();
        for ev in &cap.events {
            let name = ev.header("Event-Name").unwrap_or_default();
            if name == "CHANNEL_ANSWER" || name == "CHANNEL_CALLSTATE" {
                continue;
            }
            r.apply(ev);
            seen.push(name.to_owned());
        }
        assert!(
            seen.iter().any(|n| n == "CHANNEL_EXECUTE_COMPLETE"),
            "{seen:?}"
        );
        assert!(
            all.answered_at_us
                .is_some_and(|t| t > 1_700_000_000_000_000)
        );
        assert_eq!(r.answered_at_us, all.answered_at_us);
        assert_eq!(r.connected_seconds(), all.connected_seconds());
        assert_eq!(r.hangup_cause(), Some("NORMAL_CLEARING"));

        // Before the answer the header says 0: no answer.
        let mut early = FaxResult::new(Direction::Receive);
        early.apply(&SimpleHeaders::from_pairs([
            ("Event-Name", "CHANNEL_HANGUP"),
            ("Caller-Channel-Answered-Time", "0"),
            ("Hangup-Cause", "ORIGINATOR_CANCEL"),
        ]));
        assert!(!early.answered());
        assert!(early.hangup.is_some());
    }

    #[test]
    fn g711_send_ok() {
        let (r, _, _) = replay("inbound-txfax-g711-ok", Direction::Send);
        assert!(r.success());
        assert_eq!((r.transferred_pages, r.total_pages), (3, 3));
        assert_eq!(r.t38_status, Some(T38Status::Off));
        assert_eq!(r.hangup_cause(), Some("NORMAL_CLEARING"));
        assert!(r.is_complete());
    }

    #[test]
    fn t38_send_remote_hangup_midfax() {
        let (r, updates, _) = replay("inbound-txfax-t38-remote-hangup-midfax", Direction::Send);
        assert!(!r.success());
        assert_eq!(r.result_code(), Some(49));
        assert_eq!(r.result_text(), Some("The call dropped prematurely"));
        assert_eq!((r.transferred_pages, r.total_pages), (0, 12));
        assert!(r.pages.is_empty(), "the sender saw no page event");
        assert_eq!(r.negotiation_count, 1);
        assert!(!updates.iter().any(|u| matches!(u, Update::Page(_))));
        assert!(r.is_complete());
    }

    #[test]
    fn t38_send_local_kill_midfax() {
        let (r, updates, _) = replay("inbound-txfax-t38-local-kill-midfax", Direction::Send);
        assert!(!r.success());
        assert_eq!(r.result_code(), Some(49));
        assert_eq!((r.transferred_pages, r.total_pages), (1, 12));
        assert!(updates.contains(&Update::Page(1)));
        assert_eq!(r.hangup_cause(), Some("NORMAL_CLEARING"));
    }

    #[test]
    fn send_with_missing_file_has_no_fax_result() {
        let (r, updates, _) = replay("inbound-txfax-file-missing", Direction::Send);
        assert!(r.final_result.is_none());
        assert!(r.hangup.is_some());
        assert!(!r.is_complete(), "caller must end this one by grace period");
        assert_eq!(r.negotiation_count, 0);
        assert_eq!(r.result_code(), None);
        assert!(r.answered());
        assert!(!updates.contains(&Update::FinalResult));
        assert_eq!(r.hangup_cause(), Some("NORMAL_CLEARING"));
    }

    #[test]
    fn t38_receive_ok() {
        let (r, updates, _) = replay("outbound-rxfax-t38-ok", Direction::Receive);
        assert!(r.success());
        assert_eq!((r.transferred_pages, r.total_pages), (3, 3));
        assert_eq!(r.pages.len(), 3);
        assert_eq!(r.negotiation_count, 1);
        assert_eq!(r.t38_status, Some(T38Status::Negotiated));
        assert_eq!(r.remote_station_id.as_deref(), Some("+1 337"));
        // This socket subscription has no CHANNEL_HANGUP, only CALLSTATE HANGUP.
        assert_eq!(r.hangup_cause(), Some("NORMAL_CLEARING"));
        assert!(r.is_complete());
        assert_eq!(
            updates
                .iter()
                .filter(|u| matches!(u, Update::Page(_)))
                .count(),
            3
        );
    }

    #[test]
    fn receive_with_no_fax_sender() {
        let (r, _, _) = replay("outbound-rxfax-no-fax-sender", Direction::Receive);
        assert!(!r.success());
        assert_eq!(r.result_code(), Some(3));
        assert_eq!(
            r.result_text(),
            Some("Timed out waiting for the first message")
        );
        assert_eq!(r.negotiation_count, 0);
        assert_eq!(r.transferred_pages, 0);
        assert_eq!(r.t38_status, Some(T38Status::Refused));
        assert!(r.is_complete());
    }

    #[test]
    fn receive_sender_hangs_up_after_answer() {
        let (r, _, _) = replay(
            "outbound-rxfax-sender-hangup-after-answer",
            Direction::Receive,
        );
        assert!(!r.success());
        assert_eq!(r.result_code(), Some(49));
        assert_eq!(r.transferred_pages, 0);
        assert!(r.pages.is_empty());
        assert_eq!(r.negotiation_count, 0);
        assert_eq!(r.t38_status, Some(T38Status::Refused));
        assert_eq!(
            r.remote_station_id, None,
            "no remote id without negotiation"
        );
        assert!(r.is_complete());
    }

    #[test]
    fn wrong_direction_and_other_channels_are_ignored() {
        let cap = load("inbound-txfax-t38-ok");
        let mut as_receiver = FaxResult::new(Direction::Receive);
        for ev in &cap.events {
            as_receiver.apply(ev);
        }
        assert_eq!(as_receiver.negotiation_count, 0);
        assert!(as_receiver.final_result.is_none());
        assert!(as_receiver.hangup.is_some(), "channel events still count");

        let mut other =
            FaxResult::for_channel(Direction::Send, "00000000-0000-0000-0000-000000000000");
        for ev in &cap.events {
            assert_eq!(other.apply(ev), None);
        }
        assert!(other.hangup.is_none());
    }

    #[test]
    fn synthetic_retrain_counts_and_repeated_pages() {
        let mut r = FaxResult::new(Direction::Receive);
        let neg = SimpleHeaders::from_pairs([
            ("Event-Name", "CUSTOM"),
            ("Event-Subclass", "spandsp::rxfaxnegociateresult"),
            ("fax-transfer-rate", "9600"),
            ("fax-ecm-used", "off"),
        ]);
        assert_eq!(r.apply(&neg), Some(Update::Negotiated));
        assert_eq!(r.apply(&neg), Some(Update::Negotiated));
        assert_eq!(r.negotiation_count, 2);
        let page = |n: &str, bad: &str| {
            SimpleHeaders::from_pairs([
                ("Event-Name", "CUSTOM"),
                ("Event-Subclass", "SPANDSP::RXFAXPAGERESULT"),
                ("fax-document-transferred-pages", n),
                ("fax-bad-rows", bad),
                ("fax-image-resolution", "garbage"),
            ])
        };
        assert_eq!(r.apply(&page("1", "5")), Some(Update::Page(1)));
        assert_eq!(r.apply(&page("1", "7")), None, "same page again");
        assert_eq!(r.pages.len(), 1);
        assert_eq!(r.bad_rows_total(), 7);
        assert_eq!(r.pages[0].image_resolution, None);
        assert_eq!(r.apply(&page("x", "0")), None, "unparsable page count");
        assert!(!r.ecm_used);
        assert_eq!(r.transfer_rate, Some(9600));
        // Unknown events and events without a name are ignored.
        assert_eq!(
            r.apply(&SimpleHeaders::from_pairs([("Event-Name", "HEARTBEAT")])),
            None
        );
        assert_eq!(r.apply(&SimpleHeaders::new()), None);
    }

    #[test]
    fn hangup_reported_once_and_cause_kept() {
        let mut r = FaxResult::new(Direction::Send);
        let hangup = SimpleHeaders::from_pairs([
            ("Event-Name", "CHANNEL_HANGUP"),
            ("Hangup-Cause", "USER_BUSY"),
            ("Event-Date-Timestamp", "1795345807927368"),
        ]);
        let complete = SimpleHeaders::from_pairs([
            ("Event-Name", "CHANNEL_HANGUP_COMPLETE"),
            ("Hangup-Cause", "NORMAL_CLEARING"),
        ]);
        assert_eq!(r.apply(&hangup), Some(Update::Hangup));
        assert_eq!(r.apply(&complete), None);
        assert_eq!(r.hangup_cause(), Some("USER_BUSY"));
        assert_eq!(r.hangup_at_us(), Some(1_795_345_807_927_368));
        assert!(!r.answered());
        assert_eq!(r.connected_seconds(), None);
    }

    #[test]
    fn ppm_conversion() {
        assert_eq!(ppm_to_dpi(8040), 204);
        assert_eq!(ppm_to_dpi(3850), 98);
        assert_eq!(ppm_to_dpi(7700), 196);
        assert_eq!(ppm_to_dpi(0), 0);
        assert!(ppm_to_dpi(u32::MAX) > 100_000_000, "no overflow at the top");
    }
}
