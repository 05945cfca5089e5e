//! Adds HylaFAX's private tags to a received fax document, as faxgetty writes them.
//!
//! FreeSWITCH's TIFF has no `FaxRecvParams`, so `faxinfo` and every faxrcvd mail said
//! "Signal Rate: 0 bit/s". The edit is byte-level and never touches image data: each page gets
//! a new directory (its old entries plus the missing tags) appended at the end of the file, the
//! chain is relinked through the new directories, and the old ones stay behind unreferenced.
//!
//! The edit is made in place when fsfaxd may write the file: the new directories are appended
//! and synced, then the header's 4-byte first-directory pointer is rewritten. At every moment
//! the file is a valid TIFF (the old chain or the new one, both whole), and no new file is
//! created (on ext4 creating and deleting a file per fax costs more than the edit). When the
//! file is not ours to write (FreeSWITCH's, another user's), the result goes to a new file in
//! the same directory, is synced and renamed over the original. On any failure the original
//! is left as it was.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// HylaFAX `TIFFTAG_FAXRECVPARAMS`: the encoded `Class2Params` of the session (LONG).
pub const TAG_FAX_RECV_PARAMS: u16 = 34908;
/// HylaFAX `TIFFTAG_FAXSUBADDRESS`: the received SUB (ASCII).
pub const TAG_FAX_SUB_ADDRESS: u16 = 34909;
/// HylaFAX `TIFFTAG_FAXRECVTIME`: seconds spent receiving the page (LONG).
pub const TAG_FAX_RECV_TIME: u16 = 34910;
/// TIFF `ImageDescription`: faxgetty stores the remote TSI here; faxinfo shows it as Sender.
pub const TAG_IMAGE_DESCRIPTION: u16 = 270;
const TAG_IMAGE_WIDTH: u16 = 256;
const TAG_Y_RESOLUTION: u16 = 283;
const TAG_RESOLUTION_UNIT: u16 = 296;

const TYPE_ASCII: u16 = 2;
const TYPE_SHORT: u16 = 3;
const TYPE_LONG: u16 = 4;
const TYPE_RATIONAL: u16 = 5;

/// Why the tags could not be added; the document is unchanged. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TagError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}; HylaFAX tags not added")]
    Malformed { path: PathBuf, why: &'static str },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One tag value to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Long(u32),
    Ascii(String),
}

/// What one page of the document looks like, for choosing its tag values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageInfo {
    /// 0-based page number.
    pub index: usize,
    pub pages: usize,
    pub width: Option<u32>,
    /// Vertical resolution in lines per inch, when the page says.
    pub lpi: Option<u32>,
}

/// Adds, to every page of the TIFF at `path`, the tags `tags` returns for it that the page
/// does not have yet (existing tags are kept as they are). Returns how many tags were added;
/// 0 leaves the file untouched.
pub fn add_tags(
    path: &Path,
    tags: impl Fn(PageInfo) -> Vec<(u16, Value)>,
) -> Result<usize, TagError> {
    Document::open(path)?.add_tags(tags)
}

/// A received document, opened and read once for everything done to it after the call:
/// counting its pages, adding the tags, setting its mode (one open and one read, where a
/// count, an edit and a chmod by path took three opens and a dozen reads and seeks).
#[derive(Debug)]
pub struct Document {
    path: PathBuf,
    /// Open for writing when fsfaxd may write the file (the edit is then made in place).
    file: std::fs::File,
    writable: bool,
    data: Vec<u8>,
    /// The tags went to a new file renamed over `path`: `file` is the old one.
    replaced: bool,
}

