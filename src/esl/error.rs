//! The Event Socket layer's errors, shared by the connection task, the inbound client and the
//! outbound session (so none of them imports another for its error type).

use std::fmt;
use std::time::Duration;

use super::codec::{CommandError, EslError};

/// Errors of Event Socket connections and commands. Every variant names the peer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// TCP connect failed.
    #[error("cannot connect to FreeSWITCH event socket at {peer}: {source}")]
    Connect {
        /// Address we dialled.
        peer: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// TCP connect did not finish in time.
    #[error("timed out after {after:?} connecting to FreeSWITCH event socket at {peer}")]
    ConnectTimeout {
        /// Address we dialled.
        peer: String,
        /// The configured timeout.
        after: Duration,
    },
    /// Greeting or `auth` reply did not arrive in time.
    #[error("FreeSWITCH at {peer} did not complete authentication within {after:?}")]
    AuthTimeout {
        /// Address we dialled.
        peer: String,
        /// The configured timeout.
        after: Duration,
    },
    /// FreeSWITCH refused the password (`-ERR invalid`).
    #[error("FreeSWITCH at {peer} refused the event socket password (check [freeswitch] password)")]
    AuthFailed {
        /// Address we dialled.
        peer: String,
    },
    /// `text/rude-rejection`: the event socket ACL does not allow us.
    #[error(
        "FreeSWITCH at {peer} rejected the connection (event socket apply-inbound-acl): {text}"
    )]
    Rejected {
        /// Address we dialled.
        peer: String,
        /// FreeSWITCH's explanation.
        text: String,
    },
    /// A message that makes no sense at this point of the handshake.
    #[error("unexpected message from {peer} during {stage}: {got}")]
    Unexpected {
        /// Address of the peer.
        peer: String,
        /// Handshake stage.
        stage: &'static str,
        /// What arrived.
        got: String,
    },
    /// Socket or framing error during the handshake.
    #[error("event socket error from {peer}: {source}")]
    Esl {
        /// Address of the peer.
        peer: String,
        /// The codec error.
        source: EslError,
    },
    /// A command got no reply in time. The connection was closed: a late reply would
    /// otherwise be matched to the wrong command.
    #[error("no reply from {peer} to {command:?} within {after:?}; connection closed")]
    Timeout {
        /// Address of the peer.
        peer: String,
        /// Label of the command.
        command: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The connection is closed (or closed while the command was pending).
    #[error("event socket connection to {peer} closed: {reason}")]
    Closed {
        /// Address of the peer.
        peer: String,
        /// Why it closed.
        reason: CloseReason,
    },
    /// FreeSWITCH answered the command with something other than `+OK`.
    #[error("{command:?} failed on {peer}: {reply}")]
    CommandFailed {
        /// Address of the peer.
        peer: String,
        /// Label of the command.
        command: String,
        /// `Reply-Text` (or api body).
        reply: String,
    },
    /// The reply had the wrong type for the command.
    #[error("unexpected reply from {peer} to {command:?}: {got}")]
    UnexpectedReply {
        /// Address of the peer.
        peer: String,
        /// Label of the command.
        command: String,
        /// What arrived.
        got: String,
    },
    /// The command was refused before sending (CR/LF/NUL or an invalid token).
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// Why a connection ended. Available from [`EventStream::close_reason`](super::EventStream::close_reason) and inside
/// [`ClientError::Closed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed the socket (EOF).
    PeerClosed,
    /// A socket error.
    Io(String),
    /// The peer broke the protocol (bad frame, reply with no command waiting, rude rejection).
    Protocol(String),
    /// A command got no reply in time; the connection was closed because a late reply would
    /// otherwise be matched to the wrong caller.
    CommandTimeout {
        /// Label of the command that timed out.
        command: String,
        /// Its timeout.
        after: Duration,
    },
    /// More than `max` events were left unread.
    EventQueueOverflow {
        /// The configured `event_queue_max`.
        max: usize,
    },
    /// Every handle and the event stream were dropped.
    Dropped,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => write!(f, "the peer closed the connection"),
            CloseReason::Io(e) => write!(f, "socket error: {e}"),
            CloseReason::Protocol(e) => write!(f, "protocol error: {e}"),
            CloseReason::CommandTimeout { command, after } => {
                write!(f, "no reply to {command:?} within {after:?}")
            }
            CloseReason::EventQueueOverflow { max } => {
                write!(f, "more than {max} events were left unread")
            }
            CloseReason::Dropped => write!(f, "all handles were dropped"),
        }
    }
}
