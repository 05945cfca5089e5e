//! Safe `originate` commands for ONE gateway leg, and checks for `db` API tokens.
//!
//! fsfaxsend does its own gateway failover: one `originate` per gateway, each with a fresh UUID
//! (FreeSWITCH's `gw1|gw2` reuses the UUID and fails with `DESTINATION_OUT_OF_ORDER`, see the
//! `inbound-originate-failover-*` captures). So a request here names exactly one gateway.
//!
//! # How FreeSWITCH reads `[bg]api originate <args>` (why the rules below are what they are)
//! 1. The ESL command is one line: CR or LF would end it and start a new command.
//! 2. mod_commands splits `<args>` at spaces (`switch_separate_string(.., ' ', ..)`): single
//!    quotes protect spaces, `\` escapes the next character, and each token is then *cleaned*:
//!    matched single quotes are **removed**, `\x` escapes resolved, outer spaces trimmed.
//! 3. `switch_ivr_originate` parses the `{...}` block (`switch_event_create_brackets`): it ends
//!    at the first matching `}`, is split at `,` (or at `<c>` if it starts with `^^<c>`) and each
//!    item at its first `=`. The quotes were already removed in step 2, so **quoting does not
//!    protect a `,` here**: a comma inside a value would start a new variable.
//! 4. The rest is split into legs at `|` and `,`; `[..]` and `<..>` add per-leg variables.
//! 5. `&txfax(<arg>)`: the argument ends at the first `)`; `${..}` in it is expanded.
//!
//! So every value is quoted `name='value'` (keeps spaces in caller-ID names intact, as the
//! captures show for `fax_ident='+1 337'`), **and** no value may contain any of
//! `, ' " \ { } [ ] | < > ^ $` or control characters. Each variable has its own rule:
//!
//! | variable | rule |
//! |---|---|
//! | `origination_uuid` | a [`Uuid`], never overridable |
//! | booleans (`fax_use_ecm`, ...) | `true` / `false` |
//! | `origination_caller_id_number` | `[A-Za-z0-9+*#._-]`, 1-64 characters, else an error |
//! | `origination_caller_id_name` | sanitised: letters, digits, space and `.-_+@#*/()` kept, everything else dropped, trimmed, at most 64 characters |
//! | `fax_ident`, `fax_header` | percent-encoded except `[A-Za-z0-9+-._]`; mod_spandsp (1.10) runs `switch_url_decode` on both before handing them to spandsp, so `%2C` arrives as `,`; truncated to spandsp's limits (20 / 50 bytes), since spandsp ignores longer ones |
//! | `fax_start_page`, `fax_end_page` | 0-based TIFF directory indexes (spandsp's `t4_tx_init` takes them as such; HylaFAX's `fax:<dir>:` is the same index), end ≥ start |
//!
//! Numbers: the separators ` -.()` that HylaFAX clients leave in `external` are removed, then
//! only digits, `*`, `#` and one leading `+` may remain. Gateways: `[A-Za-z0-9_.-]+`. The fax
//! path: absolute, UTF-8, without whitespace, control characters or `' " \ ( ) $`.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::path::PathBuf;
use thiserror::Error;
use tracing::warn;
use uuid::Uuid;

/// Why an originate could not be built. Messages name the offending value (Debug-quoted, so
/// control characters stay visible in logs).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DialError {
    /// The number is empty after removing separators.
    #[error("number to dial {number:?} is empty")]
    EmptyNumber {
        /// The number as given.
        number: String,
    },
    /// The number holds a character FreeSWITCH must not see.
    #[error(
        "number to dial {number:?} contains {bad:?}: only digits, '*', '#' and one leading '+' are allowed"
    )]
    InvalidNumber {
        /// The number as given.
        number: String,
        /// The first offending character.
        bad: char,
    },
    /// The number is longer than any real dial string.
    #[error("number to dial {number:?} is too long (at most {max} characters)")]
    NumberTooLong {
        /// The number as given.
        number: String,
        /// The limit.
        max: usize,
    },
    /// The gateway name is not a plain sofia gateway name.
    #[error(
        "gateway name {gateway:?} is invalid: only letters, digits, '_', '.' and '-' are allowed"
    )]
    InvalidGateway {
        /// The gateway as given.
        gateway: String,
    },
    /// The fax file path cannot be passed to `txfax` safely.
    #[error("fax file {path:?} cannot be handed to txfax: {reason}")]
    InvalidPath {
        /// The path as given (lossy UTF-8).
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A channel variable value breaks its rule.
    #[error("channel variable {name} cannot be set to {value:?}: {reason}")]
    InvalidValue {
        /// The variable name.
        name: String,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A per-destination override names a variable outside the allow-list.
    #[error("channel variable {name:?} may not be overridden per destination")]
    OverrideNotAllowed {
        /// The variable name as given.
        name: String,
    },
    /// `fax_start_page`/`fax_end_page` make no sense.
    #[error(
        "page range start {start:?} end {end:?} is invalid (0-based TIFF directories, end >= start)"
    )]
    InvalidPageRange {
        /// First page to send.
        start: Option<u32>,
        /// Last page to send.
        end: Option<u32>,
    },
}

