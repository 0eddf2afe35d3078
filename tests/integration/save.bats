#!/usr/bin/env bats
# --container-save=PATH (reference §5.19, upstream squashfs_image.bats, W14, W20):
# at the end of the step the container is exported to a squashfs file (absolute
# path, or relative to the job's working directory, reported as given), once per
# step, before an unnamed container is removed; the file round-trips the changes
# and can be saved again; a step whose container never started exports nothing (and,
# unlike pyxis, says so: README, W20).

load common
load containers

setup() {
    [ -r "$PXT_IMAGE" ] || skip "no test image $PXT_IMAGE (run tests/harness/up.sh)"
    CREATED_NAMES=()
}

teardown() {
    remove_named "${CREATED_NAMES[@]}"
    release_jobs
}

# assert_squashfs FILE: FILE is a squashfs image (magic "hsqs").
assert_squashfs() {
    if [ ! -s "$1" ] || [ "$(head -c 4 "$1")" != hsqs ]; then
        printf '%s is not a squashfs file:\n%s\n' "$1" "$(ls -l "$1" 2>&1)" >&2
        return 1
    fi
}

@test "save: an absolute path gets the container, which runs again with the change" {
    local saved="$BATS_TEST_TMPDIR/saved.sqsh" step
    # shellcheck disable=SC2016  # expanded inside the container
    run_srun --container-image="$PXT_IMAGE" --container-save="$saved" \
        sh -c 'echo round-trip > /i3-saved; echo "STEP=$SLURM_JOB_ID.$SLURM_STEP_ID"'
    step=$(step_id_of)
    [ -n "$step" ]
    [ "$(count_lines_with "pyxis: exported container pyxis_$step to $saved")" -eq 1 ]
    assert_squashfs "$saved"
    # exported before the unnamed container was removed, which still happens
    wait_container_gone "pyxis_$step"
    run_srun_stdout --container-image="$saved" sh -c 'cat /i3-saved; grep PRETTY /etc/os-release'
    assert_output_contains "round-trip"
    assert_output_contains "$PXT_PRETTY"
}

@test "save: a relative path resolves against the working directory and is reported as given" {
    mkdir -p "$BATS_TEST_TMPDIR/work/out"
    cd "$BATS_TEST_TMPDIR/work"
    run_srun --container-image="$PXT_IMAGE" --container-save=out/rel.sqsh sh -c 'echo relative > /i3-saved'
    assert_output_contains "to out/rel.sqsh"
    refute_output_contains "to $BATS_TEST_TMPDIR"
    assert_squashfs "$BATS_TEST_TMPDIR/work/out/rel.sqsh"
    run_srun_stdout --container-image=./out/rel.sqsh cat /i3-saved
    [ "$output" = relative ]
}

@test "save: a path that is not UTF-8, relative to a working directory that is not either, is exact" {
    local work="$BATS_TEST_TMPDIR/w"$'\xff'
    mkdir -p "$work"
    cd "$work"
    run_srun --container-image="$PXT_IMAGE" --container-save=s$'\xfe'.sqsh sh -c 'echo bytes > /i3-saved'
    # the message shows the bytes escaped
    assert_output_contains 'to s\xfe.sqsh'
    assert_squashfs "$work/s"$'\xfe'.sqsh
    run_srun_stdout --container-image="$work/s"$'\xfe'.sqsh cat /i3-saved
    [ "$output" = bytes ]
}

@test "save: a relative path without PWD in the job environment is refused, not guessed" {
    mkdir -p "$BATS_TEST_TMPDIR/work"
    cd "$BATS_TEST_TMPDIR/work"
    # shellcheck disable=SC2016  # expanded inside the container
    run timeout "$PXT_CMD_TIMEOUT" env -u PWD srun -N1 --oversubscribe --container-image="$PXT_IMAGE" \
        --container-save=nopwd.sqsh sh -c 'echo "STEP=$SLURM_JOB_ID.$SLURM_STEP_ID"'
    assert_output_contains "pyxis: container export: relative path used, but job's cwd is unset"
    refute_output_contains "exported container"
    [ ! -e "$BATS_TEST_TMPDIR/work/nopwd.sqsh" ]
    [ -n "$(step_id_of)" ]
    wait_container_gone "pyxis_$(step_id_of)"
}

