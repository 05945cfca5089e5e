//! A TIFF fax document with a tag line drawn into the top of each page.
//!
//! The document is rewritten in its own byte order with every tag of every page kept; only
//! the strips that hold the tag line band change, and in them only the band's lines and, for
//! 2-D codings, the line after the band (see [`super::ccitt::replace_top`]). Pages coded with
//! JBIG are left as they are and reported, so the caller can warn.

use super::ccitt::{self, Coding, CodingError, Layout};
use super::pcf::Font;

const MAX_PAGES: usize = 10_000;

const TAG_WIDTH: u16 = 256;
const TAG_LENGTH: u16 = 257;
const TAG_COMPRESSION: u16 = 259;
const TAG_FILL_ORDER: u16 = 266;
const TAG_STRIP_OFFSETS: u16 = 273;
const TAG_ROWS_PER_STRIP: u16 = 278;
const TAG_STRIP_BYTE_COUNTS: u16 = 279;
const TAG_X_RESOLUTION: u16 = 282;
const TAG_Y_RESOLUTION: u16 = 283;
const TAG_T4_OPTIONS: u16 = 292;
const TAG_RESOLUTION_UNIT: u16 = 296;
const TAG_TILE_WIDTH: u16 = 322;
/// Tags whose values point at other structures of the file; a fax document has none, and a
/// copy would point at nothing, so they are dropped.
const DROPPED_TAGS: [u16; 3] = [330, 34665, 34853];

const TYPE_SHORT: u16 = 3;
const TYPE_LONG: u16 = 4;

#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    #[error("not a TIFF document ({0})")]
    NotTiff(&'static str),
    #[error("corrupt TIFF document ({0})")]
    Corrupt(&'static str),
    /// `page` is 0-based; messages count from 1.
    #[error("page {}: {what} is not supported for tag lines", page + 1)]
    Unsupported { page: u32, what: String },
    #[error("page {}: {source}", page + 1)]
    Coding { page: u32, source: CodingError },
}

/// The rewritten document.
#[derive(Debug)]
pub struct Imprinted {
    pub bytes: Vec<u8>,
    /// Pages in `bytes`.
    pub pages: u32,
    /// Pages (0-based, in `bytes`) left without tag line, and why (JBIG).
    pub untouched: Vec<(u32, String)>,
}

/// The tag line's geometry on a page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    /// Pixels per line.
    pub width: usize,
    /// Horizontal resolution, pixels per inch.
    pub x_dpi: f64,
    /// Vertical resolution, lines per inch.
    pub y_dpi: f64,
}

/// Rows of the band the tag line takes at the top of a page (the font is drawn 1:1 at fine
/// resolution, every two font rows merged into one at standard, each doubled at 300 lpi up).
pub fn band_rows(font: &Font, y_dpi: f64) -> usize {
    let font_rows = font_band_rows(font);
    match vertical_scale(y_dpi) {
        Scale::Half => font_rows.div_ceil(2),
        Scale::Times(n) => font_rows * n,
    }
}

fn font_band_rows(font: &Font) -> usize {
    // One blank row above the text and two below it.
    font.height().max(0) as usize + 3
}

enum Scale {
    Half,
    Times(usize),
}

fn vertical_scale(y_dpi: f64) -> Scale {
    if y_dpi < 150.0 {
        Scale::Half
    } else if y_dpi < 300.0 {
        Scale::Times(1)
    } else {
        Scale::Times(2)
    }
}

