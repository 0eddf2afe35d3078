#!/usr/bin/env bats
# Fault injection (issue 11 item 5): whatever kills, cancels, starves or confuses a
# container step, the node is not drained, the user's next step succeeds and nothing of
# the step is left (no container in `enroot list`, no file of the job in the runtime
# directory, no lock file, no process of the test user).
#
# Each phase is caught with the enroot double's ENROOT_DOUBLE_HANG knob (with a real
# enroot, tests/harness/fault-enroot.sh puts the same knob in front of it): the step's
# enroot call of that phase sleeps until killed, so the fault lands exactly there:
#   import (docker:// image; the digest check in user_init, the import by the creator
#   task), create (enroot create, by the creator task), start (the creator task's enroot
#   start, in task_init), join (a second task waiting in
#   task_init for the creator's container),
#   export (--container-save), remove (the unnamed container's removal)
# and the faults are SIGKILL of that enroot process, SIGKILL of the step's slurmstepd,
# SIGKILL of the creator task or of its child that waits for enroot start, and scancel
# of the step. Then: runtime_path and the image
# cache on a full tmpfs, enroot hanging past the plugin's deadline, and hostile strings
# in every option and PYXIS_CONTAINER_* variable.
#
# As root; steps run as the test user. Ends with one "N passed, N failed" line.

load common
load containers
load root

NODE=$(hostname -s)
FULL_MOUNTS=()

setup_file() {
    [ "$(id -u)" -eq 0 ] || return 0
    local ps="${PXT_HARNESS:-$BATS_TEST_DIRNAME/../harness}/plugstack.sh"
    # with a real enroot (ENROOT=/path), the double's hang knob goes in front of it
    "${PXT_HARNESS:-$BATS_TEST_DIRNAME/../harness}/fault-enroot.sh" on >/dev/null
    # the create path (enroot create, then start) and deadlines short enough for a suite
    "$ps" use_squashfuse=0 command_timeout=15 import_timeout=15 >/dev/null 2>&1 || true
}

teardown_file() {
    [ "$(id -u)" -eq 0 ] || return 0
    "${PXT_HARNESS:-$BATS_TEST_DIRNAME/../harness}/fault-enroot.sh" off >/dev/null 2>&1 || true
    "${PXT_HARNESS:-$BATS_TEST_DIRNAME/../harness}/plugstack.sh" >/dev/null 2>&1 || true
    local n="${FAULTS_PASSED_FILE:-/tmp/pyxis-rs-faults.count}"
    if [ -f "$n" ]; then
        # bats prints its own TAP; this is the suite's one summary line
        printf '# root_faults: %s passed, %s failed\n' "$(grep -c pass "$n")" "$(grep -c fail "$n")" >&3
        rm -f "$n"
    fi
}

# node_usable: not drained or down once nothing completes on it any more
node_usable() {
    local st
    st=$(node_state)
    case "$st" in idle* | mixed* | allocated*) return 0 ;; esac
    printf 'node %s is %s; reason: %s\n' "$NODE" "$st" "$(scontrol show node "$NODE" | grep -io 'reason=.*')" >&2
    return 1
}

# user_procs: the test user's processes (none may outlive its jobs)
user_procs() {
    pgrep -u "$TUID" -a 2>/dev/null || true
}

# enroot_pid CMD...: the pid of the test user's `enroot CMD` (any of them), waiting up to 30 s
enroot_pid() {
    local end=$((SECONDS + 30)) pid c
    while [ "$SECONDS" -lt "$end" ]; do
        for c in "$@"; do
            pid=$(pgrep -u "$TUID" -f "(^|/)enroot $c( |\$)" | head -n 1)
            if [ -n "$pid" ]; then echo "$pid"; return 0; fi
        done
        if [ -n "${BG_PID-}" ] && ! kill -0 "$BG_PID" 2>/dev/null; then break; fi
        sleep 0.2
    done
    printf 'no "enroot %s" of %s appeared; the step said:\n%s\n' "$*" "$PXT_USER" "$(cat "$WORK/step.out" 2>/dev/null)" >&2
    return 1
}

# stepd_of JOB: "PID STEP" of the job's first running step's slurmstepd
stepd_of() {
    pgrep -a -f "^slurmstepd: \[$1\.[0-9]+\]" | sed -n 's/^\([0-9]*\) slurmstepd: \[[0-9]*\.\([0-9]*\)\].*/\1 \2/p' | head -n 1
}

# record RESULT: for the summary line of teardown_file
record_result() {
    echo "$1" >> "${FAULTS_PASSED_FILE:-/tmp/pyxis-rs-faults.count}"
}

