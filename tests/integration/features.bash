# shellcheck shell=bash
# Helpers for the suites about what a containerised step sees: mounts, working
# directory, environment, entrypoint, root/home/writable, unshare, MPI, sbatch.
# Loaded after common.bash (`load common` then `load features`).
#
# The cluster and this user's enroot data directory are shared with suites
# running at the same time (other engineers, other prefixes): every container
# named here is i4-<what>-<pid>-<random>, and leftover checks only look at
# unnamed containers and at i4- names, never at the whole listing.

# the registry images of tests/harness/registry.sh
# shellcheck disable=SC2034  # used by the .bats files
PXT_REG_BUSYBOX='127.0.0.1:5000#pyxis/busybox:latest'
# shellcheck disable=SC2034
PXT_REG_APP='127.0.0.1:5000#pyxis/app:latest'
# shellcheck disable=SC2034
PXT_REG_BADENTRY='127.0.0.1:5000#pyxis/badentry:latest'
# what pyxis/app's entrypoint prints and exports
# shellcheck disable=SC2034  # used by the .bats files
PXT_ENTRYPOINT_LINE='pyxis-rs test entrypoint ran'
# shellcheck disable=SC2034
PXT_ENTRYPOINT_VAR='ENTRYPOINT_VAR=set-by-entrypoint'

# Every job of a test carries one job name (srun, sbatch and salloc read it from these
# variables), so that the unnamed containers of this test can be told from those of
# suites running at the same time: see own_new_containers.
PXT_JOB_NAME="i4-job-$$-$RANDOM"
export SLURM_JOB_NAME="$PXT_JOB_NAME" SBATCH_JOB_NAME="$PXT_JOB_NAME" SALLOC_JOB_NAME="$PXT_JOB_NAME"

# own_job_ids: the ids of this test's jobs, '|'-separated (squeue keeps finished jobs for
# MinJobAge, 30 s in the test cluster: long enough for the checks right after a step).
own_job_ids() {
    squeue -h -t all -n "$PXT_JOB_NAME" -o %i 2>/dev/null | paste -sd'|' -
}

# i4_name WORD: a container name no other test (or engineer) uses.
i4_name() {
    printf 'i4-%s-%s-%s\n' "$1" "$$" "$RANDOM"
}

# enroot_as_user ARGS...: enroot as this user with the site configuration (see enroot_list).
enroot_as_user() {
    env -u ENROOT_DATA_PATH -u ENROOT_RUNTIME_PATH -u ENROOT_CACHE_PATH -u ENROOT_CONFIG_PATH \
        enroot "$@"
}

# own_new_containers: containers that appeared since the snapshot and are ours to
# judge: unnamed ones of this test's jobs (pyxis_<job>.<step>, or pyxis_<job>_<job>.<step>
# with container_scope=job; any job's when squeue cannot tell) and i4- names. Other
# suites' containers are ignored.
own_new_containers() {
    local ids
    ids=$(own_job_ids)
    if [ -z "$ids" ]; then ids='[0-9]+'; fi
    new_containers | grep -E "^pyxis_((${ids})\.[0-9]+|(${ids})_(${ids})\.[0-9]+|([0-9]+_)?i4-.*)\$" || true
}

# remove_containers NAME...: best-effort removal of pyxis_NAME and pyxis_<job>_NAME (teardown).
remove_containers() {
    local n c list
    list=$(enroot_list 2>/dev/null) || return 0
    for n in "$@"; do
        [ -n "$n" ] || continue
        while read -r c; do
            if [ -n "$c" ]; then enroot_as_user remove -f "$c" >/dev/null 2>&1 || true; fi
        done < <(grep -E "^pyxis_([0-9]+_)?${n}\$" <<< "$list" || true)
    done
}

# enroot_data_path: this user's ENROOT_DATA_PATH per the site configuration
# (/etc/enroot/enroot.conf), or nothing when it cannot be told.
enroot_data_path() {
    local p
    p=$(sed -n 's/^ENROOT_DATA_PATH[[:space:]]\{1,\}//p' /etc/enroot/enroot.conf 2>/dev/null | tail -n 1)
    [ -n "$p" ] || return 0
    # the file holds a literal $(id -u), which enroot expands
    # shellcheck disable=SC2016
    p=${p//'$(id -u)'/$(id -u)}
    case "$p" in *'$'*) return 0 ;; esac
    printf '%s\n' "$p"
}

# container_rootfs NAME [JOBID]: the on-disk root filesystem of the named container
# (pyxis_NAME, or pyxis_JOBID_NAME with container_scope=job); nothing if not found.
container_rootfs() {
    local data d
    data=$(enroot_data_path)
    [ -n "$data" ] || return 0
    for d in "$data/pyxis_$1" ${2:+"$data/pyxis_$2_$1"}; do
        if [ -d "$d" ]; then printf '%s\n' "$d"; return 0; fi
    done
}

# --- steps of one allocation (named containers live until the job ends with
# container_scope=job, and attaching needs two steps of the same job)

# wait_for_file FILE [SECONDS] [PID]: FILE exists and is not empty; fails early when PID
# (the step that writes it) exited first.
wait_for_file() {
    local end=$((SECONDS + ${2:-60}))
    while [ ! -s "$1" ]; do
        if [ -n "${3-}" ] && ! kill -0 "$3" 2>/dev/null; then
            [ -s "$1" ] && return 0
            echo "the step exited before writing $1" >&2
            return 1
        fi
        if [ "$SECONDS" -ge "$end" ]; then
            echo "no $1 after ${2:-60}s" >&2
            return 1
        fi
        sleep 0.2
    done
}

# The command of a step that keeps its container running: it writes its namespaces to
# /i4ctl/ns (the test's control directory, bind-mounted there), then waits for /i4ctl/stop.
# shellcheck disable=SC2016,SC2034  # expanded inside the container; used by the .bats files
PXT_HOLD='for n in mnt net ipc uts; do readlink /proc/self/ns/$n; done > /i4ctl/ns.tmp && mv /i4ctl/ns.tmp /i4ctl/ns; while [ ! -e /i4ctl/stop ]; do sleep 0.2; done'

# stop_held STEP_PID CTL_DIR: let a PXT_HOLD step end and wait for its srun.
stop_held() {
    touch "$2/stop"
    wait "$1" 2>/dev/null || true
}

# assert_no_own_leftovers [SECS]: no container of our own jobs or names is left.
assert_no_own_leftovers() {
    poll_no_leftovers "${1:-20}" own_new_containers
}
