//! The top of a CCITT-coded strip: decode its first lines, replace them, keep the rest.
//!
//! The code tables (ITU-T T.4 run lengths and T.6 mode codes) come from the `fax` crate. Its
//! decoders are not used: they read only 1-D Group 3 (not the 2-D MR HylaFAX writes for
//! `-2D` documents), they do not tell where in the stream a line ends (so the rest of a page
//! could not be kept as it is), and its Group 3 decoder panics on a line without EOL, which
//! with `panic = "abort"` would kill fsfaxsend. The line structure (EOLs, the 1-D/2-D tag
//! bit, fill bits) and the 2-D coding are written here from T.4 and T.6.
//!
//! A line is a list of its changing elements: the columns where the colour changes, the
//! first one from white to black. Columns at or past the width are never listed.

use fax::BitReader;
use fax::maps::{Mode, black, mode, white};

/// How a strip's lines are coded (TIFF Compression 3 without/with 2-D, Compression 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// T.4 1-D, Modified Huffman (Compression 3).
    Mh,
    /// T.4 2-D, Modified READ (Compression 3 with T4Options bit 0).
    Mr,
    /// T.6, Modified Modified READ (Compression 4).
    Mmr,
}

/// Line structure options of a Group 3 strip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub coding: Coding,
    /// Pixels per line.
    pub width: u16,
    /// T4Options bit 2: every EOL ends on a byte boundary.
    pub byte_aligned_eol: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodingError {
    #[error("line {line}: invalid code at bit {bit}")]
    BadCode { line: usize, bit: usize },
    #[error("line {line}: the data ends in the middle of the line")]
    Truncated { line: usize },
    #[error("line {line}: uncompressed mode (T.4 extension) is not supported")]
    Extension { line: usize },
    #[error("line {line}: 2-D line without EOL in a Group 3 strip")]
    NoEol { line: usize },
    #[error("line {line}: runs do not add up to the width")]
    Overrun { line: usize },
}

/// Replaces the first `new_lines.len()` lines of `strip` (of `rows` lines in all) with
/// `new_lines` and returns the new strip. Only what must change is re-coded: the new lines and,
/// for 2-D codings, the one line after them (its reference line changed); the bits after that
/// are copied unchanged (for Group 3 even at the same position within their bytes).
pub fn replace_top(
    strip: &[u8],
    layout: Layout,
    rows: usize,
    new_lines: &[Vec<u16>],
) -> Result<Vec<u8>, CodingError> {
    let keep_next = new_lines.len() < rows && layout.coding != Coding::Mh;
    let decode = new_lines.len() + usize::from(keep_next);
    let (old, cut) = decode_top(strip, layout, decode)?;
    if old.len() < new_lines.len() {
        return Err(CodingError::Truncated { line: old.len() });
    }
    let mut w = BitWriter::with_capacity(strip.len() + 256);
    let mut reference: Vec<u16> = Vec::new();
    let lines = new_lines.iter().chain(old.get(new_lines.len()));
    for line in lines {
        match layout.coding {
            Coding::Mh | Coding::Mr => {
                w.eol(layout.byte_aligned_eol);
                if layout.coding == Coding::Mr {
                    // Every re-coded line is 1-D: always allowed, and it frees the line after
                    // from any reference we would have to keep.
                    w.put(1, 1);
                }
                encode_1d(&mut w, line, layout.width);
            }
            Coding::Mmr => {
                encode_2d(&mut w, line, &reference, layout.width);
                reference.clone_from(line);
            }
        }
    }
    if layout.coding != Coding::Mmr {
        // Fill bits (zeros are allowed before any EOL) so that the copied rest keeps its
        // position within each byte and with it any EOL alignment.
        while w.len % 8 != cut % 8 {
            w.put(0, 1);
        }
    }
    w.append_bits(strip, cut);
    Ok(w.finish())
}

