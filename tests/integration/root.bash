# shellcheck shell=bash
# shellcheck disable=SC2154  # $output and $status are set by bats' `run`
# Helpers of the suites that run as root (tests/run-all.sh runs config.bats and
# root_*.bats as root): they switch the plugin configuration with
# tests/harness/plugstack.sh KEY=VALUE... (which restarts slurmd), restore the default
# in teardown, and run the steps as the unprivileged test user. Loaded after common.bash
# and containers.bash.

: "${PXT_USER:=pyxistest}"
: "${PXT_DAEMON_PATH:=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}"

setup() {
    root_setup
}

# root_setup [TAG]: the checks and per-test state of every root suite; the work
# directory is /tmp/TAG.XXXXXX (default i3-root). Suites with their own setup call it.
root_setup() {
    [ "$(id -u)" -eq 0 ] || skip "rewrites plugstack.conf: run as root (tests/run-all.sh does)"
    id "$PXT_USER" >/dev/null 2>&1 || skip "no test user $PXT_USER"
    [ -r "$PXT_IMAGE" ] || skip "no test image $PXT_IMAGE (run tests/harness/up.sh)"
    # run-all.sh exports PXT_HARNESS; run from the repository, the harness is next door
    PLUGSTACK="${PXT_HARNESS:-$BATS_TEST_DIRNAME/../harness}/plugstack.sh"
    [ -x "$PLUGSTACK" ] || skip "no $PLUGSTACK"
    TUID=$(id -u "$PXT_USER")
    THOME=$(getent passwd "$PXT_USER" | cut -d: -f6)
    RT="$PXT_RUNTIME_PATH/$TUID"
    # root-owned and world-readable: the importer lives here; the user works in $U
    WORK=$(mktemp -d "/tmp/${1:-i3-root}.XXXXXX")
    chmod 0755 "$WORK"
    U="$WORK/user"
    install -d -o "$PXT_USER" -m 0755 "$U" "$U/log" "$U/ctl" "$U/enroot-log"
    USER_ENV=()
    JOBS=()
    CREATED_NAMES=()
    CHANGED=
    TRACER=
}

# root_teardown: stop what the test started, remove its containers, restore the
# default plugin configuration. Suites with their own teardown call it.
root_teardown() {
    local j
    if [ -n "${TRACER-}" ]; then kill "$TRACER" 2>/dev/null || true; fi
    if [ -n "${U-}" ]; then touch "$U/ctl/stop"; fi
    for j in "${JOBS[@]}"; do scancel "$j" 2>/dev/null || true; done
    # background steps end with their job (and srun is bounded by timeout anyway)
    wait 2>/dev/null || true
    for j in "${CREATED_NAMES[@]}"; do
        user_run enroot remove -f "$j" >/dev/null 2>&1 || true
    done
    local rc=0
    if [ -n "$CHANGED" ]; then
        "$PLUGSTACK" >"$WORK/plugstack-restore.log" 2>&1 || { rc=$?; cat "$WORK/plugstack-restore.log" >&2; }
    fi
    if [ -n "${WORK-}" ]; then rm -rf "$WORK"; fi
    return "$rc"
}

teardown() {
    root_teardown
}

# with_config KEY=VALUE...: this plugin configuration (slurmd restarted) until teardown
with_config() {
    CHANGED=1
    "$PLUGSTACK" "$@" >"$WORK/plugstack.log" 2>&1 || { cat "$WORK/plugstack.log" >&2; return 1; }
}

# user_run CMD...: CMD as the test user from $U (or $USER_CWD), with a clean environment plus USER_ENV
user_run() {
    (cd "${USER_CWD:-$U}" && runuser -u "$PXT_USER" -- env -i PATH="$PXT_DAEMON_PATH" HOME="$THOME" \
        USER="$PXT_USER" LOGNAME="$PXT_USER" LANG=C.UTF-8 "${USER_ENV[@]}" "$@")
}

# user_env NAME=VALUE...: add to the test user's environment for the rest of the test
user_env() {
    USER_ENV+=("$@")
}

# remove_later FULL_NAME...: enroot remove -f them in teardown
remove_later() {
    CREATED_NAMES+=("$@")
}

# use_job JOBID: later user_step/user_bg_step calls run in that allocation
use_job() {
    JOB=$1
}

# user_srun ARGS...: `run srun` as the test user on the one node
user_srun() {
    run user_run timeout "$PXT_CMD_TIMEOUT" srun -N1 --oversubscribe "$@"
}

# user_alloc: a one-task overcommitting allocation of the test user -> $JOB
user_alloc() {
    local out
    out=$(user_run timeout "$PXT_CMD_TIMEOUT" salloc --no-shell -N1 -n1 --overcommit --oversubscribe -J i3-root 2>&1) \
        || { printf 'salloc failed:\n%s\n' "$out" >&2; return 1; }
    JOB=$(sed -n 's/.*Granted job allocation \([0-9][0-9]*\).*/\1/p' <<< "$out" | head -n 1)
    [ -n "$JOB" ] || { printf 'no job id in:\n%s\n' "$out" >&2; return 1; }
    JOBS+=("$JOB")
}

# user_step ARGS...: `run srun` as an overlapping step of $JOB
user_step() {
    run user_run timeout "$PXT_CMD_TIMEOUT" srun --jobid="$JOB" --overlap -N1 -n1 "$@"
}

# user_bg_step OUT ARGS...: a background step of $JOB; pid in $BG_PID
user_bg_step() {
    local out="$1"; shift
    user_run timeout "$PXT_CMD_TIMEOUT" srun --jobid="$JOB" --overlap -N1 -n1 "$@" >"$out" 2>&1 3>&- &
    BG_PID=$!
}

# must_succeed: the last `run` succeeded (prints its output otherwise)
must_succeed() {
    if [ "$status" -ne 0 ]; then
        printf 'failed with status %s:\n%s\n' "$status" "$output" >&2
        return 1
    fi
}

# has_container FULL_NAME: the test user's enroot lists it
has_container() {
    user_run enroot list | grep -qxF -- "$1"
}

# wait_gone FULL_NAME [SECONDS]
wait_gone() {
    local end=$((SECONDS + ${2:-20}))
    while has_container "$1"; do
        if [ "$SECONDS" -ge "$end" ]; then
            echo "container $1 still exists after ${2:-20}s" >&2
            return 1
        fi
        sleep 0.5
    done
}

# job_files JOBID: the job's files (and hidden ones enroot writes next to them) in the
# test user's runtime directory
job_files() {
    find "$RT" -mindepth 1 -maxdepth 1 \( -name "$1.*" -o -name ".$1.*" \) -printf '%f\n' 2>/dev/null | LC_ALL=C sort
}

# wait_no_job_files JOBID [SECONDS]
wait_no_job_files() {
    local end=$((SECONDS + ${2:-20}))
    while [ -n "$(job_files "$1")" ]; do
        if [ "$SECONDS" -ge "$end" ]; then
            printf 'files of job %s left in %s:\n%s\n' "$1" "$RT" "$(job_files "$1")" >&2
            return 1
        fi
        sleep 0.5
    done
}

is_double() {
    [ "$(pxt_enroot_kind)" = double ]
}

# node_state: the state of node $NODE once no job is completing on it any more
node_state() {
    local st end=$((SECONDS + 60))
    while :; do
        st=$(sinfo -h -n "$NODE" -o %T | head -n 1)
        case "$st" in completing*) ;; *) break ;; esac
        [ "$SECONDS" -lt "$end" ] || break
        sleep 0.5
    done
    printf '%s\n' "$st"
}
