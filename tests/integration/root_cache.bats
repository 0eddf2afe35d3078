#!/usr/bin/env bats
# The node-local image cache and the direct start (issue 7), on the real Slurm:
#
#   a registry image is imported once per user and node, later jobs use the entry;
#   a re-pushed tag is picked up; 4 concurrent first uses import once; eviction under a
#   small image_cache_size never removes an entry in use; scancel and SIGKILL during an
#   import leave no partial entry and no lock file; the direct start falls back to the
#   create path when squashfuse is unavailable; use_squashfuse=0 and
#   image_cache_path=none give pyxis's create path.
#
# Needs root: images are pushed to the loopback registry with
# tests/harness/push-image.sh (a new digest each time), the plugin configuration is
# switched with tests/harness/plugstack.sh. The steps run as the test user. Imports are
# counted from what the user sees ("imported docker image"), the cache from its
# directory <image_cache_path>/<uid>, the plan from the slurmd log.

load common
load containers
load root

SLURMD_LOG=/var/log/slurm/slurmd.log

setup() {
    curl -fsS -o /dev/null http://127.0.0.1:5000/v2/pyxis/busybox/tags/list \
        || skip "no loopback registry on 127.0.0.1:5000 (run tests/harness/up.sh)"
    root_setup i7-cache
    PUSH="${PXT_HARNESS:-$BATS_TEST_DIRNAME/../harness}/push-image.sh"
    CACHE="/var/cache/pyxis/$TUID"
    RESTORE_SQUASHFUSE=
    REPO="pyxis/cache-$$-$BATS_TEST_NUMBER"
}

teardown() {
    if [ -n "$RESTORE_SQUASHFUSE" ]; then chmod "$RESTORE_SQUASHFUSE" /usr/bin/squashfuse; fi
    root_teardown
}

# push TAG MARKER [MB]: a new image REPO:TAG in the loopback registry
push() {
    "$PUSH" "$REPO:$1" "$2" "${3:-0}"
}

image() {
    echo "127.0.0.1:5000#$REPO:$1"
}

# imports: how many "imported docker image" lines the last `run` printed
imports() {
    grep -c "pyxis: imported docker image" <<< "$output" || true
}

entries() {
    find "$CACHE" -maxdepth 1 -name 'sha256-*.sqsh' -printf '%f\n' 2>/dev/null | LC_ALL=C sort
}

# leftovers: temporaries and lock files of imports in the user's cache
leftovers() {
    find "$CACHE" -maxdepth 1 \( -name '.sha256-*' -o -name 'sha256-*.lock' -o -name 'sha256-*.use' \) \
        -printf '%f\n' 2>/dev/null | LC_ALL=C sort
}

wait_no_leftovers() {
    local end=$((SECONDS + ${1:-30}))
    while [ -n "$(leftovers)" ]; do
        if [ "$SECONDS" -ge "$end" ]; then
            printf 'left in %s:\n%s\n' "$CACHE" "$(leftovers)" >&2
            return 1
        fi
        sleep 0.5
    done
}

# step_log JOBID: the plugin's lines of that job in the slurmd log
step_log() {
    grep -F "[$1." "$SLURMD_LOG" | grep -F "pyxis:" || true
}

job_of_output() {
    sed -n 's/^JOB=\([0-9]*\)$/\1/p' <<< "$output" | tail -n 1
}

@test "cache: a registry image is imported once, the next job starts from the cache entry" {
    push t1 "first-$$"
    local before
    before=$(entries | wc -l)
    # shellcheck disable=SC2016
    user_srun --container-image="$(image t1)" sh -c 'cat /marker; echo JOB=$SLURM_JOB_ID'
    must_succeed
    assert_output_contains "first-$$"
    [ "$(imports)" -eq 1 ]
    [ "$(entries | wc -l)" -eq $((before + 1)) ]
    # a new job: the digest is checked, nothing imported, the entry started directly
    # shellcheck disable=SC2016
    user_srun --container-image="$(image t1)" sh -c 'cat /marker; echo JOB=$SLURM_JOB_ID'
    must_succeed
    assert_output_contains "first-$$"
    [ "$(imports)" -eq 0 ]
    refute_output_contains "importing docker image"
    local job log
    job=$(job_of_output)
    log=$(step_log "$job")
    grep -q "image cache hit: sha256:" <<< "$log" || { echo "$log" >&2; false; }
    grep -q "setup timing: .*enroot digest" <<< "$log" || { echo "$log" >&2; false; }
    [ -z "$(leftovers)" ]
}

@test "cache: a re-pushed tag is picked up by the next step" {
    push t "one-$$"
    user_srun --container-image="$(image t)" cat /marker
    must_succeed
    assert_output_contains "one-$$"
    push t "two-$$"
    user_srun --container-image="$(image t)" cat /marker
    must_succeed
    assert_output_contains "two-$$"
    refute_output_contains "one-$$"
    [ "$(imports)" -eq 1 ]
}

@test "cache: 4 concurrent first uses of one image import it once" {
    push c "conc-$$" 20
    local i pids=()
    for i in 1 2 3 4; do
        user_run timeout "$PXT_CMD_TIMEOUT" srun -N1 --oversubscribe --container-image="$(image c)" \
            cat /marker >"$WORK/c$i.out" 2>&1 3>&- &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i"; done
    output=$(cat "$WORK"/c*.out)
    [ "$(grep -c "conc-$$" <<< "$output")" -eq 4 ] || { echo "$output" >&2; false; }
    [ "$(imports)" -eq 1 ] || { echo "$output" >&2; false; }
    wait_no_leftovers
}

