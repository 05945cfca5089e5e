#!/usr/bin/env bash
# The main job in one command: a private, real HylaFAX (faxq and hfaxd, the lab the tests use,
# tests/tools/hylafax-lab.sh), fsfaxd serving its virtual modems, one inbound fax handed to
# faxrcvd and one outbound job that faxq runs through fsfaxsend. Then what an admin looks at:
# faxstat -s, faxinfo of the received document, the xferfaxlog lines, the session logs,
# `fsfaxd status` and a few /metrics lines. Everything is stopped and removed at the end.
#
# FreeSWITCH: when none answers at FSFAX_DEMO_FREESWITCH (default 127.0.0.1:8021), or when one
# answers but FSFAX_DEMO_GATEWAY and FSFAX_DEMO_NUMBER are not set, the calls go through fsfax's
# FreeSWITCH SIMULATOR (examples/fs_simulator.rs, the fake the tests use: it replays captured
# Event Socket traffic of a real FreeSWITCH; no SIP, no audio, no real fax). To use a real
# FreeSWITCH instead:
#   FSFAX_DEMO_FREESWITCH=host:8021 FSFAX_DEMO_PASSWORD=ClueCon \
#   FSFAX_DEMO_GATEWAY=<sofia gateway> FSFAX_DEMO_NUMBER=<a fax number to call> scripts/demo.sh
# The outbound job then calls that number; for the inbound fax, route a call in FreeSWITCH's
# dialplan to `socket <the address fsfaxd prints> async full` while the demo waits.
#
# Needs root (it installs Debian's hylafax-server/-client once and runs faxq as uucp, as the
# tests do) and takes the tests' lab lock, so it never runs beside a HylaFAX test.
#
# Environment (all optional):
#   FSFAX_DEMO_PROFILE   `release` (default) or `dev` (debug build, what the tests use)
#   FSFAX_DEMO_FREESWITCH, FSFAX_DEMO_PASSWORD, FSFAX_DEMO_GATEWAY, FSFAX_DEMO_NUMBER  see above
#   FSFAX_DEMO_KEEP=1    keep the demo directory (its path is printed) instead of removing it
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

say() { printf '\n==== %s\n' "$*"; }
note() { echo "demo: $*" >&2; }
die() { note "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run me as root: I start a private HylaFAX (faxq runs as uucp), as scripts/test.sh does"

profile=${FSFAX_DEMO_PROFILE:-release}
case $profile in
    release) cargo build --release --locked --bins --example fs_simulator; bindir=release ;;
    dev | debug) cargo build --locked --bins --example fs_simulator; bindir=debug ;;
    *) die "FSFAX_DEMO_PROFILE must be release or dev, not '$profile'" ;;
esac
bin=${CARGO_TARGET_DIR:-$root/target}/$bindir
fsfaxd=$bin/fsfaxd
sim=$bin/examples/fs_simulator
started=$SECONDS

# One HylaFAX lab at a time on this machine: the lock the tests take. Whatever this script
# starts in the background gets `9>&-`: a process that outlived the demo holding the lock
# would stop every later lab (and test) at this flock.
exec 9> "${TMPDIR:-/tmp}/fsfax-hylafax-lab.lock"
flock 9

demo=$(mktemp -d "${TMPDIR:-/tmp}/fsfax-demo.XXXXXX")
chmod 755 "$demo" # faxq (uucp) runs the SendFaxCmd wrapper from here
lab=$demo/lab
spool=$lab/spool
conf=$demo/fsfax.conf
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export HFLAB_DIR=$lab HFLAB_PORT=$(free_port)
hfaxd=localhost:$HFLAB_PORT
fsfaxd_pid='' sim_pid=''

cleanup() {
    local rc=$?
    set +e
    if [ -n "$fsfaxd_pid" ]; then kill -TERM "$fsfaxd_pid" 2>/dev/null; wait "$fsfaxd_pid" 2>/dev/null; fi
    if [ -n "$sim_pid" ]; then kill -TERM "$sim_pid" 2>/dev/null; wait "$sim_pid" 2>/dev/null; fi
    bash "$root/tests/tools/hylafax-lab.sh" stop > /dev/null 2>&1
    if [ "${FSFAX_DEMO_KEEP:-0}" = 1 ]; then
        note "kept $demo (fsfaxd log: $demo/fsfaxd.log, spool: $spool)"
    else
        rm -rf "$demo"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
    local limit=$1 t=0
    shift
    until "$@"; do
        t=$((t + 1))
        [ "$t" -le $((limit * 10)) ] || return 1
        sleep 0.1
    done
}

# --- FreeSWITCH: a real one, or the simulator
fs_addr=${FSFAX_DEMO_FREESWITCH:-127.0.0.1:8021}
password=${FSFAX_DEMO_PASSWORD:-ClueCon}
gateway=${FSFAX_DEMO_GATEWAY:-}
number=${FSFAX_DEMO_NUMBER:-}
real=0
if timeout 2 bash -c "exec 3<>/dev/tcp/${fs_addr%:*}/${fs_addr##*:} && head -c 40 <&3" 2>/dev/null |
    grep -q 'auth/request'; then
    if [ -n "$gateway" ] && [ -n "$number" ]; then
        real=1
        note "a FreeSWITCH answers at $fs_addr: the demo uses it (gateway $gateway, number $number)"
    else
        note "a FreeSWITCH answers at $fs_addr, but FSFAX_DEMO_GATEWAY and FSFAX_DEMO_NUMBER are not set: using the simulator"
    fi
