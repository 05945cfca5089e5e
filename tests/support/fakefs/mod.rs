//! A fake FreeSWITCH for integration tests, faithful to the real captures in
//! `tests/fixtures/esl` (FreeSWITCH 1.10.12, mod_spandsp).
//!
//! Two modes:
//! * **Inbound** ([`FakeFs`]): listens on `127.0.0.1:<random>` like `:8021`. Clients
//!   (fsfaxsend, fsfaxd's mod_db lookups) connect, authenticate, subscribe, run `api`/`bgapi`
//!   commands and `originate` fax calls whose outcome a [`CallScript`] decides per number or
//!   gateway. Every event sent is a real captured event with the call's values substituted,
//!   in captured order and header order.
//! * **Outbound** ([`FakeCall`]): plays FreeSWITCH's `socket <addr> async full` side, connecting
//!   to fsfaxd's listener, answering `connect` with captured channel data and executing the
//!   `sendmsg` applications with captured event sequences, per an [`RxScript`].
//!
//! The wire code here is deliberately independent of `fsfax::esl`: a fake sharing the parser
//! would hide its bugs. All state is per instance (no globals except a read-only cache of
//! parsed fixture files); everything stops when the handle is dropped.

pub mod capture;
pub mod db;
pub mod dial;
pub mod inbound;
pub mod outbound;
pub(crate) mod plan;
pub mod scripts;
pub mod tiff;
pub mod wire;

pub use capture::{Capture, Event, Message, url_decode, url_encode};
pub use db::FakeDb;
pub use dial::{Leg, Originate};
pub use inbound::{FakeConfig, FakeFs, Injection, OriginateRecord, SwitchHandle};
pub use outbound::{CallLog, CallSetup, FakeCall, RxScript};
pub use scripts::{CallScript, DropPoint, FaxParams, T38};
pub use wire::ClientCommand;
