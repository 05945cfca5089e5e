//! Pure, sans-I/O parser for Event Socket messages.
//!
//! A message is a header block (`Name: value` lines ending in LF, CRLF tolerated) closed by an
//! empty line, followed by exactly `Content-Length` body bytes when that header is present.
//!
//! Percent-decoding happens only where FreeSWITCH percent-encodes (checked against the captures
//! in `tests/fixtures/esl/`):
//! * the inner header block of `text/event-plain` (serialised with URL encoding);
//! * a `command/reply` that carries an `Event-Name` header: that is the outbound `connect` reply,
//!   a serialised CHANNEL_DATA event whose every value is encoded (`Reply-Text: %2BOK%0A`).
//!
//! Every other outer header block (`command/reply`, `api/response`, `text/disconnect-notice`,
//! the outer block of events) is written raw by mod_event_socket and is kept as is, so a literal
//! `%` in a reply text is never mangled.

use std::fmt;

/// Size limits that protect a connection against hostile or broken peers, and what of an
/// event the decoder keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted header block, terminator included (default 64 KiB).
    pub max_header_block: usize,
    /// Largest accepted `Content-Length` (default 8 MiB).
    pub max_body: usize,
    /// Whether events keep their channel variables (`variable_*` headers; default true).
    /// `false` drops them while parsing, except spandsp's own `variable_fax_*`: a channel's
    /// events carry all of its variables (150 and more, 6-8 KB per event), which a session
    /// that reads only the event's own headers need not copy, decode nor search. Replies
    /// (the outbound `connect` reply with the caller's variables) are never filtered.
    pub event_variables: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_block: 64 * 1024,
            max_body: 8 * 1024 * 1024,
            event_variables: true,
        }
    }
}

/// Why a frame could not be parsed. Any of these ends the connection it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No end of the header block within `max_header_block` bytes.
    #[error("ESL header block longer than {max} bytes")]
    HeaderBlockTooLarge { max: usize },
    /// `Content-Length` above `max_body`.
    #[error("ESL Content-Length {length} exceeds the limit of {max} bytes")]
    BodyTooLarge { length: u64, max: usize },
    /// `Content-Length` that is not a non-negative decimal number.
    #[error("ESL Content-Length is not a valid length: {value:?}")]
    BadContentLength { value: String },
    /// A header line without a `:` or with an empty name.
    #[error("malformed ESL header line: {line:?}")]
    MalformedHeader { line: String },
    /// A `text/event-plain` inner `Content-Length` larger than what the outer body holds.
    #[error("ESL event body claims {length} bytes but only {available} are present")]
    InnerBodyTruncated { length: usize, available: usize },
    /// A `text/event-json` body that is not a JSON object.
    #[error("bad ESL JSON event: {detail}")]
    BadJson { detail: String },
}

/// An ordered list of headers with case-insensitive lookup.
///
/// Names and values live in one string buffer, so a 150-header event costs two allocations.
#[derive(Clone, Default)]
pub struct Headers {
    buf: String,
    /// (name start, name end == value start, value end) into `buf`.
    spans: Vec<(u32, u32, u32)>,
}

impl Headers {
    /// An empty header list.
    pub fn new() -> Self {
        Headers::default()
    }

    /// Appends a header (no decoding, no trimming).
    pub fn push(&mut self, name: &str, value: &str) {
        let a = self.buf.len();
        self.buf.push_str(name);
        let b = self.buf.len();
        self.buf.push_str(value);
        let c = self.buf.len();
        self.spans.push((a as u32, b as u32, c as u32));
    }

