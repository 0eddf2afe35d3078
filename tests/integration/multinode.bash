# shellcheck shell=bash
# Helpers of the cross-node suites (multinode.bats as the test user, root_multinode.bats as
# root), loaded after common.bash and containers.bash. They run on the multi-node cluster of
# tests/harness/cluster.sh (PXT_NODES=3: node1..node3, each slurmd in its own mount and UTS
# namespace with its own /tmp, /run and /dev/shm); tests/run-all.sh runs them as a stage of
# their own on that cluster and brings the single-node cluster back afterwards.
#
# What is node-local on a real cluster is node-local here: each node's /tmp and /run are
# directories on the host, $PXT_NODE_DIR/<node>/{tmp,run}, so a test can look at what every
# node holds without running a step there. What the nodes must share (scripts, save files,
# job output) lives under the test user's home directory, as on a site's shared home.

: "${PXT_STATE:=/var/lib/pyxis-rs-test}"
: "${PXT_NODE_DIR:=$PXT_STATE/nodes}"
: "${PXT_MIN_NODES:=3}"

# mn_nodes: the compute nodes of the running cluster, as the harness configured them.
mn_nodes() {
    cat "$PXT_STATE/cluster-nodes" 2>/dev/null || true
}

# need_nodes [N]: skip (before any step) unless the cluster has at least N namespaced nodes.
need_nodes() {
    local n
    n=$(mn_nodes | grep -c '^node[0-9]' || true)
    [ "$n" -ge "${1:-$PXT_MIN_NODES}" ] ||
        skip "needs the ${1:-$PXT_MIN_NODES}-node cluster (PXT_NODES=3 tests/harness/up.sh; tests/run-all.sh runs this suite on it as its own stage), found $n"
}

# mn_shared_dir: a fresh directory every node can see (under the shared home) -> $SHARED.
mn_shared_dir() {
    SHARED=$(mktemp -d "$HOME/.pxt-mn.XXXXXX")
    chmod 0755 "$SHARED"
}

# mn_name WORD: a container name no other test (or engineer) uses.
mn_name() {
    printf 'i9-%s-%s-%s\n' "$1" "$$" "$RANDOM"
}