impl Document {
    /// Opens (read-write when allowed, else read-only) and reads the document at `path`.
    pub fn open(path: &Path) -> Result<Self, TagError> {
        let rerr = |source| TagError::Read {
            path: path.to_path_buf(),
            source,
        };
        let (file, writable) = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
        {
            Ok(f) => (f, true),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                (std::fs::File::open(path).map_err(rerr)?, false)
            }
            Err(e) => return Err(rerr(e)),
        };
        let mut data = Vec::new();
        (&file).read_to_end(&mut data).map_err(rerr)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            writable,
            data,
            replaced: false,
        })
    }

    /// The document's bytes as read.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// [`add_tags`] on this document.
    pub fn add_tags(
        &mut self,
        tags: impl Fn(PageInfo) -> Vec<(u16, Value)>,
    ) -> Result<usize, TagError> {
        let (out, added) = with_tags(&self.data, tags).map_err(|why| TagError::Malformed {
            path: self.path.clone(),
            why,
        })?;
        if added == 0 {
            return Ok(0);
        }
        let written = if self.writable {
            in_place(&self.file, &self.data, &out)
        } else {
            replace(&self.path, &out).map(|()| self.replaced = true)
        };
        written.map_err(|source| TagError::Write {
            path: self.path.clone(),
            source,
        })?;
        self.data = out;
        Ok(added)
    }

    /// Sets the document's permission bits (through the open file, unless the tags replaced it).
    pub fn set_mode(&self, mode: u32) -> std::io::Result<()> {
        let perms = std::fs::Permissions::from_mode(mode);
        if self.replaced {
            std::fs::set_permissions(&self.path, perms)
        } else {
            self.file.set_permissions(perms)
        }
    }
}

/// Turns `file` (holding `old`) into `new`, which [`with_tags`] made by appending to `old` and
/// changing its first-directory pointer: the appended part is written and synced before the
/// pointer, so the file is a whole TIFF at every moment (a failure, a kill, a crash of the
/// machine leave the old document, possibly with unreferenced bytes at its end).
fn in_place(file: &std::fs::File, old: &[u8], new: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let n = old.len();
    if new.len() <= n || new[..4] != old[..4] || new[8..n] != old[8..] {
        return Err(std::io::Error::other("edit is not an append"));
    }
    let cut_back = |e: std::io::Error| {
        let _ = file.set_len(n as u64);
        e
    };
    file.write_all_at(&new[n..], n as u64).map_err(cut_back)?;
    file.sync_data().map_err(cut_back)?;
    file.write_all_at(&new[4..8], 4)
}

/// Writes `data` beside `path`, syncs it and renames it over `path`. A failure removes the new
/// file and leaves `path` as it was. The rename itself is not synced: a crash that loses it
/// leaves the document as it was before (whole, without the tags), never a broken one.
fn replace(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let meta = std::fs::metadata(path)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    // A dot name: HylaFAX lists only recvq/fax*.tif, so a leftover is never taken for a fax.
    let tmp = dir.join(format!(".{name}.tags-{}", std::process::id()));
    // A leftover of ours (same name and pid, so its writer is gone) would block create_new
    // for every later fax of this process.
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(data)?;
        // Keep the owner if we may; an unprivileged fsfaxd already owns what it creates.
        let _ = std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()));
        file.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

struct Order(bool);

impl Order {
    fn u16(&self, b: &[u8], at: usize) -> Option<u16> {
        let s: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
        Some(if self.0 {
            u16::from_le_bytes(s)
        } else {
            u16::from_be_bytes(s)
        })
    }
    fn u32(&self, b: &[u8], at: usize) -> Option<u32> {
        let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(if self.0 {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        })
    }
    fn put16(&self, v: u16) -> [u8; 2] {
        if self.0 {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        }
    }
    fn put32(&self, v: u32) -> [u8; 4] {
        if self.0 {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        }
    }
}

