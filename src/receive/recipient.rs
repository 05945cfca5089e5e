//! Who the fax is for: the called number from the SIP headers FreeSWITCH hands over.
//!
//! GOfax.IP read only `Diversion`, only `sip:<digits>@`, and rejected the call with 404 when
//! that failed (a `+`, a `tel:` URI or a missing header lost the fax). Here every configured
//! header is tried in order and the first one holding a number wins; when none does, the `To`
//! user is used and the call is received anyway.

use crate::config::{GofaxdSection, RecipientHeader};

/// Where the recipient came from, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The number (digits, optionally with a leading `+`), or the raw `To` user.
    pub number: String,
    /// The header it was found in; `None` when it is the `To` user taken as a fallback.
    pub source: Option<RecipientHeader>,
}

/// The channel variable FreeSWITCH sets for each header.
fn variable(header: RecipientHeader) -> &'static str {
    match header {
        RecipientHeader::Diversion => "variable_sip_h_Diversion",
        RecipientHeader::HistoryInfo => "variable_sip_h_History-Info",
        RecipientHeader::PCalledPartyId => "variable_sip_h_P-Called-Party-ID",
        RecipientHeader::To => "variable_sip_to_user",
    }
}

/// Picks the recipient. `get` looks up a channel variable of the connect reply.
pub fn recipient<'a>(cfg: &GofaxdSection, get: impl Fn(&str) -> Option<&'a str>) -> Recipient {
    let to_user = get(variable(RecipientHeader::To)).unwrap_or_default();
    if !cfg.recipient_from_diversion_header {
        return Recipient {
            number: to_user.to_owned(),
            source: Some(RecipientHeader::To),
        };
    }
    for &header in &cfg.recipient_headers {
        if let Some(number) = get(variable(header)).and_then(number_in) {
            return Recipient {
                number,
                source: Some(header),
            };
        }
    }
    Recipient {
        number: to_user.to_owned(),
        source: None,
    }
}

/// The number of the first entry of a header value: the user part of a `sip:`/`sips:` URI,
/// a `tel:` URI, or the whole value when it is a bare number. Visual separators ` -.()` are
/// dropped; what is left must be digits with an optional leading `+`.
///
/// For `Diversion` the first entry is the last diverting party, for `History-Info` the
/// original request: in both cases the number the caller dialled into our system.
pub fn number_in(value: &str) -> Option<String> {
    let first = value.split(',').next().unwrap_or_default().trim();
    let lower = first.to_ascii_lowercase();
    let user = ["sip:", "sips:", "tel:"]
        .iter()
        .filter_map(|scheme| lower.find(scheme).map(|at| at + scheme.len()))
        .min()
        .map(|start| {
            let rest = &first[start..];
            let end = rest.find(['@', ';', '>', '?']).unwrap_or(rest.len());
            &rest[..end]
        })
        .unwrap_or(first);
    let cleaned: String = user
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = cleaned.strip_prefix('+').unwrap_or(&cleaned);
    (!digits.is_empty() && digits.len() <= 32 && digits.chars().all(|c| c.is_ascii_digit()))
        .then_some(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn numbers_from_header_values() {
        let cases = [
            (
                "<sip:4930123@pbx.example>;reason=unconditional",
                Some("4930123"),
            ),
            ("<sip:+4930123@pbx>;reason=user-busy", Some("+4930123")),
            ("<tel:+49-30-123>;reason=unconditional", Some("+4930123")),
            ("\"Office\" <sips:555@h;user=phone>", Some("555")),
            ("<sip:111@a>;index=1,<sip:222@b>;index=1.1", Some("111")),
            ("+4930123", Some("+4930123")),
            ("<sip:office@pbx>", None),
            ("<sip:@pbx>", None),
            ("", None),
            ("garbage", None),
        ];
        for (value, want) in cases {
            assert_eq!(number_in(value).as_deref(), want, "{value:?}");
        }
    }

    fn pick(cfg: &GofaxdSection, vars: &[(&str, &str)]) -> Recipient {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        recipient(cfg, |k| map.get(k).copied())
    }

    #[test]
    fn to_user_unless_configured_otherwise() {
        let cfg = GofaxdSection::default();
        let r = pick(
            &cfg,
            &[
                ("variable_sip_to_user", "5000"),
                ("variable_sip_h_Diversion", "<sip:1234@x>"),
            ],
        );
        assert_eq!(r.number, "5000");
        assert_eq!(r.source, Some(RecipientHeader::To));
    }

    #[test]
    fn headers_tried_in_order_then_to_user() {
        let cfg = GofaxdSection {
            recipient_from_diversion_header: true,
            ..GofaxdSection::default()
        };
        let r = pick(
            &cfg,
            &[
                ("variable_sip_to_user", "5000"),
                ("variable_sip_h_Diversion", "<sip:anonymous@x>"),
                ("variable_sip_h_History-Info", "<sip:+4940777@x>;index=1"),
            ],
        );
        assert_eq!(r.number, "+4940777");
        assert_eq!(r.source, Some(RecipientHeader::HistoryInfo));
        let r = pick(&cfg, &[("variable_sip_to_user", "fax")]);
        assert_eq!(r.number, "fax");
        assert_eq!(
            r.source, None,
            "no header had a number: To user as fallback"
        );
        let only_pcpi = GofaxdSection {
            recipient_headers: vec![RecipientHeader::PCalledPartyId],
            ..cfg
        };
        let r = pick(
            &only_pcpi,
            &[
                ("variable_sip_to_user", "5000"),
                ("variable_sip_h_Diversion", "<sip:1234@x>"),
                ("variable_sip_h_P-Called-Party-ID", "<tel:777>"),
            ],
        );
        assert_eq!(r.number, "777");
    }
}
