//! `tokio_util::codec` wrapper around the frame parser, and the commands we send.

use std::fmt;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::frame::{FrameDecoder, FrameError, Limits, Message};

/// Error of the codec layer: I/O, a bad frame, or a frame cut off by EOF.
#[derive(Debug, thiserror::Error)]
pub enum EslError {
    /// Socket error.
    #[error("ESL I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent a frame we refuse to parse.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The connection ended in the middle of a frame.
    #[error("ESL connection closed in the middle of a frame ({bytes} bytes unparsed)")]
    Truncated {
        /// Bytes left in the buffer.
        bytes: usize,
    },
}

/// A fresh version-4 UUID for a command's `Event-UUID` or `Job-UUID`. These only have to differ
/// from every other command FreeSWITCH is running: 122 random bits drawn once per process with
/// a counter mixed into the low half, so a reception's five `sendmsg`s cost no `getrandom`
/// each (and no user-space generator that probes the CPU at start-up, as `uuid`'s `fast-rng`).
pub fn command_uuid() -> uuid::Uuid {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static BASE: OnceLock<u128> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(|| uuid::Uuid::new_v4().as_u128());
    let n = u128::from(NEXT.fetch_add(1, Ordering::Relaxed));
    uuid::Builder::from_random_bytes((base ^ n).to_be_bytes()).into_uuid()
}

/// Decoder of [`Message`]s and encoder of [`Command`]s.
#[derive(Debug, Clone)]
pub struct EslCodec {
    decoder: FrameDecoder,
}

impl EslCodec {
    /// A codec enforcing `limits` on every incoming frame.
    pub fn new(limits: Limits) -> Self {
        EslCodec {
            decoder: FrameDecoder::new(limits),
        }
    }
}

impl EslCodec {
    /// Decodes one message from the start of `buf` (which, until a message comes out, must
    /// only grow between calls); `Ok(Some((msg, n)))`: `msg` used the first `n` bytes.
    pub(crate) fn decode_slice(
        &mut self,
        buf: &[u8],
    ) -> Result<Option<(Message, usize)>, EslError> {
        self.decoder.decode(buf).map_err(|e| {
            self.decoder.reset();
            e.into()
        })
    }

    /// What the end of the stream makes of `rest`, the bytes no message used: stray blank
    /// lines after the last frame are harmless, anything else was cut off.
    pub(crate) fn check_eof(&mut self, rest: &[u8]) -> Result<(), EslError> {
        if rest.iter().all(|&b| b == b'\n' || b == b'\r') {
            Ok(())
        } else {
            self.decoder.reset();
            Err(EslError::Truncated { bytes: rest.len() })
        }
    }
}

impl Default for EslCodec {
    fn default() -> Self {
        EslCodec::new(Limits::default())
    }
}

impl Decoder for EslCodec {
    type Item = Message;
    type Error = EslError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, EslError> {
        let decoded = self.decode_slice(src)?;
        Ok(decoded.map(|(msg, used)| {
            src.advance(used);
            msg
        }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Message>, EslError> {
        if let Some(msg) = self.decode(src)? {
            return Ok(Some(msg));
        }
        let eof = self.check_eof(src);
        src.clear();
        eof.map(|()| None)
    }
}

impl Encoder<&Command> for EslCodec {
    type Error = EslError;

    fn encode(&mut self, cmd: &Command, dst: &mut BytesMut) -> Result<(), EslError> {
        dst.extend_from_slice(cmd.wire.as_bytes());
        Ok(())
    }
}

impl Encoder<Command> for EslCodec {
    type Error = EslError;

    fn encode(&mut self, cmd: Command, dst: &mut BytesMut) -> Result<(), EslError> {
        self.encode(&cmd, dst)
    }
}

/// A command refused before anything was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// CR, LF or NUL in a command, header name or value: it would inject a second command.
    #[error("refusing to send ESL {what} containing CR, LF or NUL")]
    UnsafeInput {
        /// Which part of the command was unsafe.
        what: &'static str,
    },
    /// A part that must be a single token was empty or contained whitespace or `:`.
    #[error("invalid ESL {what}: {value:?} (must be one non-empty token)")]
    InvalidToken {
        /// Which part of the command was invalid.
        what: &'static str,
        /// The offending value.
        value: String,
    },
}

/// A validated, rendered Event Socket command. Construct with the associated functions; all of
/// them refuse CR, LF and NUL, so nothing user-controlled can split into a second command.
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    wire: String,
    label: String,
    job_uuid: Option<String>,
    event_uuid: Option<String>,
}

impl fmt::Debug for Command {
    /// Shows the label only: `auth` must never print its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Command {
    /// A plain one-line command, sent as `<line>\n\n`.
    pub fn raw(line: &str) -> Result<Command, CommandError> {
        check_text("command", line)?;
        if line.trim().is_empty() {
            return Err(CommandError::InvalidToken {
                what: "command",
                value: line.to_owned(),
            });
        }
        Ok(Command::line(line.to_owned(), label_of(line)))
    }

