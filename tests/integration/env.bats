#!/usr/bin/env bats
# The task environment (reference §5.13, §5.5 step 6, §4.5): host-only variables pass,
# image values win unless named in --container-env, the host locale is dropped, PyTorch
# ranks are remapped per task, every PYXIS_CONTAINER_* variable works and the command
# line wins over it, values over 4 KiB are refused alike in srun and on the node (W16),
# --container-env names must be identifiers (W5), and ENROOT_UNSHARE_PID from the user
# cannot break the container start (W10).

load common
load features

setup() {
    [ -r "$PXT_IMAGE" ] || skip "no test image $PXT_IMAGE (run tests/harness/up.sh)"
    snapshot_containers
    # the suite must not inherit these from whoever started bats
    unset IMAGE_VAR ENTRYPOINT_VAR LANGUAGE LC_ALL PYTORCH_VERSION RANK LOCAL_RANK
    unset "${!PYXIS_CONTAINER_@}"
}

teardown() {
    rm -f /tmp/i4-pwned-"$$"-* 2>/dev/null || true
}

# shellcheck disable=SC2016  # expanded inside the container
SHOW_VARS='for v in FOO IMAGE_VAR LANG LANGUAGE LC_ALL PATH; do eval "printf \"%s=%s\n\" $v \"\${$v-<unset>}\""; done'

# print_var NAME: a command printing NAME's value inside the container (<unset> if unset);
# BusyBox has no printenv.
print_var() {
    # shellcheck disable=SC2016  # expanded inside the container
    printf 'echo "${%s-<unset>}"' "$1"
}

# value_of NAME: the NAME=... line of $output, value only.
value_of() {
    sed -n "s/^$1=//p" <<< "$output" | head -n 1
}

@test "env: a variable only the host has passes through" {
    FOO=bar run_srun_stdout --container-image="$PXT_REG_APP" sh -c "$SHOW_VARS"
    [ "$(value_of FOO)" = bar ]
    assert_no_own_leftovers
}

@test "env: the image's values win over the host's (IMAGE_VAR, PATH)" {
    IMAGE_VAR=host run_srun_stdout --container-image="$PXT_REG_APP" sh -c "$SHOW_VARS"
    [ "$(value_of IMAGE_VAR)" = from-image ]
    [[ "$(value_of PATH)" == /app/bin:* ]]
    # and the image's PATH is what finds commands: apponly exists only in /app/bin
    run_srun_stdout --container-image="$PXT_REG_APP" apponly
    [ "$output" = "app-only command" ]
    assert_no_own_leftovers
}

@test "env: --container-env=IMAGE_VAR,PATH keeps the host's values" {
    IMAGE_VAR=host run_srun_stdout --container-image="$PXT_REG_APP" --container-env=IMAGE_VAR,PATH sh -c "$SHOW_VARS"
    [ "$(value_of IMAGE_VAR)" = host ]
    [ "$(value_of PATH)" = "$PATH" ]
    assert_no_own_leftovers
}

@test "env: --container-env of a variable the host lacks keeps the image's value" {
    run_srun_stdout --container-image="$PXT_REG_APP" --container-env=IMAGE_VAR sh -c "$SHOW_VARS"
    [ "$(value_of IMAGE_VAR)" = from-image ]
    assert_no_own_leftovers
}

@test "env: the host's LANG, LANGUAGE, LC_ALL are not applied; the image's LANG is" {
    LANG=en_US.UTF-8 LANGUAGE=en_US LC_ALL=en_US.UTF-8 run_srun_stdout --container-image="$PXT_REG_APP" sh -c "$SHOW_VARS"
    [ "$(value_of LANG)" = C ]
    [ "$(value_of LANGUAGE)" = "<unset>" ]
    [ "$(value_of LC_ALL)" = "<unset>" ]
    # an image without LANG: none at all
    LANG=en_US.UTF-8 run_srun_stdout --container-image="$PXT_IMAGE" sh -c "$SHOW_VARS"
    [ "$(value_of LANG)" = "<unset>" ]
    assert_no_own_leftovers
}

