//! Durable pending-reception records, so no received fax is ever orphaned.
//!
//! fsfaxd writes one record before `rxfax` starts and removes it after faxrcvd ran; at
//! start-up it replays whatever is left (GOfax.IP kept nothing and lost faxes on any crash).
//!
//! Location `<spool>/recvq/.fsfax/`: hidden from `faxstat -r` (lists only `fax*` names) and
//! from faxcron's recvq cleanup (removes `fax*` files), and on the same file system as the
//! TIFFs. One file per reception, `pending-<commid>`, `key=value` lines with percent-escaped
//! values, written temp file → fsync → rename → directory fsync.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// Spool-relative journal directory.
pub const JOURNAL_DIR: &str = "recvq/.fsfax";
const CORRUPT_DIR: &str = "corrupt";
const PREFIX: &str = "pending-";
const TMP_PREFIX: &str = ".tmp-";
const HEADER: &str = "fsfax-pending 1";
/// Records are tiny; anything bigger is not ours.
const MAX_RECORD: u64 = 64 * 1024;

/// Characters escaped in values: controls (newlines!), `%` itself, and non-ASCII via UTF-8.
const VALUE_SET: &AsciiSet = &CONTROLS.add(b'%');

/// Errors of the journal. Each names the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: cannot create journal directory: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("{path}: cannot write journal record: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path}: cannot list journal: {source}")]
    List { path: PathBuf, source: io::Error },
    #[error("{path}: cannot remove journal record: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("invalid commid {0:?} for a journal record (digits only)")]
    BadCommid(String),
}

/// What fsfaxd needs to finish a reception after a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingReception {
    /// `%09u` commid (also the record's name).
    pub commid: String,
    /// Spool-relative `recvq/faxNNNNNNNNN.tif`.
    pub recvq_file: String,
    pub modem: String,
    pub cidnum: String,
    pub cidname: String,
    pub recipient: String,
    pub gateway: String,
    pub call_uuid: String,
    /// Unix seconds when the call was accepted.
    pub started: i64,
    /// How far the hand-over got, so a restart neither repeats nor skips a step.
    pub delivery: DeliveryStage,
}

/// How far the hand-over of a reception got before fsfaxd stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeliveryStage {
    /// Receiving or received; nothing handed over yet.
    #[default]
    Received,
    /// The xferfaxlog record is written.
    Logged,
    /// faxrcvd was started. It runs in its own process group and outlives a killed fsfaxd,
    /// so it is never started a second time (the fax would be mailed twice).
    Handed,
}

impl DeliveryStage {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryStage::Received => "received",
            DeliveryStage::Logged => "logged",
            DeliveryStage::Handed => "handed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "received" => Some(DeliveryStage::Received),
            "logged" => Some(DeliveryStage::Logged),
            "handed" => Some(DeliveryStage::Handed),
            _ => None,
        }
    }
}

/// A record that could not be read; it was moved to `corrupt/` for an admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord {
    pub moved_to: PathBuf,
    pub reason: String,
}

/// Result of a start-up scan.
#[derive(Debug, Clone, Default)]
pub struct JournalScan {
    pub pending: Vec<PendingReception>,
    pub corrupt: Vec<CorruptRecord>,
}

/// The journal directory.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// Opens (creating, mode 0700) `<spool>/recvq/.fsfax/`.
    pub fn open(spool: &Path) -> Result<Self, JournalError> {
        let dir = spool.join(JOURNAL_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| JournalError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Durably records a reception (replacing an older record with the same commid).
    pub fn add(&self, rec: &PendingReception) -> Result<PathBuf, JournalError> {
        check_commid(&rec.commid)?;
        let path = self.dir.join(format!("{PREFIX}{}", rec.commid));
        let tmp = self
            .dir
            .join(format!("{TMP_PREFIX}{}-{}", rec.commid, std::process::id()));
        let werr = |source| JournalError::Write {
            path: path.clone(),
            source,
        };
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(encode(rec).as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            sync_dir(&self.dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(werr)?;
        Ok(path)
    }

    /// Records how far the hand-over of `commid` got (durably, like [`Journal::add`]).
    /// A missing record is left missing.
    pub fn set_delivery(&self, commid: &str, stage: DeliveryStage) -> Result<(), JournalError> {
        check_commid(commid)?;
        let path = self.dir.join(format!("{PREFIX}{commid}"));
        if !path.exists() {
            return Ok(());
        }
        let mut rec = read_record(&path, commid).map_err(|reason| JournalError::Write {
            path: path.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, reason),
        })?;
        rec.delivery = stage;
        self.add(&rec).map(|_| ())
    }

    /// Removes the record of `commid` (absent is fine).
    pub fn remove(&self, commid: &str) -> Result<(), JournalError> {
        check_commid(commid)?;
        let path = self.dir.join(format!("{PREFIX}{commid}"));
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir).map_err(|source| JournalError::Remove { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(JournalError::Remove { path, source }),
        }
    }

    /// Every pending record, oldest commid first. Unreadable records are moved to
    /// `corrupt/` and reported; stale temp files from a crash mid-write are deleted.
    pub fn list(&self) -> Result<JournalScan, JournalError> {
        let lerr = |source| JournalError::List {
            path: self.dir.clone(),
            source,
        };
        let mut scan = JournalScan::default();
        for entry in fs::read_dir(&self.dir).map_err(lerr)? {
            let entry = entry.map_err(lerr)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with(TMP_PREFIX) {
                // Never renamed into place: the record was not committed.
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), "cannot remove stale journal temp: {e}");
                }
                continue;
            }
            if !name.starts_with(PREFIX) {
                continue;
            }
            match read_record(&path, &name[PREFIX.len()..]) {
                Ok(rec) => scan.pending.push(rec),
                Err(reason) => {
                    let moved_to = self.set_aside(&path, &name);
                    tracing::error!(
                        path = %path.display(),
                        moved_to = %moved_to.display(),
                        "corrupt pending-reception record: {reason}"
                    );
                    scan.corrupt.push(CorruptRecord { moved_to, reason });
                }
            }
        }
        scan.pending.sort_by(|a, b| a.commid.cmp(&b.commid));
        Ok(scan)
    }

    fn set_aside(&self, path: &Path, name: &str) -> PathBuf {
        let dir = self.dir.join(CORRUPT_DIR);
        let target = dir.join(name);
        let moved = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .and_then(|()| fs::rename(path, &target));
        match moved {
            Ok(()) => target,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot move corrupt record aside: {e}");
                path.to_path_buf()
            }
        }
    }
}

