//! Sequence-number files (`log/seqf`, `recvq/seqf`) with HylaFAX's `Sequence::getNext`
//! semantics: the file holds the **next** number, as plain digits without a newline.
//!
//! GOfax.IP stored the last used number plus `\n` and formatted 8 digits; sharing a seqf with
//! real HylaFAX that way reuses numbers. We follow HylaFAX exactly; since our names have 9
//! digits, a number GOfax already used can never clash with one of our file names.
//!
//! Commids (`log/seqf`) come from blocks reserved durably in the file, on a second line that
//! HylaFAX's `atol` never reads: `<next>\nfsfax reserved <limit> boot <boot id>\n` (see
//! [`next_commid`]). HylaFAX's own `getNext` writes the bare number back; fsfax then reserves
//! a new block.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::lock;

/// HylaFAX's MAXSEQNUM: numbers wrap to 1 before reaching it.
pub const MAX_SEQNUM: u32 = 999_999_999;

/// Errors allocating a sequence number. Each names the seqf file.
#[derive(Debug, thiserror::Error)]
pub enum SeqfError {
    #[error("{path}: cannot stat sequence file: {source}")]
    Stat { path: PathBuf, source: io::Error },
    #[error("{path}: cannot create sequence file: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("{path}: cannot open sequence file: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path}: sequence file is not a regular file (symlink or replaced while opening)")]
    NotSameFile { path: PathBuf },
    #[error("{path}: cannot lock sequence file: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("{path}: cannot read sequence file: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: cannot update sequence file: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Commids one reservation covers (see [`next_commid`]): after a crash of the machine, at most
/// this many numbers are skipped.
pub const RESERVED_BLOCK: u32 = 100;

/// How far behind a durable mark a stored number may be and still count as behind it (rather
/// than wrapped around past it): the same window [`ensure_past`] uses.
const WINDOW: u32 = 1_000_000;

/// What an allocation must keep true across a crash of the machine.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// HylaFAX's `getNext`: the number, synced or not (the caller's own records may cover it).
    Plain { sync: bool },
    /// From the block reserved in the file for this boot: synced only when a block is
    /// reserved, or found not yet synced ([`plan_reserved`]).
    Reserved(BootId),
}

/// Returns the number stored in `path` and stores the following one (HylaFAX's `getNext`),
/// synced before the number is used.
///
/// Unique across threads and processes: the read-modify-write happens under `flock`.
pub fn next(path: &Path) -> Result<u32, SeqfError> {
    next_inner(path, Mode::Plain { sync: true }).map(|(n, _)| n)
}

/// [`next`] without the sync, for a caller whose own durable record of every number it uses
/// stands in for it: fsfaxd's journal records the commid and recvq number of each reception
/// and moves the sequence files past them at start-up ([`ensure_past`]), so a crash of the
/// machine that loses this update cannot hand out a journalled number twice.
///
/// The file stays open between calls (one per path, for the process's life): an allocation
/// is `stat` of the path (is it still the file we hold?), `flock`, `pread`, `pwrite`, unlock,
/// five system calls instead of ten. A seqf that was replaced or removed is opened afresh.
pub fn next_unsynced(path: &Path) -> Result<u32, SeqfError> {
    next_held(path, Mode::Plain { sync: false })
}

/// A commid for fsfaxd from `log/seqf`, through the held file of [`next_unsynced`]: from this
/// boot's reserved block like [`next_commid`], so that after a crash of the machine fsfaxd
/// does not take numbers fsfaxsend had used (its journal covers only its own). Without a
/// boot id, as [`next_unsynced`].
pub fn next_commid_unsynced(path: &Path) -> Result<u32, SeqfError> {
    next_held(path, commid_mode())
}

/// How commids are taken on this machine: from this boot's reserved block, or, without a boot
/// id, as HylaFAX does with the sync left to the caller.
fn commid_mode() -> Mode {
    BootId::current().map_or(Mode::Plain { sync: false }, Mode::Reserved)
}

