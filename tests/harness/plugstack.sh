#!/usr/bin/env bash
# Activate the installed plugin the way the pyxis README tells admins to:
# plugstack.conf includes plugstack.conf.d/*, and plugstack.conf.d/pyxis.conf is
# a symlink to the installed <datadir>/pyxis/pyxis.conf (or, when plugin
# arguments are given, a copy of its line with `key=value` arguments appended).
# slurmd is restarted when what it would load changed (it only reads the stack
# at start), then `srun --help` must list the plugin's options.
#
#   tests/harness/plugstack.sh [KEY=VALUE ...]   e.g. container_scope=job sbatch_support=0
#   tests/harness/plugstack.sh --none            no plugin (plain Slurm)
#   tests/harness/plugstack.sh --show
#
# PXT_PYXIS_CONF overrides the installed conf file (default $PXT_PREFIX/share/pyxis/pyxis.conf).
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/lib.sh"
need_root

# the conf file of the installed plugin (make install or the deb), as up.sh recorded it
: "${PXT_PYXIS_CONF:=$(cat "$PXT_STATE/pyxis-conf" 2>/dev/null || echo "$PXT_PREFIX/share/pyxis/pyxis.conf")}"
CONF="$SLURM_ETC/plugstack.conf"
CONFD="$SLURM_ETC/plugstack.conf.d"
STAMP="$PXT_STATE/slurmd-plugstack.stamp"

# stack_fingerprint: what slurmd would load now: the stack text and every plugin's bytes.
stack_fingerprint() {
    local f so
    {
        cat "$CONF"
        for f in "$CONFD"/*; do
            [ -e "$f" ] || continue
            printf '== %s\n' "$f"; cat "$f"
            so=$(awk '$1=="required"||$1=="optional"{print $2; exit}' "$f")
            if [ -n "$so" ] && [ -f "$so" ]; then sha256sum "$so"; fi
        done
    } | sha256sum | cut -d' ' -f1
}

write_main_conf() {
    install -d -m 0755 "$CONFD"
    local tmp; tmp=$(mktemp)
    printf '# Written by tests/harness/plugstack.sh: plugins are configured in plugstack.conf.d/\ninclude %s/*\n' "$CONFD" > "$tmp"
    if ! cmp -s "$tmp" "$CONF"; then install -m 0644 "$tmp" "$CONF"; fi
    rm -f "$tmp"
}

case "${1-}" in
    --show)
        printf '%s:\n' "$CONF"; cat "$CONF"
        for f in "$CONFD"/*; do [ -e "$f" ] && { printf '%s -> %s:\n' "$f" "$(readlink -f "$f")"; cat "$f"; }; done
        exit 0 ;;
    --none)
        write_main_conf
        rm -f "$CONFD/pyxis.conf" ;;
    -*)
        die "usage: $0 [KEY=VALUE ...] | --none | --show" ;;
    *)
        [ -f "$PXT_PYXIS_CONF" ] || die "no installed $PXT_PYXIS_CONF: run 'make install prefix=$PXT_PREFIX' first"
        so=$(awk '$1=="required"||$1=="optional"{print $2; exit}' "$PXT_PYXIS_CONF")
        if [ -z "$so" ] || [ ! -f "$so" ]; then die "$PXT_PYXIS_CONF names no existing plugin (${so:-nothing})"; fi
        # srun, sbatch and slurmstepd load the .so as the job user too
        chmod a+r "$so" "$PXT_PYXIS_CONF"
        d=$(dirname "$so")
        while [ "$d" != / ]; do
            [ "$(( 0$(stat -c %a "$d") & 1 ))" -ne 0 ] || die "directory $d is not searchable by other users"
            d=$(dirname "$d")
        done
        write_main_conf
        if [ $# -eq 0 ]; then
            # exactly what an admin does (pyxis README): a symlink to the shipped file
            ln -sfn "$PXT_PYXIS_CONF" "$CONFD/pyxis.conf"
        else
            for a in "$@"; do
                case "$a" in *[[:space:]#]*) die "plugin argument '$a' contains a blank or '#', which plugstack.conf cannot carry" ;; esac
            done
            rm -f "$CONFD/pyxis.conf"
            printf '%s %s\n' "$(grep -Ev '^[[:space:]]*(#|$)' "$PXT_PYXIS_CONF" | head -1)" "$*" > "$CONFD/pyxis.conf.tmp"
            chmod 0644 "$CONFD/pyxis.conf.tmp"
            mv -f "$CONFD/pyxis.conf.tmp" "$CONFD/pyxis.conf"
        fi ;;
esac
log "plugin stack: $(cat "$CONFD"/* 2>/dev/null | grep -Ev '^[[:space:]]*(#|$)' | tr '\n' ' ' || true)"

# restart slurmd only if what it loaded differs from what it would load now
want=$(stack_fingerprint)
# (every node's slurmd: the stamp names each node's pid, so any restart or a node that is
# down counts as a difference)
slurmd_pid=$(slurmd_pids)
if [[ "$slurmd_pid" == *= || "$slurmd_pid" == *"= "* ]] || [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want $slurmd_pid" ]; then
    "$PXT_HARNESS/cluster.sh" restart-slurmd
    slurmd_pid=$(slurmd_pids)
    if [[ "$slurmd_pid" == *= || "$slurmd_pid" == *"= "* ]]; then die "a slurmd is not running after restart ($slurmd_pid)"; fi
    printf '%s %s\n' "$want" "$slurmd_pid" > "$STAMP"
fi

# client-side load check as the test user (srun parses the stack on every call)
if [ -e "$CONFD/pyxis.conf" ]; then
    help=$(as_user srun --help 2>&1) || true
    if grep -q -- '--container-image' <<< "$help"; then
        ok "srun --help lists --container-image: the plugin is loaded"
    else
        printf '%s\n' "$help" | tail -5 >&2
        die "srun --help does not list --container-image: the plugin did not register its options"
    fi
else
    as_user srun true >/dev/null || die "plain 'srun true' fails without a plugin"
    ok "no plugin in the stack; plain srun works"
fi