/// Decodes the first `n` lines (fewer if the strip has fewer) and returns them with the bit
/// position right after the last one decoded.
pub fn decode_top(
    strip: &[u8],
    layout: Layout,
    n: usize,
) -> Result<(Vec<Vec<u16>>, usize), CodingError> {
    let mut r = Bits::new(strip);
    let mut lines: Vec<Vec<u16>> = Vec::with_capacity(n);
    let mut reference: Vec<u16> = Vec::new();
    for line in 0..n {
        let two_d = match layout.coding {
            Coding::Mmr => true,
            Coding::Mh | Coding::Mr => {
                let had_eol = r.skip_eol();
                if r.at_end() {
                    break;
                }
                if layout.coding == Coding::Mr {
                    if !had_eol {
                        return Err(CodingError::NoEol { line });
                    }
                    r.take(1).ok_or(CodingError::Truncated { line })? == 0
                } else {
                    false
                }
            }
        };
        if layout.coding == Coding::Mmr && r.at_eofb() {
            break;
        }
        let current = if two_d {
            decode_2d(&mut r, &reference, layout.width, line)?
        } else {
            decode_1d(&mut r, layout.width, line)?
        };
        reference.clone_from(&current);
        lines.push(current);
    }
    Ok((lines, r.pos))
}

fn decode_1d(r: &mut Bits<'_>, width: u16, line: usize) -> Result<Vec<u16>, CodingError> {
    let mut out = Vec::new();
    let mut pos: u32 = 0;
    let mut black_run = false;
    let width = u32::from(width);
    loop {
        pos += u32::from(run(r, black_run, line)?);
        if pos > width {
            return Err(CodingError::Overrun { line });
        }
        if pos == width {
            return Ok(out);
        }
        push_change(&mut out, pos as u16);
        black_run = !black_run;
    }
}

/// One run length: make-up codes until a terminating code.
fn run(r: &mut Bits<'_>, black_run: bool, line: usize) -> Result<u16, CodingError> {
    let mut total: u16 = 0;
    loop {
        let at = r.pos;
        let n = if black_run {
            black::decode(r)
        } else {
            white::decode(r)
        }
        .ok_or(if r.at_end() {
            CodingError::Truncated { line }
        } else {
            CodingError::BadCode { line, bit: at }
        })?;
        total = total.checked_add(n).ok_or(CodingError::Overrun { line })?;
        if n < 64 {
            return Ok(total);
        }
    }
}

/// b1 and b2 of T.4 §4.2.1.3: the first changing element on the reference line right of `a0`
/// and of the colour opposite to `a0`'s, and the one after it (`width` when there is none).
fn b1_b2(reference: &[u16], a0: i32, a0_black: bool, width: u16) -> (i32, i32) {
    // Even entries change to black, odd ones to white; b1 changes to the colour a0 is not.
    let want_even = !a0_black;
    let mut i = reference.partition_point(|&x| i32::from(x) <= a0);
    if (i % 2 == 0) != want_even {
        i += 1;
    }
    let at = |i: usize| reference.get(i).map_or(i32::from(width), |&x| i32::from(x));
    (at(i), at(i + 1))
}

fn decode_2d(
    r: &mut Bits<'_>,
    reference: &[u16],
    width: u16,
    line: usize,
) -> Result<Vec<u16>, CodingError> {
    let w = i32::from(width);
    let mut out: Vec<u16> = Vec::new();
    let mut a0: i32 = -1;
    let mut black_now = false;
    while a0 < w {
        let at = r.pos;
        let m = mode::decode(r).ok_or(if r.at_end() {
            CodingError::Truncated { line }
        } else {
            CodingError::BadCode { line, bit: at }
        })?;
        let (b1, b2) = b1_b2(reference, a0, black_now, width);
        match m {
            Mode::Pass => a0 = b2,
            Mode::Vertical(d) => {
                let a1 = b1 + i32::from(d);
                if a1 < a0.max(0) || a1 > w {
                    return Err(CodingError::BadCode { line, bit: at });
                }
                if a1 < w {
                    push_change(&mut out, a1 as u16);
                }
                a0 = a1;
                black_now = !black_now;
            }
            Mode::Horizontal => {
                let first = i32::from(run(r, black_now, line)?);
                let second = i32::from(run(r, !black_now, line)?);
                let a1 = a0.max(0) + first;
                let a2 = a1 + second;
                if a2 > w {
                    return Err(CodingError::Overrun { line });
                }
                for x in [a1, a2] {
                    if x < w {
                        push_change(&mut out, x as u16);
                    }
                }
                a0 = a2;
            }
            Mode::Extension => return Err(CodingError::Extension { line }),
            _ => return Err(CodingError::BadCode { line, bit: at }),
        }
    }
    Ok(out)
}