fn next_held(path: &Path, mode: Mode) -> Result<u32, SeqfError> {
    static HELD: std::sync::Mutex<Vec<Held>> = std::sync::Mutex::new(Vec::new());
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    let current = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let at = match held.iter().position(|h| h.path == path) {
        Some(i) if current == Some(held[i].id) => i,
        stale => {
            if let Some(i) = stale {
                held.swap_remove(i);
            }
            let file = open_seqf(path)?;
            let id = file.metadata().map_err(|source| SeqfError::Stat {
                path: path.to_path_buf(),
                source,
            })?;
            held.push(Held {
                path: path.to_path_buf(),
                file,
                id: (id.dev(), id.ino()),
            });
            held.len() - 1
        }
    };
    let file = &held[at].file;
    lock::lock_exclusive(file).map_err(|source| SeqfError::Lock {
        path: path.to_path_buf(),
        source,
    })?;
    let result = allocate_locked(file, path, mode);
    // The descriptor stays open: the lock is not released by a close.
    lock::unlock(file);
    result
}

/// A commid for fsfaxsend from `log/seqf`, and the file to `fdatasync` before anything that
/// names it becomes durable, if any.
///
/// Numbers come from a block of [`RESERVED_BLOCK`] reserved in the file itself, on a second
/// line HylaFAX's `getNext` does not read (`fsfax reserved <limit> boot <boot id>`). A new
/// block is synced, under the lock, before its first number is used; the numbers inside it
/// need no sync, because only a crash of the machine can lose an unsynced write, and after
/// one (a new boot id) the first allocation resumes at the block's limit. So each send
/// costs no seqf sync, where it cost one (issue 13), and no number is handed out twice.
///
/// Without a boot id (no `/proc`), the number is returned with the file, unsynced: fsfaxsend
/// syncs it in the background while it prepares the fax and connects to FreeSWITCH, and
/// waits for that sync before the qfile's dial count (the first synced record naming the
/// commid).
pub fn next_commid(path: &Path) -> Result<(u32, Option<File>), SeqfError> {
    let mode = commid_mode();
    let (n, file) = next_inner(path, mode)?;
    Ok((n, matches!(mode, Mode::Plain { .. }).then_some(file)))
}

/// A sequence file [`next_unsynced`] keeps open.
struct Held {
    path: PathBuf,
    file: File,
    /// (device, inode) when it was opened: the path still names this file while they match.
    id: (u64, u64),
}

/// One allocation through a fresh open; the file is returned unlocked (still open).
fn next_inner(path: &Path, mode: Mode) -> Result<(u32, File), SeqfError> {
    let file = open_seqf(path)?;
    lock::lock_exclusive(&file).map_err(|source| SeqfError::Lock {
        path: path.to_path_buf(),
        source,
    })?;
    let result = allocate_locked(&file, path, mode);
    // Closing would release the lock too, but the file may be kept open (`next_commid`).
    lock::unlock(&file);
    result.map(|n| (n, file))
}

/// The allocation itself, with the file locked.
fn allocate_locked(file: &File, path: &Path, mode: Mode) -> Result<u32, SeqfError> {
    let stored = read_locked(file, path)?;
    let boot = match mode {
        Mode::Plain { sync } => {
            let next = following(stored.next);
            store(file, path, next, stored.reservation, stored.len, sync)?;
            return Ok(stored.next);
        }
        Mode::Reserved(boot) => boot,
    };
    let (n, block, sync) = plan_reserved(stored.next, stored.reservation, boot);
    if n != stored.next {
        tracing::info!(
            path = %path.display(),
            stored = stored.next,
            resumed = n,
            "the machine restarted since the last commid was reserved: resuming past the \
             reserved block"
        );
    }
    let mut len = stored.len;
    if sync {
        // Marked as not yet synced until it is, so that if this process dies before the sync
        // ends, the next allocator on this boot syncs it before using the block.
        let pending = Reservation {
            durable: false,
            ..block
        };
        len = store(file, path, following(n), Some(pending), len, true)?;
    }
    store(file, path, following(n), Some(block), len, false)?;
    Ok(n)
}

