//! `log/xferfaxlog` records in HylaFAX 6.0.7's format (`FaxAcctInfo::record`): 19 TAB-separated
//! fields, so `xferfaxstats`, `faxcron` and accounting scripts read ours like faxsend's.
//!
//! Unlike GOfax.IP we escape every free-text field (`"` → `\"`, TAB/CR/LF → space) so no field
//! can split a record, quote caller name/number once, and set bit 21 in `params` so
//! `Class2Params::decode` uses the 6.x layout.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Local};

use super::lock;

/// Errors appending to the transfer log. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum XferLogError {
    #[error("{path}: cannot open xferfaxlog: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path}: cannot lock xferfaxlog: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("{path}: cannot append to xferfaxlog: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Page data format (HylaFAX `DF_*`, 2 bits in `params`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataFormat {
    /// T.4 1-D, `DF_1DMH` = 0.
    #[default]
    Mh,
    /// T.4 2-D, `DF_2DMR` = 1.
    Mr,
    /// T.6, `DF_2DMMR` = 3.
    Mmr,
    /// T.85/T.43, `DF_JBIG` = 4: does not fit the 2-bit field; HylaFAX's `df & 3` makes it 0.
    Jbig,
}

impl DataFormat {
    /// The `DF_*` code masked to 2 bits as `Class2Params::encode` does.
    pub fn code(self) -> u32 {
        match self {
            DataFormat::Mh => 0,
            DataFormat::Mr => 1,
            DataFormat::Mmr => 3,
            // DF_JBIG (4) masked with `& 3`, exactly as HylaFAX encodes it.
            DataFormat::Jbig => 0,
        }
    }

    /// From SpanDSP's encoding name (`T.4 1-D`, `T.4 2-D`, `T.6`, `T.85`, `T.85-L0`, `T.43`).
    pub fn from_encoding_name(name: &str) -> Option<Self> {
        match name.trim() {
            "T.4 1-D" => Some(DataFormat::Mh),
            "T.4 2-D" => Some(DataFormat::Mr),
            "T.6" => Some(DataFormat::Mmr),
            n if n.starts_with("T.85") || n == "T.43" => Some(DataFormat::Jbig),
            _ => None,
        }
    }

    /// The name HylaFAX writes in the qfile's `dataformat:` (`Class2Params::dataFormatName`).
    pub fn hylafax_name(self) -> &'static str {
        match self {
            DataFormat::Mh => "1-D MH",
            DataFormat::Mr => "2-D MR",
            DataFormat::Mmr => "2-D MMR",
            DataFormat::Jbig => "JBIG",
        }
    }
}

/// Vertical resolution (HylaFAX `VR_*` as `encode()` stores it in bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerticalRes {
    /// 98 lpi, `VR_NORMAL` = 0.
    #[default]
    Normal,
    /// 196 lpi, `VR_FINE` = 1.
    Fine,
    /// 391 lpi, `VR_R8` = 2.
    Superfine,
    /// 391 lpi at 16 dots/mm, `VR_R16` = 4.
    Ultrafine,
}

impl VerticalRes {
    /// From the vertical resolution in lines per inch (as `Class2Params::setRes` rounds).
    pub fn from_lpi(lpi: u32) -> Self {
        match lpi {
            0..=150 => VerticalRes::Normal,
            151..=250 => VerticalRes::Fine,
            _ => VerticalRes::Superfine,
        }
    }

    fn code(self) -> u32 {
        match self {
            VerticalRes::Normal => 0,
            VerticalRes::Fine => 1,
            VerticalRes::Superfine => 2,
            VerticalRes::Ultrafine => 4,
        }
    }
}

/// The session parameters encoded into the `params` field.
///
/// Mapping (HylaFAX 6.x `Class2Params::encode`): vr bits 0-2 ([`VerticalRes`]), br bits 3-6
/// (`BR_2400`=0 … `BR_14400`=5, `BR_16800`=6 … `BR_33600`=13, i.e. `bps / 2400 - 1`), wd
/// bits 9-11 (0 = A4 1728 px), ln bits 12-13 (0 A4, 1 B4, 2 unlimited), df bits 14-15
/// ([`DataFormat`]), ec bit 16 (ECM used), bf 17 and st 18-20 (0), bit 21 = 6.x layout flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Signalling rate in bit/s (0 if never negotiated).
    pub bit_rate: u32,
    /// Error correction mode used.
    pub ecm: bool,
    /// Page encoding.
    pub data_format: DataFormat,
    /// Vertical resolution.
    pub vres: VerticalRes,
    /// Page width code (`WD_*`, 0 = A4 1728 px).
    pub width_code: u32,
    /// Page length code (`LN_*`: 0 A4, 1 B4, 2 unlimited; faxsend logs 2).
    pub length_code: u32,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            bit_rate: 0,
            ecm: false,
            data_format: DataFormat::Mh,
            vres: VerticalRes::Normal,
            width_code: 0,
            length_code: 2,
        }
    }
}

