#!/usr/bin/env bats
# Plugin configurations that change how containers are fetched, named and cleaned
# up (reference §3, §5.2, §5.8, §5.10-§5.12, §5.22; W4, W9):
#
#   importer=PATH        the get/release protocol, with tests/integration/test_importer.sh
#   use_squashfuse=1     unnamed, unsaved containers start straight from the squashfs file
#   use_enroot_load=1    registry images through `enroot load`
#   container_scope=job  pyxis_<job>_NAME names, attach, and the job epilog's cleanup
#   runtime_path=PATH    an untrustworthy <runtime_path>/<uid> is refused
#
# Needs root: each test switches the plugin configuration with
# tests/harness/plugstack.sh KEY=VALUE... (which restarts slurmd) and restores the
# default with tests/harness/plugstack.sh in teardown. The steps run as the
# unprivileged test user. tests/run-all.sh runs root_*.bats as root after the user
# suites. Where a check needs the enroot test double's invocation log
# (ENROOT_DOUBLE_LOG) it is only made with the double; the rest holds for a real
# enroot too.

load common
load containers
load root

# install_importer: the test importer where the job user can execute it -> $IMPORTER
install_importer() {
    IMPORTER="$WORK/importer.sh"
    install -m 0755 "$BATS_TEST_DIRNAME/test_importer.sh" "$IMPORTER"
    user_env "PXT_IMPORTER_LOG=$U/log"
}

# calls: what the importer logged
calls() {
    cat "$U/log/calls" 2>/dev/null || true
}

# enroot_argvs: the enroot command lines the double recorded, one JSON array a line
enroot_argvs() {
    jq -c '.argv' "$U/enroot-log/invocations.jsonl"
}

# ----------------------------------------------------------------- importer=

@test "importer: get's squashfs becomes the container, release is called after use and is idempotent" {
    install_importer
    with_config importer="$IMPORTER"
    local step releases
    # shellcheck disable=SC2016  # expanded inside the container
    user_srun --container-image="$PXT_REG_BUSYBOX" sh -c 'grep PRETTY /etc/os-release; echo "STEP=$SLURM_JOB_ID.$SLURM_STEP_ID"'
    must_succeed
    assert_output_contains "$PXT_PRETTY"
    [ "$(count_lines_with "pyxis: importing docker image: $PXT_REG_BUSYBOX")" -eq 1 ]
    [ "$(count_lines_with "pyxis: imported docker image: $PXT_REG_BUSYBOX")" -eq 1 ]
    step=$(step_id_of)
    [ -n "$step" ]
    # cleanup (the last release, then the removal of the container) ends after srun returned
    wait_gone "pyxis_$step"
    wait_no_job_files "${step%.*}"
    run calls
    # one get, with the enroot URI, run as the job user with stdin /dev/null and pyxis's variables
    [ "$(count_lines_with "get ")" -eq 1 ]
    assert_output_contains "get $step uri=docker://$PXT_REG_BUSYBOX uid=$TUID job_uid=$TUID stdin=/dev/null version=0.24.0 runtime=$PXT_RUNTIME_PATH"
    # released after the get: the first release removed the file, every later one found
    # nothing and still succeeded (pyxis calls it after create and again in cleanup)
    releases=$(grep '^release ' <<< "$output" || true)
    [ -n "$releases" ]
    [ "$(head -n 1 <<< "$output")" = "$(grep '^get ' <<< "$output")" ]
    [ "$(head -n 1 <<< "$releases")" = "release $step removed" ]
    [ "$(tail -n +2 <<< "$releases" | grep -vcx "release $step nothing" || true)" -eq 0 ]
    echo "# importer release called $(grep -c . <<< "$releases") times" >&3
}

@test "importer: a failing get or an empty answer fails the step once, with the importer's log" {
    install_importer
    with_config importer="$IMPORTER"
    user_env "PXT_IMPORTER_FAIL=i3 importer: simulated registry outage"
    user_srun -n 2 --container-image="$PXT_REG_BUSYBOX" echo pxt-command-ran
    [ "$status" -ne 0 ]
    refute_output_contains "pxt-command-ran"
    [ "$(count_lines_with "failed to import docker image: $PXT_REG_BUSYBOX (importer: $IMPORTER)")" -eq 1 ]
    assert_output_contains "pyxis: printing importer log file:"
    assert_output_contains "i3 importer: simulated registry outage"
    refute_output_contains "imported docker image"
    run calls
    [ "$(count_lines_with "get ")" -eq 1 ]
    # a failed get is released too (§5.11)
    assert_output_contains "release "

    # later assignments win in env(1): the failure is switched off again
    user_env PXT_IMPORTER_FAIL= PXT_IMPORTER_EMPTY=1
    user_srun --container-image="$PXT_REG_BUSYBOX" echo pxt-command-ran
    [ "$status" -ne 0 ]
    refute_output_contains "pxt-command-ran"
    assert_output_contains "importer did not return a squashfs path"
}