/// The band's pixels (true = black): `fields` each centred in an equal share of the width,
/// clipped to it.
pub fn render_band(font: &Font, fields: &[String], g: Geometry) -> Vec<Vec<bool>> {
    let sx = if g.x_dpi >= 300.0 { 2 } else { 1 };
    let fw = g.width / sx;
    let fh = font_band_rows(font);
    let mut canvas = vec![vec![false; fw]; fh];
    let n = fields.len().max(1);
    let area = fw / n;
    let baseline = 1 + font.ascent();
    for (i, text) in fields.iter().enumerate() {
        let start = (area * i) as i32;
        let end = start + area as i32;
        let tw = font.text_width(text);
        let mut pen = start + ((area as i32 - tw) / 2).max(0);
        for c in text.chars() {
            let Some(gl) = font.glyph(c) else { continue };
            for (row, bits) in gl.rows.iter().enumerate() {
                let y = baseline - gl.ascent + row as i32;
                if y < 0 || y as usize >= fh {
                    continue;
                }
                for (col, &on) in bits.iter().enumerate() {
                    let x = pen + gl.left + col as i32;
                    if on && x >= start && x < end {
                        canvas[y as usize][x as usize] = true;
                    }
                }
            }
            pen += gl.advance;
        }
    }
    let widen = |row: &Vec<bool>| -> Vec<bool> {
        let mut out = vec![false; g.width];
        for (x, &p) in row.iter().enumerate() {
            for k in 0..sx {
                if let Some(o) = out.get_mut(x * sx + k) {
                    *o = p;
                }
            }
        }
        out
    };
    match vertical_scale(g.y_dpi) {
        Scale::Half => canvas
            .chunks(2)
            .map(|pair| {
                let merged: Vec<bool> = (0..fw).map(|x| pair.iter().any(|r| r[x])).collect();
                widen(&merged)
            })
            .collect(),
        Scale::Times(k) => canvas
            .iter()
            .flat_map(|r| std::iter::repeat_n(widen(r), k))
            .collect(),
    }
}

/// Rewrites `doc` from page `first` (0-based) on, drawing `fields(i)` (for the `i`-th page
/// written, 0-based) into the top of each page.
pub fn imprint(
    doc: &[u8],
    first: u32,
    font: &Font,
    fields: &dyn Fn(u32) -> Vec<String>,
) -> Result<Imprinted, ImagingError> {
    let tiff = Tiff::parse(doc)?;
    if first as usize >= tiff.pages.len() {
        return Err(ImagingError::Corrupt("no page left to send"));
    }
    let mut out = Writer::new(tiff.msb);
    let mut untouched = Vec::new();
    let mut prev_next_at: Option<usize> = None;
    for (i, ifd) in tiff.pages[first as usize..].iter().enumerate() {
        let page = i as u32;
        let strips = match page_strips(&tiff, ifd, page, font, &fields(page))? {
            PageStrips::New(s) => s,
            PageStrips::AsIs(why, s) => {
                untouched.push((page, why));
                s
            }
        };
        let mut offsets = Vec::with_capacity(strips.len());
        for s in &strips {
            out.align();
            offsets.push(out.buf.len() as u32);
            out.buf.extend_from_slice(s);
        }
        let counts: Vec<u32> = strips.iter().map(|s| s.len() as u32).collect();
        let ifd_at = out.write_ifd(ifd, &offsets, &counts);
        match prev_next_at {
            Some(at) => out.patch_u32(at, ifd_at as u32),
            None => out.patch_u32(4, ifd_at as u32),
        }
        prev_next_at = Some(out.buf.len() - 4);
    }
    Ok(Imprinted {
        bytes: out.buf,
        pages: tiff.pages.len() as u32 - first,
        untouched,
    })
}

/// The top `rows` rows of page `page` (0-based) as pixels (true = black), decoded by our own
/// decoder: for pictures and checks, not on the send path.
pub fn top_rows(doc: &[u8], page: usize, rows: usize) -> Result<Vec<Vec<bool>>, ImagingError> {
    let tiff = Tiff::parse(doc)?;
    let ifd = tiff
        .pages
        .get(page)
        .ok_or(ImagingError::Corrupt("no such page"))?;
    let one = |tag| tiff.values(ifd, tag).and_then(|v| v.first().copied());
    let t4 = one(TAG_T4_OPTIONS).unwrap_or(0);
    let coding = match one(TAG_COMPRESSION) {
        Some(3) if t4 & 1 == 1 => Coding::Mr,
        Some(3) => Coding::Mh,
        Some(4) => Coding::Mmr,
        other => {
            return Err(ImagingError::Unsupported {
                page: page as u32,
                what: format!("TIFF compression {other:?}"),
            });
        }
    };
    let width = one(TAG_WIDTH).ok_or(ImagingError::Corrupt("page without width"))?;
    let layout = Layout {
        coding,
        width: u16::try_from(width).map_err(|_| ImagingError::Corrupt("width"))?,
        byte_aligned_eol: t4 & 4 == 4,
    };
    let offsets = tiff.values(ifd, TAG_STRIP_OFFSETS).unwrap_or_default();
    let counts = tiff.values(ifd, TAG_STRIP_BYTE_COUNTS).unwrap_or_default();
    let mut out = Vec::with_capacity(rows);
    for (&o, &c) in offsets.iter().zip(&counts) {
        if out.len() >= rows {
            break;
        }
        let mut strip = tiff
            .data
            .get(o as usize..(o as usize).saturating_add(c as usize))
            .ok_or(ImagingError::Corrupt("strip outside the file"))?
            .to_vec();
        if one(TAG_FILL_ORDER) == Some(2) {
            reverse_bits(&mut strip);
        }
        let (lines, _) = ccitt::decode_top(&strip, layout, rows - out.len()).map_err(|source| {
            ImagingError::Coding {
                page: page as u32,
                source,
            }
        })?;
        for l in lines {
            let mut row = vec![false; width as usize];
            let mut black = false;
            let mut from = 0usize;
            for &x in l.iter().chain(std::iter::once(&(width as u16))) {
                row[from..x as usize].fill(black);
                black = !black;
                from = x as usize;
            }
            out.push(row);
        }
    }
    Ok(out)
}

