#!/usr/bin/env bats
# Concurrent steps on named containers (upstream concurrency.bats, enroot issue #126,
# W2): overlapping steps of one `salloc --overcommit` allocation create distinct
# names at once, create one new name at once, and start 50 staggered `:no_exec`
# containers over 5 names; every single step must succeed (no "File already exists",
# no "Could not acquire rootfs lock").

load common
load containers

setup() {
    [ -r "$PXT_IMAGE" ] || skip "no test image $PXT_IMAGE (run tests/harness/up.sh)"
    CREATED_NAMES=()
    alloc_job i3-concurrency
}

teardown() {
    release_jobs
    remove_named "${CREATED_NAMES[@]}"
}

# wait_all OUT_PREFIX PID...: every background step succeeded (outputs are OUT_PREFIX.<i>,
# i counting from 0 in the order of the pids); prints the failures.
wait_all() {
    local prefix="$1" i=0 rc failed=0 pid; shift
    for pid in "$@"; do
        rc=0
        wait "$pid" || rc=$?
        if [ "$rc" -ne 0 ]; then
            failed=$((failed + 1))
            printf 'step %s failed with %s:\n%s\n' "$i" "$rc" "$(cat "$prefix.$i")" >&2
        fi
        i=$((i + 1))
    done
    if [ "$failed" -ne 0 ]; then
        echo "$failed of $# concurrent steps failed" >&2
        return 1
    fi
}

# refute_collisions FILE...: none of the outputs shows enroot's collision errors.
refute_collisions() {
    if grep -lE 'File already exists|Could not acquire rootfs lock|pyxis: ' "$@" >&2; then
        echo "collision or pyxis error messages in the outputs above" >&2
        return 1
    fi
}

@test "concurrency: 5 steps create 5 distinct named containers from the registry at once" {
    local i pids=() names=()
    for i in 0 1 2 3 4; do
        new_name "cc$i"
        names+=("$CNAME")
        bg_step "$BATS_TEST_TMPDIR/out.$i" --container-name="$CNAME" --container-image="$PXT_REG_BUSYBOX" \
            sh -c "echo created-by-$i > /i3-file"
        pids+=("$BG_PID")
    done
    wait_all "$BATS_TEST_TMPDIR/out" "${pids[@]}"
    for i in 0 1 2 3 4; do
        container_exists "pyxis_${names[$i]}"
        run_step_ok --container-name="${names[$i]}" cat /i3-file
        [ "$output" = "created-by-$i" ]
    done
    assert_no_lock_files "${names[@]}"
    assert_no_runtime_files "$ALLOC_JOB"
}

@test "concurrency: 5 steps creating one new name at once all succeed and share it (W2)" {
    local i pids=()
    new_name cc-same
    for i in 0 1 2 3 4; do
        # shellcheck disable=SC2016  # expanded inside the container
        bg_step "$BATS_TEST_TMPDIR/out.$i" --container-name="$CNAME" --container-image="$PXT_IMAGE" \
            sh -c 'echo "$SLURM_STEP_ID" >> /i3-steps'
        pids+=("$BG_PID")
    done
    wait_all "$BATS_TEST_TMPDIR/out" "${pids[@]}"
    refute_collisions "$BATS_TEST_TMPDIR"/out.*
    # one filesystem got all five lines: nobody re-created it under another's feet
    run_step_ok --container-name="$CNAME" sh -c 'sort -u /i3-steps | wc -l'
    [ "$output" -eq 5 ]
    assert_no_lock_files "$CNAME"
}

@test "concurrency: 50 staggered concurrent :no_exec steps over 5 names all succeed" {
    local i pids=() names=()
    for i in 0 1 2 3 4; do
        new_name "nx$i"
        names+=("$CNAME")
        run_step_ok --container-name="$CNAME" --container-image="$PXT_IMAGE" sh -c "echo name-$i > /i3-file"
    done
    for i in $(seq 0 49); do
        bg_step "$BATS_TEST_TMPDIR/out.$i" --container-name="${names[$((i % 5))]}:no_exec" \
            --container-image="$PXT_IMAGE" sh -c 'cat /i3-file; sleep 1'
        pids+=("$BG_PID")
        sleep 0.1
    done
    wait_all "$BATS_TEST_TMPDIR/out" "${pids[@]}"
    refute_collisions "$BATS_TEST_TMPDIR"/out.*
    for i in $(seq 0 49); do
        grep -qx "name-$((i % 5))" "$BATS_TEST_TMPDIR/out.$i" \
            || { printf 'step %s did not run in %s:\n%s\n' "$i" "${names[$((i % 5))]}" "$(cat "$BATS_TEST_TMPDIR/out.$i")" >&2; return 1; }
    done
    assert_no_lock_files "${names[@]}"
    assert_no_runtime_files "$ALLOC_JOB"
}

