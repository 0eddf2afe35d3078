#!/usr/bin/env bats
# MPI launch through Slurm into the container (reference §5.14): with --mpi=pmi2 every task
# keeps its own PMI_RANK and a working PMI_FD socket, with --mpi=pmix its own PMIX_RANK.
# W12: enroot's site hook 50-slurm-pmi.sh (tests/harness/enroot.sh installs an equivalent)
# copies the starting task's SLURM_*/PMI_*/PMIX_* into the container environment; pyxis then
# gave every task the creator's PMI_RANK, pyxis-rs must not.

load common
load features

setup() {
    [ -r "$PXT_IMAGE" ] || skip "no test image $PXT_IMAGE (run tests/harness/up.sh)"
    snapshot_containers
}

PMI_HOOK=/etc/enroot/hooks.d/50-slurm-pmi.sh

# need_mpi TYPE: Slurm has the MPI plugin TYPE.
need_mpi() {
    srun --mpi=list 2>&1 | grep -qw -- "$1" || skip "Slurm has no mpi/$1 plugin"
}

# assert_ranks COLUMN: $output has 4 lines whose COLUMN-th fields are 0 1 2 3, each equal
# to the first field (SLURM_PROCID).
assert_ranks() {
    printf 'tasks:\n%s\n' "$output"
    [ "$(grep -c . <<< "$output")" -eq 4 ]
    [ "$(awk -v c="$1" '{print $c}' <<< "$output" | sort -n | tr '\n' ' ')" = "0 1 2 3 " ]
    [ "$(awk -v c="$1" '$1 == $c' <<< "$output" | grep -c .)" -eq 4 ]
}

@test "mpi: pmi2, 4 tasks: PMI_RANK 0..3, PMI_SIZE=4, PMI_FD is a socket" {
    need_mpi pmi2
    # shellcheck disable=SC2016  # expanded inside the container
    run_srun_stdout -n 4 --mpi=pmi2 --container-image="$PXT_IMAGE" \
        sh -c 'echo "$SLURM_PROCID $PMI_RANK $PMI_SIZE $(readlink /proc/self/fd/$PMI_FD)"'
    assert_ranks 2
    [ "$(awk '$3 == 4' <<< "$output" | grep -c .)" -eq 4 ]
    [ "$(awk '$4 ~ /^socket:\[[0-9]+\]$/' <<< "$output" | grep -c .)" -eq 4 ]
    assert_no_own_leftovers
}

@test "mpi (W12): with the 50-slurm-pmi hook each task keeps its own PMI_RANK, not the creator's" {
    need_mpi pmi2
    [ -x "$PMI_HOOK" ] || skip "no $PMI_HOOK (tests/harness/enroot.sh installs it)"
    # an entrypoint runs inside the container's start with the container environment:
    # it shows which PMI_RANK the hook put there (the creating task's)
    local ep="$BATS_TEST_TMPDIR/entrypoint.sh"
    # shellcheck disable=SC2016  # expanded by the entrypoint
    printf '%s\n' '#!/bin/sh' 'echo "container environment: PMI_RANK=${PMI_RANK-unset}"' 'exec "$@"' > "$ep"
    chmod 0755 "$ep"
    # shellcheck disable=SC2016  # expanded inside the container
    run_srun -n 4 --mpi=pmi2 --container-image="$PXT_REG_APP" --container-entrypoint --container-entrypoint-log \
        --container-mounts="$ep:/app/bin/entrypoint.sh:ro" sh -c 'echo "task $SLURM_PROCID $PMI_RANK"'
    printf 'output:\n%s\n' "$output"
    local creator
    creator=$(sed -n 's/^container environment: PMI_RANK=//p' <<< "$output")
    # the hook did its job: the container environment carries one task's rank
    [[ "$creator" =~ ^[0-3]$ ]]
    output=$(sed -n 's/^task //p' <<< "$output")
    assert_ranks 2
    assert_no_own_leftovers
}

@test "mpi: pmix, 4 tasks: PMIX_RANK 0..3, one PMIX_NAMESPACE" {
    need_mpi pmix
    # shellcheck disable=SC2016  # expanded inside the container
    run --separate-stderr timeout "$PXT_CMD_TIMEOUT" srun -N1 --oversubscribe -n 4 --mpi=pmix \
        --container-image="$PXT_IMAGE" sh -c 'echo "$SLURM_PROCID $PMIX_RANK $PMIX_NAMESPACE"'
    # shellcheck disable=SC2154  # $stderr is set by bats' run --separate-stderr
    if [ "$status" -ne 0 ] && ! grep -qF "pyxis:" <<< "$stderr" && grep -qi pmix <<< "$stderr"; then
        skip "Slurm's mpi/pmix plugin failed: $(grep -i pmix <<< "$stderr" | head -n 2 | tr '\n' ' ')"
    fi
    if [ "$status" -ne 0 ]; then
        printf 'srun failed with status %s:\n%s\n%s\n' "$status" "$output" "$stderr" >&2
        return 1
    fi
    assert_ranks 2
    [ "$(awk '{print $3}' <<< "$output" | sort -u | grep -c .)" -eq 1 ]
    [ -n "$(awk '{print $3}' <<< "$output" | head -n 1)" ]
    assert_no_own_leftovers
}
