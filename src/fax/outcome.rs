//! The one outcome table: what a finished (or failed) send means for the HylaFAX job.
//!
//! GOfax.IP retried every post-answer failure and consulted `failedresponse` only for
//! `originate` errors (weaknesses §1.9). Here every path goes through [`FaxOutcome::classify`],
//! which returns a [`JobResult`]: `Done`/`Retry`/`Failed`, a status text for the qfile, a
//! HylaFAX `statuscode`, and whether the attempt counts as a dial and as a try.
//!
//! # Decision order
//! 1. fax success (`fax-success: 1`, or final result code 0) → **Done**;
//! 2. a send whose final result says every page was transferred (`n/n`, n > 0) → **Done**: the
//!    receiver confirmed each page, so a retry would deliver the fax twice;
//! 3. the hangup cause (post-answer) or the originate cause is in `failedresponse` → **Failed**,
//!    status `<CAUSE> (retry disabled)`; unlike GOfax.IP this also applies after answer;
//! 4. post-answer: the spandsp code row below; no final result at all → Retry;
//! 5. originate failure: the hangup-cause rows below, otherwise Retry with the cause as status;
//! 6. local trouble (FreeSWITCH down, ESL dropped, DynamicConfig failed, signal) → Retry;
//! 7. a job that can never be dialled (bad number, no gateway, DynamicConfig reject) → Failed.
//!
//! # spandsp T.30 completion codes (`fax-result-code`), for a **send**
//! Codes and texts are spandsp's (`t30.h` enum, `t30_completion_code_to_str`); the text in the
//! event wins over this table's copy. HylaFAX statuscodes are the nearest `E<nnn>` of HylaFAX's
//! status list (0: none fits; a failure or retry then gets `E006 Unknown problem`, never 0,
//! which means `E000 Call successful`).
//!
//! | code | name | disposition | statuscode | why |
//! |---|---|---|---|---|
//! | 0 | OK | Done | 0 | delivered |
//! | 1 | CEDTONE | Retry | 7 | answer tone trouble: line problem |
//! | 2 | T0_EXPIRED | Retry | 126 | no fax answered (voice line, busy fax); bounded by maxdials/maxtries |
//! | 3 | T1_EXPIRED | Retry | 126 | as above |
//! | 4 | T3_EXPIRED | Retry | 129 | procedural interrupt timed out |
//! | 5 | HDLC_CARRIER | Retry | 154 | carrier trouble: line problem |
//! | 6 | CANNOT_TRAIN | Retry | 137 | training failed: line quality, may work next time |
//! | 7 | OPER_INT_FAIL | Retry | 129 | operator intervention failed |
//! | 8 | INCOMPATIBLE | Failed | 122 | far end not compatible: retrying cannot change that |
//! | 9 | RX_INCAPABLE | Failed | 122 | far end cannot receive faxes |
//! | 10 | TX_INCAPABLE | Failed | 220 | far end cannot transmit (polling) |
//! | 11 | NORESSUPPORT | Failed | 414 | far end cannot take the document's resolution |
//! | 12 | NOSIZESUPPORT | Failed | 416 | far end cannot take the document's page size |
//! | 13 | UNEXPECTED | Retry | 134 | protocol glitch |
//! | 14 | TX_BADDCS | Retry | 136 | bad response to DCS/training: line |
//! | 15 | TX_BADPG | Retry | 103 | DCN after a page: remote aborted |
//! | 16 | TX_ECMPHD | Retry | 104 | invalid ECM response: line |
//! | 17 | TX_GOTDCN | Retry | 124 | DCN while waiting for DIS |
//! | 18 | TX_INVALRSP | Retry | 104 | invalid response after a page |
//! | 19 | TX_NODIS | Retry | 125 | no DIS |
//! | 20 | TX_PHBDEAD | Retry | 224 | no response to DCS/TCF |
//! | 21 | TX_PHDDEAD | Retry | 153 | no response after a page |
//! | 22 | TX_T5EXP | Retry | 138 | receiver not ready (ECM) for too long |
//! | 23 | RX_ECMPHD | Retry | 0 | receiver-side code; a line problem if seen |
//! | 24 | RX_GOTDCS | Retry | 0 | receiver-side code |
//! | 25 | RX_INVALCMD | Retry | 0 | receiver-side code |
//! | 26 | RX_NOCARRIER | Retry | 0 | receiver-side code |
//! | 27 | RX_NOEOL | Retry | 0 | receiver-side code |
//! | 28 | RX_NOFAX | Retry | 0 | receiver-side code |
//! | 29 | RX_T2EXPDCN | Retry | 0 | receiver-side code |
//! | 30 | RX_T2EXPD | Retry | 0 | receiver-side code |
//! | 31 | RX_T2EXPFAX | Retry | 0 | receiver-side code |
//! | 32 | RX_T2EXPMPS | Retry | 0 | receiver-side code |
//! | 33 | RX_T2EXPRR | Retry | 0 | receiver-side code |
//! | 34 | RX_T2EXP | Retry | 0 | receiver-side code |
//! | 35 | RX_DCNWHY | Retry | 0 | receiver-side code |
//! | 36 | RX_DCNDATA | Retry | 0 | receiver-side code |
//! | 37 | RX_DCNFAX | Retry | 0 | receiver-side code |
//! | 38 | RX_DCNPHD | Retry | 0 | receiver-side code |
//! | 39 | RX_DCNRRD | Retry | 0 | receiver-side code |
//! | 40 | RX_DCNNORTN | Retry | 0 | receiver-side code |
//! | 41 | FILEERROR | Failed | 314 | our TIFF cannot be opened: re-sending the same file won't help |
//! | 42 | NOPAGE | Failed | 316 | our TIFF lacks a page |
//! | 43 | BADTIFF | Failed | 321 | our TIFF is not TIFF/F-compatible |
//! | 44 | BADPAGE | Failed | 321 | our TIFF lacks page-number tags |
//! | 45 | BADTAG | Failed | 321 | our TIFF has bad tag values |
//! | 46 | BADTIFFHDR | Failed | 321 | our TIFF header is bad |
//! | 47 | NOMEM | Retry | 0 | out of memory on the switch: transient |
//! | 48 | RETRYDCN | Retry | 135 | gave up after the permitted retries: line |
//! | 49 | CALLDROPPED | Retry | 128 | call dropped (either side hung up) |
//! | 50 | NOPOLL | Failed | 220 | poll refused |
//! | 51 | IDENT_UNACCEPTABLE | Failed | 0 | remote refuses our identification: permanent policy |
//! | 52 | SUB_UNACCEPTABLE | Failed | 0 | sub-address refused |
//! | 53 | SEP_UNACCEPTABLE | Failed | 0 | selective polling address refused |
//! | 54 | PSA_UNACCEPTABLE | Failed | 0 | polled sub-address refused |
//! | 55 | SID_UNACCEPTABLE | Failed | 0 | sender identification refused |
//! | 56 | PWD_UNACCEPTABLE | Failed | 0 | password refused |
//! | 57 | TSA_UNACCEPTABLE | Failed | 0 | internet address refused |
//! | 58 | IRA_UNACCEPTABLE | Failed | 0 | internet routing address refused |
//! | 59 | CIA_UNACCEPTABLE | Failed | 0 | internet address refused |
//! | 60 | ISP_UNACCEPTABLE | Failed | 0 | internet polling address refused |
//! | 61 | CSA_UNACCEPTABLE | Failed | 0 | internet address refused |
//! | other | - | Retry | 0 | unknown: do not give up on a code we do not understand |
//!
//! # FreeSWITCH hangup causes of a failed `originate` (not in `failedresponse`)
//!
//! | cause | status | statuscode |
//! |---|---|---|
//! | USER_BUSY | `Busy signal detected` | 1 |
//! | NO_ANSWER, NO_USER_RESPONSE, ALLOTTED_TIMEOUT, PROGRESS_TIMEOUT | `No answer from remote` | 3 |
//! | GATEWAY_DOWN, INVALID_GATEWAY | the cause | 4 (no usable line) |
//! | any other | the cause | 6 (E006 Unknown problem) |
//!
//! Local trouble (FreeSWITCH unreachable, Event Socket lost, DynamicConfig failed, a signal)
//! and rejected jobs (DynamicConfig `RejectCall`, no gateway, an undiallable number) get 6 too.
//!
//! All of these are Retry unless listed in `failedresponse`; faxq's `maxdials` ends the job.

