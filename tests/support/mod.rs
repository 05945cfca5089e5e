//! Shared support for integration tests: `mod support;` at the top of a test file.
//!
//! Each test binary uses only part of it, hence the `dead_code` allowance.
#![allow(dead_code, unused_imports)]

pub mod fakefs;
pub mod fsfaxd;
pub mod hylafax;
pub mod send;
pub mod wait;
