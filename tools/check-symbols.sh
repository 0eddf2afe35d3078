#!/usr/bin/env bash
# Check that a built plugin exports exactly what NVIDIA pyxis exports, and that
# its identity symbols hold what Slurm keys on:
#   - the defined dynamic symbols (`nm -D --defined-only`, version suffixes such as
#     @@PYXIS_1.0 stripped, version-node names themselves ignored) are exactly the
#     list below: exporting slurm_spank_job_prolog, say, would make slurmd fork a
#     SPANK prolog for every job, and any extra slurm_spank_* changes when Slurm
#     loads the plugin (reference §2.1);
#   - plugin_name is the C string "pyxis" (Slurm names forwarded options
#     "<option>:pyxis" and env variables _SLURM_SPANK_OPTION_pyxis_*);
#   - plugin_type is "spank".
#
#   tools/check-symbols.sh path/to/libspank_pyxis.so
# Prints a diff and exits 1 on any mismatch.
set -euo pipefail

so="${1-}"
[ -n "$so" ] || { echo "usage: $0 PLUGIN.so" >&2; exit 2; }
[ -f "$so" ] || { echo "check-symbols: no such file: $so" >&2; exit 2; }
for t in nm readelf od; do
    command -v "$t" >/dev/null || { echo "check-symbols: '$t' not found (Debian package binutils / coreutils)" >&2; exit 2; }
done

expected="plugin_name
plugin_type
plugin_version
slurm_spank_exit
slurm_spank_init
slurm_spank_init_post_opt
slurm_spank_job_epilog
slurm_spank_slurmd_exit
slurm_spank_task_exit
slurm_spank_task_init
slurm_spank_user_init"

# nm -D prints "VALUE TYPE NAME[@[@]VERSION]"; type A entries are version nodes (PYXIS_1.0)
actual=$(nm -D --defined-only "$so" | awk 'NF >= 3 && $2 != "A" { sub(/@.*/, "", $3); print $3 }' | LC_ALL=C sort -u)

fail=0
if [ "$actual" != "$expected" ]; then
    echo "check-symbols: exported symbols of $so differ from pyxis's (- expected, + actual):"
    diff -u <(printf '%s\n' "$expected") <(printf '%s\n' "$actual") | tail -n +3 || true
    fail=1
else
    echo "check-symbols: exported symbols OK ($(printf '%s\n' "$actual" | wc -l) symbols)"
fi

# sym_location NAME: print "FILE_OFFSET SIZE" of a defined data symbol, translating its
# virtual address to a file offset through the PT_LOAD program headers
sym_location() {
    local name="$1" line addr size a typ o v fs _rest
    line=$(nm -D -S --defined-only "$so" | awk -v n="$name" '{ s = $NF; sub(/@.*/, "", s) } s == n && NF == 4 { print $1, $2; exit }')
    [ -n "$line" ] || return 1
    read -r addr size <<< "$line"
    a=$((16#$addr))
    while read -r typ o v _ fs _rest; do
        [ "$typ" = LOAD ] || continue
        o=$((o)); v=$((v)); fs=$((fs))
        if [ "$a" -ge "$v" ] && [ "$a" -lt $((v + fs)) ]; then
            echo "$((o + a - v)) $((16#$size))"
            return 0
        fi
    done < <(readelf -lW "$so")
    return 1
}

# read_symbol NAME: the bytes of a data symbol as a C string (up to its first NUL)
read_symbol() {
    local off size
    read -r off size <<< "$(sym_location "$1")" || return 1
    [ -n "$off" ] || return 1
    od -An -v -c -j "$off" -N "$size" "$so" | tr -s ' \n' ' ' | sed -e 's/^ //' -e 's/ \\0.*//' -e 's/ //g'
}

check_string() { # SYMBOL EXPECTED
    local got
    got=$(read_symbol "$1" || true)
    if [ "$got" = "$2" ]; then
        echo "check-symbols: $1 = \"$2\" OK"
    else
        echo "check-symbols: $1 is \"${got:-<not found or unreadable>}\", expected \"$2\""
        fail=1
    fi
}
if nm -D --defined-only "$so" | grep -qw plugin_name; then check_string plugin_name pyxis; fi
if nm -D --defined-only "$so" | grep -qw plugin_type; then check_string plugin_type spank; fi

# plugin_version: Slurm >= 21.08 refuses a SPANK plugin built for another major.minor
hdr=/usr/include/slurm/slurm_version.h
if [ -r "$hdr" ] && loc=$(sym_location plugin_version); then
    read -r off size <<< "$loc"
    got=$(od -An -v -tu4 -j "$off" -N 4 "$so" | tr -d ' ')
    want=$(awk '$1 == "#define" && $2 == "SLURM_VERSION_NUMBER" { print $3 }' "$hdr")
    if [ -n "$want" ] && [ $((got >> 8)) -eq $(( want >> 8 )) ]; then
        printf 'check-symbols: plugin_version = 0x%06x matches Slurm %s major.minor OK\n' "$got" "$want"
    else
        printf 'check-symbols: plugin_version = 0x%06x, but %s says SLURM_VERSION_NUMBER %s\n' "${got:-0}" "$hdr" "${want:-?}"
        fail=1
    fi
fi

exit "$fail"
