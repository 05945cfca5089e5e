//! Test-only reader for the ESL capture transcripts in `tests/fixtures/esl/*.txt`.
//!
//! Deliberately independent of `src/esl`: records are `@@ <seq> +<ms> <dir> <nbytes>\n`, then
//! exactly `<nbytes>` raw bytes, then `\n`. For `<FS` records whose outer header block says
//! `Content-Type: text/event-plain`, the body starts with an inner header block of
//! percent-encoded `Name: value` lines, which becomes one [`SimpleHeaders`].

use super::headers::{EventHeaders, SimpleHeaders};
use percent_encoding::percent_decode_str;

/// The events FreeSWITCH sent in one capture, plus the transcript's `# key: value` notes.
pub struct Capture {
    pub notes: Vec<(String, String)>,
    pub events: Vec<SimpleHeaders>,
}

impl Capture {
    /// The call's UUID: the `# origination_uuid` note (inbound captures), else the first
    /// event's `Unique-ID` (outbound captures, where the socket serves one channel).
    pub fn call_uuid(&self) -> Option<String> {
        if let Some((_, v)) = self.notes.iter().find(|(k, _)| k == "origination_uuid") {
            return Some(v.clone());
        }
        self.events
            .iter()
            .find_map(|e| e.header("Unique-ID").map(str::to_owned))
    }
}

/// Loads `tests/fixtures/esl/<name>.txt`. Panics on a malformed transcript (tests only).
pub fn load(name: &str) -> Capture {
    let path = format!(
        "{}/tests/fixtures/esl/{name}.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    parse(&data)
}

fn parse(data: &[u8]) -> Capture {
    let mut notes = Vec::new();
    let mut pos = 0;
    // Preamble: `# key: value` lines up to the first blank line.
    while pos < data.len() {
        let end = find(data, pos, b"\n").expect("preamble line");
        let line = std::str::from_utf8(&data[pos..end]).expect("utf-8 preamble");
        pos = end + 1;
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.trim_start_matches("# ").split_once(": ") {
            notes.push((k.to_owned(), v.to_owned()));
        }
    }
    let mut events = Vec::new();
    while pos < data.len() {
        let end = find(data, pos, b"\n").expect("record line");
        let line = std::str::from_utf8(&data[pos..end]).expect("utf-8 record line");
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.first(), Some(&"@@"), "bad record line {line:?}");
        let dir = fields[3];
        let n: usize = fields[4].parse().expect("record size");
        let body = &data[end + 1..end + 1 + n];
        assert_eq!(data[end + 1 + n], b'\n', "record not followed by LF");
        pos = end + 1 + n + 1;
        if dir == "<FS" {
            if let Some(ev) = event_plain(body) {
                events.push(ev);
            }
        }
    }
    Capture { notes, events }
}

/// The inner headers of a `text/event-plain` message, percent-decoded.
fn event_plain(msg: &[u8]) -> Option<SimpleHeaders> {
    let split = find(msg, 0, b"\n\n")?;
    let outer = std::str::from_utf8(&msg[..split]).ok()?;
    if !outer
        .lines()
        .any(|l| l.eq_ignore_ascii_case("Content-Type: text/event-plain"))
    {
        return None;
    }
    let body = String::from_utf8_lossy(&msg[split + 2..]);
    let mut headers = SimpleHeaders::new();
    for line in body.split('\n') {
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(": ").unwrap_or((line, ""));
        headers.push(k, percent_decode_str(v).decode_utf8_lossy().into_owned());
    }
    Some(headers)
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

#[test]
fn reads_a_capture() {
    let cap = load("inbound-txfax-t38-ok");
    assert_eq!(
        cap.call_uuid().as_deref(),
        Some("1e71c4c1-d6f6-42a1-8748-376bad133f7d")
    );
    let neg = cap
        .events
        .iter()
        .find(|e| e.header("Event-Subclass") == Some("spandsp::txfaxnegociateresult"))
        .expect("negotiation event");
    assert_eq!(neg.header("fax-local-station-id"), Some("+1 337"));
}