/// Variables a per-destination `override-<number>` row (mod_db) may set: the fax parameters
/// and the caller ID. Never `origination_uuid` (it would break our event filter, weakness §4.3),
/// never the page range (per job, not per destination).
pub const OVERRIDABLE_VARIABLES: &[&str] = &[
    "origination_caller_id_number",
    "origination_caller_id_name",
    "fax_ident",
    "fax_header",
    "fax_use_ecm",
    "fax_disable_v17",
    "fax_enable_t38",
    "fax_enable_t38_request",
    "fax_verbose",
];

/// True when a per-destination override may set channel variable `name` (exact, lower case).
pub fn allowed_override(name: &str) -> bool {
    OVERRIDABLE_VARIABLES.contains(&name)
}

/// The channel variables of one fax call, besides `origination_uuid` and the page range (those
/// live in [`OriginateRequest`]). `None` leaves FreeSWITCH's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelVars {
    /// `ignore_early_media` (default true: do not start the fax on 183 early media).
    pub ignore_early_media: bool,
    /// `origination_caller_id_number`.
    pub caller_id_number: Option<String>,
    /// `origination_caller_id_name` (raw; sanitised when the command is built).
    pub caller_id_name: Option<String>,
    /// `fax_ident`, the TSI (raw; percent-encoded when the command is built).
    pub fax_ident: Option<String>,
    /// `fax_header`, the page header text (raw; percent-encoded when built).
    pub fax_header: Option<String>,
    /// `fax_use_ecm`.
    pub use_ecm: Option<bool>,
    /// `fax_disable_v17`.
    pub disable_v17: Option<bool>,
    /// `fax_enable_t38`.
    pub enable_t38: Option<bool>,
    /// `fax_enable_t38_request`.
    pub enable_t38_request: Option<bool>,
    /// `fax_verbose`.
    pub verbose: Option<bool>,
}

impl Default for ChannelVars {
    fn default() -> Self {
        ChannelVars {
            ignore_early_media: true,
            caller_id_number: None,
            caller_id_name: None,
            fax_ident: None,
            fax_header: None,
            use_ecm: None,
            disable_v17: None,
            enable_t38: None,
            enable_t38_request: None,
            verbose: None,
        }
    }
}

