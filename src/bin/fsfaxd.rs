//! fsfaxd: receives faxes from FreeSWITCH into HylaFAX and runs fsfax's virtual modems.
//! Thin: flags, configuration, logging, then the receive daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fsfax::config::{self, Config, Problem};
use fsfax::logging::{self, Destination, LogGuard, write_stderr, write_stdout};

const VERSION: &str = env!("CARGO_PKG_VERSION");

const ABOUT: &str = "Receive faxes from FreeSWITCH (mod_spandsp) into HylaFAX.";

const LONG_ABOUT: &str = "\
Receive faxes from FreeSWITCH (mod_spandsp) into HylaFAX.

fsfaxd replaces GOfax.IP's gofaxd and reads the same configuration file. It listens for
FreeSWITCH's outbound-socket connections ([gofaxd] socket), receives each fax into the HylaFAX
spool, runs faxrcvd, and provides the virtual modems fsfaxsend sends with. It never forks into
the background: run it from systemd or supervisor.";

const AFTER_HELP: &str = "\
EXAMPLES:
    fsfaxd --check-config -c /etc/fsfax.conf   check a file, print the settings in effect
    FSFAX_LOG=debug fsfaxd -f                   run with debug logs on stderr";

const AFTER_LONG_HELP: &str = "\
EXAMPLES:
    Check a configuration and print the settings in effect:
        fsfaxd --check-config -c /etc/fsfax.conf

    Run in the foreground with debug logs on stderr:
        FSFAX_LOG=debug fsfaxd -f

LOGGING:
    syslog (facility daemon), or stderr with -f or when stderr is a terminal.
    FSFAX_LOG sets the level or a filter: error, warn, info (default), debug,
    e.g. FSFAX_LOG=info,fsfax::esl=debug.

EXIT STATUS:
    0 after a clean shutdown or a good --check-config, 1 on a configuration or
    runtime error, 2 on a command-line error.";

/// Command line of fsfaxd.
#[derive(Parser, Debug)]
#[command(
    name = "fsfaxd",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    after_long_help = AFTER_LONG_HELP,
    disable_help_subcommand = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Configuration file [default: /etc/fsfax.conf]
    ///
    /// GOfax.IP's gofax.conf is read as is. Without -c, /etc/fsfax.conf is used, or
    /// /etc/gofax.conf if only that one exists.
    #[arg(short, long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,

    /// Log to stderr instead of syslog
    ///
    /// fsfaxd never detaches; -f only moves the logs. Stderr is also used when it is a
    /// terminal or when there is no syslog at /dev/log.
    #[arg(short, long, global = true)]
    foreground: bool,

    /// Check the configuration and print the settings in effect
    ///
    /// Prints the effective configuration (every key, defaults included, password hidden)
    /// on stdout and warnings on stderr, and exits 0; or prints every problem on stderr,
    /// one per line as FILE:LINE: error: [section] key: message, and exits 1.
    #[arg(long)]
    check_config: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

/// Maintenance subcommands (the softmodem-fallback list commands will live here).
#[derive(Subcommand, Debug)]
enum Command {}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with status 0, usage errors to stderr with 2;
            // print errors are ignored so a closed stdout cannot turn into a panic.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let path = cli
        .config
        .clone()
        .unwrap_or_else(config::default_config_path);
    if cli.check_config {
        return check_config(&path);
    }
    if let Some(command) = cli.command {
        match command {}
    }
    run(&path, cli.foreground)
}

/// `--check-config`: problems on stderr, the effective configuration on stdout.
fn check_config(path: &Path) -> ExitCode {
    let (config, problems) = match Config::load(path) {
        Ok(config) => {
            let problems = config.validate();
            (Some(config), problems)
        }
        Err(e) => (None, e.problems()),
    };
    for problem in &problems {
        write_stderr(&format!("{problem}\n"));
    }
    match config {
        Some(config) if !problems.iter().any(Problem::is_error) => {
            write_stdout(&config.effective_text());
            ExitCode::SUCCESS
        }
        _ => ExitCode::FAILURE,
    }
}

fn run(path: &Path, foreground: bool) -> ExitCode {
    let log = logging::init(c"fsfaxd", foreground, logging::DEFAULT_FILTER);
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            report(&log, &e.problems());
            return ExitCode::FAILURE;
        }
    };
    let problems = config.validate();
    report(&log, &problems);
    if problems.iter().any(Problem::is_error) {
        return ExitCode::FAILURE;
    }
    tracing::info!(config = %path.display(), "fsfaxd {VERSION} starting");
    serve(config)
}

/// The receive daemon; returns when fsfaxd was stopped (SIGTERM/SIGINT) or could not run.
fn serve(config: Config) -> ExitCode {
    fsfax::receive::serve(config)
}

/// Logs configuration problems; with syslog they also go to stderr, where an admin starting
/// fsfaxd by hand looks first.
fn report(log: &LogGuard, problems: &[Problem]) {
    for problem in problems {
        if problem.is_error() {
            tracing::error!("{problem}");
        } else {
            tracing::warn!("{problem}");
        }
        if log.destination() == Destination::Syslog {
            write_stderr(&format!("{problem}\n"));
        }
    }
}
