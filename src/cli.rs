//! The command lines of `fsfaxd` and `fsfaxsend` (clap derive).
//!
//! They live in the library, not in the binaries, so the man pages shipped in the Debian
//! package can be rendered from the very same definitions (`tests/deploy_man.rs` keeps
//! `man/*.8` in sync with them).

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

/// The `clap::Command` of fsfaxd (for man pages and completions).
pub fn fsfaxd_command() -> clap::Command {
    FsfaxdCli::command()
}

/// The `clap::Command` of fsfaxsend (for man pages and completions).
pub fn fsfaxsend_command() -> clap::Command {
    FsfaxsendCli::command()
}

const FSFAXD_ABOUT: &str = "Receive faxes from FreeSWITCH (mod_spandsp) into HylaFAX.";

const FSFAXD_LONG_ABOUT: &str = "\
Receive faxes from FreeSWITCH (mod_spandsp) into HylaFAX.

fsfaxd replaces GOfax.IP's gofaxd and reads the same configuration file. It listens for
FreeSWITCH's outbound-socket connections ([gofaxd] socket), receives each fax into the HylaFAX
spool, runs faxrcvd, and provides the virtual modems fsfaxsend sends with. It never forks into
the background: run it from systemd or supervisor.";

const FSFAXD_AFTER_HELP: &str = "\
EXAMPLES:
    fsfaxd --check-config -c /etc/fsfax.conf   check a file, print the settings in effect
    FSFAX_LOG=debug fsfaxd -f                   run with debug logs on stderr
    fsfaxd status                               what the running daemon is doing";

const FSFAXD_AFTER_LONG_HELP: &str = "\
EXAMPLES:
    Check a configuration and print the settings in effect:
        fsfaxd --check-config -c /etc/fsfax.conf

    Run in the foreground with debug logs on stderr:
        FSFAX_LOG=debug fsfaxd -f

LOGGING:
    syslog (facility daemon), or stderr with -f, with FSFAX_LOG_STDERR=1 or when
    stderr is a terminal. FSFAX_LOG sets the level or a filter: error, warn, info (default), debug,
    e.g. FSFAX_LOG=info,fsfax::esl=debug. Syslog priorities (syslog-tracing's
    lossless mapping): error=err, warn=warning, info=notice, debug=info.

MONITORING:
    With [gofaxd] metrics = 127.0.0.1:9464 (peers allowed by [gofaxd] metricspeers,
    default 127.0.0.1, ::1), fsfaxd serves /metrics (Prometheus, names fsfax_*,
    process_*), /healthz (liveness) and /readyz (ready: listener up, spool writable
    with 64 MiB free, faxq's FIFO read, FreeSWITCH's Event Socket answering; 200 or
    503 with one line per check) and /status (JSON). `fsfaxd status` shows the same
    through the socket <spooldir>/status/fsfaxd.sock, with or without metrics.
    Sends are counted from the SEND records of xferfaxlog (position kept in
    recvq/.fsfax/xferfaxlog.offset). fsfaxd's own Event Socket connection subscribes
    to HEARTBEAT; after two missed heartbeats a probe without answer closes it, and
    fsfaxd reconnects with back-off (1 s doubling to 30 s).

SIGNALS:
    SIGHUP re-reads the configuration; SIGTERM or SIGINT stops accepting calls and lets
    receptions in progress finish for up to [gofaxd] shutdowntimeout.

EXIT STATUS:
    0 after a clean shutdown or a good --check-config, 1 on a configuration or
    runtime error, 2 on a command-line error.";

/// Command line of fsfaxd.
#[derive(Parser, Debug)]
#[command(
    name = "fsfaxd",
    version,
    about = FSFAXD_ABOUT,
    long_about = FSFAXD_LONG_ABOUT,
    after_help = FSFAXD_AFTER_HELP,
    after_long_help = FSFAXD_AFTER_LONG_HELP,
    disable_help_subcommand = true
)]
pub struct FsfaxdCli {
    /// Configuration file [default: /etc/fsfax.conf]
    ///
    /// GOfax.IP's gofax.conf is read as is. Without -c, /etc/fsfax.conf is used, or
    /// /etc/gofax.conf if only that one exists.
    #[arg(short, long, value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,

    /// Log to stderr instead of syslog
    ///
    /// fsfaxd never detaches; -f only moves the logs. Stderr is also used when it is a
    /// terminal or when there is no syslog at /dev/log.
    #[arg(short, long, global = true)]
    pub foreground: bool,

    /// Check the configuration and print the settings in effect
    ///
    /// Prints the effective configuration (every key, defaults included, password hidden)
    /// on stdout and warnings on stderr, and exits 0; or prints every problem on stderr,
    /// one per line as FILE:LINE: error: [section] key: message, and exits 1.
    #[arg(long)]
    pub check_config: bool,

