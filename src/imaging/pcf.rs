//! Just enough of X11's Portable Compiled Font format to draw a tag line: glyph metrics,
//! bitmaps and the encoding table of an uncompressed `.pcf` (HylaFAX's `TagLineFont`).
//!
//! No crate on crates.io reads X11 PCF (the one named `simple-pcf` reads the Linux console's
//! PSF format), so this is a small reader written from the format's description: a table of
//! contents, then tables each starting with their own format word (byte order, bit order,
//! row padding).

/// The most glyphs a font may have; lutRS18 has 228. Bounds what a hostile file can ask for.
const MAX_GLYPHS: usize = 65_536;
/// The largest glyph box, either way, in pixels (lutRS18's are under 30).
const MAX_GLYPH_SIDE: i32 = 512;

const PCF_METRICS: u32 = 1 << 2;
const PCF_BITMAPS: u32 = 1 << 3;
const PCF_BDF_ENCODINGS: u32 = 1 << 5;

const FORMAT_BYTE_MSB: u32 = 1 << 2;
const FORMAT_BIT_MSB: u32 = 1 << 3;
const FORMAT_COMPRESSED_METRICS: u32 = 0x100;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PcfError {
    #[error("not a PCF font (no \\1fcp header; a compressed .pcf.gz must be unpacked)")]
    NotPcf,
    #[error("PCF font has no {0} table")]
    MissingTable(&'static str),
    #[error("PCF font is truncated or corrupt ({0})")]
    Corrupt(&'static str),
}

/// One glyph: its ink box relative to the pen position on the baseline, and its bitmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glyph {
    /// Ink starts this many pixels right of the pen.
    pub left: i32,
    /// Pen advance.
    pub advance: i32,
    /// Rows above the baseline.
    pub ascent: i32,
    /// Ink width in pixels.
    pub width: usize,
    /// Ink rows, each `width` pixels, true = black.
    pub rows: Vec<Vec<bool>>,
}

/// A bitmap font: glyphs by character code.
#[derive(Debug, Clone)]
pub struct Font {
    glyphs: Vec<Glyph>,
    /// Glyph index for each code `first_code..`, `None` where the font has none.
    by_code: Vec<Option<u16>>,
    first_code: u32,
    default_glyph: Option<u16>,
    ascent: i32,
    descent: i32,
}

impl Font {
    /// Parses a PCF file's bytes.
    pub fn parse(data: &[u8]) -> Result<Font, PcfError> {
        if data.len() < 8 || &data[..4] != b"\x01fcp" {
            return Err(PcfError::NotPcf);
        }
        let le = Reader { data, msb: false };
        let count = le.u32(4)? as usize;
        if count > 64 {
            return Err(PcfError::Corrupt("implausible table count"));
        }
        let mut tables = Vec::with_capacity(count);
        for i in 0..count {
            let at = 8 + i * 16;
            tables.push((le.u32(at)?, le.u32(at + 12)? as usize));
        }
        let find = |kind: u32, name: &'static str| {
            tables
                .iter()
                .find(|(t, _)| *t == kind)
                .map(|(_, off)| *off)
                .ok_or(PcfError::MissingTable(name))
        };
        let metrics = read_metrics(data, find(PCF_METRICS, "metrics")?)?;
        let bitmaps = read_bitmaps(data, find(PCF_BITMAPS, "bitmaps")?, &metrics)?;
        let (first_code, by_code, default_code) =
            read_encodings(data, find(PCF_BDF_ENCODINGS, "encodings")?)?;
        let glyphs: Vec<Glyph> = metrics
            .iter()
            .zip(bitmaps)
            .map(|(m, rows)| Glyph {
                left: m.left,
                advance: m.advance,
                ascent: m.ascent,
                width: (m.right - m.left).max(0) as usize,
                rows,
            })
            .collect();
        if by_code
            .iter()
            .flatten()
            .any(|&g| usize::from(g) >= glyphs.len())
        {
            return Err(PcfError::Corrupt("encoding names a missing glyph"));
        }
        let ascent = metrics.iter().map(|m| m.ascent).max().unwrap_or(0).max(0);
        let descent = metrics.iter().map(|m| m.descent).max().unwrap_or(0).max(0);
        let default_glyph = default_code
            .checked_sub(first_code)
            .and_then(|i| by_code.get(i as usize).copied().flatten());
        Ok(Font {
            glyphs,
            by_code,
            first_code,
            default_glyph,
            ascent,
            descent,
        })
    }

    /// Rows above the baseline (the tallest glyph's).
    pub fn ascent(&self) -> i32 {
        self.ascent
    }

    /// Rows of the line: ascent plus the deepest descent.
    pub fn height(&self) -> i32 {
        self.ascent + self.descent
    }

    /// The glyph for `c`: the font's default character, then `?`, for characters it lacks.
    /// The font's encoding is taken as Unicode code points (ISO 8859-1 fonts agree below 256).
    pub fn glyph(&self, c: char) -> Option<&Glyph> {
        let lookup = |c: u32| {
            c.checked_sub(self.first_code)
                .and_then(|i| self.by_code.get(i as usize).copied().flatten())
        };
        lookup(c as u32)
            .or(self.default_glyph)
            .or_else(|| lookup(u32::from('?')))
            .map(|g| &self.glyphs[usize::from(g)])
    }

    /// Pen advance of `text` in pixels.
    pub fn text_width(&self, text: &str) -> i32 {
        text.chars()
            .filter_map(|c| self.glyph(c))
            .map(|g| g.advance)
            .sum()
    }
}

