#!/usr/bin/env bash
# The main job: build fsfax, prepare a local HylaFAX-shaped spool under ./demo/spool, point a copy
# of the sample configuration at it, check it, and start fsfaxd in the foreground (logs on stderr).
# Stop it with Ctrl-C. Nothing outside ./demo is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bins
demo=$PWD/demo
spool=$demo/spool
mkdir -p "$spool"/{bin,etc,log,recvq,sendq,doneq,docq,status,tmp,info}
# A faxrcvd that only records its arguments, so a received fax in the demo is visible.
cat > "$spool/bin/faxrcvd" <<'SH'
#!/bin/sh
echo "faxrcvd $*" >> log/faxrcvd-demo.log
SH
chmod +x "$spool/bin/faxrcvd"
sed -e "s#^spooldir *=.*#spooldir = $spool#" config/fsfax.conf > "$demo/fsfax.conf"
./target/release/fsfaxd --check-config -c "$demo/fsfax.conf" > "$demo/effective.conf"
echo "demo: configuration OK (effective configuration in $demo/effective.conf)" >&2
exec ./target/release/fsfaxd -f -c "$demo/fsfax.conf"
