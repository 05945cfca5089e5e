//! FreeSWITCH Event Socket: frames, codec, inbound client, outbound session.
//!
//! Knows nothing about fax or HylaFAX. Layers, bottom up:
//! * [`frame`]: pure parser, bytes in, [`Message`] out (no I/O);
//! * [`codec`]: `tokio_util` Decoder/Encoder plus the validated [`Command`] type;
//! * [`client`]: inbound connection to FreeSWITCH (`:8021`), a cloneable handle plus a task;
//! * [`outbound`]: a session FreeSWITCH opened to us with `socket ... async full`;
//! * `conn` (the connection task both share) and `error` (their errors, [`ClientError`] and
//!   [`CloseReason`]), so no connection kind imports another.
//!
//! Both connection kinds deliver events on an [`EventStream`] of [`SessionItem`]s.

pub mod client;
pub mod codec;
mod conn;
mod error;
pub mod frame;
pub mod outbound;

pub use client::{
    AskAhead, BackgroundJob, ClientConfig, ClientError, InboundClient, OpenError, Opened,
    is_err_reply,
};
pub use codec::{Command, CommandError, EslCodec, EslError, command_uuid};
pub use conn::{CloseReason, EventStream, SessionItem};
pub use frame::{
    DisconnectNotice, Event, Frame, FrameDecoder, FrameError, Headers, Limits, Message, Reply,
    parse_frame,
};
pub use outbound::{ChannelData, ExecHandle, OutboundConfig, OutboundError, OutboundSession};
