//! Running as the spool's owner. HylaFAX's own root daemons (faxgetty, hfaxd) give up root
//! for the fax user once they hold what needs root; every file they create is then the fax
//! user's, with their own modes. fsfaxd does the same right after binding its listener: a
//! root-owned `log/xferfaxlog`, `recvq/seqf` or session log would stop fsfaxsend (run by faxq
//! as uucp) from appending its SEND record, and hfaxd from serving the session logs the
//! faxrcvd mail links to.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User, setgid, setgroups, setuid};

/// Why fsfaxd could not become the spool's owner.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("spool {path}: {source}")]
    Spool {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run as the spool's owner {user} (uid {uid}, gid {gid}): {source}")]
    Switch {
        user: String,
        uid: u32,
        gid: u32,
        source: nix::Error,
    },
}

/// Who fsfaxd runs as after [`run_as_spool_owner`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunningAs {
    /// Not started as root: nothing to give up.
    Unprivileged,
    /// Started as root; now the spool owner's uid and primary group.
    Owner { user: String, uid: u32, gid: u32 },
    /// Started as root on a spool root owns: still root (warned).
    RootOnRootSpool,
}

/// When running as root: becomes the owner of `spool` (uid, that user's primary group, no
/// other groups). A spool owned by root leaves fsfaxd root, with a loud warning: every file it
/// creates would be root's, which HylaFAX's tools running as uucp cannot use.
pub fn run_as_spool_owner(spool: &Path) -> Result<RunningAs, OwnerError> {
    if !Uid::effective().is_root() {
        return Ok(RunningAs::Unprivileged);
    }
    let meta = std::fs::metadata(spool).map_err(|source| OwnerError::Spool {
        path: spool.to_path_buf(),
        source,
    })?;
    if meta.uid() == 0 {
        tracing::warn!(
            spool = %spool.display(),
            "running as root on a spool owned by root: the files fsfaxd creates (xferfaxlog, \
             seqf, session logs, the journal) stay root's, and faxq, fsfaxsend and hfaxd, \
             which run as uucp, cannot write or read them; `chown -R uucp:uucp` the spool or \
             run fsfaxd as uucp"
        );
        return Ok(RunningAs::RootOnRootSpool);
    }
    let uid = meta.uid();
    let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
    let name = user
        .as_ref()
        .map_or_else(|| uid.to_string(), |u| u.name.clone());
    let gid = user.map_or(meta.gid(), |u| u.gid.as_raw());
    let err = |source| OwnerError::Switch {
        user: name.clone(),
        uid,
        gid,
        source,
    };
    // Groups first, while still allowed to change them.
    setgroups(&[Gid::from_raw(gid)]).map_err(err)?;
    setgid(Gid::from_raw(gid)).map_err(err)?;
    setuid(Uid::from_raw(uid)).map_err(err)?;
    tracing::info!(user = %name, uid, gid, "running as the spool's owner");
    Ok(RunningAs::Owner {
        user: name,
        uid,
        gid,
    })
}
