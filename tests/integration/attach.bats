#!/usr/bin/env bats
# Attaching to a running container (reference §5.4-§5.5, upstream exec.bats, W1):
# a step with the --container-name of a running container joins that container's
# namespaces (it sees the first step's tmpfs), ignores --container-mounts with
# pyxis's message, `:no_exec` gets fresh namespaces, and `--container-name=<job>.<step>`
# reaches another step's unnamed container. The namespaces are pinned at attach
# time: once the running step ended, nothing joins a stale pid.
#
# The steps overlap inside one `salloc --overcommit` allocation (as upstream). The
# first step holds its container open until the test creates $CTL/stop; $CTL is
# bind-mounted at /i3ctl.

load common
load containers

setup() {
    [ -r "$PXT_IMAGE" ] || skip "no test image $PXT_IMAGE (run tests/harness/up.sh)"
    CREATED_NAMES=()
    CTL="$BATS_TEST_TMPDIR/ctl"
    mkdir -p "$CTL"
    HOLDER_PID=
    alloc_job i3-attach
}

teardown() {
    touch "$CTL/stop"
    if [ -n "$HOLDER_PID" ]; then wait "$HOLDER_PID" 2>/dev/null || true; fi
    release_jobs
    remove_named "${CREATED_NAMES[@]}"
}

# start_holder OUT ARGS...: a step that mounts a tmpfs at /i3tmp, writes a marker
# there, prints its step id and mount namespace, then holds until $CTL/stop.
start_holder() {
    local out="$1"; shift
    # shellcheck disable=SC2016  # expanded inside the container
    bg_step "$out" --container-mounts="tmpfs:/i3tmp,$CTL:/i3ctl" "$@" \
        sh -c 'echo "marker-of-$SLURM_STEP_ID" > /i3tmp/marker; echo "STEP=$SLURM_JOB_ID.$SLURM_STEP_ID"; echo "NS=$(readlink /proc/self/ns/mnt)"; echo READY; '"$PXT_HOLD"'; echo HOLDER-DONE'
    HOLDER_PID=$BG_PID
    wait_for_line "$out" READY 90 "$HOLDER_PID"
}

# stop_holder OUT: let the holder finish; it must have succeeded.
stop_holder() {
    local rc=0
    touch "$CTL/stop"
    wait "$HOLDER_PID" || rc=$?
    HOLDER_PID=
    if [ "$rc" -ne 0 ] || ! grep -q HOLDER-DONE "$1"; then
        printf 'the holding step failed (%s):\n%s\n' "$rc" "$(cat "$1")" >&2
        return 1
    fi
}

@test "attach: a step joins a running named container (its tmpfs, its mount namespace)" {
    new_name attach
    local name=$CNAME holder ns
    start_holder "$BATS_TEST_TMPDIR/holder.out" --container-name="$name" --container-image="$PXT_IMAGE"
    holder=$(sed -n 's/^STEP=//p' "$BATS_TEST_TMPDIR/holder.out")
    ns=$(sed -n 's/^NS=//p' "$BATS_TEST_TMPDIR/holder.out")
    [[ "$ns" =~ ^mnt:\[[0-9]+\]$ ]]
    # shellcheck disable=SC2016  # expanded inside the container
    run_step_ok --container-name="$name" sh -c 'cat /i3tmp/marker; echo "NS=$(readlink /proc/self/ns/mnt)"; echo "PWD=$(pwd)"'
    assert_output_contains "marker-of-${holder#*.}"
    assert_output_contains "NS=$ns"
    assert_output_contains "PWD=/"
    # :exec demands exactly this
    run_step_ok --container-name="$name:exec" cat /i3tmp/marker
    assert_output_contains "marker-of-${holder#*.}"
    stop_holder "$BATS_TEST_TMPDIR/holder.out"
    # the named container outlives both steps
    container_exists "pyxis_$name"
}

@test "attach: --container-mounts are ignored with pyxis's message" {
    new_name mounts
    local name=$CNAME
    start_holder "$BATS_TEST_TMPDIR/holder.out" --container-name="$name" --container-image="$PXT_IMAGE"
    run_step_ok --container-name="$name" --container-mounts="$BATS_TEST_TMPDIR:/i3-ignored" \
        sh -c 'cat /i3tmp/marker; if [ -e /i3-ignored ]; then echo mounted; else echo not-mounted; fi'
    [ "$(count_lines_with "pyxis: ignoring --container-mounts when attaching to a running container")" -eq 1 ]
    assert_output_contains "marker-of-"
    assert_output_contains "not-mounted"
    [ "$(grep -cx mounted <<< "$output")" -eq 0 ]
    stop_holder "$BATS_TEST_TMPDIR/holder.out"
}