# node_data_dir NODE: the enroot data directory of the test user (MN_UID, default: this
# user) on NODE, seen from the host: ENROOT_DATA_PATH of the site configuration under
# that node's /tmp.
node_data_dir() {
    local p
    p=$(sed -n 's/^ENROOT_DATA_PATH[[:space:]]\{1,\}//p' /etc/enroot/enroot.conf 2>/dev/null | tail -n 1)
    # the file holds a literal $(id -u), which enroot expands
    # shellcheck disable=SC2016
    p=${p//'$(id -u)'/${MN_UID:-$(id -u)}}
    case "$p" in /tmp/*) ;; *) echo "ENROOT_DATA_PATH '$p' (/etc/enroot/enroot.conf) is not under /tmp" >&2; return 1 ;; esac
    printf '%s/%s%s\n' "$PXT_NODE_DIR" "$1" "$p"
}

# node_containers NODE: the pyxis_ container filesystems on NODE, sorted.
node_containers() {
    local d
    d=$(node_data_dir "$1") || return 1
    [ -d "$d" ] || return 0
    find "$d" -mindepth 1 -maxdepth 1 -name 'pyxis_*' -printf '%f\n' | LC_ALL=C sort
}

# snapshot_nodes: remember every node's pyxis_ containers (per test).
snapshot_nodes() {
    local n
    for n in $(mn_nodes); do node_containers "$n" > "$BATS_TEST_TMPDIR/node-$n.before"; done
}

# new_node_containers: "NODE NAME" for every container that appeared on a node since
# snapshot_nodes.
new_node_containers() {
    local n
    for n in $(mn_nodes); do
        LC_ALL=C comm -13 "$BATS_TEST_TMPDIR/node-$n.before" <(node_containers "$n") | sed "s/^/$n /"
    done
}

# node_procs: this user's processes that run on one of the nodes (in another UTS
# namespace than this shell's: the nodes' tasks, enroot, squashfuse, ...), "PID NODE COMM".
node_procs() {
    local p me uts
    me=$(readlink /proc/self/ns/uts)
    for p in $(pgrep -u "$(id -u)" || true); do
        uts=$(readlink "/proc/$p/ns/uts" 2>/dev/null) || continue
        [ "$uts" != "$me" ] || continue
        printf '%s %s\n' "$p" "$(tr -d '\0' < "/proc/$p/comm" 2>/dev/null)"
    done
}

# assert_nodes_clean [SECS]: no new container on any node and no process of this user left
# on any node (polled: cleanup runs in slurmstepd after the step returns).
assert_nodes_clean() {
    poll_no_leftovers "${1:-30}" new_node_containers
    local end=$((SECONDS + ${1:-30})) left
    while :; do
        left=$(node_procs)
        [ -z "$left" ] && return 0
        if [ "$SECONDS" -ge "$end" ]; then
            printf 'processes of %s left on the nodes after %ss:\n%s\n' "$(id -un)" "${1:-30}" "$left" >&2
            return 1
        fi
        sleep 0.5
    done
}

# run_mn ARGS...: `run srun` on several nodes (ARGS give -N/-n), stdout only in $output.
run_mn() {
    run --separate-stderr timeout "$PXT_CMD_TIMEOUT" srun --oversubscribe "$@"
    if [ "$status" -ne 0 ]; then
        # shellcheck disable=SC2154  # $stderr is set by bats' run --separate-stderr
        printf 'srun %s failed with status %s:\nstdout:\n%s\nstderr:\n%s\n' "$*" "$status" "$output" "$stderr" >&2
        return 1
    fi
}

# alloc_nodes N: `salloc --no-shell` N nodes, one task each, into $ALLOC_JOB (released by
# release_jobs, as alloc_job's).
alloc_nodes() {
    local out
    out=$(timeout "$PXT_CMD_TIMEOUT" salloc --no-shell -N "$1" --ntasks-per-node=1 --overcommit --oversubscribe 2>&1) ||
        { printf 'salloc failed:\n%s\n' "$out" >&2; return 1; }
    ALLOC_JOB=$(sed -n 's/.*Granted job allocation \([0-9][0-9]*\).*/\1/p' <<< "$out" | head -n 1)
    [ -n "$ALLOC_JOB" ] || { printf 'no job id in the salloc output:\n%s\n' "$out" >&2; return 1; }
    echo "$ALLOC_JOB" >> "$BATS_TEST_TMPDIR/allocations"
}

# run_mn_step ARGS...: `run srun` as an overlapping step of $ALLOC_JOB over all its nodes.
run_mn_step() {
    run --separate-stderr timeout "$PXT_CMD_TIMEOUT" srun --jobid="$ALLOC_JOB" --overlap "$@"
    if [ "$status" -ne 0 ]; then
        printf 'srun --jobid=%s %s failed with status %s:\nstdout:\n%s\nstderr:\n%s\n' "$ALLOC_JOB" "$*" "$status" "$output" "$stderr" >&2
        return 1
    fi
}

# per_node_values COUNT: $output has lines "NODE VALUE", COUNT per node of the cluster, and
# every node printed one VALUE only; prints those VALUEs, one per node (fails otherwise).
per_node_values() {
    local n c v
    for n in $(mn_nodes); do
        c=$(awk -v n="$n" '$1 == n' <<< "$output" | grep -c . || true)
        [ "$c" -eq "$1" ] || { printf 'node %s printed %s lines, expected %s:\n%s\n' "$n" "$c" "$1" "$output" >&2; return 1; }
        v=$(awk -v n="$n" '$1 == n {print $2}' <<< "$output" | sort -u)
        [ "$(grep -c . <<< "$v")" -eq 1 ] || { printf 'node %s printed different values:\n%s\n' "$n" "$output" >&2; return 1; }
        printf '%s\n' "$v"
    done
}

# mn_host_slurm_mounts: --container-mounts value that lets a busybox container run the host's
# srun (the host /usr with its glibc, Slurm libraries and the plugin, /etc/slurm, the munge
# socket), as a site bind-mounts its Slurm installation, and the host's user database at
# /etc/host-passwd (enroot's shadow hook rewrites the container's /etc/passwd, so it cannot be
# bind-mounted itself); srun is started through the host's loader because the image has no
# /lib64.
mn_host_slurm_mounts() {
    printf '/usr:/usr:ro,/etc/slurm:/etc/slurm:ro,/run/munge:/run/munge,/etc/passwd:/etc/host-passwd:ro'
}
# shellcheck disable=SC2034  # used by the .bats files
PXT_HOST_SRUN='/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path /usr/lib/x86_64-linux-gnu /usr/bin/srun'