    /// Value of the first header named `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every value of headers named `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// True when a header named `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// All headers in wire order as `(name, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.spans.iter().map(move |&(a, b, c)| {
            (
                &self.buf[a as usize..b as usize],
                &self.buf[b as usize..c as usize],
            )
        })
    }

    /// Number of headers (repeated names counted each time).
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when there are no headers.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Parses a header block (without its terminating empty line).
    ///
    /// Names and (decoded) values are gathered as bytes and checked as UTF-8 once, over the
    /// whole buffer: per-header checks and per-value decode buffers were most of the decode
    /// time of a 150-header event. A block that is not valid UTF-8 (FreeSWITCH never sends
    /// one) is parsed again header by header, each invalid sequence replaced.
    fn parse_block(block: &[u8], decode: bool) -> Result<Headers, FrameError> {
        Headers::parse_block_keeping(block, decode, true)
    }

    /// [`Headers::parse_block`]; without `variables`, channel variables other than
    /// `variable_fax_*` are skipped (see [`Limits::event_variables`]).
    fn parse_block_keeping(
        block: &[u8],
        decode: bool,
        variables: bool,
    ) -> Result<Headers, FrameError> {
        // Room for the whole block, given back at the end when the channel variables were
        // dropped (a shrink in place): growing from a guess copied the event twice or more.
        let mut raw = Vec::with_capacity(block.len());
        let mut spans = Vec::with_capacity(if variables {
            block.len() / 24 + 1
        } else {
            block.len() / 64 + 8
        });
        for_each_header(block, |name, value| {
            if !variables && skipped_variable(name) {
                return;
            }
            let a = raw.len();
            raw.extend_from_slice(name);
            let b = raw.len();
            if !(decode && find_byte(b'%', value).is_some() && percent_decode_into(value, &mut raw))
            {
                raw.extend_from_slice(value);
            }
            spans.push((a as u32, b as u32, raw.len() as u32));
        })?;
        if raw.len() > u32::MAX as usize {
            // Unreachable with sane limits; refuse rather than truncate spans.
            return Err(FrameError::HeaderBlockTooLarge {
                max: u32::MAX as usize,
            });
        }
        if !variables {
            raw.shrink_to_fit();
            spans.shrink_to_fit();
        }
        match String::from_utf8(raw) {
            Ok(buf) => Ok(Headers { buf, spans }),
            Err(_) => {
                let mut h = Headers {
                    buf: String::with_capacity(block.len()),
                    spans: Vec::with_capacity(spans.len()),
                };
                for_each_header(block, |name, value| {
                    if variables || !skipped_variable(name) {
                        h.push_header_lossy(name, value, decode)
                    }
                })?;
                Ok(h)
            }
        }
    }

    /// Appends one header, each part made valid UTF-8 on its own.
    fn push_header_lossy(&mut self, name: &[u8], value: &[u8], decode: bool) {
        let a = self.buf.len();
        push_lossy(&mut self.buf, name);
        let b = self.buf.len();
        let mut decoded = Vec::new();
        if decode && find_byte(b'%', value).is_some() && percent_decode_into(value, &mut decoded) {
            push_lossy(&mut self.buf, &decoded);
        } else {
            push_lossy(&mut self.buf, value);
        }
        let c = self.buf.len();
        self.spans.push((a as u32, b as u32, c as u32));
    }
}

/// A channel variable other than spandsp's `variable_fax_*` (see [`Limits::event_variables`]).
fn skipped_variable(name: &[u8]) -> bool {
    name.starts_with(b"variable_") && !name.starts_with(b"variable_fax_")
}

/// Calls `each(name, value)` for every `Name: value` line of a header block (both trimmed,
/// empty lines skipped); a line without a colon or with an empty name is an error.
fn for_each_header(block: &[u8], mut each: impl FnMut(&[u8], &[u8])) -> Result<(), FrameError> {
    let mut pos = 0;
    while pos < block.len() {
        let end = find_byte(b'\n', &block[pos..]).map_or(block.len(), |i| pos + i);
        let mut line = &block[pos..end];
        pos = end + 1;
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        if line.is_empty() {
            continue;
        }
        let Some(colon) = find_byte(b':', line) else {
            return Err(malformed(line));
        };
        let name = trim(&line[..colon]);
        if name.is_empty() {
            return Err(malformed(line));
        }
        each(name, trim(&line[colon + 1..]));
    }
    Ok(())
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

/// One FreeSWITCH event (plain or JSON), headers decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event's headers, in wire order.
    pub headers: Headers,
    /// The event body (e.g. BACKGROUND_JOB's `+OK <uuid>\n`), if any.
    pub body: Option<String>,
}

