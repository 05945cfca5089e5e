//! A tiny TIFF IFD walker: counts pages and cuts multi-page fixtures to N pages.

use std::path::Path;

use super::capture::fax_fixtures_dir;

fn rd16(b: &[u8], off: usize, le: bool) -> Option<u16> {
    let s = b.get(off..off + 2)?;
    Some(if le {
        u16::from_le_bytes([s[0], s[1]])
    } else {
        u16::from_be_bytes([s[0], s[1]])
    })
}

fn rd32(b: &[u8], off: usize, le: bool) -> Option<u32> {
    let s = b.get(off..off + 4)?;
    let a = [s[0], s[1], s[2], s[3]];
    Some(if le {
        u32::from_le_bytes(a)
    } else {
        u32::from_be_bytes(a)
    })
}

/// Offsets of the IFDs of a classic TIFF, in chain order. `None` if the bytes are not a TIFF.
pub fn ifd_offsets(b: &[u8]) -> Option<Vec<usize>> {
    let le = match b.get(0..4)? {
        [b'I', b'I', 42, 0] => true,
        [b'M', b'M', 0, 42] => false,
        _ => return None,
    };
    let mut out = Vec::new();
    let mut off = rd32(b, 4, le)? as usize;
    while off != 0 {
        if out.contains(&off) || out.len() > 10_000 {
            return None; // a loop in the chain
        }
        out.push(off);
        let n = rd16(b, off, le)? as usize;
        off = rd32(b, off + 2 + 12 * n, le)? as usize;
    }
    Some(out)
}

/// Number of pages (IFDs) of a TIFF file; `None` if unreadable or not a TIFF.
pub fn count_pages(path: &Path) -> Option<usize> {
    let b = std::fs::read(path).ok()?;
    ifd_offsets(&b).map(|v| v.len())
}

/// The bytes of a TIFF cut to its first `n` pages (the chain ends after IFD `n-1`).
pub fn truncate_pages(b: &[u8], n: usize) -> Option<Vec<u8>> {
    let le = b.first() == Some(&b'I');
    let ifds = ifd_offsets(b)?;
    if n == 0 || n > ifds.len() {
        return None;
    }
    let mut out = b.to_vec();
    let off = ifds[n - 1];
    let cnt = rd16(b, off, le)? as usize;
    let at = off + 2 + 12 * cnt;
    out.get_mut(at..at + 4)?.copy_from_slice(&[0, 0, 0, 0]);
    Some(out)
}

/// Writes a received-fax TIFF with `pages` pages (1..=12) at `path`, made from the fixtures
/// `test1.tif` (tiffcp of test3.tif page 0), `test3.tif` or `test12.tif` cut to `pages`.
/// More than 12 pages are capped at 12.
pub fn write_received(path: &Path, pages: usize) -> std::io::Result<()> {
    let dir = fax_fixtures_dir();
    let bytes = match pages {
        1 => std::fs::read(dir.join("test1.tif"))?,
        3 => std::fs::read(dir.join("test3.tif"))?,
        n => {
            let src = std::fs::read(dir.join("test12.tif"))?;
            truncate_pages(&src, n.clamp(1, 12)).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "test12.tif is not a TIFF")
            })?
        }
    };
    std::fs::write(path, bytes)
}

/// The DCS spandsp logs in `FaxDcs` for the captures' sessions: V.17 14 400 bit/s, fine,
/// ECM, T.85 (JBIG), as hex FIF octets with bit 1 the top bit of the first.
pub const SPANDSP_DCS: &str = "00 46 01 21 01 01 01 01 01 04";
/// `FaxRecvTime` the fake gives each page (seconds).
pub const SPANDSP_PAGE_SECONDS: u32 = 4;

/// A received document as spandsp leaves it (t4_rx.c): each page carries the remote ident in
/// ImageDescription, the DCS in FaxDcs and its FaxRecvTime; `PageNumber` is (n, 1) while
/// receiving and gets the real total when spandsp closes the file (`finished`).
pub fn spandsp_document(pages: usize, remote: &str, finished: bool) -> std::io::Result<Vec<u8>> {
    let dir = fax_fixtures_dir();
    let src = std::fs::read(dir.join("test12.tif"))?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "test12.tif");
    let cut = truncate_pages(&src, pages.clamp(1, 12)).ok_or_else(bad)?;
    let total = if finished {
        pages.clamp(1, 12) as u16
    } else {
        1
    };
    let numbered = set_page_totals(&cut, total).ok_or_else(bad)?;
    use fsfax::tifftags::{self, Value};
    let (out, _) = tifftags::with_tags(&numbered, |_| {
        vec![
            (
                tifftags::TAG_IMAGE_DESCRIPTION,
                Value::Ascii(remote.to_owned()),
            ),
            (tifftags::TAG_FAX_DCS, Value::Ascii(SPANDSP_DCS.to_owned())),
            (
                tifftags::TAG_FAX_RECV_TIME,
                Value::Long(SPANDSP_PAGE_SECONDS),
            ),
        ]
    })
    .map_err(|_| bad())?;
    Ok(out)
}

/// Writes [`spandsp_document`] (finished) at `path`.
pub fn write_received_spandsp(path: &Path, pages: usize, remote: &str) -> std::io::Result<()> {
    std::fs::write(path, spandsp_document(pages, remote, true)?)
}

/// Sets the total of every page's `PageNumber` (tag 297, two SHORTs in the entry) to `total`.
fn set_page_totals(b: &[u8], total: u16) -> Option<Vec<u8>> {
    let le = b.first() == Some(&b'I');
    let mut out = b.to_vec();
    for ifd in ifd_offsets(b)? {
        let n = rd16(b, ifd, le)? as usize;
        for i in 0..n {
            let e = ifd + 2 + 12 * i;
            if rd16(b, e, le)? == 297 {
                let v = if le {
                    total.to_le_bytes()
                } else {
                    total.to_be_bytes()
                };
                out.get_mut(e + 10..e + 12)?.copy_from_slice(&v);
            }
        }
    }
    Some(out)
}
