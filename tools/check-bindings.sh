#!/usr/bin/env bash
# Drift check of the committed spank-sys snapshot: regenerates the bindings from the
# installed <slurm/spank.h> (or $SLURM_INCLUDE_DIR) and compares them with
# spank-sys/pregenerated/bindings.rs. A difference means the headers changed (another
# Slurm release): refresh the snapshot with `tools/check-bindings.sh --update`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked -p spank-sys
# the newest build output of spank-sys
out=$(ls -t target/debug/build/spank-sys-*/out/bindings.rs 2>/dev/null | head -1)
[ -n "$out" ] || { echo "check-bindings: no generated bindings found" >&2; exit 1; }
if [ "${1-}" = --update ]; then
    cp "$out" spank-sys/pregenerated/bindings.rs
    echo "check-bindings: snapshot updated from $out"
    exit 0
fi
if diff -u spank-sys/pregenerated/bindings.rs "$out"; then
    echo "check-bindings: the committed snapshot matches <slurm/spank.h>"
else
    echo "check-bindings: spank-sys/pregenerated/bindings.rs differs from the installed headers" >&2
    exit 1
fi
