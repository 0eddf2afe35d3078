#!/usr/bin/env bash
# Drift check of the committed spank-sys snapshots: regenerates the bindings from the
# installed <slurm/spank.h> (or $SLURM_INCLUDE_DIR) and compares them with
# spank-sys/pregenerated/bindings-<major.minor>.rs of that Slurm release
# (tools/slurm-release.sh). A difference means the headers of that release changed:
# refresh its snapshot with `tools/check-bindings.sh --update` (docs/releases.md lists what
# differs between releases). Other header trees: SLURM_INCLUDE_DIR=ROOT/usr/include and
# CARGO_TARGET_DIR (tests/harness/release.sh builds there).
set -euo pipefail
cd "$(dirname "$0")/.."
rel=$(tools/slurm-release.sh)
snap=spank-sys/pregenerated/bindings-$rel.rs
tgt=${CARGO_TARGET_DIR:-target}
cargo build --quiet --locked -p spank-sys
# the newest build output of spank-sys
out=$(ls -t "$tgt"/debug/build/spank-sys-*/out/bindings.rs 2>/dev/null | head -1)
[ -n "$out" ] || { echo "check-bindings: no generated bindings found" >&2; exit 1; }
if [ "${1-}" = --update ]; then
    cp "$out" "$snap"
    echo "check-bindings: $snap updated from $out"
    exit 0
fi
[ -f "$snap" ] || { echo "check-bindings: no snapshot $snap for Slurm $rel (add it with --update)" >&2; exit 1; }
if diff -u "$snap" "$out"; then
    echo "check-bindings: $snap matches <slurm/spank.h> of Slurm $rel"
else
    echo "check-bindings: $snap differs from the installed headers (Slurm $rel)" >&2
    exit 1
fi
