#!/usr/bin/env bats
# Cross-node behaviour (issue 9) on the 3-node cluster of tests/harness (PXT_NODES=3: node1..3,
# each slurmd in its own mount + UTS namespace with its own /tmp, /run, /dev/shm), as the test
# user through real srun/sbatch/salloc: every node runs its tasks in its own container (pyxis
# #29: "only the last node is containerised"), MPI ranks are right across nodes, one node
# writes --container-save (W14), named containers exist per node, a containerised batch step
# launches multi-node steps (pyxis #107), scancel and a storm of steps leave nothing on any
# node. container_scope=job (a plugin setting) is in root_multinode.bats.
# tests/run-all.sh runs this suite as its own stage on that cluster.

load common
load containers
load multinode

setup() {
    need_nodes 3
    [ -r "$PXT_IMAGE" ] || skip "no test image $PXT_IMAGE (run tests/harness/up.sh)"
    mn_shared_dir
    # the suite's own directory is in this host's /tmp, which the nodes do not share
    cd "$SHARED"
    NAMES=()
    HOLDER_PID=
    snapshot_nodes
}

teardown() {
    if [ -d "${SHARED-}/ctl" ]; then touch "$SHARED/ctl/stop"; fi
    if [ -n "${HOLDER_PID-}" ]; then wait "$HOLDER_PID" 2>/dev/null || true; fi
    release_jobs
    local n
    for n in "${NAMES[@]}"; do
        timeout 60 srun -N 3 --ntasks-per-node=1 --oversubscribe enroot remove -f "pyxis_$n" >/dev/null 2>&1 || true
    done
    cd /
    rm -rf "$SHARED"
}

# need_mpi TYPE: Slurm has the MPI plugin TYPE.
need_mpi() {
    srun --mpi=list 2>&1 | grep -qw -- "$1" || skip "Slurm has no mpi/$1 plugin"
}

# assert_ranks6 COLUMN: 6 lines "PROCID NODE ..." whose COLUMN-th field is 0..5 and equal to
# SLURM_PROCID, two tasks on each of the 3 nodes.
assert_ranks6() {
    printf 'tasks:\n%s\n' "$output"
    [ "$(grep -c . <<< "$output")" -eq 6 ]
    [ "$(awk -v c="$1" '{print $c}' <<< "$output" | sort -n | tr '\n' ' ')" = "0 1 2 3 4 5 " ]
    [ "$(awk -v c="$1" '$1 == $c' <<< "$output" | grep -c .)" -eq 6 ]
    [ "$(awk '{print $2}' <<< "$output" | sort | uniq -c | awk '$1 == 2' | grep -c .)" -eq 3 ]
}

