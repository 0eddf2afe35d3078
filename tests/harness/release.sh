#!/usr/bin/env bash
# The integration suites against another Debian Slurm release, on this machine: a Debian
# root filesystem (debootstrap, cached under $PXT_RELEASE_CACHE/RELEASE and reused) started in
# its own mount, UTS, IPC, PID and network namespaces (loopback only), so its munged,
# slurmctld, slurmd and registry use their own /run, /tmp, /dev/shm, hostname and ports and
# never meet the host cluster's. Inside, the ordinary harness runs unchanged
# (tests/run-all.sh -> up.sh -> cluster.sh ...), with the plugin and the enroot test double
# built here on the host (PXT_PREBUILT=1): the plugin against the release's own
# <slurm/spank.h> (SLURM_INCLUDE_DIR=ROOT/usr/include), so plugin_version is its
# SLURM_VERSION_NUMBER. The host's glibc is older than the release's, so binaries built
# here run there.
#
#   tests/harness/release.sh RELEASE [SUITE.bats ...]   RELEASE: trixie (Slurm 24.11), sid (26.05)
#   tests/harness/release.sh RELEASE --prepare          root filesystem, packages and build only
#
# Ends with the inner run's "N passed, N failed, N skipped"; its logs stay in
# ROOT/var/log/pyxis-rs-test/run-all/. Every daemon lives in the PID namespace, which dies
# with its first process: the inner run stops them by pidfile (cluster.sh down), and
# nothing outlives the namespace. Environment: PXT_RELEASE_CACHE (/var/cache/pyxis-rs),
# PXT_RELEASE_MIRROR (the host's Debian mirror), PXT_RELEASE_TIMEOUT (1200 s).
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/lib.sh"
need_root

REL="${1-}"
case "$REL" in trixie | sid | forky) ;; *) die "usage: $0 trixie|sid [SUITE.bats ...] | RELEASE --prepare" ;; esac
shift
: "${PXT_RELEASE_CACHE:=/var/cache/pyxis-rs}"
: "${PXT_RELEASE_TIMEOUT:=1200}"
ROOT="$PXT_RELEASE_CACHE/$REL"
SRC=/opt/pyxis-rs        # the repository copy inside the root filesystem
# what a Debian host has beside packages.sh's list and the suites use (python3: docs.bats,
# errors.bats, root_doctor.bats); a minbase debootstrap has none of it
BASE_PKGS="python3"
LOGF="$PXT_LOG/release-$REL.log"

