#!/usr/bin/env bash
# The main job: build fsfax, prepare a local HylaFAX-shaped spool under ./demo/spool, point a copy
# of the sample configuration at it, check it, and start fsfaxd in the foreground (logs on stderr).
# Stop it with Ctrl-C. Nothing outside ./demo is touched.
#
# Environment (all optional):
#   FSFAX_DEMO_DIR      where the demo lives (default: ./demo)
#   FSFAX_DEMO_PROFILE  `release` (default) or `dev` (debug build: faster to build, what the
#                       tests use)
#   FSFAX_DEMO_SOCKET   address fsfaxd listens on instead of [gofaxd] socket (127.0.0.1:8022)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${FSFAX_DEMO_PROFILE:-release}
case $profile in
    release) cargo build --release --locked --bins; bindir=release ;;
    dev | debug) cargo build --locked --bins; bindir=debug ;;
    *) echo "demo: FSFAX_DEMO_PROFILE must be release or dev, not '$profile'" >&2; exit 2 ;;
esac
fsfaxd=${CARGO_TARGET_DIR:-$PWD/target}/$bindir/fsfaxd

demo=${FSFAX_DEMO_DIR:-$PWD/demo}
mkdir -p "$demo"
demo=$(cd "$demo" && pwd)
spool=$demo/spool
mkdir -p "$spool"/{bin,etc,log,recvq,sendq,doneq,docq,status,tmp,info}
# A faxrcvd that only records its arguments, so a received fax in the demo is visible.
cat > "$spool/bin/faxrcvd" <<'SH'
#!/bin/sh
echo "faxrcvd $*" >> log/faxrcvd-demo.log
SH
chmod +x "$spool/bin/faxrcvd"

# The sample configuration with the demo spool (and listen address) put in, section-aware so
# [freeswitch] socket is left alone. Values go through ENVIRON: no quoting surprises.
DEMO_SPOOL=$spool DEMO_SOCKET=${FSFAX_DEMO_SOCKET:-} awk '
    /^[[:space:]]*\[/ { section = tolower($0); gsub(/[][[:space:]]/, "", section) }
    section == "hylafax" && /^[[:space:]]*spooldir[[:space:]]*=/ {
        print "spooldir = " ENVIRON["DEMO_SPOOL"]; next
    }
    section == "gofaxd" && ENVIRON["DEMO_SOCKET"] != "" && /^[[:space:]]*socket[[:space:]]*=/ {
        print "socket = " ENVIRON["DEMO_SOCKET"]; next
    }
    { print }
' config/fsfax.conf > "$demo/fsfax.conf"

"$fsfaxd" --check-config -c "$demo/fsfax.conf" > "$demo/effective.conf"
echo "demo: configuration OK (effective configuration in $demo/effective.conf)" >&2
echo "demo: modem status in $spool/status/; stop with Ctrl-C" >&2
exec "$fsfaxd" -f -c "$demo/fsfax.conf"