/// The document with the tags added, and how many were added. Pure: `data` is not changed.
pub fn with_tags(
    data: &[u8],
    tags: impl Fn(PageInfo) -> Vec<(u16, Value)>,
) -> Result<(Vec<u8>, usize), &'static str> {
    // The same checks as page counting: every page with its image data inside the file.
    let len = data.len() as u64;
    let pages = crate::tiff::count_pages_in_bytes(data).map_err(|_| "not a complete TIFF")?;
    if pages == 0 {
        return Err("no pages");
    }
    let o = match data.get(0..2) {
        Some(b"II") => Order(true),
        Some(b"MM") => Order(false),
        _ => return Err("no byte-order mark"),
    };
    let mut ifds = Vec::new();
    let mut at = o.u32(data, 4).ok_or("short header")? as usize;
    while at != 0 {
        ifds.push(at);
        let n = o.u16(data, at).ok_or("directory outside the file")? as usize;
        at = o
            .u32(data, at + 2 + 12 * n)
            .ok_or("directory outside the file")? as usize;
    }
    let mut out = data.to_vec();
    let mut added = 0;
    let mut new_ifds = Vec::with_capacity(ifds.len());
    for (index, &ifd) in ifds.iter().enumerate() {
        let n = o.u16(data, ifd).ok_or("directory outside the file")? as usize;
        let mut entries: Vec<[u8; 12]> = data
            .get(ifd + 2..ifd + 2 + 12 * n)
            .ok_or("directory outside the file")?
            .chunks_exact(12)
            .map(|e| e.try_into().unwrap_or([0; 12]))
            .collect();
        let has = |entries: &[[u8; 12]], tag| entries.iter().any(|e| o.u16(e, 0) == Some(tag));
        let info = PageInfo {
            index,
            pages: ifds.len(),
            width: short_or_long(&o, &entries, TAG_IMAGE_WIDTH),
            lpi: lpi(&o, data, &entries),
        };
        for (tag, value) in tags(info) {
            if has(&entries, tag) {
                continue;
            }
            let mut e = [0u8; 12];
            e[0..2].copy_from_slice(&o.put16(tag));
            match value {
                Value::Long(v) => {
                    e[2..4].copy_from_slice(&o.put16(TYPE_LONG));
                    e[4..8].copy_from_slice(&o.put32(1));
                    e[8..12].copy_from_slice(&o.put32(v));
                }
                Value::Ascii(s) => {
                    let mut bytes: Vec<u8> = s.bytes().filter(|b| *b != 0).collect();
                    bytes.push(0);
                    e[2..4].copy_from_slice(&o.put16(TYPE_ASCII));
                    e[4..8].copy_from_slice(&o.put32(bytes.len() as u32));
                    if bytes.len() <= 4 {
                        e[8..8 + bytes.len()].copy_from_slice(&bytes);
                    } else {
                        align(&mut out);
                        let off = u32::try_from(out.len()).map_err(|_| "file too large")?;
                        e[8..12].copy_from_slice(&o.put32(off));
                        out.extend_from_slice(&bytes);
                    }
                }
            }
            entries.push(e);
            added += 1;
        }
        // Directory entries must be sorted by tag.
        entries.sort_by_key(|e| o.u16(e, 0).unwrap_or(0));
        align(&mut out);
        new_ifds.push(out.len());
        let count = u16::try_from(entries.len()).map_err(|_| "too many tags")?;
        out.extend_from_slice(&o.put16(count));
        for e in &entries {
            out.extend_from_slice(e);
        }
        out.extend_from_slice(&[0; 4]); // next, linked below
    }
    if added == 0 {
        return Ok((data.to_vec(), 0));
    }
    if u32::try_from(out.len()).is_err() {
        return Err("file too large");
    }
    let first = o.put32(new_ifds[0] as u32);
    out[4..8].copy_from_slice(&first);
    for pair in new_ifds.windows(2) {
        let n = o.u16(&out, pair[0]).ok_or("internal")? as usize;
        let next_at = pair[0] + 2 + 12 * n;
        let next = o.put32(pair[1] as u32);
        out[next_at..next_at + 4].copy_from_slice(&next);
    }
    // The result must hold as many complete pages as the original.
    match crate::tiff::count_pages_in_bytes(&out) {
        Ok(p) if p == pages && out.len() as u64 > len => Ok((out, added)),
        _ => Err("edited document did not check out"),
    }
}

fn align(out: &mut Vec<u8>) {
    if out.len() % 2 == 1 {
        out.push(0);
    }
}

fn entry<'a>(o: &Order, entries: &'a [[u8; 12]], tag: u16) -> Option<&'a [u8; 12]> {
    entries.iter().find(|e| o.u16(*e, 0) == Some(tag))
}

fn short_or_long(o: &Order, entries: &[[u8; 12]], tag: u16) -> Option<u32> {
    let e = entry(o, entries, tag)?;
    match o.u16(e, 2)? {
        TYPE_SHORT => o.u16(e, 8).map(u32::from),
        TYPE_LONG => o.u32(e, 8),
        _ => None,
    }
}

