//! Just enough TIFF to count the pages (image file directories) of a fax document.
//!
//! fsfaxsend needs page counts to resume a partly sent job at the right page, and fsfaxd needs to
//! know whether a received document holds at least one page before it hands it to faxrcvd.
//! Running `tiffinfo` for that would add a process per call; walking the IFD chain is a few reads.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// More directories than any fax document has; a longer chain is treated as corrupt (or a loop).
const MAX_PAGES: u32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum TiffError {
    #[error("cannot read TIFF {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a TIFF file ({why})")]
    NotTiff { path: PathBuf, why: &'static str },
    #[error("{path}: corrupt TIFF directory chain ({why})")]
    Corrupt { path: PathBuf, why: &'static str },
}

/// Counts the pages of the TIFF file at `path`. An empty or truncated file is an error, so a
/// reception FreeSWITCH is still writing or aborted is never mistaken for a document.
pub fn count_pages(path: &Path) -> Result<u32, TiffError> {
    let io = |source| TiffError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    count_pages_in(&mut file, len).map_err(|e| e.at(path))
}

/// [`count_pages`] of the document at `path`, already read into `data`.
pub fn count_pages_of(path: &Path, data: &[u8]) -> Result<u32, TiffError> {
    count_pages_in(&mut std::io::Cursor::new(data), data.len() as u64).map_err(|e| e.at(path))
}

/// Counts the pages of a TIFF held in memory, with the same checks as [`count_pages`].
pub(crate) fn count_pages_in_bytes(data: &[u8]) -> Result<u32, &'static str> {
    count_pages_in(&mut std::io::Cursor::new(data), data.len() as u64).map_err(|e| match e {
        Walk::Io(_) => "unreadable",
        Walk::NotTiff(why) | Walk::Corrupt(why) => why,
    })
}

enum Walk {
    Io(std::io::Error),
    NotTiff(&'static str),
    Corrupt(&'static str),
}

impl Walk {
    /// The error, naming the file.
    fn at(self, path: &Path) -> TiffError {
        let path = path.to_path_buf();
        match self {
            Walk::Io(source) => TiffError::Io { path, source },
            Walk::NotTiff(why) => TiffError::NotTiff { path, why },
            Walk::Corrupt(why) => TiffError::Corrupt { path, why },
        }
    }
}

fn count_pages_in<R: Read + Seek>(r: &mut R, len: u64) -> Result<u32, Walk> {
    let mut header = [0u8; 8];
    r.read_exact(&mut header).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Walk::NotTiff("shorter than a TIFF header")
        } else {
            Walk::Io(e)
        }
    })?;
    let little = match &header[0..2] {
        b"II" => true,
        b"MM" => false,
        _ => return Err(Walk::NotTiff("no II/MM byte-order mark")),
    };
    let u16_at = |b: [u8; 2]| {
        if little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }
    };
    let u32_at = |b: [u8; 4]| {
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    match u16_at([header[2], header[3]]) {
        42 => {}
        43 => return Err(Walk::NotTiff("BigTIFF is not a fax format")),
        _ => return Err(Walk::NotTiff("bad magic number")),
    }
    let mut offset = u64::from(u32_at([header[4], header[5], header[6], header[7]]));
    let mut pages = 0u32;
    while offset != 0 {
        if pages >= MAX_PAGES {
            return Err(Walk::Corrupt("too many directories (a loop?)"));
        }
        if offset < 8 || offset + 2 > len {
            return Err(Walk::Corrupt("directory offset outside the file"));
        }
        r.seek(SeekFrom::Start(offset)).map_err(Walk::Io)?;
        let mut count = [0u8; 2];
        r.read_exact(&mut count).map_err(Walk::Io)?;
        let entries = u64::from(u16_at(count));
        let next_at = offset + 2 + entries * 12;
        if next_at + 4 > len {
            return Err(Walk::Corrupt("directory runs past the end of the file"));
        }
        let mut entries_raw = vec![0u8; (entries * 12) as usize + 4];
        r.read_exact(&mut entries_raw).map_err(Walk::Io)?;
        check_strips(
            r,
            &entries_raw[..(entries * 12) as usize],
            len,
            &u16_at,
            &u32_at,
        )?;
        let tail = entries_raw.len() - 4;
        let next = [
            entries_raw[tail],
            entries_raw[tail + 1],
            entries_raw[tail + 2],
            entries_raw[tail + 3],
        ];
        pages += 1;
        let next = u64::from(u32_at(next));
        if next != 0 && next <= offset {
            // Directories may legally go backwards, but a chain that revisits itself never ends;
            // fax writers (libtiff, spandsp) always append, so refuse anything that goes back.
            return Err(Walk::Corrupt("directory chain goes backwards"));
        }
        offset = next;
    }
    Ok(pages)
}

const TAG_STRIP_OFFSETS: u16 = 273;
const TAG_STRIP_BYTE_COUNTS: u16 = 279;
/// Fax pages have a handful of strips; this bounds what a hostile file can make us read.
const MAX_STRIPS: u32 = 100_000;

