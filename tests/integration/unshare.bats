#!/usr/bin/env bats
# --container-unshare=net,ipc,uts (reference §5.5 step 3, §5.18): new namespaces shared by
# all tasks of the step, PYXIS_CONTAINER_UNSHARE, a hostname change that stays inside,
# attaching to a running container joins its namespaces, and asking to unshare when
# attaching to a container that did not is an error. W22: an enroot that ignores
# ENROOT_UNSHARE_* gets a clear message.

# bats runs setup, the test and teardown in one shell per test: NAMES and $status set in
# a test are what teardown and the helpers see
# shellcheck disable=SC2030,SC2031

load common
load features

setup() {
    NAMES=()
    CTL="$BATS_TEST_TMPDIR/ctl"
    mkdir -p "$CTL"
    BG_PID=""
    [ -r "$PXT_IMAGE" ] || skip "no test image $PXT_IMAGE (run tests/harness/up.sh)"
    snapshot_containers
}

teardown() {
    touch "$CTL/stop"
    if [ -n "$BG_PID" ]; then wait "$BG_PID" 2>/dev/null || true; fi
    release_jobs
    remove_containers "${NAMES[@]}"
}

# real_enroot_too_old: a real enroot release that ignores ENROOT_UNSHARE_* (<= 4.1.2).
real_enroot_too_old() {
    local kind path
    kind=$(pxt_enroot_kind)
    case "$kind" in real*) ;; *) return 1 ;; esac
    # enroot is a bash script: one that never mentions ENROOT_UNSHARE_NET ignores it.
    # (The version string does not tell: unreleased builds after 4.1.2 say 4.1.2.)
    path=$(awk '{print $2}' <<< "$kind")
    ! grep -q ENROOT_UNSHARE_NET "$path" 2>/dev/null
}

# need_unshare_support [net]: skips unless enroot honours ENROOT_UNSHARE_*, and with
# `net`, unless it can start a network namespace here at all.
need_unshare_support() {
    if real_enroot_too_old; then skip "enroot $(pxt_enroot_kind) predates ENROOT_UNSHARE_* (see the W22 test)"; fi
    [ "${1-}" != net ] || real_enroot_can_unshare_net \
        || skip "this real enroot cannot start a network namespace on this host: 'enroot start --net' fails outside Slurm too"
}

# real_enroot_can_unshare_net: with a real enroot, whether `enroot start --net` works on
# this host at all (enroot isolates sysfs in a new network namespace, which some cgroup
# layouts do not survive). Probed once per run; the double always can.
real_enroot_can_unshare_net() {
    case "$(pxt_enroot_kind)" in real*) ;; *) return 0 ;; esac
    local cache="$BATS_RUN_TMPDIR/enroot-net-probe" probe="i4-netprobe-$$"
    if [ ! -e "$cache" ]; then
        if env -u ENROOT_DATA_PATH -u ENROOT_RUNTIME_PATH enroot create -n "$probe" "$PXT_IMAGE" >/dev/null 2>&1 \
            && env -u ENROOT_DATA_PATH -u ENROOT_RUNTIME_PATH enroot start --net "$probe" true >/dev/null 2>&1; then
            echo yes > "$cache"
        else
            echo no > "$cache"
        fi
        env -u ENROOT_DATA_PATH -u ENROOT_RUNTIME_PATH enroot remove -f "$probe" >/dev/null 2>&1 || true
    fi
    [ "$(cat "$cache")" = yes ]
}

# SHOW_NS: the command printing a task's net, ipc, uts namespaces on one line
# shellcheck disable=SC2016  # expanded inside the container
SHOW_NS='for n in net ipc uts; do printf "%s " "$(readlink /proc/self/ns/$n)"; done; echo'

# host_namespaces: the net, ipc, uts namespaces of a plain step, as SHOW_NS prints them.
host_namespaces() {
    run_srun_stdout sh -c "$SHOW_NS"
    printf '%s\n' "$output"
}

# field N LINE: the N-th blank-separated word of LINE.
field() {
    awk -v n="$1" '{print $n}' <<< "$2"
}

@test "unshare: net,ipc,uts are new namespaces, the same for all 4 tasks" {
    need_unshare_support net
    local host ns i
    host=$(host_namespaces)
    run_srun_stdout -n 4 --container-image="$PXT_IMAGE" --container-unshare=net,ipc,uts sh -c "$SHOW_NS"
    printf 'host: %s\ntasks:\n%s\n' "$host" "$output"
    [ "$(grep -c . <<< "$output")" -eq 4 ]
    [ "$(sort -u <<< "$output" | grep -c .)" -eq 1 ]
    ns=$(head -n 1 <<< "$output")
    for i in 1 2 3; do
        [[ "$(field "$i" "$ns")" =~ ^(net|ipc|uts):\[[0-9]+\]$ ]]
        [ "$(field "$i" "$ns")" != "$(field "$i" "$host")" ]
    done
    assert_no_own_leftovers
}

@test "unshare: without the option the tasks share the host's net, ipc, uts" {
    local host
    host=$(host_namespaces)
    run_srun_stdout -n 2 --container-image="$PXT_IMAGE" sh -c "$SHOW_NS"
    [ "$output" = "$(printf '%s\n%s' "$host" "$host")" ]
    assert_no_own_leftovers
}

