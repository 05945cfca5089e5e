#!/usr/bin/env bash
# Runs every fsfax test on a fresh Debian 12 machine, installing what the tests need first:
# libtiff-tools (tiffcp, tiffinfo) and a real HylaFAX (Debian's hylafax-server/-client), which the
# integration tests drive in a private spool through tests/tools/hylafax-lab.sh; cargo-deb for
# the Debian package test; the musl target of the Rust toolchain, for fsfaxsend's static build.
# Usage: scripts/test.sh [extra cargo nextest run args, e.g. a test filter]
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v tiffcp >/dev/null 2>&1 || need_pkgs+=(libtiff-tools)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "test.sh: need root to install ${need_pkgs[*]}" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

# Real HylaFAX for the end-to-end tests (faxq, hfaxd, faxstat, faxinfo, bin/faxrcvd).
if [ "$(id -u)" = 0 ]; then
    bash tests/tools/hylafax-lab.sh install
else
    echo "test.sh: not root: the tests that need a real HylaFAX will fail and say what they need" >&2
fi

# cargo-deb for the package test (tests/deploy_deb.rs); built once, then found in ~/.cargo/bin.
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
    # Not fatal here: the package test then fails and says what is missing.
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" ||
        echo "test.sh: could not install cargo-deb; the .deb test will fail" >&2
fi

# cargo-nextest runs the tests (one process per test, a hang bound per test, failures repeated
# at the end of the log; settings in .config/nextest.toml). Debian 12 machines of this project's
# kind ship it; a bare machine builds it once.
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi

# Panic messages say what failed and what the fake recorded; backtraces would bury them.
export RUST_BACKTRACE=0
cargo build --all-targets --locked
# fsfaxsend ships as a static musl build (scripts/package.sh): the tests run that one. The
# script adds the musl target to the toolchain when it is missing.
FSFAX_FSFAXSEND=$(scripts/static-fsfaxsend.sh dev)
export FSFAX_FSFAXSEND
echo "test.sh: fsfaxsend under test: $FSFAX_FSFAXSEND" >&2
status=0
# Documentation examples first (nextest does not run them), so the end of the log is nextest's
# summary of what failed.
if [ $# -eq 0 ]; then
    cargo test --doc --locked || status=$?
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
set +e
cargo nextest run --locked --no-fail-fast "$@" 2>&1 | tee "$out"
nextest_status=${PIPESTATUS[0]}
set -e
[ "$nextest_status" = 0 ] || status=$nextest_status
if [ "$status" != 0 ]; then
    # The last lines of a failed run: each failed test, where it failed and the first line of its
    # message (the expectation); the message's full text (what the fake recorded) is above.
    python3 scripts/failure-digest.py "$out" >&2 || true
    echo "test.sh: FAILED (exit $status): the failed tests and their output are listed just above" >&2
fi
exit "$status"
