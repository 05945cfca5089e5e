#!/usr/bin/env bash
# Runs each fuzz target (fuzz/fuzz_targets) for a bounded time with libFuzzer via cargo-fuzz.
# Usage: scripts/fuzz.sh [seconds-per-target, default 60] [target...]
#
# cargo-fuzz needs nightly-only compiler flags (-Zsanitizer, sancov); on the stable toolchain
# RUSTC_BOOTSTRAP=1 unlocks them for this build only. Corpora live in fuzz/corpus/<target>
# (gitignored, seeded from the ESL captures, config/ and fuzz/seeds); crashes land in
# fuzz/artifacts/<target>/ and the script exits non-zero. Re-run one with:
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<crash-file>
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(esl_frame qfile_roundtrip dynconfig config dialstring tagline tifftags)
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1

seed() {
    local t=$1 dir=fuzz/corpus/$1
    mkdir -p "$dir"
    case $t in
    esl_frame)
        # A leading 0 byte selects default limits and one-piece input (see the target).
        for f in tests/fixtures/esl/*.from-fs.raw; do
            { printf '\0'; head -c 16000 "$f"; } > "$dir/$(basename "$f")"
        done ;;
    config)
        cp config/fsfax.conf tests/fixtures/config/*.conf "$dir/" ;;
    tifftags)
        # The received documents of the tests; the larger ones cut to -max_len below.
        for f in tests/fixtures/fax/*.tif; do
            head -c 16384 "$f" > "$dir/$(basename "$f")"
        done ;;
    *)
        cp fuzz/seeds/"$t"/* "$dir/" ;;
    esac
}

cd fuzz
cargo fuzz build -O
cd ..
failed=()
for t in "${targets[@]}"; do
    seed "$t"
    mkdir -p "fuzz/artifacts/$t"
    echo "== fuzz $t for ${secs}s" >&2
    if ! (cd fuzz && cargo fuzz run -O "$t" "corpus/$t" -- \
            -max_total_time="$secs" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
            -print_final_stats=1 2>&1 | tail -n 25); then
        failed+=("$t")
    elif [ -n "$(ls -A "fuzz/artifacts/$t" 2>/dev/null)" ]; then
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: findings in: ${failed[*]} (see fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: no findings in ${targets[*]} (${secs}s each)" >&2
