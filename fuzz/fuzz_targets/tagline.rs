//! Tag line imaging: a CCITT strip (first byte: MH, MR or MMR) decodes or fails without panic,
//! and when its top lines can be replaced the result decodes again to the same line count with
//! the new lines on top; any bytes given as a PCF font parse or fail without panic.
#![no_main]

use fsfax::imaging::ccitt::{Coding, Layout, decode_top, replace_top};
use fsfax::imaging::pcf::Font;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, strip)) = data.split_first() else {
        return;
    };
    let _ = Font::parse(strip);
    let coding = match sel % 3 {
        0 => Coding::Mh,
        1 => Coding::Mr,
        _ => Coding::Mmr,
    };
    let layout = Layout {
        coding,
        width: 64 + u16::from(sel / 3) * 8,
        byte_aligned_eol: sel & 0x80 != 0,
    };
    let Ok((lines, _)) = decode_top(strip, layout, 8) else {
        return;
    };
    let new = vec![vec![3, 9], Vec::new()];
    if lines.len() < 3 {
        return;
    }
    let Ok(out) = replace_top(strip, layout, lines.len(), &new) else {
        return;
    };
    let (again, _) = decode_top(&out, layout, lines.len()).expect("a spliced strip decodes");
    assert_eq!(again.len(), lines.len());
    assert_eq!(&again[..2], &new[..]);
    assert_eq!(&again[2..], &lines[2..], "lines below the band changed");
});