@test "importer: not called for squashfs paths nor for existing named containers" {
    install_importer
    with_config importer="$IMPORTER"
    user_srun --container-image="$PXT_IMAGE" grep PRETTY /etc/os-release
    must_succeed
    assert_output_contains "$PXT_PRETTY"
    [ -z "$(calls)" ]
    local name
    name=$(i3_name importer)
    remove_later "pyxis_$name"
    user_env "PXT_IMPORTER_SQUASHFS=$PXT_IMAGE"
    user_srun --container-name="$name" --container-image="$PXT_REG_BUSYBOX" sh -c 'echo kept > /i3-file'
    must_succeed
    has_container "pyxis_$name"
    user_srun --container-name="$name" --container-image="$PXT_REG_BUSYBOX" cat /i3-file
    must_succeed
    assert_output_contains "kept"
    refute_output_contains "imported docker image"
    run calls
    [ "$(count_lines_with "get ")" -eq 1 ]
}

@test "importer: scancel during get leaves no container and no file in the runtime directory" {
    install_importer
    with_config importer="$IMPORTER"
    user_env "PXT_IMPORTER_SQUASHFS=$PXT_IMAGE" PXT_IMPORTER_SLEEP=120
    user_alloc
    user_bg_step "$WORK/step.out" --container-image="$PXT_REG_BUSYBOX" echo pxt-command-ran
    local bg=$BG_PID step
    wait_for_line "$U/log/calls" "sleeping $JOB." 60 "$bg"
    step=$(sed -n 's/^sleeping //p' "$U/log/calls")
    # the importer wrote its file and is still "downloading"
    [ -n "$(job_files "$JOB")" ]
    scancel "$step"
    wait "$bg" || true
    if grep -qx pxt-command-ran "$WORK/step.out"; then cat "$WORK/step.out" >&2; return 1; fi
    wait_no_job_files "$JOB"
    refute_container_of_job
    # the cleanup released what get had left
    run calls
    assert_output_contains "release $step removed"
}

# refute_container_of_job: no pyxis_ container of $JOB exists
refute_container_of_job() {
    local left
    left=$(user_run enroot list | grep -E "^pyxis_($JOB\.|${JOB}_)" || true)
    if [ -n "$left" ]; then
        printf 'containers of job %s left:\n%s\n' "$JOB" "$left" >&2
        return 1
    fi
}

# ----------------------------------------------------------------- use_squashfuse=

# skip_without_squashfuse: a real enroot needs squashfuse (the double unpacks to a tmpfs)
skip_without_squashfuse() {
    if ! is_double && ! command -v squashfuse >/dev/null; then
        skip "use_squashfuse with a real enroot needs squashfuse on the node"
    fi
}

@test "use_squashfuse: an unnamed squashfs step starts straight from the file, no container filesystem" {
    skip_without_squashfuse
    with_config use_squashfuse=1
    user_env "ENROOT_DOUBLE_LOG=$U/enroot-log"
    user_alloc
    # shellcheck disable=SC2016  # expanded inside the container
    user_bg_step "$WORK/step.out" --container-image="$PXT_IMAGE" --container-mounts="$U/ctl:/i3ctl" \
        sh -c 'grep PRETTY /etc/os-release; echo "STEP=$SLURM_JOB_ID.$SLURM_STEP_ID"; echo READY; '"$PXT_HOLD"
    local bg=$BG_PID step
    wait_for_line "$WORK/step.out" READY 90 "$bg"
    step=$(sed -n 's/^STEP=//p' "$WORK/step.out")
    # running, yet no pyxis_<job>.<step> filesystem exists
    refute_container_of_job
    touch "$U/ctl/stop"
    wait "$bg" || { cat "$WORK/step.out" >&2; return 1; }
    grep -qF "$PXT_PRETTY" "$WORK/step.out"
    wait_no_job_files "$JOB"
    double_log_checks || return 0
    run enroot_argvs
    refute_output_contains '"create"'
    refute_output_contains '"remove"'
    assert_output_contains "\"start\",\"--conf\","
    assert_output_contains ",\"$PXT_IMAGE\",\"sh\",\"-c\",\"kill -STOP \$\$ ; exit 0\"]"
    refute_output_contains "pyxis_$step"
}