impl Event {
    /// First header named `name`, case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
    /// `Event-Name`.
    pub fn name(&self) -> Option<&str> {
        self.get("Event-Name")
    }
    /// `Event-Subclass` (e.g. `spandsp::rxfaxresult` for CUSTOM events).
    pub fn subclass(&self) -> Option<&str> {
        self.get("Event-Subclass")
    }
    /// `Unique-ID` of the channel the event is about.
    pub fn unique_id(&self) -> Option<&str> {
        self.get("Unique-ID")
    }
    /// `Job-UUID` (BACKGROUND_JOB).
    pub fn job_uuid(&self) -> Option<&str> {
        self.get("Job-UUID")
    }
    /// The body, or `""` when there is none.
    pub fn body_str(&self) -> &str {
        self.body.as_deref().unwrap_or("")
    }
}

/// A `command/reply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Headers (percent-decoded only for the outbound `connect` reply).
    pub headers: Headers,
    /// Body if the reply had a `Content-Length` (FreeSWITCH does not send one today).
    pub body: Option<String>,
}

impl Reply {
    /// `Reply-Text` without trailing whitespace (the `connect` reply's decodes to `+OK\n`),
    /// or `""` when missing.
    pub fn text(&self) -> &str {
        self.headers.get("Reply-Text").unwrap_or("").trim_end()
    }
    /// True when `Reply-Text` starts with `+OK`.
    pub fn is_ok(&self) -> bool {
        self.text().starts_with("+OK")
    }
    /// True when `Reply-Text` starts with `-ERR` (or is missing: a reply that is not `+OK`
    /// cannot be trusted as success either, see [`Reply::is_ok`]).
    pub fn is_err(&self) -> bool {
        self.text().starts_with("-ERR")
    }
    /// First header named `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
}

/// Headers plus optional body: the shape of notices, logs and unknown frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Outer headers, not decoded.
    pub headers: Headers,
    /// Body if `Content-Length` was present.
    pub body: Option<String>,
}

impl Frame {
    /// First header named `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
    /// The body, or `""`.
    pub fn body_str(&self) -> &str {
        self.body.as_deref().unwrap_or("")
    }
}

/// `text/disconnect-notice`: FreeSWITCH is about to close the socket (`disconnect`) or the
/// channel hung up and the socket lingers (`linger`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisconnectNotice {
    /// Outer headers (`Content-Disposition`, `Linger-Time`, `Controlled-Session-UUID`, ...).
    pub headers: Headers,
    /// Body (the "goodbye" text), if any.
    pub body: Option<String>,
}

impl DisconnectNotice {
    /// First header named `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
    /// The body, or `""`.
    pub fn body_str(&self) -> &str {
        self.body.as_deref().unwrap_or("")
    }
    /// `Content-Disposition` (`linger` or `disconnect`).
    pub fn disposition(&self) -> Option<&str> {
        self.headers.get("Content-Disposition")
    }
    /// `Linger-Time` in seconds; `-1` means forever.
    pub fn linger_time(&self) -> Option<i64> {
        self.headers.get("Linger-Time")?.parse().ok()
    }
}

/// One decoded Event Socket message, classified by `Content-Type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `auth/request`: the inbound greeting.
    AuthRequest,
    /// `command/reply`.
    CommandReply(Reply),
    /// `api/response`: the body as sent (e.g. `-ERR no reply\n` is a normal mod_db miss).
    ApiResponse(String),
    /// `text/event-plain` or `text/event-json`.
    Event(Event),
    /// `text/disconnect-notice`.
    DisconnectNotice(DisconnectNotice),
    /// `text/rude-rejection` (ACL refusal).
    RudeRejection(Frame),
    /// `log/data`.
    Log(Frame),
    /// Any other content type (or none): the caller logs and skips it.
    Unknown {
        /// The `Content-Type` value, `""` when absent.
        content_type: String,
        /// The frame as received.
        frame: Frame,
    },
}

