#!/usr/bin/env bats
# The working directory of the tasks (reference §5.16): --container-workdir, absolute
# or relative to the container root, a missing directory fails the step, and without
# the option the image's WORKDIR (registry images) or enroot's default.

load common
load features

setup() {
    [ -r "$PXT_IMAGE" ] || skip "no test image $PXT_IMAGE (run tests/harness/up.sh)"
    snapshot_containers
}

@test "workdir: --container-workdir=/tmp (absolute), in every task" {
    run_srun_stdout -n 4 --container-image="$PXT_IMAGE" --container-workdir=/tmp pwd
    [ "$output" = "$(printf '/tmp\n/tmp\n/tmp\n/tmp')" ]
    assert_no_own_leftovers
}

@test "workdir: a relative --container-workdir=../ ends at /" {
    run_srun_stdout --container-image="$PXT_IMAGE" --container-workdir=../ pwd
    [ "$output" = / ]
    assert_no_own_leftovers
}

@test "workdir: a relative --container-workdir is relative to the container root, not to WORKDIR" {
    # pyxis changes directory right after joining the mount namespace, which puts the
    # task at the container root: bin is /bin even though pyxis/app's WORKDIR is /app
    run_srun_stdout --container-image="$PXT_REG_APP" --container-workdir=bin pwd
    [ "$output" = /bin ]
    assert_no_own_leftovers
}

@test "workdir: a missing directory fails the step with couldn't chdir" {
    run_srun_unchecked --container-image="$PXT_IMAGE" --container-workdir=/nonexistent pwd
    assert_failure_with "couldn't chdir to /nonexistent"
    assert_output_contains "/nonexistent: No such file or directory"
    assert_no_own_leftovers
}

@test "workdir: the default is the image's WORKDIR (/app for pyxis/app)" {
    run_srun_stdout -n 2 --container-image="$PXT_REG_APP" pwd
    [ "$output" = "$(printf '/app\n/app')" ]
    assert_no_own_leftovers
}

@test "workdir: --container-workdir overrides the image's WORKDIR" {
    run_srun_stdout --container-image="$PXT_REG_APP" --container-workdir=/tmp pwd
    [ "$output" = /tmp ]
    assert_no_own_leftovers
}

@test "workdir: a squashfs without /etc/rc starts in the user's home, as enroot's login setup does" {
    run_srun_stdout --container-image="$PXT_IMAGE" pwd
    [ "$output" = "$HOME" ]
    assert_no_own_leftovers
}
