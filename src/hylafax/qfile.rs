//! The job queue file (`sendq/q<jobid>`) handed to SendFaxCmd.
//!
//! Parsing follows HylaFAX's `FaxRequest::readQFile`: a line is `tag:value`, split at the first
//! `:`, the tag is taken as is, only leading spaces of the value are skipped, and a line without
//! `:` is skipped with a warning (GOfax.IP aborted the job instead). A `status:` value ending in
//! `\` continues on the next line. Every line is kept, in order, with its exact bytes, so a
//! rewrite changes only what was `set`.
//!
//! Writing is in place (same inode), like real faxsend: build the whole file in memory, `pwrite`
//! at offset 0, `ftruncate` when it got shorter, `fsync`. Not temp+rename because the `flock`
//! that serialises senders lives on the inode (a rename would leave a waiting fsfaxsend
//! locking a dead file), and because hfaxd created the file with its owner/group/mode
//! (`uucp:fax 0644`), which a rename by our process would replace.

use std::borrow::Cow;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::ops::{Deref, DerefMut};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::lock;

/// Largest qfile accepted (real ones are a few KiB; a longer one is not a qfile).
pub const MAX_FILE_SIZE: u64 = 4 * 1024 * 1024;
/// Largest single line accepted (a huge `comments:` is fine, a runaway one is not).
pub const MAX_LINE_LEN: usize = 2 * 1024 * 1024;
/// Default bound on waiting for another process's lock on the qfile.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(30);

/// Errors reading, validating or writing a qfile. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum QFileError {
    #[error("{path}: cannot open qfile: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot lock qfile: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: qfile still locked by another process after {waited:?}")]
    LockTimeout { path: PathBuf, waited: Duration },
    #[error("{path}: cannot read qfile: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot write qfile: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: qfile too large ({size} bytes, limit {max})")]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("{path}: line {line} too long ({len} bytes, limit {max})")]
    LineTooLong {
        path: PathBuf,
        line: usize,
        len: usize,
        max: usize,
    },
    #[error("{path}: binary garbage (NUL byte at offset {offset}); not a qfile")]
    BinaryGarbage { path: PathBuf, offset: usize },
    #[error("{path}: invalid tag {tag:?} (empty, or contains ':' or a line break)")]
    BadTag { path: PathBuf, tag: String },
    #[error("{path}: no jobid")]
    NoJobId { path: PathBuf },
    #[error("{path}: bad jobid {value:?}")]
    BadJobId { path: PathBuf, value: String },
    #[error("{path}: no fax entries (no document to send)")]
    NoFaxEntries { path: PathBuf },
    #[error("{path}: bad fax entry {value:?}: {reason}")]
    BadFaxEntry {
        path: PathBuf,
        value: String,
        reason: &'static str,
    },
    #[error("{path}: document {document} is missing: {source}")]
    MissingDocument {
        path: PathBuf,
        document: PathBuf,
        source: std::io::Error,
    },
}

impl QFileError {
    /// The file's content cannot be understood (as opposed to an I/O or locking problem that
    /// a later attempt may not have). Such a file is never rewritten.
    pub fn is_unreadable_content(&self) -> bool {
        matches!(
            self,
            QFileError::TooLarge { .. }
                | QFileError::LineTooLong { .. }
                | QFileError::BinaryGarbage { .. }
        )
    }
}

/// A problem HylaFAX tolerates (it skips the line); we keep the line and report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QFileWarning {
    /// 1-based physical line number.
    pub line: usize,
    /// The offending line, lossily decoded.
    pub text: String,
}

impl fmt::Display for QFileWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: missing ':' (HylaFAX skips it; kept verbatim): {:?}",
            self.line, self.text
        )
    }
}

/// One document to transmit, from `fax:<dirnum>:<subaddr>:<path>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// First TIFF directory still to send (HylaFAX advances it as pages go out).
    pub first_page_dir: u32,
    /// T.30 subaddress for this document (usually empty).
    pub subaddr: String,
    /// The TIFF, resolved against the spool directory.
    pub path: PathBuf,
    /// The path as the qfile writes it (e.g. `docq/doc1.pdf;c0`), for messages to faxq.
    pub file: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// `tag:raw`. `raw` is exactly what follows the `:` (status continuations joined with
    /// `\n`), `value` is the logical value (leading spaces skipped, continuations unescaped).
    Entry {
        tag: Vec<u8>,
        raw: Vec<u8>,
        value: Vec<u8>,
    },
    /// A line without `:`, written back unchanged.
    Other(Vec<u8>),
}

/// The parsed text of a qfile: every line, in order. No file handle; see [`QFile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QFileContent {
    path: PathBuf,
    lines: Vec<Line>,
    warnings: Vec<QFileWarning>,
}

