//! fsfaxsend: HylaFAX's SendFaxCmd. Sends one queue file through FreeSWITCH.
//! Thin: flags, configuration, logging, then the send job and its exit status.
//!
//! faxq reads the exit status when the qfile's `returned:` is still 7: 0 = retry later,
//! 1 = failed, 2 = done, and anything else (including clap's usage status 2 and a panic's 101)
//! also means done. So every early exit here is chosen from 0 and 1 only.

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use fsfax::cli::FsfaxsendCli;
use fsfax::config::{self, Config, Program};
use fsfax::logging::{self, Destination, LogGuard, write_stderr};

/// The static musl build's allocator: musl's own maps and unmaps memory for small
/// allocations, 87 `mmap`/`munmap` calls per send against dlmalloc's 12 (see Cargo.toml).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// faxq: requeue the job and try again later.
const EXIT_RETRY: u8 = 0;
/// faxq: the job failed for good.
const EXIT_FAILED: u8 = 1;

fn main() -> ExitCode {
    let cli = match FsfaxsendCli::try_parse() {
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
        config
            .as_ref()
            .map_err(|errors| fsfax::send::ConfigUnusable {
                path: path.clone(),
                errors: errors.clone(),
            }),
        &cli.modem,
        &cli.qfiles,
    ));
    // Everything is written and synced and nothing is left for the runtime to do: the exit
    // takes it down. Tearing it down here (waking its idle blocking thread, dropping its
    // tasks, sockets and timers one by one) cost 80 µs of every send.
    std::mem::forget(runtime);
    ExitCode::from(code)
}

/// Loads and checks the configuration for sending; `None` if it has errors.
fn load(log: &LogGuard, path: &Path) -> Result<Config, Vec<String>> {
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
    let errors: Vec<String> = problems
        .iter()
        .filter(|p| p.is_error())
        .map(ToString::to_string)
        .collect();
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(errors),
    }
}
