//! HylaFAX spool files and processes: qfile, seqf, xferfaxlog, session log, virtual modems,
//! DynamicConfig, faxrcvd and the pending-reception journal.
//!
//! This layer knows HylaFAX 6.0.7's on-disk and FIFO formats (see
//! `reference/hylafax-interfaces.md`, which wins over GOfax.IP) and nothing about sockets or
//! FreeSWITCH. Every file has its own `thiserror` error type naming the path involved.

pub mod dynconfig;
pub mod faxrcvd;
pub mod journal;
mod lock;
pub mod modem;
mod process;
pub mod qfile;
pub mod seqf;
pub mod sessionlog;
pub mod tagline;
pub mod writer;
pub mod xferfaxlog;

use std::path::{Path, PathBuf};

/// Paths inside a HylaFAX spool, as real HylaFAX 6.0.7 names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spool {
    root: PathBuf,
}

impl Spool {
    /// A spool rooted at `root` (e.g. `/var/spool/hylafax`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The spool directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves a spool-relative path (absolute paths are returned unchanged).
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// `log/seqf`: the next communication id.
    pub fn log_seqf(&self) -> PathBuf {
        self.root.join("log/seqf")
    }

    /// `recvq/seqf`: the next received-file number.
    pub fn recvq_seqf(&self) -> PathBuf {
        self.root.join("recvq/seqf")
    }

    /// `log/c%09u`: the session log of a commid.
    pub fn session_log(&self, commid: u32) -> PathBuf {
        self.root
            .join(format!("log/c{}", seqf::format_commid(commid)))
    }

    /// Absolute `recvq/fax%09u.tif`.
    pub fn recvq_file(&self, n: u32) -> PathBuf {
        self.root.join(seqf::recvq_relative(n))
    }

    /// `FIFO`: faxq's command FIFO.
    pub fn faxq_fifo(&self) -> PathBuf {
        self.root.join("FIFO")
    }

    /// `FIFO.<dev>`: a modem's own FIFO (written by faxq and fsfaxsend).
    pub fn device_fifo(&self, dev: &str) -> PathBuf {
        self.root.join(format!("FIFO.{dev}"))
    }

    /// `status/<dev>`: the text faxstat shows for a modem.
    pub fn status_file(&self, dev: &str) -> PathBuf {
        self.root.join("status").join(dev)
    }

    /// `etc/config.<dev>`: must exist (even empty) for faxstat/faxq to know the modem.
    pub fn modem_config(&self, dev: &str) -> PathBuf {
        self.root.join("etc").join(format!("config.{dev}"))
    }

    /// Default `log/xferfaxlog` (Debian's build; the man page's `etc/xferfaxlog` is stale).
    pub fn xferfaxlog(&self) -> PathBuf {
        self.root.join("log/xferfaxlog")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_paths_match_hylafax_names() {
        let s = Spool::new("/sp");
        assert_eq!(s.session_log(7), PathBuf::from("/sp/log/c000000007"));
        assert_eq!(s.recvq_file(1), PathBuf::from("/sp/recvq/fax000000001.tif"));
        assert_eq!(
            s.device_fifo("freeswitch0"),
            PathBuf::from("/sp/FIFO.freeswitch0")
        );
        assert_eq!(
            s.status_file("freeswitch0"),
            PathBuf::from("/sp/status/freeswitch0")
        );
        assert_eq!(
            s.modem_config("freeswitch0"),
            PathBuf::from("/sp/etc/config.freeswitch0")
        );
        assert_eq!(s.xferfaxlog(), PathBuf::from("/sp/log/xferfaxlog"));
    }
}
