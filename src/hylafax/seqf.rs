//! Sequence-number files (`log/seqf`, `recvq/seqf`) with HylaFAX's `Sequence::getNext`
//! semantics: the file holds the **next** number, as plain digits without a newline.
//!
//! GOfax.IP stored the last used number plus `\n` and formatted 8 digits; sharing a seqf with
//! real HylaFAX that way reuses numbers. We follow HylaFAX exactly; since our names have 9
//! digits, a number GOfax already used can never clash with one of our file names.

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

/// Returns the number stored in `path` and stores the following one (HylaFAX's `getNext`),
/// synced before the number is used.
///
/// Unique across threads and processes: the read-modify-write happens under `flock`.
pub fn next(path: &Path) -> Result<u32, SeqfError> {
    next_inner(path, true).map(|(n, _)| n)
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
    let result = read_locked(file, path)
        .and_then(|(n, len)| store(file, path, following(n), len, false).map(|()| n));
    // The descriptor stays open: the lock is not released by a close.
    lock::unlock(file);
    result
}

/// [`next`] with the sync left to the caller: the number, and the file to `fdatasync` before
/// anything that refers to the number becomes durable. fsfaxsend syncs it in the background
/// while it prepares the fax and connects to FreeSWITCH, and waits for that sync before the
/// qfile's dial count (the first synced record naming the commid), instead of syncing it on
/// its own before anything else.
pub fn next_deferred(path: &Path) -> Result<(u32, File), SeqfError> {
    next_inner(path, false)
}

/// A sequence file [`next_unsynced`] keeps open.
struct Held {
    path: PathBuf,
    file: File,
    /// (device, inode) when it was opened: the path still names this file while they match.
    id: (u64, u64),
}

/// One allocation through a fresh open; the file is returned unlocked (still open).
fn next_inner(path: &Path, sync: bool) -> Result<(u32, File), SeqfError> {
    let file = open_seqf(path)?;
    lock::lock_exclusive(&file).map_err(|source| SeqfError::Lock {
        path: path.to_path_buf(),
        source,
    })?;
    let result = read_locked(&file, path)
        .and_then(|(n, held)| store(&file, path, following(n), held, sync).map(|()| n));
    // Closing would release the lock too, but the file may be kept open (`next_deferred`).
    lock::unlock(&file);
    result.map(|n| (n, file))
}

/// Makes sure `path` hands out no number up to `used` (a number a durable record refers to)
/// unless it has wrapped around since: a stored next number at most `used`, and less than a
/// million behind it, is moved to the one after `used`. Returns whether it was moved.
pub fn ensure_past(path: &Path, used: u32) -> Result<bool, SeqfError> {
    const WINDOW: u32 = 1_000_000;
    let file = open_seqf(path)?;
    lock::lock_exclusive(&file).map_err(|source| SeqfError::Lock {
        path: path.to_path_buf(),
        source,
    })?;
    let (stored, held) = read_locked(&file, path)?;
    if stored > used || used - stored >= WINDOW {
        return Ok(false);
    }
    store(&file, path, following(used), held, true)?;
    Ok(true)
}

/// The stored number and the length of what the file held (at most 64 bytes are read, from
/// offset 0 whatever the descriptor's position, so a held descriptor reads like a new one).
fn read_locked(file: &File, path: &Path) -> Result<(u32, usize), SeqfError> {
    let mut buf = [0u8; 64];
    let len = file
        .read_at(&mut buf, 0)
        .map_err(|source| SeqfError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    Ok((parse_seq(&buf[..len]), len))
}

/// Stores `next` over the `held` bytes the file had; it is cut only when the new text is
/// shorter (the number grows until it wraps, so usually one `pwrite` is all).
fn store(file: &File, path: &Path, next: u32, held: usize, sync: bool) -> Result<(), SeqfError> {
    let text = next.to_string();
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
    Ok(())
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
    fn deferred_numbers_are_shared_and_the_lock_is_released_while_the_file_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seqf");
        let (n, held) = next_deferred(&p).unwrap();
        assert_eq!(n, 1);
        assert_eq!(std::fs::read(&p).unwrap(), b"2");
        // Another allocator gets the lock at once while `held` is still open.
        let other = std::fs::File::open(&p).unwrap();
        assert!(lock::lock_exclusive_bounded(&other, std::time::Duration::ZERO).unwrap());
        lock::unlock(&other);
        assert_eq!(next(&p).unwrap(), 2);
        held.sync_data().unwrap();
        assert_eq!(next_deferred(&p).unwrap().0, 3);
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