    /// `auth <password>`; the label and `Debug` never show the password.
    pub fn auth(password: &str) -> Result<Command, CommandError> {
        check_text("password", password)?;
        Ok(Command::line(
            format!("auth {password}"),
            "auth <redacted>".into(),
        ))
    }

    /// `api <cmd>`: FreeSWITCH answers with `api/response`.
    pub fn api(cmd: &str) -> Result<Command, CommandError> {
        check_text("api command", cmd)?;
        let line = format!("api {cmd}");
        let label = label_of(&line);
        Ok(Command::line(line, label))
    }

    /// `bgapi <cmd>` with our own `Job-UUID` header, so the BACKGROUND_JOB can be matched.
    pub fn bgapi(cmd: &str, job_uuid: &str) -> Result<Command, CommandError> {
        check_text("bgapi command", cmd)?;
        check_token("Job-UUID", job_uuid)?;
        let label = label_of(&format!("bgapi {cmd}"));
        Ok(Command {
            wire: format!("bgapi {cmd}\nJob-UUID: {job_uuid}\n\n"),
            label,
            job_uuid: Some(job_uuid.to_owned()),
            event_uuid: None,
        })
    }

    /// `event plain <names...>` (spandsp events: `CUSTOM spandsp::rxfaxresult ...`).
    pub fn event_plain(events: &[&str]) -> Result<Command, CommandError> {
        Command::event_list("event plain", events)
    }

    /// `nixevent <names...>`.
    pub fn nixevent(events: &[&str]) -> Result<Command, CommandError> {
        Command::event_list("nixevent", events)
    }

    /// `filter <header> <value>`.
    pub fn filter(header: &str, value: &str) -> Result<Command, CommandError> {
        check_token("filter header", header)?;
        check_text("filter value", value)?;
        let line = format!("filter {header} {value}");
        let label = label_of(&line);
        Ok(Command::line(line, label))
    }

    /// `filter delete <header> <value>`.
    pub fn filter_delete(header: &str, value: &str) -> Result<Command, CommandError> {
        check_token("filter header", header)?;
        check_text("filter value", value)?;
        let line = format!("filter delete {header} {value}");
        let label = label_of(&line);
        Ok(Command::line(line, label))
    }

    /// `myevents` (outbound): this channel's events, but not CUSTOM or CHANNEL_CALLSTATE.
    pub fn myevents() -> Command {
        Command::line("myevents".into(), "myevents".into())
    }

    /// `linger [<secs>]`; `None` lingers until we close the socket.
    pub fn linger(time: Option<Duration>) -> Command {
        match time {
            Some(t) => {
                let line = format!("linger {}", t.as_secs().max(1));
                Command::line(line.clone(), line)
            }
            None => Command::line("linger".into(), "linger".into()),
        }
    }

    /// `connect` (first command on an outbound socket).
    pub fn connect() -> Command {
        Command::line("connect".into(), "connect".into())
    }

    /// `exit`: FreeSWITCH answers `+OK bye`, sends a disconnect notice and closes.
    pub fn exit() -> Command {
        Command::line("exit".into(), "exit".into())
    }

    /// `sendmsg [<uuid>]` with the given headers, in order.
    pub fn sendmsg(
        target: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Command, CommandError> {
        let mut wire = String::from("sendmsg");
        if let Some(uuid) = target {
            check_token("sendmsg uuid", uuid)?;
            wire.push(' ');
            wire.push_str(uuid);
        }
        wire.push('\n');
        for (name, value) in headers {
            check_token("sendmsg header name", name)?;
            check_text("sendmsg header value", value)?;
            wire.push_str(name);
            wire.push_str(": ");
            wire.push_str(value);
            wire.push('\n');
        }
        wire.push('\n');
        let command = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("call-command"))
            .map_or("", |(_, v)| *v);
        Ok(Command {
            wire,
            label: format!("sendmsg {command}"),
            job_uuid: None,
            event_uuid: None,
        })
    }

    /// `sendmsg` executing `app` with `arg` under `event-lock: true`; `event_uuid` becomes the
    /// `Application-UUID` of its CHANNEL_EXECUTE / CHANNEL_EXECUTE_COMPLETE events.
    /// An empty `arg` is left out, as FreeSWITCH expects.
    pub fn execute(
        target: Option<&str>,
        app: &str,
        arg: &str,
        event_uuid: Option<&str>,
    ) -> Result<Command, CommandError> {
        check_token("application name", app)?;
        let mut headers = vec![("call-command", "execute"), ("execute-app-name", app)];
        if !arg.is_empty() {
            headers.push(("execute-app-arg", arg));
        }
        headers.push(("event-lock", "true"));
        if let Some(uuid) = event_uuid {
            check_token("Event-UUID", uuid)?;
            headers.push(("Event-UUID", uuid));
        }
        let mut cmd = Command::sendmsg(target, &headers)?;
        cmd.label = format!("execute {app}");
        cmd.event_uuid = event_uuid.map(str::to_owned);
        Ok(cmd)
    }

