#!/usr/bin/env bash
# Step start-up cost of pyxis-rs on the throwaway cluster, as figures, not pass/fail.
#
#   sudo tests/bench.sh [RUNS]        (default 15; needs tests/harness/up.sh first)
#
# Every case runs RUNS times as the test user; the median wall time is printed with its
# ratio to the baseline `srun true` measured in the same run, so figures from different
# machines or loads compare as ratios. Cases:
#   baseline        srun true                                  (no container)
#   unnamed         srun --container-image=busybox.sqsh true   (create, start, join, remove)
#   baseline -n4    srun -n 4 true
#   unnamed -n4     the same with 4 tasks in one container
#   named reuse     srun --container-name=NAME true           (start from an existing rootfs)
#   enroot only     enroot create + start + remove, no Slurm   (what enroot itself costs)
# plus the plugin's own cost per step: unnamed minus baseline minus enroot only.
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/harness/lib.sh"
need_root

RUNS="${1:-15}"
IMG="$PXT_IMAGES/busybox.sqsh"
[ -r "$IMG" ] || die "no $IMG: run tests/harness/up.sh first"
HOME_U=$(getent passwd "$PXT_USER" | cut -d: -f6)
NAME="bench-$$"

# median_ms CMD...: runs CMD RUNS times as the test user, prints the median in ms.
median_ms() {
    local i t0 t1 samples=()
    for i in $(seq 1 "$RUNS"); do
        t0=$(date +%s%N)
        (cd "$HOME_U" && runuser -u "$PXT_USER" -- "$@") >/dev/null 2>&1 || die "bench command failed: $*"
        t1=$(date +%s%N)
        samples+=($(( (t1 - t0) / 1000000 )))
    done
    printf '%s\n' "${samples[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2] + a[NR/2+1]) / 2)}'
}

row() { # label median baseline
    awk -v l="$1" -v m="$2" -v b="$3" 'BEGIN { printf "  %-14s %7d ms   x%5.2f of baseline\n", l, m, (b > 0 ? m / b : 0) }'
}

as_user() { (cd "$HOME_U" && runuser -u "$PXT_USER" -- "$@"); }

log "benchmark: $RUNS runs per case, enroot: $(cat "$PXT_STATE/enroot-kind" 2>/dev/null || echo unknown)"
as_user enroot remove -f "pyxis_$NAME" >/dev/null 2>&1 || true
as_user srun --container-image="$IMG" --container-name="$NAME" true >/dev/null 2>&1 || die "cannot create the named container"
trap 'as_user enroot remove -f "pyxis_$NAME" >/dev/null 2>&1 || true' EXIT

base=$(median_ms srun true)
base4=$(median_ms srun -n 4 --overcommit true)
unnamed=$(median_ms srun --container-image="$IMG" true)
four=$(median_ms srun -n 4 --overcommit --container-image="$IMG" true)
named=$(median_ms srun --container-name="$NAME" true)
enroot_only=$(median_ms sh -c "enroot create --force --name bench-raw-$$ '$IMG' && enroot start bench-raw-$$ true && enroot remove -f bench-raw-$$")

echo "pyxis-rs step start-up, median of $RUNS runs"
row baseline "$base" "$base"
row unnamed "$unnamed" "$base"
row "baseline -n4" "$base4" "$base"
row "unnamed -n4" "$four" "$base"
row "named reuse" "$named" "$base"
row "enroot only" "$enroot_only" "$base"
awk -v u="$unnamed" -v b="$base" -v e="$enroot_only" 'BEGIN {
    o = u - b - e; if (o < 0) o = 0
    printf "  plugin overhead per step (unnamed - baseline - enroot only): %d ms (x%.2f of baseline)\n", o, (b > 0 ? o / b : 0)
}'
awk -v f="$four" -v b4="$base4" -v u="$unnamed" -v b1="$base" 'BEGIN {
    printf "  extra cost of 3 more tasks joining one container: %d ms\n", (f - b4) - (u - b1)
}'