@test "cache: eviction under a small bound removes the least recently used unused entry, never one in use" {
    with_config image_cache_size=14M
    user_run find "$CACHE" -maxdepth 1 -name 'sha256-*.sqsh' -delete
    push a "a-$$" 4
    push b "b-$$" 4
    push c "c-$$" 4
    # A (the least recently used) is in use by a running step for the whole test
    user_alloc
    user_bg_step "$WORK/a.out" --container-image="$(image a)" sh -c 'cat /marker; sleep 60'
    local end=$((SECONDS + 60))
    until grep -q "a-$$" "$WORK/a.out" 2>/dev/null; do
        [ "$SECONDS" -lt "$end" ] || { cat "$WORK/a.out" >&2; false; }
        sleep 0.5
    done
    local a_entry b_entry c_entry
    a_entry=$(entries)
    [ "$(wc -l <<< "$a_entry")" -eq 1 ]
    user_srun --container-image="$(image b)" cat /marker
    must_succeed
    b_entry=$(entries | grep -vxF "$a_entry")
    [ -n "$b_entry" ]
    # C does not fit next to A and B: B goes, A stays although it is older
    user_srun --container-image="$(image c)" cat /marker
    must_succeed
    assert_output_contains "c-$$"
    c_entry=$(entries | grep -vxF "$a_entry" | grep -vxF "$b_entry" || true)
    [ -n "$c_entry" ]
    entries | grep -qxF "$a_entry" || { echo "A was evicted while in use: $(entries)" >&2; false; }
    ! entries | grep -qxF "$b_entry"
    # A is still served from the cache
    user_step --container-image="$(image a)" cat /marker
    must_succeed
    [ "$(imports)" -eq 0 ]
}

# import_then SIGNAL: start importing a large new image, send SIGNAL to the step while
# the import writes its output; nothing of the import may stay, and the next use
# imports it completely.
import_then() {
    push big "big-$$" 300
    local before
    before=$(entries)
    user_alloc
    user_bg_step "$WORK/big.out" --container-image="$(image big)" true
    local end=$((SECONDS + 120))
    until find "$CACHE" -maxdepth 1 -name '.sha256-*.tmp' | grep -q .; do
        if [ "$SECONDS" -ge "$end" ] || ! kill -0 "$BG_PID" 2>/dev/null; then
            cat "$WORK/big.out" >&2
            echo "the import's output never appeared (the import ended first?)" >&2
            return 1
        fi
        sleep 0.05
    done
    scancel --signal="$1" --full "$JOB"
    scancel "$JOB" 2>/dev/null || true
    wait "$BG_PID" 2>/dev/null || true
    wait_no_leftovers 60
    [ "$(entries)" = "$before" ] || { echo "a partial entry: $(entries)" >&2; false; }
    # shellcheck disable=SC2016
    user_srun --container-image="$(image big)" sh -c 'cat /marker; du -sm /payload'
    must_succeed
    assert_output_contains "big-$$"
    [ "$(imports)" -eq 1 ]
}

@test "cache: scancel during an import leaves no partial entry and no lock file" {
    import_then TERM
}

@test "cache: SIGKILL during an import leaves no partial entry and no lock file" {
    import_then KILL
}

@test "direct start: falls back to the create path when squashfuse is unavailable" {
    RESTORE_SQUASHFUSE=$(stat -c %a /usr/bin/squashfuse)
    chmod a-x /usr/bin/squashfuse
    # shellcheck disable=SC2016
    user_srun --container-image="$PXT_IMAGE" sh -c 'grep PRETTY /etc/os-release; echo JOB=$SLURM_JOB_ID'
    must_succeed
    assert_output_contains "$PXT_PRETTY"
    local log
    log=$(step_log "$(job_of_output)")
    grep -q "not starting the image directly (squashfuse is not on enroot's PATH)" <<< "$log" \
        || { echo "$log" >&2; false; }
    grep -q "creating container filesystem" <<< "$log" || { echo "$log" >&2; false; }
}

@test "direct start is the default for an unnamed squashfs image; use_squashfuse=0 restores the create path" {
    # shellcheck disable=SC2016
    user_srun --container-image="$PXT_IMAGE" sh -c 'echo JOB=$SLURM_JOB_ID'
    must_succeed
    local log
    log=$(step_log "$(job_of_output)")
    grep -q "starting container from squashfs: $PXT_IMAGE" <<< "$log" || { echo "$log" >&2; false; }
    ! grep -q "creating container filesystem" <<< "$log"
    with_config use_squashfuse=0
    # shellcheck disable=SC2016
    user_srun --container-image="$PXT_IMAGE" sh -c 'echo JOB=$SLURM_JOB_ID'
    must_succeed
    log=$(step_log "$(job_of_output)")
    grep -q "creating container filesystem" <<< "$log" || { echo "$log" >&2; false; }
    ! grep -q "starting container from squashfs" <<< "$log"
}

@test "image_cache_path=none: a registry image is imported for the step and not cached" {
    with_config image_cache_path=none
    push n "none-$$"
    local before
    before=$(entries)
    # shellcheck disable=SC2016
    user_srun --container-image="$(image n)" sh -c 'cat /marker; echo JOB=$SLURM_JOB_ID'
    must_succeed
    assert_output_contains "none-$$"
    [ "$(imports)" -eq 1 ]
    [ "$(entries)" = "$before" ]
    local log
    log=$(step_log "$(job_of_output)")
    grep -q "creating container filesystem" <<< "$log" || { echo "$log" >&2; false; }
    ! grep -q "enroot digest\|image cache" <<< "$log"
    # every use imports again
    user_srun --container-image="$(image n)" cat /marker
    must_succeed
    [ "$(imports)" -eq 1 ]
}