impl Params {
    /// HylaFAX `BR_*` code for a rate: `bps / 2400 - 1`, clamped to 0..=13.
    pub fn br_code(bit_rate: u32) -> u32 {
        (bit_rate / 2400).saturating_sub(1).min(13)
    }

    /// `Class2Params::encode()` with the 6.x version bit.
    pub fn encode(&self) -> u32 {
        self.vres.code()
            | (Self::br_code(self.bit_rate) << 3)
            | ((self.width_code & 7) << 9)
            | ((self.length_code & 3) << 12)
            | (self.data_format.code() << 14)
            | (u32::from(self.ecm) << 16)
            | (1 << 21)
    }
}

/// A SEND record (written by fsfaxsend). Fields as faxsend fills them.
#[derive(Debug, Clone)]
pub struct SendRecord {
    /// Start of the attempt (field 1, local time `%D %H:%M`).
    pub start: DateTime<Local>,
    pub commid: String,
    /// The modem (`-m` argument).
    pub device: String,
    pub jobid: u32,
    /// qfile `jobtag`.
    pub jobtag: String,
    /// qfile `mailaddr`.
    pub mailaddr: String,
    /// qfile `external` (the number dialled, before prefixes).
    pub external: String,
    /// Remote CSI.
    pub csi: String,
    pub params: Params,
    pub npages: u32,
    /// Whole attempt duration.
    pub jobtime: Duration,
    /// Connected time.
    pub conntime: Duration,
    /// Failure reason, empty on success.
    pub reason: String,
    /// qfile `owner`.
    pub owner: String,
    /// Remote DCS as hex bytes; empty → `00 00 00` like faxsend without one.
    pub dcs: String,
}

/// A RECV record (written by fsfaxd), as faxgetty's `notifyDocumentRecvd` fills it.
#[derive(Debug, Clone)]
pub struct RecvRecord {
    pub start: DateTime<Local>,
    pub commid: String,
    pub device: String,
    /// Spool-relative `recvq/faxNNNNNNNNN.tif`.
    pub file: String,
    /// The modem's own number (FAXNumber; we use the called number).
    pub local_number: String,
    /// Remote TSI.
    pub tsi: String,
    pub params: Params,
    pub npages: u32,
    pub recvtime: Duration,
    pub reason: String,
    pub cid_name: String,
    pub cid_number: String,
    /// CallID3..n (recipient, gateway, …), joined with `::`.
    pub callid_rest: Vec<String>,
    pub dcs: String,
}

impl SendRecord {
    /// The record line, with its trailing newline.
    pub fn to_line(&self) -> String {
        join_record([
            date(&self.start),
            "SEND".to_owned(),
            plain(&self.commid),
            plain(&self.device),
            self.jobid.to_string(),
            quoted(&self.jobtag),
            plain(&self.mailaddr),
            quoted(&self.external),
            quoted(&self.csi),
            self.params.encode().to_string(),
            self.npages.to_string(),
            fmt_time(self.jobtime),
            fmt_time(self.conntime),
            quoted(&self.reason),
            quoted(""),
            quoted(""),
            quoted(""),
            quoted(&self.owner),
            quoted(dcs_or_default(&self.dcs)),
        ])
    }
}

impl RecvRecord {
    /// The record line, with its trailing newline.
    pub fn to_line(&self) -> String {
        join_record([
            date(&self.start),
            "RECV".to_owned(),
            plain(&self.commid),
            plain(&self.device),
            plain(&self.file),
            quoted(""),
            "fax".to_owned(),
            quoted(&self.local_number),
            quoted(&self.tsi),
            self.params.encode().to_string(),
            self.npages.to_string(),
            fmt_time(self.recvtime),
            fmt_time(self.recvtime),
            quoted(&self.reason),
            quoted(&self.cid_name),
            quoted(&self.cid_number),
            quoted(&self.callid_rest.join("::")),
            quoted(""),
            quoted(dcs_or_default(&self.dcs)),
        ])
    }
}

