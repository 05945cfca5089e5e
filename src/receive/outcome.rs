//! How the call part of a reception ended, and the words xferfaxlog and faxrcvd get for it.

use std::time::Duration;

use crate::fax::FaxResult;

/// How the call part of a reception ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum End {
    /// The fax result and the hangup were both seen.
    Complete,
    /// The channel hung up before rxfax started.
    HungUpBeforeFax,
    /// The socket closed before the fax result came.
    ConnectionLost(String),
    /// The channel hung up and no fax result followed.
    NoResult,
    /// `maxcallduration` passed; we hung up.
    MaxDuration,
    /// fsfaxd is shutting down; we hung up. The journal entry stays for the next start.
    Shutdown,
    /// A local error ended the call before rxfax.
    Failed(String),
}

/// Why the reception is not a clean success (`None` when spandsp said OK).
pub(super) fn failure(r: &FaxResult, end: &End, max: Duration) -> Option<String> {
    if let Some(fin) = &r.final_result {
        if fin.success {
            return None;
        }
        return Some(match (&fin.text, fin.code) {
            (Some(t), _) if !t.trim().is_empty() => t.trim().to_owned(),
            (_, Some(code)) => format!("fax failed (spandsp code {code})"),
            _ => "fax failed".to_owned(),
        });
    }
    let cause = r.hangup_cause().unwrap_or("unknown cause");
    Some(match end {
        End::HungUpBeforeFax => format!("caller hung up before the fax started ({cause})"),
        End::ConnectionLost(why) if why.is_empty() => {
            "no fax result from FreeSWITCH (connection lost)".to_owned()
        }
        End::ConnectionLost(why) => {
            format!("no fax result from FreeSWITCH (connection lost: {why})")
        }
        End::NoResult | End::Complete => {
            format!("no fax result from FreeSWITCH after the hangup ({cause})")
        }
        End::MaxDuration => format!(
            "reception exceeded maxcallduration ({}); hung up",
            crate::config::format_duration(max)
        ),
        End::Shutdown => "fsfaxd shut down during the reception".to_owned(),
        End::Failed(why) => why.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fax::{Direction, SimpleHeaders};

    fn final_result(success: bool, code: &str, text: &str) -> FaxResult {
        let mut r = FaxResult::new(Direction::Receive);
        r.apply(&SimpleHeaders::from_pairs([
            ("Event-Name", "CUSTOM"),
            ("Event-Subclass", "spandsp::rxfaxresult"),
            ("fax-success", if success { "1" } else { "0" }),
            ("fax-result-code", code),
            ("fax-result-text", text),
        ]));
        r
    }

    #[test]
    fn failure_texts_are_never_empty_for_a_failed_call() {
        let max = Duration::from_secs(3600);
        assert_eq!(
            failure(&final_result(true, "0", "OK"), &End::Complete, max),
            None
        );
        assert_eq!(
            failure(
                &final_result(false, "49", "The call dropped prematurely"),
                &End::Complete,
                max
            )
            .as_deref(),
            Some("The call dropped prematurely")
        );
        assert_eq!(
            failure(&final_result(false, "49", ""), &End::Complete, max).as_deref(),
            Some("fax failed (spandsp code 49)")
        );
        let none = FaxResult::new(Direction::Receive);
        for end in [
            End::HungUpBeforeFax,
            End::ConnectionLost(String::new()),
            End::ConnectionLost("peer closed".into()),
            End::NoResult,
            End::MaxDuration,
            End::Failed("disk full".into()),
        ] {
            let text = failure(&none, &end, max).unwrap_or_default();
            assert!(!text.is_empty(), "{end:?}");
        }
        assert_eq!(
            failure(&none, &End::ConnectionLost(String::new()), max).as_deref(),
            Some("no fax result from FreeSWITCH (connection lost)")
        );
    }
}