/// Vertical resolution in lines per inch (ResolutionUnit 3 = centimetre is converted).
fn lpi(o: &Order, data: &[u8], entries: &[[u8; 12]]) -> Option<u32> {
    let e = entry(o, entries, TAG_Y_RESOLUTION)?;
    if o.u16(e, 2)? != TYPE_RATIONAL {
        return None;
    }
    let at = o.u32(e, 8)? as usize;
    let (num, den) = (o.u32(data, at)?, o.u32(data, at + 4)?);
    if den == 0 {
        return None;
    }
    let per_unit = f64::from(num) / f64::from(den);
    let unit = short_or_long(o, entries, TAG_RESOLUTION_UNIT).unwrap_or(2);
    let lpi = if unit == 3 { per_unit * 2.54 } else { per_unit };
    Some(lpi.round() as u32)
}

/// HylaFAX `WD_*` code for a page width in pixels (0 = A4 1728 px when unknown).
pub fn width_code(width: Option<u32>) -> u32 {
    match width {
        Some(2048) | Some(3072) | Some(4096) => 1,
        Some(2432) | Some(3648) | Some(4864) => 2,
        Some(1216) => 3,
        Some(864) => 4,
        _ => 0,
    }
}

/// TIFF `PageNumber`: (page, total pages), two SHORTs.
pub const TAG_PAGE_NUMBER: u16 = 297;
/// HylaFAX/spandsp `TIFFTAG_FAXDCS`: the received DCS frame as hex bytes (ASCII).
pub const TAG_FAX_DCS: u16 = 34911;

/// What one page of a received document says about the session (spandsp writes these tags
/// on every page it receives; faxgetty too, except the DCS text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageSession {
    /// `ImageDescription`: the remote station's identity (TSI).
    pub description: Option<String>,
    /// `FaxDcs`: the DCS as spandsp logged it, e.g. `00 46 C0 ...`.
    pub dcs: Option<String>,
    /// `FaxRecvTime`: seconds spent receiving the page.
    pub recv_time: Option<u32>,
    /// `PageNumber`: (page, total) as written.
    pub page_number: Option<(u16, u16)>,
}

/// Reads the session tags of every page of the TIFF at `path` (see [`PageSession`]). A
/// document that does not check out as complete (cut-off image data, a bad chain) is an error.
pub fn read_session(path: &Path) -> Result<Vec<PageSession>, TagError> {
    let data = std::fs::read(path).map_err(|source| TagError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    session_in(&data).map_err(|why| TagError::Malformed {
        path: path.to_path_buf(),
        why,
    })
}

/// [`read_session`] on bytes in memory.
pub fn session_in(data: &[u8]) -> Result<Vec<PageSession>, &'static str> {
    crate::tiff::count_pages_in_bytes(data).map_err(|_| "not a complete TIFF")?;
    let o = match data.get(0..2) {
        Some(b"II") => Order(true),
        Some(b"MM") => Order(false),
        _ => return Err("no byte-order mark"),
    };
    let mut pages = Vec::new();
    let mut at = o.u32(data, 4).ok_or("short header")? as usize;
    while at != 0 {
        let n = o.u16(data, at).ok_or("directory outside the file")? as usize;
        let entries: Vec<[u8; 12]> = data
            .get(at + 2..at + 2 + 12 * n)
            .ok_or("directory outside the file")?
            .chunks_exact(12)
            .map(|e| e.try_into().unwrap_or([0; 12]))
            .collect();
        let ascii = |tag| ascii_value(&o, data, entry(&o, &entries, tag)?);
        let page_number = entry(&o, &entries, TAG_PAGE_NUMBER).and_then(|e| {
            (o.u16(e, 2)? == TYPE_SHORT && o.u32(e, 4)? == 2)
                .then(|| Some((o.u16(e, 8)?, o.u16(e, 10)?)))
                .flatten()
        });
        pages.push(PageSession {
            description: ascii(TAG_IMAGE_DESCRIPTION),
            dcs: ascii(TAG_FAX_DCS),
            recv_time: short_or_long(&o, &entries, TAG_FAX_RECV_TIME),
            page_number,
        });
        at = o
            .u32(data, at + 2 + 12 * n)
            .ok_or("directory outside the file")? as usize;
    }
    Ok(pages)
}

