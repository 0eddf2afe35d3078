#!/usr/bin/env bats
# What a step leaves behind (reference §5.22, W3, W19): whether it succeeds, its
# command fails, its container fails to start or to enter, or it is cancelled while
# enroot imports the image or starts the container, the unnamed container
# pyxis_<job>.<step> is removed and no file of the job stays in the runtime directory
# (<runtime_path>/<uid>: temporary squashfs, enroot start scripts).
#
# enroot start is held or failed with a hook in the user's own enroot configuration
# ($ENROOT_CONFIG_PATH/hooks.d, honoured by enroot and the test double alike); pyxis
# passes ENROOT_CONFIG_PATH from the job environment to enroot (§5.20).

load common
load containers

setup() {
    [ -r "$PXT_IMAGE" ] || skip "no test image $PXT_IMAGE (run tests/harness/up.sh)"
    HOOKS="$BATS_TEST_TMPDIR/enroot-config"
    mkdir -p "$HOOKS/hooks.d"
    BG=
    alloc_job i3-cleanup
}

teardown() {
    release_jobs
    if [ -n "$BG" ]; then wait "$BG" 2>/dev/null || true; fi
    # what a failed test found left behind is not left for the next run
    if [ -n "${ALLOC_JOB-}" ]; then rm -f "$(runtime_dir)/.$ALLOC_JOB".* 2>/dev/null || true; fi
}

CACHE_DIR="/var/cache/pyxis/$(id -u)"

# forget_cached_images: the user's image cache entries go, so the next step imports
forget_cached_images() {
    rm -f "$CACHE_DIR"/sha256-*.sqsh
}

# add_hook NAME BODY: an enroot hook run by every `enroot start` of steps that get
# ENROOT_CONFIG_PATH=$HOOKS.
add_hook() {
    printf '#!/bin/sh\n# written by cleanup.bats\n%s\n' "$2" > "$HOOKS/hooks.d/$1.sh"
    chmod 0755 "$HOOKS/hooks.d/$1.sh"
}

# assert_step_left_nothing JOB.STEP: no container, no runtime file, no import leftover
assert_step_left_nothing() {
    wait_container_gone "pyxis_$1"
    assert_no_runtime_files "${1%.*}"
    local end=$((SECONDS + 20))
    while find "$CACHE_DIR" -maxdepth 1 -name ".sha256-*.$1.*" 2>/dev/null | grep -q .; do
        if [ "$SECONDS" -ge "$end" ]; then
            printf 'import leftovers of %s in %s\n' "$1" "$CACHE_DIR" >&2
            return 1
        fi
        sleep 0.5
    done
}

@test "cleanup: a successful registry step leaves no container, squashfs or start script" {
    local log="$BATS_TEST_TMPDIR/enroot-log" step
    mkdir -p "$log"
    forget_cached_images
    # shellcheck disable=SC2016  # expanded inside the container
    ENROOT_DOUBLE_LOG="$log" run_step_ok --container-image="$PXT_REG_BUSYBOX" sh -c 'echo "STEP=$SLURM_JOB_ID.$SLURM_STEP_ID"'
    step=$(step_id_of)
    [ -n "$step" ]
    assert_step_left_nothing "$step"
    double_log_checks || return 0
    # with the double's invocation log: where those files were (W19: not in the shared /tmp)
    local rt conf
    rt=$(runtime_dir)
    run jq -c 'select(.argv[1] == "import" or .argv[1] == "start") | .argv' "$log/invocations.jsonl"
    [ "$status" -eq 0 ]
    # imported by digest into a hidden name of the user's image cache, renamed into place
    local digest entry
    digest=$(enroot digest "docker://$PXT_REG_BUSYBOX")
    entry="$CACHE_DIR/sha256-${digest#sha256:}.sqsh"
    assert_output_contains "[\"enroot\",\"import\",\"--output\",\"$CACHE_DIR/.sha256-${digest#sha256:}.$step."
    assert_output_contains ".tmp\",\"docker://$PXT_REG_BUSYBOX@$digest\"]"
    [ -f "$entry" ]
    ! find "$CACHE_DIR" -maxdepth 1 -name ".sha256-*.$step.*" | grep -q .
    conf=$(jq -r 'select(.argv[1] == "start") | .argv[3]' "$log/invocations.jsonl")
    [[ "$conf" == "$rt/"* ]]
    [ ! -e "$conf" ]
    # the exact start command line of §5.7, started directly from the entry
    assert_output_contains "[\"enroot\",\"start\",\"--conf\",\"$conf\",\"$entry\",\"sh\",\"-c\",\"kill -STOP \$\$ ; exit 0\"]"
}

