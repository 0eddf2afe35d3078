#!/usr/bin/env bats
# Named containers with the default container_scope=global (reference §5.4, §5.8,
# upstream name.bats): `--container-name=NAME[:auto|create|exec|no_exec]` keeps the
# container as pyxis_NAME after the step, an existing container wins over
# --container-image, the flags decide between create/reuse/attach, and names that
# enroot or the `enroot list -f` parser cannot handle are refused before any job
# starts (W8). Attaching to running containers is in attach.bats, job scope in
# root_fetch.bats.

load common
load containers

setup() {
    [ -r "$PXT_IMAGE" ] || skip "no test image $PXT_IMAGE (run tests/harness/up.sh)"
    snapshot_containers
    CREATED_NAMES=()
}

teardown() {
    remove_named "${CREATED_NAMES[@]}"
}

@test "name: a named container outlives its step and keeps its changes" {
    new_name keep
    run_srun --container-name="$CNAME" --container-image="$PXT_IMAGE" sh -c 'echo first-step > /i3-file'
    container_exists "pyxis_$CNAME"
    # no image needed any more: the existing filesystem is started again
    run_srun_stdout --container-name="$CNAME" sh -c 'cat /i3-file; grep PRETTY /etc/os-release'
    assert_output_contains "first-step"
    assert_output_contains "$PXT_PRETTY"
    container_exists "pyxis_$CNAME"
    assert_no_lock_files "$CNAME"
}

@test "name: two names are two separate filesystems" {
    new_name iso-a; local a=$CNAME
    new_name iso-b; local b=$CNAME
    run_srun --container-name="$a" --container-image="$PXT_IMAGE" sh -c 'echo from-a > /i3-file'
    run_srun --container-name="$b" --container-image="$PXT_IMAGE" sh -c 'cat /i3-file 2>/dev/null || echo no-file'
    assert_output_contains "no-file"
    run_srun --container-name="$b" sh -c 'echo from-b > /i3-file'
    run_srun_stdout --container-name="$a" cat /i3-file
    [ "$output" = "from-a" ]
    run_srun_stdout --container-name="$b" cat /i3-file
    [ "$output" = "from-b" ]
}

@test "name: an existing container wins over a different --container-image (no import)" {
    new_name wins
    run_srun --container-name="$CNAME" --container-image="$PXT_IMAGE" sh -c 'echo busybox-rootfs > /i3-file'
    # pyxis/app has WORKDIR /app and IMAGE_VAR: none of it may show up
    # shellcheck disable=SC2016  # expanded inside the container
    run_srun --container-name="$CNAME" --container-image="$PXT_REG_APP" \
        sh -c 'cat /i3-file; echo "pwd=$(pwd)"; echo "var=${IMAGE_VAR-unset}"; [ -e /app/bin/apponly ] && echo app-files || echo no-app-files'
    assert_output_contains "busybox-rootfs"
    assert_output_contains "pwd=/"
    refute_output_contains "pwd=/app"
    assert_output_contains "var=unset"
    assert_output_contains "no-app-files"
    refute_output_contains "importing docker image"
    refute_output_contains "imported docker image"
}

@test "name: after enroot remove, the same name is created afresh from the image" {
    new_name recreate
    run_srun --container-name="$CNAME" --container-image="$PXT_IMAGE" sh -c 'echo old > /i3-file'
    enroot_user remove -f "pyxis_$CNAME"
    refute_container "pyxis_$CNAME"
    run_srun --container-name="$CNAME" --container-image="$PXT_IMAGE" sh -c 'cat /i3-file 2>/dev/null || echo fresh'
    assert_output_contains "fresh"
    refute_output_contains "old"
    container_exists "pyxis_$CNAME"
}

@test "name: :create creates a new container and refuses an existing one" {
    new_name create
    run_srun --container-name="$CNAME:create" --container-image="$PXT_IMAGE" sh -c 'echo created > /i3-file'
    container_exists "pyxis_$CNAME"
    run_srun_unchecked --container-name="$CNAME:create" --container-image="$PXT_IMAGE" sh -c 'echo overwritten > /i3-file'
    assert_failure_with 'pyxis: error: "create" flag was passed to --container-name but the container already exists'
    # the command never ran and the filesystem is untouched
    run_srun_stdout --container-name="$CNAME" cat /i3-file
    [ "$output" = "created" ]
}