use super::result::{Direction, FaxResult};

/// What faxq should do with the job. Maps to HylaFAX's `FaxSendStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// Sent: `returned:2` (send_done).
    Done,
    /// Requeue for another attempt: `returned:0` (send_retry).
    Retry,
    /// Give up: `returned:1` (send_failed).
    Failed,
}

impl Disposition {
    /// The HylaFAX `returned:` value (also fsfaxsend's exit code).
    pub fn returned(self) -> u8 {
        match self {
            Disposition::Retry => 0,
            Disposition::Failed => 1,
            Disposition::Done => 2,
        }
    }
}

/// The verdict on one send attempt, ready for the qfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult {
    /// Done, Retry or Failed.
    pub disposition: Disposition,
    /// The qfile `status:` text (empty on success, as HylaFAX's faxsend leaves it).
    pub status: String,
    /// The qfile `statuscode:` (HylaFAX `E<nnn>` number; 0 when none fits).
    pub statuscode: u16,
    /// The attempt reached the network (`totdials`/`ndials` bookkeeping).
    pub counts_as_dial: bool,
    /// The attempt got as far as a T.30 session (`tottries` bookkeeping).
    pub counts_as_try: bool,
}

/// One row of the spandsp T.30 completion-code table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct T30Code {
    /// `fax-result-code`.
    pub code: u32,
    /// spandsp's name without the `T30_ERR_` prefix.
    pub name: &'static str,
    /// spandsp's `t30_completion_code_to_str` text.
    pub text: &'static str,
    /// What a send that ended with this code means for the job.
    pub disposition: Disposition,
    /// HylaFAX statuscode (0: none fits).
    pub statuscode: u16,
}