/// The transfer log file. `None` path = disabled (GOfax.IP key `xferfaxlog` set empty).
#[derive(Debug, Clone)]
pub struct XferFaxLog {
    path: Option<PathBuf>,
}

impl XferFaxLog {
    /// A log at `path`; relative paths are resolved against `spool`; an empty path disables it.
    pub fn new(spool: &Path, path: &str) -> Self {
        if path.trim().is_empty() {
            return Self { path: None };
        }
        Self {
            path: Some(spool.join(path)),
        }
    }

    /// The resolved path, if enabled.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Appends one record line: `O_APPEND|O_CREAT` 0644, `flock`, a single `write`.
    pub fn append(&self, line: &str) -> Result<(), XferLogError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(path)
            .map_err(|source| XferLogError::Open {
                path: path.clone(),
                source,
            })?;
        lock::lock_exclusive(&file).map_err(|source| XferLogError::Lock {
            path: path.clone(),
            source,
        })?;
        file.write_all(line.as_bytes())
            .map_err(|source| XferLogError::Write {
                path: path.clone(),
                source,
            })
    }
}

fn join_record<const N: usize>(fields: [String; N]) -> String {
    let mut line = fields.join("\t");
    line.push('\n');
    line
}

fn date(t: &DateTime<Local>) -> String {
    t.format("%m/%d/%y %H:%M").to_string()
}

/// A session's data format from spandsp's encoding name (`T.4 2-D`, `T.6`, ...; MH when
/// unknown) and the record's DCS field for it: see [`session_params`].
pub fn session_format(encoding: Option<&str>, connected: bool) -> (DataFormat, String) {
    session_params(encoding.and_then(DataFormat::from_encoding_name), connected)
}

/// A session's data format (MH when unknown) and the record's DCS field for it: synthetic once
/// the session connected (see [`synthetic_dcs`]), empty otherwise (written as `00 00 00`, as
/// faxsend does).
pub fn session_params(format: Option<DataFormat>, connected: bool) -> (DataFormat, String) {
    let df = format.unwrap_or(DataFormat::Mh);
    let dcs = if connected {
        synthetic_dcs(df)
    } else {
        String::new()
    };
    (df, dcs)
}

