//! Configuration parser: never panics; a configuration it accepts validates without panicking,
//! and its effective text (what `--check-config` prints) parses back to the same configuration.
#![no_main]

use fsfax::config::{Config, Program};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(config) = Config::parse(&text, Path::new("fuzz.conf")) else {
        return;
    };
    let _ = config.validate_for(Program::Receive);
    let _ = config.validate_for(Program::Send);
    let effective = config.effective_text();
    let again = Config::parse(&effective, Path::new("fuzz.conf"))
        .unwrap_or_else(|e| panic!("effective text does not parse:\n{effective}\n{e}"));
    assert_eq!(
        again.effective_text(),
        effective,
        "effective text is not stable"
    );
});