faults_teardown() {
    local rc=0 m
    if [ -n "${BATS_TEST_COMPLETED-}" ]; then record_result pass; else record_result fail; fi
    for m in "${FULL_MOUNTS[@]}"; do umount -l "$m" 2>/dev/null || true; done
    case "$(sinfo -h -n "$NODE" -o %T | head -n 1)" in
        drain* | down*) scontrol update nodename="$NODE" state=resume || true ;;
    esac
    local changed="${CHANGED-}"
    root_teardown || rc=$?
    # root_teardown restored the default configuration: back to this suite's
    if [ -n "$changed" ]; then
        "$PLUGSTACK" use_squashfuse=0 command_timeout=15 import_timeout=15 >/dev/null 2>&1 || rc=1
    fi
    # what a failed test left must not fail the next ones: the user's processes by pid
    local p
    for p in $(pgrep -u "$TUID" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    for p in $(user_run enroot list 2>/dev/null | grep '^pyxis_' || true); do
        user_run enroot remove -f "$p" >/dev/null 2>&1 || true
    done
    return "$rc"
}

teardown() {
    faults_teardown
}

# after_fault: the step ended, the job ends (its epilog runs), then every check
after_fault() {
    # the step ends by itself (or, after its slurmstepd was killed, with the job)
    local end=$((SECONDS + 30))
    while [ -n "${BG_PID-}" ] && kill -0 "$BG_PID" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do
        sleep 0.2
    done
    scancel "$JOB" 2>/dev/null || true
    wait_job_gone "$JOB" 60
    end=$((SECONDS + 30))
    while [ -n "${BG_PID-}" ] && kill -0 "$BG_PID" 2>/dev/null; do
        [ "$SECONDS" -lt "$end" ] || { echo "srun still runs 30 s after its job ended" >&2; return 1; }
        sleep 0.2
    done
    # the next step runs without the fault's knobs
    USER_ENV=()
    node_usable
    local left
    left=$(user_run enroot list 2>/dev/null | grep -E "^pyxis_($JOB[._]|.*$JOB\.)" || true)
    [ -z "$left" ] || { printf 'containers left: %s\n' "$left" >&2; return 1; }
    wait_no_job_files "$JOB" 20
    if [ -d "$RT" ] && [ -n "$(find "$RT" -maxdepth 1 -name '*.lock' -newer "$WORK" 2>/dev/null)" ]; then
        printf 'lock files left: %s\n' "$(find "$RT" -maxdepth 1 -name '*.lock' -newer "$WORK")" >&2
        return 1
    fi
    end=$((SECONDS + 20))
    while [ -n "$(user_procs)" ]; do
        if [ "$SECONDS" -ge "$end" ]; then
            printf 'processes of %s left:\n%s\n' "$PXT_USER" "$(user_procs)" >&2
            return 1
        fi
        sleep 0.5
    done
    user_srun --container-image="$PXT_IMAGE" sh -c 'echo next-step-ok'
    must_succeed
    assert_output_contains next-step-ok
}

# hang_step PHASE: start a background step of a new allocation whose enroot call of
# PHASE hangs, and wait until it hangs there; sets JOB, BG_PID, HUNG (the enroot pid)
hang_step() {
    local phase="$1" hang opts=(--container-image="$PXT_IMAGE") ntasks=1 cmds
    case "$phase" in
        import) hang=import,load,digest cmds="import load digest" opts=(--container-image=docker://127.0.0.1:9/pyxis/none:latest) ;;
        # the digest check (user_init) fails at once here, so the creator task imports
        task-import) hang=import,load cmds="import load" opts=(--container-image=docker://127.0.0.1:9/pyxis/none:latest) ;;
        create) hang=create cmds=create ;;
        start) hang=start cmds=start ;;
        join) hang=start cmds=start ntasks=2 ;;
        export) hang=export cmds=export opts+=(--container-save="$U/saved.sqsh") ;;
        remove) hang=remove cmds=remove ;;
    esac
    user_alloc
    user_env ENROOT_DOUBLE_HANG="$hang"
    # shellcheck disable=SC2086
    user_run timeout 120 srun --jobid="$JOB" --overlap --overcommit -N1 -n"$ntasks" "${opts[@]}" sh -c 'echo task-ran' \
        >"$WORK/step.out" 2>&1 3>&- &
    BG_PID=$!
    # shellcheck disable=SC2086
    HUNG=$(enroot_pid $cmds)
    if [ "$phase" = join ]; then
        # the second task is waiting for the first one's container
        sleep 1
    fi
}

# ppid_of PID, comm_of PID: its parent's pid, its command name (empty once it is gone)
ppid_of() { ps -o ppid= -p "$1" | tr -d ' '; }
comm_of() { ps -o comm= -p "$1"; }

