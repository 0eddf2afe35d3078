# shellcheck shell=bash
# shellcheck disable=SC2154  # $output and $status are set by bats' `run`
# Helpers for the suites about container lifecycles (registry images, named
# containers, attach, concurrency, --container-save, cleanup). Loaded after
# common.bash (`load common` then `load containers`).
#
# The cluster is shared with other suites running at the same time, so every
# container made here is named i3-<what>-<pid>-<random>, and cleanliness is
# checked only for our own names and job ids, never for the whole listing.

# the per-user runtime directory of the default runtime_path (reference §3)
: "${PXT_RUNTIME_PATH:=/run/pyxis}"
# the registry images of tests/harness/registry.sh
# shellcheck disable=SC2034  # used by the .bats files
PXT_REG_BUSYBOX='127.0.0.1:5000#pyxis/busybox:latest'
# shellcheck disable=SC2034  # used by the .bats files
PXT_REG_APP='127.0.0.1:5000#pyxis/app:latest'
# shellcheck disable=SC2034  # used by the .bats files
PXT_REG_MISSING='127.0.0.1:5000#pyxis/i3-does-not-exist:latest'

# i3_name WORD: a container name no other test (or engineer) uses.
i3_name() {
    printf 'i3-%s-%s-%s\n' "$1" "$$" "$RANDOM"
}

# new_name WORD: a fresh name in $CNAME, remembered in $CREATED_NAMES for remove_named in teardown.
new_name() {
    CNAME=$(i3_name "$1")
    CREATED_NAMES+=("$CNAME")
}

# enroot_user ARGS...: enroot as this user with the site configuration, like enroot_list.
enroot_user() {
    env -u ENROOT_DATA_PATH -u ENROOT_RUNTIME_PATH -u ENROOT_CACHE_PATH -u ENROOT_CONFIG_PATH \
        enroot "$@"
}

# container_exists FULL_NAME: the enroot container FULL_NAME (pyxis_...) exists.
container_exists() {
    local list
    list=$(enroot_list) || { echo "enroot list failed" >&2; return 2; }
    grep -qxF -- "$1" <<< "$list"
}

# refute_container FULL_NAME: the container does not exist (a failing listing fails too).
refute_container() {
    local rc=0
    container_exists "$1" || rc=$?
    case "$rc" in
        1) return 0 ;;
        0) echo "container $1 exists" >&2; return 1 ;;
        *) return 1 ;;
    esac
}

# wait_container_gone FULL_NAME [SECONDS]: the container disappears (cleanup may finish
# a moment after srun returns, the job epilog after the job ended).
wait_container_gone() {
    local end=$((SECONDS + ${2:-20})) rc
    while :; do
        rc=0
        container_exists "$1" || rc=$?
        case "$rc" in 1) return 0 ;; 0) ;; *) return 1 ;; esac
        if [ "$SECONDS" -ge "$end" ]; then
            echo "container $1 still exists after ${2:-20}s" >&2
            return 1
        fi
        sleep 0.5
    done
}

# remove_named NAME...: best-effort `enroot remove -f pyxis_NAME` (test cleanup).
remove_named() {
    local n list
    list=$(enroot_list 2>/dev/null) || return 0
    for n in "$@"; do
        if grep -qxF -- "pyxis_$n" <<< "$list"; then
            enroot_user remove -f "pyxis_$n" >/dev/null 2>&1 || true
        fi
    done
}

# runtime_dir: this user's private pyxis runtime directory.
runtime_dir() {
    printf '%s/%s\n' "$PXT_RUNTIME_PATH" "$(id -u)"
}

# runtime_files_of JOBID: files kept for that job in the runtime directory (temporary
# squashfs `<job>.<step>.squashfs` and what enroot writes next to it, `.<job>.<step>...`,
# enroot start scripts, job markers).
runtime_files_of() {
    local d
    d=$(runtime_dir)
    [ -d "$d" ] || return 0
    find "$d" -mindepth 1 -maxdepth 1 \( -name "$1.*" -o -name ".$1.*" \) -printf '%f\n' 2>/dev/null | LC_ALL=C sort
}

# assert_no_runtime_files JOBID [SECONDS]: polls, cleanup runs in slurmstepd after the step.
assert_no_runtime_files() {
    local end=$((SECONDS + ${2:-20})) left
    while :; do
        left=$(runtime_files_of "$1")
        [ -z "$left" ] && return 0
        if [ "$SECONDS" -ge "$end" ]; then
            printf 'files of job %s left in %s:\n%s\n' "$1" "$(runtime_dir)" "$left" >&2
            return 1
        fi
        sleep 0.5
    done
}

# assert_no_lock_files NAME...: the per-name lock files (W2) of pyxis_NAME are gone.
assert_no_lock_files() {
    local n d
    d=$(runtime_dir)
    for n in "$@"; do
        if [ -e "$d/pyxis_$n.lock" ]; then
            echo "lock file $d/pyxis_$n.lock left behind" >&2
            return 1
        fi
    done
}

# count_lines_with STRING: how many lines of $output contain STRING.
count_lines_with() {
    grep -cF -- "$1" <<< "$output" || true
}

# step_id_of: the JOB.STEP a step printed as `STEP=<job>.<step>` in $output.
step_id_of() {
    sed -n 's/^STEP=\([0-9][0-9]*\.[0-9][0-9]*\)$/\1/p' <<< "$output" | head -n 1
}

# double_log_checks: true with the enroot test double, whose invocation log
# (ENROOT_DOUBLE_LOG) shows enroot's command lines; with a real enroot says that those
# extra checks are left out, and is false (`double_log_checks || return 0`).
double_log_checks() {
    [ "$(pxt_enroot_kind)" = double ] && return 0
    echo "# ${BATS_TEST_DESCRIPTION-}: enroot command-line checks left out (they need the enroot test double)" >&3
    return 1
}

# --- allocations (upstream runs the overlapping steps under `salloc --overcommit`)

# wait_job_gone JOBID [SECONDS]: the job ended and finished completing (its epilog ran).
wait_job_gone() {
    local end=$((SECONDS + ${2:-60})) st
    while :; do
        st=$(squeue -h -j "$1" -t all -o %T 2>/dev/null || true)
        case "$st" in "" | COMPLETED | CANCELLED | FAILED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY) return 0 ;; esac
        if [ "$SECONDS" -ge "$end" ]; then
            echo "job $1 still $st after ${2:-60}s" >&2
            return 1
        fi
        sleep 0.5
    done
}

# wait_for_line FILE STRING [SECONDS] [PID]: FILE gets a line containing STRING; fails
# early when PID (the writer) exited without printing it.
wait_for_line() {
    local end=$((SECONDS + ${3:-60}))
    while ! grep -qF -- "$2" "$1" 2>/dev/null; do
        if [ -n "${4-}" ] && ! kill -0 "$4" 2>/dev/null; then
            grep -qF -- "$2" "$1" 2>/dev/null && return 0
            printf 'the step exited before printing %s; it said:\n%s\n' "$2" "$(cat "$1" 2>/dev/null)" >&2
            return 1
        fi
        if [ "$SECONDS" -ge "$end" ]; then
            printf 'no %s in %s after %ss; it has:\n%s\n' "$2" "$1" "${3:-60}" "$(cat "$1" 2>/dev/null)" >&2
            return 1
        fi
        sleep 0.2
    done
}

# A step that keeps its container running until the test creates $ctl/stop: the
# directory $ctl is bind-mounted at /i3ctl, the command polls for the file.
# shellcheck disable=SC2034  # used by the .bats files
PXT_HOLD='while [ ! -e /i3ctl/stop ]; do sleep 0.2; done'