impl QFileContent {
    /// Parses qfile bytes; `path` is only used in messages.
    pub fn parse(path: impl Into<PathBuf>, bytes: &[u8]) -> Result<Self, QFileError> {
        let path = path.into();
        if bytes.len() as u64 > MAX_FILE_SIZE {
            return Err(QFileError::TooLarge {
                path,
                size: bytes.len() as u64,
                max: MAX_FILE_SIZE,
            });
        }
        // A NUL-filled file is what a crash with delayed allocation leaves behind.
        if let Some(offset) = bytes.iter().position(|&b| b == 0) {
            return Err(QFileError::BinaryGarbage { path, offset });
        }
        let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let physical: Vec<&[u8]> = if bytes.is_empty() {
            Vec::new()
        } else {
            body.split(|&b| b == b'\n').collect()
        };
        let mut lines = Vec::with_capacity(physical.len());
        let mut warnings = Vec::new();
        let mut i = 0;
        while i < physical.len() {
            let line = physical[i];
            let lineno = i + 1;
            if line.len() > MAX_LINE_LEN {
                return Err(QFileError::LineTooLong {
                    path,
                    line: lineno,
                    len: line.len(),
                    max: MAX_LINE_LEN,
                });
            }
            i += 1;
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                warnings.push(QFileWarning {
                    line: lineno,
                    text: String::from_utf8_lossy(line).into_owned(),
                });
                lines.push(Line::Other(line.to_vec()));
                continue;
            };
            let tag = line[..colon].to_vec();
            let mut raw = line[colon + 1..].to_vec();
            if tag == b"status" {
                // HylaFAX: a status ending in `\` swallows the following line(s).
                while raw.last() == Some(&b'\\') && i < physical.len() {
                    raw.push(b'\n');
                    raw.extend_from_slice(physical[i]);
                    i += 1;
                }
            }
            let value = logical_value(&tag, &raw);
            lines.push(Line::Entry { tag, raw, value });
        }
        Ok(Self {
            path,
            lines,
            warnings,
        })
    }

    /// The file this content came from (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines HylaFAX would skip (no `:`); they are kept and written back.
    pub fn warnings(&self) -> &[QFileWarning] {
        &self.warnings
    }

    /// The whole file as it would be written: every line in order, each ending in `\n`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for line in &self.lines {
            match line {
                Line::Entry { tag, raw, .. } => {
                    out.extend_from_slice(tag);
                    out.push(b':');
                    out.extend_from_slice(raw);
                }
                Line::Other(bytes) => out.extend_from_slice(bytes),
            }
            out.push(b'\n');
        }
        out
    }

    /// All `(tag, logical value)` pairs in order (lines without `:` are not included).
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.lines.iter().filter_map(|l| match l {
            Line::Entry { tag, value, .. } => Some((tag.as_slice(), value.as_slice())),
            Line::Other(_) => None,
        })
    }

    /// Raw bytes of the first value of `tag`.
    pub fn get_bytes(&self, tag: &str) -> Option<&[u8]> {
        self.entries()
            .find(|(t, _)| *t == tag.as_bytes())
            .map(|(_, v)| v)
    }

    /// First value of `tag`; `None` if absent or not UTF-8 (see [`Self::get_lossy`]).
    pub fn get(&self, tag: &str) -> Option<&str> {
        self.get_bytes(tag)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// First value of `tag`, invalid UTF-8 replaced by U+FFFD.
    pub fn get_lossy(&self, tag: &str) -> Option<Cow<'_, str>> {
        self.get_bytes(tag).map(String::from_utf8_lossy)
    }

    /// Every value of `tag`, in file order (lossy UTF-8).
    pub fn get_all(&self, tag: &str) -> Vec<Cow<'_, str>> {
        self.entries()
            .filter(|(t, _)| *t == tag.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v))
            .collect()
    }

    /// First value of `tag` as a decimal `u32` (trailing whitespace allowed); `None` if absent
    /// or not a number.
    pub fn get_u32(&self, tag: &str) -> Option<u32> {
        self.get(tag).and_then(|v| v.trim_end().parse().ok())
    }

    /// First value of `tag` as a decimal `i64`; `None` if absent or not a number.
    pub fn get_i64(&self, tag: &str) -> Option<i64> {
        self.get(tag).and_then(|v| v.trim_end().parse().ok())
    }

    /// Replaces the first `tag` in place, or appends it. A newline in `status` becomes
    /// HylaFAX's `\`-newline continuation; elsewhere line breaks (and NULs) become spaces.
    pub fn set(&mut self, tag: &str, value: &str) -> Result<(), QFileError> {
        if tag.is_empty() || tag.contains([':', '\n', '\r', '\0']) {
            return Err(QFileError::BadTag {
                path: self.path.clone(),
                tag: tag.to_owned(),
            });
        }
        let raw = encode_value(tag, value);
        let value = logical_value(tag.as_bytes(), &raw);
        let slot = self.lines.iter_mut().find_map(|l| match l {
            Line::Entry { tag: t, raw, value } if t == tag.as_bytes() => Some((raw, value)),
            _ => None,
        });
        match slot {
            Some((r, v)) => {
                *r = raw;
                *v = value;
            }
            None => {
                self.end_dangling_continuation();
                self.lines.push(Line::Entry {
                    tag: tag.as_bytes().to_vec(),
                    raw,
                    value,
                });
            }
        }
        Ok(())
    }

    /// A last `status:` ending in `\` continued nothing (end of file); a line appended after
    /// it would be swallowed into the status when read back, so the dangling `\` goes.
    fn end_dangling_continuation(&mut self) {
        if let Some(Line::Entry { tag, raw, value }) = self.lines.last_mut() {
            if tag == b"status" && raw.last() == Some(&b'\\') {
                while raw.last() == Some(&b'\\') {
                    raw.pop();
                }
                *value = logical_value(tag, raw);
            }
        }
    }

    /// [`Self::set`] with a number.
    pub fn set_u32(&mut self, tag: &str, value: u32) -> Result<(), QFileError> {
        self.set(tag, &value.to_string())
    }

    /// `jobid`: must be a non-zero decimal number.
    pub fn jobid(&self) -> Result<u32, QFileError> {
        let raw = self
            .get_lossy("jobid")
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| QFileError::NoJobId {
                path: self.path.clone(),
            })?;
        match raw.trim_end().parse::<u32>() {
            Ok(n) if n != 0 => Ok(n),
            _ => Err(QFileError::BadJobId {
                path: self.path.clone(),
                value: raw.into_owned(),
            }),
        }
    }

    /// `external`: the number to dial (non-empty).
    pub fn external(&self) -> Option<&str> {
        self.get("external").filter(|v| !v.is_empty())
    }

    /// `number`: the destination as the user gave it (non-empty).
    pub fn number(&self) -> Option<&str> {
        self.get("number").filter(|v| !v.is_empty())
    }

    /// `owner` (empty if absent).
    pub fn owner(&self) -> Cow<'_, str> {
        self.get_lossy("owner").unwrap_or_default()
    }

    /// `sender` (full name of the submitter; empty if absent).
    pub fn sender(&self) -> Cow<'_, str> {
        self.get_lossy("sender").unwrap_or_default()
    }

    /// `mailaddr` (notification address; xferfaxlog's "sender" field).
    pub fn mailaddr(&self) -> Cow<'_, str> {
        self.get_lossy("mailaddr").unwrap_or_default()
    }

    /// `jobtag` (empty if absent).
    pub fn jobtag(&self) -> Cow<'_, str> {
        self.get_lossy("jobtag").unwrap_or_default()
    }

    /// `desiredec` (0 = no ECM, other values: ECM wanted); `None` if absent or unparsable.
    pub fn desiredec(&self) -> Option<u32> {
        self.get_u32("desiredec")
    }

    /// `desiredbr` (HylaFAX BR_* code, 5 = 14400, 13 = 33600).
    pub fn desiredbr(&self) -> Option<u32> {
        self.get_u32("desiredbr")
    }

    /// `totdials` (0 if absent or unparsable, like HylaFAX's `atoi`).
    pub fn totdials(&self) -> u32 {
        self.get_u32("totdials").unwrap_or(0)
    }

    /// `ndials` (consecutive failed dials; 0 if absent).
    pub fn ndials(&self) -> u32 {
        self.get_u32("ndials").unwrap_or(0)
    }

    /// `tottries` (0 if absent).
    pub fn tottries(&self) -> u32 {
        self.get_u32("tottries").unwrap_or(0)
    }

    /// `maxdials`, if set.
    pub fn maxdials(&self) -> Option<u32> {
        self.get_u32("maxdials")
    }

    /// `maxtries`, if set.
    pub fn maxtries(&self) -> Option<u32> {
        self.get_u32("maxtries")
    }

    /// `npages` (pages sent so far; 0 if absent).
    pub fn npages(&self) -> u32 {
        self.get_u32("npages").unwrap_or(0)
    }

    /// `totpages` (0 if absent).
    pub fn totpages(&self) -> u32 {
        self.get_u32("totpages").unwrap_or(0)
    }

    /// The `fax:` documents in order, paths resolved against `base` (the spool; faxq's cwd),
    /// each checked to exist. Other items (`!pdf:`, `pdf:`, `poll:` …) are not documents to
    /// transmit and are ignored.
    pub fn documents(&self, base: &Path) -> Result<Vec<Document>, QFileError> {
        let mut docs = Vec::new();
        for (tag, value) in self.entries() {
            if tag != b"fax" {
                continue;
            }
            let doc = self.parse_document(value, base)?;
            if let Err(source) = std::fs::metadata(&doc.path) {
                return Err(QFileError::MissingDocument {
                    path: self.path.clone(),
                    document: doc.path,
                    source,
                });
            }
            docs.push(doc);
        }
        if docs.is_empty() {
            return Err(QFileError::NoFaxEntries {
                path: self.path.clone(),
            });
        }
        Ok(docs)
    }

    /// Rewrites the first-page directory of each `fax:` entry, in order (`dirs[i]` for the
    /// i-th entry), keeping its sub-address and path bytes as they are. fsfaxsend records page
    /// progress this way so the next attempt resumes at the first unsent page.
    pub fn set_fax_first_pages(&mut self, dirs: &[u32]) -> Result<(), QFileError> {
        let count = self
            .lines
            .iter()
            .filter(|l| matches!(l, Line::Entry { tag, .. } if tag == b"fax"))
            .count();
        if count != dirs.len() {
            return Err(QFileError::BadFaxEntry {
                path: self.path.clone(),
                value: format!("{count} fax entries, {} page positions", dirs.len()),
                reason: "page progress does not match the job's documents",
            });
        }
        let mut dirs = dirs.iter();
        for line in &mut self.lines {
            let Line::Entry { tag, raw, value } = line else {
                continue;
            };
            if tag != b"fax" {
                continue;
            }
            let Some(dir) = dirs.next() else { break };
            let rest = match raw.iter().position(|&b| b == b':') {
                Some(i) => raw[i..].to_vec(),
                // A bare path: HylaFAX's addItem reads it as directory 0 of that file.
                None => [b":".as_slice(), raw.as_slice()].concat(),
            };
            let mut new = dir.to_string().into_bytes();
            new.extend_from_slice(&rest);
            *value = logical_value(b"fax", &new);
            *raw = new;
        }
        Ok(())
    }

    /// Removes the `index`-th `fax:` entry (0-based, among the `fax:` entries now in the file),
    /// as faxsend does once a document has been sent (`notifyDocumentSent`), so a retry never
    /// sends it again and faxq may expunge its imaged file. When the entry just before it is
    /// the saved source of that document (`!pdf:`, `!tiff:`, ... : faxq's `isSavedOp`),
    /// `rename_source` is given the source's path and may return a new path for it (faxsend's
    /// `renameSaved` moves `docq/doc1.pdf.1` to its base name `docq/doc1.pdf`).
    pub fn remove_fax_entry(
        &mut self,
        index: usize,
        rename_source: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
    ) -> Result<(), QFileError> {
        let at = self
            .lines
            .iter()
            .enumerate()
            .filter(|(_, l)| matches!(l, Line::Entry { tag, .. } if tag == b"fax"))
            .nth(index)
            .map(|(i, _)| i)
            .ok_or_else(|| QFileError::BadFaxEntry {
                path: self.path.clone(),
                value: format!("fax entry {index}"),
                reason: "no such document in the job",
            })?;
        if let Some(Line::Entry { tag, raw, value }) = at.checked_sub(1).map(|i| &mut self.lines[i])
        {
            if tag.first() == Some(&b'!') {
                // `op:dirnum:addr:file`, like a `fax:` entry.
                let mut parts = raw.splitn(3, |&b| b == b':');
                let (dir, addr, file) = (parts.next(), parts.next(), parts.next());
                if let (Some(dir), Some(addr), Some(file)) = (dir, addr, file) {
                    if let Some(new) = rename_source(file) {
                        let rebuilt = [dir, b":", addr, b":", &new].concat();
                        *value = logical_value(tag, &rebuilt);
                        *raw = rebuilt;
                    }
                }
            }
        }
        self.lines.remove(at);
        Ok(())
    }

    /// `<dirnum>:<subaddr>:<path>` split at the first two `:`; like HylaFAX's `addItem`, a
    /// value with one `:` is `<dirnum>:<path>` and one with none is just a path.
    fn parse_document(&self, value: &[u8], base: &Path) -> Result<Document, QFileError> {
        let bad = |reason| QFileError::BadFaxEntry {
            path: self.path.clone(),
            value: String::from_utf8_lossy(value).into_owned(),
            reason,
        };
        let mut parts = value.splitn(3, |&b| b == b':');
        let first = parts.next().unwrap_or_default();
        let (dir, subaddr, file) = match (parts.next(), parts.next()) {
            (Some(sub), Some(file)) => (Some(first), sub, file),
            (Some(file), None) => (Some(first), &b""[..], file),
            _ => (None, &b""[..], first),
        };
        let first_page_dir = match dir {
            None => 0,
            Some(d) => std::str::from_utf8(d)
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(|| bad("TIFF directory number is not a number"))?,
        };
        if file.is_empty() {
            return Err(bad("empty document path"));
        }
        let path = base.join(std::ffi::OsStr::from_bytes(file));
        Ok(Document {
            first_page_dir,
            subaddr: String::from_utf8_lossy(subaddr).into_owned(),
            path,
            file: String::from_utf8_lossy(file).into_owned(),
        })
    }
}