/// A minimal DCS carrying only the data-format bits (T.30 bits 16 MR, 31 MMR, 78 JBIG, in the
/// bit numbering xferfaxstats's `getDFfromDCS` uses). xferfaxstats takes the "TypData" column
/// of 19-field records from the DCS, not from `params`; SpanDSP does not give us the real DCS,
/// so a sender/receiver that connected can pass this to get the right column.
pub fn synthetic_dcs(df: DataFormat) -> String {
    let mut bytes = vec![0u8; 3];
    let mut set = |bit: usize| {
        let byte = (bit - 1) / 8;
        if bytes.len() <= byte {
            bytes.resize(byte + 1, 0);
        }
        bytes[byte] |= 1 << (7 - (bit - 1) % 8);
    };
    match df {
        DataFormat::Mh => {}
        DataFormat::Mr => set(16),
        DataFormat::Mmr => set(31),
        DataFormat::Jbig => set(78),
    }
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// HylaFAX `fmtTime`: `H:MM:SS`, hours not padded.
pub fn fmt_time(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// Unquoted field: TAB/CR/LF would break the record, so they become spaces.
fn plain(s: &str) -> String {
    s.replace(['\t', '\r', '\n'], " ")
}

/// Quoted field, with `"` escaped as HylaFAX does for the jobtag.
fn quoted(s: &str) -> String {
    format!("\"{}\"", plain(s).replace('"', "\\\""))
}

fn dcs_or_default(dcs: &str) -> &str {
    if dcs.is_empty() { "00 00 00" } else { dcs }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Local> {
        Local.with_ymd_and_hms(y, mo, d, h, mi, 5).unwrap()
    }

    #[test]
    fn params_match_real_hylafax_values() {
        // Real faxsend line: br=5 14400, df=3 MMR, ec=1, ln=2 → 2220072.
        let p = Params {
            bit_rate: 14400,
            ecm: true,
            data_format: DataFormat::Mmr,
            ..Params::default()
        };
        assert_eq!(p.encode(), 2_220_072);
        // faxinfo example: 33600 fine ECM MH, ln A4 → 2162793.
        let p = Params {
            bit_rate: 33600,
            ecm: true,
            data_format: DataFormat::Mh,
            vres: VerticalRes::Fine,
            width_code: 0,
            length_code: 0,
        };
        assert_eq!(p.encode(), 2_162_793);
        assert_eq!(Params::br_code(2400), 0);
        assert_eq!(Params::br_code(9600), 3);
        assert_eq!(Params::br_code(14400), 5);
        assert_eq!(Params::br_code(16800), 6);
        assert_eq!(Params::br_code(33600), 13);
        assert_eq!(Params::br_code(0), 0);
        assert_eq!(Params::br_code(1_000_000), 13);
        assert_eq!(Params::default().encode() >> 21, 1);
    }

    #[test]
    fn session_format_defaults_and_connection() {
        assert_eq!(session_format(None, false), (DataFormat::Mh, String::new()));
        assert_eq!(
            session_format(Some("T.6"), true),
            (DataFormat::Mmr, synthetic_dcs(DataFormat::Mmr))
        );
        assert_eq!(session_format(Some("T.6"), false).1, "");
    }

    #[test]
    fn synthetic_dcs_bits() {
        assert_eq!(synthetic_dcs(DataFormat::Mh), "00 00 00");
        assert_eq!(synthetic_dcs(DataFormat::Mr), "00 01 00");
        assert_eq!(synthetic_dcs(DataFormat::Mmr), "00 00 00 02");
        assert_eq!(
            synthetic_dcs(DataFormat::Jbig),
            "00 00 00 00 00 00 00 00 00 04"
        );
    }

    #[test]
    fn data_format_names() {
        assert_eq!(DataFormat::from_encoding_name("T.6"), Some(DataFormat::Mmr));
        assert_eq!(
            DataFormat::from_encoding_name("T.4 2-D"),
            Some(DataFormat::Mr)
        );
        assert_eq!(
            DataFormat::from_encoding_name("T.85-L0"),
            Some(DataFormat::Jbig)
        );
        assert_eq!(DataFormat::from_encoding_name("bogus"), None);
        assert_eq!(DataFormat::Mmr.hylafax_name(), "2-D MMR");
        assert_eq!(VerticalRes::from_lpi(196), VerticalRes::Fine);
        assert_eq!(VerticalRes::from_lpi(98), VerticalRes::Normal);
        assert_eq!(VerticalRes::from_lpi(391), VerticalRes::Superfine);
    }

    #[test]
    fn send_record_matches_real_faxsend_line() {
        let r = SendRecord {
            start: at(2026, 11, 22, 11, 11),
            commid: "000000001".into(),
            device: "ttyFAKE0".into(),
            jobid: 22,
            jobtag: String::new(),
            mailaddr: "root@vm".into(),
            external: "5554".into(),
            csi: String::new(),
            params: Params {
                bit_rate: 14400,
                ecm: true,
                data_format: DataFormat::Mmr,
                ..Params::default()
            },
            npages: 0,
            jobtime: Duration::from_secs(1),
            conntime: Duration::ZERO,
            reason: "Busy signal detected".into(),
            owner: "root".into(),
            dcs: String::new(),
        };
        assert_eq!(
            r.to_line(),
            "11/22/26 11:11\tSEND\t000000001\tttyFAKE0\t22\t\"\"\troot@vm\t\"5554\"\t\"\"\t\
             2220072\t0\t0:00:01\t0:00:00\t\"Busy signal detected\"\t\"\"\t\"\"\t\"\"\t\"root\"\t\
             \"00 00 00\"\n"
        );
    }

    #[test]
    fn recv_record_layout_and_escaping() {
        let r = RecvRecord {
            start: at(2026, 1, 2, 3, 4),
            commid: "000000007".into(),
            device: "freeswitch0".into(),
            file: "recvq/fax000000001.tif".into(),
            local_number: "12345".into(),
            tsi: "+49 30\t\"1234567\"".into(),
            params: Params::default(),
            npages: 2,
            recvtime: Duration::from_secs(3 * 3600 + 62),
            reason: "line1\nline2".into(),
            cid_name: "Alice \"A\" Caller".into(),
            cid_number: "4711".into(),
            callid_rest: vec!["12345".into(), "gw1".into()],
            dcs: String::new(),
        };
        let line = r.to_line();
        assert!(line.ends_with('\n'));
        let fields: Vec<&str> = line.trim_end_matches('\n').split('\t').collect();
        assert_eq!(fields.len(), 19, "{line}");
        assert_eq!(fields[0], "01/02/26 03:04");
        assert_eq!(fields[1], "RECV");
        assert_eq!(fields[4], "recvq/fax000000001.tif");
        assert_eq!(fields[5], "\"\"");
        assert_eq!(fields[6], "fax");
        assert_eq!(fields[7], "\"12345\"");
        assert_eq!(fields[8], "\"+49 30 \\\"1234567\\\"\"");
        assert_eq!(fields[11], "3:01:02");
        assert_eq!(fields[12], "3:01:02");
        assert_eq!(fields[13], "\"line1 line2\"");
        assert_eq!(fields[14], "\"Alice \\\"A\\\" Caller\"");
        assert_eq!(fields[15], "\"4711\"");
        assert_eq!(fields[16], "\"12345::gw1\"");
        assert_eq!(fields[17], "\"\"");
        assert_eq!(fields[18], "\"00 00 00\"");
    }

    #[test]
    fn append_creates_0644_and_disabled_is_noop() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("log")).unwrap();
        let log = XferFaxLog::new(dir.path(), "log/xferfaxlog");
        log.append("a\n").unwrap();
        log.append("b\n").unwrap();
        let p = dir.path().join("log/xferfaxlog");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a\nb\n");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o022, 0o644 & !0o022);
        let off = XferFaxLog::new(dir.path(), "");
        assert!(off.path().is_none());
        off.append("x\n").unwrap();
        let e = XferFaxLog::new(dir.path(), "missing/xferfaxlog")
            .append("x\n")
            .unwrap_err();
        assert!(e.to_string().contains("missing/xferfaxlog"));
    }

    #[test]
    fn concurrent_appends_never_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let log = XferFaxLog::new(dir.path(), "xferfaxlog");
        let long = "x".repeat(10_000);
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let log = log.clone();
                let line = format!("{i}{long}\n");
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        log.append(&line).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let text = std::fs::read_to_string(dir.path().join("xferfaxlog")).unwrap();
        assert_eq!(text.lines().count(), 160);
        assert!(text.lines().all(|l| l.len() == 10_001));
    }

    /// How xferfaxstats reads a quoted field: strip the quotes, `\"` back to `"`.
    fn unquote(field: &str) -> Option<String> {
        let inner = field.strip_prefix('"')?.strip_suffix('"')?;
        Some(inner.replace("\\\"", "\""))
    }

    proptest::proptest! {
        /// Whatever the caller, TSI or reason say, a record is one line of 19 tab-separated
        /// fields, and each quoted field reads back as the value (TAB/CR/LF made spaces).
        #[test]
        fn any_text_stays_one_record_and_round_trips(
            texts in proptest::collection::vec(proptest::prelude::any::<String>(), 7),
        ) {
            let r = RecvRecord {
                start: at(2026, 1, 2, 3, 4),
                commid: texts[0].clone(),
                device: "freeswitch0".into(),
                file: "recvq/fax000000001.tif".into(),
                local_number: texts[1].clone(),
                tsi: texts[2].clone(),
                params: Params::default(),
                npages: 1,
                recvtime: Duration::from_secs(5),
                reason: texts[3].clone(),
                cid_name: texts[4].clone(),
                cid_number: texts[5].clone(),
                callid_rest: vec![texts[6].clone()],
                dcs: String::new(),
            };
            let line = r.to_line();
            proptest::prop_assert!(line.ends_with('\n'));
            let body = &line[..line.len() - 1];
            proptest::prop_assert!(!body.contains(['\n', '\r']), "{:?}", line);
            let f: Vec<&str> = body.split('\t').collect();
            proptest::prop_assert_eq!(f.len(), 19, "{:?}", line);
            proptest::prop_assert_eq!(f[2], plain(&texts[0]));
            for (i, t) in [(7, 1), (8, 2), (13, 3), (14, 4), (15, 5), (16, 6)] {
                proptest::prop_assert_eq!(unquote(f[i]), Some(plain(&texts[t])), "field {}", i);
            }
        }
    }
}