else
    note "no FreeSWITCH answers at $fs_addr"
fi
if [ "$real" = 0 ]; then
    note "THIS DEMO USES fsfax's FreeSWITCH SIMULATOR (examples/fs_simulator.rs), not a FreeSWITCH:"
    note "  it replays Event Socket traffic captured from a real FreeSWITCH; no SIP, audio or real fax."
    note "  For a real one: FSFAX_DEMO_FREESWITCH=host:8021 FSFAX_DEMO_PASSWORD=... FSFAX_DEMO_GATEWAY=... FSFAX_DEMO_NUMBER=... $0"
    "$sim" serve "$demo/simulator.addr" 2> "$demo/simulator.log" 9>&- &
    sim_pid=$!
    wait_for 30 test -s "$demo/simulator.addr" || die "the simulator did not start: $(cat "$demo/simulator.log")"
    fs_addr=$(cat "$demo/simulator.addr")
    password=ClueCon gateway=gw1 number=5551234
fi

# --- HylaFAX: faxq and hfaxd in a private spool; SendFaxCmd runs fsfaxsend
printf '#!/bin/bash -p\nexec %q -c %q "$@"\n' "$bin/fsfaxsend" "$conf" > "$demo/sendfaxcmd"
chmod 755 "$demo/sendfaxcmd"
note "starting a private HylaFAX in $lab (first run: installs Debian's hylafax-server/-client)"
bash "$root/tests/tools/hylafax-lab.sh" start 2 "$demo/sendfaxcmd" > "$demo/lab.log" 2>&1 ||
    die "the HylaFAX lab did not start: $(tail -20 "$demo/lab.log")"

cat > "$conf" <<EOF
[freeswitch]
socket = $fs_addr
password = $password
gateway = $gateway
ident = fsfax demo

[hylafax]
spooldir = $spool
modems = 2
xferfaxlog = log/xferfaxlog

[gofaxd]
socket = 127.0.0.1:0
metrics = 127.0.0.1:0
enablet38 = true
requestt38 = true

[gofaxsend]
faxnumber = +15550100
enablet38 = true
requestt38 = true
EOF
chmod 644 "$conf"

# --- fsfaxd
FSFAX_LOG=info "$fsfaxd" -f -c "$conf" 2> "$demo/fsfaxd.log" 9>&- &
fsfaxd_pid=$!
wait_for 30 grep -q 'listening on' "$demo/fsfaxd.log" || die "fsfaxd did not start: $(cat "$demo/fsfaxd.log")"
listen=$(sed -n 's/.*listening on \([0-9.:]*\) for FreeSWITCH.*/\1/p' "$demo/fsfaxd.log" | head -1)
metrics=$(sed -n 's|.*health checks on http://\([0-9.:]*\)/metrics.*|\1|p' "$demo/fsfaxd.log" | head -1)
note "fsfaxd (pid $fsfaxd_pid) listens on $listen for FreeSWITCH; metrics on http://$metrics/metrics"
wait_for 30 grep -q 'Running and idle' "$spool/status/freeswitch0" || die "the modems never came up"

# --- one inbound fax
if [ "$real" = 0 ]; then
    note "inbound: the simulator calls fsfaxd as FreeSWITCH's 'socket $listen async full' would"
    "$sim" call "$listen" 2>> "$demo/simulator.log" || die "the inbound call failed: $(cat "$demo/simulator.log")"
    wait_for 60 grep -qs 'RECV' "$spool/log/xferfaxlog" || die "no RECV record: $(tail -30 "$demo/fsfaxd.log")"
else
    note "inbound: send a fax to a number routed to 'socket $listen async full'; waiting up to 120 s"
    wait_for 120 grep -qs 'RECV' "$spool/log/xferfaxlog" || note "no inbound fax arrived"
fi

# --- one outbound job
doc=$root/tests/fixtures/fax/test3.tif
out=$(sendfax -h "$hfaxd" -n -d "$number" "$doc" 2>&1) || die "sendfax failed: $out"
job=$(sed -n 's/.*request id is \([0-9]*\).*/\1/p' <<< "$out")
note "outbound: job $job to $number submitted with sendfax; faxq runs fsfaxsend on a free modem"
finished() { grep -qs '^state:[78]$' "$spool/doneq/q$job"; }
wait_for 120 finished || die "job $job did not finish: $(faxstat -h "$hfaxd" -s -d 2>&1)"

# --- what an admin looks at
say "faxstat -s -d"
faxstat -h "$hfaxd" -s -d
say "faxinfo of the received document"
for f in "$spool"/recvq/fax*.tif; do echo "$f:"; faxinfo "$f"; done
say "xferfaxlog"
cat "$spool/log/xferfaxlog"
for log in "$spool"/log/c*; do
    say "session log ${log#"$spool"/}"
    cat "$log"
done
say "fsfaxd status"
"$fsfaxd" status -c "$conf" || true
say "/metrics (a few lines)"
# The xferfaxlog follower counts the send within a second of its SEND record.
wait_for 10 bash -c "curl -fsS http://$metrics/metrics | grep -q '^fsfax_sends_total.* [1-9]'" || true
curl -fsS "http://$metrics/metrics" | grep -E '^fsfax_' | grep -v ' 0$' | grep -v '_bucket' | head -15
say "done in $((SECONDS - started)) s after the build; stopping fsfaxd, the simulator and HylaFAX"