/// For a stored next number and reservation, on this boot: the number to hand out, the block
/// it comes from, and whether that block must be synced first (a new block, or one whose
/// reserving process died before its sync ended).
fn plan_reserved(
    next: u32,
    reservation: Option<Reservation>,
    boot: BootId,
) -> (u32, Reservation, bool) {
    let n = match reservation {
        // Inside this boot's block: the file in the page cache is the truth, once the block
        // is durable.
        Some(r) if r.boot == boot && (1..=RESERVED_BLOCK).contains(&steps(next, r.limit)) => {
            let durable = Reservation { durable: true, ..r };
            return (next, durable, !r.durable);
        }
        // Another boot: an unsynced update may have been lost, so no number behind the
        // block's limit is safe.
        Some(r) if r.boot != boot && (1..WINDOW).contains(&steps(next, r.limit)) => r.limit,
        // Used up, moved by someone else (HylaFAX, an admin), or never reserved: numbers
        // handed out so far were covered by a block or by their own sync.
        _ => next,
    };
    let block = Reservation {
        limit: advance(n, RESERVED_BLOCK),
        boot,
        durable: true,
    };
    (n, block, true)
}

/// Makes sure `path` hands out no number up to `used` (a number a durable record refers to)
/// unless it has wrapped around since: a stored next number at most `used`, and less than a
/// million behind it, is moved to the one after `used`. Returns whether it was moved.
pub fn ensure_past(path: &Path, used: u32) -> Result<bool, SeqfError> {
    let file = open_seqf(path)?;
    lock::lock_exclusive(&file).map_err(|source| SeqfError::Lock {
        path: path.to_path_buf(),
        source,
    })?;
    let stored = read_locked(&file, path)?;
    if stored.next > used || used - stored.next >= WINDOW {
        return Ok(false);
    }
    store(
        &file,
        path,
        following(used),
        stored.reservation,
        stored.len,
        true,
    )?;
    Ok(true)
}

/// What a sequence file holds.
struct Stored {
    /// HylaFAX's next number.
    next: u32,
    /// fsfax's reservation line, when there is a readable one.
    reservation: Option<Reservation>,
    /// How many bytes the file held.
    len: usize,
}

/// A block of numbers reserved durably on one boot of the machine: every number before
/// `limit` (and at most [`RESERVED_BLOCK`] before it) may have been handed out unsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reservation {
    limit: u32,
    boot: BootId,
    /// Synced: written as `reserved`, where a block whose sync has not ended says
    /// `reserving`.
    durable: bool,
}

/// The reservation line's leading words, for a synced block and for one being synced.
const RESERVED_MARK: &str = "fsfax reserved ";
const RESERVING_MARK: &str = "fsfax reserving ";

