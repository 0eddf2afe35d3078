#!/usr/bin/env bash
# Build the test images without any network: a tiny BusyBox root filesystem
# made from Debian's busybox-static, packed as squashfs the way enroot packs
# images.
#
#   $PXT_IMAGES/busybox.sqsh   /etc/os-release: PRETTY_NAME="pyxis-rs test BusyBox <version>"
#
# Idempotent: the image is rebuilt only when missing or when its recipe
# (RECIPE_VERSION, the busybox binary) changed. --force rebuilds.
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/lib.sh"
need_root

RECIPE_VERSION=1          # bump when the rootfs layout below changes
FORCE=
case "${1-}" in --force) FORCE=1 ;; "") ;; *) die "usage: $0 [--force]" ;; esac

if ! command -v mksquashfs >/dev/null || [ ! -x /bin/busybox ]; then "$PXT_HARNESS/packages.sh" >/dev/null; fi
BUILD="$PXT_STATE/build"
OUT="$PXT_IMAGES/busybox.sqsh"
STAMP="$PXT_IMAGES/.busybox.recipe"
# the test user reads the images (enroot create/start run as the job user)
install -d -m 0755 "$PXT_STATE" "$PXT_IMAGES" "$BUILD"

# first line of busybox's banner, "BusyBox v1.35.0 (Debian 1:1.35.0-4+b3) multi-call binary."
# (no pipe into head: busybox would die of SIGPIPE, which pipefail turns into a failure)
bb_banner=$(/bin/busybox 2>&1 || true)
bb_version=$(awk 'NR==1{print $2}' <<< "$bb_banner")   # e.g. v1.35.0
recipe="$RECIPE_VERSION $(sha256sum < /bin/busybox | cut -d' ' -f1)"
if [ -z "$FORCE" ] && [ -s "$OUT" ] && [ "$(cat "$STAMP" 2>/dev/null || true)" = "$recipe" ]; then
    chmod 0644 "$OUT"
    ok "busybox image up to date: $OUT"
    exit 0
fi

R="$BUILD/busybox-rootfs"
log "busybox: building rootfs in $R (busybox $bb_version)"
rm -rf "$R"
install -d "$R"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,root,home,run,var/tmp,mnt}
chmod 1777 "$R/tmp" "$R/var/tmp"
install -m 0755 /bin/busybox "$R/bin/busybox"
# one symlink per applet at its canonical place (/bin/sh, /usr/bin/id, ...)
for a in $(/bin/busybox --list-full); do
    [ "$a" = bin/busybox ] && continue
    install -d "$R/$(dirname "$a")"
    [ -e "$R/$a" ] || ln -s /bin/busybox "$R/$a"
done
cat > "$R/etc/os-release" <<EOF
NAME="pyxis-rs test BusyBox"
VERSION="${bb_version}"
ID=pyxis-rs-test-busybox
VERSION_ID="${bb_version#v}"
PRETTY_NAME="pyxis-rs test BusyBox ${bb_version}"
EOF
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$R/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$R/etc/group"
# enroot bind-mounts the host's files over these
: > "$R/etc/hosts"
: > "$R/etc/resolv.conf"
[ -x "$R/bin/sh" ] || die "busybox rootfs has no /bin/sh"

# mksquashfs like enroot does (lzo, all files owned by root); no device nodes are in it,
# so an unprivileged unsquashfs (enroot create as the job user) can unpack it
tmp="$OUT.tmp.$$"
mksquashfs "$R" "$tmp" -noappend -all-root -comp lzo -no-progress -quiet >"$PXT_LOG/mksquashfs.log" 2>&1 \
    || { rm -f "$tmp"; tail -5 "$PXT_LOG/mksquashfs.log" >&2; die "mksquashfs failed"; }
chmod 0644 "$tmp"
mv -f "$tmp" "$OUT"
echo "$recipe" > "$STAMP"
ok "busybox image: $OUT ($(du -h "$OUT" | cut -f1), PRETTY_NAME=\"pyxis-rs test BusyBox ${bb_version}\")"