@test "cleanup: a failing command leaves nothing behind and keeps its exit code" {
    # shellcheck disable=SC2016  # expanded inside the container
    run_step --container-image="$PXT_IMAGE" sh -c 'echo "STEP=$SLURM_JOB_ID.$SLURM_STEP_ID"; exit 3'
    [ "$status" -eq 3 ]
    assert_step_left_nothing "$(step_id_of)"
}

@test "cleanup: a step that cannot enter its container leaves nothing behind" {
    run_step --container-image="$PXT_IMAGE" --container-workdir=/i3-no-such-dir echo pxt-command-ran
    [ "$status" -ne 0 ]
    refute_output_contains "pxt-command-ran"
    assert_output_contains "pyxis: couldn't chdir to /i3-no-such-dir"
    # first step of the allocation
    assert_step_left_nothing "$ALLOC_JOB.0"
}

@test "cleanup: a container whose start fails leaves nothing behind" {
    add_hook fail 'echo "i3 hook refuses to start" >&2; exit 1'
    ENROOT_CONFIG_PATH="$HOOKS" run_step --container-image="$PXT_IMAGE" echo pxt-command-ran
    [ "$status" -ne 0 ]
    refute_output_contains "pxt-command-ran"
    assert_output_contains "pyxis: container start failed"
    # enroot's own words reach the user in pyxis's log block
    assert_output_contains "pyxis:     i3 hook refuses to start"
    assert_step_left_nothing "$ALLOC_JOB.0"
}

@test "cleanup: scancel of a step while enroot starts its container leaves nothing behind" {
    local step pid
    # shellcheck disable=SC2016  # expanded by the hook
    add_hook slow 'echo "$SLURM_JOB_ID.$SLURM_STEP_ID" > '"$HOOKS"'/started
sleep 120 &
echo $! > '"$HOOKS"'/sleep.pid
wait'
    ENROOT_CONFIG_PATH="$HOOKS" bg_step "$BATS_TEST_TMPDIR/step.out" --container-image="$PXT_IMAGE" echo pxt-command-ran
    BG=$BG_PID
    wait_for_line "$HOOKS/started" "$ALLOC_JOB." 60 "$BG"
    step=$(cat "$HOOKS/started")
    scancel "$step"
    wait "$BG" || true
    BG=
    if grep -q '^pxt-command-ran$' "$BATS_TEST_TMPDIR/step.out"; then
        printf 'the command ran:\n%s\n' "$(cat "$BATS_TEST_TMPDIR/step.out")" >&2
        return 1
    fi
    assert_step_left_nothing "$step"
    # and enroot (here: its hook) did not survive the step
    pid=$(cat "$HOOKS/sleep.pid")
    local end=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$end" ]; then
            echo "the hook's sleep $pid survived the cancelled step" >&2
            return 1
        fi
        sleep 0.5
    done
}

@test "cleanup: scancel of a step while enroot imports its image leaves nothing behind" {
    local fifo="$BATS_TEST_TMPDIR/hold.fifo" step="$ALLOC_JOB.0" end
    command -v pgrep >/dev/null || skip "needs pgrep"
    mkfifo "$fifo"
    forget_cached_images
    # mksquashfs opens its -sort file before packing: on a fifo nobody writes to, the
    # import (enroot import -> mksquashfs, through enroot-mksquashovlfs in a real enroot,
    # with ENROOT_SQUASH_OPTIONS) waits right there
    ENROOT_SQUASH_OPTIONS="-sort $fifo" bg_step "$BATS_TEST_TMPDIR/step.out" --container-image="$PXT_REG_BUSYBOX" echo pxt-command-ran
    BG=$BG_PID
    end=$((SECONDS + 60))
    until pgrep -u "$(id -u)" -f "mksquash[a-z]* .*-sort $fifo" >/dev/null; do
        if ! kill -0 "$BG" 2>/dev/null || [ "$SECONDS" -ge "$end" ]; then
            printf 'the import never reached its mksquashfs; the step said:\n%s\n' "$(cat "$BATS_TEST_TMPDIR/step.out")" >&2
            return 1
        fi
        sleep 0.2
    done
    scancel "$step"
    wait "$BG" || true
    BG=
    if grep -q '^pxt-command-ran$' "$BATS_TEST_TMPDIR/step.out"; then
        printf 'the command ran:\n%s\n' "$(cat "$BATS_TEST_TMPDIR/step.out")" >&2
        return 1
    fi
    assert_step_left_nothing "$step"
    end=$((SECONDS + 20))
    while pgrep -u "$(id -u)" -f "mksquash[a-z]* .*-sort $fifo" >/dev/null; do
        if [ "$SECONDS" -ge "$end" ]; then
            echo "mksquashfs of the cancelled import survived the step" >&2
            return 1
        fi
        sleep 0.5
    done
}