/// Incremental frame decoder. Remembers how far it has scanned, so bytes trickling in one at a
/// time are not rescanned from the start (quadratic) on every call.
///
/// The buffer passed to [`FrameDecoder::decode`] must only grow between calls until a frame is
/// returned; the caller then drops the consumed prefix.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    limits: Limits,
    scan_from: usize,
    head: Option<Head>,
}

#[derive(Debug, Clone)]
struct Head {
    /// Leading blank lines skipped before the block.
    skip: usize,
    block_end: usize,
    body_start: usize,
    content_length: Option<usize>,
}

impl FrameDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        FrameDecoder {
            limits,
            scan_from: 0,
            head: None,
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Tries to decode one message from the start of `buf`. `Ok(None)` means more bytes are
    /// needed; `Ok(Some((msg, n)))` means `msg` used the first `n` bytes.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Message, usize)>, FrameError> {
        if self.head.is_none() {
            match self.find_head(buf)? {
                Some(head) => self.head = Some(head),
                None => return Ok(None),
            }
        }
        let Some(head) = &self.head else {
            return Ok(None);
        };
        let total = head.body_start + head.content_length.unwrap_or(0);
        if buf.len() < total {
            return Ok(None);
        }
        let block = &buf[head.skip..head.block_end];
        let body = head.content_length.map(|_| &buf[head.body_start..total]);
        let result = build_message(block, body, self.limits.event_variables);
        self.reset();
        result.map(|m| Some((m, total)))
    }

    /// Forgets any partial progress (after a frame was returned or an error).
    pub fn reset(&mut self) {
        self.scan_from = 0;
        self.head = None;
    }

    fn find_head(&mut self, buf: &[u8]) -> Result<Option<Head>, FrameError> {
        let skip = leading_blank_lines(buf);
        let mut pos = self.scan_from.max(skip);
        loop {
            let Some(i) = find_byte(b'\n', &buf[pos..]).map(|i| pos + i) else {
                self.scan_from = buf.len();
                break;
            };
            let terminator = match (buf.get(i + 1), buf.get(i + 2)) {
                (Some(b'\n'), _) => Some(i + 2),
                (Some(b'\r'), Some(b'\n')) => Some(i + 3),
                (Some(b'\r'), None) | (None, _) => {
                    // Cannot tell yet: look at this newline again when more bytes arrive.
                    self.scan_from = i;
                    break;
                }
                _ => None,
            };
            if let Some(body_start) = terminator {
                if body_start - skip > self.limits.max_header_block {
                    return Err(FrameError::HeaderBlockTooLarge {
                        max: self.limits.max_header_block,
                    });
                }
                let block_end = i + 1;
                let content_length = content_length(&buf[skip..block_end], self.limits.max_body)?;
                return Ok(Some(Head {
                    skip,
                    block_end,
                    body_start,
                    content_length,
                }));
            }
            pos = i + 1;
        }
        let max = self.limits.max_header_block;
        if skip > max || buf.len() - skip > max {
            return Err(FrameError::HeaderBlockTooLarge {
                max: self.limits.max_header_block,
            });
        }
        Ok(None)
    }
}

/// Decodes one message from the start of `buf` without keeping state between calls.
/// `Ok(None)`: incomplete, feed more bytes.
pub fn parse_frame(buf: &[u8], limits: &Limits) -> Result<Option<(Message, usize)>, FrameError> {
    FrameDecoder::new(*limits).decode(buf)
}