@test "attach: :no_exec on a running container starts fresh namespaces from the same filesystem" {
    new_name noexec
    local name=$CNAME ns
    start_holder "$BATS_TEST_TMPDIR/holder.out" --container-name="$name" --container-image="$PXT_IMAGE"
    ns=$(sed -n 's/^NS=//p' "$BATS_TEST_TMPDIR/holder.out")
    # shellcheck disable=SC2016  # expanded inside the container
    run_step_ok --container-name="$name:no_exec" \
        sh -c 'cat /i3tmp/marker 2>/dev/null || echo no-marker; echo "NS=$(readlink /proc/self/ns/mnt)"; echo shared-rootfs > /i3-file'
    assert_output_contains "no-marker"
    refute_output_contains "NS=$ns"
    # no ignoring message: mounts were not given
    refute_output_contains "ignoring --container-mounts"
    stop_holder "$BATS_TEST_TMPDIR/holder.out"
    run_step_ok --container-name="$name" cat /i3-file
    assert_output_contains "shared-rootfs"
}

@test "attach: --container-name=<job>.<step> joins another step's unnamed container" {
    local holder
    # A directly started container (the default for unnamed, unsaved steps) has no name
    # to attach to, as with pyxis's use_squashfuse=1; --container-save keeps the holder
    # on the create path, which names it pyxis_<job>.<step>.
    start_holder "$BATS_TEST_TMPDIR/holder.out" --container-image="$PXT_IMAGE" \
        --container-save="$BATS_TEST_TMPDIR/holder.sqsh"
    holder=$(sed -n 's/^STEP=//p' "$BATS_TEST_TMPDIR/holder.out")
    [[ "$holder" =~ ^$ALLOC_JOB\.[0-9]+$ ]]
    container_exists "pyxis_$holder"
    run_step_ok --container-name="$holder:exec" cat /i3tmp/marker
    assert_output_contains "marker-of-${holder#*.}"
    # the attaching step is named: it leaves the container to its owner
    container_exists "pyxis_$holder"
    stop_holder "$BATS_TEST_TMPDIR/holder.out"
    # ... which removes it when it ends
    wait_container_gone "pyxis_$holder"
}

@test "attach: once the running step ended, :exec fails and a plain name starts afresh (W1)" {
    new_name ended
    local name=$CNAME ns
    start_holder "$BATS_TEST_TMPDIR/holder.out" --container-name="$name" --container-image="$PXT_IMAGE"
    ns=$(sed -n 's/^NS=//p' "$BATS_TEST_TMPDIR/holder.out")
    stop_holder "$BATS_TEST_TMPDIR/holder.out"
    # the container is stopped now: the pid enroot listed is gone and never joined
    run_step --container-name="$name:exec" echo pxt-command-ran
    assert_failure_with '"exec" flag was passed to --container-name but the container is not running'
    refute_output_contains "pxt-command-ran"
    # A fresh container: the old one's tmpfs (and its marker) is gone. Its namespace
    # inode cannot be compared: the kernel reuses the numbers of freed namespaces.
    run_step_ok --container-name="$name" sh -c 'cat /i3tmp/marker 2>/dev/null || echo no-marker'
    assert_output_contains "no-marker"
    [ -n "$ns" ]
}

@test "attach: several steps attach to one running container at the same time" {
    new_name many
    local name=$CNAME ns i pids=() rc=0
    start_holder "$BATS_TEST_TMPDIR/holder.out" --container-name="$name" --container-image="$PXT_IMAGE"
    ns=$(sed -n 's/^NS=//p' "$BATS_TEST_TMPDIR/holder.out")
    for i in 1 2 3 4; do
        # shellcheck disable=SC2016  # expanded inside the container
        bg_step "$BATS_TEST_TMPDIR/att.$i" --container-name="$name:exec" sh -c 'cat /i3tmp/marker; echo "NS=$(readlink /proc/self/ns/mnt)"'
        pids+=("$BG_PID")
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || { rc=$?; printf 'attacher %s failed (%s):\n%s\n' "$((i + 1))" "$rc" "$(cat "$BATS_TEST_TMPDIR/att.$((i + 1))")" >&2; }
    done
    [ "$rc" -eq 0 ]
    for i in 1 2 3 4; do
        grep -qF "NS=$ns" "$BATS_TEST_TMPDIR/att.$i"
        grep -qF "marker-of-" "$BATS_TEST_TMPDIR/att.$i"
    done
    stop_holder "$BATS_TEST_TMPDIR/holder.out"
}
