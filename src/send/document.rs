//! The document fsfaxsend hands to `txfax`: the job's `fax:` entries, resumed at the first
//! unsent page.
//!
//! HylaFAX's `fax:<dir>:<subaddr>:<path>` names the first TIFF directory (page, 0-based) still to
//! send; spandsp's `fax_start_page` is the same 0-based directory index (t4_tx_init). One
//! document is used as it is with `fax_start_page`; several are merged with `tiffcp` (which
//! HylaFAX already depends on) into one temporary file, copying only their unsent pages.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::tiff;

/// Prefix of the temporary merged documents; [`sweep_stale`] recognises them by it.
const TEMP_PREFIX: &str = "fsfaxsend-";

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("the job has no document left to send")]
    NothingToSend,
    #[error("document {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: tiff::TiffError,
    },
    #[error("document {path} starts at page {first} but has only {pages} pages")]
    StartBeyondEnd {
        path: PathBuf,
        first: u32,
        pages: u32,
    },
    #[error("cannot prepare the merged document in {dir}: {source}")]
    TempDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("tiffcp could not run: {0}")]
    TiffcpSpawn(std::io::Error),
    #[error("tiffcp did not finish within {0:?}")]
    TiffcpTimeout(Duration),
    #[error("tiffcp failed ({status}): {stderr}")]
    TiffcpFailed { status: String, stderr: String },
    #[error("the merged document {path} is unusable: {source}")]
    MergedUnreadable {
        path: PathBuf,
        source: tiff::TiffError,
    },
}

impl DocumentError {
    /// A problem with the job's own documents (re-sending cannot help) rather than with this
    /// machine (a full disk, a missing tiffcp), which a later attempt may not have.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            DocumentError::NothingToSend
                | DocumentError::Unreadable { .. }
                | DocumentError::StartBeyondEnd { .. }
        )
    }
}

/// One `fax:` entry of the job with its page count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDocument {
    /// Absolute path of the TIFF.
    pub path: PathBuf,
    /// First directory (0-based page) still to send.
    pub first_page: u32,
    /// Pages in the file.
    pub pages: u32,
    /// The document as the qfile names it (`docq/doc1.pdf;c0`), for faxq's messages.
    pub item: String,
}

impl JobDocument {
    /// Reads the page count of `path`; the entry's first page must lie inside the document
    /// (equal to the page count means "fully sent before").
    pub fn inspect(path: PathBuf, first_page: u32) -> Result<JobDocument, DocumentError> {
        let pages = tiff::count_pages(&path).map_err(|source| DocumentError::Unreadable {
            path: path.clone(),
            source,
        })?;
        if first_page > pages {
            return Err(DocumentError::StartBeyondEnd {
                path,
                first: first_page,
                pages,
            });
        }
        Ok(JobDocument {
            item: path.display().to_string(),
            path,
            first_page,
            pages,
        })
    }

    /// The same document, named `item` as the qfile writes it.
    pub fn named(self, item: String) -> JobDocument {
        JobDocument { item, ..self }
    }

    /// Pages still to send.
    pub fn remaining(&self) -> u32 {
        self.pages.saturating_sub(self.first_page)
    }
}

/// What `txfax` is given.
#[derive(Debug)]
pub struct Prepared {
    /// The file FreeSWITCH reads.
    pub path: PathBuf,
    /// `fax_start_page` (0-based), when a single document resumes part-way.
    pub start_page: Option<u32>,
    /// Pages this attempt will send.
    pub pages: u32,
    /// The temporary merged file, removed when this is dropped.
    _temp: Option<TempFile>,
}

impl Prepared {
    /// Replaces the document for this attempt by `bytes` (the pages this attempt sends, and only
    /// those) written to a temporary file in `temp_dir`. The job's own documents in docq are
    /// never written; a merged temporary file of `self` goes when `self` is dropped.
    pub fn replaced(
        &self,
        bytes: &[u8],
        temp_dir: &Path,
        job_tag: &str,
    ) -> Result<Prepared, DocumentError> {
        let temp = TempFile {
            path: temp_dir.join(format!(
                "{TEMP_PREFIX}{}-{job_tag}-tagline.tif",
                std::process::id()
            )),
        };
        std::fs::write(&temp.path, bytes).map_err(|source| DocumentError::TempDir {
            dir: temp_dir.to_path_buf(),
            source,
        })?;
        Ok(Prepared {
            path: temp.path.clone(),
            start_page: None,
            pages: self.pages,
            _temp: Some(temp),
        })
    }
}

/// Builds the document for this attempt from the job's entries.
pub async fn prepare(
    docs: &[JobDocument],
    temp_dir: &Path,
    job_tag: &str,
    tiffcp_timeout: Duration,
) -> Result<Prepared, DocumentError> {
    let left: Vec<&JobDocument> = docs.iter().filter(|d| d.remaining() > 0).collect();
    let pages: u32 = left.iter().map(|d| d.remaining()).sum();
    match left.as_slice() {
        [] => Err(DocumentError::NothingToSend),
        [one] => Ok(Prepared {
            path: one.path.clone(),
            start_page: (one.first_page > 0).then_some(one.first_page),
            pages,
            _temp: None,
        }),
        several => {
            let temp = merge(several, temp_dir, job_tag, tiffcp_timeout).await?;
            let merged = tiff::count_pages(&temp.path).map_err(|source| {
                DocumentError::MergedUnreadable {
                    path: temp.path.clone(),
                    source,
                }
            })?;
            if merged != pages {
                return Err(DocumentError::TiffcpFailed {
                    status: "wrong page count".into(),
                    stderr: format!("expected {pages} pages, the merged file has {merged}"),
                });
            }
            Ok(Prepared {
                path: temp.path.clone(),
                start_page: None,
                pages,
                _temp: Some(temp),
            })
        }
    }
}

