# shellcheck shell=bash
# Helpers shared by the integration suites. Loaded with `load common` from each
# .bats file. The suites run as the unprivileged test user (tests/run-all.sh
# starts bats with runuser) against the single-node cluster of tests/harness/,
# through real srun/sbatch/salloc, with the plugin loaded by slurmd/slurmstepd
# from plugstack.conf and `enroot` being either the project's test double or a
# real enroot (tests/harness/enroot.sh).

bats_require_minimum_version 1.5.0   # run --separate-stderr

: "${PXT_STATE:=/var/lib/pyxis-rs-test}"
# the BusyBox squashfs made by tests/harness/images.sh
: "${PXT_IMAGE:=$PXT_STATE/images/busybox.sqsh}"
# the os-release line that proves a command ran inside that image
# shellcheck disable=SC2034  # used by the .bats files
PXT_PRETTY='PRETTY_NAME="pyxis-rs test BusyBox'
# upper bound for one srun/sbatch, so that a hang fails one test instead of the run
: "${PXT_CMD_TIMEOUT:=180}"

# the 16 options pyxis registers, in `srun --help` order (reference §4.1)
PXT_OPTIONS=(container-image container-mounts container-workdir container-name container-save
    container-mount-home no-container-mount-home container-remap-root no-container-remap-root
    container-entrypoint no-container-entrypoint container-entrypoint-log container-writable
    container-readonly container-env container-unshare)

# pxt_enroot_kind: "double" or "real <path> <version>" (written by tests/harness/enroot.sh)
pxt_enroot_kind() { cat "$PXT_STATE/enroot-kind" 2>/dev/null || echo unknown; }

# run_srun_unchecked ARGS...: `run srun` on the one node, sharing it with other jobs
# (as upstream's run_srun_unchecked). stdout and stderr are merged in $output.
run_srun_unchecked() {
    run timeout "$PXT_CMD_TIMEOUT" srun -N1 --oversubscribe "$@"
}

# run_srun ARGS...: the same, but the step must succeed.
run_srun() {
    run_srun_unchecked "$@"
    if [ "$status" -ne 0 ]; then
        printf 'srun %s failed with status %s:\n%s\n' "$*" "$status" "$output" >&2
        return 1
    fi
}

# run_srun_stdout ARGS...: the step must succeed; $output holds its stdout only
# (stderr in $stderr), for assertions that count lines.
run_srun_stdout() {
    run --separate-stderr timeout "$PXT_CMD_TIMEOUT" srun -N1 --oversubscribe "$@"
    if [ "$status" -ne 0 ]; then
        # shellcheck disable=SC2154  # $stderr is set by bats' run --separate-stderr
        printf 'srun %s failed with status %s:\nstdout:\n%s\nstderr:\n%s\n' "$*" "$status" "$output" "$stderr" >&2
        return 1
    fi
}

# run_sbatch ARGS...: `sbatch --wait` with the job's output captured in $output
# (as upstream's run_sbatch). Fails unless the job succeeded.
run_sbatch() {
    local out="$BATS_TEST_TMPDIR/sbatch-$RANDOM.out" rc=0
    : > "$out"
    timeout "$PXT_CMD_TIMEOUT" sbatch --wait -o "$out" "$@" >"$out.submit" 2>&1 || rc=$?
    output=$(cat "$out")
    status=$rc
    if [ "$rc" -ne 0 ]; then
        printf 'sbatch %s failed with status %s:\n%s\njob output:\n%s\n' "$*" "$rc" "$(cat "$out.submit")" "$output" >&2
        return 1
    fi
}

# enroot_list [ARGS]: `enroot list` as this user, reading the same site
# configuration as the enroot that slurmstepd runs for the job (ENROOT_* from the
# environment would take precedence over /etc/enroot/enroot.conf, so drop them).
# shellcheck disable=SC2120  # tests may pass e.g. -f
enroot_list() {
    env -u ENROOT_DATA_PATH -u ENROOT_RUNTIME_PATH -u ENROOT_CACHE_PATH -u ENROOT_CONFIG_PATH \
        enroot list "$@"
}

# pyxis_containers: the pyxis-made container filesystems of this user, sorted.
pyxis_containers() {
    local list
    list=$(enroot_list) || { echo "enroot list failed" >&2; return 1; }
    grep '^pyxis_' <<< "$list" | LC_ALL=C sort || true
}

# snapshot_containers [FILE]: remember which pyxis_ containers exist now (default:
# per test), so that a test only blames containers that appeared while it ran.
snapshot_containers() {
    pyxis_containers > "${1:-$BATS_TEST_TMPDIR/containers.before}"
}

# new_containers [FILE]: pyxis_ containers that are not in the snapshot.
new_containers() {
    local before="${1:-$BATS_TEST_TMPDIR/containers.before}"
    LC_ALL=C comm -13 "$before" <(pyxis_containers)
}

# assert_output_contains STRING: fixed-string match against $output.
assert_output_contains() {
    if ! grep -qF -- "$1" <<< "$output"; then
        printf 'expected output to contain: %s\nactual output:\n%s\n' "$1" "$output" >&2
        return 1
    fi
}