/// Adds a changing element; one at the same column as the last cancels it (a run of length
/// zero), so lists stay strictly increasing whatever the coder chose.
fn push_change(out: &mut Vec<u16>, x: u16) {
    if out.last() == Some(&x) {
        out.pop();
    } else {
        out.push(x);
    }
}

/// Changing elements of a row of pixels (true = black).
pub fn changes(row: &[bool]) -> Vec<u16> {
    let mut out = Vec::new();
    let mut black_now = false;
    for (x, &p) in row.iter().enumerate() {
        if p != black_now {
            out.push(x as u16);
            black_now = p;
        }
    }
    out
}

fn encode_1d(w: &mut BitWriter, line: &[u16], width: u16) {
    let mut prev = 0u16;
    let mut black_run = false;
    for &x in line.iter().chain(std::iter::once(&width)) {
        put_run(w, black_run, x - prev);
        prev = x;
        black_run = !black_run;
    }
}

fn put_run(w: &mut BitWriter, black_run: bool, mut n: u16) {
    let code = |n: u16| {
        if black_run {
            black::encode(n)
        } else {
            white::encode(n)
        }
    };
    while n >= 2560 {
        w.code(code(2560));
        n -= 2560;
    }
    if n >= 64 {
        w.code(code(n - n % 64));
        n %= 64;
    }
    w.code(code(n));
}

fn encode_2d(w: &mut BitWriter, line: &[u16], reference: &[u16], width: u16) {
    let wd = i32::from(width);
    let at = |i: usize| line.get(i).map_or(wd, |&x| i32::from(x));
    let mut a0: i32 = -1;
    let mut black_now = false;
    // Index in `line` of a1, the first changing element right of a0.
    let mut next = 0usize;
    while a0 < wd {
        let a1 = at(next);
        let (b1, b2) = b1_b2(reference, a0, black_now, width);
        if b2 < a1 {
            w.code(mode::encode(Mode::Pass));
            a0 = b2;
        } else if (a1 - b1).abs() <= 3 {
            w.code(mode::encode(Mode::Vertical((a1 - b1) as i8)));
            a0 = a1;
            black_now = !black_now;
            next += 1;
        } else {
            let a2 = at(next + 1);
            w.code(mode::encode(Mode::Horizontal));
            put_run(w, black_now, (a1 - a0.max(0)) as u16);
            put_run(w, !black_now, (a2 - a1) as u16);
            a0 = a2;
            next += 2;
        }
    }
}

/// Reads bits MSB first and tracks the position; implements the `fax` crate's reader trait so
/// its code tables can decode from it.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits { data, pos: 0 }
    }

    fn len(&self) -> usize {
        self.data.len() * 8
    }

    fn at_end(&self) -> bool {
        self.pos >= self.len()
    }

    fn bit(&self, at: usize) -> u16 {
        self.data
            .get(at / 8)
            .map_or(0, |b| u16::from(b >> (7 - at % 8) & 1))
    }

    fn take(&mut self, n: u8) -> Option<u16> {
        let v = self.peek(n)?;
        self.pos += usize::from(n);
        Some(v)
    }

    /// Skips fill bits and an EOL (eleven or more zeros, then a one) if one follows; true if
    /// it did. Zeros that run into the end of the data are skipped as fill.
    fn skip_eol(&mut self) -> bool {
        let mut p = self.pos;
        while p < self.len() && self.bit(p) == 0 {
            p += 1;
        }
        if p >= self.len() {
            self.pos = p;
            return false;
        }
        if p - self.pos >= 11 {
            self.pos = p + 1;
            true
        } else {
            false
        }
    }

    /// T.6's end of facsimile block (two EOLs) or only zeros to the end.
    fn at_eofb(&self) -> bool {
        let mut p = self.pos;
        let mut zeros = 0;
        while p < self.len() && self.bit(p) == 0 {
            zeros += 1;
            p += 1;
        }
        p >= self.len() || zeros >= 11
    }
}

