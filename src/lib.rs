//! fsfax: a fax connector between HylaFAX and FreeSWITCH (mod_spandsp) over the Event Socket.
//!
//! Layers: `esl` knows FreeSWITCH's Event Socket and nothing about fax; `hylafax` knows
//! HylaFAX's spool files and FIFOs and nothing about sockets; `fax` is the fax domain, pure
//! (results, outcomes, dial strings, the fallback policy, and `fax::CallEnding`, the one
//! machine both programs use to end a call). `fallback` keeps the T.38 fallback list in mod_db.
//! `receive` (fsfaxd) and `send` (fsfaxsend) drive them; each reads as its protocol's steps
//! (`send::call` prepare → dial → transfer → conclude; `receive::call` admit → screen →
//! rxfax → deliver). The binaries are thin: flags, configuration, logging, signals.

mod bridge;
pub mod cli;
pub mod config;
pub mod esl;
pub mod fallback;
pub mod fax;
pub mod hylafax;
pub mod imaging;
pub mod logging;
pub mod ops;
pub mod receive;
pub mod send;
pub mod tiff;
pub mod tifftags;
