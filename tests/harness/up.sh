#!/usr/bin/env bash
# Bring the whole test environment up (or back up) in order. Every step is
# idempotent and cheap when its work is already done, so this is the one
# command to run before any integration test:
#
#   tests/harness/up.sh [KEY=VALUE ...]      plugin arguments go to plugstack.sh
#   ENROOT=/usr/local/bin/enroot tests/harness/up.sh   use a real enroot instead of the double
#   PXT_INSTALL=deb tests/harness/up.sh     install the deb tests/harness/packaging.sh built
#                                           ($PXT_STATE/packages/deb-path, or PXT_DEB=FILE)
#                                           instead of `make install` (run-all's default)
#
#   1. packages   Debian packages, public registry names pinned to 127.0.0.1
#   2. cluster    munged, slurmctld, slurmd, test user
#   3. enroot     the enroot test double (or ENROOT) in /usr/local/bin + enroot.conf
#   4. images     busybox.sqsh, and the loopback registry with its images (registry.sh)
#   5. plugin     make install prefix=$PXT_PREFIX (from the repository root), or with
#                 PXT_INSTALL=deb: dpkg -i of the built package (make's copies removed first)
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

case "${PXT_INSTALL:-make}" in
    make)
        : > "$PXT_LOG/plugin-build.log"
        # a package installed by an earlier PXT_INSTALL=deb run would be loaded instead
        if dpkg-query -W -f='${Status}' pyxis-rs 2>/dev/null | grep -q 'ok installed'; then
            log "plugin: removing the pyxis-rs package of an earlier run"
            dpkg -r pyxis-rs >>"$PXT_LOG/plugin-build.log" 2>&1 || die "dpkg -r pyxis-rs failed (see $PXT_LOG/plugin-build.log)"
        fi
        # PXT_PREBUILT=1 (tests/harness/release.sh): the plugin was built elsewhere into
        # $CARGO_TARGET_DIR/release and CARGO=true makes `make install` only install it
        if [ -z "${PXT_PREBUILT:-}" ]; then ensure_cargo; fi
        log "plugin: make install prefix=$PXT_PREFIX"
        (cd "$PXT_REPO" && make install prefix="$PXT_PREFIX") >>"$PXT_LOG/plugin-build.log" 2>&1 \
            || { tail -40 "$PXT_LOG/plugin-build.log" >&2; die "building/installing the plugin failed (see $PXT_LOG/plugin-build.log)"; }
        echo "$PXT_PREFIX/share/pyxis/pyxis.conf" > "$PXT_STATE/pyxis-conf"
        ok "plugin installed: $PXT_PREFIX/lib/slurm/spank_pyxis.so, $PXT_PREFIX/share/pyxis/pyxis.conf, $PXT_PREFIX/bin/pyxis-doctor" ;;
    deb)
        deb=${PXT_DEB:-$(cat "$PXT_STATE/packages/deb-path" 2>/dev/null || true)}
        [ -n "$deb" ] && [ -f "$deb" ] || die "PXT_INSTALL=deb: no package (run tests/harness/packaging.sh or set PXT_DEB)"
        # make install's copies would shadow the package's (PATH, plugstack symlink)
        rm -f "$PXT_PREFIX/lib/slurm/spank_pyxis.so" "$PXT_PREFIX/share/pyxis/pyxis.conf" "$PXT_PREFIX/bin/pyxis-doctor"
        # enroot on the test node is the double or a hand-built one, not a dpkg package
        log "plugin: dpkg -i $deb"
        dpkg -i --ignore-depends=enroot,enroot-hardened "$deb" >"$PXT_LOG/plugin-build.log" 2>&1 \
            || { tail -20 "$PXT_LOG/plugin-build.log" >&2; die "dpkg -i $deb failed (see $PXT_LOG/plugin-build.log)"; }
        # every later plugstack.sh (the root suites' with_config too) uses the package's
        echo /usr/share/pyxis/pyxis.conf > "$PXT_STATE/pyxis-conf"
        PXT_PYXIS_CONF=/usr/share/pyxis/pyxis.conf
        export PXT_PYXIS_CONF
        ok "plugin installed from the package $(dpkg-query -W -f='${Package} ${Version}' pyxis-rs): $(dpkg -L pyxis-rs | grep -E 'spank_pyxis.so$|pyxis.conf$|pyxis-doctor$' | tr '\n' ' ')" ;;
    *) die "PXT_INSTALL must be make or deb, not ${PXT_INSTALL}" ;;
esac

"$PXT_HARNESS/plugstack.sh" "$@"
ok "test environment up in $((SECONDS - t0)) s (enroot: $(cat "$PXT_STATE/enroot-kind"))"