/// Bytes of blank lines (LF or CRLF) before a frame; tolerated and skipped.
fn leading_blank_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match buf.get(i..i + 2) {
            Some([b'\r', b'\n']) => i += 2,
            _ if buf.get(i) == Some(&b'\n') => i += 1,
            _ => return i,
        }
    }
}

/// Finds and validates `Content-Length` in a raw header block, before any body is buffered.
fn content_length(block: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    const NAME: &[u8] = b"content-length";
    let mut pos = 0;
    while pos < block.len() {
        let end = find_byte(b'\n', &block[pos..]).map_or(block.len(), |i| pos + i);
        let line = &block[pos..end];
        pos = end + 1;
        if let Some(colon) = line.iter().position(|&b| b == b':')
            && trim(&line[..colon]).eq_ignore_ascii_case(NAME)
        {
            return parse_length(trim(&line[colon + 1..]), max).map(Some);
        }
    }
    Ok(None)
}

fn parse_length(value: &[u8], max: usize) -> Result<usize, FrameError> {
    let bad = || FrameError::BadContentLength {
        value: String::from_utf8_lossy(value).into_owned(),
    };
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let mut n: u64 = 0;
    for &d in value {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(FrameError::BodyTooLarge {
                length: u64::MAX,
                max,
            })?;
    }
    if n > max as u64 {
        return Err(FrameError::BodyTooLarge { length: n, max });
    }
    Ok(n as usize)
}

/// Turns a complete header block and body into a classified message.
fn build_message(
    block: &[u8],
    body: Option<&[u8]>,
    variables: bool,
) -> Result<Message, FrameError> {
    let headers = Headers::parse_block(block, false)?;
    let body_string = || body.map(lossy_string);
    let content_type = headers.get("Content-Type").unwrap_or("");
    let msg = match content_type {
        "auth/request" => Message::AuthRequest,
        "command/reply" => {
            // A serialised event (the outbound `connect` reply) is URL-encoded throughout.
            let headers = if headers.contains("Event-Name") {
                Headers::parse_block(block, true)?
            } else {
                headers
            };
            Message::CommandReply(Reply {
                headers,
                body: body_string(),
            })
        }
        "api/response" => Message::ApiResponse(body.map(lossy_string).unwrap_or_default()),
        "text/event-plain" => Message::Event(parse_plain_event(body.unwrap_or(b""), variables)?),
        "text/event-json" => Message::Event(parse_json_event(body.unwrap_or(b""), variables)?),
        "text/disconnect-notice" => Message::DisconnectNotice(DisconnectNotice {
            body: body_string(),
            headers,
        }),
        "text/rude-rejection" => Message::RudeRejection(Frame {
            body: body_string(),
            headers,
        }),
        "log/data" => Message::Log(Frame {
            body: body_string(),
            headers,
        }),
        other => Message::Unknown {
            content_type: other.to_owned(),
            frame: Frame {
                body: body_string(),
                headers,
            },
        },
    };
    Ok(msg)
}

/// The body of `text/event-plain`: a URL-encoded header block, then an optional inner body
/// sized by its own `Content-Length`.
fn parse_plain_event(body: &[u8], variables: bool) -> Result<Event, FrameError> {
    let (block, rest) = match find_block_end(body) {
        Some((block_end, body_start)) => (&body[..block_end], &body[body_start..]),
        None => (body, &body[body.len()..]),
    };
    let headers = Headers::parse_block_keeping(block, true, variables)?;
    let inner = match headers.get("Content-Length") {
        Some(v) => {
            let length = parse_length(v.as_bytes(), usize::MAX)?;
            if length > rest.len() {
                return Err(FrameError::InnerBodyTruncated {
                    length,
                    available: rest.len(),
                });
            }
            Some(lossy_string(&rest[..length]))
        }
        None => None,
    };
    Ok(Event {
        headers,
        body: inner,
    })
}