/// Checks that every strip of one directory lies inside the file, so a document whose image
/// data was cut off (a crash while FreeSWITCH wrote it, a full disk) is not counted as a page.
fn check_strips<R: Read + Seek>(
    r: &mut R,
    entries: &[u8],
    len: u64,
    u16_at: &impl Fn([u8; 2]) -> u16,
    u32_at: &impl Fn([u8; 4]) -> u32,
) -> Result<(), Walk> {
    let mut offsets = None;
    let mut counts = None;
    for e in entries.chunks_exact(12) {
        let tag = u16_at([e[0], e[1]]);
        if tag != TAG_STRIP_OFFSETS && tag != TAG_STRIP_BYTE_COUNTS {
            continue;
        }
        let kind = u16_at([e[2], e[3]]);
        let n = u32_at([e[4], e[5], e[6], e[7]]);
        let size: u64 = match kind {
            3 => 2,
            4 => 4,
            _ => return Err(Walk::Corrupt("strip tag of an unexpected type")),
        };
        if n == 0 || n > MAX_STRIPS {
            return Err(Walk::Corrupt("implausible number of strips"));
        }
        let total = size * u64::from(n);
        let raw = if total <= 4 {
            e[8..8 + total as usize].to_vec()
        } else {
            let at = u64::from(u32_at([e[8], e[9], e[10], e[11]]));
            if at + total > len {
                return Err(Walk::Corrupt("strip table outside the file"));
            }
            r.seek(SeekFrom::Start(at)).map_err(Walk::Io)?;
            let mut buf = vec![0u8; total as usize];
            r.read_exact(&mut buf).map_err(Walk::Io)?;
            buf
        };
        let values: Vec<u64> = raw
            .chunks_exact(size as usize)
            .map(|c| match c {
                [a, b] => u64::from(u16_at([*a, *b])),
                [a, b, c, d] => u64::from(u32_at([*a, *b, *c, *d])),
                _ => 0,
            })
            .collect();
        if tag == TAG_STRIP_OFFSETS {
            offsets = Some(values);
        } else {
            counts = Some(values);
        }
    }
    let (Some(offsets), Some(counts)) = (offsets, counts) else {
        return Err(Walk::Corrupt("page without image strips"));
    };
    if offsets.len() != counts.len() {
        return Err(Walk::Corrupt("strip offsets and byte counts disagree"));
    }
    if offsets.iter().zip(&counts).any(|(o, c)| o + c > len) {
        return Err(Walk::Corrupt("image data cut off"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/fax")
            .join(name)
    }

    #[test]
    fn counts_the_real_fixtures() {
        assert_eq!(count_pages(&fixture("test3.tif")).unwrap(), 3);
        assert_eq!(count_pages(&fixture("test12.tif")).unwrap(), 12);
    }

    #[test]
    fn truncated_file_is_an_error_not_a_short_count() {
        let full = std::fs::read(fixture("test3.tif")).unwrap();
        for cut in [0, 3, 7, 9, full.len() / 2, full.len() - 1] {
            let data = &full[..cut];
            let r = count_pages_in(&mut Cursor::new(data), data.len() as u64);
            assert!(
                r.is_err(),
                "cut at {cut} was accepted as {:?} pages",
                r.ok()
            );
        }
        let r = count_pages_in(&mut Cursor::new(&full[..4]), 4);
        assert!(matches!(r, Err(Walk::NotTiff(_))));
    }

    #[test]
    fn garbage_and_loops_are_refused() {
        let r = count_pages_in(&mut Cursor::new(b"GIF89a\0\0\0\0"), 10);
        assert!(matches!(r, Err(Walk::NotTiff(_))));
        // A directory whose "next" points to itself.
        let mut t = b"II*\0\x08\0\0\0".to_vec();
        t.extend_from_slice(&[0, 0]); // zero entries
        t.extend_from_slice(&8u32.to_le_bytes());
        let len = t.len() as u64;
        let r = count_pages_in(&mut Cursor::new(t), len);
        assert!(matches!(r, Err(Walk::Corrupt(_))));
        // Big-endian, one directory with one 4-byte strip right after it, then the chain's end.
        let mut t = b"MM\0*\0\0\0\x08".to_vec();
        t.extend_from_slice(&[0, 2]);
        t.extend_from_slice(&[1, 17, 0, 4, 0, 0, 0, 1, 0, 0, 0, 38]); // StripOffsets = 38
        t.extend_from_slice(&[1, 23, 0, 3, 0, 0, 0, 1, 0, 4, 0, 0]); // StripByteCounts = 4
        t.extend_from_slice(&[0, 0, 0, 0]);
        t.extend_from_slice(b"data");
        let len = t.len() as u64;
        assert_eq!(
            count_pages_in(&mut Cursor::new(t.clone()), len).ok(),
            Some(1)
        );
        // The same with its image data cut off.
        let r = count_pages_in(&mut Cursor::new(&t[..t.len() - 1]), len - 1);
        assert!(matches!(r, Err(Walk::Corrupt(_))));
    }
}
