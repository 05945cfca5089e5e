//! ESL frame decoder: never panics, and decoding a stream in arbitrary chunks (as bytes trickle
//! in from a socket) yields exactly the messages of decoding it in one piece.
#![no_main]

use fsfax::esl::{FrameDecoder, Limits, Message};
use libfuzzer_sys::fuzz_target;

/// Decodes `data` as one buffer: the messages, and whether it ended in an error.
fn whole(data: &[u8], limits: Limits) -> (Vec<Message>, bool) {
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        match FrameDecoder::new(limits).decode(rest) {
            Ok(Some((msg, used))) => {
                assert!(
                    used > 0 && used <= rest.len(),
                    "consumed {used} of {}",
                    rest.len()
                );
                out.push(msg);
                rest = &rest[used..];
            }
            Ok(None) => return (out, false),
            Err(_) => return (out, true),
        }
    }
}

/// Decodes `data` fed in chunks whose sizes come from `sizes`, keeping one decoder.
fn chunked(data: &[u8], sizes: &[u8], limits: Limits) -> (Vec<Message>, bool) {
    let mut dec = FrameDecoder::new(limits);
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut k = 0;
    while fed < data.len() {
        let n = (sizes.get(k % sizes.len().max(1)).copied().unwrap_or(7) as usize % 64) + 1;
        k += 1;
        let end = (fed + n).min(data.len());
        buf.extend_from_slice(&data[fed..end]);
        fed = end;
        loop {
            match dec.decode(&buf) {
                Ok(Some((msg, used))) => {
                    out.push(msg);
                    buf.drain(..used);
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|input: &[u8]| {
    // First byte picks small limits now and then, so the limit paths are exercised too.
    let (ctl, data) = input.split_first().unwrap_or((&0, &[]));
    let limits = if ctl & 1 == 1 {
        Limits {
            max_header_block: 64 + (*ctl as usize) * 4,
            max_body: 256,
            // Now and then without channel variables, as fsfaxd's receptions decode.
            event_variables: ctl & 2 == 0,
        }
    } else {
        Limits::default()
    };
    let split = data.len().min(8);
    let (sizes, stream) = if ctl & 2 == 2 {
        data.split_at(split)
    } else {
        (&[][..], data)
    };
    let a = whole(stream, limits);
    let b = chunked(stream, sizes, limits);
    assert_eq!(a.1, b.1, "error in one mode only");
    assert_eq!(a.0, b.0, "chunked decoding differs");
});
