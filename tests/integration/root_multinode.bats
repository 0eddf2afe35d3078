#!/usr/bin/env bats
# container_scope=job across nodes (issue 9, reference §5.8): the job epilog runs on every
# node of the job, so a 3-node job's named containers (pyxis_<job>_NAME, one per node) are
# gone from every node once the job ended. Runs as root on the 3-node cluster (it switches the
# plugin configuration with plugstack.sh, which restarts every node's slurmd); the steps run
# as the test user. tests/run-all.sh runs it in the multi-node stage.

load common
load containers
load root
load multinode

# user_alloc_nodes N: an N-node allocation of the test user, one task per node -> $JOB
user_alloc_nodes() {
    local out
    out=$(user_run timeout "$PXT_CMD_TIMEOUT" salloc --no-shell -N "$1" --ntasks-per-node=1 --overcommit --oversubscribe -J i9-root 2>&1) ||
        { printf 'salloc failed:\n%s\n' "$out" >&2; return 1; }
    JOB=$(sed -n 's/.*Granted job allocation \([0-9][0-9]*\).*/\1/p' <<< "$out" | head -n 1)
    [ -n "$JOB" ] || { printf 'no job id in:\n%s\n' "$out" >&2; return 1; }
    JOBS+=("$JOB")
}

@test "multinode: container_scope=job: no container of a 3-node job is left on any node after it" {
    need_nodes 3
    with_config container_scope=job
    MN_UID=$TUID
    # from the shared home: the suite's directory is in this host's /tmp, not on the nodes
    USER_CWD=$THOME
    snapshot_nodes
    user_alloc_nodes 3
    local name n
    name=$(mn_name scope)
    # a named container on every node, used by two steps, and an unnamed one
    # shellcheck disable=SC2016  # expanded inside the container
    run user_run timeout "$PXT_CMD_TIMEOUT" srun --jobid="$JOB" --overlap -N 3 --ntasks-per-node=1 \
        --container-name="$name" --container-image="$PXT_IMAGE" sh -c 'hostname > /i9-node'
    must_succeed
    # shellcheck disable=SC2016  # expanded inside the container
    run user_run timeout "$PXT_CMD_TIMEOUT" srun --jobid="$JOB" --overlap -N 3 --ntasks-per-node=1 \
        --container-name="$name" sh -c 'echo "$(hostname) $(cat /i9-node)"'
    must_succeed
    [ "$(awk '$1 == $2 && $1 ~ /^node/' <<< "$output" | grep -c .)" -eq 3 ]
    run user_run timeout "$PXT_CMD_TIMEOUT" srun --jobid="$JOB" --overlap -N 3 --ntasks-per-node=1 \
        --container-image="$PXT_IMAGE" true
    must_succeed
    # while the job runs, every node holds the job's named container
    for n in $(mn_nodes); do
        node_containers "$n" | grep -qx "pyxis_${JOB}_$name" ||
            { echo "node $n has no pyxis_${JOB}_$name: $(node_containers "$n" | tr '\n' ' ')" >&2; return 1; }
    done
    scancel "$JOB"
    wait_job_gone "$JOB" 60
    # the epilog of every node removed it
    poll_no_leftovers 30 new_node_containers
}
