#!/usr/bin/env bash
# Bring the whole test environment up (or back up) in order. Every step is
# idempotent and cheap when its work is already done, so this is the one
# command to run before any integration test:
#
#   tests/harness/up.sh [KEY=VALUE ...]      plugin arguments go to plugstack.sh
#   ENROOT=/usr/local/bin/enroot tests/harness/up.sh   use a real enroot instead of the double
#
#   1. packages   Debian packages, public registry names pinned to 127.0.0.1
#   2. cluster    munged, slurmctld, slurmd, test user
#   3. enroot     the enroot test double (or ENROOT) in /usr/local/bin + enroot.conf
#   4. images     busybox.sqsh, and the loopback registry with its images (registry.sh)
#   5. plugin     make install prefix=$PXT_PREFIX (from the repository root)
#   6. plugstack  plugstack.conf.d/pyxis.conf -> the installed pyxis.conf, slurmd restarted if needed
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/lib.sh"
need_root

t0=$SECONDS
"$PXT_HARNESS/packages.sh"
export PXT_PACKAGES_DONE=1
"$PXT_HARNESS/cluster.sh" up
"$PXT_HARNESS/enroot.sh"
"$PXT_HARNESS/images.sh"
"$PXT_HARNESS/registry.sh"

# PXT_PREBUILT=1 (tests/harness/release.sh): the plugin was built elsewhere into
# $CARGO_TARGET_DIR/release and CARGO=true makes `make install` only install it
if [ -z "${PXT_PREBUILT:-}" ]; then ensure_cargo; fi
log "plugin: make install prefix=$PXT_PREFIX"
(cd "$PXT_REPO" && make install prefix="$PXT_PREFIX") >"$PXT_LOG/plugin-build.log" 2>&1 \
    || { tail -40 "$PXT_LOG/plugin-build.log" >&2; die "building/installing the plugin failed (see $PXT_LOG/plugin-build.log)"; }
ok "plugin installed: $PXT_PREFIX/lib/slurm/spank_pyxis.so, $PXT_PREFIX/share/pyxis/pyxis.conf"

"$PXT_HARNESS/plugstack.sh" "$@"
ok "test environment up in $((SECONDS - t0)) s (enroot: $(cat "$PXT_STATE/enroot-kind"))"
