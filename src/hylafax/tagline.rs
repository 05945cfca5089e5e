//! The tag line's text: HylaFAX's `TagLineFormat`, `TagLineFont` and `UseJobTagLine` from
//! `etc/config` and `etc/config.<modem>`, the job's `tagline:`, and its expansion.
//!
//! HylaFAX expands a format in two passes, and so do we: first `strftime(3)` over the whole
//! string (which is why the job escapes are written `%%n` in the config: strftime turns `%%`
//! into `%`), then the server escapes of hylafax-config(5) (`%n`, `%P`, ...). `|` splits the
//! result into equal-width fields, each centred; the imaging code draws them.

use std::path::{Path, PathBuf};

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, TimeZone};

use super::Spool;
use super::qfile::QFileContent;

/// HylaFAX's default `TagLineFormat` (hylafax-config(5)).
pub const DEFAULT_FORMAT: &str = "From %%n|%c|Page %%P of %%T";

#[derive(Debug, thiserror::Error)]
pub enum TagLineConfigError {
    #[error("cannot read HylaFAX config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("HylaFAX config {path} line {line}: {key} has a value without its closing quote")]
    Quote {
        path: PathBuf,
        line: usize,
        key: String,
    },
}

/// The tag line settings of one modem, as faxsend would see them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagLineSettings {
    /// `TagLineFormat`; `None` when neither file sets it (the default then applies).
    pub format: Option<String>,
    /// `TagLineFont`, resolved against the spool; `None` when unset or empty (no tag line).
    pub font: Option<PathBuf>,
    /// `UseJobTagLine`: the job's own `tagline:` replaces the format.
    pub use_job_tag_line: bool,
    /// `LocalIdentifier` (for `%l`).
    pub local_identifier: Option<String>,
    /// `FAXNumber` (for `%n` and `%l`).
    pub fax_number: Option<String>,
}

impl TagLineSettings {
    /// Reads `etc/config` then `etc/config.<modem>` (a key in the modem file wins). A missing
    /// file is no error: a spool may have neither.
    pub fn read(spool: &Spool, modem: &str) -> Result<TagLineSettings, TagLineConfigError> {
        let mut s = TagLineSettings::default();
        for path in [spool.join("etc/config"), spool.modem_config(modem)] {
            let text = match std::fs::read(&path) {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(TagLineConfigError::Read { path, source }),
            };
            s.apply(&path, &text, spool.root())?;
        }
        Ok(s)
    }

    fn apply(&mut self, path: &Path, text: &str, spool: &Path) -> Result<(), TagLineConfigError> {
        for (line, key, value) in config_lines(text) {
            let value = match value {
                Some(v) => v,
                None => {
                    return Err(TagLineConfigError::Quote {
                        path: path.to_path_buf(),
                        line,
                        key: key.to_string(),
                    });
                }
            };
            match key.to_ascii_lowercase().as_str() {
                "taglineformat" => self.format = Some(value),
                "taglinefont" => {
                    self.font = (!value.is_empty()).then(|| {
                        let p = PathBuf::from(&value);
                        if p.is_absolute() { p } else { spool.join(p) }
                    })
                }
                "usejobtagline" => self.use_job_tag_line = super::dynconfig::parse_bool(&value),
                "localidentifier" => self.local_identifier = Some(value).filter(|v| !v.is_empty()),
                "faxnumber" => self.fax_number = Some(value).filter(|v| !v.is_empty()),
                _ => {}
            }
        }
        Ok(())
    }

    /// The format that applies to `job`: DynamicConfigOutgoing's `TagLine` wins, then the job's
    /// `tagline:` when `UseJobTagLine` allows it, then `TagLineFormat`, then HylaFAX's default.
    pub fn format_for(&self, job: &QFileContent, dynamic: Option<&str>) -> String {
        if let Some(d) = dynamic.filter(|d| !d.is_empty()) {
            return d.to_string();
        }
        if self.use_job_tag_line {
            if let Some(t) = job.get_lossy("tagline").filter(|t| !t.is_empty()) {
                return t.into_owned();
            }
        }
        self.format
            .clone()
            .unwrap_or_else(|| DEFAULT_FORMAT.to_string())
    }
}