# fault FAULT: inject it into the hung step
fault() {
    local sd
    case "$1" in
        kill-enroot) kill -9 "$HUNG" ;;
        kill-stepd)
            sd=$(stepd_of "$JOB")
            [ -n "$sd" ] || { echo "no slurmstepd of job $JOB" >&2; return 1; }
            kill -9 "${sd%% *}"
            ;;
        kill-waiter | kill-creator)
            # the creator task (first task, in task_init) forked the process that waits
            # for the hung enroot start (its parent: enroot runs as the task's grandchild)
            local waiter task
            waiter=$(ppid_of "$HUNG")
            [ -n "$waiter" ] && [ "$waiter" -gt 1 ] || { echo "no parent of enroot start $HUNG" >&2; return 1; }
            task=$(ppid_of "$waiter")
            [ -n "$task" ] && [ "$task" -gt 1 ] || { echo "no parent of $waiter (enroot start $HUNG)" >&2; return 1; }
            if [ "$1" = kill-waiter ]; then kill -9 "$waiter"; else kill -9 "$task"; fi
            ;;
        kill-task)
            # import and create: enroot is a child of the creator task (the first task,
            # in task_init, still a slurmstepd process whose parent is the step's)
            local task
            task=$(ppid_of "$HUNG")
            [ -n "$task" ] && [ "$(comm_of "$task")" = slurmstepd ] \
                && [ "$(comm_of "$(ppid_of "$task")")" = slurmstepd ] \
                || { printf 'the parent of enroot %s is not a task:\n%s\n' "$HUNG" "$(ps -o pid,ppid,comm -p "$task")" >&2; return 1; }
            kill -9 "$task"
            ;;
        scancel)
            sd=$(stepd_of "$JOB")
            [ -n "$sd" ] || { echo "no slurmstepd of job $JOB" >&2; return 1; }
            scancel "$JOB.${sd##* }"
            ;;
    esac
}

# ------------------------------------------------------------------ kill and cancel at each phase
fault_case() {
    hang_step "$2"
    fault "$1"
    after_fault
}

@test "faults: kill-enroot during import" { fault_case kill-enroot import; }
@test "faults: kill-stepd during import" { fault_case kill-stepd import; }
@test "faults: scancel during import" { fault_case scancel import; }
@test "faults: kill-enroot during create" { fault_case kill-enroot create; }
@test "faults: kill-stepd during create" { fault_case kill-stepd create; }
@test "faults: scancel during create" { fault_case scancel create; }
@test "faults: kill-enroot during start" { fault_case kill-enroot start; }
@test "faults: kill-stepd during start" { fault_case kill-stepd start; }
@test "faults: scancel during start" { fault_case scancel start; }
@test "faults: kill-enroot during join" { fault_case kill-enroot join; }
@test "faults: kill-stepd during join" { fault_case kill-stepd join; }
@test "faults: scancel during join" { fault_case scancel join; }
@test "faults: kill-enroot during export" { fault_case kill-enroot export; }
@test "faults: kill-stepd during export" { fault_case kill-stepd export; }
@test "faults: scancel during export" { fault_case scancel export; }
@test "faults: kill-enroot during remove" { fault_case kill-enroot remove; }
@test "faults: kill-stepd during remove" { fault_case kill-stepd remove; }
@test "faults: scancel during remove" { fault_case scancel remove; }

@test "faults: SIGKILL of the creator task during import" {
    hang_step task-import
    fault kill-task
    after_fault
}

@test "faults: SIGKILL of the creator task during create" {
    hang_step create
    fault kill-task
    after_fault
}

@test "faults: SIGKILL of the creator task during start" {
    hang_step start
    fault kill-creator
    after_fault
}

@test "faults: SIGKILL of the creator task while a second task waits to join" {
    hang_step join
    fault kill-creator
    after_fault
}

@test "faults: SIGKILL of the process waiting for the creator's enroot start" {
    hang_step start
    fault kill-waiter
    after_fault
}

@test "faults: SIGKILL of that waiting process while a second task waits to join" {
    hang_step join
    fault kill-waiter
    after_fault
}

@test "faults: enroot hanging past command_timeout/import_timeout fails the step in bounded time" {
    hang_step create
    local t0=$SECONDS end=$((SECONDS + 60))
    while kill -0 "$BG_PID" 2>/dev/null; do
        [ "$SECONDS" -lt "$end" ] || { echo "the step still hangs after 60 s (import_timeout=15)" >&2; return 1; }
        sleep 0.5
    done
    run cat "$WORK/step.out"
    assert_output_contains "pyxis:"
    [ $((SECONDS - t0)) -le 45 ]
    ! kill -0 "$HUNG" 2>/dev/null || { echo "the hung enroot $HUNG was not killed" >&2; return 1; }
    after_fault
}

