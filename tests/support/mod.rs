//! Shared support for integration tests: `mod support;` at the top of a test file.
//!
//! Each test binary uses only part of it, hence the `dead_code` allowance.
#![allow(dead_code, unused_imports)]

pub mod fakefs;
pub mod fsfaxd;
pub mod hylafax;
pub mod send;
pub mod wait;

/// The fsfaxsend the tests run: `FSFAX_FSFAXSEND` when set, else this build's. scripts/test.sh
/// sets it to the static musl build that the package ships (scripts/package.sh), so the
/// end-to-end tests drive the binary faxq will run.
pub fn fsfaxsend() -> std::path::PathBuf {
    std::env::var_os("FSFAX_FSFAXSEND")
        .map_or_else(|| env!("CARGO_BIN_EXE_fsfaxsend").into(), Into::into)
}

/// The fsfaxsend the send benches measure: `FSFAX_BENCH_FSFAXSEND=<binary>` when set (another
/// build, for before/after runs in the same conditions), else the build that ships, made on
/// first use by `scripts/static-fsfaxsend.sh release` (static, on musl, release profile).
pub fn bench_fsfaxsend() -> &'static std::path::Path {
    static BINARY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| {
        let binary = match std::env::var_os("FSFAX_BENCH_FSFAXSEND") {
            Some(binary) => binary.into(),
            None => {
                let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("scripts/static-fsfaxsend.sh");
                let out = std::process::Command::new(&script)
                    .arg("release")
                    .stderr(std::process::Stdio::inherit())
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
                assert!(
                    out.status.success(),
                    "{} failed ({}): the send benches measure the static build that ships; \
                     FSFAX_BENCH_FSFAXSEND=<binary> measures another",
                    script.display(),
                    out.status
                );
                String::from_utf8_lossy(&out.stdout).trim().into()
            }
        };
        eprintln!(
            "fsfaxsend under test: {}",
            std::path::Path::new(&binary).display()
        );
        binary
    })
}

/// A `log/seqf` as fsfax leaves it on a boot that is not this one: next number `next`, and a
/// block reserved up to `limit` (after a crash of the machine, the stored number may be an
/// update behind what was handed out).
pub fn seqf_reserved_on_another_boot(next: u32, limit: u32) -> String {
    format!("{next}\nfsfax reserved {limit} boot 00000000-0000-0000-0000-000000000000\n")
}

/// The `log/seqf` fsfax writes on this boot: next number `next`, reserved up to `limit`.
pub fn seqf_reserved_on_this_boot(next: u32, limit: u32) -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    format!("{next}\nfsfax reserved {limit} boot {}\n", boot.trim_end())
}
