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
