//! fsfaxsend: one HylaFAX queue file from modem lock to `returned:`.

pub mod document;
