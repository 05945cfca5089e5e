//! Page imaging for tag lines: pure functions over page bytes. Read a PCF font ([`pcf`]),
//! decode and re-code the top lines of CCITT strips ([`ccitt`]), and rewrite a TIFF fax
//! document with the tag line drawn into the top of each page ([`page`]).

pub mod ccitt;
pub mod page;
pub mod pcf;