enum PageStrips {
    New(Vec<Vec<u8>>),
    AsIs(String, Vec<Vec<u8>>),
}

fn page_strips(
    tiff: &Tiff<'_>,
    ifd: &Ifd,
    page: u32,
    font: &Font,
    fields: &[String],
) -> Result<PageStrips, ImagingError> {
    let unsupported = |what: String| ImagingError::Unsupported { page, what };
    let offsets = tiff.values(ifd, TAG_STRIP_OFFSETS).ok_or_else(|| {
        if ifd.get(TAG_TILE_WIDTH).is_some() {
            unsupported("a tiled page".into())
        } else {
            ImagingError::Corrupt("page without strips")
        }
    })?;
    let counts = tiff
        .values(ifd, TAG_STRIP_BYTE_COUNTS)
        .ok_or(ImagingError::Corrupt("page without strip byte counts"))?;
    if offsets.len() != counts.len() {
        return Err(ImagingError::Corrupt(
            "strip offsets and byte counts differ",
        ));
    }
    let mut strips = Vec::with_capacity(offsets.len());
    for (&o, &c) in offsets.iter().zip(&counts) {
        let s = tiff
            .data
            .get(o as usize..(o as usize).saturating_add(c as usize))
            .ok_or(ImagingError::Corrupt("strip outside the file"))?;
        strips.push(s.to_vec());
    }
    let one = |tag| tiff.values(ifd, tag).and_then(|v| v.first().copied());
    let compression = one(TAG_COMPRESSION).unwrap_or(1);
    let t4 = one(TAG_T4_OPTIONS).unwrap_or(0);
    let coding = match compression {
        3 if t4 & 1 == 1 => Coding::Mr,
        3 => Coding::Mh,
        4 => Coding::Mmr,
        9 | 10 => {
            return Ok(PageStrips::AsIs(
                "JBIG page sent without tag line".into(),
                strips,
            ));
        }
        other => return Err(unsupported(format!("TIFF compression {other}"))),
    };
    let width = one(TAG_WIDTH).ok_or(ImagingError::Corrupt("page without width"))?;
    let length = one(TAG_LENGTH).ok_or(ImagingError::Corrupt("page without length"))? as usize;
    let width16 = u16::try_from(width)
        .ok()
        .filter(|w| *w > 0)
        .ok_or_else(|| unsupported(format!("a page {width} pixels wide")))?;
    let rows_per_strip = one(TAG_ROWS_PER_STRIP)
        .map_or(length, |r| r as usize)
        .clamp(1, length.max(1));
    let lsb_first = one(TAG_FILL_ORDER) == Some(2);
    let per_cm = one(TAG_RESOLUTION_UNIT) == Some(3);
    let dpi = |tag| {
        let v = tiff.rational(ifd, tag)?;
        Some(if per_cm { v * 2.54 } else { v })
    };
    let geometry = Geometry {
        width: width as usize,
        x_dpi: dpi(TAG_X_RESOLUTION).unwrap_or(204.0),
        y_dpi: dpi(TAG_Y_RESOLUTION).unwrap_or(98.0),
    };
    let band: Vec<Vec<u16>> = render_band(font, fields, geometry)
        .iter()
        .take(length)
        .map(|r| ccitt::changes(r))
        .collect();
    let layout = Layout {
        coding,
        width: width16,
        byte_aligned_eol: t4 & 4 == 4,
    };
    for (s, strip) in strips.iter_mut().enumerate() {
        let r0 = s * rows_per_strip;
        if r0 >= band.len() {
            break;
        }
        let rows = rows_per_strip.min(length.saturating_sub(r0));
        let new = &band[r0..band.len().min(r0 + rows)];
        if lsb_first {
            reverse_bits(strip);
        }
        let mut done = ccitt::replace_top(strip, layout, rows, new)
            .map_err(|source| ImagingError::Coding { page, source })?;
        if lsb_first {
            reverse_bits(&mut done);
        }
        *strip = done;
    }
    Ok(PageStrips::New(strips))
}

