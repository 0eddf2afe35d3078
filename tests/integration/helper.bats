#!/usr/bin/env bats
# W13: the process that starts the container (enroot start ... kill -STOP $$) is never a
# child of the user's program. In pyxis the creator task forked it and, once released,
# it became a zombie child of the command Slurm exec'd in that task.

# bats runs setup, the test and teardown in one shell per test: NAMES and $status set in
# a test are what teardown and the helpers see
# shellcheck disable=SC2030,SC2031

load common
load features

setup() {
    [ -r "$PXT_IMAGE" ] || skip "no test image $PXT_IMAGE (run tests/harness/up.sh)"
    snapshot_containers
    NAMES=()
    CTL="$BATS_TEST_TMPDIR/ctl"
    mkdir -p "$CTL"
    BG_PID=""
}

teardown() {
    if [ -n "${CTL-}" ]; then touch "$CTL/stop"; fi
    if [ -n "${BG_PID-}" ]; then wait "$BG_PID" 2>/dev/null || true; fi
    release_jobs
    remove_containers "${NAMES[@]}"
}

# The task's shell lists its children, zombies included, with shell builtins only (a
# forked helper would be listed too): "children:" then the pids. Nothing is waited for
# before, so a zombie child could not have been reaped yet. Then a control: a background
# sleep must be listed.
# shellcheck disable=SC2016  # expanded inside the container
CHILDREN='kids() { lbl=$1 k=""; for f in /proc/[0-9]*/stat; do read -r l < "$f" 2>/dev/null || continue; set -- ${l##*) }; if [ "$2" = "$$" ]; then p=${f#/proc/}; k="$k ${p%/stat}"; fi; done; echo "$lbl:$k"; }; kids children; sleep 30 & kids control; echo "sleep:$!"; kill $!'

# assert_no_foreign_children: every task of $output printed "children:" with nothing after,
# and its control listed exactly the background sleep.
assert_no_foreign_children() {
    printf 'output:\n%s\n' "$output"
    local n
    n=$(grep -c '^children:' <<< "$output")
    [ "$n" -ge 1 ]
    [ "$(grep -cx 'children:' <<< "$output")" -eq "$n" ]
    # the control proves the listing sees a child: the "control: <pid>" lines list exactly
    # the background sleeps (tasks' lines may interleave: compare as sets)
    local control sleeps
    control=$(sed -n 's/^control: \([0-9][0-9]*\)$/\1/p' <<< "$output" | sort)
    sleeps=$(sed -n 's/^sleep://p' <<< "$output" | sort)
    [ "$(grep -c . <<< "$control")" -eq "$n" ]
    [ "$control" = "$sleeps" ]
}

@test "W13: the task of a one-task step has no child it did not create" {
    run_srun_stdout --container-image="$PXT_IMAGE" sh -c "$CHILDREN"
    assert_no_foreign_children
    assert_no_own_leftovers
}

@test "W13: no task of a 4-task step has a foreign child (registry image, entrypoint on)" {
    # -n 4 runs one shell per task; the creator is one of them
    run_srun_stdout -n 4 --container-image="$PXT_REG_APP" --container-entrypoint sh -c "$CHILDREN"
    [ "$(grep -c '^children:' <<< "$output")" -eq 4 ]
    assert_no_foreign_children
    assert_no_own_leftovers
}

@test "W13: attaching to a running container leaves no foreign child either" {
    local name
    name=$(i4_name helper)
    NAMES+=("$name")
    alloc_job
    bg_step "$BATS_TEST_TMPDIR/held.out" --container-image="$PXT_IMAGE" --container-name="$name" \
        --container-mounts="$CTL:/i4ctl" sh -c "$PXT_HOLD"
    wait_for_file "$CTL/ns" 60 "$BG_PID" || { cat "$BATS_TEST_TMPDIR/held.out" >&2; return 1; }
    # attaching still starts a helper from the rootfs, for the environment and cwd
    run_step_ok --container-name="$name" sh -c "$CHILDREN"
    output=$(grep -E '^(children|control|sleep):' <<< "$output")
    assert_no_foreign_children
    stop_held "$BG_PID" "$CTL"
}
