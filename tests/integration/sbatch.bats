#!/usr/bin/env bats
# sbatch and salloc (reference §4.6, §4.7): #SBATCH --container-* lines containerise the
# batch script (squashfs and registry images, '#' escaped in #SBATCH lines), the script is
# bind-mounted read-only where slurmstepd execs it, and the steps of a `salloc
# --container-image` allocation inherit the image.

load common
load features

setup() {
    [ -r "$PXT_IMAGE" ] || skip "no test image $PXT_IMAGE (run tests/harness/up.sh)"
    snapshot_containers
    SCRIPT="$BATS_TEST_TMPDIR/job.sh"
}

# write_script LINE...: the batch script, one argument per line, after #!/bin/sh.
write_script() {
    printf '%s\n' '#!/bin/sh' "$@" > "$SCRIPT"
}

@test "sbatch: #SBATCH --container-image=<squashfs> runs the script in the image, mounted read-only" {
    # shellcheck disable=SC2016  # expanded by the batch script
    write_script "#SBATCH --container-image=$PXT_IMAGE" \
        'grep PRETTY /etc/os-release' \
        'echo "uid=$(id -u)"' \
        'awk -v s="$0" '"'"'$5 == s {print "script mount:", $6}'"'"' /proc/self/mountinfo'
    run_sbatch "$SCRIPT"
    printf 'job output:\n%s\n' "$output"
    assert_output_contains "$PXT_PRETTY"
    assert_output_contains "uid=$(id -u)"
    # the spool copy of the script, bind-mounted at the same path, read-only
    [[ "$(sed -n 's/^script mount: //p' <<< "$output")" =~ (^|,)ro(,|$) ]]
    assert_no_own_leftovers
}

@test "sbatch: #SBATCH --container-image=127.0.0.1:5000\\#pyxis/busybox:latest (escaped #)" {
    write_script '#SBATCH --container-image=127.0.0.1:5000\#pyxis/busybox:latest' \
        'grep PRETTY /etc/os-release'
    run_sbatch "$SCRIPT"
    assert_output_contains "$PXT_PRETTY"
    assert_no_own_leftovers
}

@test "sbatch: #SBATCH workdir, mounts and env options apply to the batch script" {
    mkdir -p "$BATS_TEST_TMPDIR/data"
    echo "batch data" > "$BATS_TEST_TMPDIR/data/f"
    # shellcheck disable=SC2016  # expanded by the batch script
    write_script '#SBATCH --container-image=127.0.0.1:5000\#pyxis/app:latest' \
        '#SBATCH --container-workdir=/tmp' \
        "#SBATCH --container-mounts=$BATS_TEST_TMPDIR/data:/i4-data:ro" \
        '#SBATCH --container-env=FOO' \
        'pwd' 'cat /i4-data/f' 'echo "IMAGE_VAR=$IMAGE_VAR FOO=$FOO"'
    FOO=from-submit run_sbatch "$SCRIPT"
    printf 'job output:\n%s\n' "$output"
    assert_output_contains "$(printf '/tmp\nbatch data\nIMAGE_VAR=from-image FOO=from-submit')"
    assert_no_own_leftovers
}

@test "sbatch: --container-image=<registry image> on the command line" {
    # shellcheck disable=SC2016  # expanded by the batch script
    run_sbatch --container-image="$PXT_REG_APP" --wrap 'echo "IMAGE_VAR=$IMAGE_VAR"; grep PRETTY /etc/os-release'
    assert_output_contains "IMAGE_VAR=from-image"
    assert_output_contains "$PXT_PRETTY"
    assert_no_own_leftovers
}

@test "salloc --container-image: the steps of the allocation inherit the image" {
    # shellcheck disable=SC2016  # expanded by the allocation's shell
    run timeout "$PXT_CMD_TIMEOUT" salloc -N1 -n 2 --oversubscribe --container-image="$PXT_IMAGE" \
        sh -c 'echo "shell: $(grep ^PRETTY_NAME= /etc/os-release)"; srun -n 2 grep ^PRETTY_NAME= /etc/os-release'
    printf 'status %s, output:\n%s\n' "$status" "$output"
    [ "$status" -eq 0 ]
    # the allocation's own shell runs on the host ...
    assert_output_contains "shell: $(grep '^PRETTY_NAME=' /etc/os-release)"
    # ... its steps in the image
    [ "$(grep -cF "$PXT_PRETTY" <<< "$output")" -eq 2 ]
    assert_no_own_leftovers
}