@test "name: :exec needs a running container (absent or stopped both fail)" {
    new_name exec
    run_srun_unchecked --container-name="$CNAME:exec" --container-image="$PXT_IMAGE" echo pxt-command-ran
    assert_failure_with 'pyxis: error: "exec" flag was passed to --container-name but the container is not running'
    refute_output_contains "pxt-command-ran"
    # :exec never creates anything
    refute_container "pyxis_$CNAME"
    run_srun --container-name="$CNAME" --container-image="$PXT_IMAGE" true
    run_srun_unchecked --container-name="$CNAME:exec" echo pxt-command-ran
    assert_failure_with 'pyxis: error: "exec" flag was passed to --container-name but the container is not running'
    refute_output_contains "pxt-command-ran"
}

@test "name: :no_exec and :auto reuse a stopped container's filesystem" {
    new_name flags
    run_srun --container-name="$CNAME:auto" --container-image="$PXT_IMAGE" sh -c 'echo one > /i3-file'
    run_srun_stdout --container-name="$CNAME:no_exec" sh -c 'cat /i3-file; echo two >> /i3-file'
    [ "$output" = "one" ]
    run_srun_stdout --container-name="$CNAME:auto" cat /i3-file
    [ "$output" = "$(printf 'one\ntwo')" ]
    # :no_exec creates when absent, like :auto
    new_name noexec-new
    run_srun --container-name="$CNAME:no_exec" --container-image="$PXT_IMAGE" true
    container_exists "pyxis_$CNAME"
}

@test "name: a missing container without --container-image names the full enroot name" {
    new_name missing
    run_srun_unchecked --container-name="$CNAME" echo pxt-command-ran
    assert_failure_with "pyxis: error: a container with name \"pyxis_$CNAME\" does not exist, and --container-image is not set"
    refute_output_contains "pxt-command-ran"
    refute_container "pyxis_$CNAME"
}

@test "name: names enroot list cannot represent are refused by srun and sbatch up front (W8)" {
    local long bad
    long=i3-$(printf 'x%.0s' $(seq 1 198))   # 201 bytes
    for bad in "i3 space $$" "$(printf 'i3\ttab%s' "$$")" "i3/slash$$" "." ".." "$long"; do
        run_srun_unchecked --container-name="$bad" --container-image="$PXT_IMAGE" echo pxt-command-ran
        assert_failure_with "--container-name: invalid name"
        refute_output_contains "pxt-command-ran"
        # refused by srun itself: no step was started on the node
        refute_output_contains "slurmstepd"
        run timeout "$PXT_CMD_TIMEOUT" sbatch -o /dev/null --container-name="$bad" --container-image="$PXT_IMAGE" --wrap true
        assert_failure_with "--container-name: invalid name"
        refute_output_contains "Submitted batch job"
    done
    run enroot_list
    refute_output_contains "pyxis_i3 space"
    refute_output_contains "pyxis_i3/slash"
}

@test "name: the longest accepted name (200 bytes) works end to end" {
    local n
    n=i3-long-$$-$RANDOM-
    n=$n$(printf 'x%.0s' $(seq 1 $((200 - ${#n}))))
    [ "${#n}" -eq 200 ]
    CREATED_NAMES+=("$n")
    run_srun --container-name="$n" --container-image="$PXT_IMAGE" sh -c 'echo long > /i3-file'
    container_exists "pyxis_$n"
    # found again by the list parser
    run_srun_stdout --container-name="$n:no_exec" cat /i3-file
    [ "$output" = "long" ]
}

@test "name: the same --container-name twice is accepted, NAME then NAME:create is not (W25)" {
    new_name twice
    run_srun --container-name="$CNAME" --container-name="$CNAME" --container-image="$PXT_IMAGE" true
    container_exists "pyxis_$CNAME"
    run_srun_unchecked --container-name="$CNAME:exec" --container-name="$CNAME:exec" true
    # the identical repeat is not the error; the stopped container is
    refute_output_contains "specified multiple times"
    assert_failure_with '"exec" flag was passed to --container-name but the container is not running'
    run_srun_unchecked --container-name="$CNAME" --container-name="$CNAME:create" true
    assert_failure_with "--container-name specified multiple times"
}