    #[command(subcommand)]
    pub command: Option<FsfaxdCommand>,
}

/// Maintenance subcommands of fsfaxd.
#[derive(Subcommand, Debug)]
pub enum FsfaxdCommand {
    /// Manage the T.38 → audio fallback list (stations faxed with G.711 instead of T.38)
    ///
    /// The list lives in FreeSWITCH's mod_db (realm `fallback`, GOfax.IP's format) and is
    /// reached through [freeswitch] socket. Numbers are normalised like caller IDs: separators
    /// ` -.()` are removed, an optional leading + and 3 to 32 digits remain. Enter numbers
    /// without your call prefix, as they appear in `list`.
    #[command(subcommand, after_help = FALLBACK_HELP)]
    Fallback(FallbackCommand),

    /// Show what the running fsfaxd is doing: readiness, modems, calls, FreeSWITCH, errors
    ///
    /// Asks the fsfaxd running on the configuration's spool through its status socket
    /// (<spooldir>/status/fsfaxd.sock), so it works whether or not [gofaxd] metrics is set.
    #[command(after_help = STATUS_HELP)]
    Status {
        /// Print the status as JSON (the daemon's /status document)
        #[arg(long)]
        json: bool,
    },
}

const STATUS_HELP: &str = "\
EXAMPLES:
    fsfaxd status                 modems, calls in progress, FreeSWITCH, last errors
    fsfaxd status --json | jq .   the same for scripts

EXIT STATUS:
    0 running and ready, 1 running but not ready (the failed checks are shown),
    3 not running.";

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
pub enum FallbackCommand {
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
        #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
        older_than: std::time::Duration,
        /// Only print what would be deleted
        #[arg(long)]
        dry_run: bool,
    },
}

const FSFAXSEND_ABOUT: &str = "Send a HylaFAX job through FreeSWITCH (HylaFAX SendFaxCmd).";

const FSFAXSEND_LONG_ABOUT: &str = "\
Send a HylaFAX job through FreeSWITCH (HylaFAX SendFaxCmd).

faxq runs fsfaxsend for each job on one of fsfaxd's virtual modems; set
    SendFaxCmd: /usr/bin/fsfaxsend
in /etc/hylafax/config (add `-c PATH` for another configuration file). Only the first
QFILE is sent; faxq requeues the others.";

const FSFAXSEND_AFTER_HELP: &str = "\
EXAMPLES:
    fsfaxsend -m freeswitch0 sendq/q42   what faxq runs, from the spool directory

EXIT STATUS (read by faxq): 0 retry later, 1 failed, 2 done.";

const FSFAXSEND_AFTER_LONG_HELP: &str = "\
EXAMPLES:
    What faxq runs (from the spool directory):
        fsfaxsend -m freeswitch0 sendq/q42

LOGGING:
    syslog (facility daemon), or stderr when it is a terminal or with
    FSFAX_LOG_STDERR=1. FSFAX_LOG sets the level: error, warn, info (default), debug.
    Syslog priorities: error=err, warn=warning, info=notice, debug=info.

EXIT STATUS (read by faxq):
    0 retry later (also for configuration errors: fix the file and the job goes out),
    1 failed (also for command-line errors), 2 done.";

/// Command line of fsfaxsend (faxq: `fsfaxsend -m <modem> <qfile>...`).
#[derive(Parser, Debug)]
#[command(
    name = "fsfaxsend",
    version,
    about = FSFAXSEND_ABOUT,
    long_about = FSFAXSEND_LONG_ABOUT,
    after_help = FSFAXSEND_AFTER_HELP,
    after_long_help = FSFAXSEND_AFTER_LONG_HELP
)]
pub struct FsfaxsendCli {
    /// Configuration file [default: /etc/fsfax.conf]
    ///
    /// Without -c, /etc/fsfax.conf is used, or /etc/gofax.conf if only that one exists.
    #[arg(short, long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Virtual modem to send on, as faxq names it (freeswitch0, ...)
    #[arg(short, long, value_name = "MODEM", required = true, value_parser = modem_name)]
    pub modem: String,

    /// Queue file(s), relative to the spool directory (sendq/q42)
    #[arg(value_name = "QFILE", required = true)]
    pub qfiles: Vec<PathBuf>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_consistent() {
        fsfaxd_command().debug_assert();
        fsfaxsend_command().debug_assert();
    }

    #[test]
    fn modem_names() {
        assert!(modem_name("freeswitch0").is_ok());
        for bad in ["", ".x", "a/b", "a b", &"x".repeat(65)] {
            assert!(modem_name(bad).is_err(), "{bad:?}");
        }
        let e = FsfaxsendCli::try_parse_from(["fsfaxsend", "-m", "../x", "q"]).unwrap_err();
        assert!(e.to_string().contains("freeswitch0"), "{e}");
    }
}
