//! Operations: what an admin watches fsfaxd with.
//!
//! * [`metrics`]: the Prometheus metrics, counted where the work is done;
//! * [`live`]: calls in progress, the FreeSWITCH connection, recent errors;
//! * [`process`]: process and spool figures read at each scrape;
//! * [`sends`]: sends counted from xferfaxlog's SEND records;
//! * [`http`]: `/metrics`, `/healthz`, `/readyz`, `/status` on `[gofaxd] metrics` and the
//!   spool's status socket;
//! * [`status`]: `fsfaxd status`, the client of that socket;
//! * [`recent`]: the tracing layer that keeps the last warnings and errors;
//! * [`notify`]: systemd's READY/STOPPING/WATCHDOG notifications.

pub mod http;
pub mod live;
pub mod metrics;
pub mod notify;
pub mod process;
pub mod recent;
pub mod sends;
pub mod status;
