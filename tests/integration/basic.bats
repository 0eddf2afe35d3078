#!/usr/bin/env bats
# The foundation: a step runs inside a squashfs image through real srun/sbatch,
# all tasks of a step share one container, steps without container options are
# untouched, the options are registered in srun/sbatch/salloc, and unnamed
# containers never outlive their step (failure and scancel included).

load common

setup() {
    [ -r "$PXT_IMAGE" ] || skip "no test image $PXT_IMAGE (run tests/harness/up.sh)"
    snapshot_containers
}

@test "srun --container-image=<absolute squashfs> runs inside the image" {
    run_srun --container-image="$PXT_IMAGE" grep PRETTY /etc/os-release
    assert_output_contains "$PXT_PRETTY"
    # not the host's os-release
    [ "$(grep -c '^PRETTY_NAME=' <<< "$output")" -eq 1 ]
    refute_output_contains "$(grep '^PRETTY_NAME=' /etc/os-release)"
    assert_no_new_containers
}

@test "srun --container-image=./busybox.sqsh resolves against the working directory" {
    cp "$PXT_IMAGE" "$BATS_TEST_TMPDIR/busybox.sqsh"
    cd "$BATS_TEST_TMPDIR"
    run_srun --container-image=./busybox.sqsh grep PRETTY /etc/os-release
    assert_output_contains "$PXT_PRETTY"
    assert_no_new_containers
}

@test "srun -n 4: all tasks share one container mount namespace, not the host's" {
    run_srun_stdout readlink /proc/self/ns/mnt
    local host_ns=$output
    [[ "$host_ns" =~ ^mnt:\[[0-9]+\]$ ]]

    run_srun_stdout -n 4 --container-image="$PXT_IMAGE" readlink /proc/self/ns/mnt
    printf 'host: %s\ncontainer tasks:\n%s\n' "$host_ns" "$output"
    [ "$(grep -c . <<< "$output")" -eq 4 ]
    [ "$(sort -u <<< "$output" | grep -c .)" -eq 1 ]
    local ns
    ns=$(sort -u <<< "$output")
    [[ "$ns" =~ ^mnt:\[[0-9]+\]$ ]]
    [ "$ns" != "$host_ns" ]
    assert_no_new_containers
}

@test "unnamed containers are removed after their steps" {
    run_srun --container-image="$PXT_IMAGE" true
    run_srun -n 2 --container-image="$PXT_IMAGE" true
    assert_no_new_containers
    # and the listing itself works: enroot list does not fail
    enroot_list >/dev/null
}

@test "a step without container options runs normally on the host" {
    # stdout only: srun may say "job N queued and waiting for resources" on stderr
    run_srun_stdout hostname
    [ "$output" = "$(hostname)" ]
    run_srun_stdout grep '^PRETTY_NAME=' /etc/os-release
    [ "$output" = "$(grep '^PRETTY_NAME=' /etc/os-release)" ]
    [ -z "$(new_containers)" ]
}

@test "srun --help lists all 16 pyxis options" {
    assert_help_lists_all_options srun
    run srun --help
    assert_output_contains "[pyxis]"
}

@test "sbatch --help lists all 16 pyxis options" {
    assert_help_lists_all_options sbatch
}

@test "salloc --help lists all 16 pyxis options" {
    assert_help_lists_all_options salloc
}

@test "a failing command inside the container fails srun and leaves no container" {
    run_srun_unchecked --container-image="$PXT_IMAGE" false
    [ "$status" -ne 0 ]
    run_srun_unchecked --container-image="$PXT_IMAGE" sh -c 'exit 3'
    [ "$status" -ne 0 ]
    assert_no_new_containers
}

@test "scancel of a running containerised step leaves no container" {
    local name="pxt-scancel-$$-$RANDOM" jobid="" srun_pid
    timeout "$PXT_CMD_TIMEOUT" srun -N1 --oversubscribe -J "$name" --container-image="$PXT_IMAGE" \
        sh -c 'grep -q "pyxis-rs test" /etc/os-release && echo in-container; exec sleep 300' \
        >"$BATS_TEST_TMPDIR/srun.out" 2>&1 3>&- &
    srun_pid=$!
    # wait until the step runs in its container (started directly from the squashfs by
    # default: there may be no container filesystem to see)
    for _ in $(seq 1 120); do
        jobid=$(squeue -h -u "$(id -un)" -n "$name" -t R -o %i | head -n 1)
        if [ -n "$jobid" ] && grep -q in-container "$BATS_TEST_TMPDIR/srun.out"; then break; fi
        kill -0 "$srun_pid" 2>/dev/null || break
        sleep 0.5
    done
    if [ -z "$jobid" ] || ! grep -q in-container "$BATS_TEST_TMPDIR/srun.out"; then
        scancel -n "$name" 2>/dev/null || true
        wait "$srun_pid" || true
        printf 'the containerised step never ran (job %s); srun said:\n%s\n' "${jobid:-none}" "$(cat "$BATS_TEST_TMPDIR/srun.out")" >&2
        return 1
    fi
    sleep 1   # let the task get past container setup into `sleep`
    scancel "$jobid"
    # srun must end soon after the cancel (KillWait=5 in the test cluster)
    for _ in $(seq 1 60); do
        kill -0 "$srun_pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$srun_pid" 2>/dev/null; then
        kill "$srun_pid" 2>/dev/null || true
        echo "srun did not exit within 30 s of scancel" >&2
        return 1
    fi
    wait "$srun_pid" || true
    assert_no_new_containers 20
}

@test "the task runs as the job user inside the container" {
    run_srun_stdout --container-image="$PXT_IMAGE" id -u
    [ "$output" = "$(id -u)" ]
    run_srun_stdout --container-image="$PXT_IMAGE" id -g
    [ "$output" = "$(id -g)" ]
    assert_no_new_containers
}

@test "sbatch --container-image on the command line runs the batch script in the image" {
    run_sbatch --container-image="$PXT_IMAGE" --wrap 'grep PRETTY /etc/os-release'
    assert_output_contains "$PXT_PRETTY"
    assert_no_new_containers
}

@test "#SBATCH --container-image in the script runs the batch script in the image" {
    local script="$BATS_TEST_TMPDIR/job.sh"
    printf '#!/bin/sh\n#SBATCH --container-image=%s\ngrep PRETTY /etc/os-release\n' "$PXT_IMAGE" > "$script"
    run_sbatch "$script"
    assert_output_contains "$PXT_PRETTY"
    assert_no_new_containers
}

@test "sbatch without container options runs the batch script on the host" {
    run_sbatch --wrap 'grep ^PRETTY_NAME= /etc/os-release'
    [ "$output" = "$(grep '^PRETTY_NAME=' /etc/os-release)" ]
}
