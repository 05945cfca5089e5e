//! fsfax: a fax connector between HylaFAX and FreeSWITCH (mod_spandsp) over the Event Socket.
//!
//! Layers (see DESIGN.md): `esl` knows FreeSWITCH's Event Socket and nothing about fax;
//! `hylafax` knows HylaFAX's spool files and FIFOs and nothing about sockets; `fax` is the fax
//! domain (results, outcomes, dial strings). `receive` and `send` drive the three.

mod bridge;
pub mod cli;
pub mod config;
pub mod esl;
pub mod fallback;
pub mod fax;
pub mod hylafax;
pub mod imaging;
pub mod logging;
pub mod receive;
pub mod send;
pub mod tiff;
