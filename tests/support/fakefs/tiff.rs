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