/// The stored number and reservation (at most 128 bytes are read, from offset 0 whatever the
/// descriptor's position, so a held descriptor reads like a new one).
fn read_locked(file: &File, path: &Path) -> Result<Stored, SeqfError> {
    let mut buf = [0u8; 128];
    let len = file
        .read_at(&mut buf, 0)
        .map_err(|source| SeqfError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let text = &buf[..len];
    let reservation = parse_reservation(text);
    if reservation.is_none()
        && text
            .windows(b"fsfax reserv".len())
            .any(|w| w == b"fsfax reserv")
    {
        tracing::warn!(
            path = %path.display(),
            "unreadable reservation line in the sequence file; reserving a new block from the \
             stored number"
        );
    }
    Ok(Stored {
        next: parse_seq(text),
        reservation,
        len,
    })
}

/// The second line, `fsfax reserved <limit> boot <boot id>`, complete up to its newline.
fn parse_reservation(text: &[u8]) -> Option<Reservation> {
    let text = std::str::from_utf8(text).ok()?;
    let (_, rest) = text.split_once('\n')?;
    let (line, _) = rest.split_once('\n')?;
    let (words, durable) = match line.strip_prefix(RESERVED_MARK) {
        Some(words) => (words, true),
        None => (line.strip_prefix(RESERVING_MARK)?, false),
    };
    let mut words = words.split(' ');
    let limit = words.next()?.parse::<u32>().ok()?;
    let boot = match (words.next(), words.next(), words.next()) {
        (Some("boot"), Some(id), None) => BootId::parse(id)?,
        _ => return None,
    };
    (1..MAX_SEQNUM).contains(&limit).then_some(Reservation {
        limit,
        boot,
        durable,
    })
}

/// Stores `next` (and the reservation line) over the `held` bytes the file had; it is cut only
/// when the new text is shorter (the number grows until it wraps, so usually one `pwrite` is
/// all). Returns the length written.
fn store(
    file: &File,
    path: &Path,
    next: u32,
    reservation: Option<Reservation>,
    held: usize,
    sync: bool,
) -> Result<usize, SeqfError> {
    let text = match reservation {
        Some(r) => format!(
            "{next}\n{}{} boot {}\n",
            if r.durable {
                RESERVED_MARK
            } else {
                RESERVING_MARK
            },
            r.limit,
            r.boot.as_str()
        ),
        None => next.to_string(),
    };
    let werr = |source| SeqfError::Write {
        path: path.to_path_buf(),
        source,
    };
    file.write_all_at(text.as_bytes(), 0).map_err(werr)?;
    if text.len() < held {
        file.set_len(text.len() as u64).map_err(werr)?;
    }
    if sync {
        // A reused number after a crash would make the O_EXCL create of the recvq file fail.
        file.sync_data().map_err(werr)?;
    }
    Ok(text.len())
}

/// The identity of this boot of the machine (`/proc/sys/kernel/random/boot_id`): an unsynced
/// write can be lost only across a change of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootId([u8; 36]);

impl BootId {
    /// This boot's, read once per process; `None` without a readable `/proc`.
    pub fn current() -> Option<BootId> {
        static CURRENT: std::sync::OnceLock<Option<BootId>> = std::sync::OnceLock::new();
        *CURRENT.get_or_init(|| {
            let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
            BootId::parse(text.trim_end())
        })
    }

    /// A boot id as the kernel prints it: 36 characters of hex digits and dashes.
    pub fn parse(s: &str) -> Option<BootId> {
        let bytes: [u8; 36] = s.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_hexdigit() || *b == b'-')
            .then_some(BootId(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is accepted by `parse`.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// How many numbers one turn of HylaFAX's sequence has (1..MAX_SEQNUM, then 1 again).
const CYCLE: u32 = MAX_SEQNUM - 1;

/// How many [`following`] steps lead from `from` to `to` (both in 1..MAX_SEQNUM).
fn steps(from: u32, to: u32) -> u32 {
    (to + CYCLE - from) % CYCLE
}

/// The number `k` [`following`] steps after `n`.
fn advance(n: u32, k: u32) -> u32 {
    (n - 1 + k) % CYCLE + 1
}

/// Commid as HylaFAX prints it: `%09u`.
pub fn format_commid(n: u32) -> String {
    format!("{n:09}")
}

/// Spool-relative received-file name: `recvq/fax%09u.tif`.
pub fn recvq_relative(n: u32) -> String {
    format!("recvq/fax{n:09}.tif")
}

/// lstat; create `O_EXCL` 0600 if missing, else open and check it is the inode we stat'ed.
fn open_seqf(path: &Path) -> Result<File, SeqfError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(f) => Ok(f),
                // Another process created it between our lstat and open: use theirs.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => open_existing(path),
                Err(source) => Err(SeqfError::Create {
                    path: path.to_path_buf(),
                    source,
                }),
            }
        }
        Err(source) => Err(SeqfError::Stat {
            path: path.to_path_buf(),
            source,
        }),
        Ok(_) => open_existing(path),
    }
}