@test "env: --container-env=LANG passes the host's LANG" {
    LANG=en_US.UTF-8 run_srun_stdout --container-image="$PXT_REG_APP" --container-env=LANG sh -c "$SHOW_VARS"
    [ "$(value_of LANG)" = en_US.UTF-8 ]
    LANG=en_US.UTF-8 run_srun_stdout --container-image="$PXT_IMAGE" --container-env=LANG sh -c "$SHOW_VARS"
    [ "$(value_of LANG)" = en_US.UTF-8 ]
    assert_no_own_leftovers
}

@test "env: TERM comes from the host" {
    TERM=vt220 run_srun_stdout --container-image="$PXT_IMAGE" sh -c "$(print_var TERM)"
    [ "$output" = vt220 ]
    assert_no_own_leftovers
}

@test "env (W5): --container-env names that are not identifiers are refused" {
    local marker="/tmp/i4-pwned-$$-$RANDOM"
    run_srun_unchecked --container-image="$PXT_IMAGE" --container-env=FOO-BAR true
    assert_failure_with "FOO-BAR"
    run_srun_unchecked --container-image="$PXT_IMAGE" --container-env="\$(touch $marker)" true
    assert_failure_with "touch $marker"
    run_srun_unchecked --container-image="$PXT_IMAGE" --container-env="FOO,\`touch $marker\`" true
    assert_failure_with "touch $marker"
    [ ! -e "$marker" ]
    assert_no_own_leftovers
}

@test "env (W5): a hostile PYXIS_CONTAINER_ENV is reported and never runs" {
    local marker="/tmp/i4-pwned-$$-$RANDOM"
    # PYXIS_* parse errors are reported but never fail the command (reference §4.5)
    PYXIS_CONTAINER_ENV="IMAGE_VAR,\$(touch $marker)" IMAGE_VAR=host \
        run_srun_unchecked --container-image="$PXT_REG_APP" sh -c "$(print_var IMAGE_VAR)"
    printf 'status %s, output:\n%s\n' "$status" "$output"
    [ "$status" -eq 0 ]
    assert_output_contains "pyxis: "
    assert_output_contains "touch $marker"
    [ ! -e "$marker" ]
    assert_no_own_leftovers
}

@test "env: PyTorch images get RANK=SLURM_PROCID and LOCAL_RANK=SLURM_LOCALID in every task" {
    # shellcheck disable=SC2016  # expanded inside the container
    PYTORCH_VERSION=2.3.0 run_srun_stdout -n 4 --container-image="$PXT_IMAGE" \
        sh -c 'echo "$SLURM_PROCID $RANK $SLURM_LOCALID $LOCAL_RANK"'
    printf 'procid rank localid local_rank:\n%s\n' "$output"
    [ "$(grep -c . <<< "$output")" -eq 4 ]
    # every line has RANK == SLURM_PROCID and LOCAL_RANK == SLURM_LOCALID
    [ "$(awk '$1 == $2 && $3 == $4' <<< "$output" | grep -c .)" -eq 4 ]
    [ "$(awk '{print $2}' <<< "$output" | sort -n | tr '\n' ' ')" = "0 1 2 3 " ]
    # without PYTORCH_VERSION nothing is remapped
    # shellcheck disable=SC2016
    run_srun_stdout -n 2 --container-image="$PXT_IMAGE" sh -c 'echo "rank=${RANK-unset} local=${LOCAL_RANK-unset}"'
    [ "$output" = "$(printf 'rank=unset local=unset\nrank=unset local=unset')" ]
    assert_no_own_leftovers
}

@test "env: PYXIS_CONTAINER_IMAGE selects the image; --container-image wins" {
    PYXIS_CONTAINER_IMAGE="$PXT_REG_APP" run_srun_stdout sh -c "pwd; $SHOW_VARS"
    [ "$(head -n 1 <<< "$output")" = /app ]
    [ "$(value_of IMAGE_VAR)" = from-image ]
    PYXIS_CONTAINER_IMAGE="$PXT_REG_APP" run_srun_stdout --container-image="$PXT_IMAGE" grep PRETTY /etc/os-release
    assert_output_contains "$PXT_PRETTY"
    assert_no_own_leftovers
}

