#!/bin/sh
# Regenerates the README's picture of a page top with a tag line (needs hylafax-server for
# the font). Usage: scripts/tagline-picture.sh [out.png]
set -e
cd "$(dirname "$0")/.."
cargo run --quiet --example tagline_picture -- "${1:-docs/tagline.png}"