fn open_existing(path: &Path) -> Result<File, SeqfError> {
    let before = std::fs::symlink_metadata(path).map_err(|source| SeqfError::Stat {
        path: path.to_path_buf(),
        source,
    })?;
    if !before.file_type().is_file() {
        return Err(SeqfError::NotSameFile {
            path: path.to_path_buf(),
        });
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| SeqfError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let after = file.metadata().map_err(|source| SeqfError::Stat {
        path: path.to_path_buf(),
        source,
    })?;
    if (after.dev(), after.ino()) != (before.dev(), before.ino()) {
        return Err(SeqfError::NotSameFile {
            path: path.to_path_buf(),
        });
    }
    Ok(file)
}

/// Leading digits after optional whitespace; missing, zero or out of range → 1.
fn parse_seq(buf: &[u8]) -> u32 {
    let s = std::str::from_utf8(buf).unwrap_or("").trim_start();
    let digits: &str = &s[..s.bytes().take_while(u8::is_ascii_digit).count()];
    match digits.parse::<u32>() {
        Ok(n) if (1..MAX_SEQNUM).contains(&n) => n,
        _ => 1,
    }
}

fn following(n: u32) -> u32 {
    match (n + 1) % MAX_SEQNUM {
        0 => 1,
        m => m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_with_0600_and_stores_next_without_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seqf");
        assert_eq!(next(&p).unwrap(), 1);
        assert_eq!(std::fs::read(&p).unwrap(), b"2");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(next(&p).unwrap(), 2);
        assert_eq!(std::fs::read(&p).unwrap(), b"3");
    }

    #[test]
    fn unsynced_numbers_are_shared_and_the_lock_is_released_while_the_file_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seqf");
        let (n, held) = next_inner(&p, Mode::Plain { sync: false }).unwrap();
        assert_eq!(n, 1);
        assert_eq!(std::fs::read(&p).unwrap(), b"2");
        // Another allocator gets the lock at once while `held` is still open.
        let other = std::fs::File::open(&p).unwrap();
        assert!(lock::lock_exclusive_bounded(&other, std::time::Duration::ZERO).unwrap());
        lock::unlock(&other);
        assert_eq!(next(&p).unwrap(), 2);
        held.sync_data().unwrap();
        assert_eq!(next_inner(&p, Mode::Plain { sync: false }).unwrap().0, 3);
    }

    const BOOT_A: &str = "6f1c3d1e-5b7a-4b0e-9d7e-3c1a2b4c5d6e";
    const BOOT_B: &str = "0b9e5f43-1d2c-4e8f-a7b6-9c0d1e2f3a4b";

    fn boot(id: &str) -> BootId {
        BootId::parse(id).unwrap()
    }

    fn reserved(limit: u32, id: &str) -> Option<Reservation> {
        Some(block(limit, id))
    }

    fn block(limit: u32, id: &str) -> Reservation {
        Reservation {
            limit,
            boot: boot(id),
            durable: true,
        }
    }

    /// A block whose reserving process died before its sync ended.
    fn reserving(limit: u32, id: &str) -> Option<Reservation> {
        Some(Reservation {
            durable: false,
            ..block(limit, id)
        })
    }

    #[test]
    fn a_block_is_reserved_and_synced_once_then_its_numbers_need_no_sync() {
        let a = boot(BOOT_A);
        // Nothing reserved yet (a seqf from HylaFAX or an older fsfax): a block from the
        // stored number, synced.
        assert_eq!(plan_reserved(57, None, a), (57, block(157, BOOT_A), true));
        // Inside it: no sync, the reservation unchanged, up to its last number.
        assert_eq!(
            plan_reserved(58, reserved(157, BOOT_A), a),
            (58, block(157, BOOT_A), false)
        );
        assert_eq!(
            plan_reserved(156, reserved(157, BOOT_A), a),
            (156, block(157, BOOT_A), false)
        );
        // Used up: the next block.
        assert_eq!(
            plan_reserved(157, reserved(157, BOOT_A), a),
            (157, block(257, BOOT_A), true)
        );
        // Moved by someone else on this boot (an admin's reset, HylaFAX's own getNext far
        // ahead): a new block from where the file stands.
        assert_eq!(
            plan_reserved(5, reserved(157, BOOT_A), a),
            (5, block(105, BOOT_A), true)
        );
        assert_eq!(
            plan_reserved(900, reserved(157, BOOT_A), a),
            (900, block(1000, BOOT_A), true)
        );
    }

    #[test]
    fn a_block_whose_reserving_process_died_before_its_sync_is_synced_by_the_next() {
        let a = boot(BOOT_A);
        assert_eq!(
            plan_reserved(58, reserving(157, BOOT_A), a),
            (58, block(157, BOOT_A), true)
        );
        // On another boot it counts like a synced one: it may have reached the disk.
        assert_eq!(
            plan_reserved(60, reserving(157, BOOT_A), boot(BOOT_B)),
            (157, block(257, BOOT_B), true)
        );
        // In the file: the block is written as `reserving`, synced, then marked `reserved`.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seqf");
        std::fs::write(&p, format!("58\nfsfax reserving 157 boot {BOOT_A}\n")).unwrap();
        assert_eq!(
            parse_reservation(&std::fs::read(&p).unwrap()),
            reserving(157, BOOT_A)
        );
        assert_eq!(next_inner(&p, Mode::Reserved(a)).unwrap().0, 58);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("59\nfsfax reserved 157 boot {BOOT_A}\n")
        );
    }

    #[test]
    fn after_a_restart_of_the_machine_numbers_resume_past_the_reserved_block() {
        let b = boot(BOOT_B);
        // The stored number may be any update behind the truth: resume at the block's limit.
        assert_eq!(
            plan_reserved(60, reserved(157, BOOT_A), b),
            (157, block(257, BOOT_B), true)
        );
        assert_eq!(
            plan_reserved(3, reserved(157, BOOT_A), b),
            (157, block(257, BOOT_B), true)
        );
        // Ahead of the limit (HylaFAX's or fsfaxd's own durable moves): from where it stands.
        assert_eq!(
            plan_reserved(157, reserved(157, BOOT_A), b),
            (157, block(257, BOOT_B), true)
        );
        assert_eq!(
            plan_reserved(400, reserved(157, BOOT_A), b),
            (400, block(500, BOOT_B), true)
        );
        // A limit that wrapped past the end is still ahead of a number just before the end.
        assert_eq!(
            plan_reserved(999_999_990, reserved(52, BOOT_A), b),
            (52, block(152, BOOT_B), true)
        );
    }

    #[test]
    fn blocks_and_their_limits_follow_hylafax_wrap() {
        assert_eq!(advance(999_999_950, RESERVED_BLOCK), 52);
        assert_eq!(steps(999_999_950, 52), RESERVED_BLOCK);
        assert_eq!(advance(999_999_998, 1), following(999_999_998));
        assert_eq!(steps(999_999_998, 1), 1);
        let a = boot(BOOT_A);
        assert_eq!(
            plan_reserved(999_999_998, reserved(52, BOOT_A), a),
            (999_999_998, block(52, BOOT_A), false)
        );
        assert_eq!(
            plan_reserved(51, reserved(52, BOOT_A), a),
            (51, block(52, BOOT_A), false)
        );
    }

    #[test]
    fn the_reservation_line_survives_our_writers_and_hylafax_reads_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seqf");
        let a = Mode::Reserved(boot(BOOT_A));
        std::fs::write(&p, b"41").unwrap();
        assert_eq!(next_inner(&p, a).unwrap().0, 41);
        let line = format!("42\nfsfax reserved 141 boot {BOOT_A}\n");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), line);
        // HylaFAX's getNext reads it with atol: the number, then stops.
        assert_eq!(parse_seq(line.as_bytes()), 42);
        for n in 42..=140 {
            assert_eq!(next_inner(&p, a).unwrap().0, n);
        }
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("141\nfsfax reserved 141 boot {BOOT_A}\n")
        );
        assert_eq!(next_inner(&p, a).unwrap().0, 141);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("142\nfsfax reserved 241 boot {BOOT_A}\n")
        );
        // HylaFAX-style allocations (synced, and fsfaxd's unsynced recvq ones) and fsfaxd's
        // start-up move keep the line.
        assert_eq!(next(&p).unwrap(), 142);
        assert_eq!(next_inner(&p, Mode::Plain { sync: false }).unwrap().0, 143);
        assert!(ensure_past(&p, 150).unwrap());
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("151\nfsfax reserved 241 boot {BOOT_A}\n")
        );
        // On another boot the next commid is the block's limit.
        assert_eq!(next_inner(&p, Mode::Reserved(boot(BOOT_B))).unwrap().0, 241);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("242\nfsfax reserved 341 boot {BOOT_B}\n")
        );
        // HylaFAX's own getNext writes the bare number (and cuts the line): a new block.
        std::fs::write(&p, b"243").unwrap();
        assert_eq!(next_inner(&p, a).unwrap().0, 243);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("244\nfsfax reserved 343 boot {BOOT_A}\n")
        );
    }

    #[test]
    fn a_torn_or_foreign_reservation_line_is_not_trusted() {
        for text in [
            format!("12\nfsfax reserved 300 boot {BOOT_A}"),
            format!("12\nfsfax reserved 300 boot {}\n", &BOOT_A[..30]),
            format!("12\nfsfax reserved 0 boot {BOOT_A}\n"),
            format!("12\nfsfax reserved 999999999 boot {BOOT_A}\n"),
            format!("12\nfsfax reserved x boot {BOOT_A}\n"),
            format!("12\nfsfax reserved 300 boot {BOOT_A} more\n"),
            format!("12 fsfax reserved 300 boot {BOOT_A}\n"),
            "12\nsomething else\n".to_string(),
        ] {
            assert_eq!(parse_reservation(text.as_bytes()), None, "{text:?}");
        }
        let good = format!("12\nfsfax reserved 300 boot {BOOT_A}\ntrailing junk");
        assert_eq!(parse_reservation(good.as_bytes()), reserved(300, BOOT_A));
        assert_eq!(BootId::parse("not a boot id"), None);
        assert_eq!(BootId::parse(&BOOT_A.replace('1', "g")), None);
        // This machine's (Linux, with /proc, where the tests run).
        let id = BootId::current().expect("/proc/sys/kernel/random/boot_id readable");
        assert_eq!(BootId::parse(id.as_str()), Some(id));
    }

    #[test]
    fn reserved_and_plain_allocators_never_share_a_number() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seqf");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let p = p.clone();
                std::thread::spawn(move || {
                    let mode = match i % 3 {
                        0 => Mode::Reserved(boot(BOOT_A)),
                        1 => Mode::Plain { sync: false },
                        _ => Mode::Plain { sync: true },
                    };
                    (0..60)
                        .map(|_| next_inner(&p, mode).unwrap().0)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = HashSet::new();
        for t in threads {
            for n in t.join().unwrap() {
                assert!(all.insert(n), "number {n} handed out twice");
            }
        }
        assert_eq!(all.len(), 480);
        assert_eq!(all.iter().max(), Some(&480));
        let stored = std::fs::read_to_string(&p).unwrap();
        assert!(stored.starts_with("481\n"), "{stored:?}");
    }

    #[test]
    fn the_held_file_agrees_with_other_writers_and_follows_a_replaced_seqf() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seqf");
        assert_eq!(next_unsynced(&p).unwrap(), 1);
        // Another process (faxsend, fsfaxsend) takes the next number through its own open.
        assert_eq!(next(&p).unwrap(), 2);
        assert_eq!(next_unsynced(&p).unwrap(), 3);
        assert_eq!(std::fs::read(&p).unwrap(), b"4");
        // Longer content (GOfax.IP's newline) is cut to the number, as HylaFAX writes it.
        std::fs::write(&p, b"41\n").unwrap();
        assert_eq!(next_unsynced(&p).unwrap(), 41);
        assert_eq!(std::fs::read(&p).unwrap(), b"42");
        // An admin replaces the file (restore from backup): the new one is used, not the
        // unlinked one still held open.
        let tmp = dir.path().join("seqf.new");
        std::fs::write(&tmp, b"700").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        assert_eq!(next_unsynced(&p).unwrap(), 700);
        assert_eq!(std::fs::read(&p).unwrap(), b"701");
        // Removed: created again, from 1.
        std::fs::remove_file(&p).unwrap();
        assert_eq!(next_unsynced(&p).unwrap(), 1);
        assert_eq!(std::fs::read(&p).unwrap(), b"2");
        // The wrap shortens the text: the file holds exactly the new number.
        std::fs::write(&p, b"999999998").unwrap();
        assert_eq!(next_unsynced(&p).unwrap(), 999_999_998);
        assert_eq!(std::fs::read(&p).unwrap(), b"1");
    }

    #[test]
    fn reads_existing_values_like_hylafax() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seqf");
        for (content, want, stored) in [
            (&b"41"[..], 41, &b"42"[..]),
            (b"41\n", 41, b"42"),
            (b"", 1, b"2"),
            (b"garbage", 1, b"2"),
            (b"0", 1, b"2"),
            (b"999999998", 999_999_998, b"1"),
            (b"999999999", 1, b"2"),
            (b"123456789012", 1, b"2"),
        ] {
            std::fs::write(&p, content).unwrap();
            assert_eq!(next(&p).unwrap(), want, "content {content:?}");
            assert_eq!(std::fs::read(&p).unwrap(), stored, "content {content:?}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(format_commid(1), "000000001");
        assert_eq!(recvq_relative(42), "recvq/fax000000042.tif");
    }

    #[test]
    fn missing_directory_and_symlink_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = next(&dir.path().join("no/such/seqf")).unwrap_err();
        assert!(matches!(e, SeqfError::Create { .. }), "{e}");
        assert!(e.to_string().contains("no/such/seqf"));
        let target = dir.path().join("target");
        std::fs::write(&target, b"5").unwrap();
        let link = dir.path().join("seqf");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(next(&link), Err(SeqfError::NotSameFile { .. })));
    }

    #[test]
    fn unique_under_concurrent_threads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seqf");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || (0..50).map(|_| next(&p).unwrap()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = HashSet::new();
        for t in threads {
            for n in t.join().unwrap() {
                assert!(all.insert(n), "number {n} handed out twice");
            }
        }
        assert_eq!(all.len(), 400);
        assert_eq!(all.iter().max(), Some(&400));
    }

    /// Child mode of `unique_under_concurrent_processes`: allocates numbers and prints them.
    #[test]
    fn seqf_child_worker() {
        let Ok(path) = std::env::var("FSFAX_SEQF_CHILD") else {
            return;
        };
        let mut out = String::new();
        for _ in 0..40 {
            out.push_str(&format!("{}\n", next(Path::new(&path)).unwrap()));
        }
        std::fs::write(format!("{path}.{}", std::process::id()), out).unwrap();
    }

    #[test]
    fn unique_under_concurrent_processes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seqf");
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..4)
            .map(|_| {
                std::process::Command::new(&exe)
                    .args([
                        "--exact",
                        "hylafax::seqf::tests::seqf_child_worker",
                        "--quiet",
                    ])
                    .env("FSFAX_SEQF_CHILD", &p)
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        // Compete from this process too, on separate descriptors.
        let mine: Vec<u32> = (0..40).map(|_| next(&p).unwrap()).collect();
        for mut c in children {
            assert!(c.wait().unwrap().success());
        }
        let mut all: HashSet<u32> = mine.into_iter().collect();
        let mut files = 0;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() == "seqf" {
                continue;
            }
            files += 1;
            for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
                let n: u32 = line.parse().unwrap();
                assert!(all.insert(n), "number {n} handed out twice");
            }
        }
        assert_eq!(files, 4);
        assert_eq!(all.len(), 200);
    }

    /// HylaFAX wraps at 999 999 999 back to 1: numbers stay unique across the wrap even with
    /// several processes competing.
    #[test]
    fn unique_across_the_wrap_under_concurrent_processes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seqf");
        std::fs::write(&p, b"999999950").unwrap();
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..3)
            .map(|_| {
                std::process::Command::new(&exe)
                    .args([
                        "--exact",
                        "hylafax::seqf::tests::seqf_child_worker",
                        "--quiet",
                    ])
                    .env("FSFAX_SEQF_CHILD", &p)
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mine: Vec<u32> = (0..40).map(|_| next(&p).unwrap()).collect();
        for mut c in children {
            assert!(c.wait().unwrap().success());
        }
        let mut all: HashSet<u32> = mine.into_iter().collect();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() == "seqf" {
                continue;
            }
            for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
                let n: u32 = line.parse().unwrap();
                assert!(all.insert(n), "number {n} handed out twice");
            }
        }
        assert_eq!(all.len(), 160);
        // 999999950..=999999998 (49 numbers), then 1..=111 after the wrap.
        assert!(all.contains(&999_999_998) && all.contains(&1) && all.contains(&111));
        assert!(all.iter().all(|&n| (1..=999_999_998).contains(&n)));
    }
}