#[derive(Debug, Clone, Copy)]
struct Metrics {
    left: i32,
    right: i32,
    advance: i32,
    ascent: i32,
    descent: i32,
}

fn table_format(data: &[u8], at: usize) -> Result<(u32, Reader<'_>), PcfError> {
    let format = Reader { data, msb: false }.u32(at)?;
    Ok((
        format,
        Reader {
            data,
            msb: format & FORMAT_BYTE_MSB != 0,
        },
    ))
}

fn read_metrics(data: &[u8], at: usize) -> Result<Vec<Metrics>, PcfError> {
    let (format, r) = table_format(data, at)?;
    let compressed = format & 0xffff_ff00 == FORMAT_COMPRESSED_METRICS;
    let (count, mut p) = if compressed {
        (r.u16(at + 4)? as usize, at + 6)
    } else {
        (r.u32(at + 4)? as usize, at + 8)
    };
    if count == 0 || count > MAX_GLYPHS {
        return Err(PcfError::Corrupt("implausible glyph count"));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let v = |i: usize| -> Result<i32, PcfError> {
            if compressed {
                Ok(i32::from(r.u8(p + i)?) - 0x80)
            } else {
                Ok(i32::from(r.u16(p + 2 * i)? as i16))
            }
        };
        let m = Metrics {
            left: v(0)?,
            right: v(1)?,
            advance: v(2)?,
            ascent: v(3)?,
            descent: v(4)?,
        };
        let sides = [m.right - m.left, m.ascent + m.descent, m.advance.abs()];
        if sides.iter().any(|s| *s > MAX_GLYPH_SIDE) {
            return Err(PcfError::Corrupt("implausibly large glyph"));
        }
        out.push(m);
        p += if compressed { 5 } else { 12 };
    }
    Ok(out)
}

fn read_bitmaps(
    data: &[u8],
    at: usize,
    metrics: &[Metrics],
) -> Result<Vec<Vec<Vec<bool>>>, PcfError> {
    let (format, r) = table_format(data, at)?;
    let count = r.u32(at + 4)? as usize;
    if count != metrics.len() {
        return Err(PcfError::Corrupt("bitmap and metrics counts differ"));
    }
    let pad_index = (format & 3) as usize;
    let row_pad = 1usize << pad_index;
    let unit = 1usize << ((format >> 4) & 3);
    let bit_msb = format & FORMAT_BIT_MSB != 0;
    let byte_msb = format & FORMAT_BYTE_MSB != 0;
    let offsets_at = at + 8;
    let sizes_at = offsets_at + 4 * count;
    let size = r.u32(sizes_at + 4 * pad_index)? as usize;
    let bits_at = sizes_at + 16;
    let bits = data
        .get(
            bits_at
                ..bits_at
                    .checked_add(size)
                    .ok_or(PcfError::Corrupt("bitmap size"))?,
        )
        .ok_or(PcfError::Corrupt("bitmap data past the end"))?;
    let mut out = Vec::with_capacity(count);
    for (i, m) in metrics.iter().enumerate() {
        let off = r.u32(offsets_at + 4 * i)? as usize;
        let width = (m.right - m.left).max(0) as usize;
        let height = (m.ascent + m.descent).max(0) as usize;
        let stride = width.div_ceil(8).div_ceil(row_pad) * row_pad;
        let mut rows = Vec::with_capacity(height);
        for y in 0..height {
            let mut row = Vec::with_capacity(width);
            for x in 0..width {
                let mut byte_index = y * stride + x / 8;
                // Bytes are stored in scan units; with LSB byte order each unit is reversed.
                if !byte_msb && unit > 1 {
                    let base = byte_index - byte_index % unit;
                    byte_index = base + (unit - 1 - byte_index % unit);
                }
                let byte = *bits
                    .get(off + byte_index)
                    .ok_or(PcfError::Corrupt("glyph bitmap past the end"))?;
                let bit = if bit_msb { 7 - (x % 8) } else { x % 8 };
                row.push(byte >> bit & 1 == 1);
            }
            rows.push(row);
        }
        out.push(rows);
    }
    Ok(out)
}