/// A qfile opened read-write and held under an exclusive `flock` until dropped.
#[derive(Debug)]
pub struct QFile {
    file: File,
    content: QFileContent,
}

impl QFile {
    /// Opens `path` `O_RDWR` (never creates it), locks it (waiting at most
    /// [`DEFAULT_LOCK_WAIT`]) and parses it. Warnings are logged.
    pub fn open_locked(path: impl AsRef<Path>) -> Result<Self, QFileError> {
        Self::open_locked_timeout(path, DEFAULT_LOCK_WAIT)
    }

    /// [`Self::open_locked`] with an explicit bound on the lock wait.
    pub fn open_locked_timeout(path: impl AsRef<Path>, wait: Duration) -> Result<Self, QFileError> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| QFileError::Open {
                path: path.clone(),
                source,
            })?;
        // faxq does not lock the qfile, but another fsfaxsend on the same job would.
        match lock::lock_exclusive_bounded(&file, wait) {
            Ok(true) => {}
            Ok(false) => return Err(QFileError::LockTimeout { path, waited: wait }),
            Err(source) => return Err(QFileError::Lock { path, source }),
        }
        let bytes = read_bounded(&file, &path)?;
        let content = QFileContent::parse(path, &bytes)?;
        for w in content.warnings() {
            tracing::warn!(qfile = %content.path().display(), "{w}");
        }
        Ok(Self { file, content })
    }

    /// Rewrites the file in place with the current content: one `pwrite` at 0, `ftruncate`
    /// when the content got shorter, `fsync` (see the module docs for why not rename).
    pub fn write(&mut self) -> Result<(), QFileError> {
        self.rewrite(true)
    }

    /// [`QFile::write`] without the `fsync`: faxq, faxstat and a killed or crashed fsfaxsend's
    /// retry see the new content at once (it is in the page cache); only a crash of the
    /// machine can lose it, back to the last synced write.
    pub fn write_cached(&mut self) -> Result<(), QFileError> {
        self.rewrite(false)
    }

    fn rewrite(&mut self, sync: bool) -> Result<(), QFileError> {
        let bytes = self.content.to_bytes();
        let werr = |source| QFileError::Write {
            path: self.content.path.clone(),
            source,
        };
        self.file.write_all_at(&bytes, 0).map_err(werr)?;
        // Only a shorter content needs the truncation (a metadata transaction of its own on a
        // journaled file system); a stat says whether the file is longer than what we wrote.
        if self.file.metadata().map_err(werr)?.len() > bytes.len() as u64 {
            self.file.set_len(bytes.len() as u64).map_err(werr)?;
        }
        if sync {
            self.file.sync_all().map_err(werr)?;
        }
        Ok(())
    }
}