fn reverse_bits(b: &mut [u8]) {
    for x in b {
        *x = x.reverse_bits();
    }
}

struct Entry {
    tag: u16,
    kind: u16,
    count: u32,
    /// The value bytes, in the file's byte order.
    raw: Vec<u8>,
}

struct Ifd {
    entries: Vec<Entry>,
}

impl Ifd {
    fn get(&self, tag: u16) -> Option<&Entry> {
        self.entries.iter().find(|e| e.tag == tag)
    }
}

struct Tiff<'a> {
    data: &'a [u8],
    msb: bool,
    pages: Vec<Ifd>,
}

fn type_size(kind: u16) -> Option<usize> {
    Some(match kind {
        1 | 2 | 6 | 7 => 1,
        3 | 8 => 2,
        4 | 9 | 11 | 13 => 4,
        5 | 10 | 12 => 8,
        _ => return None,
    })
}

impl<'a> Tiff<'a> {
    fn parse(data: &'a [u8]) -> Result<Self, ImagingError> {
        let msb = match data.get(..2) {
            Some(b"II") => false,
            Some(b"MM") => true,
            _ => return Err(ImagingError::NotTiff("no II/MM byte-order mark")),
        };
        let mut t = Tiff {
            data,
            msb,
            pages: Vec::new(),
        };
        if t.u16(2)? != 42 {
            return Err(ImagingError::NotTiff("bad magic number"));
        }
        let mut at = t.u32(4)? as usize;
        while at != 0 {
            if t.pages.len() >= MAX_PAGES {
                return Err(ImagingError::Corrupt("too many directories"));
            }
            let n = t.u16(at)? as usize;
            let mut entries = Vec::with_capacity(n);
            for i in 0..n {
                let e = at + 2 + 12 * i;
                let kind = t.u16(e + 2)?;
                let count = t.u32(e + 4)?;
                let Some(size) = type_size(kind) else {
                    // An unknown type cannot be copied faithfully; fax writers use none.
                    return Err(ImagingError::Corrupt("directory entry of an unknown type"));
                };
                let len = size
                    .checked_mul(count as usize)
                    .ok_or(ImagingError::Corrupt("entry size"))?;
                let raw = if len <= 4 {
                    t.slice(e + 8, len)?.to_vec()
                } else {
                    let off = t.u32(e + 8)? as usize;
                    t.slice(off, len)?.to_vec()
                };
                entries.push(Entry {
                    tag: t.u16(e)?,
                    kind,
                    count,
                    raw,
                });
            }
            t.pages.push(Ifd { entries });
            let next = t.u32(at + 2 + 12 * n)? as usize;
            if next != 0 && next <= at {
                return Err(ImagingError::Corrupt("directory chain goes backwards"));
            }
            at = next;
        }
        if t.pages.is_empty() {
            return Err(ImagingError::Corrupt("no pages"));
        }
        Ok(t)
    }