@test "env: PYXIS_CONTAINER_MOUNTS mounts; --container-mounts wins" {
    mkdir -p "$BATS_TEST_TMPDIR/env" "$BATS_TEST_TMPDIR/cli"
    PYXIS_CONTAINER_MOUNTS="$BATS_TEST_TMPDIR/env:/mnt/i4-env" run_srun_stdout --container-image="$PXT_IMAGE" \
        sh -c 'grep -c " /mnt/i4-env " /proc/self/mountinfo'
    [ "$output" = 1 ]
    PYXIS_CONTAINER_MOUNTS="$BATS_TEST_TMPDIR/env:/mnt/i4-env" run_srun_stdout --container-image="$PXT_IMAGE" \
        --container-mounts="$BATS_TEST_TMPDIR/cli:/mnt/i4-cli" \
        sh -c 'grep -c " /mnt/i4-cli " /proc/self/mountinfo; grep -c " /mnt/i4-env " /proc/self/mountinfo || :'
    [ "$output" = "$(printf '1\n0')" ]
    assert_no_own_leftovers
}

@test "env: PYXIS_CONTAINER_WORKDIR sets the directory; --container-workdir wins" {
    PYXIS_CONTAINER_WORKDIR=/etc run_srun_stdout --container-image="$PXT_REG_APP" pwd
    [ "$output" = /etc ]
    PYXIS_CONTAINER_WORKDIR=/etc run_srun_stdout --container-image="$PXT_REG_APP" --container-workdir=/var pwd
    [ "$output" = /var ]
    assert_no_own_leftovers
}

@test "env: PYXIS_CONTAINER_ENV keeps host values; --container-env wins" {
    IMAGE_VAR=host PYXIS_CONTAINER_ENV=IMAGE_VAR run_srun_stdout --container-image="$PXT_REG_APP" sh -c "$(print_var IMAGE_VAR)"
    [ "$output" = host ]
    IMAGE_VAR=host PYXIS_CONTAINER_ENV=IMAGE_VAR run_srun_stdout --container-image="$PXT_REG_APP" --container-env=FOO sh -c "$(print_var IMAGE_VAR)"
    [ "$output" = from-image ]
    assert_no_own_leftovers
}

@test "env: PYXIS_CONTAINER_REMAP_ROOT=1 maps root; --no-container-remap-root wins" {
    PYXIS_CONTAINER_REMAP_ROOT=1 run_srun_stdout --container-image="$PXT_IMAGE" cat /proc/self/uid_map
    [ "$(awk '{print $1, $2, $3}' <<< "$output")" = "0 $(id -u) 1" ]
    PYXIS_CONTAINER_REMAP_ROOT=1 run_srun_stdout --container-image="$PXT_IMAGE" --no-container-remap-root id -u
    [ "$output" = "$(id -u)" ]
    assert_no_own_leftovers
}

@test "env: PYXIS_CONTAINER_MOUNT_HOME=1 mounts the home; --no-container-mount-home wins" {
    # shellcheck disable=SC2016  # expanded inside the container
    local count='grep -c " $HOME " /proc/self/mountinfo || :'
    PYXIS_CONTAINER_MOUNT_HOME=1 run_srun_stdout --container-image="$PXT_IMAGE" --no-container-remap-root sh -c "$count"
    [ "$output" = 1 ]
    PYXIS_CONTAINER_MOUNT_HOME=1 run_srun_stdout --container-image="$PXT_IMAGE" --no-container-remap-root \
        --no-container-mount-home sh -c "$count"
    [ "$output" = 0 ]
    assert_no_own_leftovers
}

@test "env: PYXIS_CONTAINER_ENTRYPOINT(_LOG)=1 run and log the entrypoint; --no-container-entrypoint wins" {
    # shellcheck disable=SC2016  # expanded inside the container
    local show='echo "ENTRYPOINT_VAR=${ENTRYPOINT_VAR-unset}"'
    PYXIS_CONTAINER_ENTRYPOINT=1 run_srun_unchecked --container-image="$PXT_REG_APP" sh -c "$show"
    [ "$status" -eq 0 ]
    assert_output_contains "$PXT_ENTRYPOINT_VAR"
    refute_output_contains "$PXT_ENTRYPOINT_LINE"
    PYXIS_CONTAINER_ENTRYPOINT=1 PYXIS_CONTAINER_ENTRYPOINT_LOG=1 run_srun_unchecked --container-image="$PXT_REG_APP" sh -c "$show"
    [ "$status" -eq 0 ]
    assert_output_contains "$PXT_ENTRYPOINT_VAR"
    assert_output_contains "$PXT_ENTRYPOINT_LINE"
    PYXIS_CONTAINER_ENTRYPOINT=1 run_srun_unchecked --container-image="$PXT_REG_APP" --no-container-entrypoint sh -c "$show"
    [ "$status" -eq 0 ]
    assert_output_contains "ENTRYPOINT_VAR=unset"
    assert_no_own_leftovers
}