@test "multinode: srun -N 3 -n 6 --container-image: one container per node, shared by its two tasks" {
    # the nodes themselves: three hosts, three mount namespaces
    # shellcheck disable=SC2016  # expanded on the node
    run_mn -N 3 -n 3 sh -c 'echo "$(hostname) $(readlink /proc/self/ns/mnt)"'
    local hostns
    hostns=$(awk '{print $2}' <<< "$output")
    [ "$(sort -u <<< "$hostns" | grep -c .)" -eq 3 ]
    # a namespace's number is reused once it is gone: every task keeps its container alive
    # until all six have written theirs (a barrier in the shared directory)
    mkdir "$SHARED/ns"
    # shellcheck disable=SC2016  # expanded inside the container
    run_mn -N 3 -n 6 --ntasks-per-node=2 --container-image="$PXT_IMAGE" --container-mounts="$SHARED/ns:/i9ns" \
        sh -c 'grep -q "^PRETTY_NAME=\"pyxis-rs test BusyBox" /etc/os-release || exit 1
            echo "$(hostname) $(readlink /proc/self/ns/mnt) $SLURMD_NODENAME" > "/i9ns/$SLURM_PROCID"
            i=0; while [ "$(ls /i9ns | grep -c .)" -lt 6 ] && [ "$i" -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
            cat "/i9ns/$SLURM_PROCID"'
    printf 'tasks:\n%s\n' "$output"
    [ "$(grep -c . <<< "$output")" -eq 6 ]
    # UTS is per node too: hostname = the node the task runs on
    [ "$(awk '$1 != $3' <<< "$output" | grep -c .)" -eq 0 ]
    local ns
    ns=$(per_node_values 2)
    [ "$(sort -u <<< "$ns" | grep -c .)" -eq 3 ]
    # and each is a container's namespace, not the node's own
    [ -z "$(LC_ALL=C comm -12 <(sort -u <<< "$ns") <(sort -u <<< "$hostns"))" ]
    assert_nodes_clean
}

@test "multinode: --mpi=pmi2 over 3 nodes: PMI_RANK 0..5 = SLURM_PROCID, PMI_SIZE=6" {
    need_mpi pmi2
    # shellcheck disable=SC2016  # expanded inside the container
    run_mn -N 3 -n 6 --ntasks-per-node=2 --mpi=pmi2 --container-image="$PXT_IMAGE" \
        sh -c 'echo "$SLURM_PROCID $(hostname) $PMI_RANK $PMI_SIZE"'
    assert_ranks6 3
    [ "$(awk '$4 == 6' <<< "$output" | grep -c .)" -eq 6 ]
    assert_nodes_clean
}

@test "multinode: --mpi=pmix over 3 nodes: PMIX_RANK 0..5 = SLURM_PROCID, one PMIX_NAMESPACE" {
    need_mpi pmix
    # shellcheck disable=SC2016  # expanded inside the container
    run_mn -N 3 -n 6 --ntasks-per-node=2 --mpi=pmix --container-image="$PXT_IMAGE" \
        sh -c 'echo "$SLURM_PROCID $(hostname) $PMIX_RANK $PMIX_NAMESPACE"'
    assert_ranks6 3
    [ "$(awk '{print $4}' <<< "$output" | sort -u | grep -c .)" -eq 1 ]
    [ -n "$(awk '{print $4}' <<< "$output" | head -n 1)" ]
    assert_nodes_clean
}

@test "multinode (W14): --container-save from a 3-node step is written once, by the first node" {
    local saved="$SHARED/saved.sqsh"
    # every node marks its own container; the first node (node index 0) finishes first, the
    # others later: a second export by any of them would overwrite the file with its marker
    # shellcheck disable=SC2016  # expanded inside the container
    run_mn -N 3 -n 3 --container-image="$PXT_IMAGE" --container-save="$saved" \
        sh -c 'touch "/i9-saved-by-$(hostname)"; sleep $((SLURM_NODEID * 2)); echo "STEP=$SLURM_JOB_ID.$SLURM_STEP_ID"'
    # shellcheck disable=SC2154  # $stderr is set by bats' run --separate-stderr
    printf 'stderr:\n%s\n' "$stderr"
    [ "$(grep -cF "pyxis: exported container pyxis_" <<< "$stderr")" -eq 1 ]
    [ -s "$saved" ]
    local first
    first=$(mn_nodes | head -n 1)
    run unsquashfs -l "$saved"
    [ "$status" -eq 0 ]
    [ "$(grep -c '/i9-saved-by-' <<< "$output")" -eq 1 ]
    assert_output_contains "/i9-saved-by-$first"
    assert_nodes_clean
}

@test "multinode: a named container exists per node; :no_exec and :exec reach each node's own" {
    local name
    name=$(mn_name named)
    NAMES+=("$name")
    alloc_nodes 3
    # shellcheck disable=SC2016  # expanded inside the container
    run_mn_step -N 3 --container-name="$name" --container-image="$PXT_IMAGE" sh -c 'hostname > /i9-created-on'
    local n
    for n in $(mn_nodes); do node_containers "$n" | grep -qx "pyxis_$name"; done
    # the filesystem each node reuses is that node's own
    # shellcheck disable=SC2016  # expanded inside the container
    run_mn_step -N 3 --container-name="$name:no_exec" sh -c 'echo "$(hostname) $(cat /i9-created-on)"'
    printf 'reuse:\n%s\n' "$output"
    [ "$(grep -c . <<< "$output")" -eq 3 ]
    [ "$(awk '$1 == $2' <<< "$output" | grep -c .)" -eq 3 ]
    # a step holding the container on every node, then :exec joins each node's running one
    mkdir -p "$SHARED/ctl"
    # shellcheck disable=SC2016  # expanded inside the container
    timeout "$PXT_CMD_TIMEOUT" srun --jobid="$ALLOC_JOB" --overlap -N 3 --container-name="$name" \
        --container-mounts="tmpfs:/i9tmp,$SHARED/ctl:/i3ctl" \
        sh -c 'hostname > /i9tmp/marker; echo "HOLD $(hostname) $(readlink /proc/self/ns/mnt)"; '"$PXT_HOLD"'; echo "DONE $(hostname)"' \
        > "$SHARED/holder.out" 2>&1 3>&- &
    HOLDER_PID=$!
    local end=$((SECONDS + 90))
    until [ "$(cat "$SHARED/holder.out" 2>/dev/null | grep -c '^HOLD ' || true)" -eq 3 ]; do
        kill -0 "$HOLDER_PID" 2>/dev/null || { cat "$SHARED/holder.out" >&2; return 1; }
        [ "$SECONDS" -lt "$end" ] || { cat "$SHARED/holder.out" >&2; return 1; }
        sleep 0.3
    done
    # shellcheck disable=SC2016  # expanded inside the container
    run_mn_step -N 3 --container-name="$name:exec" sh -c 'echo "HOLD $(cat /i9tmp/marker) $(readlink /proc/self/ns/mnt)"'
    printf 'exec:\n%s\nholder:\n%s\n' "$output" "$(cat "$SHARED/holder.out")"
    [ "$(grep -c . <<< "$output")" -eq 3 ]
    # each node joined its own running container: same node, same namespace as its holder task
    [ "$(LC_ALL=C sort <<< "$output")" = "$(grep '^HOLD ' "$SHARED/holder.out" | LC_ALL=C sort)" ]
    # :no_exec while it runs: fresh namespaces from the same filesystem, on every node
    # shellcheck disable=SC2016  # expanded inside the container
    run_mn_step -N 3 --container-name="$name:no_exec" sh -c 'echo "$(hostname) $(cat /i9tmp/marker 2>/dev/null || echo no-marker) $(cat /i9-created-on)"'
    [ "$(awk '$2 == "no-marker" && $1 == $3' <<< "$output" | grep -c .)" -eq 3 ]
    touch "$SHARED/ctl/stop"
    wait "$HOLDER_PID"
    HOLDER_PID=
    [ "$(grep -c '^DONE ' "$SHARED/holder.out")" -eq 3 ]
}

@test "multinode (pyxis #107): a containerised batch step launches 3-node steps, with and without container options" {
    # the batch script runs in the image (on the first node) and starts srun from the host's
    # Slurm installation, bind-mounted as a site would. srun resolves the command on the
    # submitting side, where /usr is the host's: /bin/sh is the one path the image and the
    # host both have.
    # (no blank and no quote: it goes into single-quoted sh -c strings)
    local os='grep -c ^PRETTY_NAME=.pyxis-rs.test.BusyBox /etc/os-release'
    cat > "$SHARED/job.sh" <<EOF
#!/bin/sh
#SBATCH -N 3
#SBATCH --container-image=$PXT_IMAGE
#SBATCH --container-mounts=$(mn_host_slurm_mounts),$(dirname "$PXT_IMAGE"):$(dirname "$PXT_IMAGE"):ro
#SBATCH --container-writable
echo "batch \$(hostname) \$($os)"
# srun checks SlurmUser against the user database: the site's entry, next to the user's own
grep '^slurm:' /etc/host-passwd >> /etc/passwd
srun="$PXT_HOST_SRUN -N 3 --ntasks-per-node=1"
\$srun --container-image=$PXT_IMAGE /bin/sh -c 'echo "contained \$(hostname) \$($os)"' || echo "contained-failed \$?"
\$srun /bin/sh -c 'echo "inherited \$(hostname) \$($os)"' || echo "inherited-failed \$?"
env -u SLURM_SPANK__SLURM_SPANK_OPTION_pyxis_container_image -u SLURM_SPANK__SLURM_SPANK_OPTION_pyxis_container_mounts \\
    -u SLURM_SPANK__SLURM_SPANK_OPTION_pyxis_container_writable \\
    \$srun /bin/sh -c 'echo "plain \$(hostname) \$($os)"' || echo "plain-failed \$?"
EOF
    local out="$SHARED/job.out" rc=0
    timeout "$PXT_CMD_TIMEOUT" sbatch --wait --chdir="$SHARED" -o "$out" "$SHARED/job.sh" > "$SHARED/submit.out" 2>&1 || rc=$?
    output=$(cat "$out" 2>/dev/null || true)
    printf 'sbatch: %s\njob output:\n%s\n' "$(cat "$SHARED/submit.out")" "$output"
    [ "$rc" -eq 0 ]
    assert_output_contains "batch $(mn_nodes | head -n 1) 1"
    refute_output_contains "-failed"
    # with its own options each node runs the step in its own container
    [ "$(grep -c '^contained node[0-9]* 1$' <<< "$output")" -eq 3 ]
    [ "$(grep '^contained ' <<< "$output" | awk '{print $2}' | sort -u | grep -c .)" -eq 3 ]
    # without: Slurm exports the job's #SBATCH plugin options into the batch environment as
    # SLURM_SPANK__SLURM_SPANK_OPTION_pyxis_*, which srun reads as options, so the steps
    # inherit the image (as with NVIDIA's pyxis: sites unset those variables to opt out) ...
    [ "$(grep -c '^inherited node[0-9]* 1$' <<< "$output")" -eq 3 ]
    [ "$(grep '^inherited ' <<< "$output" | awk '{print $2}' | sort -u | grep -c .)" -eq 3 ]
    # ... and with them unset the steps run on the nodes themselves
    [ "$(grep -c '^plain node[0-9]* 0$' <<< "$output")" -eq 3 ]
    [ "$(grep '^plain ' <<< "$output" | awk '{print $2}' | sort -u | grep -c .)" -eq 3 ]
    assert_nodes_clean
}

@test "multinode: scancel of a running 3-node containerised step leaves nothing on any node" {
    alloc_nodes 3
    mkdir -p "$SHARED/ctl"
    # shellcheck disable=SC2016  # expanded inside the container
    timeout "$PXT_CMD_TIMEOUT" srun --jobid="$ALLOC_JOB" --overlap -N 3 -n 3 --container-image="$PXT_IMAGE" \
        --container-mounts="$SHARED/ctl:/i3ctl" \
        sh -c 'echo "UP $(hostname) $SLURM_JOB_ID.$SLURM_STEP_ID"; '"$PXT_HOLD" \
        > "$SHARED/step.out" 2>&1 3>&- &
    HOLDER_PID=$!
    local end=$((SECONDS + 90))
    until [ "$(cat "$SHARED/step.out" 2>/dev/null | grep -c '^UP ' || true)" -eq 3 ]; do
        kill -0 "$HOLDER_PID" 2>/dev/null || { cat "$SHARED/step.out" >&2; return 1; }
        [ "$SECONDS" -lt "$end" ] || { cat "$SHARED/step.out" >&2; return 1; }
        sleep 0.3
    done
    local step
    step=$(awk '/^UP /{print $3; exit}' "$SHARED/step.out")
    # the step runs in a container on every node (started straight from the squashfs by
    # default, so it has no enroot name to look for: the three hosts said UP from inside)
    [ "$(awk '/^UP /{print $2}' "$SHARED/step.out" | sort -u | grep -c .)" -eq 3 ]
    [ "$(node_procs | grep -c .)" -ge 3 ]
    scancel "$step"
    local rc=0
    wait "$HOLDER_PID" || rc=$?
    HOLDER_PID=
    [ "$rc" -ne 0 ]
    assert_nodes_clean 60
}

@test "multinode: a storm of 12 containerised 3-node steps at once: all succeed, nothing left" {
    alloc_nodes 3
    local i pids=() rc fails=0
    for i in $(seq 1 12); do
        # shellcheck disable=SC2016  # expanded inside the container
        timeout "$PXT_CMD_TIMEOUT" srun --jobid="$ALLOC_JOB" --overlap -N 3 -n 3 --container-image="$PXT_IMAGE" \
            sh -c 'echo "storm $(hostname) $(grep -c "^PRETTY_NAME=.pyxis-rs test BusyBox" /etc/os-release)"' \
            > "$SHARED/storm.$i.out" 2> "$SHARED/storm.$i.err" 3>&- &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        rc=0
        wait "${pids[$i]}" || rc=$?
        if [ "$rc" -ne 0 ]; then
            fails=$((fails + 1))
            printf 'step %s failed (%s):\n%s\n' "$((i + 1))" "$rc" "$(cat "$SHARED/storm.$((i + 1)).err")" >&2
        fi
    done
    [ "$fails" -eq 0 ]
    output=$(cat "$SHARED"/storm.*.out)
    [ "$(grep -c '^storm node[0-9]* 1$' <<< "$output")" -eq 36 ]
    output=$(awk '{print $2, $3}' <<< "$output")
    per_node_values 12 >/dev/null
    assert_nodes_clean 60
}
