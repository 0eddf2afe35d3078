#!/usr/bin/env bats
# Invalid --container-* arguments (upstream invalid_args.bats, plus the cases
# the reference §4.2/§4.3 gives messages for): the command must fail, say why
# with a `pyxis: ` line, and leave no container behind.

load common

setup_file() {
    # containers that exist before this file runs are not ours to blame
    snapshot_containers "$BATS_FILE_TMPDIR/containers.before"
}

setup() {
    [ -r "$PXT_IMAGE" ] || skip "no test image $PXT_IMAGE (run tests/harness/up.sh)"
}

# --- --container-image -------------------------------------------------------

@test "invalid arg: --container-image= (empty)" {
    run_srun_unchecked --container-image= true
    assert_failure_with "--container-image: argument required"
}

@test "invalid arg: --container-image=<2 KiB of random characters>" {
    local image
    image=$(head -c 1536 /dev/urandom | base64 -w 0)   # 2048 characters, not a valid reference
    [ "${#image}" -eq 2048 ]
    run_srun_unchecked --container-image="$image" true
    assert_failure_with ""
}

@test "invalid arg: --container-image=./ (a directory)" {
    run_srun_unchecked --container-image=./ true
    assert_failure_with ""
}

@test "invalid arg: --container-image=/dev/urandom (not a squashfs)" {
    run_srun_unchecked --container-image=/dev/urandom true
    assert_failure_with ""
}

# --- --container-name --------------------------------------------------------

@test "invalid arg: --container-name of a container that does not exist, without --container-image" {
    local name="pxt-noimage-$$-$RANDOM"
    if enroot_list | grep -qx "pyxis_$name"; then
        echo "pyxis_$name exists already" >&2
        return 1
    fi
    run_srun_unchecked --container-name="$name" true
    assert_failure_with "does not exist"
}

@test "invalid arg: --container-name=/tmp/foo" {
    run_srun_unchecked --container-name=/tmp/foo --container-image="$PXT_IMAGE" true
    assert_failure_with ""
}

@test "invalid arg: --container-name=foo:attach (unknown flag)" {
    run_srun_unchecked --container-name=foo:attach --container-image="$PXT_IMAGE" true
    assert_failure_with 'flag must be "auto", "create", "exec" or "no_exec"'
}

@test "invalid arg: --container-name=<300 characters>" {
    local name
    name=$(printf 'n%.0s' $(seq 1 300))
    [ "${#name}" -eq 300 ]
    run_srun_unchecked --container-name="$name" --container-image="$PXT_IMAGE" true
    assert_failure_with ""
}

# --- --container-mounts ------------------------------------------------------

@test "invalid arg: --container-mounts= (empty)" {
    run_srun_unchecked --container-mounts= --container-image="$PXT_IMAGE" true
    assert_failure_with "--container-mounts: argument required"
}

@test "invalid arg: --container-mounts=:" {
    run_srun_unchecked --container-mounts=: --container-image="$PXT_IMAGE" true
    assert_failure_with "--container-mounts: invalid format: :"
}

@test "invalid arg: --container-mounts=/tmp: (empty target)" {
    run_srun_unchecked --container-mounts=/tmp: --container-image="$PXT_IMAGE" true
    assert_failure_with "--container-mounts: invalid format: /tmp:"
}

# --- --container-workdir -----------------------------------------------------

@test "invalid arg: --container-workdir= (empty)" {
    run_srun_unchecked --container-workdir= --container-image="$PXT_IMAGE" true
    assert_failure_with "--container-workdir: argument required"
}

# --- --container-writable / --container-readonly ------------------------------

@test "invalid arg: --container-readonly --container-writable together" {
    run_srun_unchecked --container-readonly --container-writable --container-image="$PXT_IMAGE" true
    assert_failure_with "both --container-writable and --container-readonly were specified"
}

# --- --container-env ---------------------------------------------------------

@test "invalid arg: --container-env= (empty)" {
    run_srun_unchecked --container-env= --container-image="$PXT_IMAGE" true
    assert_failure_with "--container-env: argument required"
}

@test "invalid arg: --container-env=FOO, (empty element)" {
    run_srun_unchecked --container-env=FOO, --container-image="$PXT_IMAGE" true
    assert_failure_with "--container-env: invalid format: FOO,"
}

# --- --container-save --------------------------------------------------------

@test "invalid arg: --container-save=/tmp/ (a directory)" {
    run_srun_unchecked --container-save=/tmp/ --container-image="$PXT_IMAGE" true
    assert_failure_with "--container-save: target is a directory"
}

@test "invalid arg: --container-save=/ (a directory)" {
    run_srun_unchecked --container-save=/ --container-image="$PXT_IMAGE" true
    assert_failure_with "--container-save: target is a directory"
}

@test "invalid arg: --container-save=./ (a directory)" {
    run_srun_unchecked --container-save=./ --container-image="$PXT_IMAGE" true
    assert_failure_with "--container-save: target is a directory"
}

# --- --container-unshare -----------------------------------------------------

@test "invalid arg: --container-unshare=foo (unknown namespace)" {
    run_srun_unchecked --container-unshare=foo --container-image="$PXT_IMAGE" true
    assert_failure_with "--container-unshare: unknown namespace"
}

# --- afterwards --------------------------------------------------------------

@test "no pyxis container is left after the invalid-argument steps" {
    assert_no_new_containers 20 "$BATS_FILE_TMPDIR/containers.before"
}