@test "faults: runtime_path on a full filesystem" {
    local mnt="$WORK/full-rt"
    mkdir -p "$mnt"
    mount -t tmpfs -o size=512k,mode=0755 pyxis-faults "$mnt"
    FULL_MOUNTS+=("$mnt")
    with_config use_squashfuse=0 command_timeout=15 import_timeout=15 runtime_path="$mnt"
    RT="$mnt/$TUID"
    install -d -o "$PXT_USER" -m 0700 "$RT"
    dd if=/dev/zero of="$mnt/filler" bs=4k 2>/dev/null || true
    user_alloc
    run user_run timeout 60 srun --jobid="$JOB" --overlap -N1 -n1 --container-image="$PXT_IMAGE" \
        --container-mounts=/tmp:/mnt/host-tmp sh -c 'echo task-ran'
    # success or a clear pyxis error; either way the checks below hold
    [ "$status" -eq 0 ] || assert_output_contains "pyxis:"
    rm -f "$mnt/filler"
    after_fault
}

@test "faults: the image cache on a full filesystem" {
    local mnt="$WORK/full-cache"
    mkdir -p "$mnt"
    mount -t tmpfs -o size=256k,mode=0755 pyxis-faults "$mnt"
    FULL_MOUNTS+=("$mnt")
    with_config use_squashfuse=0 command_timeout=15 import_timeout=30 image_cache_path="$mnt"
    dd if=/dev/zero of="$mnt/filler" bs=4k 2>/dev/null || true
    user_alloc
    run user_run timeout 90 srun --jobid="$JOB" --overlap -N1 -n1 \
        --container-image="docker://$PXT_REG_BUSYBOX" sh -c 'echo task-ran'
    [ "$status" -eq 0 ] || assert_output_contains "pyxis:"
    rm -f "$mnt/filler"
    after_fault
}

# hostile values: command substitution, backticks, quotes, newlines, control bytes,
# a 64 kB value, .., ., a blank
hostile_values() {
    printf '%s\0' '$(touch /tmp/pyxis-faults-pwned)' '`touch /tmp/pyxis-faults-pwned`' \
        "a'b\"c" $'x\ny' $'c\x01\x1b[2J\x7f' "$(head -c 65536 /dev/zero | tr '\0' a)" '..' '.' 'x y'
}

@test "faults: hostile strings in every option leave nothing behind" {
    rm -f /tmp/pyxis-faults-pwned
    user_alloc
    local v o n=0 values
    # an array, not a read loop: srun would read the loop's input
    mapfile -d '' values < <(hostile_values)
    for v in "${values[@]}"; do
        for o in image mounts workdir name save env unshare; do
            local img=()
            [ "$o" = image ] || img=(--container-image="$PXT_IMAGE")
            run user_run timeout 60 srun --jobid="$JOB" --overlap -N1 -n1 "${img[@]}" \
                "--container-$o=$v" true </dev/null
            # refused with a pyxis message, or accepted and run
            [ "$status" -eq 0 ] || [[ "$output" == *pyxis:* ]] || [[ "$output" == *"srun: "* ]] \
                || { printf -- '--container-%s=%q: status %s, no pyxis message:\n%s\n' "$o" "${v:0:40}" "$status" "$output" >&2; return 1; }
            n=$((n + 1))
        done
    done
    [ ! -e /tmp/pyxis-faults-pwned ] || { echo "a hostile value ran a command" >&2; return 1; }
    [ "$n" -eq 63 ]
    after_fault
}

@test "faults: hostile strings in every PYXIS_CONTAINER_* variable leave nothing behind" {
    rm -f /tmp/pyxis-faults-pwned
    user_alloc
    local v e values n=0
    mapfile -d '' values < <(hostile_values)
    for v in "${values[@]}"; do
        for e in IMAGE MOUNTS WORKDIR NAME SAVE ENV UNSHARE MOUNT_HOME WRITABLE; do
            local img=()
            [ "$e" = IMAGE ] || img=(--container-image="$PXT_IMAGE")
            run user_run env "PYXIS_CONTAINER_$e=$v" timeout 60 srun --jobid="$JOB" --overlap -N1 -n1 \
                "${img[@]}" true </dev/null
            [ "$status" -eq 0 ] || [[ "$output" == *pyxis:* ]] || [[ "$output" == *"srun: "* ]] \
                || { printf 'PYXIS_CONTAINER_%s=%q: status %s, no pyxis message:\n%s\n' "$e" "${v:0:40}" "$status" "$output" >&2; return 1; }
            n=$((n + 1))
        done
    done
    [ "$n" -eq 81 ]
    [ ! -e /tmp/pyxis-faults-pwned ] || { echo "a hostile value ran a command" >&2; return 1; }
    after_fault
}