const fn row(
    code: u32,
    name: &'static str,
    text: &'static str,
    disposition: Disposition,
    statuscode: u16,
) -> T30Code {
    T30Code {
        code,
        name,
        text,
        disposition,
        statuscode,
    }
}

use Disposition::{Done, Failed, Retry};

/// spandsp's T.30 completion codes; index == code. See the module table for the reasoning.
#[rustfmt::skip]
pub const T30_CODES: &[T30Code] = &[
    row(0, "OK", "OK", Done, 0),
    row(1, "CEDTONE", "The CED tone exceeded 5s", Retry, 7),
    row(2, "T0_EXPIRED", "Timed out waiting for initial communication", Retry, 126),
    row(3, "T1_EXPIRED", "Timed out waiting for the first message", Retry, 126),
    row(4, "T3_EXPIRED", "Timed out waiting for procedural interrupt", Retry, 129),
    row(5, "HDLC_CARRIER", "The HDLC carrier did not stop in a timely manner", Retry, 154),
    row(6, "CANNOT_TRAIN", "Failed to train with any of the compatible modems", Retry, 137),
    row(7, "OPER_INT_FAIL", "Operator intervention failed", Retry, 129),
    row(8, "INCOMPATIBLE", "Far end is not compatible", Failed, 122),
    row(9, "RX_INCAPABLE", "Far end is not able to receive", Failed, 122),
    row(10, "TX_INCAPABLE", "Far end is not able to transmit", Failed, 220),
    row(11, "NORESSUPPORT", "Far end cannot receive at the resolution of the image", Failed, 414),
    row(12, "NOSIZESUPPORT", "Far end cannot receive at the size of image", Failed, 416),
    row(13, "UNEXPECTED", "Unexpected message received", Retry, 134),
    row(14, "TX_BADDCS", "Received bad response to DCS or training", Retry, 136),
    row(15, "TX_BADPG", "Received a DCN from remote after sending a page", Retry, 103),
    row(16, "TX_ECMPHD", "Invalid ECM response received from receiver", Retry, 104),
    row(17, "TX_GOTDCN", "Received a DCN while waiting for a DIS", Retry, 124),
    row(18, "TX_INVALRSP", "Invalid response after sending a page", Retry, 104),
    row(19, "TX_NODIS", "Received other than DIS while waiting for DIS", Retry, 125),
    row(20, "TX_PHBDEAD", "Received no response to DCS or TCF", Retry, 224),
    row(21, "TX_PHDDEAD", "No response after sending a page", Retry, 153),
    row(22, "TX_T5EXP", "Timed out waiting for receiver ready (ECM mode)", Retry, 138),
    row(23, "RX_ECMPHD", "Invalid ECM response received from transmitter", Retry, 0),
    row(24, "RX_GOTDCS", "DCS received while waiting for DTC", Retry, 0),
    row(25, "RX_INVALCMD", "Unexpected command after page received", Retry, 0),
    row(26, "RX_NOCARRIER", "Carrier lost during fax receive", Retry, 0),
    row(27, "RX_NOEOL", "Timed out while waiting for EOL (end Of line)", Retry, 0),
    row(28, "RX_NOFAX", "Timed out while waiting for first line", Retry, 0),
    row(29, "RX_T2EXPDCN", "Timer T2 expired while waiting for DCN", Retry, 0),
    row(30, "RX_T2EXPD", "Timer T2 expired while waiting for phase D", Retry, 0),
    row(31, "RX_T2EXPFAX", "Timer T2 expired while waiting for fax page", Retry, 0),
    row(32, "RX_T2EXPMPS", "Timer T2 expired while waiting for next fax page", Retry, 0),
    row(33, "RX_T2EXPRR", "Timer T2 expired while waiting for RR command", Retry, 0),
    row(34, "RX_T2EXP", "Timer T2 expired while waiting for NSS, DCS or MCF", Retry, 0),
    row(35, "RX_DCNWHY", "Unexpected DCN while waiting for DCS or DIS", Retry, 0),
    row(36, "RX_DCNDATA", "Unexpected DCN while waiting for image data", Retry, 0),
    row(37, "RX_DCNFAX", "Unexpected DCN while waiting for EOM, EOP or MPS", Retry, 0),
    row(38, "RX_DCNPHD", "Unexpected DCN after EOM or MPS sequence", Retry, 0),
    row(39, "RX_DCNRRD", "Unexpected DCN after RR/RNR sequence", Retry, 0),
    row(40, "RX_DCNNORTN", "Unexpected DCN after requested retransmission", Retry, 0),
    row(41, "FILEERROR", "TIFF/F file cannot be opened", Failed, 314),
    row(42, "NOPAGE", "TIFF/F page not found", Failed, 316),
    row(43, "BADTIFF", "TIFF/F format is not compatible", Failed, 321),
    row(44, "BADPAGE", "TIFF/F page number tag missing", Failed, 321),
    row(45, "BADTAG", "Incorrect values for TIFF/F tags", Failed, 321),
    row(46, "BADTIFFHDR", "Bad TIFF/F header - incorrect values in fields", Failed, 321),
    row(47, "NOMEM", "Cannot allocate memory for more pages", Retry, 0),
    row(48, "RETRYDCN", "Disconnected after permitted retries", Retry, 135),
    row(49, "CALLDROPPED", "The call dropped prematurely", Retry, 128),
    row(50, "NOPOLL", "Poll not accepted", Failed, 220),
    row(51, "IDENT_UNACCEPTABLE", "Ident not accepted", Failed, 0),
    row(52, "SUB_UNACCEPTABLE", "Sub-address not accepted", Failed, 0),
    row(53, "SEP_UNACCEPTABLE", "Selective polling address not accepted", Failed, 0),
    row(54, "PSA_UNACCEPTABLE", "Polled sub-address not accepted", Failed, 0),
    row(55, "SID_UNACCEPTABLE", "Sender identification not accepted", Failed, 0),
    row(56, "PWD_UNACCEPTABLE", "Password not accepted", Failed, 0),
    row(57, "TSA_UNACCEPTABLE", "Transmitting subscriber internet address not accepted", Failed, 0),
    row(58, "IRA_UNACCEPTABLE", "Internet routing address not accepted", Failed, 0),
    row(59, "CIA_UNACCEPTABLE", "Calling subscriber internet address not accepted", Failed, 0),
    row(60, "ISP_UNACCEPTABLE", "Internet selective polling address not accepted", Failed, 0),
    row(61, "CSA_UNACCEPTABLE", "Called subscriber internet address not accepted", Failed, 0),
];

