//! The fax domain: results from spandsp events, outcome classification, fallback policy, dial strings.
//!
//! Pure logic only: no sockets, no files, no clocks of its own (the time comes in as an
//! argument). This module knows neither `esl` nor
//! `hylafax`; the glue in `send`/`receive` feeds it events (through [`EventHeaders`]) and turns
//! its answers into ESL commands and qfile updates.
//!
//! - [`headers`]: the one trait the fax layer needs from an event.
//! - [`result`]: [`FaxResult`], accumulated from the events of one call.
//! - [`outcome`]: the single table from spandsp result codes / hangup causes to retry decisions.
//! - [`ending`]: [`CallEnding`], when a call is over and what to send to make it so.
//! - [`dialstring`]: building a safe `originate` for one gateway leg.
//! - [`fallback`]: the T.38 → audio fallback policy (station keys, `db` token checks, trigger,
//!   expiry).

pub mod dialstring;
pub mod ending;
pub mod fallback;
pub mod headers;
pub mod outcome;
pub mod result;

#[cfg(test)]
mod capture;

pub use dialstring::{ChannelVars, DialError, OriginateRequest};
pub use ending::{CallEnding, Command, Cut, Finish, Gone, Input, Limits, Step};
pub use headers::{EventHeaders, SimpleHeaders};
pub use outcome::{Disposition, FaxOutcome, JobResult, LocalError};
pub use result::{Direction, FaxResult, FinalResult, Hangup, PageResult, T38Status, Update};
