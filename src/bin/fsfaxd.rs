//! fsfaxd: receives faxes from FreeSWITCH into HylaFAX and runs fsfax's virtual modems.
//! Thin: flags, configuration, logging, then the receive daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use fsfax::config::{self, Config, Problem};
use fsfax::fallback::admin;
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
    disable_help_subcommand = true
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

/// Maintenance subcommands.
#[derive(Subcommand, Debug)]
enum Command {
    /// Manage the T.38 → audio fallback list (stations faxed with G.711 instead of T.38)
    ///
    /// The list lives in FreeSWITCH's mod_db (realm `fallback`, GOfax.IP's format) and is
    /// reached through [freeswitch] socket. Numbers are normalised like caller IDs: separators
    /// ` -.()` are removed, an optional leading + and 3 to 32 digits remain. Enter numbers
    /// without your call prefix, as they appear in `list`.
    #[command(subcommand, after_help = FALLBACK_HELP)]
    Fallback(FallbackCommand),
}

const FALLBACK_HELP: &str = "\
EXAMPLES:
    fsfaxd fallback list                     every station, date added, age, expired or not
    fsfaxd fallback show '+49 40 1234'       one station
    fsfaxd fallback add 0401234 0405678      audio for these stations from the next call
    fsfaxd fallback delete 0401234           T.38 again for this station
    fsfaxd fallback purge --older-than 30d   drop entries added more than 30 days ago

EXIT STATUS:
    0 when done (also when a number was not on the list), 1 on an error (bad number,
    FreeSWITCH unreachable or mod_db failing; the message names FreeSWITCH's address).";

/// `fsfaxd fallback ...`.
#[derive(Subcommand, Debug)]
enum FallbackCommand {
    /// List every station on the list: key, date added (local time), age, `expired`
    List,
    /// Show one station's entry
    Show {
        /// The station's number
        number: String,
    },
    /// Put stations on the list: their next calls use audio
    Add {
        /// The stations' numbers
        #[arg(required = true)]
        numbers: Vec<String>,
    },
    /// Take stations off the list: their next calls use T.38 as configured
    Delete {
        /// The stations' numbers
        #[arg(required = true)]
        numbers: Vec<String>,
    },
    /// Delete the entries added more than a given time ago
    Purge {
        /// Minimum age of the entries to delete, e.g. 30d, 12h
        #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
        older_than: std::time::Duration,
        /// Only print what would be deleted
        #[arg(long)]
        dry_run: bool,
    },
}

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
        if cli.command.is_some() {
            let _ = Cli::command()
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    "--check-config cannot be used with a subcommand",
                )
                .print();
            return ExitCode::from(2);
        }
        return check_config(&path);
    }
    if let Some(command) = cli.command {
        return match command {
            Command::Fallback(action) => fallback(&path, cli.foreground, action),
        };
    }
    run(&path, cli.foreground)
}

/// `fsfaxd fallback ...`: output on stdout, notes and errors on stderr.
fn fallback(path: &Path, foreground: bool, command: FallbackCommand) -> ExitCode {
    // An admin at a terminal: warnings on stderr beside the output, never syslog.
    let _ = foreground;
    let _log = logging::init(c"fsfaxd", true, "warn");
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            for problem in e.problems() {
                write_stderr(&format!("{problem}\n"));
            }
            return ExitCode::FAILURE;
        }
    };
    let action = match command {
        FallbackCommand::List => admin::Action::List,
        FallbackCommand::Show { number } => admin::Action::Show(number),
        FallbackCommand::Add { numbers } => admin::Action::Add(numbers),
        FallbackCommand::Delete { numbers } => admin::Action::Delete(numbers),
        FallbackCommand::Purge {
            older_than,
            dry_run,
        } => admin::Action::Purge {
            older_than,
            dry_run,
        },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            write_stderr(&format!(
                "fsfaxd: error: cannot start the async runtime: {e}\n"
            ));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(admin::run(&config, &action)) {
        Ok(report) => {
            write_stdout(&report.stdout);
            write_stderr(&report.stderr);
            ExitCode::SUCCESS
        }
        Err(e) => {
            write_stderr(&format!("fsfaxd: error: {e}\n"));
            ExitCode::FAILURE
        }
    }
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