/// (first code, glyph index per code, default character code).
fn read_encodings(data: &[u8], at: usize) -> Result<(u32, Vec<Option<u16>>, u32), PcfError> {
    let (_, r) = table_format(data, at)?;
    let min2 = u32::from(r.u16(at + 4)?);
    let max2 = u32::from(r.u16(at + 6)?);
    let min1 = u32::from(r.u16(at + 8)?);
    let max1 = u32::from(r.u16(at + 10)?);
    let default = u32::from(r.u16(at + 12)?);
    if max2 < min2 || max1 < min1 || max2 > 255 || max1 > 255 {
        return Err(PcfError::Corrupt("bad encoding ranges"));
    }
    let cols = max2 - min2 + 1;
    let first = (min1 << 8) | min2;
    let last = (max1 << 8) | max2;
    let mut by_code = vec![None; (last - first + 1) as usize];
    let mut p = at + 14;
    for b1 in min1..=max1 {
        for b2 in min2..=max2 {
            let g = r.u16(p)?;
            p += 2;
            if g != 0xffff {
                by_code[(((b1 << 8) | b2) - first) as usize] = Some(g);
            }
        }
    }
    debug_assert!(cols > 0);
    Ok((first, by_code, default))
}

struct Reader<'a> {
    data: &'a [u8],
    msb: bool,
}

impl Reader<'_> {
    fn bytes<const N: usize>(&self, at: usize) -> Result<[u8; N], PcfError> {
        self.data
            .get(at..at + N)
            .and_then(|b| b.try_into().ok())
            .ok_or(PcfError::Corrupt("table past the end of the file"))
    }
    fn u8(&self, at: usize) -> Result<u8, PcfError> {
        Ok(self.bytes::<1>(at)?[0])
    }
    fn u16(&self, at: usize) -> Result<u16, PcfError> {
        let b = self.bytes(at)?;
        Ok(if self.msb {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }
    fn u32(&self, at: usize) -> Result<u32, PcfError> {
        let b = self.bytes(at)?;
        Ok(if self.msb {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A two-glyph PCF built by hand: `A` is a 3x2 box, the default char a 1x1 dot; big-endian
    /// tables, MSB bits, rows padded to 4 bytes, uncompressed metrics.
    pub(crate) fn tiny_font() -> Vec<u8> {
        let fmt: u32 = FORMAT_BYTE_MSB | FORMAT_BIT_MSB | 2;
        let mut metrics = fmt.to_le_bytes().to_vec();
        metrics.extend(2u32.to_be_bytes());
        for m in [[0i16, 3, 4, 2, 0, 0], [1, 2, 3, 1, 0, 0]] {
            for v in m {
                metrics.extend(v.to_be_bytes());
            }
        }
        let mut bitmaps = fmt.to_le_bytes().to_vec();
        bitmaps.extend(2u32.to_be_bytes());
        bitmaps.extend(0u32.to_be_bytes());
        bitmaps.extend(8u32.to_be_bytes());
        for s in [12u32, 12, 12, 12] {
            bitmaps.extend(s.to_be_bytes());
        }
        bitmaps.extend([0b1010_0000, 0, 0, 0, 0b1110_0000, 0, 0, 0]);
        bitmaps.extend([0b1000_0000, 0, 0, 0]);
        let mut enc = fmt.to_le_bytes().to_vec();
        for v in [b'A' as u16, b'B' as u16, 0, 0, b'B' as u16, 0, 1] {
            enc.extend(v.to_be_bytes());
        }
        let tables = [
            (PCF_METRICS, metrics),
            (PCF_BITMAPS, bitmaps),
            (PCF_BDF_ENCODINGS, enc),
        ];
        let mut out = b"\x01fcp".to_vec();
        out.extend((tables.len() as u32).to_le_bytes());
        let mut at = 8 + 16 * tables.len();
        let mut body: Vec<u8> = Vec::new();
        for (kind, t) in &tables {
            out.extend(kind.to_le_bytes());
            out.extend(fmt.to_le_bytes());
            out.extend((t.len() as u32).to_le_bytes());
            out.extend((at as u32).to_le_bytes());
            at += t.len();
            body.extend(t);
        }
        out.extend(body);
        out
    }

    #[test]
    fn reads_a_hand_built_font() {
        let f = Font::parse(&tiny_font()).unwrap();
        assert_eq!((f.ascent(), f.height()), (2, 2));
        let a = f.glyph('A').unwrap();
        assert_eq!((a.left, a.advance, a.width, a.ascent), (0, 4, 3, 2));
        assert_eq!(
            a.rows,
            vec![vec![true, false, true], vec![true, true, true]]
        );
        // `B` and characters the font lacks draw the default glyph.
        assert_eq!(f.glyph('B').unwrap().rows, vec![vec![true]]);
        assert_eq!(f.glyph('€').unwrap().advance, 3);
        assert_eq!(f.text_width("AAB"), 11);
    }

    #[test]
    fn broken_fonts_are_errors_not_panics() {
        assert_eq!(Font::parse(b"GIF89a").unwrap_err(), PcfError::NotPcf);
        let full = tiny_font();
        for cut in (8..full.len()).step_by(3) {
            assert!(Font::parse(&full[..cut]).is_err(), "cut at {cut} accepted");
        }
        let mut no_bitmaps = full.clone();
        no_bitmaps[8 + 16] = 0x40;
        assert_eq!(
            Font::parse(&no_bitmaps).unwrap_err(),
            PcfError::MissingTable("bitmaps")
        );
    }
}