/// spandsp's T.30 code `T30_ERR_OK`.
pub const T30_OK: u32 = 0;
/// spandsp's T.30 code `T30_ERR_CALLDROPPED`.
pub const T30_CALLDROPPED: u32 = 49;

/// The table row for a spandsp completion code, if spandsp defines it.
pub fn t30_code(code: u32) -> Option<&'static T30Code> {
    T30_CODES.get(usize::try_from(code).ok()?)
}

/// Gateway-side causes after which fsfaxsend tries the next gateway (its own failover: one
/// `originate` per gateway with a fresh UUID, since FreeSWITCH's `|` failover reuses the UUID
/// and fails with `DESTINATION_OUT_OF_ORDER`).
///
/// Included: the gateway or the network behind it failed, so another route may work.
/// Excluded on purpose: answers about the *destination* that every gateway would repeat
/// (`USER_BUSY`, `NO_ANSWER`, `NO_USER_RESPONSE`, `CALL_REJECTED`, `UNALLOCATED_NUMBER`,
/// `NO_ROUTE_DESTINATION`, `INVALID_NUMBER_FORMAT`, `NORMAL_CLEARING`), and
/// `INCOMPATIBLE_DESTINATION` (media refusal, usually the far end's). Failover is for originate
/// failures only; a call that was answered never fails over.
pub const DEFAULT_FAILOVER_CAUSES: &[&str] = &[
    "GATEWAY_DOWN",
    "INVALID_GATEWAY",
    "NORMAL_TEMPORARY_FAILURE",
    "DESTINATION_OUT_OF_ORDER",
    "NETWORK_OUT_OF_ORDER",
    "RECOVERY_ON_TIMER_EXPIRE",
    "SERVICE_UNAVAILABLE",
    "NO_ROUTE_TRANSIT_NET",
    "EXCHANGE_ROUTING_ERROR",
    "NORMAL_CIRCUIT_CONGESTION",
    "SWITCH_CONGESTION",
    "REQUESTED_CHAN_UNAVAIL",
];

/// True when an `originate` that failed with `cause` should be retried on the next gateway.
/// `cause` may still carry the `-ERR ` prefix; matching is case-insensitive.
pub fn should_fail_over(cause: &str, failover_causes: &[String]) -> bool {
    let cause = normalize_cause(cause);
    !cause.is_empty()
        && failover_causes
            .iter()
            .any(|c| c.trim().eq_ignore_ascii_case(&cause))
}

/// [`DEFAULT_FAILOVER_CAUSES`] as owned strings, for configs that do not set their own list.
pub fn default_failover_causes() -> Vec<String> {
    DEFAULT_FAILOVER_CAUSES
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// A FreeSWITCH cause as written in configs: `-ERR USER_BUSY\n` → `USER_BUSY`.
pub fn normalize_cause(cause: &str) -> String {
    let c = cause.trim();
    let c = c.strip_prefix("-ERR").unwrap_or(c).trim();
    c.to_ascii_uppercase()
}

/// Trouble on our own side, never the remote's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalError {
    /// Could not connect or authenticate to FreeSWITCH's event socket.
    FreeswitchUnreachable,
    /// The event socket dropped mid-job.
    EslDropped,
    /// FreeSWITCH did not answer a command in time.
    Timeout,
    /// DynamicConfig (or another helper script) failed.
    ScriptFailed,
    /// A signal stopped the job (SIGTERM on shutdown): retry rather than fail (weakness §1.7).
    Interrupted,
    /// Anything else on our side (spool I/O, TIFF preparation...).
    Internal,
}