/// An ASCII entry's text up to its first NUL; `None` when it is not ASCII or lies outside.
fn ascii_value(o: &Order, data: &[u8], e: &[u8; 12]) -> Option<String> {
    if o.u16(e, 2)? != TYPE_ASCII {
        return None;
    }
    let count = o.u32(e, 4)? as usize;
    let bytes = if count <= 4 {
        e.get(8..8 + count)?
    } else {
        let off = o.u32(e, 8)? as usize;
        data.get(off..off.checked_add(count)?)?
    };
    let text = bytes.split(|b| *b == 0).next().unwrap_or_default();
    Some(String::from_utf8_lossy(text).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/fax")
                .join(name),
        )
        .unwrap()
    }

    /// Every directory's entries as (tag, type, count, value-or-offset).
    fn dirs(b: &[u8]) -> Vec<Vec<(u16, u16, u32, u32)>> {
        let o = Order(&b[0..2] == b"II");
        let mut at = o.u32(b, 4).unwrap() as usize;
        let mut out = Vec::new();
        while at != 0 {
            let n = o.u16(b, at).unwrap() as usize;
            out.push(
                (0..n)
                    .map(|i| {
                        let e = at + 2 + 12 * i;
                        let kind = o.u16(b, e + 2).unwrap();
                        let value = if kind == TYPE_SHORT {
                            u32::from(o.u16(b, e + 8).unwrap())
                        } else {
                            o.u32(b, e + 8).unwrap()
                        };
                        (o.u16(b, e).unwrap(), kind, o.u32(b, e + 4).unwrap(), value)
                    })
                    .collect(),
            );
            at = o.u32(b, at + 2 + 12 * n).unwrap() as usize;
        }
        out
    }

    fn strips(b: &[u8]) -> Vec<Vec<u8>> {
        dirs(b)
            .iter()
            .map(|d| {
                let get = |t| d.iter().find(|e| e.0 == t).unwrap();
                let (off, cnt) = (get(273), get(279));
                assert_eq!((off.2, cnt.2), (1, 1), "fixtures have one strip per page");
                b[off.3 as usize..(off.3 + cnt.3) as usize].to_vec()
            })
            .collect()
    }

    fn tags(p: PageInfo) -> Vec<(u16, Value)> {
        vec![
            (TAG_FAX_RECV_PARAMS, Value::Long(1000 + p.index as u32)),
            (TAG_FAX_RECV_TIME, Value::Long(p.width.unwrap_or(0))),
            (TAG_IMAGE_DESCRIPTION, Value::Ascii("+49 40 5550".into())),
        ]
    }

    #[test]
    fn adds_tags_to_every_page_and_keeps_the_image_data() {
        let orig = fixture("test3.tif");
        let (out, added) = with_tags(&orig, tags).unwrap();
        assert_eq!(added, 9);
        // Nothing of the original changes but the header's first-directory pointer.
        assert_eq!(out[..4], orig[..4]);
        assert_eq!(out[8..orig.len()], orig[8..]);
        assert_eq!(strips(&out), strips(&orig));
        let (before, after) = (dirs(&orig), dirs(&out));
        assert_eq!(after.len(), 3);
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            // Every old entry is still there, unchanged, and the directory is sorted.
            assert!(b.iter().all(|e| a.contains(e)), "page {i}");
            assert!(a.windows(2).all(|w| w[0].0 < w[1].0), "page {i} unsorted");
            assert!(a.contains(&(TAG_FAX_RECV_PARAMS, TYPE_LONG, 1, 1000 + i as u32)));
            assert!(a.contains(&(TAG_FAX_RECV_TIME, TYPE_LONG, 1, 1728)));
            let desc = a.iter().find(|e| e.0 == TAG_IMAGE_DESCRIPTION).unwrap();
            assert_eq!((desc.1, desc.2), (TYPE_ASCII, 12));
            assert_eq!(
                &out[desc.3 as usize..desc.3 as usize + 12],
                b"+49 40 5550\0"
            );
        }
        assert_eq!(crate::tiff::count_pages_in_bytes(&out), Ok(3));
        // Tags already there are kept: a second pass adds nothing.
        let again = with_tags(&out, |p| {
            vec![(TAG_FAX_RECV_PARAMS, Value::Long(7 + p.index as u32))]
        })
        .unwrap();
        assert_eq!(again, (out.clone(), 0));
    }

    #[test]
    fn big_endian_and_twelve_pages() {
        let orig = fixture("test12.tif");
        let (out, added) = with_tags(&orig, tags).unwrap();
        assert_eq!(added, 36);
        assert_eq!(strips(&out), strips(&orig));
        // A big-endian page with one 4-byte strip.
        let mut t = b"MM\0*\0\0\0\x08".to_vec();
        t.extend_from_slice(&[0, 2]);
        t.extend_from_slice(&[1, 17, 0, 4, 0, 0, 0, 1, 0, 0, 0, 38]); // StripOffsets = 38
        t.extend_from_slice(&[1, 23, 0, 3, 0, 0, 0, 1, 0, 4, 0, 0]); // StripByteCounts = 4
        t.extend_from_slice(&[0, 0, 0, 0]);
        t.extend_from_slice(b"data");
        let (out, added) = with_tags(&t, tags).unwrap();
        assert_eq!(added, 3);
        assert_eq!(out[..t.len()][8..], t[8..]);
        let d = dirs(&out);
        assert_eq!(d.len(), 1);
        assert!(d[0].contains(&(TAG_FAX_RECV_PARAMS, TYPE_LONG, 1, 1000)));
        assert!(d[0].contains(&(TAG_FAX_RECV_TIME, TYPE_LONG, 1, 0)));
        assert_eq!(strips(&out), vec![b"data".to_vec()]);
    }

    #[test]
    fn a_leftover_of_an_earlier_run_with_our_pid_does_not_block_the_tags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fax000000002.tif");
        std::fs::write(&path, fixture("test3.tif")).unwrap();
        let leftover = dir
            .path()
            .join(format!(".fax000000002.tif.tags-{}", std::process::id()));
        std::fs::write(&leftover, b"half a file").unwrap();
        // The rename path (a file fsfaxd may not write in place).
        let (out, _) = with_tags(&fixture("test3.tif"), tags).unwrap();
        replace(&path, &out).unwrap();
        assert!(!leftover.exists());
        assert_eq!(std::fs::read(&path).unwrap(), out);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn file_is_edited_in_place_with_its_mode_and_nothing_left_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fax000000001.tif");
        let orig = fixture("test3.tif");
        std::fs::write(&path, &orig).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        assert_eq!(add_tags(&path, tags).unwrap(), 9);
        let now = std::fs::read(&path).unwrap();
        assert_eq!(now, with_tags(&orig, tags).unwrap().0);
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode, "same file");
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Nothing to add: the file is not rewritten.
        assert_eq!(add_tags(&path, tags).unwrap(), 0);
        assert_eq!(std::fs::read(&path).unwrap(), now);
    }

    #[test]
    fn one_open_document_takes_its_mode_in_place_and_after_a_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let orig = fixture("test3.tif");
        for writable in [true, false] {
            let path = dir.path().join(format!("fax-{writable}.tif"));
            std::fs::write(&path, &orig).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let inode = std::fs::metadata(&path).unwrap().ino();
            let mut doc = Document::open(&path).unwrap();
            assert_eq!(doc.data(), orig.as_slice());
            // Not writable: the edit goes through a new file renamed over the old one (as
            // for a document FreeSWITCH's user owns; root may write anything, so forced).
            doc.writable = writable;
            assert_eq!(doc.add_tags(tags).unwrap(), 9);
            assert_eq!(doc.data(), with_tags(&orig, tags).unwrap().0.as_slice());
            doc.set_mode(0o644).unwrap();
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(
                meta.ino() == inode,
                writable,
                "replaced only when not writable"
            );
            // The mode lands on the file the path names, not on the replaced inode.
            assert_eq!(meta.mode() & 0o777, 0o644, "writable {writable}");
            assert_eq!(std::fs::read(&path).unwrap(), doc.data());
        }
    }

    /// The header and every directory of `data` (a little-endian TIFF) as byte ranges: where
    /// damage reaches the structure rather than the image data.
    fn structure(data: &[u8]) -> Vec<std::ops::Range<usize>> {
        let u16_at = |i: usize| u16::from_le_bytes([data[i], data[i + 1]]) as usize;
        let u32_at = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().unwrap()) as usize;
        let header = 0..8;
        let mut out = vec![header];
        let mut at = u32_at(4);
        while at != 0 {
            let end = at + 2 + 12 * u16_at(at) + 4;
            out.push(at..end);
            at = u32_at(end - 4);
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// A received document comes off the network: one damaged anywhere in its structure
        /// (bytes of the header or of any directory overwritten, the file cut short) gives an
        /// error or a document, never a panic (fsfaxd is built with `panic = "abort"`); and a
        /// document that takes the tags still counts the same pages.
        #[test]
        fn a_damaged_document_never_panics_and_keeps_its_pages_when_tagged(
            edits in proptest::collection::vec(
                (proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()),
                0..12,
            ),
            cut in proptest::option::of(proptest::prelude::any::<proptest::sample::Index>()),
        ) {
            let mut bytes = fixture("test3.tif");
            let places: Vec<usize> = structure(&bytes).into_iter().flatten().collect();
            for (at, value) in edits {
                bytes[*at.get(&places)] = value;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            let path = Path::new("fax000000001.tif");
            let pages = crate::tiff::count_pages_of(path, &bytes);
            let _ = session_in(&bytes);
            if let (Ok(n), Ok((tagged, _))) = (&pages, with_tags(&bytes, tags)) {
                proptest::prop_assert_eq!(crate::tiff::count_pages_of(path, &tagged).ok(), Some(*n));
                proptest::prop_assert!(session_in(&tagged).is_ok());
            }
        }
    }

    #[test]
    fn a_malformed_document_is_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let orig = fixture("test3.tif");
        let mut garbage = orig.clone();
        garbage[4..8].copy_from_slice(&0xffff_fff0u32.to_le_bytes()); // directory outside
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("header only", orig[..8].to_vec()),
            ("cut off", orig[..orig.len() - 10].to_vec()),
            ("bad pointer", garbage),
            ("not tiff", b"%PDF-1.4 hello".to_vec()),
        ];
        for (what, bytes) in cases {
            let path = dir.path().join("fax000000002.tif");
            std::fs::write(&path, &bytes).unwrap();
            let err = add_tags(&path, tags).unwrap_err();
            assert!(
                err.to_string().contains("fax000000002.tif"),
                "{what}: {err}"
            );
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{what}");
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "{what}");
        }
        let missing = dir.path().join("fax000000003.tif");
        assert!(matches!(
            add_tags(&missing, tags),
            Err(TagError::Read { .. })
        ));
    }
    #[test]
    fn reads_back_the_session_tags_of_every_page() {
        let orig = fixture("test3.tif");
        // Ghostscript's document: PageNumber (i, 0), no session tags.
        let plain = session_in(&orig).unwrap();
        assert_eq!(plain.len(), 3);
        assert_eq!(plain[1].page_number, Some((1, 0)));
        assert_eq!(
            (plain[0].description.as_deref(), plain[0].dcs.as_deref()),
            (None, None)
        );
        let (out, _) = with_tags(&orig, |p| {
            vec![
                (TAG_IMAGE_DESCRIPTION, Value::Ascii("+1 337".into())),
                (TAG_FAX_DCS, Value::Ascii("00 46 C0 20".into())),
                (TAG_FAX_RECV_TIME, Value::Long(7 + p.index as u32)),
            ]
        })
        .unwrap();
        let pages = session_in(&out).unwrap();
        assert_eq!(pages.len(), 3);
        for (i, p) in pages.iter().enumerate() {
            assert_eq!(p.description.as_deref(), Some("+1 337"));
            assert_eq!(p.dcs.as_deref(), Some("00 46 C0 20"));
            assert_eq!(p.recv_time, Some(7 + i as u32));
            assert_eq!(p.page_number, Some((i as u16, 0)));
        }
        assert!(session_in(&out[..out.len() - 200]).is_err());
    }
}
