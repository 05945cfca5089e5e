//! HylaFAX-style tag lines on the pages fsfaxsend sends: the text from
//! [`crate::hylafax::tagline`], the drawing from [`crate::imaging`], joined here.
//!
//! A tag line applies when HylaFAX's `TagLineFont` is set for the modem and the format that
//! applies is not empty; then the document for `txfax` becomes a copy in `tmp/` with the tag
//! line drawn into each page, and spandsp is asked to draw no header of its own
//! ([`NO_HEADER`]). Otherwise nothing changes: `[freeswitch] header` (or DynamicConfig's
//! `TagLine`) goes to spandsp as before. A tag line that cannot be drawn never passes silently:
//! `[gofaxsend] taglinefailure` sends without it (the default, as faxsend does with an unusable
//! font; the note reaches the final status through [`Job::note`]) or requeues the job
//! ([`Unimageable`], a [`super::prepare`] error), and the job's status and the session log say
//! which and why.

use crate::config::{Config, TagLineFailure};
use crate::hylafax::Spool;
use crate::hylafax::dynconfig::OutgoingConfig;
use crate::hylafax::sessionlog::SessionLog;
use crate::hylafax::tagline::{JobFields, TagLine, TagLineSettings};
use crate::imaging::page;
use crate::imaging::pcf::Font;

use super::document::Prepared;
use super::job::Job;

/// The `fax_header` that makes spandsp draw no header over the tag line. An empty value cannot
/// do it: FreeSWITCH drops `fax_header=` and mod_spandsp then takes spandsp.conf's `header`.
/// A NUL goes on the wire percent-encoded (`fax_header='%00'`), and mod_spandsp's url-decode
/// turns it into an empty string, for which spandsp images no header line.
pub const NO_HEADER: &str = "\0";

/// What [`apply`] hands back: the document for `txfax` and whether it carries a tag line (then
/// `fax_header` must be [`NO_HEADER`]).
pub struct Applied {
    pub prepared: Prepared,
    pub imaged: bool,
}

/// The tag line cannot be drawn and the admin asked for a retry (`taglinefailure = retry`): the
/// attempt stops before dialling and the job is requeued.
#[derive(Debug, thiserror::Error)]
#[error("Tag line cannot be imaged: {0}")]
pub struct Unimageable(String);

/// Draws the tag line into the document of this attempt when one is configured (the copy goes
/// to the spool's `tmp/`). Part of preparing the document, after it is merged or resumed.
pub fn apply(
    cfg: &Config,
    spool: &Spool,
    modem: &str,
    job: &mut Job,
    script: &OutgoingConfig,
    prepared: Prepared,
    log: &SessionLog,
) -> Result<Applied, Unimageable> {
    match draw(cfg, spool, modem, job, script, &prepared) {
        Ok(None) => Ok(Applied {
            prepared,
            imaged: false,
        }),
        Ok(Some((imaged, untouched))) => {
            for (page, why) in &untouched {
                tracing::warn!(page = page + 1, "{why}");
                log.log(&format!("Tag line: page {}: {why}", page + 1));
            }
            if let Some((page, why)) = untouched.first() {
                let more = untouched.len() - 1;
                job.note(&format!(
                    "Tag line not imaged on page {}{}: {why}",
                    page + 1,
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                ));
            }
            if untouched.len() as u32 == imaged.pages {
                // No page carries the tag line: spandsp's header is better than nothing.
                return Ok(Applied {
                    prepared,
                    imaged: false,
                });
            }
            Ok(Applied {
                prepared: imaged,
                imaged: true,
            })
        }
        Err(why) => match cfg.gofaxsend.tag_line_failure {
            TagLineFailure::Send => {
                let text = format!("Sending without tag line: {why}");
                tracing::warn!("{text}");
                log.log(&text);
                // Kept in the final status whatever the call's verdict.
                job.note(&format!("Tag line not imaged: {why}"));
                job.progress(&text);
                Ok(Applied {
                    prepared,
                    imaged: false,
                })
            }
            TagLineFailure::Retry => {
                let e = Unimageable(why);
                tracing::error!("{e}; the job is requeued (taglinefailure = retry)");
                log.log(&e.to_string());
                Err(e)
            }
        },
    }
}

type Drawn = (Prepared, Vec<(u32, String)>);

/// `Ok(None)`: no tag line is configured. `Err`: one is, and it cannot be drawn.
fn draw(
    cfg: &Config,
    spool: &Spool,
    modem: &str,
    job: &Job,
    script: &OutgoingConfig,
    prepared: &Prepared,
) -> Result<Option<Drawn>, String> {
    let settings = TagLineSettings::read(spool, modem).map_err(|e| e.to_string())?;
    let Some(font_path) = &settings.font else {
        return Ok(None);
    };
    let q = job.q();
    let format = settings.format_for(q, script.tag_line.as_deref());
    if format.trim().is_empty() {
        return Ok(None);
    }
    let font_bytes = std::fs::read(font_path)
        .map_err(|e| format!("TagLineFont {}: {e}", font_path.display()))?;
    let font = Font::parse(&font_bytes)
        .map_err(|e| format!("TagLineFont {}: {e}", font_path.display()))?;

    let local_id = script
        .local_identifier
        .as_deref()
        .or(settings.local_identifier.as_deref())
        .or(Some(cfg.freeswitch.ident.as_str()));
    let number = script
        .fax_number
        .as_deref()
        .or(settings.fax_number.as_deref())
        .unwrap_or(&cfg.gofaxsend.fax_number);
    let fields = JobFields::from_qfile(q, local_id, number);
    let line = TagLine::new(&format, &chrono::Local::now(), fields, prepared.pages);

    let doc = std::fs::read(&prepared.path)
        .map_err(|e| format!("document {}: {e}", prepared.path.display()))?;
    let first = prepared.start_page.unwrap_or(0);
    let out = page::imprint(&doc, first, &font, &|i| line.fields(i + 1))
        .map_err(|e| format!("document {}: {e}", prepared.path.display()))?;
    if out.pages != prepared.pages {
        return Err(format!(
            "document {}: {} pages to send, {} imaged",
            prepared.path.display(),
            prepared.pages,
            out.pages
        ));
    }
    let jobid = q.get("jobid").unwrap_or("0");
    let replaced = prepared
        .replaced(&out.bytes, &spool.join("tmp"), jobid)
        .map_err(|e| e.to_string())?;
    Ok(Some((replaced, out.untouched)))
}