impl LocalError {
    fn prefix(self) -> &'static str {
        match self {
            LocalError::FreeswitchUnreachable => "Cannot reach FreeSWITCH",
            LocalError::EslDropped => "Lost the connection to FreeSWITCH",
            LocalError::Timeout => "FreeSWITCH did not answer in time",
            LocalError::ScriptFailed => "DynamicConfig failed",
            LocalError::Interrupted => "Interrupted",
            LocalError::Internal => "Internal error",
        }
    }
}

/// How a send attempt ended, as the caller saw it. Classify with [`FaxOutcome::classify`].
#[derive(Debug, Clone, Copy)]
pub enum FaxOutcome<'a> {
    /// `originate` failed before answer (`-ERR <CAUSE>`). Pass the cause of the last gateway
    /// tried.
    OriginateFailed {
        /// FreeSWITCH's cause, e.g. `USER_BUSY` (a `-ERR ` prefix is tolerated).
        cause: &'a str,
    },
    /// The call was up; `result` holds what the events said (possibly no final result).
    Connected {
        /// The accumulated events of the call.
        result: &'a FaxResult,
    },
    /// Our own side failed; `dial_attempted` says whether an originate had already been sent.
    Local {
        /// Which kind of trouble.
        error: LocalError,
        /// Detail for the status text (an error message naming the peer or file).
        detail: &'a str,
        /// True when an `originate` was already sent for this attempt.
        dial_attempted: bool,
    },
    /// The job can never be sent as it is (bad number, no gateway, DynamicConfig reject).
    Rejected {
        /// Why, for the status text.
        reason: &'a str,
    },
}

/// HylaFAX's `E006 Unknown problem`: the statuscode of a failure no nearer code fits.
/// faxsend never leaves 0 (`E000 Call successful`) on a failed attempt, and neither do we.
pub const UNKNOWN_PROBLEM: u16 = 6;

impl FaxOutcome<'_> {
    /// The verdict. `failed_causes` is the configured `failedresponse` list (case-insensitive).
    /// A verdict other than done never has statuscode 0 (see [`UNKNOWN_PROBLEM`]).
    pub fn classify(&self, failed_causes: &[String]) -> JobResult {
        let mut verdict = self.classify_raw(failed_causes);
        if verdict.disposition != Done && verdict.statuscode == 0 {
            verdict.statuscode = UNKNOWN_PROBLEM;
        }
        verdict
    }

    fn classify_raw(&self, failed_causes: &[String]) -> JobResult {
        match *self {
            FaxOutcome::OriginateFailed { cause } => classify_originate(cause, failed_causes),
            FaxOutcome::Connected { result } => classify_connected(result, failed_causes),
            FaxOutcome::Local {
                error,
                detail,
                dial_attempted,
            } => JobResult {
                disposition: Retry,
                status: join_status(error.prefix(), detail),
                statuscode: 0,
                counts_as_dial: dial_attempted,
                counts_as_try: false,
            },
            FaxOutcome::Rejected { reason } => JobResult {
                disposition: Failed,
                status: one_line(reason),
                statuscode: 0,
                counts_as_dial: false,
                counts_as_try: false,
            },
        }
    }
}

fn is_failed_cause(cause: &str, failed_causes: &[String]) -> bool {
    !cause.is_empty()
        && failed_causes
            .iter()
            .any(|c| c.trim().eq_ignore_ascii_case(cause))
}

/// (status text, statuscode) for an originate cause; `None` text means "the cause itself".
fn cause_info(cause: &str) -> (Option<&'static str>, u16) {
    match cause {
        "USER_BUSY" => (Some("Busy signal detected"), 1),
        "NO_ANSWER" | "NO_USER_RESPONSE" | "ALLOTTED_TIMEOUT" | "PROGRESS_TIMEOUT" => {
            (Some("No answer from remote"), 3)
        }
        "GATEWAY_DOWN" | "INVALID_GATEWAY" => (None, 4),
        _ => (None, 0),
    }
}

fn classify_originate(raw_cause: &str, failed_causes: &[String]) -> JobResult {
    let cause = normalize_cause(raw_cause);
    let (text, statuscode) = cause_info(&cause);
    let (disposition, status) = if is_failed_cause(&cause, failed_causes) {
        (Failed, format!("{cause} (retry disabled)"))
    } else if cause.is_empty() {
        (Retry, "Call failed (FreeSWITCH gave no cause)".to_owned())
    } else {
        (Retry, text.map_or_else(|| cause.clone(), str::to_owned))
    };
    JobResult {
        disposition,
        status: one_line(&status),
        statuscode,
        counts_as_dial: true,
        counts_as_try: false,
    }
}