/// `Key: value` lines of a HylaFAX config file: `#` starts a comment outside quotes; a quoted
/// value is unescaped (`None` when its closing quote is missing); an unquoted value ends at the
/// first blank, as HylaFAX reads it.
fn config_lines(text: &str) -> impl Iterator<Item = (usize, &str, Option<String>)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let (key, value) = line.split_once(':')?;
        let value = value.trim_start();
        let value = if value.starts_with('"') {
            super::dynconfig::unquote(value)
        } else {
            let end = value
                .find(|c: char| c == '#' || c.is_whitespace())
                .unwrap_or(value.len());
            Some(value[..end].to_string())
        };
        Some((i + 1, key.trim(), value))
    })
}

/// What the escapes of hylafax-config(5) stand for, from the qfile and the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFields {
    pub subaddress: String,
    pub to_company: String,
    pub from_company: String,
    pub to_number: String,
    pub to_location: String,
    pub from_location: String,
    pub jobid: String,
    pub groupid: String,
    pub jobtag: String,
    pub local_identifier: String,
    pub mail_address: String,
    pub fax_number: String,
    pub receiver: String,
    pub sender: String,
    pub subject: String,
    pub to_voice: String,
    pub from_voice: String,
    /// Pages of the job sent before this session (`npages`).
    pub pages_before: u32,
    /// Pages of the whole job (`totpages`); 0 when unknown.
    pub job_pages: u32,
}

impl JobFields {
    /// The qfile's values; `local_identifier` and `fax_number` come from the configuration
    /// (`%l` falls back to the number when no LocalIdentifier is set, as in HylaFAX).
    pub fn from_qfile(q: &QFileContent, local_identifier: Option<&str>, fax_number: &str) -> Self {
        let g = |tag: &str| q.get_lossy(tag).unwrap_or_default().into_owned();
        JobFields {
            subaddress: g("subaddr"),
            to_company: g("company"),
            from_company: g("fromcompany"),
            to_number: q.external().or_else(|| q.number()).unwrap_or("").into(),
            to_location: g("location"),
            from_location: g("fromlocation"),
            jobid: g("jobid"),
            groupid: g("groupid"),
            jobtag: g("jobtag"),
            local_identifier: local_identifier
                .filter(|l| !l.is_empty())
                .unwrap_or(fax_number)
                .to_string(),
            mail_address: g("mailaddr"),
            fax_number: fax_number.to_string(),
            receiver: g("receiver"),
            sender: g("sender"),
            subject: g("regarding"),
            to_voice: g("voice"),
            from_voice: g("fromvoice"),
            pages_before: q.npages(),
            job_pages: q.totpages(),
        }
    }
}

/// A format after the strftime pass, ready to give each page its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagLine {
    timed: String,
    fields: JobFields,
    session_pages: u32,
}

impl TagLine {
    /// Runs the strftime pass at `now` (the start of the session, as HylaFAX does) for a session
    /// of `session_pages` pages.
    pub fn new<Tz: TimeZone>(
        format: &str,
        now: &DateTime<Tz>,
        fields: JobFields,
        session_pages: u32,
    ) -> Self
    where
        Tz::Offset: std::fmt::Display,
    {
        TagLine {
            timed: strftime(format, now),
            fields,
            session_pages,
        }
    }