impl Deref for QFile {
    type Target = QFileContent;
    fn deref(&self) -> &QFileContent {
        &self.content
    }
}

impl DerefMut for QFile {
    fn deref_mut(&mut self) -> &mut QFileContent {
        &mut self.content
    }
}

fn read_bounded(file: &File, path: &Path) -> Result<Vec<u8>, QFileError> {
    let rerr = |source| QFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    // Room for a usual qfile up front: from an empty buffer, the reads start at 32 bytes and
    // double (six reads for a 400-byte qfile instead of two).
    let mut bytes = Vec::with_capacity(8 * 1024);
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(rerr)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        let size = file
            .metadata()
            .map(|m| m.len())
            .unwrap_or(bytes.len() as u64);
        return Err(QFileError::TooLarge {
            path: path.to_path_buf(),
            size,
            max: MAX_FILE_SIZE,
        });
    }
    Ok(bytes)
}

/// HylaFAX's `FaxRequest::mkbasedoc`: a job's link to a submitted document (`docq/doc1.pdf.1`,
/// the job id appended) without its last `.suffix` (`docq/doc1.pdf`), unless that suffix is
/// `cover`. A name without a `.` is kept.
pub fn base_document(file: &[u8]) -> Vec<u8> {
    match file.iter().rposition(|&b| b == b'.') {
        Some(dot) if &file[dot + 1..] != b"cover" => file[..dot].to_vec(),
        _ => file.to_vec(),
    }
}