impl ChannelVars {
    /// Defaults: `ignore_early_media=true`, everything else unset.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one per-destination override (`db select/override-<number>/<name>`).
    /// Refuses names outside [`OVERRIDABLE_VARIABLES`] and values that break the variable's
    /// rule; booleans accept FreeSWITCH's spellings (`true/false/yes/no/on/off/1/0`).
    pub fn apply_override(&mut self, name: &str, value: &str) -> Result<(), DialError> {
        if !allowed_override(name) {
            return Err(DialError::OverrideNotAllowed {
                name: name.to_owned(),
            });
        }
        let boolean = || parse_bool(name, value);
        match name {
            "origination_caller_id_number" => {
                self.caller_id_number = Some(check_cid_number(value)?.to_owned());
            }
            "origination_caller_id_name" => self.caller_id_name = Some(value.to_owned()),
            "fax_ident" => self.fax_ident = Some(value.to_owned()),
            "fax_header" => self.fax_header = Some(value.to_owned()),
            "fax_use_ecm" => self.use_ecm = Some(boolean()?),
            "fax_disable_v17" => self.disable_v17 = Some(boolean()?),
            "fax_enable_t38" => self.enable_t38 = Some(boolean()?),
            "fax_enable_t38_request" => self.enable_t38_request = Some(boolean()?),
            "fax_verbose" => self.verbose = Some(boolean()?),
            // allowed_override() and this match list the same names.
            _ => {
                return Err(DialError::OverrideNotAllowed {
                    name: name.to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// One `originate` for one gateway leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginateRequest {
    /// `origination_uuid`: fresh per originate; the caller filters events by it.
    pub uuid: Uuid,
    /// The sofia gateway name.
    pub gateway: String,
    /// The number as dialled (call prefix included); separators ` -.()` are removed.
    pub number: String,
    /// The other channel variables.
    pub vars: ChannelVars,
    /// The TIFF to send (absolute).
    pub txfax_path: PathBuf,
    /// `fax_start_page`: the 0-based TIFF directory to start at, to resume after pages already
    /// sent (HylaFAX's `fax:<dir>:` value).
    pub start_page: Option<u32>,
    /// `fax_end_page`: the 0-based TIFF directory to stop after (inclusive).
    pub end_page: Option<u32>,
}

impl OriginateRequest {
    /// The complete API command (without `api `/`bgapi `):
    /// `originate {k='v',...}sofia/gateway/<gw>/<number> &txfax(<path>)`.
    /// Always a single line; see the module docs for what is refused or encoded.
    pub fn build(&self) -> Result<String, DialError> {
        let number = normalize_dial_number(&self.number)?;
        check_gateway(&self.gateway)?;
        let path = check_txfax_path(&self.txfax_path)?;
        let vars = self
            .variables()?
            .into_iter()
            .map(|(k, v)| format!("{k}='{v}'"))
            .collect::<Vec<_>>()
            .join(",");
        Ok(format!(
            "originate {{{vars}}}sofia/gateway/{}/{number} &txfax({path})",
            self.gateway
        ))
    }

    /// The variables exactly as they go on the wire (encoded, unquoted), in emission order.
    /// Useful for logging the dial string's intent.
    pub fn variables(&self) -> Result<Vec<(&'static str, String)>, DialError> {
        let v = &self.vars;
        let mut out: Vec<(&'static str, String)> = vec![
            ("origination_uuid", self.uuid.hyphenated().to_string()),
            ("ignore_early_media", bool_str(v.ignore_early_media)),
        ];
        if let Some(n) = &v.caller_id_number {
            out.push((
                "origination_caller_id_number",
                check_cid_number(n)?.to_owned(),
            ));
        }
        if let Some(name) = v.caller_id_name.as_deref().map(sanitize_caller_name) {
            if !name.is_empty() {
                out.push(("origination_caller_id_name", name));
            }
        }
        // FreeSWITCH drops `name=` with an empty value (its `=` split yields one token), so an
        // empty ident/header is left out rather than pretending to clear mod_spandsp's default.
        let texts = [
            ("fax_ident", &v.fax_ident, FAX_IDENT_MAX),
            ("fax_header", &v.fax_header, FAX_HEADER_MAX),
        ];
        for (k, text, max) in texts {
            if let Some(text) = text.as_deref().filter(|t| !t.is_empty()) {
                out.push((k, encode_fax_text(k, text, max)));
            }
        }
        let flags = [
            ("fax_use_ecm", v.use_ecm),
            ("fax_disable_v17", v.disable_v17),
            ("fax_enable_t38", v.enable_t38),
            ("fax_enable_t38_request", v.enable_t38_request),
            ("fax_verbose", v.verbose),
        ];
        out.extend(
            flags
                .into_iter()
                .filter_map(|(k, b)| Some((k, bool_str(b?)))),
        );
        match (self.start_page, self.end_page) {
            (Some(s), Some(e)) if e < s => {
                return Err(DialError::InvalidPageRange {
                    start: self.start_page,
                    end: self.end_page,
                });
            }
            _ => {}
        }
        if let Some(s) = self.start_page {
            out.push(("fax_start_page", s.to_string()));
        }
        if let Some(e) = self.end_page {
            out.push(("fax_end_page", e.to_string()));
        }
        // Defence in depth: whatever a rule above produced, nothing special reaches the wire.
        for (k, val) in &out {
            if let Some(bad) = val.chars().find(|c| is_wire_special(*c)) {
                return Err(DialError::InvalidValue {
                    name: (*k).to_owned(),
                    value: val.clone(),
                    reason: if bad.is_control() {
                        "control characters are not allowed"
                    } else {
                        "contains a character FreeSWITCH treats as syntax"
                    },
                });
            }
        }
        Ok(out)
    }
}

/// spandsp's `T30_MAX_IDENT_LEN`: a longer TSI is rejected by spandsp (no ident at all).
const FAX_IDENT_MAX: usize = 20;
/// spandsp's `T30_MAX_PAGE_HEADER_INFO`.
const FAX_HEADER_MAX: usize = 50;
const NUMBER_MAX: usize = 64;
const CALLER_FIELD_MAX: usize = 64;
const GATEWAY_MAX: usize = 128;
const PATH_MAX: usize = 1024;

/// Bytes left literal in `fax_ident`/`fax_header`; everything else becomes `%XX`.
const FAX_TEXT_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

/// Characters that are syntax somewhere in FreeSWITCH's originate parsing (module docs).
fn is_wire_special(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            ',' | '\'' | '"' | '\\' | '{' | '}' | '[' | ']' | '|' | '<' | '>' | '^' | '$'
        )
}

fn bool_str(b: bool) -> String {
    if b { "true" } else { "false" }.to_owned()
}

/// FreeSWITCH's `switch_true`/`switch_false` spellings.
fn parse_bool(name: &str, value: &str) -> Result<bool, DialError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" | "enabled" | "active" | "allow" => Ok(true),
        "false" | "no" | "off" | "0" | "disabled" | "inactive" | "disallow" => Ok(false),
        _ => Err(DialError::InvalidValue {
            name: name.to_owned(),
            value: value.to_owned(),
            reason: "expected true or false",
        }),
    }
}

/// Removes the separators HylaFAX clients leave in numbers and checks what remains.
/// `"+49 (40) 123-45.6"` → `"+4940123456"`. Errors name the number as given.
pub fn normalize_dial_number(raw: &str) -> Result<String, DialError> {
    let stripped: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    if stripped.is_empty() {
        return Err(DialError::EmptyNumber {
            number: raw.to_owned(),
        });
    }
    for (i, c) in stripped.chars().enumerate() {
        let ok = c.is_ascii_digit() || c == '*' || c == '#' || (c == '+' && i == 0);
        if !ok {
            return Err(DialError::InvalidNumber {
                number: raw.to_owned(),
                bad: c,
            });
        }
    }
    if !stripped.chars().any(|c| c.is_ascii_digit()) {
        return Err(DialError::InvalidNumber {
            number: raw.to_owned(),
            bad: stripped.chars().next().unwrap_or('+'),
        });
    }
    if stripped.len() > NUMBER_MAX {
        return Err(DialError::NumberTooLong {
            number: raw.to_owned(),
            max: NUMBER_MAX,
        });
    }
    Ok(stripped)
}

/// A sofia gateway name: `[A-Za-z0-9_.-]+`, at most 128 characters.
pub fn check_gateway(gateway: &str) -> Result<(), DialError> {
    let ok = !gateway.is_empty()
        && gateway.len() <= GATEWAY_MAX
        && gateway
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(DialError::InvalidGateway {
            gateway: gateway.to_owned(),
        })
    }
}

/// The `txfax` argument: absolute UTF-8 path without whitespace, control characters,
/// quotes, backslashes, parentheses or `$`.
pub fn check_txfax_path(path: &std::path::Path) -> Result<&str, DialError> {
    let shown = path.to_string_lossy().into_owned();
    let err = |reason| DialError::InvalidPath {
        path: shown.clone(),
        reason,
    };
    let s = path.to_str().ok_or_else(|| err("not valid UTF-8"))?;
    if !s.starts_with('/') {
        return Err(err("not an absolute path"));
    }
    if s.len() > PATH_MAX {
        return Err(err("too long"));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err("contains whitespace or control characters"));
    }
    if s.chars()
        .any(|c| matches!(c, '\'' | '"' | '\\' | '(' | ')' | '$'))
    {
        return Err(err("contains one of ' \" \\ ( ) $"));
    }
    Ok(s)
}

