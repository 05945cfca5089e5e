#!/usr/bin/env bash
# Builds fsfaxsend as it ships: one static binary on musl (x86_64-unknown-linux-musl), and
# prints its path. fsfaxd stays on glibc.
#
# Why: faxq execs fsfaxsend for every job, and glibc's start-up asks the CPU about its caches
# with about 90 `cpuid` instructions, each a trap to the hypervisor on a virtual machine
# (about 7 µs each on the machines we measure): 0.6 ms of every exec before main, half of the
# whole start-up. musl's start-up asks nothing. See the README's performance section.
#
# Usage: scripts/static-fsfaxsend.sh [PROFILE]   (release by default; dev for the tests)
# Adds the musl target to the toolchain when rustup is there and the target is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-release}
target=x86_64-unknown-linux-musl

libdir=$(rustc --print target-libdir --target "$target" 2>/dev/null || true)
if ! compgen -G "${libdir:-/nonexistent}/libstd-*.rlib" >/dev/null; then
    if ! command -v rustup >/dev/null 2>&1; then
        echo "static-fsfaxsend.sh: the Rust standard library for $target is missing and there" \
            "is no rustup to add it; install it with your toolchain" >&2
        exit 1
    fi
    echo "static-fsfaxsend.sh: adding the $target target (rustup target add $target)" >&2
    rustup target add "$target" >&2
fi

# The release build optimises the dependencies for size, and fsfax itself and the `fax` crate
# (the tag line imaging's code tables) for speed. fsfaxsend lives for milliseconds and spends
# them in system calls and page faults: a smaller binary maps fewer pages of code at start-up.
# Measured in the README's performance section (issue 13, eleventh part).
size=()
if [ "$profile" = release ]; then
    size=(--config 'profile.release.package."*".opt-level="s"'
        --config 'profile.release.package.fax.opt-level=3')
fi

# cargo's progress and errors go to stderr; stdout carries one JSON line per artifact.
json=$(cargo build --locked --profile "$profile" --target "$target" --bin fsfaxsend \
    "${size[@]}" --message-format=json-render-diagnostics)
bin=$(sed -n 's/.*"executable":"\([^"]*\/fsfaxsend\)".*/\1/p' <<<"$json" | tail -n 1)
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "static-fsfaxsend.sh: cargo built no fsfaxsend for $target" >&2
    exit 1
fi
echo "$bin"