@test "env: PYXIS_CONTAINER_WRITABLE / _READONLY; the command line wins, WRITABLE beats READONLY" {
    PYXIS_CONTAINER_WRITABLE=0 run_srun_unchecked --container-image="$PXT_IMAGE" touch /i4-x
    [ "$status" -ne 0 ]
    assert_output_contains "Read-only file system"
    PYXIS_CONTAINER_READONLY=1 run_srun_unchecked --container-image="$PXT_IMAGE" touch /i4-x
    [ "$status" -ne 0 ]
    assert_output_contains "Read-only file system"
    PYXIS_CONTAINER_READONLY=1 run_srun --container-image="$PXT_IMAGE" --container-writable touch /i4-x
    PYXIS_CONTAINER_WRITABLE=1 PYXIS_CONTAINER_READONLY=1 run_srun --container-image="$PXT_IMAGE" touch /i4-x
    assert_no_own_leftovers
}

# long_mounts_value BYTES: a PYXIS_CONTAINER_MOUNTS value of at least BYTES bytes made of
# entries /mnt/i4-N for one long existing source path.
long_mounts_value() {
    local d v="" i=0
    # two 200-byte path components
    d="$BATS_TEST_TMPDIR/$(printf 'a%.0s' {1..200})/$(printf 'b%.0s' {1..200})"
    mkdir -p "$d"
    while [ "${#v}" -lt "$1" ]; do
        i=$((i + 1))
        v="$v${v:+,}$d:/mnt/i4-$i"
    done
    printf '%s\n' "$v"
}

@test "env (W16): a PYXIS_CONTAINER_MOUNTS value under 4 KiB applies on the node" {
    local v
    v=$(long_mounts_value 3600)
    [ "${#v}" -lt 4095 ]
    local n=$(( $(tr -cd , <<< "$v" | wc -c) + 1 ))
    PYXIS_CONTAINER_MOUNTS="$v" run_srun_stdout --container-image="$PXT_IMAGE" \
        sh -c 'grep -c " /mnt/i4-[0-9]* " /proc/self/mountinfo'
    [ "$output" = "$n" ]
    assert_no_own_leftovers
}

@test "env (W16): a PYXIS_CONTAINER_MOUNTS value over 4 KiB is refused in srun and on the node alike" {
    local v
    v=$(long_mounts_value 4200)
    [ "${#v}" -gt 4095 ]
    # shellcheck disable=SC2016  # expanded inside the container
    PYXIS_CONTAINER_MOUNTS="$v" run_srun_unchecked --container-image="$PXT_IMAGE" \
        sh -c 'echo "mounts=$(grep -c " /mnt/i4-[0-9]* " /proc/self/mountinfo)"'
    printf 'status %s, output:\n%s\n' "$status" "$output"
    assert_output_contains "ignoring PYXIS_CONTAINER_MOUNTS: value longer than 4095 bytes"
    # not applied on the node either (pyxis applied it in srun only and dropped it silently there)
    [ "$status" -eq 0 ]
    assert_output_contains "mounts=0"
    assert_no_own_leftovers
}

@test "env (W10): ENROOT_UNSHARE_PID from the user does not reach enroot" {
    # with it, enroot would fork a PID-1 child (the test double refuses to start at all)
    ENROOT_UNSHARE_PID=y run_srun_stdout --container-image="$PXT_IMAGE" readlink /proc/self/ns/pid
    [ "$output" = "$(readlink /proc/self/ns/pid)" ]
    assert_no_own_leftovers
}
