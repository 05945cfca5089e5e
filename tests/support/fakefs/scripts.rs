//! What a fake call does: per-gateway / per-number scripts for originate (inbound mode).

use std::time::Duration;

/// What `fax-t38-status` the fax reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum T38 {
    /// `negotiated`: T.38 used (events from the T.38 captures).
    Negotiated,
    /// `off`: T.38 disabled, G.711 audio (events from the G.711 captures).
    Off,
    /// `refused`: we asked for T.38, the far end refused, fax went over G.711.
    Refused,
}

impl T38 {
    /// The wire value of `fax-t38-status`.
    pub fn as_str(self) -> &'static str {
        match self {
            T38::Negotiated => "negotiated",
            T38::Off => "off",
            T38::Refused => "refused",
        }
    }
}

/// Negotiated fax parameters of a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaxParams {
    /// Pages to report; `None` = the TIFF's real page count (within `fax_start_page`/`fax_end_page`).
    pub pages: Option<u32>,
    /// T.38 status reported.
    pub t38: T38,
    /// `fax-transfer-rate`.
    pub rate: u32,
    /// `fax-ecm-used` on/off.
    pub ecm: bool,
    /// The far end rings (180, CHANNEL_PROGRESS, CALLSTATE RINGING) and answers 2 s later, as
    /// gofaxd's `answerafter` does (captures `inbound-txfax-{t38,g711}-ok`). `false`: answered
    /// at once, DOWN -> ACTIVE (T.38 only: capture `inbound-txfax-t38-ok-outbound-all-events`).
    pub ring: bool,
    /// `fax-encoding-name` (spandsp's compression name: `T.4 1-D`, `T.4 2-D`, `T.6`, `T.85`,
    /// ...); `None`: the capture's (`T.85(L0)`, JBIG).
    pub encoding: Option<String>,
}

impl Default for FaxParams {
    fn default() -> Self {
        FaxParams {
            pages: None,
            t38: T38::Negotiated,
            rate: 14400,
            ecm: true,
            ring: true,
            encoding: None,
        }
    }
}

/// Where a [`CallScript::DropAfter`] call closes the originating connection abruptly
/// (FreeSWITCH "dies": no reply, no notice, just EOF).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropPoint {
    /// Right after the originate command was read (a `bgapi` still gets its `+OK Job-UUID`).
    OnOriginate,
    /// Right after CHANNEL_ANSWER.
    AfterAnswer,
    /// Right after the n-th `spandsp::txfaxpageresult` (1-based).
    AfterPage(u32),
    /// Right before `spandsp::txfaxresult`: every page went, the final result never comes.
    BeforeResult,
}

/// Behaviour of one dialled leg (chosen per number, else per gateway, else the default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallScript {
    /// Fax sent: capture `inbound-txfax-t38-ok` (T38::Negotiated) or `inbound-txfax-g711-ok`.
    FaxOk(FaxParams),
    /// `USER_BUSY` (capture `inbound-originate-busy-486`).
    Busy,
    /// Rejected by the far end with a hangup cause before answer: `CALL_REJECTED` (capture
    /// `inbound-originate-rejected-603`), `UNALLOCATED_NUMBER` (`...-rejected-by-socket-404`),
    /// or any other cause (e.g. `NORMAL_TEMPORARY_FAILURE` for a SIP 503) on the 603 shape.
    Rejected(String),
    /// The gateway's host does not answer SIP: `-ERR NORMAL_TEMPORARY_FAILURE` with a channel
    /// that never reaches CS_CONSUME_MEDIA (capture `inbound-originate-gateway-unreachable`).
    Unreachable,
    /// `NO_ANSWER` after a delay (603 event shape with cause NO_ANSWER).
    NoAnswer(Duration),
    /// Gateway registered-down: `-ERR GATEWAY_DOWN`, no channel (only DESTROY + STATE).
    GatewayDown,
    /// Unknown gateway: `-ERR INVALID_GATEWAY`, no channel (only DESTROY + STATE).
    InvalidGateway,
    /// The receiver hangs up during the fax: txfaxresult code 49 with **0** pages transferred and
    /// no txfaxpageresult (captures `inbound-txfax-{t38,g711}-remote-hangup-midfax`).
    /// `after_pages` scales the time until the hangup.
    MidFaxHangup {
        /// Pages the receiver got before hanging up (timing only; the sender reports 0).
        after_pages: u32,
        /// T.38 or G.711 capture.
        t38: bool,
    },
    /// Behave as if the txfax file did not exist (capture `inbound-txfax-file-missing`): no
    /// spandsp event, EXECUTE_COMPLETE "Cannot send non-existant fax file", NORMAL_CLEARING.
    /// Any fax script turns into this when the file is really missing.
    FileMissing,
    /// Training failed after negotiation: txfaxresult code 6 (non-fax-endpoint shape plus a
    /// negotiation event).
    TrainingFailure,
    /// Answered by something that is not a fax: txfaxresult code 2, no negotiation (capture
    /// `inbound-txfax-to-non-fax-endpoint`).
    NonFaxEndpoint,
    /// FreeSWITCH accepts the originate and then never answers anything on that connection.
    Silent,
    /// A T.38 fax that proceeds through all pages, then hangs: no CHANNEL_HANGUP and no
    /// txfaxresult until `uuid_kill`, which ends it like capture `inbound-txfax-t38-local-kill-midfax`.
    Hang(FaxParams),
    /// A normal fax call, but the originating connection is closed abruptly at `DropPoint`.
    DropAfter(DropPoint),
}

