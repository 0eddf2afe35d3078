#!/usr/bin/env bash
# The enroot test double's "hang" knob in front of a real enroot, for the fault-injection
# suite (tests/integration/root_faults.bats) when it runs with ENROOT=/path:
#
#   tests/harness/fault-enroot.sh on     /usr/local/bin/enroot becomes a wrapper that waits
#                                        until killed when its subcommand is listed in
#                                        ENROOT_DOUBLE_HANG (comma-separated), and is the
#                                        real enroot otherwise
#   tests/harness/fault-enroot.sh off    /usr/local/bin/enroot links to the real enroot again
#
# The waiting wrapper is one bash process with no child (it reads a FIFO nobody writes), so
# killing it, or its process group, leaves nothing behind, as with the double. With the
# double installed both are no-ops: the double has the knob itself.
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/lib.sh"
need_root

TARGET=/usr/local/bin/enroot
KIND_FILE="$PXT_STATE/enroot-kind"
OWN_LINKS="$PXT_STATE/enroot-links"
DIR="$PXT_STATE/fault-enroot"

read -r kind real _ < "$KIND_FILE" 2>/dev/null || die "no $KIND_FILE: run tests/harness/up.sh first"
[ "$kind" = real ] || exit 0
[ -x "$real" ] || die "the real enroot $real recorded in $KIND_FILE is gone"
# only a link this harness made may be replaced
[ -L "$TARGET" ] && grep -qxF "$TARGET" "$OWN_LINKS" 2>/dev/null \
    || die "$TARGET is not a link made by tests/harness/enroot.sh"

case "${1-}" in
    on)
        install -d -m 0755 "$DIR"
        [ -p "$DIR/hang.fifo" ] || mkfifo -m 0666 "$DIR/hang.fifo"
        chmod 0666 "$DIR/hang.fifo"
        tmp=$(mktemp "$DIR/.enroot.XXXXXX")
        cat > "$tmp" <<EOF
#!/bin/bash
# Written by tests/harness/fault-enroot.sh: the real enroot, except that a subcommand
# named in ENROOT_DOUBLE_HANG waits until it is killed.
if [ -n "\${1-}" ] && [[ ",\${ENROOT_DOUBLE_HANG-}," == *",\$1,"* ]]; then
    exec 3<>"$DIR/hang.fifo"
    while :; do read -r -u 3 _; done
fi
exec $(printf '%q' "$real") "\$@"
EOF
        chmod 0755 "$tmp"
        mv -f "$tmp" "$DIR/enroot"
        ln -sfn "$DIR/enroot" "$TARGET"
        log "$TARGET: the hang knob in front of $real"
        ;;
    off)
        ln -sfn "$real" "$TARGET"
        rm -rf "$DIR"
        ;;
    *) die "usage: $0 on|off" ;;
esac