# refute_output_contains STRING
refute_output_contains() {
    if grep -qF -- "$1" <<< "$output"; then
        printf 'expected output NOT to contain: %s\nactual output:\n%s\n' "$1" "$output" >&2
        return 1
    fi
}

# assert_failure_with MESSAGE: the command failed and printed a pyxis line containing MESSAGE.
assert_failure_with() {
    if [ "$status" -eq 0 ]; then
        printf 'expected a failure, got status 0; output:\n%s\n' "$output" >&2
        return 1
    fi
    assert_output_contains "pyxis: "
    if [ -n "${1-}" ]; then assert_output_contains "$1"; fi
}

# help_lists_option HELP_TEXT NAME: HELP_TEXT has an entry for --NAME (not just a longer
# name containing it: --container-mount-home vs --no-container-mount-home).
help_lists_option() {
    grep -Eq -- "(^|[[:space:]])--$2([=[:space:]]|$)" <<< "$1"
}

# assert_help_lists_all_options CMD: CMD --help lists every pyxis option.
assert_help_lists_all_options() {
    local help o missing=()
    help=$("$1" --help 2>&1) || { printf '%s --help failed:\n%s\n' "$1" "$help" >&2; return 1; }
    for o in "${PXT_OPTIONS[@]}"; do
        help_lists_option "$help" "$o" || missing+=("--$o")
    done
    if [ "${#missing[@]}" -ne 0 ]; then
        printf '%s --help does not list: %s\n' "$1" "${missing[*]}" >&2
        return 1
    fi
}

# poll_no_leftovers SECS CMD...: CMD prints leftover pyxis containers; polls until it prints
# nothing, and after SECS fails with the list (cleanup runs after the step returns).
poll_no_leftovers() {
    local secs="$1" left end=$((SECONDS + $1))
    shift
    while :; do
        left=$("$@")
        [ -z "$left" ] && return 0
        if [ "$SECONDS" -ge "$end" ]; then
            printf 'pyxis containers left behind after %ss:\n%s\n' "$secs" "$left" >&2
            return 1
        fi
        sleep 0.5
    done
}

# assert_no_new_containers [SECS] [SNAPSHOT]: no container appeared since snapshot_containers.
assert_no_new_containers() {
    poll_no_leftovers "${1:-20}" new_containers "${2:-$BATS_TEST_TMPDIR/containers.before}"
}

# alloc_job [NAME]: `salloc --no-shell` a one-task, overcommitting allocation, named NAME
# (else $SALLOC_JOB_NAME or Slurm's default); its id goes to $ALLOC_JOB and is remembered
# for release_jobs.
alloc_job() {
    local out name=()
    [ -z "${1-}" ] || name=(-J "$1")
    out=$(timeout "$PXT_CMD_TIMEOUT" salloc --no-shell -N1 -n1 --overcommit --oversubscribe \
        "${name[@]}" 2>&1) || { printf 'salloc failed:\n%s\n' "$out" >&2; return 1; }
    ALLOC_JOB=$(sed -n 's/.*Granted job allocation \([0-9][0-9]*\).*/\1/p' <<< "$out" | head -n 1)
    if [ -z "$ALLOC_JOB" ]; then
        printf 'no job id in the salloc output:\n%s\n' "$out" >&2
        return 1
    fi
    echo "$ALLOC_JOB" >> "$BATS_TEST_TMPDIR/allocations"
}

# release_jobs: cancel every allocation this test made (teardown).
release_jobs() {
    local j
    [ -f "$BATS_TEST_TMPDIR/allocations" ] || return 0
    while read -r j; do
        scancel "$j" 2>/dev/null || true
    done < "$BATS_TEST_TMPDIR/allocations"
    rm -f "$BATS_TEST_TMPDIR/allocations"
}

# Steps of an allocation $ALLOC_JOB that the suite made (salloc --no-shell), overlapping
# each other: one task unless ARGS say otherwise.

# run_step ARGS...: `run srun` as a step of $ALLOC_JOB that may overlap the others.
run_step() {
    run timeout "$PXT_CMD_TIMEOUT" srun --jobid="$ALLOC_JOB" --overlap -N1 -n1 "$@"
}

# run_step_ok ARGS...: the same, the step must succeed.
run_step_ok() {
    run_step "$@"
    if [ "$status" -ne 0 ]; then
        printf 'srun --jobid=%s %s failed with status %s:\n%s\n' "$ALLOC_JOB" "$*" "$status" "$output" >&2
        return 1
    fi
}

# bg_step OUTFILE ARGS...: start a step of $ALLOC_JOB in the background (stdout and
# stderr to OUTFILE); its pid goes to $BG_PID. fd 3 is bats' own: closed for the child.
bg_step() {
    local out="$1"; shift
    timeout "$PXT_CMD_TIMEOUT" srun --jobid="$ALLOC_JOB" --overlap -N1 -n1 "$@" >"$out" 2>&1 3>&- &
    # shellcheck disable=SC2034  # read by the caller
    BG_PID=$!
}