impl BitReader for Bits<'_> {
    type Error = ();

    fn peek(&self, bits: u8) -> Option<u16> {
        if self.at_end() {
            return None;
        }
        // Past the end reads as zeros: the tables look ahead further than short codes need.
        let mut v = 0u16;
        for i in 0..usize::from(bits) {
            v = v << 1 | self.bit(self.pos + i);
        }
        Some(v)
    }

    fn consume(&mut self, bits: u8) -> Result<(), ()> {
        self.pos += usize::from(bits);
        if self.pos > self.len() {
            Err(())
        } else {
            Ok(())
        }
    }

    fn bits_to_byte_boundary(&self) -> u8 {
        ((8 - self.pos % 8) % 8) as u8
    }
}

struct BitWriter {
    out: Vec<u8>,
    len: usize,
}

impl BitWriter {
    fn with_capacity(bytes: usize) -> Self {
        BitWriter {
            out: Vec::with_capacity(bytes),
            len: 0,
        }
    }

    fn put(&mut self, value: u32, bits: u8) {
        for i in (0..bits).rev() {
            let bit = (value >> i) & 1;
            if self.len % 8 == 0 {
                self.out.push(0);
            }
            if bit == 1 {
                let last = self.out.len() - 1;
                self.out[last] |= 0x80 >> (self.len % 8);
            }
            self.len += 1;
        }
    }

    fn code(&mut self, bits: Option<fax::Bits>) {
        // Every run length up to 2560 and every mode has a code; `None` cannot happen for the
        // values put_run and encode_2d pass.
        if let Some(b) = bits {
            self.put(u32::from(b.data), b.len);
        }
    }

    /// An EOL, preceded by fill zeros so that it ends on a byte boundary when `aligned`.
    fn eol(&mut self, aligned: bool) {
        if aligned {
            while (self.len + 12) % 8 != 0 {
                self.put(0, 1);
            }
        }
        self.put(1, 12);
    }

    /// Appends `src` from bit `from` to its end.
    fn append_bits(&mut self, src: &[u8], from: usize) {
        let total = src.len() * 8;
        let mut p = from;
        // Bit by bit up to a byte boundary of the source, then whole bytes.
        while p < total && p % 8 != 0 {
            self.put(u32::from(src[p / 8] >> (7 - p % 8) & 1), 1);
            p += 1;
        }
        let bytes = &src[(p / 8).min(src.len())..];
        let shift = self.len % 8;
        if shift == 0 {
            self.out.extend_from_slice(bytes);
        } else {
            for &b in bytes {
                let last = self.out.len() - 1;
                self.out[last] |= b >> shift;
                self.out.push(b << (8 - shift));
            }
        }
        self.len += bytes.len() * 8;
    }