/// Logical value: leading spaces skipped (HylaFAX skips only `' '`), and for `status` each
/// `\`-newline continuation turned back into a newline.
fn logical_value(tag: &[u8], raw: &[u8]) -> Vec<u8> {
    let start = raw.iter().position(|&b| b != b' ').unwrap_or(raw.len());
    let v = &raw[start..];
    if tag != b"status" {
        return v.to_vec();
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'\\' && v.get(i + 1) == Some(&b'\n') {
            out.push(b'\n');
            i += 2;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    out
}

/// The bytes written after `tag:` for a logical value.
fn encode_value(tag: &str, value: &str) -> Vec<u8> {
    let value = value.replace('\0', " ");
    if tag != "status" {
        return value.replace(['\r', '\n'], " ").into_bytes();
    }
    // A final `\` would make HylaFAX swallow the next line (`statuscode:`) into the status.
    let value = value.trim_end_matches(['\\', '\n', '\r']);
    value
        .replace("\r\n", "\n")
        .replace('\r', " ")
        .replace('\n', "\\\n")
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    /// The qfile faxq handed to SendFaxCmd in the lab (reference §2).
    const LAB_QFILE: &str = "tts:1795345299\nkilltime:1795356039\nretrytime:0\nstate:6\n\
npages:0\ntotpages:1\nnskip:0\nskippages:0\nncover:0\ncoverpages:0\nntries:0\nndials:0\n\
totdials:0\nmaxdials:12\ntottries:0\nmaxtries:3\npagewidth:209\nresolution:98\n\
pagelength:296\npriority:127\nschedpri:127\nminbr:0\ndesiredbr:13\ndesiredst:0\n\
desiredec:2\ndesireddf:3\ndesiredtl:0\nuseccover:1\nusexvres:0\nexternal:12345\n\
number:12345\nmailaddr:root@vm\nsender:root\njobid:1\njobtag:\npagehandling:e0Z0078P\n\
modem:any\nfaxnumber:\ntsi:\nreceiver:\ncompany:\nlocation:\nvoice:\nfromcompany:\n\
fromlocation:\nfromvoice:\nregarding:\ncomments:\ncover:\nclient:localhost\nowner:root\n\
groupid:1\nsignalrate:\ndataformat:\njobtype:facsimile\ntagline:\nsubaddr:\npasswd:\n\
doneop:default\ncommid:\ncsi:\nnsf:\npagerange:\nstatus:\nstatuscode:0\nreturned:7\n\
notify:none\npagechop:default\nchopthreshold:3\n!pdf:0::docq/doc1.pdf.1\n\
fax:0::docq/doc1.pdf;c0\n";

    fn parse(s: &[u8]) -> QFileContent {
        QFileContent::parse("sendq/q1", s).unwrap()
    }

    #[test]
    fn lab_qfile_fields_and_identity() {
        let q = parse(LAB_QFILE.as_bytes());
        assert_eq!(q.to_bytes(), LAB_QFILE.as_bytes());
        assert!(q.warnings().is_empty());
        assert_eq!(q.jobid().unwrap(), 1);
        assert_eq!(q.external(), Some("12345"));
        assert_eq!(q.number(), Some("12345"));
        assert_eq!(q.owner(), "root");
        assert_eq!(q.sender(), "root");
        assert_eq!(q.mailaddr(), "root@vm");
        assert_eq!(q.jobtag(), "");
        assert_eq!(q.desiredec(), Some(2));
        assert_eq!(q.desiredbr(), Some(13));
        assert_eq!(q.maxdials(), Some(12));
        assert_eq!(q.maxtries(), Some(3));
        assert_eq!(q.totpages(), 1);
        assert_eq!(q.totdials(), 0);
        assert_eq!(q.get("returned"), Some("7"));
        assert_eq!(q.get("status"), Some(""));
        assert_eq!(q.get_i64("tts"), Some(1795345299));
    }

    #[test]
    fn documents_resolve_and_skip_saved_items() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docq")).unwrap();
        std::fs::write(dir.path().join("docq/doc1.pdf;c0"), b"x").unwrap();
        let q = parse(LAB_QFILE.as_bytes());
        let docs = q.documents(dir.path()).unwrap();
        assert_eq!(
            docs,
            vec![Document {
                first_page_dir: 0,
                subaddr: String::new(),
                path: dir.path().join("docq/doc1.pdf;c0"),
                file: "docq/doc1.pdf;c0".into(),
            }]
        );
    }

    #[test]
    fn a_sent_document_leaves_the_job_and_its_source_gets_its_base_name() {
        let mut q = parse(
            b"jobid:3\n!pdf:0::docq/doc1.pdf.3\nfax:0::docq/doc1.pdf;c0\n!tiff:0::docq/doc2.tif.3\nfax:2::docq/doc2.tif;c0\n",
        );
        let mut seen = Vec::new();
        q.remove_fax_entry(0, |src| {
            seen.push(src.to_vec());
            Some(base_document(src))
        })
        .unwrap();
        assert_eq!(seen, vec![b"docq/doc1.pdf.3".to_vec()]);
        assert_eq!(
            String::from_utf8(q.to_bytes()).unwrap(),
            "jobid:3\n!pdf:0::docq/doc1.pdf\n!tiff:0::docq/doc2.tif.3\nfax:2::docq/doc2.tif;c0\n"
        );
        // The other document is now entry 0; a bare `fax:` without a saved source is just removed.
        q.remove_fax_entry(0, |_| None).unwrap();
        assert!(q.get_all("fax").is_empty());
        assert!(q.remove_fax_entry(0, |_| None).is_err());
        assert_eq!(base_document(b"docq/doc9.ps.cover"), b"docq/doc9.ps.cover");
        assert_eq!(base_document(b"docq/doc9"), b"docq/doc9");
    }

    #[test]
    fn documents_split_at_first_two_colons_and_repeat() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a:b.tif"), b"x").unwrap();
        std::fs::write(dir.path().join("c.tif"), b"x").unwrap();
        let q = parse(b"jobid:3\nfax:2:sub1:a:b.tif\nfax:0::c.tif\n");
        let docs = q.documents(dir.path()).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].first_page_dir, 2);
        assert_eq!(docs[0].subaddr, "sub1");
        assert_eq!(docs[0].path, dir.path().join("a:b.tif"));
        assert_eq!(docs[1].path, dir.path().join("c.tif"));
    }

    #[test]
    fn document_errors_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = parse(b"jobid:3\n").documents(dir.path()).unwrap_err();
        assert!(matches!(e, QFileError::NoFaxEntries { .. }), "{e}");
        let e = parse(b"fax:x::a.tif\n").documents(dir.path()).unwrap_err();
        assert!(matches!(e, QFileError::BadFaxEntry { .. }), "{e}");
        let e = parse(b"fax:0::\n").documents(dir.path()).unwrap_err();
        assert!(matches!(e, QFileError::BadFaxEntry { .. }), "{e}");
        let e = parse(b"fax:0::nope.tif\n")
            .documents(dir.path())
            .unwrap_err();
        assert!(matches!(e, QFileError::MissingDocument { .. }), "{e}");
        assert!(e.to_string().contains("nope.tif"));
    }

    #[test]
    fn jobid_errors() {
        assert!(matches!(
            parse(b"x:1\n").jobid(),
            Err(QFileError::NoJobId { .. })
        ));
        assert!(matches!(
            parse(b"jobid:\n").jobid(),
            Err(QFileError::NoJobId { .. })
        ));
        assert!(matches!(
            parse(b"jobid:0\n").jobid(),
            Err(QFileError::BadJobId { .. })
        ));
        assert!(matches!(
            parse(b"jobid:1x\n").jobid(),
            Err(QFileError::BadJobId { .. })
        ));
        assert_eq!(parse(b"jobid:  42 \n").jobid().unwrap(), 42);
    }

    #[test]
    fn whitespace_lines_without_colon_and_repeats_are_kept() {
        let text = b"number:   0401 23  \n\nnot a tag line\nfax:0::a\nfax:0::b\n";
        let q = parse(text);
        assert_eq!(q.get("number"), Some("0401 23  "));
        assert_eq!(q.warnings().len(), 2);
        assert_eq!(q.warnings()[0].line, 2);
        assert_eq!(q.warnings()[1].line, 3);
        assert_eq!(q.get_all("fax"), vec!["0::a", "0::b"]);
        assert_eq!(q.to_bytes(), text);
    }

    #[test]
    fn status_continuation_round_trip() {
        let text = b"status:first\\\nsecond\\\nthird\nstatuscode:0\n";
        let mut q = parse(text);
        assert_eq!(q.get("status"), Some("first\nsecond\nthird"));
        assert_eq!(q.get("statuscode"), Some("0"));
        assert!(q.warnings().is_empty());
        assert_eq!(q.to_bytes(), text);
        q.set("status", "Error calling DynamicConfig: x\n").unwrap();
        q.set("status", "a\nb:c").unwrap();
        assert_eq!(q.to_bytes(), b"status:a\\\nb:c\nstatuscode:0\n");
        let q2 = parse(&q.to_bytes());
        assert_eq!(q2.get("status"), Some("a\nb:c"));
        assert_eq!(q2.get("statuscode"), Some("0"));
    }

    #[test]
    fn set_replaces_first_or_appends_and_escapes() {
        let mut q = parse(b"a:1\nb:2\na:3\n");
        q.set("a", "x").unwrap();
        q.set("c", "line\nbreak").unwrap();
        q.set("status", "ends in backslash\\").unwrap();
        q.set_u32("b", 9).unwrap();
        assert_eq!(
            q.to_bytes(),
            b"a:x\nb:9\na:3\nc:line break\nstatus:ends in backslash\n"
        );
        assert!(matches!(q.set("a:b", "1"), Err(QFileError::BadTag { .. })));
        assert!(matches!(q.set("", "1"), Err(QFileError::BadTag { .. })));
    }

    #[test]
    fn non_utf8_is_kept() {
        let text = b"sender:M\xfcller\nnumber:1\n";
        let q = parse(text);
        assert_eq!(q.get("sender"), None);
        assert_eq!(q.sender(), "M\u{fffd}ller");
        assert_eq!(q.get_bytes("sender"), Some(&b"M\xfcller"[..]));
        assert_eq!(q.to_bytes(), text);
    }

    #[test]
    fn limits_and_garbage() {
        let mut big = b"comments:".to_vec();
        big.extend(std::iter::repeat_n(b'x', 1024 * 1024));
        big.push(b'\n');
        assert_eq!(parse(&big).get("comments").unwrap().len(), 1024 * 1024);
        let huge = vec![b'x'; MAX_LINE_LEN + 1];
        assert!(matches!(
            QFileContent::parse("q", &huge),
            Err(QFileError::LineTooLong { line: 1, .. })
        ));
        let toobig = vec![b'\n'; MAX_FILE_SIZE as usize + 1];
        assert!(matches!(
            QFileContent::parse("q", &toobig),
            Err(QFileError::TooLarge { .. })
        ));
        let e = QFileContent::parse("sendq/q9", b"jobid:1\n\0\0\0").unwrap_err();
        assert!(matches!(e, QFileError::BinaryGarbage { offset: 8, .. }));
        assert!(e.to_string().contains("sendq/q9"));
    }

    #[test]
    fn missing_final_newline_is_added() {
        let q = parse(b"a:1\nb:2");
        assert_eq!(q.get("b"), Some("2"));
        assert_eq!(q.to_bytes(), b"a:1\nb:2\n");
        assert_eq!(parse(b"").to_bytes(), b"");
    }

    #[test]
    fn file_rewrite_in_place_keeps_inode() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q1");
        std::fs::write(&path, LAB_QFILE).unwrap();
        let ino = std::fs::metadata(&path).unwrap().ino();
        {
            let mut q = QFile::open_locked(&path).unwrap();
            q.set("returned", "0").unwrap();
            q.set("status", "Busy signal detected").unwrap();
            q.set("comments", "").unwrap();
            q.write().unwrap();
            // Shrinking must truncate the old tail.
            q.set("status", "").unwrap();
            q.write().unwrap();
        }
        let text = std::fs::read(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
        let q = parse(&text);
        assert_eq!(q.get("returned"), Some("0"));
        assert_eq!(q.get("status"), Some(""));
        assert_eq!(text.len(), LAB_QFILE.len());
    }

    #[test]
    fn lock_is_exclusive_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q2");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(b"jobid:2\n")
            .unwrap();
        let held = QFile::open_locked(&path).unwrap();
        let e = QFile::open_locked_timeout(&path, Duration::from_millis(50)).unwrap_err();
        assert!(matches!(e, QFileError::LockTimeout { .. }), "{e}");
        drop(held);
        assert_eq!(QFile::open_locked(&path).unwrap().jobid().unwrap(), 2);
        let e = QFile::open_locked(dir.path().join("nope")).unwrap_err();
        assert!(matches!(e, QFileError::Open { .. }));
    }

    fn line_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            // tag:value with arbitrary non-newline, non-NUL bytes
            ("[a-z!]{1,10}", proptest::collection::vec(1u8..=255, 0..40)).prop_map(|(t, v)| {
                let mut l = t.into_bytes();
                l.push(b':');
                l.extend(v.into_iter().filter(|&b| b != b'\n'));
                l
            }),
            // lines without a colon
            proptest::collection::vec(1u8..=255, 0..20)
                .prop_map(|v| v.into_iter().filter(|&b| b != b'\n' && b != b':').collect()),
            // status with continuation lines
            proptest::collection::vec("[ -~&&[^\\\\]]{0,10}", 1..4)
                .prop_map(|parts| { format!("status:{}", parts.join("\\\n")).into_bytes() }),
        ]
    }

    proptest! {
        #[test]
        fn parse_write_parse_is_identity(lines in proptest::collection::vec(line_strategy(), 0..30)) {
            let mut text = Vec::new();
            for l in &lines {
                text.extend_from_slice(l);
                text.push(b'\n');
            }
            let q1 = QFileContent::parse("q", &text).unwrap();
            let written = q1.to_bytes();
            prop_assert_eq!(&written, &text);
            let q2 = QFileContent::parse("q", &written).unwrap();
            prop_assert_eq!(q1, q2);
        }

        #[test]
        fn set_then_parse_returns_value(tag in "[a-z]{1,8}", value in "[^\\x00]{0,40}") {
            prop_assume!(tag != "jobid");
            let mut q = QFileContent::parse("q", b"jobid:1\nstatus:x\n").unwrap();
            q.set(&tag, &value).unwrap();
            let again = QFileContent::parse("q", &q.to_bytes()).unwrap();
            prop_assert_eq!(again.get(&tag), q.get(&tag));
            prop_assert_eq!(again.get("jobid"), Some("1"));
        }
    }

    proptest! {
        /// Lines with backslashes anywhere (a `status:` ending in `\\` swallows the next
        /// line, even a `jobid:`), CRs and stray colons: written back byte for byte, same values.
        #[test]
        fn backslashes_and_continuations_round_trip(
            lines in proptest::collection::vec(
                (prop_oneof![Just("status"), Just("jobid"), Just("fax"), Just("x")],
                 proptest::collection::vec(prop_oneof![Just(b'\\'), Just(b'\r'), Just(b':'), Just(b' '), 1u8..=255], 0..12)),
                0..20),
            final_newline in any::<bool>(),
        ) {
            let mut text = Vec::new();
            for (i, (tag, v)) in lines.iter().enumerate() {
                if i > 0 {
                    text.push(b'\n');
                }
                text.extend_from_slice(tag.as_bytes());
                text.push(b':');
                text.extend(v.iter().copied().filter(|&b| b != b'\n'));
            }
            if final_newline && !text.is_empty() {
                text.push(b'\n');
            }
            let q1 = QFileContent::parse("q", &text).unwrap();
            let written = q1.to_bytes();
            let mut expected = text.clone();
            if !expected.is_empty() && !expected.ends_with(b"\n") {
                expected.push(b'\n');
            }
            prop_assert_eq!(&written, &expected);
            let q2 = QFileContent::parse("q", &written).unwrap();
            prop_assert_eq!(q1.entries().collect::<Vec<_>>(), q2.entries().collect::<Vec<_>>());
        }

        /// `set` never changes any other line, whatever the value (newlines, backslashes, NUL).
        #[test]
        fn set_touches_only_its_own_line(
            tag in prop_oneof![Just("status".to_string()), "[a-z]{1,8}"],
            value in any::<String>(),
        ) {
            prop_assume!(tag != "jobid" && tag != "statuscode" && tag != "fax");
            let mut q = QFileContent::parse("q", b"jobid:1\nstatus:x\nstatuscode:0\nfax:0::docq/a.tif\n").unwrap();
            q.set(&tag, &value).unwrap();
            let again = QFileContent::parse("q", &q.to_bytes()).unwrap();
            prop_assert_eq!(again.entries().collect::<Vec<_>>(), q.entries().collect::<Vec<_>>());
            prop_assert_eq!(again.get("jobid"), Some("1"));
            prop_assert_eq!(again.get("statuscode"), Some("0"));
            prop_assert_eq!(again.get("fax"), Some("0::docq/a.tif"));
        }
    }

    /// Fuzz finding (qfile_roundtrip): a qfile ending in `status:...\` (no newline after)
    /// swallowed the next tag `set` appended, so e.g. a new `commid:` was lost on re-read.
    #[test]
    fn appended_tag_after_a_dangling_status_continuation_is_kept() {
        for text in [
            &b"jobid:8\nstatus:first\\\nsecond si\\"[..],
            b"status:x\\\\\n",
        ] {
            let mut q = QFileContent::parse("q", text).unwrap();
            q.set("fuzztag", "t1s:0\nkill").unwrap();
            let again = QFileContent::parse("q", &q.to_bytes()).unwrap();
            assert_eq!(again.get("fuzztag"), Some("t1s:0 kill"));
            assert_eq!(
                again.entries().collect::<Vec<_>>(),
                q.entries().collect::<Vec<_>>()
            );
        }
    }
}
