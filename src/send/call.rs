//! One send attempt over FreeSWITCH's event socket (work in progress).

use crate::config::Config;
use crate::fax::{FaxOutcome, LocalError};
use crate::hylafax::Spool;

use super::{Attempt, Job};

/// Runs one attempt of the job and returns its verdict.
pub async fn send(_cfg: &Config, _spool: &Spool, _modem: &str, _job: &mut Job) -> Attempt {
    Attempt::verdict_only(
        FaxOutcome::Local {
            error: LocalError::Internal,
            detail: "send engine not built yet",
            dial_attempted: false,
        }
        .classify(&[]),
    )
}