fn classify_connected(r: &FaxResult, failed_causes: &[String]) -> JobResult {
    let counts_as_try = r.negotiation_count > 0 || r.transferred_pages > 0;
    let done = |status: String| JobResult {
        disposition: Done,
        status,
        statuscode: 0,
        counts_as_dial: true,
        counts_as_try,
    };
    let final_seen = r.final_result.is_some();
    if r.success() || r.result_code() == Some(T30_OK) {
        return done(String::new());
    }
    let row = r.result_code().and_then(t30_code);
    let text = r
        .result_text()
        .map(str::to_owned)
        .or_else(|| row.map(|c| c.text.to_owned()));
    if r.direction() == Direction::Send
        && final_seen
        && r.total_pages > 0
        && r.transferred_pages >= r.total_pages
    {
        let tail = text.as_deref().unwrap_or("no result text");
        return done(one_line(&format!(
            "All {} pages sent; call then ended: {tail}",
            r.total_pages
        )));
    }
    let cause = r.hangup_cause().map(normalize_cause);
    let statuscode = row.map_or(0, |c| c.statuscode);
    let (disposition, status) = match (&cause, final_seen) {
        (Some(c), _) if is_failed_cause(c, failed_causes) => {
            (Failed, format!("{c} (retry disabled)"))
        }
        (_, true) => match (row, &text, r.result_code()) {
            (Some(row), Some(t), _) => (row.disposition, t.clone()),
            (None, Some(t), _) => (Retry, t.clone()),
            (_, None, Some(code)) => (Retry, format!("Unknown fax result code {code}")),
            _ => (Retry, "Fax failed without a result code".to_owned()),
        },
        // Gone before spandsp said anything: the switch named, not only its cause.
        (Some(c), false) if c == "SYSTEM_SHUTDOWN" => (
            Retry,
            format!("Call ended without a fax result (FreeSWITCH shut down: {c})"),
        ),
        (Some(c), false) => (Retry, format!("Call ended without a fax result ({c})")),
        (None, false) => (Retry, "Call ended without a fax result".to_owned()),
    };
    // The switch itself went away: spandsp only says the call dropped, which points at the
    // remote; name the switch.
    let status = match cause.as_deref() {
        Some("SYSTEM_SHUTDOWN") if final_seen => {
            format!("{status} (FreeSWITCH shut down: SYSTEM_SHUTDOWN)")
        }
        _ => status,
    };
    JobResult {
        disposition,
        status: one_line(&status),
        statuscode,
        counts_as_dial: true,
        counts_as_try,
    }
}

fn join_status(prefix: &str, detail: &str) -> String {
    let detail = one_line(detail);
    if detail.is_empty() {
        prefix.to_owned()
    } else {
        format!("{prefix}: {detail}")
    }
}

