//! Real FreeSWITCH captures (`tests/fixtures/esl/*.txt`) and the event model of the fake.
//!
//! The fake builds every event it sends from an event recorded on the real switch: parse the
//! capture by record, keep the header list in wire order (duplicates included), substitute the
//! per-call values and serialise it again. Nothing here shares code with `fsfax::esl`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// Directory of the ESL captures.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/esl")
}

/// Directory of the fax TIFF fixtures (`test3.tif`, `test12.tif`, ...).
pub fn fax_fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fax")
}

/// One record of a capture transcript.
#[derive(Clone, Debug)]
pub struct Record {
    /// Milliseconds since the capture's connect.
    pub ms: u64,
    /// `true` for bytes written to FreeSWITCH (`>FS`), `false` for bytes it sent (`<FS`).
    pub to_fs: bool,
    /// The raw bytes of the record.
    pub bytes: Vec<u8>,
}

/// A parsed capture transcript (`NAME.txt`).
#[derive(Clone, Debug)]
pub struct Capture {
    /// Capture name without extension.
    pub name: String,
    /// The `# key: value` lines of the transcript header.
    pub meta: Vec<(String, String)>,
    /// All records in order.
    pub records: Vec<Record>,
    /// [`Capture::messages_from_fs`], parsed once (a load run renders thousands of events).
    messages: OnceLock<Vec<(u64, Message)>>,
    /// [`Capture::events_ref`], parsed once.
    events: OnceLock<Vec<(u64, Event)>>,
    /// The values a call's rendering replaces (see [`Capture::source`]), found once.
    source: OnceLock<super::plan::SourceInfo>,
}

impl Capture {
    /// Loads (and caches, read-only) the capture `name` from `tests/fixtures/esl/NAME.txt`.
    ///
    /// Panics if the fixture is missing or malformed: this is test support and a broken
    /// fixture must fail loudly.
    pub fn load(name: &str) -> Arc<Capture> {
        // Immutable parse cache shared by all fakes in the test binary; never mutated after insert.
        static CACHE: OnceLock<Mutex<Vec<Arc<Capture>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
        let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = guard.iter().find(|c| c.name == name) {
            return c.clone();
        }
        let path = fixtures_dir().join(format!("{name}.txt"));
        let data = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("fakefs: cannot read capture {}: {e}", path.display()));
        let cap = Arc::new(
            Capture::parse(name, &data)
                .unwrap_or_else(|e| panic!("fakefs: bad capture {}: {e}", path.display())),
        );
        guard.push(cap.clone());
        cap
    }

    /// Parses transcript bytes (see tests/fixtures/esl/README.md, "File format").
    pub fn parse(name: &str, data: &[u8]) -> Result<Capture, String> {
        let mut meta = Vec::new();
        let mut i = 0;
        // Header lines until the first empty line.
        loop {
            let nl = find(&data[i..], b"\n").ok_or("no end of header")? + i;
            let line = String::from_utf8_lossy(&data[i..nl]).to_string();
            i = nl + 1;
            if line.is_empty() {
                break;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                if let Some((k, v)) = rest.split_once(": ") {
                    meta.push((k.to_string(), v.to_string()));
                }
            }
        }
        let mut records = Vec::new();
        while i < data.len() {
            let nl = find(&data[i..], b"\n").ok_or("truncated record line")? + i;
            let line = String::from_utf8_lossy(&data[i..nl]).to_string();
            let parts: Vec<&str> = line.split(' ').collect();
            if parts.len() != 5 || parts[0] != "@@" {
                return Err(format!("bad record line {line:?}"));
            }
            let ms: u64 = parts[2]
                .trim_start_matches('+')
                .parse()
                .map_err(|_| "bad ms")?;
            let to_fs = match parts[3] {
                ">FS" => true,
                "<FS" => false,
                d => return Err(format!("bad direction {d}")),
            };
            let n: usize = parts[4].parse().map_err(|_| "bad length")?;
            let start = nl + 1;
            let end = start + n;
            if end > data.len() {
                return Err("record overruns file".into());
            }
            records.push(Record {
                ms,
                to_fs,
                bytes: data[start..end].to_vec(),
            });
            i = end + 1;
        }
        Ok(Capture {
            name: name.to_string(),
            meta,
            records,
            messages: OnceLock::new(),
            events: OnceLock::new(),
            source: OnceLock::new(),
        })
    }

    /// The values of this capture that rendering replaces with a new call's (its originate
    /// parsed once, not for every call).
    pub(crate) fn source(&self) -> &super::plan::SourceInfo {
        self.source
            .get_or_init(|| super::plan::SourceInfo::of(self))
    }

    /// Value of a `# key: value` header line.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.meta
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Messages FreeSWITCH sent, in order, with their capture time.
    pub fn messages_from_fs(&self) -> Vec<(u64, Message)> {
        self.messages_ref().to_vec()
    }

    /// [`Capture::messages_from_fs`] without copying them.
    pub fn messages_ref(&self) -> &[(u64, Message)] {
        self.messages.get_or_init(|| {
            self.records
                .iter()
                .filter(|r| !r.to_fs)
                .filter_map(|r| Message::parse(&r.bytes).map(|m| (r.ms, m)))
                .collect()
        })
    }

    /// The events (text/event-plain only) FreeSWITCH sent, in order, with their time; parsed
    /// once per capture and shared (a load run renders thousands of calls from them).
    pub fn events_ref(&self) -> &[(u64, Event)] {
        self.events.get_or_init(|| {
            self.messages_ref()
                .iter()
                .filter_map(|(ms, m)| m.event().map(|e| (*ms, e)))
                .collect()
        })
    }

    /// Commands the client wrote, in order (raw bytes).
    pub fn commands_to_fs(&self) -> Vec<(u64, Vec<u8>)> {
        self.records
            .iter()
            .filter(|r| r.to_fs)
            .map(|r| (r.ms, r.bytes.clone()))
            .collect()
    }

    /// The origination UUID the capture announces in its header.
    pub fn origination_uuid(&self) -> Option<String> {
        self.meta("origination_uuid").map(str::to_string)
    }

    /// The Job-UUID of the capture's `bgapi` (header line, or the `+OK Job-UUID:` reply).
    pub fn job_uuid(&self) -> Option<String> {
        if let Some(j) = self.meta("job_uuid") {
            return Some(j.to_string());
        }
        self.messages_from_fs().into_iter().find_map(|(_, m)| {
            m.get("Reply-Text")
                .and_then(|t| t.strip_prefix("+OK Job-UUID: "))
                .map(str::to_string)
        })
    }

    /// The first `originate` argument the client sent (after `api originate ` / `bgapi originate `).
    pub fn originate_arg(&self) -> Option<String> {
        self.commands_to_fs().into_iter().find_map(|(_, b)| {
            let s = String::from_utf8_lossy(&b).to_string();
            let first = s
                .lines()
                .next()
                .unwrap_or("")
                .trim_end_matches('\r')
                .to_string();
            first
                .strip_prefix("bgapi originate ")
                .or_else(|| first.strip_prefix("api originate "))
                .map(str::to_string)
        })
    }
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One ESL message from FreeSWITCH: its outer header block and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Outer headers, wire order, raw values.
    pub headers: Vec<(String, String)>,
    /// The `Content-Length` body (empty if none).
    pub body: Vec<u8>,
}