    /// The text of the session's page `page` (1-based), before splitting on `|`.
    pub fn text(&self, page: u32) -> String {
        let f = &self.fields;
        let job_page = f.pages_before + page;
        let job_total = if f.job_pages >= f.pages_before + self.session_pages {
            f.job_pages
        } else {
            f.pages_before + self.session_pages
        };
        let mut out = String::with_capacity(self.timed.len() + 32);
        let mut chars = self.timed.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let Some(e) = chars.next() else {
                out.push('%');
                break;
            };
            let v: std::borrow::Cow<'_, str> = match e {
                'a' => f.subaddress.as_str().into(),
                'c' => f.to_company.as_str().into(),
                'C' => f.from_company.as_str().into(),
                'd' => f.to_number.as_str().into(),
                'g' => f.to_location.as_str().into(),
                'G' => f.from_location.as_str().into(),
                'i' => f.jobid.as_str().into(),
                'I' => f.groupid.as_str().into(),
                'j' => f.jobtag.as_str().into(),
                'l' => f.local_identifier.as_str().into(),
                'm' => f.mail_address.as_str().into(),
                'n' => f.fax_number.as_str().into(),
                'p' => page.to_string().into(),
                'P' => job_page.to_string().into(),
                'r' => f.receiver.as_str().into(),
                's' => f.sender.as_str().into(),
                'S' => f.subject.as_str().into(),
                't' => self.session_pages.to_string().into(),
                'T' => job_total.to_string().into(),
                'v' => f.to_voice.as_str().into(),
                'V' => f.from_voice.as_str().into(),
                '%' => "%".into(),
                other => {
                    out.push('%');
                    out.push(other);
                    continue;
                }
            };
            out.push_str(&v);
        }
        out
    }

    /// The `|`-separated fields of page `page`, each trimmed (the imaging centres them).
    pub fn fields(&self, page: u32) -> Vec<String> {
        self.text(page)
            .split('|')
            .map(|s| s.trim().to_string())
            .collect()
    }
}

