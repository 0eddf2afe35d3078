#!/usr/bin/env bats
# The image entrypoint (reference §5.17, §5.7): not run by default (execute_entrypoint=0),
# run with --container-entrypoint, its output shown with --container-entrypoint-log,
# --container-env values reach it, an entrypoint that never runs the command fails the
# step with pyxis's hint, and disabling it does not rewrite a named container (W7).

# bats runs setup, the test and teardown in one shell per test: NAMES and $status set in
# a test are what teardown and the helpers see
# shellcheck disable=SC2030,SC2031

load common
load features

setup() {
    snapshot_containers
    NAMES=()
}

teardown() {
    release_jobs
    remove_containers "${NAMES[@]}"
}

# shellcheck disable=SC2016  # expanded inside the container
SHOW='echo "ENTRYPOINT_VAR=${ENTRYPOINT_VAR-unset}"'

# site_runs_entrypoints: the plugin configuration turns entrypoints on by default.
site_runs_entrypoints() {
    grep -hEqs '(^|[[:space:]])execute_entrypoint=(1|true|yes|y)([[:space:]]|$)' "${SLURM_CONF_DIR:-/etc/slurm}"/plugstack.conf.d/*
}

# custom_entrypoint: a script to bind over pyxis/app's entrypoint; it prints the variables
# it sees (X, Y) and runs the command like a well-behaved entrypoint. Prints its path.
custom_entrypoint() {
    local f="$BATS_TEST_TMPDIR/entrypoint.sh"
    # shellcheck disable=SC2016  # expanded by the entrypoint
    printf '%s\n' '#!/bin/sh' 'echo "custom entrypoint sees X=${X-unset} Y=${Y-unset}"' 'exec "$@"' > "$f"
    chmod 0755 "$f"
    printf '%s\n' "$f"
}

@test "entrypoint: not run by default" {
    if site_runs_entrypoints; then skip "the plugin is configured with execute_entrypoint=1"; fi
    run_srun --container-image="$PXT_REG_APP" sh -c "$SHOW"
    assert_output_contains "ENTRYPOINT_VAR=unset"
    refute_output_contains "$PXT_ENTRYPOINT_LINE"
    assert_no_own_leftovers
}

@test "entrypoint: --no-container-entrypoint does not run it" {
    run_srun --container-image="$PXT_REG_APP" --no-container-entrypoint sh -c "$SHOW"
    assert_output_contains "ENTRYPOINT_VAR=unset"
    refute_output_contains "$PXT_ENTRYPOINT_LINE"
    assert_no_own_leftovers
}

@test "entrypoint: --container-entrypoint runs it, for every task, its output hidden" {
    run_srun -n 3 --container-image="$PXT_REG_APP" --container-entrypoint sh -c "$SHOW"
    [ "$(grep -cxF "$PXT_ENTRYPOINT_VAR" <<< "$output")" -eq 3 ]
    refute_output_contains "$PXT_ENTRYPOINT_LINE"
    assert_no_own_leftovers
}

@test "entrypoint: --container-entrypoint-log prints its output" {
    run_srun --container-image="$PXT_REG_APP" --container-entrypoint --container-entrypoint-log sh -c "$SHOW"
    assert_output_contains "$PXT_ENTRYPOINT_VAR"
    # once per step (the entrypoint runs once, in the container's start)
    [ "$(grep -cxF "$PXT_ENTRYPOINT_LINE" <<< "$output")" -eq 1 ]
    assert_no_own_leftovers
}

@test "entrypoint: --container-env values reach the entrypoint, other host variables do not" {
    local ep
    ep=$(custom_entrypoint)
    # shellcheck disable=SC2016  # expanded inside the container
    X=from-host Y=also-host run_srun --container-image="$PXT_REG_APP" --container-entrypoint --container-entrypoint-log \
        --container-env=X --container-mounts="$ep:/app/bin/entrypoint.sh:ro" sh -c 'echo "task sees X=$X Y=$Y"'
    assert_output_contains "custom entrypoint sees X=from-host Y=unset"
    # the task itself has both (Y passes as a host-only variable)
    assert_output_contains "task sees X=from-host Y=also-host"
    assert_no_own_leftovers
}

@test "entrypoint: an entrypoint that does not run the command fails with the hint" {
    run_srun_unchecked --container-image="$PXT_REG_BADENTRY" --container-entrypoint true
    assert_failure_with "if the image has an unusual entrypoint, try using --no-container-entrypoint"
    # without the entrypoint the same image works
    run_srun --container-image="$PXT_REG_BADENTRY" --no-container-entrypoint true
    assert_no_own_leftovers
}

@test "entrypoint (W7): a named container run without the entrypoint still runs it later" {
    local name rootfs before
    name=$(i4_name w7)
    NAMES+=("$name")
    # both steps in one job: a named container of container_scope=job lives until the job ends
    alloc_job
    run_step_ok --container-image="$PXT_REG_APP" --container-name="$name" --no-container-entrypoint sh -c "$SHOW"
    assert_output_contains "ENTRYPOINT_VAR=unset"
    # on disk, /etc/rc.local is still the image's (pyxis wrote 'exec "$@"' into it)
    rootfs=$(container_rootfs "$name" "$ALLOC_JOB")
    if [ -z "$rootfs" ]; then
        echo "the named container's directory is not under '$(enroot_data_path)'" >&2
        return 1
    fi
    before=$(cat "$rootfs/etc/rc.local" 2>/dev/null || echo "<no rc.local>")
    printf 'on-disk rc.local after the first step:\n%s\n' "$before"
    # shellcheck disable=SC2016  # literal
    if grep -qxF 'exec "$@"' <<< "$before"; then
        echo "the first step rewrote the named container's /etc/rc.local" >&2
        return 1
    fi

    run_step_ok --container-name="$name" --container-entrypoint --container-entrypoint-log sh -c "$SHOW"
    assert_output_contains "$PXT_ENTRYPOINT_LINE"
    assert_output_contains "$PXT_ENTRYPOINT_VAR"
    [ "$(cat "$rootfs/etc/rc.local" 2>/dev/null || echo "<no rc.local>")" = "$before" ]
    # and disabled again for a third step
    run_step_ok --container-name="$name" --no-container-entrypoint sh -c "$SHOW"
    assert_output_contains "ENTRYPOINT_VAR=unset"
    refute_output_contains "$PXT_ENTRYPOINT_LINE"
}

@test "entrypoint (W7): --container-save of a step without the entrypoint keeps the image's entrypoint" {
    local saved="$BATS_TEST_TMPDIR/saved.sqsh"
    run_srun --container-image="$PXT_REG_APP" --no-container-entrypoint --container-save="$saved" sh -c "$SHOW"
    assert_output_contains "ENTRYPOINT_VAR=unset"
    [ -s "$saved" ]
    # pyxis exported the rc.local it had overwritten, so the saved image never ran its entrypoint
    run_srun --container-image="$saved" --container-entrypoint --container-entrypoint-log sh -c "$SHOW"
    assert_output_contains "$PXT_ENTRYPOINT_LINE"
    assert_output_contains "$PXT_ENTRYPOINT_VAR"
    assert_no_own_leftovers
}