async fn merge(
    docs: &[&JobDocument],
    temp_dir: &Path,
    job_tag: &str,
    timeout: Duration,
) -> Result<TempFile, DocumentError> {
    let temp_err = |source| DocumentError::TempDir {
        dir: temp_dir.to_path_buf(),
        source,
    };
    // A private directory of symlinks gives tiffcp names without commas or other characters
    // its "file,dir," syntax would misread.
    let work = TempFile {
        path: temp_dir.join(format!("{TEMP_PREFIX}{}-{job_tag}.d", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&work.path);
    std::fs::create_dir(&work.path).map_err(temp_err)?;
    let out = TempFile {
        path: temp_dir.join(format!("{TEMP_PREFIX}{}-{job_tag}.tif", std::process::id())),
    };
    let _ = std::fs::remove_file(&out.path);
    let mut args = Vec::with_capacity(docs.len() + 1);
    for (i, d) in docs.iter().enumerate() {
        let link = work.path.join(format!("in{i}.tif"));
        std::os::unix::fs::symlink(&d.path, &link).map_err(temp_err)?;
        args.push(format!("{},{},", link.display(), d.first_page));
    }
    args.push(out.path.display().to_string());

    let mut child = tokio::process::Command::new("tiffcp")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(DocumentError::TiffcpSpawn)?;
    let stderr = child.stderr.take();
    let read_err = async move {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        if let Some(s) = stderr {
            let _ = s.take(16 * 1024).read_to_end(&mut buf).await;
        }
        buf
    };
    let (status, err) =
        match tokio::time::timeout(timeout, async { tokio::join!(child.wait(), read_err) }).await {
            Ok((status, err)) => (status.map_err(DocumentError::TiffcpSpawn)?, err),
            Err(_) => {
                let _ = child.kill().await;
                return Err(DocumentError::TiffcpTimeout(timeout));
            }
        };
    drop(work);
    if !status.success() {
        return Err(DocumentError::TiffcpFailed {
            status: status.to_string(),
            stderr: String::from_utf8_lossy(&err).trim().to_string(),
        });
    }
    Ok(out)
}

/// Removes merged documents left behind by fsfaxsend processes that no longer exist (killed
/// with SIGKILL, or a machine crash), so temp files never accumulate.
pub fn sweep_stale(temp_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(temp_dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid as u32 == std::process::id() || process_alive(pid) {
            continue;
        }
        let path = e.path();
        let gone = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if gone.is_ok() {
            tracing::info!(path = %path.display(), "removed a stale temporary document");
            removed += 1;
        }
    }
    removed
}

fn process_alive(pid: i32) -> bool {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        // EPERM: it exists but belongs to someone else.
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// A file or directory removed when dropped.
#[derive(Debug)]
struct TempFile {
    path: PathBuf,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = if self.path.is_dir() {
            std::fs::remove_dir_all(&self.path)
        } else {
            std::fs::remove_file(&self.path)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/fax")
            .join(name)
    }

    fn doc(name: &str, first: u32) -> JobDocument {
        JobDocument::inspect(fixture(name), first).unwrap()
    }

    #[tokio::test]
    async fn single_document_is_used_as_is_with_its_start_page() {
        let dir = tempfile::tempdir().unwrap();
        let p = prepare(
            &[doc("test12.tif", 0)],
            dir.path(),
            "1",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert_eq!(p.path, fixture("test12.tif"));
        assert_eq!((p.start_page, p.pages), (None, 12));
        let p = prepare(
            &[doc("test12.tif", 5)],
            dir.path(),
            "1",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert_eq!((p.start_page, p.pages), (Some(5), 7));
    }

    #[tokio::test]
    async fn several_documents_are_merged_from_their_first_unsent_page() {
        let dir = tempfile::tempdir().unwrap();
        let docs = [
            doc("test3.tif", 3),
            doc("test12.tif", 10),
            doc("test3.tif", 1),
        ];
        let p = prepare(&docs, dir.path(), "7", Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!((p.start_page, p.pages), (None, 4));
        assert!(p.path.starts_with(dir.path()));
        assert_eq!(tiff::count_pages(&p.path).unwrap(), 4);
        let merged = p.path.clone();
        drop(p);
        assert!(!merged.exists(), "the merged file outlived the attempt");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn nothing_left_and_bad_start_pages_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = prepare(
            &[doc("test3.tif", 3)],
            dir.path(),
            "1",
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, DocumentError::NothingToSend) && e.is_permanent());
        let e = JobDocument::inspect(fixture("test3.tif"), 4).unwrap_err();
        assert!(e.to_string().contains("has only 3 pages"), "{e}");
        let e = JobDocument::inspect(dir.path().join("missing.tif"), 0).unwrap_err();
        assert!(
            e.to_string().contains("missing.tif") && e.is_permanent(),
            "{e}"
        );
    }

    #[test]
    fn stale_files_of_dead_processes_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        // A pid that cannot exist (above the kernel's pid_max limit).
        let stale = dir.path().join(format!("{TEMP_PREFIX}99999999-3.tif"));
        let mine = dir
            .path()
            .join(format!("{TEMP_PREFIX}{}-4.tif", std::process::id()));
        let other = dir.path().join("unrelated.tif");
        for p in [&stale, &mine, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        assert_eq!(sweep_stale(dir.path()), 1);
        assert!(!stale.exists() && mine.exists() && other.exists());
    }
}
