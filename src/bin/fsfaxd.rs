//! fsfaxd: receives faxes from FreeSWITCH into HylaFAX and runs fsfax's virtual modems.
//! Thin: flags, configuration, logging, then the receive daemon.

use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use fsfax::cli::{FallbackCommand, FsfaxdCli, FsfaxdCommand};
use fsfax::config::{self, Config, Problem};
use fsfax::fallback::admin;
use fsfax::logging::{self, Destination, LogGuard, write_stderr, write_stdout};
use fsfax::receive::{self, Control, ServeError};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn main() -> ExitCode {
    let cli = match FsfaxdCli::try_parse() {
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
            let _ = FsfaxdCli::command()
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
            FsfaxdCommand::Fallback(action) => fallback(&path, cli.foreground, action),
            FsfaxdCommand::Status { json } => status(&path, json),
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
        FallbackCommand::CheckNodes => admin::Action::CheckNodes,
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
            if report.failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            write_stderr(&format!("fsfaxd: error: {e}\n"));
            ExitCode::FAILURE
        }
    }
}

/// `fsfaxd status`: what the daemon on the configuration's spool says, on stdout.
fn status(path: &Path, json: bool) -> ExitCode {
    use fsfax::ops::status;
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            for problem in e.problems() {
                write_stderr(&format!("{problem}\n"));
            }
            return ExitCode::FAILURE;
        }
    };
    match status::fetch(&config.hylafax.spooldir) {
        Ok(v) => {
            if json {
                write_stdout(&format!("{v:#}\n"));
            } else {
                write_stdout(&status::render(&v));
            }
            ExitCode::from(status::exit_code(&v))
        }
        Err(e) => {
            if json {
                let v = serde_json::json!({"running": false, "error": e.to_string()});
                write_stdout(&format!("{v:#}\n"));
            }
            write_stderr(&format!("fsfaxd: {e}\n"));
            ExitCode::from(status::NOT_RUNNING)
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
///
/// The threads are fixed whatever the load: the main thread runs every call (they wait on
/// sockets, never on the disk), the spool writer (every spool write, and the received
/// documents' page counts and tags), the faxq FIFO writer, and at most two threads for the
/// rare blocking work left (see `receive`'s module notes).
/// One thread for the calls, not one per core: a reception costs its event loop about a
/// millisecond of CPU per fax, and a second worker only added wake-ups between the two
/// (`cargo bench --bench receive_load`: a third more context switches and about 10 % more
/// CPU per reception). `FSFAX_WORKERS=<n>` runs the calls on n worker threads instead.
fn serve(config: Config) -> ExitCode {
    receive::raise_file_limit();
    let workers: usize = std::env::var("FSFAX_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut builder = if workers == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    receive::coalesce::install(&mut builder, receive::coalesce::window_from_env());
    let runtime = match builder.max_blocking_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(daemon(config));
    // Everything fsfaxd must finish (calls, journal, spool writes, faxq's messages) is done
    // before `daemon` returns. Dropping the runtime would still wait for any blocking-pool
    // work in flight (a name lookup, a read): exit when done, not when that is.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
enum DaemonError {
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Owner(#[from] receive::owner::OwnerError),
}

/// The signals turned into the daemon's [`Control`]s, the listener, then the daemon.
async fn daemon(config: Config) -> Result<(), DaemonError> {
    let handler = |kind| signal(kind).map_err(DaemonError::Signals);
    let mut term = handler(SignalKind::terminate())?;
    let mut int = handler(SignalKind::interrupt())?;
    let mut hup = handler(SignalKind::hangup())?;
    let (control, orders) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let order = tokio::select! {
                _ = term.recv() => ("SIGTERM", Control::Stop),
                _ = int.recv() => ("SIGINT", Control::Stop),
                _ = hup.recv() => ("SIGHUP", Control::Reload),
            };
            if order.1 == Control::Stop {
                tracing::info!("{}: stopping", order.0);
            }
            if control.send(order.1).await.is_err() {
                return;
            }
        }
    });
    let mut config = config;
    let listener = receive::bind(&config).await?;
    // As HylaFAX's root daemons do: hold the listener, then work as the spool's owner. The
    // spool's real path, so no root-only directory on the way (a symlink's) is needed later.
    if let Ok(real) = std::fs::canonicalize(&config.hylafax.spooldir) {
        config.hylafax.spooldir = real;
    }
    if nix::unistd::Uid::effective().is_root() {
        // While still root: an admin's `touch`ed etc/config.freeswitchN is root's, which the
        // spool's owner could not fill (faxstat would show the modem without its number).
        for i in 0..config.hylafax.modems {
            let path = config
                .hylafax
                .spooldir
                .join(format!("etc/config.freeswitch{i}"));
            let (number, ident) = (&config.gofaxsend.fax_number, &config.freeswitch.ident);
            match fsfax::hylafax::modem::fill_modem_config(&path, number, ident) {
                Ok(true) => tracing::info!(path = %path.display(), "modem config filled"),
                Ok(false) => {}
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }
    receive::owner::run_as_spool_owner(&config.hylafax.spooldir)?;
    receive::run(config, listener, orders).await?;
    Ok(())
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