/// Locates the empty line ending a complete header block: (block end, body start).
fn find_block_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut pos = 0;
    while let Some(i) = find_byte(b'\n', &buf[pos..]).map(|i| pos + i) {
        match (buf.get(i + 1), buf.get(i + 2)) {
            (Some(b'\n'), _) => return Some((i + 1, i + 2)),
            (Some(b'\r'), Some(b'\n')) => return Some((i + 1, i + 3)),
            _ => pos = i + 1,
        }
    }
    None
}

/// `text/event-json`: string values become headers, `_body` becomes the body.
fn parse_json_event(body: &[u8], variables: bool) -> Result<Event, FrameError> {
    use serde_json::Value;
    let map: serde_json::Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| FrameError::BadJson {
            detail: e.to_string(),
        })?;
    let mut headers = Headers::new();
    let mut event_body = None;
    for (name, value) in map {
        if name == "_body" {
            event_body = Some(json_text(value));
            continue;
        }
        if !variables && skipped_variable(name.as_bytes()) {
            continue;
        }
        match value {
            // FreeSWITCH sends repeated headers as an array.
            Value::Array(items) => {
                for item in items {
                    headers.push(&name, &json_text(item));
                }
            }
            Value::Null => {}
            other => headers.push(&name, &json_text(other)),
        }
    }
    Ok(Event {
        headers,
        body: event_body,
    })
}