impl Message {
    /// Parses one complete message (header block + body). `None` if it is not one.
    pub fn parse(bytes: &[u8]) -> Option<Message> {
        let end = find(bytes, b"\n\n")?;
        let headers = parse_header_lines(&bytes[..end]);
        let body = bytes[end + 2..].to_vec();
        Some(Message { headers, body })
    }

    /// First value of an outer header (exact name).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `Content-Type`.
    pub fn content_type(&self) -> Option<&str> {
        self.get("Content-Type")
    }

    /// The event carried by a `text/event-plain` message.
    pub fn event(&self) -> Option<Event> {
        if self.content_type() != Some("text/event-plain") {
            return None;
        }
        Event::parse_plain(&self.body)
    }

    /// The body as (lossy) text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

fn parse_header_lines(block: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(block)
        .split('\n')
        .filter_map(|l| {
            let l = l.trim_end_matches('\r');
            l.split_once(": ")
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .or_else(|| {
                    l.split_once(':')
                        .map(|(k, v)| (k.to_string(), v.trim_start().to_string()))
                })
        })
        .collect()
}

/// A FreeSWITCH event: headers in wire order with raw (URL-encoded) values, and an optional body.
///
/// The inner `Content-Length` is not kept in `headers`; it is written back (last) when the
/// event has a body, as FreeSWITCH does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Headers in wire order (duplicates kept, e.g. `Hangup-Cause` twice), raw values.
    pub headers: Vec<(String, String)>,
    /// Inner body (BACKGROUND_JOB result), if any.
    pub body: Option<Vec<u8>>,
}

impl Event {
    /// Parses the body of a `text/event-plain` message.
    pub fn parse_plain(body: &[u8]) -> Option<Event> {
        let end = find(body, b"\n\n").unwrap_or(body.len());
        let mut headers = parse_header_lines(&body[..end]);
        let mut inner = None;
        if let Some(pos) = headers.iter().position(|(k, _)| k == "Content-Length") {
            let (_, v) = headers.remove(pos);
            let n: usize = v.trim().parse().ok()?;
            let start = end + 2;
            inner = Some(body.get(start..start + n)?.to_vec());
        }
        Some(Event {
            headers,
            body: inner,
        })
    }

