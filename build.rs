//! Links GCC's unwinder into the binaries (`libgcc_eh.a`), as `gcc -static-libgcc` does,
//! instead of loading `libgcc_s.so.1` at every start.
//!
//! Rust's standard library asks for `-lgcc_s` on Linux with glibc. Loading it costs every
//! exec a library to map and relocate, and its constructor probes the CPU with a dozen
//! `cpuid` instructions, each a trip to the hypervisor on a virtual machine: about 0.1 ms of
//! the 1 ms that fsfaxsend's start-up costs on the machines we measure (issue 13, README's
//! performance section). Here `-lgcc_s` finds, first, a linker script of that name that
//! takes the static unwinder instead. glibc stays shared (it resolves host names through
//! NSS); the unwinder is the same code either way, and nothing in fsfax loads libgcc_s
//! itself. Builds that are static already (`crt-static`) or not for glibc are left alone.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let static_crt = var("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .any(|f| f == "crt-static");
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" || static_crt {
        return;
    }
    let dir = PathBuf::from(var("OUT_DIR")).join("static-libgcc");
    std::fs::create_dir_all(&dir).expect("create OUT_DIR/static-libgcc");
    std::fs::write(dir.join("libgcc_s.so"), "INPUT(-lgcc_eh)\n")
        .expect("write OUT_DIR/static-libgcc/libgcc_s.so");
    println!("cargo:rustc-link-search=native={}", dir.display());
}