@test "save: chained saves (save, run from the file, save into it again) keep every change" {
    local saved="$BATS_TEST_TMPDIR/chain.sqsh" other="$BATS_TEST_TMPDIR/chain2.sqsh"
    run_srun --container-image="$PXT_IMAGE" --container-save="$saved" sh -c 'echo first > /i3-first'
    run_srun --container-image="$saved" --container-save="$saved" sh -c 'cat /i3-first; echo second > /i3-second'
    assert_output_contains "first"
    run_srun --container-image="$saved" --container-save="$other" sh -c 'echo third > /i3-third'
    run_srun_stdout --container-image="$other" sh -c 'cat /i3-first /i3-second /i3-third'
    [ "$output" = "$(printf 'first\nsecond\nthird')" ]
    # the middle file did not get the third change
    run_srun_stdout --container-image="$saved" sh -c 'cat /i3-third 2>/dev/null || echo no-third'
    [ "$output" = no-third ]
}

@test "save: a named container is exported and kept" {
    local saved="$BATS_TEST_TMPDIR/named.sqsh"
    new_name save
    run_srun --container-name="$CNAME" --container-image="$PXT_IMAGE" --container-save="$saved" sh -c 'echo named > /i3-saved'
    assert_output_contains "pyxis: exported container pyxis_$CNAME to $saved"
    container_exists "pyxis_$CNAME"
    run_srun_stdout --container-image="$saved" cat /i3-saved
    [ "$output" = named ]
}

@test "save: a 2-task step exports once" {
    local saved="$BATS_TEST_TMPDIR/two.sqsh"
    # shellcheck disable=SC2016  # expanded inside the container
    run_srun -n 2 --container-image="$PXT_IMAGE" --container-save="$saved" sh -c 'echo "task $SLURM_PROCID" >> /i3-tasks'
    [ "$(count_lines_with "pyxis: exported container")" -eq 1 ]
    run_srun_stdout --container-image="$saved" sort /i3-tasks
    [ "$output" = "$(printf 'task 0\ntask 1')" ]
}

@test "save: the container is exported even when the command fails" {
    local saved="$BATS_TEST_TMPDIR/failed.sqsh"
    run_srun_unchecked --container-image="$PXT_IMAGE" --container-save="$saved" sh -c 'echo before-failure > /i3-saved; exit 3'
    [ "$status" -ne 0 ]
    assert_output_contains "pyxis: exported container"
    run_srun_stdout --container-image="$saved" cat /i3-saved
    [ "$output" = before-failure ]
}

@test "save: a step whose container never started exports nothing, and says why (W20)" {
    local saved="$BATS_TEST_TMPDIR/never.sqsh"
    alloc_job i3-save-never
    run_step --container-image="$PXT_REG_MISSING" --container-save="$saved" echo pxt-command-ran
    [ "$status" -ne 0 ]
    refute_output_contains "pxt-command-ran"
    assert_output_contains "failed to import docker image: $PXT_REG_MISSING"
    [ ! -e "$saved" ]
    refute_output_contains "exported container"
    refute_output_contains "failed to export container"
    # pyxis skipped it silently; pyxis-rs says why (README, W20)
    assert_output_contains "not exporting container"
    assert_no_runtime_files "$ALLOC_JOB"
}

@test "save: an unwritable target reports the failed export, and the container is still removed" {
    local saved="$BATS_TEST_TMPDIR/no-such-dir/x.sqsh" step
    # shellcheck disable=SC2016  # expanded inside the container
    run_srun_unchecked --container-image="$PXT_IMAGE" --container-save="$saved" sh -c 'echo "STEP=$SLURM_JOB_ID.$SLURM_STEP_ID"'
    step=$(step_id_of)
    [ -n "$step" ]
    assert_output_contains "pyxis: failed to export container pyxis_$step to $saved"
    refute_output_contains "pyxis: exported container"
    [ ! -e "$saved" ]
    wait_container_gone "pyxis_$step"
}

@test "save: ENROOT_SQUASH_OPTIONS of the user's environment reach enroot export" {
    local saved="$BATS_TEST_TMPDIR/tuned.sqsh"
    command -v unsquashfs >/dev/null || skip "no unsquashfs"
    ENROOT_SQUASH_OPTIONS='-comp gzip -b 65536' run_srun --container-image="$PXT_IMAGE" --container-save="$saved" true
    run unsquashfs -s "$saved"
    [ "$status" -eq 0 ]
    assert_output_contains "Compression gzip"
    assert_output_contains "Block size 65536"
}