fn json_text(value: serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

fn malformed(line: &[u8]) -> FrameError {
    let shown = &line[..line.len().min(120)];
    FrameError::MalformedHeader {
        line: String::from_utf8_lossy(shown).into_owned(),
    }
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

fn push_lossy(out: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => out.push_str(s),
        Err(_) => out.push_str(&String::from_utf8_lossy(bytes)),
    }
}

fn lossy_string(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Percent-decodes `value` once onto the end of `out`. False, with `out` as it was, when any
/// `%` is not followed by two hex digits: the caller then keeps the raw value, as FreeSWITCH
/// never produces such a sequence itself.
fn percent_decode_into(value: &[u8], out: &mut Vec<u8>) -> bool {
    let start = out.len();
    let mut rest = value;
    while let Some(i) = find_byte(b'%', rest) {
        out.extend_from_slice(&rest[..i]);
        let (Some(hi), Some(lo)) = (
            rest.get(i + 1).and_then(|&b| hex(b)),
            rest.get(i + 2).and_then(|&b| hex(b)),
        ) else {
            out.truncate(start);
            return false;
        };
        out.push(hi << 4 | lo);
        rest = &rest[i + 3..];
    }
    out.extend_from_slice(rest);
    true
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Position of the first `needle` in `hay`, eight bytes at a time (SWAR): the std
/// `iter().position` does not vectorise and dominated decode time. The `memchr` crate was
/// measured in its place: ESL's lines are short (a header is 20-60 bytes), and its per-call
/// dispatch made `--bench esl` about a fifth slower (620 against 800 MiB/s).
#[inline]
pub(crate) fn find_byte(needle: u8, hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * u64::from(needle);
    let chunks = hay.chunks_exact(8);
    let tail = chunks.remainder();
    for (n, chunk) in chunks.enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ pattern;
        // Lowest set bit marks the first zero byte; borrows only create false hits above it.
        let found = x.wrapping_sub(LO) & !x & HI;
        if found != 0 {
            return Some(n * 8 + (found.trailing_zeros() / 8) as usize);
        }
    }
    let base = hay.len() - tail.len();
    tail.iter().position(|&b| b == needle).map(|p| base + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Message {
        let (m, n) = parse_frame(bytes, &Limits::default()).unwrap().unwrap();
        assert_eq!(n, bytes.len());
        m
    }

    #[test]
    fn find_byte_matches_naive() {
        let hay: Vec<u8> = (0..200u32).map(|i| (i * 7 % 13) as u8).collect();
        for start in 0..40 {
            for needle in 0..14u8 {
                let h = &hay[start..];
                assert_eq!(
                    find_byte(needle, h),
                    h.iter().position(|&b| b == needle),
                    "start {start} needle {needle}"
                );
            }
        }
    }

    #[test]
    fn command_reply_plain_and_crlf() {
        let m = one(b"Content-Type: command/reply\r\nReply-Text: +OK accepted\r\n\r\n");
        let Message::CommandReply(r) = m else {
            panic!("not a reply: {m:?}")
        };
        assert!(r.is_ok());
        assert_eq!(r.text(), "+OK accepted");
    }

    #[test]
    fn reply_text_with_percent_not_decoded() {
        let m = one(b"Content-Type: command/reply\nReply-Text: -ERR 100%25 sure\n\n");
        let Message::CommandReply(r) = m else {
            panic!()
        };
        assert_eq!(r.text(), "-ERR 100%25 sure");
        assert!(r.is_err());
    }

    #[test]
    fn incomplete_returns_none() {
        let full = b"Content-Type: api/response\nContent-Length: 5\n\nfalse";
        for cut in 0..full.len() {
            assert_eq!(parse_frame(&full[..cut], &Limits::default()).unwrap(), None);
        }
        assert_eq!(one(full), Message::ApiResponse("false".into()));
    }

    #[test]
    fn percent_decoding_rules() {
        let body = b"Event-Name: CUSTOM\nfax-local-station-id: %2B1%20337\nA: a+b\nB: 50%ZZ\nC: %C3%A9\nD: %FF\n\n";
        let mut frame = format!(
            "Content-Length: {}\nContent-Type: text/event-plain\n\n",
            body.len()
        )
        .into_bytes();
        frame.extend_from_slice(body);
        let Message::Event(e) = one(&frame) else {
            panic!()
        };
        assert_eq!(e.get("Fax-Local-Station-ID"), Some("+1 337"));
        assert_eq!(e.get("a"), Some("a+b"));
        assert_eq!(e.get("b"), Some("50%ZZ"));
        assert_eq!(e.get("c"), Some("é"));
        assert_eq!(e.get("d"), Some("\u{FFFD}"));
        assert_eq!(e.body, None);
    }

    /// Every message of a real reception, decoded with and without channel variables.
    fn capture_messages(limits: Limits) -> Vec<Message> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/esl/outbound-rxfax-t38-ok-all-events.from-fs.raw"
        );
        let bytes = std::fs::read(path).unwrap();
        let mut d = FrameDecoder::new(limits);
        let mut at = 0;
        let mut out = Vec::new();
        while let Some((m, n)) = d.decode(&bytes[at..]).unwrap() {
            out.push(m);
            at += n;
        }
        assert_eq!(at, bytes.len(), "the capture decodes to its end");
        out
    }

    #[test]
    fn events_without_variables_keep_their_own_headers_and_spandsp_variables() {
        let all = capture_messages(Limits::default());
        let lean = capture_messages(Limits {
            event_variables: false,
            ..Limits::default()
        });
        assert_eq!(all.len(), lean.len());
        let (mut events, mut dropped, mut fax_vars) = (0, 0, 0);
        for (a, l) in all.iter().zip(&lean) {
            match (a, l) {
                (Message::Event(a), Message::Event(l)) => {
                    events += 1;
                    let kept: Vec<_> = a
                        .headers
                        .iter()
                        .filter(|(n, _)| {
                            !n.starts_with("variable_") || n.starts_with("variable_fax_")
                        })
                        .collect();
                    dropped += a.headers.len() - kept.len();
                    fax_vars += kept
                        .iter()
                        .filter(|(n, _)| n.starts_with("variable_fax_"))
                        .count();
                    assert_eq!(l.headers.iter().collect::<Vec<_>>(), kept);
                    assert_eq!(a.body, l.body);
                }
                // Replies (the `connect` reply with the caller's variables) are untouched.
                (a, l) => assert_eq!(a, l),
            }
        }
        assert!(events > 5, "{events} events");
        assert!(dropped > 1000, "{dropped} variables dropped");
        assert!(fax_vars > 0, "spandsp's variable_fax_* are kept");
        let connect = lean.iter().find_map(|m| match m {
            Message::CommandReply(r) if r.get("Event-Name").is_some() => Some(r),
            _ => None,
        });
        assert!(
            connect.is_some_and(|r| r.get("variable_sip_from_user").is_some()),
            "the connect reply keeps the caller's variables"
        );
    }

    /// One event frame of `content_type` carrying `body`, decoded without channel variables.
    fn event_without_variables(content_type: &str, body: &[u8]) -> Event {
        let mut frame = format!(
            "Content-Length: {}\nContent-Type: {content_type}\n\n",
            body.len()
        )
        .into_bytes();
        frame.extend_from_slice(body);
        let limits = Limits {
            event_variables: false,
            ..Limits::default()
        };
        match parse_frame(&frame, &limits) {
            Ok(Some((Message::Event(e), _))) => e,
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn events_without_variables_when_a_value_is_not_utf8() {
        // The header-by-header (lossy) parse drops the same variables.
        let e = event_without_variables(
            "text/event-plain",
            b"Event-Name: CUSTOM\nvariable_sip_from_user: \xff\nvariable_fax_v17_disabled: 1\nfax-remote-station-id: \xfe1\n\n",
        );
        let names: Vec<_> = e.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "Event-Name",
                "variable_fax_v17_disabled",
                "fax-remote-station-id"
            ]
        );
        assert_eq!(e.get("fax-remote-station-id"), Some("\u{FFFD}1"));
    }

    #[test]
    fn json_events_without_variables() {
        let e = event_without_variables(
            "text/event-json",
            br#"{"Event-Name":"CUSTOM","variable_sip_from_user":"x","variable_fax_v17_disabled":"1","fax-success":"1"}"#,
        );
        assert_eq!(e.get("variable_sip_from_user"), None);
        assert_eq!(e.get("variable_fax_v17_disabled"), Some("1"));
        assert_eq!(e.get("fax-success"), Some("1"));
    }

    #[test]
    fn first_occurrence_wins() {
        let m = one(b"Content-Type: x/y\nFoo: 1\nfoo: 2\n\n");
        let Message::Unknown {
            content_type,
            frame,
        } = m
        else {
            panic!()
        };
        assert_eq!(content_type, "x/y");
        assert_eq!(frame.get("FOO"), Some("1"));
        assert_eq!(frame.headers.get_all("foo").collect::<Vec<_>>(), ["1", "2"]);
    }

    #[test]
    fn huge_content_length_rejected_at_header_time() {
        let e = parse_frame(
            b"Content-Type: api/response\nContent-Length: 1099511627776\n\n",
            &Limits::default(),
        )
        .unwrap_err();
        assert!(matches!(
            e,
            FrameError::BodyTooLarge {
                length: 1099511627776,
                ..
            }
        ));
    }

    #[test]
    fn crlf_frames_fed_byte_by_byte() {
        let wire = b"Content-Type: api/response\r\nContent-Length: 4\r\n\r\n+OK\n\r\nContent-Type: command/reply\r\nReply-Text: +OK\r\n\r\n";
        let mut dec = FrameDecoder::new(Limits::default());
        let mut start = 0;
        let mut got = Vec::new();
        for end in 1..=wire.len() {
            if let Some((m, n)) = dec.decode(&wire[start..end]).unwrap() {
                got.push(m);
                start += n;
            }
        }
        assert_eq!(start, wire.len());
        assert_eq!(got[0], Message::ApiResponse("+OK\n".into()));
        assert!(matches!(&got[1], Message::CommandReply(r) if r.text() == "+OK"));
    }

    #[test]
    fn leading_blank_lines_skipped() {
        let m = one(b"\n\r\nContent-Type: auth/request\n\n");
        assert_eq!(m, Message::AuthRequest);
    }
}