/// The strftime pass: `%%` becomes `%`, every conversion chrono knows is replaced, anything
/// else is kept as written (strftime(3) leaves unknown conversions alone too).
fn strftime<Tz: TimeZone>(format: &str, now: &DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    let mut out = String::with_capacity(format.len() + 16);
    let mut rest = format;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        // A conversion is `%`, optional flag (`-`, `_`, `0`, `E`, `O`) and a letter.
        let mut len = 2;
        if matches!(
            rest.as_bytes().get(1),
            Some(b'-' | b'_' | b'0' | b'E' | b'O')
        ) {
            len = 3;
        }
        let Some(spec) = rest.get(..len) else {
            // The end of the format, or a multibyte character after `%`: not a conversion.
            out.push('%');
            rest = &rest[1..];
            continue;
        };
        let spec = match spec.chars().last() {
            Some(c) if c.is_ascii() => spec,
            _ => {
                // A multibyte character after `%`: not a conversion.
                out.push('%');
                rest = &rest[1..];
                continue;
            }
        };
        if spec == "%%" {
            out.push('%');
        } else if StrftimeItems::new(spec).all(|i| !matches!(i, Item::Error)) {
            use std::fmt::Write;
            let _ = write!(out, "{}", now.format(spec));
        } else {
            out.push_str(spec);
        }
        rest = &rest[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, TimeZone};

    fn qfile(extra: &str) -> QFileContent {
        let text = format!(
            "jobid:17\ngroupid:16\nexternal:+49 30 1234\nnumber:0301234\ncompany:ACME Corp\n\
             fromcompany:Sender GmbH\nlocation:Berlin\nfromlocation:Hamburg\nreceiver:Bob\n\
             sender:Alice\nregarding:Invoice 42\nvoice:555-1\nfromvoice:555-2\nsubaddr:77\n\
             jobtag:tag-9\nmailaddr:alice@example.org\nnpages:2\ntotpages:12\n{extra}"
        );
        QFileContent::parse("sendq/q17", text.as_bytes()).unwrap()
    }

    fn when() -> DateTime<FixedOffset> {
        FixedOffset::east_opt(3600)
            .unwrap()
            .with_ymd_and_hms(2026, 12, 4, 14, 18, 5)
            .unwrap()
    }

    fn line(format: &str, q: &QFileContent, session_pages: u32) -> TagLine {
        let fields = JobFields::from_qfile(q, Some("ACME FAX"), "+49 30 999");
        TagLine::new(format, &when(), fields, session_pages)
    }

    #[test]
    fn every_escape_of_the_man_page() {
        let q = qfile("");
        let t = line(
            "%%a|%%c|%%C|%%d|%%g|%%G|%%i|%%I|%%j|%%l|%%m|%%n|%%p|%%P|%%r|%%s|%%S|%%t|%%T|%%v|%%V|%%%",
            &q,
            10,
        );
        assert_eq!(
            t.fields(1),
            [
                "77",
                "ACME Corp",
                "Sender GmbH",
                "+49 30 1234",
                "Berlin",
                "Hamburg",
                "17",
                "16",
                "tag-9",
                "ACME FAX",
                "alice@example.org",
                "+49 30 999",
                "1",
                "3",
                "Bob",
                "Alice",
                "Invoice 42",
                "10",
                "12",
                "555-1",
                "555-2",
                "%"
            ]
        );
    }

    #[test]
    fn default_format_on_a_resumed_job_says_page_3_of_12() {
        let q = qfile("");
        let t = line(DEFAULT_FORMAT, &q, 10);
        assert_eq!(
            t.fields(1),
            [
                "From +49 30 999",
                "Fri Dec  4 14:18:05 2026",
                "Page 3 of 12"
            ]
        );
        assert_eq!(t.fields(10)[2], "Page 12 of 12");
        let s = line("Page %%p of %%t", &q, 10);
        assert_eq!(s.text(1), "Page 1 of 10");
    }

    #[test]
    fn strftime_codes_and_unknown_escapes() {
        let q = qfile("");
        let t = line("%Y-%m-%d %H:%M %%q %Q 100%% %", &q, 1);
        // `%Q` is no strftime conversion and `%q` no server escape: both stay as written.
        assert_eq!(t.text(1), "2026-12-04 14:18 %q %Q 100% %");
        assert_eq!(line("ünï %ü", &q, 1).text(1), "ünï %ü");
        assert_eq!(line("%ü %Y %-ü %", &q, 1).text(1), "%ü 2026 %-ü %");
    }

    #[test]
    fn local_identifier_falls_back_to_the_number_and_totals_to_the_session() {
        let q = QFileContent::parse("sendq/q1", b"jobid:1\n").unwrap();
        let fields = JobFields::from_qfile(&q, None, "+1 555");
        let t = TagLine::new("%%l|%%P/%%T", &when(), fields, 3);
        assert_eq!(t.fields(2), ["+1 555", "2/3"]);
    }

    #[test]
    fn settings_modem_file_wins_and_dynamic_config_wins_over_all() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path());
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/config"),
            "TagLineFormat: \"global %%n\"\nTagLineFont: etc/lutRS18.pcf # the font\n\
             FAXNumber: +1 555 # cut at the blank, as HylaFAX\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/config.freeswitch0"),
            "# modem\ntaglineformat: \"modem|%%P\"\nUseJobTagLine: yes\n",
        )
        .unwrap();
        let s = TagLineSettings::read(&spool, "freeswitch0").unwrap();
        assert_eq!(s.format.as_deref(), Some("modem|%%P"));
        assert_eq!(s.font, Some(dir.path().join("etc/lutRS18.pcf")));
        assert_eq!(s.fax_number.as_deref(), Some("+1"));
        assert!(s.use_job_tag_line);

        let with_job = qfile("tagline:job line\n");
        assert_eq!(s.format_for(&with_job, None), "job line");
        assert_eq!(s.format_for(&with_job, Some("dyn")), "dyn");
        assert_eq!(s.format_for(&qfile("tagline:\n"), None), "modem|%%P");
        let no_job = TagLineSettings {
            use_job_tag_line: false,
            ..s.clone()
        };
        assert_eq!(no_job.format_for(&with_job, None), "modem|%%P");
        assert_eq!(
            TagLineSettings::default().format_for(&with_job, None),
            DEFAULT_FORMAT
        );

        // Another modem has no file of its own: the global values apply.
        let g = TagLineSettings::read(&spool, "freeswitch1").unwrap();
        assert_eq!(g.format.as_deref(), Some("global %%n"));
        assert!(!g.use_job_tag_line);
        // No config at all: nothing set, no error.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            TagLineSettings::read(&Spool::new(empty.path()), "m").unwrap(),
            TagLineSettings::default()
        );
    }

    #[test]
    fn a_broken_quote_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/config"),
            "LogFacility: daemon\nTagLineFormat: \"open\n",
        )
        .unwrap();
        let e = TagLineSettings::read(&Spool::new(dir.path()), "m").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("etc/config line 2") && msg.contains("TagLineFormat"),
            "{msg}"
        );
    }
}
