//! Metrics read at each scrape: the standard process metrics (from `/proc/self`, as the Go and
//! Python clients export them: `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
//! `process_start_time_seconds`) and the spool's free space.
//! prometheus-client has no process collector; this one is small and Linux-only, like fsfaxd.

use std::fmt;
use std::path::PathBuf;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// The process's own figures, read from `/proc/self`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    pub start_time: f64,
}

impl ProcessStats {
    /// Reads `/proc/self/stat`, `/proc/self/fd`, the open-file limit and `/proc/stat`'s boot
    /// time; `None` when `/proc` is not there.
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Field n of proc(5) is f[n - 3].
        let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        // SAFETY: sysconf only reads a system constant.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        let cpu_seconds = (field(14)? + field(15)?) as f64 / ticks;
        let start_ticks = field(22)? as f64;
        let virtual_bytes = field(23)?;
        let resident_bytes = field(24)? * page;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
            })
            .unwrap_or(0) as f64;
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        let max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(0, |(soft, _)| soft);
        Some(ProcessStats {
            cpu_seconds,
            resident_bytes,
            virtual_bytes,
            open_fds,
            max_fds,
            start_time: boot + start_ticks / ticks,
        })
    }
}

/// Free and total bytes of the file system holding `path`, for unprivileged users.
pub fn disk_space(path: &std::path::Path) -> Option<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let frag = s.fragment_size() as u64;
    Some((s.blocks_available() as u64 * frag, s.blocks() as u64 * frag))
}

/// The scrape-time collector.
pub struct ScrapeCollector {
    pub spool: PathBuf,
}

impl fmt::Debug for ScrapeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrapeCollector")
            .field("spool", &self.spool)
            .finish()
    }
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue + Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: V,
) -> fmt::Result {
    let g = ConstGauge::new(v);
    let m = enc.encode_descriptor(name, help, unit, g.metric_type())?;
    g.encode(m)
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        if let Some(p) = ProcessStats::read() {
            let c = ConstCounter::new(p.cpu_seconds);
            let m = enc.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent",
                Some(&Unit::Seconds),
                c.metric_type(),
            )?;
            c.encode(m)?;
            let b = Some(&Unit::Bytes);
            gauge(
                &mut enc,
                "process_resident_memory",
                "Resident memory size",
                b,
                p.resident_bytes as i64,
            )?;
            gauge(
                &mut enc,
                "process_virtual_memory",
                "Virtual memory size",
                b,
                p.virtual_bytes as i64,
            )?;
            gauge(
                &mut enc,
                "process_open_fds",
                "Open file descriptors",
                None,
                p.open_fds as i64,
            )?;
            gauge(
                &mut enc,
                "process_max_fds",
                "Limit on open file descriptors",
                None,
                p.max_fds as i64,
            )?;
            gauge(
                &mut enc,
                "process_start_time",
                "Start time of the process since the Unix epoch",
                Some(&Unit::Seconds),
                p.start_time,
            )?;
        }
        if let Some((free, total)) = disk_space(&self.spool) {
            let b = Some(&Unit::Bytes);
            gauge(
                &mut enc,
                "fsfax_spool_free",
                "Bytes free for unprivileged users on the spool's file system",
                b,
                free as i64,
            )?;
            gauge(
                &mut enc,
                "fsfax_spool_size",
                "Size of the spool's file system",
                b,
                total as i64,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let p = ProcessStats::read().expect("/proc/self");
        assert!(p.resident_bytes > 0, "{p:?}");
        assert!(p.open_fds > 0 && p.max_fds >= p.open_fds, "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(p.start_time > 1e9 && p.start_time <= now + 1.0, "{p:?}");
    }
}