    fn slice(&self, at: usize, len: usize) -> Result<&'a [u8], ImagingError> {
        self.data
            .get(at..at.saturating_add(len))
            .ok_or(ImagingError::Corrupt("value outside the file"))
    }

    fn u16(&self, at: usize) -> Result<u16, ImagingError> {
        let b: [u8; 2] = self.slice(at, 2)?.try_into().unwrap_or_default();
        Ok(if self.msb {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32(&self, at: usize) -> Result<u32, ImagingError> {
        let b: [u8; 4] = self.slice(at, 4)?.try_into().unwrap_or_default();
        Ok(self.u32_of(b))
    }

    fn u32_of(&self, b: [u8; 4]) -> u32 {
        if self.msb {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    /// SHORT or LONG values of `tag`.
    fn values(&self, ifd: &Ifd, tag: u16) -> Option<Vec<u32>> {
        let e = ifd.get(tag)?;
        match e.kind {
            TYPE_SHORT => Some(
                e.raw
                    .chunks_exact(2)
                    .map(|c| {
                        let b = [c[0], c[1]];
                        u32::from(if self.msb {
                            u16::from_be_bytes(b)
                        } else {
                            u16::from_le_bytes(b)
                        })
                    })
                    .collect(),
            ),
            TYPE_LONG => Some(
                e.raw
                    .chunks_exact(4)
                    .map(|c| self.u32_of([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            _ => None,
        }
    }

    fn rational(&self, ifd: &Ifd, tag: u16) -> Option<f64> {
        let e = ifd.get(tag)?;
        if e.kind != 5 || e.raw.len() < 8 {
            return None;
        }
        let num = self.u32_of(e.raw[0..4].try_into().ok()?);
        let den = self.u32_of(e.raw[4..8].try_into().ok()?);
        (den != 0).then(|| f64::from(num) / f64::from(den))
    }
}

struct Writer {
    buf: Vec<u8>,
    msb: bool,
}

impl Writer {
    fn new(msb: bool) -> Self {
        let mut buf = Vec::with_capacity(128 * 1024);
        buf.extend_from_slice(if msb { b"MM" } else { b"II" });
        let mut w = Writer { buf, msb };
        w.put_u16(42);
        w.put_u32(0);
        w
    }

    fn align(&mut self) {
        if self.buf.len() % 2 == 1 {
            self.buf.push(0);
        }
    }

    fn put_u16(&mut self, v: u16) {
        let b = if self.msb {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.buf.extend_from_slice(&b);
    }

    fn put_u32(&mut self, v: u32) {
        let b = if self.msb {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.buf.extend_from_slice(&b);
    }

    fn patch_u32(&mut self, at: usize, v: u32) {
        let b = if self.msb {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.buf[at..at + 4].copy_from_slice(&b);
    }

    fn longs(&self, v: &[u32]) -> Vec<u8> {
        v.iter()
            .flat_map(|x| {
                if self.msb {
                    x.to_be_bytes()
                } else {
                    x.to_le_bytes()
                }
            })
            .collect()
    }

    /// Writes the page's values that do not fit in an entry, then the directory; returns the
    /// directory's offset. Its next-directory field is the last 4 bytes written (zero).
    fn write_ifd(&mut self, ifd: &Ifd, offsets: &[u32], counts: &[u32]) -> usize {
        let mut entries: Vec<(u16, u16, u32, Vec<u8>)> = Vec::with_capacity(ifd.entries.len());
        for e in &ifd.entries {
            if DROPPED_TAGS.contains(&e.tag) {
                continue;
            }
            let (kind, count, raw) = match e.tag {
                TAG_STRIP_OFFSETS => (TYPE_LONG, offsets.len() as u32, self.longs(offsets)),
                TAG_STRIP_BYTE_COUNTS => (TYPE_LONG, counts.len() as u32, self.longs(counts)),
                _ => (e.kind, e.count, e.raw.clone()),
            };
            entries.push((e.tag, kind, count, raw));
        }
        entries.sort_by_key(|e| e.0);
        let mut value_at = Vec::with_capacity(entries.len());
        for (_, _, _, raw) in &entries {
            if raw.len() > 4 {
                self.align();
                value_at.push(self.buf.len() as u32);
                self.buf.extend_from_slice(raw);
            } else {
                value_at.push(0);
            }
        }
        self.align();
        let at = self.buf.len();
        self.put_u16(entries.len() as u16);
        for ((tag, kind, count, raw), off) in entries.iter().zip(value_at) {
            self.put_u16(*tag);
            self.put_u16(*kind);
            self.put_u32(*count);
            if raw.len() > 4 {
                self.put_u32(off);
            } else {
                let mut v = raw.clone();
                v.resize(4, 0);
                self.buf.extend_from_slice(&v);
            }
        }
        self.put_u32(0);
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::pcf::tests::tiny_font;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/fax")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn fields_are_centred_in_equal_areas() {
        let font = Font::parse(&tiny_font()).unwrap();
        let g = Geometry {
            width: 90,
            x_dpi: 204.0,
            y_dpi: 196.0,
        };
        let band = render_band(&font, &["A".into(), "AA".into(), String::new()], g);
        assert_eq!(band.len(), band_rows(&font, 196.0));
        let ink: Vec<usize> = (0..90).filter(|&x| band.iter().any(|r| r[x])).collect();
        // Areas of 30: "A" (advance 4, ink 0..3) starts at 13, "AA" (8) at 30 + 11.
        assert_eq!(ink, [13, 14, 15, 41, 42, 43, 45, 46, 47]);
        assert_eq!(band_rows(&font, 98.0), band_rows(&font, 196.0).div_ceil(2));
        assert_eq!(band_rows(&font, 391.0), 2 * band_rows(&font, 196.0));
    }

    #[test]
    fn every_page_is_rewritten_and_the_rest_kept() {
        let font = Font::parse(&tiny_font()).unwrap();
        let doc = fixture("test3.tif");
        let out = imprint(&doc, 1, &font, &|p| vec![format!("A{p}")]).unwrap();
        assert_eq!(out.pages, 2);
        assert!(out.untouched.is_empty());
        let t = Tiff::parse(&out.bytes).unwrap();
        assert_eq!(t.pages.len(), 2);
        assert!(imprint(&doc, 3, &font, &|_| vec![]).is_err());
        assert!(matches!(
            imprint(b"GIF89a", 0, &font, &|_| vec![]),
            Err(ImagingError::NotTiff(_))
        ));
    }

    /// `test1.tif` (little-endian, one page) with its Compression tag set to `value`.
    fn with_compression(value: u16) -> Vec<u8> {
        let mut d = fixture("test1.tif");
        assert_eq!(&d[..2], b"II");
        let at = u32::from_le_bytes([d[4], d[5], d[6], d[7]]) as usize;
        let n = u16::from_le_bytes([d[at], d[at + 1]]) as usize;
        let e = (0..n)
            .map(|i| at + 2 + 12 * i)
            .find(|&e| u16::from_le_bytes([d[e], d[e + 1]]) == TAG_COMPRESSION)
            .unwrap();
        d[e + 8..e + 10].copy_from_slice(&value.to_le_bytes());
        d
    }

    #[test]
    fn jbig_pages_are_left_as_they_are_and_reported() {
        let font = Font::parse(&tiny_font()).unwrap();
        let doc = with_compression(9);
        let out = imprint(&doc, 0, &font, &|_| vec!["A".into()]).unwrap();
        assert_eq!(out.untouched.len(), 1);
        assert!(out.untouched[0].1.contains("JBIG"));
        let (a, b) = (Tiff::parse(&doc).unwrap(), Tiff::parse(&out.bytes).unwrap());
        let strip = |t: &Tiff<'_>| {
            let o = t.values(&t.pages[0], TAG_STRIP_OFFSETS).unwrap()[0] as usize;
            let c = t.values(&t.pages[0], TAG_STRIP_BYTE_COUNTS).unwrap()[0] as usize;
            t.data[o..o + c].to_vec()
        };
        assert_eq!(strip(&a), strip(&b), "the JBIG data is sent as it is");
    }

    #[test]
    fn other_encodings_and_broken_data_are_errors() {
        let font = Font::parse(&tiny_font()).unwrap();
        let e = imprint(&with_compression(5), 0, &font, &|_| vec!["A".into()]).unwrap_err();
        assert!(e.to_string().contains("compression 5"), "{e}");
        // A strip cut short: the band's lines are not all there.
        let mut doc = fixture("test1.tif");
        let at = u32::from_le_bytes([doc[4], doc[5], doc[6], doc[7]]) as usize;
        let n = u16::from_le_bytes([doc[at], doc[at + 1]]) as usize;
        let e = (0..n)
            .map(|i| at + 2 + 12 * i)
            .find(|&e| u16::from_le_bytes([doc[e], doc[e + 1]]) == TAG_STRIP_BYTE_COUNTS)
            .unwrap();
        doc[e + 8..e + 12].copy_from_slice(&4u32.to_le_bytes());
        let e = imprint(&doc, 0, &font, &|_| vec!["A".into()]).unwrap_err();
        assert!(matches!(e, ImagingError::Coding { page: 0, .. }), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn damaged_documents_and_fonts_never_panic(
            flips in proptest::collection::vec((0usize..6396, proptest::num::u8::ANY), 1..16),
        ) {
            let font_bytes = tiny_font();
            let font = Font::parse(&font_bytes).unwrap();
            let mut doc = fixture("test1.tif");
            let mut bad_font = font_bytes.clone();
            for (at, v) in &flips {
                let at = at % doc.len();
                doc[at] = *v;
                let f = at % bad_font.len();
                bad_font[f] = *v;
            }
            let _ = imprint(&doc, 0, &font, &|_| vec!["A|AA".into()]);
            let _ = Font::parse(&bad_font);
        }
    }
}
