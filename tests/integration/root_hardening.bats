#!/usr/bin/env bats
# Nothing a user controls makes root touch another file or drain the node (issue 11):
#
#   - symlinks planted where a root-side write could land leave their targets untouched
#     (the job markers live in the root-only <runtime_path>/jobs);
#   - a job run from a directory whose name is not UTF-8 ends with the node usable and
#     its containers removed by the job epilog;
#   - a user who breaks their own enroot directories (the cache dir replaced by a file)
#     makes `enroot list` fail in the epilog, which is logged, not a node drain.
#
# As root (with_config switches plugstack.conf); steps run as the test user.

load common
load containers
load root

NODE=$(hostname -s)
PLANTED=()

# assert_node_usable: not drained, not down (a failing epilog drains the node)
assert_node_usable() {
    local st
    st=$(node_state)
    case "$st" in
        idle* | mixed* | allocated*) return 0 ;;
    esac
    printf 'node %s is %s after the job; slurmd says:\n' "$NODE" "$st" >&2
    scontrol show node "$NODE" | grep -i reason >&2 || true
    tail -n 20 /var/log/slurm/slurmd.log >&2 || true
    return 1
}

hardening_teardown() {
    # a drained node would fail every later suite: give it back
    case "$(sinfo -h -n "$NODE" -o %T | head -n 1)" in
        drain* | down*) scontrol update nodename="$NODE" state=resume || true ;;
    esac
    if [ -n "${VICTIM-}" ]; then rm -f "$VICTIM"; fi
    local p
    for p in "${PLANTED[@]}"; do rm -f "$p"; done
    if [ -n "${BROKEN_CACHE-}" ] && [ -f "$BROKEN_CACHE" ]; then rm -f "$BROKEN_CACHE"; fi
}

teardown() {
    hardening_teardown
    root_teardown
}

@test "hardening: symlinks planted at every root-written name leave their targets untouched (scope=job)" {
    with_config container_scope=job
    VICTIM=$(mktemp /etc/pyxis-rs-victim.XXXXXX)
    echo keep > "$VICTIM"
    chmod 0644 "$VICTIM"
    local before name
    before=$(stat -c '%s %Y %i' "$VICTIM")
    # the user's runtime directory exists once they ran a container here
    [ -d "$RT" ] || { user_srun --container-image="$PXT_IMAGE" true; must_succeed; }
    user_alloc
    # the names a pyxis-rs or pyxis step of this job wrote as root, and the markers' dir
    PLANTED=()
    for name in "$JOB.job-scope" "$JOB.0.job-scope" "jobs"; do
        rm -f "$RT/$name"
        user_run ln -s "$VICTIM" "$RT/$name"
        PLANTED+=("$RT/$name")
    done
    # the markers' directory is root's: the user can plant nothing there
    [ "$(stat -c '%U %a' "$PXT_RUNTIME_PATH/jobs")" = "root 700" ]
    run user_run ln -s "$VICTIM" "$PXT_RUNTIME_PATH/jobs/$JOB.0"
    [ "$status" -ne 0 ]
    new_name plant
    remove_later "pyxis_${JOB}_$CNAME"
    user_step --container-name="$CNAME" --container-image="$PXT_IMAGE" grep PRETTY /etc/os-release
    must_succeed
    assert_output_contains "$PXT_PRETTY"
    scancel "$JOB"
    wait_job_gone "$JOB"
    assert_node_usable
    [ "$(cat "$VICTIM")" = keep ]
    [ "$(stat -c '%s %Y %i' "$VICTIM")" = "$before" ]
    [ ! -e /etc/nologin ]
    # the epilog removed the job's container and its own marker
    wait_gone "pyxis_${JOB}_$CNAME" 30
    [ -z "$(find "$PXT_RUNTIME_PATH/jobs" -name "$JOB.*")" ]
}

@test "hardening: a job run from a directory named with bytes \\xff\\xfe leaves the node usable and its containers removed" {
    with_config container_scope=job
    local dir
    dir="$U/$(printf '\377\376')"
    install -d -o "$PXT_USER" -m 0755 "$dir"
    # the job's working directory, hence the epilog's environment, holds those bytes
    USER_CWD=$dir
    user_alloc
    new_name utf8
    remove_later "pyxis_${JOB}_$CNAME"
    user_step --container-name="$CNAME" --container-image="$PXT_IMAGE" grep PRETTY /etc/os-release
    must_succeed
    assert_output_contains "$PXT_PRETTY"
    # an unnamed one from there too, removed by its own step
    user_step --container-image="$PXT_IMAGE" true
    must_succeed
    has_container "pyxis_${JOB}_$CNAME"
    USER_CWD=
    scancel "$JOB"
    wait_job_gone "$JOB"
    assert_node_usable
    wait_gone "pyxis_${JOB}_$CNAME" 30
    [ -z "$(user_run enroot list | grep "^pyxis_${JOB}_" || true)" ]
}

@test "hardening: a user who replaces their enroot cache directory with a file does not drain the node" {
    with_config container_scope=job
    local cache
    cache="/tmp/enroot-cache/user-$TUID"
    user_alloc
    new_name broken
    remove_later "pyxis_${JOB}_$CNAME"
    user_step --container-name="$CNAME" --container-image="$PXT_IMAGE" true
    must_succeed
    # the user breaks their own enroot: every enroot command now fails for them
    user_run rm -rf "$cache"
    user_run touch "$cache"
    BROKEN_CACHE=$cache
    run user_run enroot list
    [ "$status" -ne 0 ]
    scancel "$JOB"
    wait_job_gone "$JOB"
    assert_node_usable
    # the epilog said why it could not clean up
    grep -F "epilog: couldn't get list of existing containers" /var/log/slurm/slurmd.log | tail -n 1 | grep -q .
    # repaired, the user's next job works and the leftover can be removed
    rm -f "$cache"
    BROKEN_CACHE=
    user_srun --container-image="$PXT_IMAGE" true
    must_succeed
}
