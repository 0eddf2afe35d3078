#!/usr/bin/env bash
# Build and check the packages the way an admin would (issue 8 item 5), reusing the
# repository's cargo target directory so the release build is done once per run:
#
#   tests/harness/packaging.sh
#
#   1. the deb: `debian -> packaging/debian`, `dpkg-buildpackage -b -us -uc -nc -d`
#      (-nc: no pre-clean, whose `rm -rf target` would force a rebuild from scratch;
#      -d: cargo/rustc come from rustup, not from dpkg); the .debs are moved to
#      $PXT_STATE/packages/ and the path of the main one written to
#      $PXT_STATE/packages/deb-path (up.sh PXT_INSTALL=deb installs it)
#   2. lintian on the .changes: no error (E:) allowed; warnings are printed
#   3. the rpm spec: rpmspec --parse, then rpmbuild -bb --build-in-place --nodeps (Debian's
#      rpm cannot see dpkg's cargo/slurm-devel, hence --nodeps), its rpm listed
#
# Leaves the repository as it found it (the generated debian/ files are removed).
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/lib.sh"
need_root
ensure_cargo

OUT="$PXT_STATE/packages"
LOG="$PXT_LOG/packaging"
install -d -m 0755 "$OUT" "$LOG"
rm -f "$OUT"/*.deb "$OUT"/*.changes "$OUT"/*.buildinfo "$OUT"/*.rpm "$OUT/deb-path"

cd "$PXT_REPO"
if [ -e debian ] && [ "$(readlink debian)" != packaging/debian ]; then
    die "$PXT_REPO/debian exists and is not the symlink to packaging/debian"
fi
made_link=
if [ ! -e debian ]; then ln -s packaging/debian debian; made_link=1; fi
cleanup() {
    (cd "$PXT_REPO/packaging/debian" && rm -rf pyxis-rs pyxis-rs-dbgsym .debhelper tmp files \
        ./*.substvars ./*.debhelper.log debhelper-build-stamp pyxis-rs.preinst)
    if [ -n "$made_link" ]; then rm -f "$PXT_REPO/debian"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- 1. deb
parent=$(dirname "$PXT_REPO")
src=$(dpkg-parsechangelog -l packaging/debian/changelog -S Source)
log "dpkg-buildpackage -b -us -uc -nc -d (log $LOG/dpkg-buildpackage.log)"
t=$SECONDS
if ! dpkg-buildpackage -b -us -uc -nc -d >"$LOG/dpkg-buildpackage.log" 2>&1; then
    tail -40 "$LOG/dpkg-buildpackage.log" >&2
    die "dpkg-buildpackage failed (see $LOG/dpkg-buildpackage.log)"
fi
# dpkg-buildpackage writes its results next to the source tree
for f in "$parent/${src}"_*.deb "$parent/${src}"-dbgsym_*.deb "$parent/${src}"_*.changes "$parent/${src}"_*.buildinfo; do
    if [ -e "$f" ]; then mv -f "$f" "$OUT/"; fi
done
deb=$(ls "$OUT/${src}"_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || die "dpkg-buildpackage produced no $src deb"
dpkg-deb -c "$deb" > "$LOG/deb-contents.txt"
for p in ./usr/lib/*/slurm/spank_pyxis.so ./usr/share/pyxis/pyxis.conf ./usr/bin/pyxis-doctor; do
    grep -q " ${p//\*/[^/]*}\$" "$LOG/deb-contents.txt" || die "$deb lacks $p (see $LOG/deb-contents.txt)"
done
printf '%s\n' "$deb" > "$OUT/deb-path"
ok "deb built in $((SECONDS - t)) s: $deb ($(dpkg-deb -f "$deb" Version))"

# ---------------------------------------------------------------- 2. lintian
changes=$(ls "$OUT/${src}"_*.changes | head -n 1)
lintian --tag-display-limit 0 "$changes" >"$LOG/lintian.txt" 2>&1 || true
if grep -q '^E: ' "$LOG/lintian.txt"; then
    grep '^E: ' "$LOG/lintian.txt" >&2
    die "lintian reports errors (see $LOG/lintian.txt)"
fi
ok "lintian: no errors ($(grep -c '^W: ' "$LOG/lintian.txt" || true) warnings, $LOG/lintian.txt)"

# ---------------------------------------------------------------- 3. rpm spec
spec=packaging/rpm/pyxis-rs.spec
rpmspec --define "_sourcedir $PXT_REPO" --parse "$spec" >"$LOG/rpmspec.txt" 2>&1 || { cat "$LOG/rpmspec.txt" >&2; die "rpmspec --parse $spec failed"; }
top=$(mktemp -d /tmp/pyxis-rs-rpm.XXXXXX)
t=$SECONDS
if ! rpmbuild -bb --build-in-place --nodeps --define "_topdir $top" --define "_sourcedir $PXT_REPO" "$spec" >"$LOG/rpmbuild.log" 2>&1; then
    tail -30 "$LOG/rpmbuild.log" >&2
    rm -rf "$top"
    die "rpmbuild failed (see $LOG/rpmbuild.log)"
fi
rpmfile=$(find "$top/RPMS" -name '*.rpm' | head -n 1)
[ -n "$rpmfile" ] || { rm -rf "$top"; die "rpmbuild produced no rpm"; }
rpm -qlp "$rpmfile" > "$LOG/rpm-contents.txt" 2>/dev/null
grep -q '/slurm/spank_pyxis.so$' "$LOG/rpm-contents.txt" && grep -q '/pyxis-doctor$' "$LOG/rpm-contents.txt" \
    || { rm -rf "$top"; die "the rpm lacks the plugin or pyxis-doctor (see $LOG/rpm-contents.txt)"; }
mv -f "$rpmfile" "$OUT/"
rm -rf "$top"
ok "rpm built in $((SECONDS - t)) s: $OUT/$(basename "$rpmfile")"
