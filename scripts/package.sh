#!/usr/bin/env bash
# Builds the Debian package: `cargo deb` with fsfaxsend taken from its static musl build
# (scripts/static-fsfaxsend.sh; fsfaxd as cargo-deb builds it, on glibc). Needs cargo-deb
# (`cargo install cargo-deb --locked`).
# Usage: scripts/package.sh [cargo-deb arguments, e.g. -o DIR, or --profile dev --fast]
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --profile) profile=${args[i + 1]:-release} ;;
        --profile=*) profile=${args[i]#--profile=} ;;
    esac
done
bin=$(scripts/static-fsfaxsend.sh "$profile")
# cargo-deb takes a file outside its own build as a plain asset of this path
# ([package.metadata.deb] in Cargo.toml). It then warns that it finds no `$auto` dependencies
# for it: a static binary has none (the package's libc6 dependency comes from fsfaxd).
install -D -m 755 "$bin" target/static/fsfaxsend
if [ "$profile" = release ]; then
    strip target/static/fsfaxsend
fi
exec cargo deb --locked "$@"
