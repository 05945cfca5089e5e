//! fsfaxsend: HylaFAX's SendFaxCmd. Sends one queue file through FreeSWITCH.
//! Thin: flags, configuration, logging, then the send job and its exit status.
//!
//! faxq reads the exit status when the qfile's `returned:` is still 7: 0 = retry later,
//! 1 = failed, 2 = done, and anything else (including clap's usage status 2 and a panic's 101)
//! also means done. So every early exit here is chosen from 0 and 1 only.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use fsfax::config::{self, Config, Problem, Program};
use fsfax::logging::{self, Destination, LogGuard, write_stderr};

/// faxq: requeue the job and try again later.
const EXIT_RETRY: u8 = 0;
/// faxq: the job failed for good.
const EXIT_FAILED: u8 = 1;

const ABOUT: &str = "Send a HylaFAX job through FreeSWITCH (HylaFAX SendFaxCmd).";

const LONG_ABOUT: &str = "\
Send a HylaFAX job through FreeSWITCH (HylaFAX SendFaxCmd).

faxq runs fsfaxsend for each job on one of fsfaxd's virtual modems; set
    SendFaxCmd: /usr/bin/fsfaxsend
in /etc/hylafax/config (add `-c PATH` for another configuration file). Only the first
QFILE is sent; faxq requeues the others.";

const AFTER_HELP: &str = "\
EXAMPLES:
    fsfaxsend -m freeswitch0 sendq/q42   what faxq runs, from the spool directory

EXIT STATUS (read by faxq): 0 retry later, 1 failed, 2 done.";

const AFTER_LONG_HELP: &str = "\
EXAMPLES:
    What faxq runs (from the spool directory):
        fsfaxsend -m freeswitch0 sendq/q42

LOGGING:
    syslog (facility daemon), or stderr when it is a terminal.
    FSFAX_LOG sets the level: error, warn, info (default), debug.

EXIT STATUS (read by faxq):
    0 retry later (also for configuration errors: fix the file and the job goes out),
    1 failed (also for command-line errors), 2 done.";

/// Command line of fsfaxsend (faxq: `fsfaxsend -m <modem> <qfile>...`).
#[derive(Parser, Debug)]
#[command(
    name = "fsfaxsend",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    after_long_help = AFTER_LONG_HELP
)]
struct Cli {
    /// Configuration file [default: /etc/fsfax.conf]
    ///
    /// Without -c, /etc/fsfax.conf is used, or /etc/gofax.conf if only that one exists.
    #[arg(short, long, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Virtual modem to send on, as faxq names it (freeswitch0, ...)
    #[arg(short, long, value_name = "MODEM", required = true, value_parser = modem_name)]
    modem: String,

    /// Queue file(s), relative to the spool directory (sendq/q42)
    #[arg(value_name = "QFILE", required = true)]
    qfiles: Vec<PathBuf>,
}

/// A modem name becomes part of spool paths (`FIFO.<modem>`), so it must be a plain name.
fn modem_name(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !s.starts_with('.')
    {
        Ok(s.to_string())
    } else {
        Err("use letters, digits, `_`, `-` or `.` (like freeswitch0)".into())
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version exit 0; usage errors must mean "failed" (1) to faxq,
            // never clap's 2, which faxq reads as "done".
            let code = if e.use_stderr() { EXIT_FAILED } else { 0 };
            return ExitCode::from(code);
        }
    };
    let path = cli
        .config
        .clone()
        .unwrap_or_else(config::default_config_path);
    let log = logging::init(c"fsfaxsend", false, logging::DEFAULT_FILTER);
    // A broken configuration still reaches the qfile: the job is requeued with the reason as
    // its status, so the admin sees it in faxstat and the job goes out once the file is fixed.
    let config = load(&log, &path);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}; job left for a later retry");
            return ExitCode::from(EXIT_RETRY);
        }
    };
    let code = runtime.block_on(fsfax::send::run(
        config.as_ref().ok_or_else(|| {
            format!(
                "{} has errors (run fsfaxd --check-config -c {0})",
                path.display()
            )
        }),
        &cli.modem,
        &cli.qfiles,
    ));
    ExitCode::from(code)
}

/// Loads and checks the configuration for sending; `None` if it has errors.
fn load(log: &LogGuard, path: &Path) -> Option<Config> {
    let (config, problems) = match Config::load(path) {
        Ok(config) => {
            let problems = config.validate_for(Program::Send);
            (Some(config), problems)
        }
        Err(e) => (None, e.problems()),
    };
    for problem in &problems {
        if problem.is_error() {
            tracing::error!("{problem}");
        } else {
            tracing::warn!("{problem}");
        }
        if log.destination() == Destination::Syslog && problem.is_error() {
            write_stderr(&format!("{problem}\n"));
        }
    }
    config.filter(|_| !problems.iter().any(Problem::is_error))
}