    fn finish(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(coding: Coding) -> Layout {
        Layout {
            coding,
            width: 64,
            byte_aligned_eol: true,
        }
    }

    fn sample_lines() -> Vec<Vec<u16>> {
        vec![
            vec![],
            vec![0, 5, 9, 40],
            vec![1, 5, 10, 41, 50, 63],
            vec![0],
            vec![30, 31],
            vec![2, 6, 9, 40, 45, 47],
            vec![],
        ]
    }

    /// A strip coded from scratch: G3 lines each after an EOL (1-D), MMR lines 2-D.
    fn strip_of(coding: Coding, lines: &[Vec<u16>]) -> Vec<u8> {
        let mut w = BitWriter::with_capacity(64);
        let mut reference = Vec::new();
        for l in lines {
            match coding {
                Coding::Mmr => encode_2d(&mut w, l, &reference, 64),
                _ => {
                    w.eol(true);
                    if coding == Coding::Mr {
                        w.put(1, 1);
                    }
                    encode_1d(&mut w, l, 64);
                }
            }
            reference.clone_from(l);
        }
        w.finish()
    }

    #[test]
    fn every_coding_round_trips() {
        for coding in [Coding::Mh, Coding::Mr, Coding::Mmr] {
            let lines = sample_lines();
            let strip = strip_of(coding, &lines);
            let (back, _) = decode_top(&strip, layout(coding), lines.len()).unwrap();
            assert_eq!(back, lines, "{coding:?}");
        }
    }

    #[test]
    fn the_rest_is_copied_bit_for_bit() {
        for coding in [Coding::Mh, Coding::Mr, Coding::Mmr] {
            let lines = sample_lines();
            let strip = strip_of(coding, &lines);
            let new = vec![vec![10, 20], vec![11, 21]];
            let out = replace_top(&strip, layout(coding), lines.len(), &new).unwrap();
            let (back, end) = decode_top(&out, layout(coding), lines.len()).unwrap();
            let mut want = new.clone();
            want.extend(lines[2..].iter().cloned());
            assert_eq!(back, want, "{coding:?}");
            // What follows the re-coded lines is the original's tail, bit for bit.
            let (_, old_end) = decode_top(&strip, layout(coding), 3).unwrap();
            let (_, new_end) = decode_top(&out, layout(coding), 3).unwrap();
            let tail = |d: &[u8], from: usize, to: usize| {
                let b = Bits::new(d);
                (from..to).map(|i| b.bit(i)).collect::<Vec<_>>()
            };
            let (_, old_total) = decode_top(&strip, layout(coding), lines.len()).unwrap();
            assert_eq!(
                tail(&strip, old_end, old_total),
                tail(&out, new_end, end),
                "{coding:?}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error() {
        // All ones: runs of 7 white and 2 black until the data ends mid-line.
        let e = decode_top(&[0xff, 0xff, 0xff], layout(Coding::Mh), 2).unwrap_err();
        assert_eq!(e, CodingError::Truncated { line: 0 });
        let e = decode_top(&[0x00, 0x10, 0xff], layout(Coding::Mr), 2);
        assert!(e.is_err());
        assert_eq!(changes(&[false, true, true, false]), vec![1, 3]);
    }

    #[test]
    fn zero_length_runs_cancel() {
        // MH: white 0, black 0, white 5, black 3, white rest: the same pixels as [5, 8].
        let mut w = BitWriter::with_capacity(16);
        w.eol(false);
        for (black_run, n) in [(false, 0), (true, 0), (false, 5), (true, 3), (false, 56)] {
            put_run(&mut w, black_run, n);
        }
        let (lines, _) = decode_top(&w.finish(), layout(Coding::Mh), 1).unwrap();
        assert_eq!(lines, vec![vec![5, 8]]);
    }

    proptest::proptest! {
        #[test]
        fn any_lines_round_trip_in_every_coding(
            raw in proptest::collection::vec(proptest::collection::vec(0u16..64, 0..12), 1..12),
            coding in proptest::sample::select(vec![Coding::Mh, Coding::Mr, Coding::Mmr]),
            keep in 0usize..12,
        ) {
            let lines: Vec<Vec<u16>> = raw
                .into_iter()
                .map(|mut l| {
                    l.sort_unstable();
                    l.dedup();
                    l
                })
                .collect();
            let strip = strip_of(coding, &lines);
            let (back, _) = decode_top(&strip, layout(coding), lines.len()).unwrap();
            proptest::prop_assert_eq!(&back, &lines);
            let n = keep.min(lines.len());
            let new: Vec<Vec<u16>> = lines[..n].iter().rev().cloned().collect();
            let out = replace_top(&strip, layout(coding), lines.len(), &new).unwrap();
            let (back, _) = decode_top(&out, layout(coding), lines.len()).unwrap();
            let mut want = new.clone();
            want.extend(lines[n..].iter().cloned());
            proptest::prop_assert_eq!(back, want);
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panic(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            coding in proptest::sample::select(vec![Coding::Mh, Coding::Mr, Coding::Mmr]),
        ) {
            let _ = decode_top(&data, layout(coding), 20);
            let _ = replace_top(&data, layout(coding), 20, &[vec![1, 2], vec![]]);
        }
    }
}
