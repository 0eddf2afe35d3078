#!/usr/bin/env bash
# Step start-up cost of pyxis-rs on the throwaway cluster (issue 7): the create path
# (what pyxis does: use_squashfuse=0 image_cache_path=none) and the default (image
# cache + direct start) side by side, as medians and ratios, with the issue's targets.
#
#   sudo tests/bench.sh [RUNS]                                   (default 5)
#   sudo ENROOT=/opt/enroot-real/bin/enroot tests/bench.sh 5     (with a real enroot)
#
# It runs tests/harness/up.sh first (the plugin from this tree; ENROOT passes through),
# switches the plugin arguments with tests/harness/plugstack.sh and restores the
# default at the end. Cases (each RUNS times as the test user, every srun a new job):
#   floor         srun true  +  enroot start of an existing container (measured apart)
#   small         srun --container-image=busybox.sqsh true
#   large         the same with a generated squashfs of a few hundred MB (random files,
#                 built once per host under $PXT_STATE/bench, not committed)
#   registry 1st  a newly pushed registry image, each run a new digest
#   registry 2nd  the same registry image again, in a new job
#   -n 4 / -n 1   four tasks in one container vs one (small image)
#   4 concurrent  four sruns of one new registry image at once: how many imports ran
#   read large    start + reading the whole large tree (the runtime cost of squashfuse)
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/harness/lib.sh"
need_root

RUNS="${1:-5}"
LARGE_MB="${PXT_BENCH_LARGE_MB:-300}"
"$PXT_HARNESS/up.sh" >/dev/null 2>&1 || die "tests/harness/up.sh failed"
IMG="$PXT_IMAGES/busybox.sqsh"
[ -r "$IMG" ] || die "no $IMG"
HOME_U=$(getent passwd "$PXT_USER" | cut -d: -f6)
UID_U=$(id -u "$PXT_USER")
BENCH="$PXT_STATE/bench"
LARGE="$BENCH/large-$LARGE_MB.sqsh"
REPO="pyxis/bench-$$"
CACHE_DIR="/var/cache/pyxis/$UID_U"
FLOOR_NAME="bench-floor-$$"

as_user() { (cd "$HOME_U" && runuser -u "$PXT_USER" -- "$@"); }

# ms CMD...: wall time of one run of CMD as the test user, in ms (fails the bench if CMD does).
# Dirty pages of the run before (the create path writes hundreds of MB per step) are
# written back first, so that writeback does not slow the run measured next.
ms() {
    local t0 t1
    sync
    t0=$(date +%s%N)
    as_user "$@" >/dev/null 2>"$BENCH/last.err" || { cat "$BENCH/last.err" >&2; die "bench command failed: $*"; }
    t1=$(date +%s%N)
    echo $(( (t1 - t0) / 1000000 ))
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2] + a[NR/2+1]) / 2)}'; }

# median_ms CMD...: the median of RUNS runs.
median_ms() {
    local i
    for i in $(seq 1 "$RUNS"); do ms "$@"; done | median
}

# large_image: busybox plus a python-like tree of random files (many dirs, small and
# large files), packed like enroot packs images.
large_image() {
    [ -r "$LARGE" ] && return 0
    log "bench: generating a $LARGE_MB MB squashfs in $LARGE"
    install -d -m 0755 "$BENCH"
    local tree; tree=$(mktemp -d "$BENCH/tree.XXXXXX")
    cp -a "$PXT_STATE/build/busybox-rootfs/." "$tree/"
    local total=0 d=0 f size
    while [ "$total" -lt $((LARGE_MB * 1024)) ]; do
        install -d "$tree/usr/lib/python3/site-packages/pkg$d"
        for f in $(seq 1 40); do
            size=$(( (RANDOM % 48 + 1) * 4 ))   # 4..192 KiB, like .py/.so files
            head -c $((size * 1024)) /dev/urandom > "$tree/usr/lib/python3/site-packages/pkg$d/m$f.py"
            total=$((total + size))
        done
        d=$((d + 1))
    done
    chmod -R a+rX "$tree"
    mksquashfs "$tree" "$LARGE.tmp" -all-root -noI -noD -noF -noX -no-duplicates -quiet >/dev/null
    chmod 0644 "$LARGE.tmp"
    mv "$LARGE.tmp" "$LARGE"
    rm -rf "$tree"
}

# push TAG: a new image (new digest) in the loopback registry.
push() { "$PXT_HARNESS/push-image.sh" "$REPO:$1" "bench $1 $$ $RANDOM" 40 || die "push failed"; }

# registry_first: each run a new tag = a new digest, so the cache never has it.
registry_first() {
    local i tag
    for i in $(seq 1 "$RUNS"); do
        tag="first-$1-$i"
        push "$tag" >/dev/null
        ms srun --container-image="127.0.0.1:5000#$REPO:$tag" true
    done | median
}

# concurrent4 TAG: 4 sruns of a new image at once; prints "<ms> <imports>".
concurrent4() {
    local tag=$1 i t0 t1 n
    push "$tag" >/dev/null
    t0=$(date +%s%N)
    for i in 1 2 3 4; do
        as_user srun --container-image="127.0.0.1:5000#$REPO:$tag" true >/dev/null 2>"$BENCH/c4.$i.err" &
    done
    wait
    t1=$(date +%s%N)
    n=$(cat "$BENCH"/c4.*.err | grep -c "imported docker image" || true)
    rm -f "$BENCH"/c4.*.err
    echo "$(( (t1 - t0) / 1000000 )) $n"
}

READ_LARGE="find /usr/lib/python3 -type f -exec cat {} + > /dev/null"