@test "use_squashfuse without the image cache: named, saved and registry-imported containers are still created, as in pyxis" {
    skip_without_squashfuse
    with_config use_squashfuse=1 image_cache_path=none
    user_env "ENROOT_DOUBLE_LOG=$U/enroot-log"
    local name saved="$U/saved.sqsh"
    name=$(i3_name fuse)
    remove_later "pyxis_$name"
    user_srun --container-name="$name" --container-image="$PXT_IMAGE" sh -c 'echo named > /i3-file'
    must_succeed
    has_container "pyxis_$name"
    user_srun --container-image="$PXT_IMAGE" --container-save="$saved" sh -c 'echo saved > /i3-file'
    must_succeed
    assert_output_contains "pyxis: exported container"
    user_srun --container-image="$saved" cat /i3-file
    must_succeed
    assert_output_contains "saved"
    user_srun --container-image="$PXT_REG_BUSYBOX" grep PRETTY /etc/os-release
    must_succeed
    assert_output_contains "$PXT_PRETTY"
    double_log_checks || return 0
    run enroot_argvs
    assert_output_contains "\"create\",\"--name\",\"pyxis_$name\",\"$PXT_IMAGE\"]"
    # the saved step and the import were created under their unnamed names
    [ "$(grep -c '"create","--force","--name","pyxis_' <<< "$output")" -eq 2 ]
    # ... and the direct start from $saved (the third step) was not
    assert_output_contains ",\"$saved\",\"sh\",\"-c\""
}

@test "importer with use_squashfuse: started from the importer's file, released only at the end" {
    skip_without_squashfuse
    install_importer
    with_config importer="$IMPORTER" use_squashfuse=1
    user_env "PXT_IMPORTER_SQUASHFS=$PXT_IMAGE" "ENROOT_DOUBLE_LOG=$U/enroot-log"
    user_alloc
    # shellcheck disable=SC2016  # expanded inside the container
    user_bg_step "$WORK/step.out" --container-image="$PXT_REG_BUSYBOX" --container-mounts="$U/ctl:/i3ctl" \
        sh -c 'grep PRETTY /etc/os-release; echo "STEP=$SLURM_JOB_ID.$SLURM_STEP_ID"; echo READY; '"$PXT_HOLD"
    local bg=$BG_PID step file
    wait_for_line "$WORK/step.out" READY 90 "$bg"
    step=$(sed -n 's/^STEP=//p' "$WORK/step.out")
    file="$RT/$step.importer.squashfs"
    # the running container still needs the file: not released yet, no filesystem made
    [ -s "$file" ]
    run calls
    refute_output_contains "release"
    refute_container_of_job
    touch "$U/ctl/stop"
    wait "$bg" || { cat "$WORK/step.out" >&2; return 1; }
    grep -qF "$PXT_PRETTY" "$WORK/step.out"
    wait_no_job_files "$JOB"
    run calls
    assert_output_contains "release $step removed"
    double_log_checks || return 0
    run enroot_argvs
    refute_output_contains '"create"'
    assert_output_contains ",\"$file\",\"sh\",\"-c\""
}

# ----------------------------------------------------------------- use_enroot_load=

@test "use_enroot_load: registry images are loaded straight into the container filesystem" {
    if ! is_double; then
        local v
        v=$(user_run enroot version 2>/dev/null || true)
        [ "${v%%.*}" -ge 4 ] 2>/dev/null || skip "enroot load needs enroot >= 4.0 (have ${v:-unknown})"
    fi
    with_config use_enroot_load=1
    user_env "ENROOT_DOUBLE_LOG=$U/enroot-log"
    local step name
    # shellcheck disable=SC2016  # expanded inside the container
    user_srun --container-image="$PXT_REG_APP" sh -c 'echo "var=$IMAGE_VAR pwd=$(pwd)"; echo "STEP=$SLURM_JOB_ID.$SLURM_STEP_ID"'
    must_succeed
    assert_output_contains "var=from-image pwd=/app"
    [ "$(count_lines_with "pyxis: importing docker image: $PXT_REG_APP")" -eq 1 ]
    [ "$(count_lines_with "pyxis: imported docker image: $PXT_REG_APP")" -eq 1 ]
    step=$(step_id_of)
    wait_gone "pyxis_$step"
    wait_no_job_files "${step%.*}"
    name=$(i3_name load)
    remove_later "pyxis_$name"
    user_srun --container-name="$name" --container-image="$PXT_REG_BUSYBOX" sh -c 'echo loaded > /i3-file'
    must_succeed
    has_container "pyxis_$name"
    user_srun --container-name="$name" --container-image="$PXT_REG_BUSYBOX" cat /i3-file
    must_succeed
    assert_output_contains "loaded"
    refute_output_contains "imported docker image"
    user_srun -n 2 --container-image="$PXT_REG_MISSING" echo pxt-command-ran
    [ "$status" -ne 0 ]
    refute_output_contains "pxt-command-ran"
    [ "$(count_lines_with "failed to import docker image: $PXT_REG_MISSING")" -eq 1 ]
    double_log_checks || return 0
    run enroot_argvs
    refute_output_contains '"import"'
    refute_output_contains '"create"'
    assert_output_contains "\"--name\",\"pyxis_$step\",\"docker://$PXT_REG_APP\"]"
    assert_output_contains "[\"enroot\",\"load\",\"--name\",\"pyxis_$name\",\"docker://$PXT_REG_BUSYBOX\"]"
    # the named container was loaded once: the second step reused it
    [ "$(grep -c "\"load\",\"--name\",\"pyxis_$name\"" <<< "$output")" -eq 1 ]
}

# ----------------------------------------------------------------- container_scope=job

@test "container_scope=job: names are per job, the flags apply, the job epilog removes the job's containers" {
    with_config container_scope=job
    local name j1 j2
    name=$(i3_name scope)
    user_alloc; j1=$JOB
    user_alloc; j2=$JOB
    remove_later "pyxis_${j1}_$name" "pyxis_${j2}_$name"
    use_job "$j1"
    # shellcheck disable=SC2016  # expanded inside the container
    user_step --container-name="$name" --container-image="$PXT_IMAGE" sh -c 'echo "$SLURM_JOB_ID" > /i3-owner'
    must_succeed
    has_container "pyxis_${j1}_$name"
    ! has_container "pyxis_$name" || { echo "a global-scope pyxis_$name was made" >&2; return 1; }
    user_step --container-name="$name" cat /i3-owner
    must_succeed
    assert_output_contains "$j1"
    user_step --container-name="$name:create" --container-image="$PXT_IMAGE" true
    assert_failure_with '"create" flag was passed to --container-name but the container already exists'
    user_step --container-name="$name:exec" true
    assert_failure_with '"exec" flag was passed to --container-name but the container is not running'
    user_step --container-name="$name:no_exec" cat /i3-owner
    must_succeed
    assert_output_contains "$j1"
    # the same name in another job is another container
    use_job "$j2"
    user_step --container-name="$name:auto" --container-image="$PXT_IMAGE" sh -c 'cat /i3-owner 2>/dev/null || echo no-owner'
    must_succeed
    assert_output_contains "no-owner"
    has_container "pyxis_${j2}_$name"
    user_step --container-name="$name" true
    must_succeed
    # a missing name is reported with its job-scope enroot name
    user_step --container-name="$name-missing" true
    assert_failure_with "a container with name \"pyxis_${j2}_$name-missing\" does not exist, and --container-image is not set"
    # the end of job 1 removes its container only
    scancel "$j1"
    wait_job_gone "$j1"
    wait_gone "pyxis_${j1}_$name" 30
    has_container "pyxis_${j2}_$name"
    wait_no_job_files "$j1"
    scancel "$j2"
    wait_job_gone "$j2"
    wait_gone "pyxis_${j2}_$name" 30
    wait_no_job_files "$j2"
}

@test "container_scope=job: unnamed containers are pyxis_<job>_<job>.<step>, reachable by <job>.<step>" {
    # the create path (a direct start, the default, has no name to reach)
    with_config container_scope=job use_squashfuse=0
    user_alloc
    # shellcheck disable=SC2016  # expanded inside the container
    user_bg_step "$WORK/holder.out" --container-image="$PXT_IMAGE" --container-mounts="tmpfs:/i3tmp,$U/ctl:/i3ctl" \
        sh -c 'echo held > /i3tmp/marker; echo "STEP=$SLURM_JOB_ID.$SLURM_STEP_ID"; echo READY; '"$PXT_HOLD"
    local bg=$BG_PID step
    wait_for_line "$WORK/holder.out" READY 90 "$bg"
    step=$(sed -n 's/^STEP=//p' "$WORK/holder.out")
    has_container "pyxis_${JOB}_$step"
    ! has_container "pyxis_$step" || { echo "a global-scope name pyxis_$step was used" >&2; return 1; }
    user_step --container-name="$step:exec" cat /i3tmp/marker
    must_succeed
    assert_output_contains "held"
    touch "$U/ctl/stop"
    wait "$bg" || { cat "$WORK/holder.out" >&2; return 1; }
    # removed by its own step at the end of the step, not only by the epilog
    wait_gone "pyxis_${JOB}_$step"
}

@test "container_scope=job: the epilog runs enroot only for jobs that used a container (W9)" {
    command -v strace >/dev/null || skip "needs strace to see which processes the epilog runs"
    with_config container_scope=job
    local name with without slurmd tracer f ids
    name=$(i3_name epilog)
    # a job that used a container (its step runs before tracing starts)
    user_alloc; with=$JOB
    remove_later "pyxis_${with}_$name"
    user_step --container-name="$name" --container-image="$PXT_IMAGE" true
    must_succeed
    has_container "pyxis_${with}_$name"
    # trace what slurmd's children execute while both jobs end (the epilog is one of them)
    slurmd=$(cat /run/slurm/slurmd.pid)
    mkdir "$WORK/trace"
    strace -ff -qq -v -s 256 -e trace=execve -e signal=none -o "$WORK/trace/t" -p "$slurmd" 2>"$WORK/strace.err" 3>&- &
    tracer=$!
    TRACER=$tracer
    sleep 1
    kill -0 "$tracer" || { cat "$WORK/strace.err" >&2; skip "cannot trace slurmd"; }
    run user_run timeout "$PXT_CMD_TIMEOUT" sbatch --parsable --wait -o /dev/null --wrap true
    must_succeed
    without=$(tail -n 1 <<< "$output")
    scancel "$with"
    wait_job_gone "$with"
    wait_job_gone "$without"
    wait_gone "pyxis_${with}_$name" 30
    kill "$tracer"
    wait "$tracer" || true
    TRACER=
    # the job ids in the environment of every `enroot list` exec'd under slurmd
    ids=$(for f in "$WORK"/trace/t.*; do
        grep -h '^execve("[^"]*enroot", \["enroot", "list"\]' "$f" | grep -o '"SLURM_JOB_ID=[0-9]*"' || true
    done | sort -u)
    printf 'enroot list ran for: %s\n' "$ids"
    # positive control: the container job's epilog listed (and removed) its containers
    grep -qxF "\"SLURM_JOB_ID=$with\"" <<< "$ids"
    # the job without containers cost no enroot at all
    ! grep -qxF "\"SLURM_JOB_ID=$without\"" <<< "$ids" || { echo "the epilog of job $without ran enroot list" >&2; return 1; }
    [ -z "$(job_files "$without")" ]
}

# ----------------------------------------------------------------- runtime_path=

@test "runtime_path: an existing <runtime_path>/<uid> that is not private to the user is refused (W4)" {
    local rt="$WORK/rt"
    with_config runtime_path="$rt"
    # slurmd made the runtime path itself
    [ -d "$rt" ]
    # another user's directory, a shared one, a symlink: all refused before any container
    install -d -o "$PXT_USER" -m 0755 "$rt/$TUID"
    user_srun --container-image="$PXT_IMAGE" echo pxt-command-ran
    assert_failure_with "$rt/$TUID is not a directory owned by uid $TUID with mode 0700"
    refute_output_contains "pxt-command-ran"
    rmdir "$rt/$TUID"
    install -d -o root -m 0700 "$rt/$TUID"
    user_srun --container-image="$PXT_IMAGE" echo pxt-command-ran
    assert_failure_with "refusing to use it"
    rmdir "$rt/$TUID"
    install -d -o "$PXT_USER" -m 0700 "$U/elsewhere"
    ln -s "$U/elsewhere" "$rt/$TUID"
    user_srun --container-image="$PXT_IMAGE" echo pxt-command-ran
    assert_failure_with "refusing to use it"
    rm "$rt/$TUID"
    # made by pyxis itself: private to the user, and used
    user_srun --container-image="$PXT_REG_BUSYBOX" echo pxt-command-ran
    must_succeed
    assert_output_contains "pxt-command-ran"
    [ "$(stat -c '%U %a' "$rt/$TUID")" = "$PXT_USER 700" ]
}
