#!/usr/bin/env bash
# Put an `enroot` where slurmstepd finds it (/usr/local/bin, on the PATH slurmd
# is started with) and configure it site-style for the test user.
#
#   tests/harness/enroot.sh                          build the project's enroot test double
#                                                    (tests/enroot-double) and install a copy
#   ENROOT=/usr/local/bin/enroot tests/harness/enroot.sh
#                                                    use that real enroot instead (linked into
#                                                    /usr/local/bin unless it is already there)
#
# enroot is not available from any package registry this project may use, so
# CI runs against the double; a developer with a real enroot installed by hand
# can run every integration suite against it with ENROOT=... .
# Writes $PXT_STATE/enroot-kind ("double" or "real <path> <version>") for the tests and reports.
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/lib.sh"
need_root

TARGET=/usr/local/bin/enroot
OWN_SHA="$PXT_STATE/enroot-double.sha256"   # hash of the double we installed at $TARGET
OWN_LINKS="$PXT_STATE/enroot-links"         # symlinks we made into /usr/local/bin for a real enroot
KIND_FILE="$PXT_STATE/enroot-kind"
CONF_MARK='# Written by tests/harness/enroot.sh'

# ours PATH: true if PATH is something this script put there (so it may be replaced)
ours() {
    local p="$1"
    [ -e "$p" ] || [ -L "$p" ] || return 0
    if [ -L "$p" ]; then grep -qxF "$p" "$OWN_LINKS" 2>/dev/null; return; fi
    [ -s "$OWN_SHA" ] && [ "$(sha256sum < "$p" | cut -d' ' -f1)" = "$(cat "$OWN_SHA")" ]
}

remove_own_links() {
    local l
    [ -s "$OWN_LINKS" ] || return 0
    while read -r l; do
        if [ -L "$l" ]; then rm -f "$l"; fi
    done < "$OWN_LINKS"
    rm -f "$OWN_LINKS"
}

install_double() {
    # PXT_PREBUILT=1 (tests/harness/release.sh): built on the host, copied in
    if [ -z "${PXT_PREBUILT:-}" ]; then
        ensure_cargo
        log "building the enroot test double (cargo build --release -p enroot-double)"
        (cd "$PXT_REPO" && cargo build --release --locked -p enroot-double) >"$PXT_LOG/enroot-double-build.log" 2>&1 \
            || { tail -30 "$PXT_LOG/enroot-double-build.log" >&2; die "building tests/enroot-double failed (see $PXT_LOG/enroot-double-build.log)"; }
    fi
    local bin="${CARGO_TARGET_DIR:-$PXT_REPO/target}/release/enroot"
    [ -x "$bin" ] || die "the build produced no $bin"
    if ! ours "$TARGET"; then
        die "$TARGET exists and was not installed by this harness (a real enroot?): run with ENROOT=$TARGET to use it, or move it away"
    fi
    remove_own_links
    if ! cmp -s "$bin" "$TARGET"; then
        rm -f "$TARGET"
        install -m 0755 "$bin" "$TARGET"
    fi
    sha256sum < "$TARGET" | cut -d' ' -f1 > "$OWN_SHA"
    echo double > "$KIND_FILE"
    ok "enroot test double installed as $TARGET (from $bin)"
}

use_real() {
    local real ver bindir f t
    real=$(readlink -f "$ENROOT" 2>/dev/null || true)
    if [ -z "$real" ] || [ ! -x "$real" ]; then die "ENROOT=$ENROOT is not an executable"; fi
    ver=$("$real" version 2>/dev/null) || die "$ENROOT version failed: is it a real enroot?"
    case "$ver" in *double*) warn "ENROOT=$ENROOT reports version '$ver': that is the test double, not a real enroot" ;; esac
    if [ "$real" != "$(readlink -f "$TARGET" 2>/dev/null || true)" ]; then
        ours "$TARGET" || die "$TARGET exists and is neither ENROOT=$ENROOT nor installed by this harness"
        rm -f "$TARGET"
        remove_own_links
        # enroot runs its helpers (enroot-mount, enroot-switchroot, ...) through PATH
        bindir=$(dirname "$real")
        for f in "$real" "$bindir"/enroot-*; do
            if [ ! -f "$f" ] || [ ! -x "$f" ]; then continue; fi
            t=/usr/local/bin/$(basename "$f")
            [ "$f" = "$real" ] && t=$TARGET
            if [ -e "$t" ] && ! ours "$t"; then die "$t exists and is not ours; remove it first"; fi
            ln -sfn "$f" "$t"
            echo "$t" >> "$OWN_LINKS"
        done
        log "linked $TARGET -> $real"
    else
        log "using the enroot already at $TARGET ($real)"
    fi
    rm -f "$OWN_SHA"
    echo "real $real $ver" > "$KIND_FILE"
    ok "real enroot $ver in use ($real)"
}

