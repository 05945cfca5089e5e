//! qfile: parse → write → parse keeps every line, byte for byte, and every logical value.
#![no_main]

use fsfax::hylafax::qfile::QFileContent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(first) = QFileContent::parse("q1", data) else {
        return;
    };
    let written = first.to_bytes();
    let second = QFileContent::parse("q1", &written).expect("a written qfile parses again");
    assert_eq!(second.to_bytes(), written, "write is not stable");
    let a: Vec<_> = first.entries().collect();
    let b: Vec<_> = second.entries().collect();
    assert_eq!(a, b, "entries changed by a round trip");
    assert_eq!(first.warnings().len(), second.warnings().len());
    // Setting any value (status has its own continuation encoding) writes a file that reads
    // back as exactly what is in memory: a value never swallows or injects a line.
    let mut edited = second.clone();
    let value = String::from_utf8_lossy(&data[..data.len().min(64)]).into_owned();
    for tag in ["status", "fuzztag", "number"] {
        if edited.set(tag, &value).is_err() {
            continue;
        }
        let bytes = edited.to_bytes();
        let again = QFileContent::parse("q1", &bytes).expect("an edited qfile parses");
        let mem: Vec<_> = edited.entries().collect();
        let disk: Vec<_> = again.entries().collect();
        assert_eq!(
            mem, disk,
            "after set({tag:?}, {value:?}) the file reads back differently"
        );
    }
});