@test "unshare: a new network namespace has only the loopback interface" {
    need_unshare_support net
    run_srun_stdout --container-image="$PXT_IMAGE" --container-unshare=net cat /proc/net/dev
    # two header lines, then one line per interface
    [ "$(tail -n +3 <<< "$output" | awk -F: '{gsub(/ /, "", $1); print $1}')" = lo ]
    assert_no_own_leftovers
}

@test "unshare: uts keeps the host name, and hostname changes only the container" {
    need_unshare_support
    local host
    host=$(hostname)
    # changing the host name needs CAP_SYS_ADMIN in the namespace's owner: remapped root
    run_srun_stdout --container-image="$PXT_IMAGE" --container-remap-root --container-unshare=uts \
        sh -c 'hostname; hostname i4-renamed && hostname'
    [ "$output" = "$(printf '%s\ni4-renamed' "$host")" ]
    [ "$(hostname)" = "$host" ]
    run_srun_stdout --container-image="$PXT_IMAGE" hostname
    [ "$output" = "$host" ]
    assert_no_own_leftovers
}

@test "unshare: PYXIS_CONTAINER_UNSHARE=net works; --container-unshare wins" {
    need_unshare_support net
    local host
    host=$(host_namespaces)
    PYXIS_CONTAINER_UNSHARE=net run_srun_stdout --container-image="$PXT_IMAGE" sh -c "$SHOW_NS"
    printf 'host: %s\ntask: %s\n' "$host" "$output"
    [ "$(field 1 "$output")" != "$(field 1 "$host")" ]
    [ "$(field 2 "$output")" = "$(field 2 "$host")" ]
    [ "$(field 3 "$output")" = "$(field 3 "$host")" ]
    PYXIS_CONTAINER_UNSHARE=net run_srun_stdout --container-image="$PXT_IMAGE" --container-unshare=uts sh -c "$SHOW_NS"
    printf 'with --container-unshare=uts: %s\n' "$output"
    [ "$(field 1 "$output")" = "$(field 1 "$host")" ]
    [ "$(field 3 "$output")" != "$(field 3 "$host")" ]
    assert_no_own_leftovers
}

# hold_container NAME ARGS...: a step of $ALLOC_JOB keeping the named container running,
# its namespaces written to $CTL/ns (mnt, net, ipc, uts, one per line).
hold_container() {
    local name="$1"; shift
    bg_step "$BATS_TEST_TMPDIR/held.out" --container-image="$PXT_IMAGE" --container-name="$name" \
        --container-mounts="$CTL:/i4ctl" "$@" sh -c "$PXT_HOLD"
    if ! wait_for_file "$CTL/ns" 60 "$BG_PID"; then
        cat "$BATS_TEST_TMPDIR/held.out" >&2
        return 1
    fi
}

@test "unshare: attaching to a running container joins its namespaces" {
    need_unshare_support net
    local name held
    name=$(i4_name attach-ns)
    NAMES+=("$name")
    alloc_job
    hold_container "$name" --container-unshare=net,ipc,uts
    held=$(tr '\n' ' ' < "$CTL/ns")
    printf 'running container: %s\n' "$held"
    # shellcheck disable=SC2016  # expanded inside the container
    local show='for n in mnt net ipc uts; do printf "%s " "$(readlink /proc/self/ns/$n)"; done; echo'
    run_step_ok --container-name="$name" sh -c "$show"
    [ "$(tail -n 1 <<< "$output")" = "$held" ]
    run_step_ok --container-name="$name" --container-unshare=net,ipc,uts sh -c "$show"
    [ "$(tail -n 1 <<< "$output")" = "$held" ]
    stop_held "$BG_PID" "$CTL"
}

@test "unshare: asking for a namespace the running container does not have fails" {
    local name
    name=$(i4_name attach-noshare)
    NAMES+=("$name")
    alloc_job
    hold_container "$name"
    run_step --container-name="$name" --container-unshare=ipc true
    assert_failure_with "not in a separate IPC namespace"
    run_step --container-name="$name" --container-unshare=net true
    assert_failure_with "not in a separate network namespace"
    run_step --container-name="$name" --container-unshare=uts true
    assert_failure_with "not in a separate UTS namespace"
    stop_held "$BG_PID" "$CTL"
}

@test "unshare (W22): an enroot that ignores ENROOT_UNSHARE_* gets a clear error" {
    # A released enroot <= 4.1.2 ignores the variables; the double emulates it on request
    # (pyxis passes the job environment to enroot).
    local old=()
    if [ "$(pxt_enroot_kind)" = double ]; then
        old=(env ENROOT_DOUBLE_IGNORE_UNSHARE=1)
    elif ! real_enroot_too_old; then
        skip "this real enroot honours ENROOT_UNSHARE_* (this is $(pxt_enroot_kind))"
    fi
    run timeout "$PXT_CMD_TIMEOUT" "${old[@]}" srun -N1 --oversubscribe --container-image="$PXT_IMAGE" --container-unshare=net true
    assert_failure_with "this enroot is too old for --container-unshare"
    refute_output_contains "not in a separate"
    assert_no_own_leftovers
}