impl CallScript {
    /// This leg as it goes when the originate set `fax_enable_t38=false`: mod_spandsp neither
    /// asks for T.38 nor accepts it, so a fax that would have used T.38 goes over G.711.
    pub fn without_t38(self) -> CallScript {
        match self {
            CallScript::FaxOk(p) => CallScript::FaxOk(FaxParams { t38: T38::Off, ..p }),
            CallScript::Hang(p) => CallScript::Hang(FaxParams { t38: T38::Off, ..p }),
            CallScript::MidFaxHangup { after_pages, .. } => CallScript::MidFaxHangup {
                after_pages,
                t38: false,
            },
            other => other,
        }
    }

    /// A default successful T.38 fax (page count from the TIFF).
    pub fn fax_ok() -> CallScript {
        CallScript::FaxOk(FaxParams::default())
    }

    /// A successful G.711 fax (T.38 off).
    pub fn fax_ok_g711() -> CallScript {
        CallScript::FaxOk(FaxParams {
            t38: T38::Off,
            ..FaxParams::default()
        })
    }

    /// Whether this leg makes a channel (all but GatewayDown / InvalidGateway).
    pub fn creates_channel(&self) -> bool {
        !matches!(self, CallScript::GatewayDown | CallScript::InvalidGateway)
    }

    /// Whether this leg is answered (the originate succeeds).
    pub fn answers(&self) -> bool {
        matches!(
            self,
            CallScript::FaxOk(_)
                | CallScript::MidFaxHangup { .. }
                | CallScript::FileMissing
                | CallScript::TrainingFailure
                | CallScript::NonFaxEndpoint
                | CallScript::Hang(_)
                | CallScript::DropAfter(_)
                | CallScript::Silent
        )
    }
}

/// Hangup cause → (Q.850 code, SIP status) for the variables FreeSWITCH sets.
pub fn cause_codes(cause: &str) -> (u32, u32) {
    match cause {
        "UNALLOCATED_NUMBER" => (1, 404),
        "NORMAL_CLEARING" => (16, 200),
        "USER_BUSY" => (17, 486),
        "NO_USER_RESPONSE" => (18, 408),
        "NO_ANSWER" => (19, 480),
        "CALL_REJECTED" => (21, 603),
        "DESTINATION_OUT_OF_ORDER" => (27, 502),
        "INVALID_NUMBER_FORMAT" => (28, 484),
        "NORMAL_UNSPECIFIED" => (31, 480),
        "NETWORK_OUT_OF_ORDER" => (38, 500),
        "NORMAL_TEMPORARY_FAILURE" => (41, 503),
        "SERVICE_UNAVAILABLE" => (63, 503),
        "INCOMPATIBLE_DESTINATION" => (88, 488),
        "RECOVERY_ON_TIMER_EXPIRE" => (102, 408),
        "ORIGINATOR_CANCEL" => (487, 487),
        _ => (31, 500),
    }
}

/// spandsp's text for a T.30 completion code.
pub fn result_text(code: u32) -> &'static str {
    match code {
        0 => "OK",
        2 => "Timed out waiting for initial communication",
        3 => "Timed out waiting for the first message",
        6 => "Failed to train with any of the compatible modems",
        49 => "The call dropped prematurely",
        _ => "Unexpected message received",
    }
}