fn check_cid_number(value: &str) -> Result<&str, DialError> {
    let v = value.trim();
    let ok = !v.is_empty()
        && v.len() <= CALLER_FIELD_MAX
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '*' | '#' | '.' | '_' | '-'));
    if ok {
        Ok(v)
    } else {
        Err(DialError::InvalidValue {
            name: "origination_caller_id_number".to_owned(),
            value: value.to_owned(),
            reason: "only letters, digits and + * # . _ - are allowed (1-64 characters)",
        })
    }
}

/// The caller-ID name as it will be sent: letters, digits, space and `.-_+@#*/()` kept,
/// everything else (quotes, commas, braces, pipes, `^`, `$`, `:`, control characters...)
/// dropped, runs of spaces kept, trimmed, at most 64 characters. Never fails: a name is
/// cosmetic, losing a character is better than losing the fax.
pub fn sanitize_caller_name(name: &str) -> String {
    let kept: String = name
        .chars()
        .filter(|c| {
            c.is_alphanumeric()
                || matches!(
                    c,
                    ' ' | '.' | '-' | '_' | '+' | '@' | '#' | '*' | '/' | '(' | ')'
                )
        })
        .take(CALLER_FIELD_MAX)
        .collect();
    kept.trim().to_owned()
}

/// `fax_ident` as mod_spandsp must receive it: cut to spandsp's 20-byte limit and
/// percent-encoded except `[A-Za-z0-9+-._]` (mod_spandsp url-decodes it). Safe to pass to
/// `set fax_ident=<value>` on a channel as well as inside an originate.
pub fn encode_fax_ident(ident: &str) -> String {
    encode_fax_text("fax_ident", ident, FAX_IDENT_MAX)
}