    /// First raw value of a header (exact name).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// First raw value of a header, name compared case-insensitively.
    pub fn get_ci(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// First value of a header, URL-decoded.
    pub fn get_decoded(&self, name: &str) -> Option<String> {
        self.get_ci(name).map(url_decode)
    }

    /// `Event-Name`.
    pub fn name(&self) -> &str {
        self.get("Event-Name").unwrap_or("")
    }

    /// `Event-Subclass`, decoded (`spandsp::txfaxresult`), or "".
    pub fn subclass(&self) -> String {
        self.get("Event-Subclass")
            .map(url_decode)
            .unwrap_or_default()
    }

    /// `Unique-ID`.
    pub fn uuid(&self) -> Option<&str> {
        self.get("Unique-ID")
    }

    /// Sets every occurrence of `name` to the raw value; returns whether one existed.
    pub fn set(&mut self, name: &str, raw: &str) -> bool {
        let mut found = false;
        for (k, v) in self.headers.iter_mut() {
            if k == name {
                *v = raw.to_string();
                found = true;
            }
        }
        found
    }

    /// Sets `name` (encoding `value`), or appends it if absent.
    pub fn set_or_push(&mut self, name: &str, value: &str) {
        let enc = url_encode(value);
        if !self.set(name, &enc) {
            self.headers.push((name.to_string(), enc));
        }
    }

    /// Inserts a header after the first header called `anchor` (or at the end).
    pub fn insert_after(&mut self, anchor: &str, name: &str, raw: &str) {
        let pos = self
            .headers
            .iter()
            .position(|(k, _)| k == anchor)
            .map(|p| p + 1);
        let pos = pos.unwrap_or(self.headers.len());
        self.headers
            .insert(pos, (name.to_string(), raw.to_string()));
    }

    /// Removes every header called `name`.
    pub fn remove(&mut self, name: &str) {
        self.headers.retain(|(k, _)| k != name);
    }

    /// Header names in order.
    pub fn header_names(&self) -> Vec<String> {
        self.headers.iter().map(|(k, _)| k.clone()).collect()
    }

    /// The body of a `text/event-plain` message for this event.
    pub fn plain_body(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in &self.headers {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.push(b'\n');
        }
        match &self.body {
            Some(b) => {
                out.extend_from_slice(format!("Content-Length: {}\n\n", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            None => out.push(b'\n'),
        }
        out
    }

    /// The complete `text/event-plain` message, `Content-Length` before `Content-Type` as on the wire.
    pub fn to_plain_message(&self) -> Vec<u8> {
        let body = self.plain_body();
        let mut out = format!(
            "Content-Length: {}\nContent-Type: text/event-plain\n\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    }

    /// The complete `text/event-json` message (values decoded, `_body` last, no trailing newline).
    pub fn to_json_message(&self) -> Vec<u8> {
        let mut s = String::from("{");
        let mut first = true;
        let mut push = |k: &str, v: &str, s: &mut String| {
            if !first {
                s.push(',');
            }
            first = false;
            s.push_str(&serde_json::Value::String(k.to_string()).to_string());
            s.push(':');
            s.push_str(&serde_json::Value::String(v.to_string()).to_string());
        };
        for (k, v) in &self.headers {
            push(k, &url_decode(v), &mut s);
        }
        if let Some(b) = &self.body {
            push("Content-Length", &b.len().to_string(), &mut s);
            push("_body", &String::from_utf8_lossy(b), &mut s);
        }
        s.push('}');
        let mut out = format!(
            "Content-Length: {}\nContent-Type: text/event-json\n\n",
            s.len()
        )
        .into_bytes();
        out.extend_from_slice(s.as_bytes());
        out
    }
}

/// Characters FreeSWITCH's `switch_url_encode` escapes (besides controls and non-ASCII).
const URL_UNSAFE: &[u8] = b"\r\n \"#%&+:;<=>?@[\\]^`{|}";

/// URL-encodes like FreeSWITCH: unsafe and non-printable bytes become `%XX`, an existing valid
/// `%XX` sequence is left alone (observed in the captures, e.g. `/` `,` `'` `(` stay literal).
pub fn url_encode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let valid_pct = c == b'%'
            && b.get(i + 1).is_some_and(|x| x.is_ascii_hexdigit())
            && b.get(i + 2).is_some_and(|x| x.is_ascii_hexdigit());
        if !valid_pct && (!(b' '..=b'~').contains(&c) || URL_UNSAFE.contains(&c)) {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[usize::from(c >> 4)] as char);
            out.push(HEX[usize::from(c & 15)] as char);
        } else {
            out.push(c as char);
        }
        i += 1;
    }
    out
}

/// Percent-decodes (lossy UTF-8). `+` stays `+`.
pub fn url_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .to_string()
}