# write_conf FILE: the site configuration (same for the real enroot and the double)
write_conf() {
    local conf="$1" tmp
    install -d -m 0755 "$(dirname "$conf")"
    if [ -e "$conf" ] && ! grep -qF "$CONF_MARK" "$conf" && [ ! -e "$conf.dist" ]; then
        cp -p "$conf" "$conf.dist"   # keep a hand-written config once
    fi
    tmp=$(mktemp)
    cat > "$tmp" <<EOF
$CONF_MARK (pyxis-rs test site configuration; re-run it instead of editing).
# Per-user paths as on a typical pyxis site; \$(id -u) is expanded by enroot.
ENROOT_RUNTIME_PATH        /run/enroot/user-\$(id -u)
ENROOT_CACHE_PATH          /tmp/enroot-cache/user-\$(id -u)
ENROOT_DATA_PATH           /tmp/enroot-data/user-\$(id -u)
ENROOT_TEMP_PATH           /tmp
ENROOT_SQUASH_OPTIONS      -noI -noD -noF -noX -no-duplicates
# the pyxis tests decide per option (--[no-]container-mount-home)
ENROOT_MOUNT_HOME          no
ENROOT_ROOTFS_WRITABLE     yes
# only a loopback registry is ever used; public names are pinned to 127.0.0.1 in /etc/hosts
ENROOT_ALLOW_HTTP          yes
EOF
    chmod 0644 "$tmp"
    if ! cmp -s "$tmp" "$conf"; then mv -f "$tmp" "$conf"; log "wrote $conf"; else rm -f "$tmp"; fi
}

# install_pmi_hook SYSCONF_DIR: a site hook like enroot's optional extra hook
# 50-slurm-pmi.sh, so that MPI steps see the per-task variables pass through the container
# environment as on a real site (mpi.bats checks that every task keeps its own PMI_RANK,
# pyxis weak spot W12). A hook of that name not written here (a real enroot's own) is kept.
install_pmi_hook() {
    local hook="$1/hooks.d/50-slurm-pmi.sh" tmp
    if [ -e "$hook" ] && ! grep -qF "$CONF_MARK" "$hook"; then
        log "keeping $hook (not written by this harness)"
        return 0
    fi
    install -d -m 0755 "$1/hooks.d"
    tmp=$(mktemp)
    cat > "$tmp" <<'EOF'
#!/bin/bash
# Written by tests/harness/enroot.sh (pyxis-rs test site hook; re-run it instead of editing).
# For steps launched with a Slurm MPI plugin, copy the SLURM_*, PMIX_* and PMI_* variables
# of the process starting the container into the container environment.
set -eu
case "${SLURM_MPI_TYPE:-none}" in none) exit 0 ;; esac
for name in $(compgen -e); do
    case "$name" in SLURM_*|PMIX_*|PMI_*) ;; *) continue ;; esac
    value=${!name}
    # the environment file holds one NAME=VALUE per line
    case "$value" in *$'\n'*) continue ;; esac
    printf '%s=%s\n' "$name" "$value" >> "${ENROOT_ENVIRON}"
done
EOF
    chmod 0755 "$tmp"
    if ! cmp -s "$tmp" "$hook"; then mv -f "$tmp" "$hook"; log "wrote $hook"; else rm -f "$tmp"; fi
}

"$PXT_HARNESS/packages.sh" >/dev/null
id "$PXT_USER" >/dev/null 2>&1 || die "user $PXT_USER missing: run tests/harness/cluster.sh up first"

if [ -n "${ENROOT:-}" ]; then use_real; else install_double; fi

write_conf /etc/enroot/enroot.conf
install_pmi_hook /etc/enroot
case "$(cat "$KIND_FILE")" in
    real*)
        # a real enroot built with another sysconfdir reads its own file: configure that one too
        other=$("$TARGET" info 2>/dev/null | sed -n 's/^Config file: //p' || true)
        if [ -n "$other" ] && [ "$other" != /etc/enroot/enroot.conf ]; then
            write_conf "$other"
            install_pmi_hook "$(dirname "$other")"
        fi ;;
esac

# per-user directories' parents: every user creates its own user-<uid> inside
install -d -m 1777 /run/enroot /tmp/enroot-cache /tmp/enroot-data
# squashfuse as a user needs /dev/fuse open to all (udev does this on a normal host; none here)
if [ -c /dev/fuse ]; then
    chmod 0666 /dev/fuse
else
    warn "/dev/fuse missing: starting a container straight from a squashfs file (squashfuse) will not work"
fi
# enroot's device hook bind-mounts /dev/mqueue from the host without 'nofail'
if ! mountpoint -q /dev/mqueue; then
    install -d -m 1777 /dev/mqueue
    mount -t mqueue -o nosuid,nodev,noexec mqueue /dev/mqueue || die "cannot mount mqueue on /dev/mqueue"
    log "mounted mqueue on /dev/mqueue"
fi
# ... and /dev/log (no syslog daemon here): a bound, orphaned datagram socket is enough
if [ ! -e /dev/log ] && [ "$(cut -d' ' -f1 "$KIND_FILE")" = real ]; then
    if command -v python3 >/dev/null; then
        python3 -c 'import socket,os; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind("/dev/log"); os.chmod("/dev/log", 0o666)' \
            || warn "cannot create a /dev/log placeholder"
    else
        warn "no /dev/log and no python3 to create a placeholder: enroot's device hook may fail"
    fi
fi

# the kernel features every enroot start needs, checked as the test user
as_user unshare --user --map-root-user --mount true \
    || die "user + mount namespaces are not usable by $PXT_USER (check /proc/sys/user/max_user_namespaces)"
as_user enroot list >/dev/null || die "'enroot list' fails for $PXT_USER"
ok "enroot ready for $PXT_USER: $(cat "$KIND_FILE")"