    /// `sendmsg` with `call-command: hangup` and `hangup-cause`.
    pub fn hangup(target: Option<&str>, cause: &str) -> Result<Command, CommandError> {
        check_token("hangup cause", cause)?;
        Command::sendmsg(
            target,
            &[("call-command", "hangup"), ("hangup-cause", cause)],
        )
    }

    /// The exact bytes this command puts on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        self.wire.as_bytes()
    }

    /// Short description for logs and errors (never contains a password).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The `Job-UUID` of a `bgapi` command.
    pub fn job_uuid(&self) -> Option<&str> {
        self.job_uuid.as_deref()
    }

    /// The `Event-UUID` of an `execute` command.
    pub fn event_uuid(&self) -> Option<&str> {
        self.event_uuid.as_deref()
    }

    fn line(line: String, label: String) -> Command {
        Command {
            wire: format!("{line}\n\n"),
            label,
            job_uuid: None,
            event_uuid: None,
        }
    }

    fn event_list(verb: &str, events: &[&str]) -> Result<Command, CommandError> {
        if events.is_empty() {
            return Err(CommandError::InvalidToken {
                what: "event list",
                value: String::new(),
            });
        }
        let mut line = String::from(verb);
        for e in events {
            // Event names carry `::` (spandsp::rxfaxresult), so only whitespace is refused.
            check_text("event name", e)?;
            if e.is_empty() || e.bytes().any(|b| b.is_ascii_whitespace()) {
                return Err(CommandError::InvalidToken {
                    what: "event name",
                    value: (*e).to_owned(),
                });
            }
            line.push(' ');
            line.push_str(e);
        }
        let label = label_of(&line);
        Ok(Command::line(line, label))
    }
}

fn check_text(what: &'static str, s: &str) -> Result<(), CommandError> {
    if s.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(CommandError::UnsafeInput { what });
    }
    Ok(())
}

fn check_token(what: &'static str, s: &str) -> Result<(), CommandError> {
    check_text(what, s)?;
    if s.is_empty() || s.bytes().any(|b| b.is_ascii_whitespace() || b == b':') {
        return Err(CommandError::InvalidToken {
            what,
            value: s.to_owned(),
        });
    }
    Ok(())
}

/// Label for logs: the command line, cut at 100 characters (originate lines are long).
fn label_of(line: &str) -> String {
    match line.char_indices().nth(100) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_uuids_are_distinct_version_4_uuids() {
        let ids: Vec<uuid::Uuid> = (0..10_000).map(|_| command_uuid()).collect();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        for id in &ids {
            assert_eq!(id.get_version_num(), 4, "{id}");
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
        }
    }

    #[test]
    fn sendmsg_execute_layout() {
        let c = Command::execute(None, "set", "fax_ident=+1 337", Some("u-1")).unwrap();
        assert_eq!(
            c.as_bytes(),
            b"sendmsg\ncall-command: execute\nexecute-app-name: set\nexecute-app-arg: fax_ident=+1 337\nevent-lock: true\nEvent-UUID: u-1\n\n"
        );
        let c = Command::execute(Some("abc"), "answer", "", None).unwrap();
        assert_eq!(
            c.as_bytes(),
            b"sendmsg abc\ncall-command: execute\nexecute-app-name: answer\nevent-lock: true\n\n"
        );
    }

    #[test]
    fn unsafe_input_rejected() {
        assert!(matches!(
            Command::api("status\nexit"),
            Err(CommandError::UnsafeInput { .. })
        ));
        assert!(matches!(
            Command::raw("a\rb"),
            Err(CommandError::UnsafeInput { .. })
        ));
        assert!(matches!(
            Command::execute(None, "set", "x=1\n\nsendmsg", None),
            Err(CommandError::UnsafeInput { .. })
        ));
        assert!(matches!(
            Command::sendmsg(None, &[("a\nb", "c")]),
            Err(CommandError::UnsafeInput { .. })
        ));
        assert!(matches!(
            Command::auth("pw\0"),
            Err(CommandError::UnsafeInput { .. })
        ));
        assert!(matches!(
            Command::event_plain(&["CUSTOM spandsp::x"]),
            Err(CommandError::InvalidToken { .. })
        ));
    }

    #[test]
    fn auth_debug_redacts_password() {
        let c = Command::auth("ClueCon").unwrap();
        assert_eq!(c.as_bytes(), b"auth ClueCon\n\n");
        assert!(!format!("{c:?}").contains("ClueCon"));
        assert!(!c.label().contains("ClueCon"));
    }

    #[test]
    fn decode_eof_truncated_is_error() {
        let mut codec = EslCodec::default();
        let mut buf = BytesMut::from(&b"Content-Type: api/response\nContent-Length: 9\n\nabc"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(EslError::Truncated { .. })
        ));
    }
}