@test "concurrency: a step waiting for another step's named container can be cancelled, the name stays usable (W18)" {
    local lock bg holder waited
    command -v flock >/dev/null || skip "needs flock(1)"
    new_name cc-wait
    # play the other step: hold the per-name lock pyxis keeps in the runtime directory (W2)
    lock="$(runtime_dir)/pyxis_$CNAME.lock"
    # the plugin makes the runtime directory on the user's first container step
    [ -d "$(runtime_dir)" ] || run_srun --container-image="$PXT_IMAGE" true
    [ -d "$(runtime_dir)" ]
    # one process that holds the lock and dies with it: the subshell becomes `sleep`
    (exec 9>>"$lock" 3>&- && flock 9 && exec sleep 120) &
    holder=$!
    sleep 0.5
    bg_step "$BATS_TEST_TMPDIR/waiter.out" --container-name="$CNAME" --container-image="$PXT_IMAGE" echo pxt-command-ran
    bg=$BG_PID
    # the step runs on the node (its task is in pyxis's setup) ...
    local end=$((SECONDS + 60))
    until squeue -h -s -j "$ALLOC_JOB" -o %i 2>/dev/null | grep -qx "$ALLOC_JOB.0"; do
        if ! kill -0 "$bg" 2>/dev/null || [ "$SECONDS" -ge "$end" ]; then
            printf 'the waiting step never ran:\n%s\n' "$(cat "$BATS_TEST_TMPDIR/waiter.out")" >&2
            return 1
        fi
        sleep 0.2
    done
    # ... and waits instead of creating the container under the holder's feet
    sleep 3
    kill -0 "$bg"
    refute_container "pyxis_$CNAME"
    scancel "$ALLOC_JOB"
    waited=$SECONDS
    # the job's cancel reaches the waiting step: srun ends promptly (KillWait=5)
    wait "$bg" || true
    [ $((SECONDS - waited)) -lt 30 ]
    if grep -qx pxt-command-ran "$BATS_TEST_TMPDIR/waiter.out"; then cat "$BATS_TEST_TMPDIR/waiter.out" >&2; return 1; fi
    kill "$holder" 2>/dev/null || true
    wait "$holder" 2>/dev/null || true
    # nothing wedged: a new step creates the name at once
    alloc_job i3-concurrency
    run_step_ok --container-name="$CNAME" --container-image="$PXT_IMAGE" echo pxt-command-ran
    assert_output_contains "pxt-command-ran"
    container_exists "pyxis_$CNAME"
    assert_no_lock_files "$CNAME"
}

@test "concurrency: steps that waited on the name lock join the container one of them created and started" {
    local lock holder ctl a b
    command -v flock >/dev/null || skip "needs flock(1)"
    new_name cc-join
    lock="$(runtime_dir)/pyxis_$CNAME.lock"
    [ -d "$(runtime_dir)" ] || run_srun --container-image="$PXT_IMAGE" true
    [ -d "$(runtime_dir)" ]
    ctl="$BATS_TEST_TMPDIR/ctl"
    mkdir -p "$ctl"
    # hold the name lock so that both steps decide "create" in user_init and then wait
    (exec 9>>"$lock" 3>&- && flock 9 && exec sleep 120) &
    holder=$!
    sleep 0.5
    # each step writes its namespaces and stays until told to stop; a step that attaches
    # sees the creator's /i5ctl (its mounts are ignored, the mount namespace is shared)
    # shellcheck disable=SC2016  # expanded inside the container
    local hold='for n in mnt ipc uts; do readlink /proc/self/ns/$n; done > /i5ctl/ns.tmp.$SLURM_STEP_ID && mv /i5ctl/ns.tmp.$SLURM_STEP_ID /i5ctl/ns.$SLURM_STEP_ID; while [ ! -e /i5ctl/stop ]; do sleep 0.2; done'
    bg_step "$BATS_TEST_TMPDIR/a.out" --container-name="$CNAME" --container-image="$PXT_IMAGE" \
        --container-mounts="$ctl:/i5ctl" sh -c "$hold"
    a=$BG_PID
    bg_step "$BATS_TEST_TMPDIR/b.out" --container-name="$CNAME" --container-image="$PXT_IMAGE" \
        --container-mounts="$ctl:/i5ctl" sh -c "$hold"
    b=$BG_PID
    local end=$((SECONDS + 60))
    until [ "$(squeue -h -s -j "$ALLOC_JOB" -o %i 2>/dev/null | grep -c "^$ALLOC_JOB\.[01]$")" -eq 2 ]; do
        if [ "$SECONDS" -ge "$end" ]; then echo "the two steps never ran" >&2; return 1; fi
        sleep 0.2
    done
    sleep 1
    refute_container "pyxis_$CNAME"
    kill "$holder"
    wait "$holder" 2>/dev/null || true
    end=$((SECONDS + 90))
    until [ -s "$ctl/ns.0" ] && [ -s "$ctl/ns.1" ]; do
        if [ "$SECONDS" -ge "$end" ] || ! kill -0 "$a" 2>/dev/null || ! kill -0 "$b" 2>/dev/null; then
            printf 'both steps should be running in the container:\nstep a:\n%s\nstep b:\n%s\n' \
                "$(cat "$BATS_TEST_TMPDIR/a.out")" "$(cat "$BATS_TEST_TMPDIR/b.out")" >&2
            touch "$ctl/stop"
            return 1
        fi
        sleep 0.2
    done
    printf 'step 0: %s\nstep 1: %s\n' "$(tr '\n' ' ' < "$ctl/ns.0")" "$(tr '\n' ' ' < "$ctl/ns.1")"
    # one container, one set of namespaces: the second step attached, it did not start a second instance
    cmp "$ctl/ns.0" "$ctl/ns.1"
    # and the running container has no IPC namespace of its own (pyxis's check on attach)
    run_step --container-name="$CNAME" --container-unshare=ipc true
    assert_failure_with "not in a separate IPC namespace"
    touch "$ctl/stop"
    wait "$a"
    wait "$b"
    assert_no_lock_files "$CNAME"
}
