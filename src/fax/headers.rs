//! The one thing the fax layer needs from an ESL event: its headers.
//!
//! The ESL event type implements [`EventHeaders`] in the glue code, so `fax` never imports `esl`.

/// Read-only access to the headers of one FreeSWITCH event.
///
/// Contract for implementors:
/// - **Names are matched case-insensitively** (ASCII). FreeSWITCH sends core headers as
///   `Event-Name`/`Unique-ID` but mod_spandsp's as `fax-success`, `fax-result-code`, ...; callers
///   in this module use whichever spelling the spec shows and rely on the implementor to fold.
/// - **Values are already percent-decoded** (once; `+` stays `+`), as the `text/event-plain`
///   wire format percent-encodes them (`fax-local-station-id: %2B1%20337` → `+1 337`).
/// - When a header occurs more than once (FreeSWITCH repeats `Unique-ID` and `Hangup-Cause` in
///   some events), the **first** occurrence is returned.
pub trait EventHeaders {
    /// The value of header `name` (case-insensitive), or `None` when absent.
    fn header(&self, name: &str) -> Option<&str>;
}

/// A minimal ordered header list implementing [`EventHeaders`], for tests and for glue code that
/// has headers in some other shape. Values are stored as given (already decoded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimpleHeaders {
    entries: Vec<(String, String)>,
}

impl SimpleHeaders {
    /// An empty header list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a list from `(name, value)` pairs, keeping their order.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            entries: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Appends one header (a repeated name keeps the first value visible, like FreeSWITCH).
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.entries.push((name.into(), value.into()));
    }

    /// Number of header lines held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no header is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl EventHeaders for SimpleHeaders {
    fn header(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_case_insensitive_and_first_wins() {
        let mut h = SimpleHeaders::from_pairs([("fax-success", "1"), ("Unique-ID", "a")]);
        h.push("Unique-ID", "b");
        assert_eq!(h.header("Fax-Success"), Some("1"));
        assert_eq!(h.header("FAX-SUCCESS"), Some("1"));
        assert_eq!(h.header("unique-id"), Some("a"));
        assert_eq!(h.header("missing"), None);
        assert_eq!(h.len(), 3);
        assert!(!h.is_empty());
        assert!(SimpleHeaders::new().is_empty());
    }
}