# measure MODE: every case in the current plugin configuration; KEY=VALUE lines.
measure() {
    local m=$1
    # Warm-up after the plugin arguments changed (slurmd restarted): not counted.
    ms srun --container-image="$IMG" true >/dev/null
    echo "small_$m=$(median_ms srun --container-image="$IMG" true)"
    echo "large_$m=$(median_ms srun --container-image="$LARGE" true)"
    echo "reg1_$m=$(registry_first "$m")"
    push "second-$m" >/dev/null
    ms srun --container-image="127.0.0.1:5000#$REPO:second-$m" true >/dev/null
    echo "reg2_$m=$(median_ms srun --container-image="127.0.0.1:5000#$REPO:second-$m" true)"
    echo "n4_$m=$(median_ms srun -n 4 --overcommit --container-image="$IMG" true)"
    echo "read_$m=$(median_ms srun --container-image="$LARGE" sh -c "$READ_LARGE")"
    read -r c4ms c4n < <(concurrent4 "conc-$m")
    echo "c4ms_$m=$c4ms"
    echo "c4n_$m=$c4n"
}

install -d -m 0755 "$BENCH"
large_image
log "bench: $RUNS runs per case, enroot: $(cat "$PXT_STATE/enroot-kind" 2>/dev/null || echo unknown) ($(as_user enroot version 2>/dev/null))"
restore() {
    as_user enroot remove -f "$FLOOR_NAME" >/dev/null 2>&1 || true
    "$PXT_HARNESS/plugstack.sh" >/dev/null 2>&1 || warn "could not restore the default plugin arguments"
}
trap restore EXIT

# The floor: srun without a container, plus enroot starting an existing container.
as_user enroot create --force --name "$FLOOR_NAME" "$IMG" >/dev/null 2>&1 || die "enroot create failed"
srun_true=$(median_ms srun true)
start_only=$(median_ms enroot start "$FLOOR_NAME" true)
floor=$((srun_true + start_only))
n4_bare=$(median_ms srun -n 4 --overcommit true)

"$PXT_HARNESS/plugstack.sh" use_squashfuse=0 image_cache_path=none >/dev/null || die "plugstack.sh failed"
create_vals=$(measure create)
"$PXT_HARNESS/plugstack.sh" >/dev/null || die "plugstack.sh failed"
as_user sh -c "rm -f $CACHE_DIR/*.sqsh" 2>/dev/null || true
default_vals=$(measure default)
eval "$create_vals"
eval "$default_vals"
imports_in_cache=$(find "$CACHE_DIR" -maxdepth 1 -name 'sha256-*.sqsh' 2>/dev/null | wc -l)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
row() { # label create default
    printf '  %-22s %8s ms %8s ms   x%-6s x%-6s\n' "$1" "$2" "$3" "$(ratio "$3" "$floor")" "$(ratio "$3" "$2")"
}
target() { # label value limit
    local v=$2 l=$3
    if awk -v v="$v" -v l="$l" 'BEGIN { exit !(v <= l) }'; then s=met; else s=MISSED; fi
    printf '  %-40s %6s (target <= %s)  %s\n' "$1" "$v" "$l" "$s"
}

echo
echo "pyxis-rs step start-up, median of $RUNS runs (enroot $(as_user enroot version 2>/dev/null))"
printf '  floor: srun true %d ms + enroot start %d ms = %d ms\n' "$srun_true" "$start_only" "$floor"
printf '  %-22s %11s %11s   %-7s %-7s\n' case "create path" default "/floor" "/create"
row "small squashfs" "$small_create" "$small_default"
row "large squashfs ${LARGE_MB}MB" "$large_create" "$large_default"
row "registry 1st use" "$reg1_create" "$reg1_default"
row "registry 2nd use" "$reg2_create" "$reg2_default"
row "-n 4 small" "$n4_create" "$n4_default"
row "4 concurrent 1st uses" "$c4ms_create" "$c4ms_default"
row "start + read large tree" "$read_create" "$read_default"
printf '  imports by 4 concurrent first uses: create path %s, default %s\n' "$c4n_create" "$c4n_default"
printf '  reading the large tree alone (start+read minus start): create %d ms, default %d ms\n' \
    $((read_create - large_create)) $((read_default - large_default))
printf '  srun -n 4 true (no container): %d ms, i.e. %d ms more than srun true; cache entries now: %s\n' \
    "$n4_bare" $((n4_bare - srun_true)) "$imports_in_cache"
echo "targets (default path):"
target "small squashfs / floor" "$(ratio "$small_default" "$floor")" 1.3
target "large squashfs / floor" "$(ratio "$large_default" "$floor")" 1.5
target "registry 2nd use / floor" "$(ratio "$reg2_default" "$floor")" 1.8
target "-n 4 / -n 1" "$(ratio "$n4_default" "$small_default")" 1.1
# What the plugin adds per extra task: the -n 4 step less Slurm's own cost of three more
# tasks (srun -n 4 true - srun true, measured above). Most of that cost is a fixed sleep:
# slurmstepd waits 100 ms after reaping the first task of a step with more than one task
# on the node (_wait_for_all_tasks in slurmstepd/mgr.c), so no plugin can bring a step of
# well under a second to 1.1x its -n 1 time.
target "  the same, Slurm's own extra tasks taken out" \
    "$(ratio $((n4_default - (n4_bare - srun_true))) "$small_default")" 1.1
target "imports by 4 concurrent first uses" "$c4n_default" 1
target "start + read large: default / create" "$(ratio "$read_default" "$read_create")" 1.0
