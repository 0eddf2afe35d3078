#!/usr/bin/env bash
# Push a new image to the loopback registry: pyxis/busybox plus one layer holding a
# marker file (and optionally a payload of random files), so every call makes a new
# manifest digest. Used by the image-cache suites and tests/bench.sh.
#
#   tests/harness/push-image.sh REPO:TAG MARKER [PAYLOAD_MB]
#     REPO:TAG    e.g. pyxis/cache:t1 (pushed to 127.0.0.1:5000)
#     MARKER      written to /marker in the image
#     PAYLOAD_MB  random files under /payload (default 0)
#
# Needs tests/harness/up.sh first (the registry and its OCI layout).
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/lib.sh"
need_root

[ $# -ge 2 ] || die "usage: $0 REPO:TAG MARKER [PAYLOAD_MB]"
REF=$1 MARKER=$2 MB=${3:-0}
OCI=$PXT_STATE/build/oci
[ -d "$OCI" ] || die "no OCI layout in $OCI: run tests/harness/up.sh first"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -a "$OCI" "$work/oci"
umoci unpack --rootless --image "$work/oci:busybox" "$work/bundle" >/dev/null
printf '%s\n' "$MARKER" > "$work/bundle/rootfs/marker"
if [ "$MB" -gt 0 ]; then
    install -d "$work/bundle/rootfs/payload"
    for i in $(seq 1 "$MB"); do
        head -c 1048576 /dev/urandom > "$work/bundle/rootfs/payload/f$i"
    done
fi
umoci repack --image "$work/oci:new" "$work/bundle" >/dev/null
skopeo --insecure-policy copy --quiet --format v2s2 --dest-tls-verify=false \
    "oci:$work/oci:new" "docker://127.0.0.1:5000/$REF" >>"$PXT_LOG/registry-push.log" 2>&1 \
    || die "push $REF failed (see $PXT_LOG/registry-push.log)"
