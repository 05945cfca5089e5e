//! The fake's own, deliberately independent, ESL wire code: reading client commands and
//! writing FreeSWITCH-shaped replies. It never uses `fsfax::esl`.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest command header block the fake accepts before dropping the connection.
const MAX_BLOCK: usize = 1 << 20;

/// One command as a client sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCommand {
    /// The exact bytes received for this command (framing included).
    pub raw: Vec<u8>,
    /// First line without its line end, e.g. `auth ClueCon`, `sendmsg`, `bgapi originate ...`.
    pub line: String,
    /// Header lines after the first line (`call-command: execute`, `Job-UUID: ...`).
    pub headers: Vec<(String, String)>,
    /// `Content-Length` body, if any.
    pub body: Vec<u8>,
}

impl ClientCommand {
    /// First value of a header, name compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The command word (`auth`, `api`, `sendmsg`, ...), lower case.
    pub fn verb(&self) -> String {
        self.line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase()
    }

    /// Everything after the command word (trimmed at the start).
    pub fn arg(&self) -> &str {
        let l = self.line.trim_start();
        match l.find(char::is_whitespace) {
            Some(p) => l[p..].trim_start(),
            None => "",
        }
    }

    /// Whether the command ended with CRLF framing (`\r\n\r\n`), as go-eventsocket writes it.
    pub fn crlf(&self) -> bool {
        self.raw.ends_with(b"\r\n\r\n")
    }
}

/// Incremental reader of client commands from a socket.
pub struct CommandReader<R> {
    inner: R,
    buf: Vec<u8>,
}

/// Why reading a command stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection (no partial command pending).
    Eof,
    /// I/O error or an oversized/garbled frame.
    Broken(String),
}

impl<R: AsyncRead + Unpin> CommandReader<R> {
    pub fn new(inner: R) -> Self {
        CommandReader {
            inner,
            buf: Vec::new(),
        }
    }

    /// Reads the next complete command.
    pub async fn next(&mut self) -> Result<ClientCommand, ReadError> {
        loop {
            if let Some(cmd) = self.try_parse()? {
                return Ok(cmd);
            }
            if self.buf.len() > MAX_BLOCK {
                return Err(ReadError::Broken("command block too large".into()));
            }
            let mut chunk = [0u8; 8192];
            let n = self
                .inner
                .read(&mut chunk)
                .await
                .map_err(|e| ReadError::Broken(e.to_string()))?;
            if n == 0 {
                return Err(if self.buf.iter().all(|b| b.is_ascii_whitespace()) {
                    ReadError::Eof
                } else {
                    ReadError::Broken("EOF inside a command".into())
                });
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn try_parse(&mut self) -> Result<Option<ClientCommand>, ReadError> {
        // FreeSWITCH skips blank lines between commands.
        let lead = self
            .buf
            .iter()
            .take_while(|b| **b == b'\n' || **b == b'\r')
            .count();
        if lead > 0 {
            self.buf.drain(..lead);
        }
        // Find the end of the header block: an empty line (LF or CRLF).
        let mut pos = 0;
        let mut lines: Vec<String> = Vec::new();
        let end = loop {
            let Some(nl) = self.buf[pos..].iter().position(|b| *b == b'\n') else {
                return Ok(None);
            };
            let line = &self.buf[pos..pos + nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            pos += nl + 1;
            if line.is_empty() {
                break pos;
            }
            lines.push(String::from_utf8_lossy(line).to_string());
        };
        let first = lines.first().cloned().unwrap_or_default();
        let headers: Vec<(String, String)> = lines
            .iter()
            .skip(1)
            .filter_map(|l| {
                l.split_once(':')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        let clen = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse::<usize>())
            .transpose()
            .map_err(|_| ReadError::Broken("bad Content-Length in command".into()))?
            .unwrap_or(0);
        if clen > MAX_BLOCK {
            return Err(ReadError::Broken("command body too large".into()));
        }
        if self.buf.len() < end + clen {
            return Ok(None);
        }
        let raw: Vec<u8> = self.buf.drain(..end + clen).collect();
        let body = raw[end..].to_vec();
        Ok(Some(ClientCommand {
            raw,
            line: first,
            headers,
            body,
        }))
    }
}

/// `Content-Type: command/reply` with one `Reply-Text`.
pub fn command_reply(text: &str) -> Vec<u8> {
    format!("Content-Type: command/reply\nReply-Text: {text}\n\n").into_bytes()
}

/// `Content-Type: api/response` with a body (byte-exact, no newline added).
pub fn api_response(body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "Content-Type: api/response\nContent-Length: {}\n\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The goodbye text of every disconnect notice (67 bytes).
pub const GOODBYE: &str = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";

/// Inbound-connection disconnect notice (after `exit` or a bad password).
pub fn inbound_disconnect_notice() -> Vec<u8> {
    format!(
        "Content-Type: text/disconnect-notice\nContent-Length: {}\n\n{GOODBYE}",
        GOODBYE.len()
    )
    .into_bytes()
}

/// Outbound-socket disconnect notice without linger (`Content-Disposition: disconnect`).
pub fn outbound_disconnect_notice(uuid: &str) -> Vec<u8> {
    format!(
        "Content-Type: text/disconnect-notice\nControlled-Session-UUID: {uuid}\nContent-Disposition: disconnect\nContent-Length: {}\n\n{GOODBYE}",
        GOODBYE.len()
    )
    .into_bytes()
}

/// Outbound-socket linger notice (`Linger-Time: -1` for `linger` without argument).
pub fn linger_notice(uuid: &str, channel_name: &str, linger_time: &str) -> Vec<u8> {
    format!(
        "Content-Type: text/disconnect-notice\nControlled-Session-UUID: {uuid}\nContent-Disposition: linger\nChannel-Name: {channel_name}\nLinger-Time: {linger_time}\nContent-Length: 0\n\n"
    )
    .into_bytes()
}