fn check_commid(commid: &str) -> Result<(), JournalError> {
    if commid.is_empty() || commid.len() > 20 || !commid.bytes().all(|b| b.is_ascii_digit()) {
        return Err(JournalError::BadCommid(commid.to_owned()));
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn encode(rec: &PendingReception) -> String {
    let started = rec.started.to_string();
    let fields: [(&str, &str); 10] = [
        ("commid", &rec.commid),
        ("recvq_file", &rec.recvq_file),
        ("modem", &rec.modem),
        ("cidnum", &rec.cidnum),
        ("cidname", &rec.cidname),
        ("recipient", &rec.recipient),
        ("gateway", &rec.gateway),
        ("call_uuid", &rec.call_uuid),
        ("started", &started),
        ("delivery", rec.delivery.as_str()),
    ];
    let mut out = format!("{HEADER}\n");
    for (k, v) in fields {
        out.push_str(k);
        out.push('=');
        out.extend(utf8_percent_encode(v, VALUE_SET));
        out.push('\n');
    }
    out
}

fn read_record(path: &Path, name_commid: &str) -> Result<PendingReception, String> {
    let meta = fs::metadata(path).map_err(|e| format!("cannot stat: {e}"))?;
    if meta.len() > MAX_RECORD {
        return Err(format!("too large ({} bytes)", meta.len()));
    }
    let bytes = fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    let rec = decode(&text)?;
    if rec.commid != name_commid {
        return Err(format!(
            "commid {:?} does not match the file name",
            rec.commid
        ));
    }
    Ok(rec)
}

fn decode(text: &str) -> Result<PendingReception, String> {
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err("missing header line".to_owned());
    }
    let mut rec = PendingReception::default();
    let mut started = None;
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line without '=': {line:?}"))?;
        let v = percent_decode_str(v)
            .decode_utf8()
            .map_err(|_| format!("bad escape in {k}"))?
            .into_owned();
        match k {
            "commid" => rec.commid = v,
            "recvq_file" => rec.recvq_file = v,
            "modem" => rec.modem = v,
            "cidnum" => rec.cidnum = v,
            "cidname" => rec.cidname = v,
            "recipient" => rec.recipient = v,
            "gateway" => rec.gateway = v,
            "call_uuid" => rec.call_uuid = v,
            "started" => started = Some(v.parse::<i64>().map_err(|_| "bad started".to_owned())?),
            "delivery" => {
                rec.delivery =
                    DeliveryStage::parse(&v).ok_or_else(|| format!("bad delivery {v:?}"))?;
            }
            // Newer versions may add keys; ignore them.
            _ => {}
        }
    }
    check_commid(&rec.commid).map_err(|e| e.to_string())?;
    if rec.recvq_file.is_empty() {
        return Err("no recvq_file".to_owned());
    }
    rec.started = started.ok_or_else(|| "no started".to_owned())?;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn rec(commid: &str) -> PendingReception {
        PendingReception {
            commid: commid.into(),
            recvq_file: "recvq/fax000000003.tif".into(),
            modem: "freeswitch0".into(),
            cidnum: "+49 30 1234".into(),
            cidname: "Évil\nname=x %41\0".into(),
            recipient: "12345".into(),
            gateway: "gw1".into(),
            call_uuid: "8a6c0f0e-0000-4000-8000-000000000001".into(),
            started: 1_795_345_299,
            delivery: DeliveryStage::Received,
        }
    }

    #[test]
    fn add_list_remove() {
        let spool = tempfile::tempdir().unwrap();
        let j = Journal::open(spool.path()).unwrap();
        assert_eq!(j.dir(), spool.path().join("recvq/.fsfax"));
        let mode = fs::metadata(j.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let p = j.add(&rec("000000012")).unwrap();
        j.add(&rec("000000002")).unwrap();
        assert!(!fs::read_to_string(&p).unwrap().contains("Évil\n"));
        let scan = Journal::open(spool.path()).unwrap().list().unwrap();
        assert!(scan.corrupt.is_empty());
        assert_eq!(scan.pending, vec![rec("000000002"), rec("000000012")]);
        j.remove("000000002").unwrap();
        j.remove("000000002").unwrap();
        assert_eq!(j.list().unwrap().pending, vec![rec("000000012")]);
        // The record is invisible to HylaFAX's recvq tools (no `fax*` name in recvq).
        let names: Vec<_> = fs::read_dir(spool.path().join("recvq"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(".fsfax")]);
    }

    #[test]
    fn corrupt_records_are_set_aside_and_temps_removed() {
        let spool = tempfile::tempdir().unwrap();
        let j = Journal::open(spool.path()).unwrap();
        j.add(&rec("000000001")).unwrap();
        fs::write(j.dir().join("pending-000000005"), b"\xff\xfe garbage").unwrap();
        fs::write(
            j.dir().join("pending-000000006"),
            "fsfax-pending 1\ncommid=000000006\n",
        )
        .unwrap();
        fs::write(j.dir().join("pending-000000007"), encode(&rec("000000008"))).unwrap();
        fs::write(j.dir().join(".tmp-000000009-1"), b"half").unwrap();
        fs::write(j.dir().join("README"), b"not ours").unwrap();
        let scan = j.list().unwrap();
        assert_eq!(scan.pending, vec![rec("000000001")]);
        assert_eq!(scan.corrupt.len(), 3);
        for c in &scan.corrupt {
            assert!(c.moved_to.starts_with(j.dir().join("corrupt")), "{c:?}");
            assert!(c.moved_to.exists());
        }
        assert!(!j.dir().join(".tmp-000000009-1").exists());
        assert!(j.dir().join("README").exists());
        // A second scan is clean.
        let again = j.list().unwrap();
        assert!(again.corrupt.is_empty());
        assert_eq!(again.pending.len(), 1);
    }

    #[test]
    fn bad_commid_is_refused() {
        let spool = tempfile::tempdir().unwrap();
        let j = Journal::open(spool.path()).unwrap();
        for bad in ["", "../x", "12a", "1/2"] {
            assert!(matches!(j.add(&rec(bad)), Err(JournalError::BadCommid(_))));
            assert!(matches!(j.remove(bad), Err(JournalError::BadCommid(_))));
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let r = rec("000000042");
        assert_eq!(decode(&encode(&r)).unwrap(), r);
    }

    proptest::proptest! {
        /// Any text in any field (newlines, `%`, `=`, NUL, non-ASCII) survives the record.
        #[test]
        fn any_values_round_trip(
            commid in "[0-9]{1,20}",
            recvq_file in ".+",
            fields in proptest::collection::vec(proptest::prelude::any::<String>(), 6),
            started in proptest::prelude::any::<i64>(),
        ) {
            let r = PendingReception {
                commid,
                recvq_file,
                modem: fields[0].clone(),
                cidnum: fields[1].clone(),
                cidname: fields[2].clone(),
                recipient: fields[3].clone(),
                gateway: fields[4].clone(),
                call_uuid: fields[5].clone(),
                started,
                delivery: DeliveryStage::Logged,
            };
            let text = encode(&r);
            proptest::prop_assert_eq!(text.lines().count(), 11, "one line per field: {:?}", text);
            proptest::prop_assert_eq!(decode(&text).unwrap(), r);
        }
    }

    #[test]
    fn delivery_stage_is_durable_and_old_records_read_as_received() {
        let spool = tempfile::tempdir().unwrap();
        let j = Journal::open(spool.path()).unwrap();
        j.add(&rec("000000005")).unwrap();
        j.set_delivery("000000005", DeliveryStage::Handed).unwrap();
        let scan = j.list().unwrap();
        assert_eq!(scan.pending[0].delivery, DeliveryStage::Handed);
        // A record written before stages existed has no `delivery` line.
        let old = encode(&rec("000000006")).replace("delivery=received\n", "");
        assert!(!old.contains("delivery"));
        assert_eq!(decode(&old).unwrap().delivery, DeliveryStage::Received);
        // Setting the stage of a record that is gone does not bring it back.
        j.set_delivery("000000007", DeliveryStage::Logged).unwrap();
        assert_eq!(j.list().unwrap().pending.len(), 1);
    }
}