mirror() {
    if [ -n "${PXT_RELEASE_MIRROR:-}" ]; then echo "$PXT_RELEASE_MIRROR"; return; fi
    local m
    m=$(sed -n 's/^URIs:[[:space:]]*\(http[^[:space:]]*\/debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
    [ -n "$m" ] || m=$(awk '$1=="deb" && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
    echo "${m:-http://deb.debian.org/debian}"
}

# in_root CMD...: run CMD chrooted in ROOT with proc and dev, in a private mount namespace
# and the host's network (only for installing packages)
in_root() {
    unshare --mount --fork -- bash -c '
        set -e; r=$1; shift
        mount --make-rprivate /
        mount -t proc proc "$r/proc"
        mount --rbind /dev "$r/dev"
        exec chroot "$r" env -i PATH="$PXT_DAEMON_PATH" LANG=C.UTF-8 HOME=/root "$@"' _ "$ROOT" "$@"
}

ensure_rootfs() {
    if [ ! -x "$ROOT/bin/bash" ]; then
        apt_ensure debootstrap
        rm -rf "$ROOT.tmp"
        install -d -m 0755 "$PXT_RELEASE_CACHE"
        log "debootstrap $REL from $(mirror) into $ROOT (once; cached)"
        debootstrap --variant=minbase --include=ca-certificates "$REL" "$ROOT.tmp" "$(mirror)" >>"$LOGF" 2>&1 \
            || { tail -20 "$LOGF" >&2; die "debootstrap $REL failed (see $LOGF)"; }
        mv "$ROOT.tmp" "$ROOT"
    fi
    # a frozen mirror's Release files of testing/unstable expire
    echo 'Acquire::Check-Valid-Until "false";' > "$ROOT/etc/apt/apt.conf.d/99pyxis-rs"
    cp -f /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
}

apt_in_root_update() { in_root apt-get update -q >>"$LOGF" 2>&1; }

sync_src() {
    install -d -m 0755 "$ROOT$SRC"
    rsync -a --delete --exclude /target --exclude /.git --exclude /debian "$PXT_REPO/" "$ROOT$SRC/"
}

# the Debian packages of the harness, installed inside by its own packages.sh (stamped)
provision() {
    local want; want=$( (echo "$BASE_PKGS"; cat "$PXT_HARNESS/packages.sh") | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$ROOT/.pyxis-rs-packages" 2>/dev/null || true)" = "$want" ]; then return 0; fi
    log "$REL: installing the harness packages ($BASE_PKGS, tests/harness/packages.sh inside)"
    # shellcheck disable=SC2086  # a word list
    in_root sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" </dev/null' _ $BASE_PKGS >>"$LOGF" 2>&1 \
        || { apt_in_root_update && in_root sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" </dev/null' _ $BASE_PKGS >>"$LOGF" 2>&1; } \
        || { tail -20 "$LOGF" >&2; die "installing $BASE_PKGS inside $REL failed (see $LOGF)"; }
    in_root bash "$SRC/tests/harness/packages.sh" >>"$LOGF" 2>&1 \
        || { tail -20 "$LOGF" >&2; die "packages inside $REL failed (see $LOGF)"; }
    echo "$want" > "$ROOT/.pyxis-rs-packages"
}

build() {
    ensure_cargo
    local tgt="$PXT_REPO/target/slurm-$REL" inc="$PXT_REPO/target/slurm-$REL/include"
    [ -r "$ROOT/usr/include/slurm/spank.h" ] || die "$ROOT/usr/include/slurm/spank.h missing (libslurm-dev inside $REL)"
    # only <slurm/*.h> of the release: its own libc headers would mix with the host's
    install -d -m 0755 "$inc"
    ln -sfn "$ROOT/usr/include/slurm" "$inc/slurm"
    log "$REL: building the plugin against $ROOT/usr/include/slurm (Slurm $(SLURM_INCLUDE_DIR=$inc "$PXT_REPO/tools/slurm-release.sh"))"
    # what `make build` builds (the plugin and the tools installed beside it)
    (cd "$PXT_REPO" && SLURM_INCLUDE_DIR="$inc" CARGO_TARGET_DIR="$tgt" make build) >>"$LOGF" 2>&1 \
        || { tail -30 "$LOGF" >&2; die "building the plugin for $REL failed (see $LOGF)"; }
    # the drift check of this release's committed snapshot (tools/check-bindings.sh does the
    # host's): the bindings just generated from its headers must be the snapshot
    local ver gen
    ver=$(SLURM_INCLUDE_DIR="$inc" "$PXT_REPO/tools/slurm-release.sh")
    gen=$(ls -t "$tgt"/release/build/spank-sys-*/out/bindings.rs 2>/dev/null | head -1)
    [ -n "$gen" ] || die "no generated bindings under $tgt"
    diff -u "$PXT_REPO/spank-sys/pregenerated/bindings-$ver.rs" "$gen" >>"$LOGF" 2>&1 \
        || die "spank-sys/pregenerated/bindings-$ver.rs differs from Slurm $ver's headers in $REL (diff in $LOGF; refresh: cp $gen spank-sys/pregenerated/bindings-$ver.rs)"
    ok "$REL: plugin built for Slurm $ver, bindings match spank-sys/pregenerated/bindings-$ver.rs"
    (cd "$PXT_REPO" && cargo build --release --locked -p enroot-double) >>"$LOGF" 2>&1 \
        || { tail -30 "$LOGF" >&2; die "building the enroot test double failed (see $LOGF)"; }
    install -d -m 0755 "$ROOT$SRC/target/release"
    # every file `make install` may take from target/release
    find "$ROOT$SRC/target/release" -mindepth 1 -maxdepth 1 -type f -delete
    find "$tgt/release" -mindepth 1 -maxdepth 1 -type f -perm -u+x -exec install -m 0755 -t "$ROOT$SRC/target/release" {} +
    install -m 0755 "${CARGO_TARGET_DIR:-$PXT_REPO/target}/release/enroot" "$ROOT$SRC/target/release/enroot"
}

# the namespaced node: runs as PID 1 of its PID namespace (unshare --fork), host tools
# until pivot_root, then only the release's own binaries
inside() {
    local r="$1"; shift
    mount --make-rprivate /
    mount --bind "$r" "$r"
    mount -t proc proc "$r/proc"
    mount -t sysfs sysfs "$r/sys"            # this network namespace's view
    mount -t tmpfs -o mode=0755 tmpfs "$r/run"
    mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
    # a node-local /dev with only the devices the harness and enroot use
    mount -t tmpfs -o mode=0755,nosuid tmpfs "$r/dev"
    local d
    for d in null zero full random urandom tty fuse; do
        [ -e "/dev/$d" ] || continue
        touch "$r/dev/$d"; mount --bind "/dev/$d" "$r/dev/$d"
    done
    install -d -m 0755 "$r/dev/pts"; install -d -m 1777 "$r/dev/shm" "$r/dev/mqueue"
    mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$r/dev/pts"
    ln -s pts/ptmx "$r/dev/ptmx"; ln -s /proc/self/fd "$r/dev/fd"
    mount -t tmpfs -o mode=1777 tmpfs "$r/dev/shm"
    hostname "pyxis-$REL"
    ip link set lo up
    # Slurm >= 23.11 resolves its listening address with getaddrinfo(AI_ADDRCONFIG), which
    # answers nothing when loopback is the only interface ("Unable to resolve (null)"): a
    # veth pair with both ends in this namespace gives it a non-loopback address that
    # leads nowhere
    ip link add pxt-veth0 type veth peer name pxt-veth1
    ip addr add 10.251.0.1/24 dev pxt-veth0
    ip link set pxt-veth0 up; ip link set pxt-veth1 up
    cd "$r"
    install -d -m 0700 .pxt-oldroot
    pivot_root . .pxt-oldroot
    # pivot_root leaves us in the new root; user namespaces (enroot) refuse to start in a
    # chroot, which is why this is a pivot_root and not a chroot
    exec /usr/bin/env -i PATH="$PXT_DAEMON_PATH" LANG=C.UTF-8 HOME=/root \
        PXT_PREBUILT=1 CARGO=true CARGO_TARGET_DIR="$SRC/target" PXT_SKIP_STATIC=1 PXT_SKIP_FUZZ=1 PXT_PROCTRACK=linuxproc PXT_CGROUP_PLUGIN=disabled \
        ${ENROOT:+ENROOT="$ENROOT"} ${PXT_CMD_TIMEOUT:+PXT_CMD_TIMEOUT="$PXT_CMD_TIMEOUT"} \
        /bin/bash -c 'umount -l /.pxt-oldroot && rmdir /.pxt-oldroot
            rc=0; bash '"$SRC"'/tests/run-all.sh "$@" || rc=$?
            bash '"$SRC"'/tests/harness/registry.sh --stop >/dev/null 2>&1 || true
            bash '"$SRC"'/tests/harness/cluster.sh down >/dev/null 2>&1 || true
            exit $rc' run-all "$@"
}

if [ "$REL" != "" ] && [ "${1-}" = --inside ]; then shift; inside "$@"; exit $?; fi

: > "$LOGF"
ensure_rootfs
sync_src
provision
build
if [ "${1-}" = --prepare ]; then ok "$REL prepared in $ROOT"; exit 0; fi
log "$REL: running the suites in namespaces (log in $ROOT$PXT_LOG/run-all/)"
rc=0
timeout -k 30 "$PXT_RELEASE_TIMEOUT" unshare --mount --uts --ipc --pid --net --fork --kill-child -- \
    bash "$PXT_HARNESS/release.sh" "$REL" --inside "$ROOT" "$@" || rc=$?
[ "$rc" -ne 124 ] || warn "$REL: the run timed out after $PXT_RELEASE_TIMEOUT s"
exit "$rc"