/// Status texts go into a line-oriented qfile: no control characters, bounded length.
fn one_line(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = cleaned.trim();
    const MAX: usize = 200;
    match trimmed.char_indices().nth(MAX) {
        Some((cut, _)) => trimmed[..cut].to_owned(),
        None => trimmed.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fax::capture::load;
    use crate::fax::{FinalResult, Hangup};

    fn replay(name: &str, direction: Direction) -> FaxResult {
        let cap = load(name);
        let mut r = FaxResult::for_channel(direction, cap.call_uuid().unwrap());
        for ev in &cap.events {
            r.apply(ev);
        }
        r
    }

    fn failed(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn table_is_indexed_by_code_and_matches_doc() {
        for (i, row) in T30_CODES.iter().enumerate() {
            assert_eq!(row.code as usize, i, "row {} out of place", row.name);
        }
        assert_eq!(T30_CODES.len(), 62);
        assert_eq!(t30_code(49).unwrap().name, "CALLDROPPED");
        assert_eq!(t30_code(62), None);
        assert_eq!(t30_code(u32::MAX), None);
        // The doc-comment table above is what README copies: it must agree with the code.
        let src = include_str!("outcome.rs");
        let mut seen = 0;
        for line in src.lines() {
            let Some(rest) = line.strip_prefix("//! | ") else {
                continue;
            };
            let cells: Vec<&str> = rest.split(" | ").map(str::trim).collect();
            let Ok(code) = cells[0].parse::<u32>() else {
                continue;
            };
            let row = t30_code(code).unwrap();
            assert_eq!(cells[1], row.name, "doc name for {code}");
            assert_eq!(
                cells[2],
                format!("{:?}", row.disposition),
                "doc disposition for {code}"
            );
            assert_eq!(
                cells[3],
                row.statuscode.to_string(),
                "doc statuscode for {code}"
            );
            seen += 1;
        }
        assert_eq!(seen, T30_CODES.len(), "every code documented once");
    }

    #[test]
    fn real_captures_classify() {
        let none: Vec<String> = Vec::new();
        let ok = replay("inbound-txfax-t38-ok", Direction::Send);
        let j = FaxOutcome::Connected { result: &ok }.classify(&none);
        assert_eq!(j.disposition, Done);
        assert_eq!(j.disposition.returned(), 2);
        assert_eq!(j.status, "");
        assert!(j.counts_as_dial && j.counts_as_try);

        let dropped = replay("inbound-txfax-t38-remote-hangup-midfax", Direction::Send);
        let j = FaxOutcome::Connected { result: &dropped }.classify(&none);
        assert_eq!(j.disposition, Retry);
        assert_eq!(j.status, "The call dropped prematurely");
        assert_eq!(j.statuscode, 128);
        assert!(j.counts_as_try, "negotiation happened");

        // failedresponse also applies after answer (GOfax.IP only checked originate).
        let j = FaxOutcome::Connected { result: &dropped }.classify(&failed(&["normal_clearing"]));
        assert_eq!(j.disposition, Failed);
        assert_eq!(j.status, "NORMAL_CLEARING (retry disabled)");

        let missing = replay("inbound-txfax-file-missing", Direction::Send);
        let j = FaxOutcome::Connected { result: &missing }.classify(&none);
        assert_eq!(j.disposition, Retry);
        assert_eq!(
            j.status,
            "Call ended without a fax result (NORMAL_CLEARING)"
        );
        assert!(!j.counts_as_try);
    }

    #[test]
    fn all_pages_confirmed_is_done_even_if_the_call_then_failed() {
        let mut r = FaxResult::new(Direction::Send);
        r.final_result = Some(FinalResult::with_code(T30_CALLDROPPED));
        r.transferred_pages = 3;
        r.total_pages = 3;
        let j = FaxOutcome::Connected { result: &r }.classify(&[]);
        assert_eq!(j.disposition, Done);
        assert!(j.status.contains("All 3 pages sent"), "{}", j.status);
        assert!(j.status.contains("The call dropped prematurely"));
        // Not for a receive, and not when a page is missing.
        let mut rx = FaxResult::new(Direction::Receive);
        rx.final_result = Some(FinalResult::with_code(T30_CALLDROPPED));
        (rx.transferred_pages, rx.total_pages) = (3, 3);
        assert_eq!(
            FaxOutcome::Connected { result: &rx }
                .classify(&[])
                .disposition,
            Retry
        );
        r.transferred_pages = 2;
        assert_eq!(
            FaxOutcome::Connected { result: &r }
                .classify(&[])
                .disposition,
            Retry
        );
    }

    #[test]
    fn document_and_capability_errors_fail() {
        for (code, want) in [
            (41, Failed),
            (43, Failed),
            (46, Failed),
            (9, Failed),
            (8, Failed),
            (6, Retry),
            (48, Retry),
            (47, Retry),
            (99, Retry),
        ] {
            let mut r = FaxResult::new(Direction::Send);
            r.final_result = Some(FinalResult::with_code(code));
            r.negotiation_count = 1;
            let j = FaxOutcome::Connected { result: &r }.classify(&[]);
            assert_eq!(j.disposition, want, "code {code}");
            if let Some(row) = t30_code(code) {
                assert_eq!(
                    j.status, row.text,
                    "table text used when the event has none"
                );
            } else {
                assert_eq!(j.status, format!("Unknown fax result code {code}"));
            }
        }
    }

    #[test]
    fn originate_failures() {
        let list = failed(&["UNALLOCATED_NUMBER", "CALL_REJECTED"]);
        let busy = FaxOutcome::OriginateFailed {
            cause: "-ERR USER_BUSY\n",
        }
        .classify(&list);
        assert_eq!(
            (busy.disposition, busy.status.as_str(), busy.statuscode),
            (Retry, "Busy signal detected", 1)
        );
        assert!(busy.counts_as_dial && !busy.counts_as_try);

        let na = FaxOutcome::OriginateFailed {
            cause: "NO_USER_RESPONSE",
        }
        .classify(&list);
        assert_eq!(
            (na.status.as_str(), na.statuscode),
            ("No answer from remote", 3)
        );

        let rej = FaxOutcome::OriginateFailed {
            cause: "call_rejected",
        }
        .classify(&list);
        assert_eq!(rej.disposition, Failed);
        assert_eq!(rej.disposition.returned(), 1);
        assert_eq!(rej.status, "CALL_REJECTED (retry disabled)");

        let other = FaxOutcome::OriginateFailed {
            cause: "NORMAL_TEMPORARY_FAILURE",
        }
        .classify(&list);
        assert_eq!(
            (other.disposition, other.status.as_str()),
            (Retry, "NORMAL_TEMPORARY_FAILURE")
        );
        assert_eq!(other.disposition.returned(), 0);

        let empty = FaxOutcome::OriginateFailed { cause: " " }.classify(&list);
        assert_eq!(empty.disposition, Retry);
        assert!(!empty.status.is_empty());
    }

    /// Issue 12, item 9: statuscode 0 is HylaFAX's "Call successful"; no failure carries it.
    #[test]
    fn no_failure_has_statuscode_zero() {
        let failed = vec!["CALL_REJECTED".to_owned()];
        let mut verdicts = vec![
            FaxOutcome::OriginateFailed {
                cause: "CALL_REJECTED",
            }
            .classify(&failed),
            FaxOutcome::OriginateFailed {
                cause: "NORMAL_TEMPORARY_FAILURE",
            }
            .classify(&[]),
            FaxOutcome::OriginateFailed { cause: "" }.classify(&[]),
            FaxOutcome::Rejected {
                reason: "RejectCall",
            }
            .classify(&[]),
        ];
        for error in [
            LocalError::FreeswitchUnreachable,
            LocalError::EslDropped,
            LocalError::Timeout,
            LocalError::ScriptFailed,
            LocalError::Interrupted,
            LocalError::Internal,
        ] {
            verdicts.push(
                FaxOutcome::Local {
                    error,
                    detail: "",
                    dial_attempted: true,
                }
                .classify(&[]),
            );
        }
        for code in 1..=70 {
            let mut r = FaxResult::new(Direction::Send);
            r.apply(&crate::fax::SimpleHeaders::from_pairs([
                ("Event-Name", "CUSTOM"),
                ("Event-Subclass", "spandsp::txfaxresult"),
                ("fax-success", "0"),
                ("fax-result-code", &code.to_string()),
            ]));
            verdicts.push(FaxOutcome::Connected { result: &r }.classify(&[]));
        }
        let none = FaxResult::new(Direction::Send);
        verdicts.push(FaxOutcome::Connected { result: &none }.classify(&[]));
        for v in &verdicts {
            assert_ne!(v.disposition, Done, "{v:?}");
            assert_ne!(v.statuscode, 0, "{v:?}");
        }
        let busy = FaxOutcome::OriginateFailed { cause: "USER_BUSY" }.classify(&[]);
        assert_eq!(busy.statuscode, 1, "specific codes stay");
    }

    /// Issue 12, item 10: a FreeSWITCH that shut down is named in the job's status.
    #[test]
    fn system_shutdown_is_named() {
        let mut r = FaxResult::new(Direction::Send);
        r.apply(&crate::fax::SimpleHeaders::from_pairs([
            ("Event-Name", "CUSTOM"),
            ("Event-Subclass", "spandsp::txfaxresult"),
            ("fax-success", "0"),
            ("fax-result-code", "49"),
            ("fax-result-text", "The call dropped prematurely"),
        ]));
        r.hangup = Some(Hangup {
            cause: Some("SYSTEM_SHUTDOWN".into()),
            at_us: None,
        });
        let j = FaxOutcome::Connected { result: &r }.classify(&[]);
        assert_eq!(j.disposition, Retry);
        assert_eq!(
            j.status,
            "The call dropped prematurely (FreeSWITCH shut down: SYSTEM_SHUTDOWN)"
        );
    }

    /// Issue 12, item 10: also when the switch went before any fax result.
    #[test]
    fn system_shutdown_without_a_result_is_named() {
        let mut r = FaxResult::new(Direction::Send);
        r.hangup = Some(Hangup {
            cause: Some("SYSTEM_SHUTDOWN".into()),
            at_us: None,
        });
        let j = FaxOutcome::Connected { result: &r }.classify(&[]);
        assert_eq!(j.disposition, Retry);
        assert_eq!(
            j.status,
            "Call ended without a fax result (FreeSWITCH shut down: SYSTEM_SHUTDOWN)"
        );
    }

    #[test]
    fn local_and_rejected() {
        let j = FaxOutcome::Local {
            error: LocalError::EslDropped,
            detail: "127.0.0.1:8021: reset\r\nby peer",
            dial_attempted: true,
        }
        .classify(&[]);
        assert_eq!(j.disposition, Retry);
        assert_eq!(
            j.status,
            "Lost the connection to FreeSWITCH: 127.0.0.1:8021: reset  by peer"
        );
        assert!(j.counts_as_dial);
        let j = FaxOutcome::Local {
            error: LocalError::Interrupted,
            detail: "",
            dial_attempted: false,
        }
        .classify(&[]);
        assert_eq!(
            (j.disposition, j.status.as_str(), j.counts_as_dial),
            (Retry, "Interrupted", false)
        );
        let j = FaxOutcome::Rejected {
            reason: "Number to dial is empty",
        }
        .classify(&[]);
        assert_eq!((j.disposition, j.counts_as_dial), (Failed, false));
        let long = "x".repeat(1000);
        assert_eq!(
            FaxOutcome::Rejected { reason: &long }
                .classify(&[])
                .status
                .len(),
            200
        );
    }

    #[test]
    fn failover_decision() {
        let defaults = default_failover_causes();
        for c in [
            "GATEWAY_DOWN",
            "-ERR NORMAL_TEMPORARY_FAILURE",
            "destination_out_of_order",
        ] {
            assert!(should_fail_over(c, &defaults), "{c}");
        }
        for c in [
            "USER_BUSY",
            "UNALLOCATED_NUMBER",
            "CALL_REJECTED",
            "NO_ANSWER",
            "NORMAL_CLEARING",
            "",
        ] {
            assert!(!should_fail_over(c, &defaults), "{c}");
        }
        assert!(!should_fail_over("GATEWAY_DOWN", &[]));
    }
}