/// Percent-encodes `fax_ident`/`fax_header` after cutting them to spandsp's byte limit.
fn encode_fax_text(name: &str, value: &str, max: usize) -> String {
    let mut cut = value.len().min(max);
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    if cut < value.len() {
        warn!(
            variable = name,
            value, max, "value longer than spandsp accepts; truncated"
        );
    }
    utf8_percent_encode(&value[..cut], FAX_TEXT_SET).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn request(number: &str, gateway: &str) -> OriginateRequest {
        OriginateRequest {
            uuid: Uuid::parse_str("1e71c4c1-d6f6-42a1-8748-376bad133f7d").unwrap(),
            gateway: gateway.to_owned(),
            number: number.to_owned(),
            vars: ChannelVars::new(),
            txfax_path: PathBuf::from("/var/spool/hylafax/tmp/fsfax-1.tif"),
            start_page: None,
            end_page: None,
        }
    }

    #[test]
    fn builds_the_expected_command() {
        let mut r = request("0 40-123 (45)", "b");
        r.vars.caller_id_number = Some("+4940999".into());
        r.vars.caller_id_name = Some("ACME, Inc. 'Sales' {x}".into());
        r.vars.fax_ident = Some("+1 337".into());
        r.vars.fax_header = Some("GONICUS LABS, 100%".into());
        r.vars.use_ecm = Some(true);
        r.vars.enable_t38 = Some(false);
        r.start_page = Some(2);
        let cmd = r.build().unwrap();
        assert_eq!(
            cmd,
            "originate {origination_uuid='1e71c4c1-d6f6-42a1-8748-376bad133f7d',\
             ignore_early_media='true',origination_caller_id_number='+4940999',\
             origination_caller_id_name='ACME Inc. Sales x',fax_ident='+1%20337',\
             fax_header='GONICUS%20LABS%2C%20100%25',fax_use_ecm='true',fax_enable_t38='false',\
             fax_start_page='2'}sofia/gateway/b/04012345 &txfax(/var/spool/hylafax/tmp/fsfax-1.tif)"
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(
            normalize_dial_number("+49 (40) 123-45.6").unwrap(),
            "+4940123456"
        );
        assert_eq!(normalize_dial_number("*31#0401").unwrap(), "*31#0401");
        for bad in [
            "12|34",
            "12,34",
            "1 & system",
            "12'3",
            "1+2",
            "12\n3",
            "abc",
            "12/3",
        ] {
            let e = normalize_dial_number(bad).unwrap_err();
            assert!(
                matches!(e, DialError::InvalidNumber { .. }),
                "{bad:?}: {e:?}"
            );
            assert!(
                e.to_string().contains(&format!("{bad:?}")),
                "error names the number: {e}"
            );
        }
        assert!(matches!(
            normalize_dial_number(" - "),
            Err(DialError::EmptyNumber { .. })
        ));
        assert!(matches!(
            normalize_dial_number("*#"),
            Err(DialError::InvalidNumber { .. })
        ));
        assert!(matches!(
            normalize_dial_number(&"1".repeat(65)),
            Err(DialError::NumberTooLong { .. })
        ));
    }

    #[test]
    fn gateways_and_paths() {
        assert!(check_gateway("gw_1.example-2").is_ok());
        for bad in ["", "gw 2", " gw", "gw/x", "gw|b", "gw,b", "gw'"] {
            assert!(check_gateway(bad).is_err(), "{bad:?}");
        }
        assert!(check_txfax_path(std::path::Path::new("/tmp/a;c0.tif")).is_ok());
        for bad in [
            "rel/a.tif",
            "/tmp/a b.tif",
            "/tmp/a).tif",
            "/tmp/${x}",
            "/tmp/a\n",
            "/tmp/'a'",
        ] {
            let e = check_txfax_path(std::path::Path::new(bad)).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn overrides() {
        assert!(allowed_override("fax_enable_t38"));
        assert!(!allowed_override("origination_uuid"));
        assert!(!allowed_override("fax_start_page"));
        assert!(!allowed_override("FAX_ENABLE_T38"));
        let mut v = ChannelVars::new();
        v.apply_override("fax_enable_t38", "false").unwrap();
        v.apply_override("fax_use_ecm", "On").unwrap();
        v.apply_override("fax_ident", "+49, x").unwrap();
        assert_eq!((v.enable_t38, v.use_ecm), (Some(false), Some(true)));
        assert_eq!(v.fax_ident.as_deref(), Some("+49, x"));
        assert!(matches!(
            v.apply_override("origination_uuid", "x"),
            Err(DialError::OverrideNotAllowed { .. })
        ));
        assert!(matches!(
            v.apply_override("fax_verbose", "maybe"),
            Err(DialError::InvalidValue { .. })
        ));
        assert!(
            v.apply_override("origination_caller_id_number", "12,3")
                .is_err()
        );
        assert!(v.apply_override("fax_trace_dir", "/tmp").is_err());
    }

    #[test]
    fn empty_values_are_left_out() {
        // FreeSWITCH ignores `fax_ident=` (found by the property test below).
        let mut r = request("123", "gw");
        r.vars.fax_ident = Some(String::new());
        r.vars.fax_header = Some(String::new());
        r.vars.caller_id_name = Some(" ,'{} ".into());
        let cmd = r.build().unwrap();
        assert!(
            !cmd.contains("fax_ident") && !cmd.contains("fax_header"),
            "{cmd}"
        );
        assert!(!cmd.contains("origination_caller_id_name"), "{cmd}");
        r.vars.fax_ident = Some(" ".into());
        assert!(r.build().unwrap().contains("fax_ident='%20'"));
    }

    #[test]
    fn page_range_and_truncation() {
        let mut r = request("123", "gw");
        // 0 is spandsp's first directory, so it is a valid start.
        r.start_page = Some(0);
        assert!(r.build().unwrap().contains("fax_start_page='0'"));
        r.start_page = Some(3);
        r.end_page = Some(2);
        assert!(matches!(r.build(), Err(DialError::InvalidPageRange { .. })));
        r.end_page = Some(3);
        assert!(r.build().unwrap().contains("fax_end_page='3'"));
        r.vars.fax_ident = Some("é".repeat(15)); // 30 bytes: cut at a char boundary <= 20
        let vars = r.variables().unwrap();
        let ident = &vars.iter().find(|(k, _)| *k == "fax_ident").unwrap().1;
        let decoded = percent_encoding::percent_decode_str(ident)
            .decode_utf8()
            .unwrap();
        assert_eq!(decoded, "é".repeat(10));
    }

    // ---- A FreeSWITCH-like parser, following mod_commands/switch_utils/switch_ivr_originate ----

    /// switch_utils' token cleanup: drops matched single quotes, resolves `\` escapes, trims.
    fn fs_cleanup(tok: &[char], delim: char) -> String {
        let mut i = 0;
        while i < tok.len() && tok[i] == ' ' {
            i += 1;
        }
        let mut out: Vec<char> = Vec::new();
        let mut end: Option<usize> = None;
        let mut inside = false;
        while i < tok.len() {
            let c = tok[i];
            if c == '\\' && i + 1 < tok.len() {
                let e = tok[i + 1];
                let un = match e {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    's' => ' ',
                    x => x,
                };
                if e == '\'' || e == '"' || e == delim || e == '\\' || un != e {
                    out.push(un);
                    end = Some(out.len());
                    i += 2;
                    continue;
                }
            }
            if c == '\'' && (inside || tok[i + 1..].contains(&'\'')) {
                inside = !inside;
                if inside {
                    end = Some(out.len());
                }
            } else {
                out.push(c);
                if c != ' ' || inside {
                    end = Some(out.len());
                }
            }
            i += 1;
        }
        out.truncate(end.unwrap_or(out.len()));
        out.into_iter().collect()
    }

    /// `switch_separate_string(buf, ' ', ..)`.
    fn fs_split_blank(s: &str) -> Vec<String> {
        let c: Vec<char> = s.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < c.len() {
            let start = i;
            while i < c.len() && c[i] == ' ' {
                i += 1;
            }
            let mut inside = false;
            while i < c.len() {
                if c[i] == '\\' {
                    i += 1;
                } else if c[i] == '\'' {
                    inside = !inside;
                } else if c[i] == ' ' && !inside {
                    break;
                }
                i += 1;
            }
            let stop = i.min(c.len());
            toks.push(fs_cleanup(&c[start..stop], ' '));
            while i < c.len() && c[i] == ' ' {
                i += 1;
            }
        }
        toks
    }

    /// `switch_separate_string(buf, delim, .., max)` for a non-space delimiter.
    fn fs_split_char(s: &str, delim: char, max: usize) -> Vec<String> {
        let c: Vec<char> = s.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        let mut inside = false;
        while i < c.len() && toks.len() < max {
            let start = i;
            let mut stop = c.len();
            while i < c.len() {
                if c[i] == '\\' {
                    i += 1;
                } else if c[i] == '\'' && (inside || c[i + 1..].contains(&'\'')) {
                    inside = !inside;
                } else if c[i] == delim && !inside && toks.len() + 1 < max {
                    stop = i;
                    i += 1;
                    break;
                }
                i += 1;
            }
            toks.push(fs_cleanup(&c[start..stop.min(c.len())], delim));
        }
        toks
    }

    /// What FreeSWITCH would make of our command: (variables, legs, application).
    fn fs_parse(cmd: &str) -> (BTreeMap<String, String>, String, String) {
        assert!(!cmd.contains(['\r', '\n', '\0']), "single line: {cmd:?}");
        let args = cmd.strip_prefix("originate ").expect("originate command");
        let argv = fs_split_blank(args);
        assert_eq!(argv.len(), 2, "exactly <aleg> <app>: {argv:?}");
        let aleg = &argv[0];
        assert!(aleg.starts_with('{'), "one variable block first: {aleg:?}");
        let close = aleg.find('}').expect("closing brace");
        let block = &aleg[1..close];
        let rest = &aleg[close + 1..];
        assert!(!block.contains('{'), "no nested block");
        assert!(!block.starts_with("^^"), "no custom separator");
        assert!(
            !rest.contains(['{', '}', '[', ']', '<', '>', '|', ',']),
            "one plain leg: {rest:?}"
        );
        assert!(!rest.contains(":_:"));
        let mut vars = BTreeMap::new();
        for item in fs_split_char(block, ',', 1024) {
            let kv = fs_split_char(&item, '=', 2);
            assert_eq!(kv.len(), 2, "item {item:?} is name=value");
            assert!(
                vars.insert(kv[0].clone(), kv[1].clone()).is_none(),
                "duplicate {}",
                kv[0]
            );
        }
        (vars, rest.to_owned(), argv[1].clone())
    }

    /// `switch_url_decode`: `%XX` only, `+` stays.
    fn url_decode(s: &str) -> String {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    }

    #[test]
    fn fs_parser_agrees_with_captured_gofaxsend_dialstring() {
        // gofaxsend's quoted values, as FreeSWITCH accepted them in the captures.
        let (vars, leg, app) = fs_parse(
            "originate {fax_ident='+1 337',fax_header='GONICUS LABS',origination_uuid='u'}sofia/gateway/b/5000 &txfax(/tmp/x.tif)",
        );
        assert_eq!(vars["fax_ident"], "+1 337");
        assert_eq!(vars["fax_header"], "GONICUS LABS");
        assert_eq!(leg, "sofia/gateway/b/5000");
        assert_eq!(app, "&txfax(/tmp/x.tif)");
        // And the hazard the builder avoids: the quotes are gone before the `,` split.
        let argv = fs_split_blank("{a='x,y'}sofia/gateway/b/1 &txfax(/t)");
        assert_eq!(argv[0], "{a=x,y}sofia/gateway/b/1");
        assert_eq!(fs_split_char("a=x,y", ',', 1024), ["a=x", "y"]);
        assert_eq!(fs_split_char("a=b=c", '=', 2), ["a", "b=c"]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn build_never_breaks_out(
            number in prop_oneof![
                1 => any::<String>(),
                3 => "[0-9 ()+*#.-]{0,20}",
                1 => "[0-9]{3,12}[,|' &{}]?[0-9a-z ]{0,6}",
            ],
            gateway in prop_oneof![
                1 => any::<String>(),
                3 => "[A-Za-z0-9_.-]{1,12}",
                1 => "[a-z]{1,4}[ ,|/'][a-z]{0,4}",
            ],
            cid_name in any::<String>(),
            cid_number in prop_oneof![1 => any::<String>(), 3 => "[0-9+]{1,12}"],
            ident in any::<String>(),
            header in any::<String>(),
            weird in "[ ,'\"{}\\[\\]|<>^$\\\\=\r\n]{0,6}",
        ) {
            let mut r = request(&number, &gateway);
            r.vars.caller_id_name = Some(format!("{cid_name}{weird}"));
            r.vars.caller_id_number = Some(cid_number.clone());
            r.vars.fax_ident = Some(format!("{weird}{ident}"));
            r.vars.fax_header = Some(format!("{header}{weird}"));
            r.vars.verbose = Some(true);
            let Ok(cmd) = r.build() else { return Ok(()); };
            let (vars, leg, app) = fs_parse(&cmd);
            let intended = r.variables().unwrap();
            prop_assert_eq!(vars.len(), intended.len());
            for (k, v) in &intended {
                prop_assert_eq!(vars.get(*k), Some(v), "variable {}", k);
            }
            prop_assert_eq!(&vars["origination_uuid"], "1e71c4c1-d6f6-42a1-8748-376bad133f7d");
            let ident_in = format!("{weird}{ident}");
            prop_assert_eq!(vars.contains_key("fax_ident"), !ident_in.is_empty());
            if let Some(wire) = vars.get("fax_ident") {
                let decoded = url_decode(wire);
                prop_assert!(!decoded.is_empty());
                prop_assert!(ident_in.starts_with(&decoded), "ident round-trips (maybe truncated)");
                prop_assert!(decoded.len() <= FAX_IDENT_MAX);
            }
            let header_in = format!("{header}{weird}");
            prop_assert_eq!(vars.contains_key("fax_header"), !header_in.is_empty());
            if let Some(wire) = vars.get("fax_header") {
                prop_assert!(header_in.starts_with(&url_decode(wire)));
            }
            if let Some(name) = vars.get("origination_caller_id_name") {
                prop_assert_eq!(name, &sanitize_caller_name(&format!("{cid_name}{weird}")));
            }
            prop_assert_eq!(leg, format!("sofia/gateway/{}/{}", gateway, normalize_dial_number(&number).unwrap()));
            prop_assert_eq!(app, "&txfax(/var/spool/hylafax/tmp/fsfax-1.tif)");
            prop_assert_eq!(cmd.matches("&txfax(").count(), 1);
        }

        #[test]
        fn sanitized_names_have_no_syntax(name in any::<String>()) {
            let s = sanitize_caller_name(&name);
            prop_assert!(!s.chars().any(is_wire_special));
            prop_assert!(s.chars().count() <= CALLER_FIELD_MAX);
            prop_assert_eq!(s.trim(), s.as_str());
        }
    }

    proptest! {
        /// `fax_ident` as mod_spandsp sees it after `switch_url_decode`: the ident itself when
        /// it fits spandsp's 20 bytes, else its longest prefix that does (cut at a character).
        #[test]
        fn fax_ident_percent_encoding_round_trips(ident in any::<String>()) {
            let wire = encode_fax_ident(&ident);
            prop_assert!(wire.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-._%".contains(&b)), "{}", wire);
            let decoded = percent_encoding::percent_decode_str(&wire).decode_utf8().unwrap();
            let mut cut = ident.len().min(FAX_IDENT_MAX);
            while !ident.is_char_boundary(cut) {
                cut -= 1;
            }
            prop_assert_eq!(decoded.as_ref(), &ident[..cut]);
        }
    }
}
