#!/usr/bin/env bats
# plugstack.conf arguments (reference §3), checked where they are parsed on the
# submission side: sbatch (allocator context) parses the plugin's arguments at
# init, so a bad argument makes every sbatch fail, while srun (local context)
# never parses them.
#
# Needs root: each test rewrites /etc/slurm/plugstack.conf.d/pyxis.conf and
# restores it afterwards. slurmd is NOT restarted (it would refuse to start
# with a bad argument), so nothing here touches running jobs. The commands
# under test run as the unprivileged test user. tests/run-all.sh runs this file
# as root after the user suites.

load common

: "${SLURM_ETC:=/etc/slurm}"
: "${PXT_USER:=pyxistest}"
PXT_CONFD_ENTRY="$SLURM_ETC/plugstack.conf.d/pyxis.conf"

setup() {
    [ "$(id -u)" -eq 0 ] || skip "rewrites plugstack.conf: run as root (tests/run-all.sh does)"
    [ -e "$PXT_CONFD_ENTRY" ] || skip "no $PXT_CONFD_ENTRY (run tests/harness/up.sh)"
    id "$PXT_USER" >/dev/null 2>&1 || skip "no test user $PXT_USER"
    # keep the entry exactly as it is (a symlink to the installed pyxis.conf, or a file)
    cp -P "$PXT_CONFD_ENTRY" "$BATS_TEST_TMPDIR/pyxis.conf.saved"
}

teardown() {
    if [ -e "$BATS_TEST_TMPDIR/pyxis.conf.saved" ] || [ -L "$BATS_TEST_TMPDIR/pyxis.conf.saved" ]; then
        rm -f "$PXT_CONFD_ENTRY"
        cp -P "$BATS_TEST_TMPDIR/pyxis.conf.saved" "$PXT_CONFD_ENTRY"
    fi
}

# with_plugin_args ARGS...: the active pyxis line with ARGS appended
with_plugin_args() {
    local line
    line=$(grep -Ev '^[[:space:]]*(#|$)' "$PXT_CONFD_ENTRY" | head -n 1)
    [ -n "$line" ]
    rm -f "$PXT_CONFD_ENTRY"
    printf '%s %s\n' "$line" "$*" > "$PXT_CONFD_ENTRY"
    chmod 0644 "$PXT_CONFD_ENTRY"
}

# as_test_user CMD...: CMD as the unprivileged user, clean environment, from /tmp
as_test_user() {
    (cd /tmp && runuser -u "$PXT_USER" -- env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 "$@")
}

@test "config: an unknown plugstack argument makes sbatch fail" {
    with_plugin_args pxt_unknown_key=1
    run as_test_user timeout 60 sbatch -o /dev/null --wrap true
    assert_failure_with "pyxis: unknown configuration option: pxt_unknown_key=1"
}

@test "config: an argument without '=' is unknown too" {
    with_plugin_args container_scope
    run as_test_user timeout 60 sbatch -o /dev/null --wrap true
    assert_failure_with "pyxis: unknown configuration option: container_scope"
}

@test "config: an invalid boolean is rejected" {
    with_plugin_args sbatch_support=maybe
    run as_test_user timeout 60 sbatch -o /dev/null --wrap true
    assert_failure_with "pyxis: sbatch_support: invalid value: maybe"
}

@test "config: an invalid container_scope is rejected" {
    with_plugin_args container_scope=bogus
    run as_test_user timeout 60 sbatch -o /dev/null --wrap true
    assert_failure_with "pyxis: container_scope: invalid value: bogus"
}

@test "config: srun does not parse the plugin arguments (its --help still works)" {
    with_plugin_args pxt_unknown_key=1
    run as_test_user timeout 60 srun --help
    [ "$status" -eq 0 ]
    assert_output_contains "--container-image"
}

@test "config: sbatch_support=0 hides the options from sbatch and salloc, not from srun" {
    with_plugin_args sbatch_support=0
    run as_test_user sbatch --help
    [ "$status" -eq 0 ]
    refute_output_contains "--container-image"
    run as_test_user salloc --help
    [ "$status" -eq 0 ]
    refute_output_contains "--container-image"
    run as_test_user srun --help
    assert_output_contains "--container-image"
    # and an sbatch that uses one is rejected by sbatch itself
    run as_test_user timeout 60 sbatch -o /dev/null --container-image="$PXT_IMAGE" --wrap true
    [ "$status" -ne 0 ]
}

@test "config: valid arguments are accepted by sbatch" {
    with_plugin_args container_scope=job sbatch_support=1 runtime_path=/run/pyxis
    run as_test_user sbatch --help
    [ "$status" -eq 0 ]
    assert_output_contains "--container-image"
    refute_output_contains "pyxis: "
}
