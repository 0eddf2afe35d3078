#!/usr/bin/env bats
# The image cache and the direct start with the default configuration, as the user
# (issue 7): a registry image used before on the node is not imported again in a new
# job and its entry is in the user's cache directory; an image pinned by digest starts
# from the same entry; several tasks share one directly started container. The
# configurations that change the cache (size bound, off) are in root_cache.bats.

load common
load containers

CACHE_DIR="/var/cache/pyxis/$(id -u)"

setup() {
    curl -fsS -o /dev/null http://127.0.0.1:5000/v2/pyxis/busybox/tags/list \
        || skip "no loopback registry on 127.0.0.1:5000 (run tests/harness/up.sh)"
}

teardown() {
    release_jobs
}

@test "cache: a registry image used before is not imported again in a new job" {
    run_srun --container-image="$PXT_REG_BUSYBOX" true
    # the first use may or may not have imported (the cache may have it already)
    run_srun --container-image="$PXT_REG_BUSYBOX" sh -c 'grep PRETTY /etc/os-release'
    assert_output_contains "$PXT_PRETTY"
    [ "$(count_lines_with "pyxis: importing docker image")" -eq 0 ]
    [ "$(count_lines_with "pyxis: imported docker image")" -eq 0 ]
    # the entry is a squashfs of the user's, in a directory closed to others
    [ "$(stat -c '%u %a' "$CACHE_DIR")" = "$(id -u) 700" ]
    find "$CACHE_DIR" -maxdepth 1 -name 'sha256-*.sqsh' -user "$(id -u)" | grep -q .
    # no temporaries or lock files of imports are left
    ! find "$CACHE_DIR" -maxdepth 1 \( -name '.sha256-*' -o -name '*.lock' -not -name commit.lock -o -name '*.use' \) | grep -q .
}

@test "cache: an image pinned by digest starts from the cache entry without an import" {
    run_srun --container-image="$PXT_REG_BUSYBOX" true
    local digest
    digest=$(enroot digest "docker://${PXT_REG_BUSYBOX}")
    [[ "$digest" == sha256:* ]]
    [ -f "$CACHE_DIR/sha256-${digest#sha256:}.sqsh" ]
    run_srun --container-image="127.0.0.1:5000#pyxis/busybox@$digest" sh -c 'grep PRETTY /etc/os-release'
    assert_output_contains "$PXT_PRETTY"
    [ "$(count_lines_with "pyxis: importing docker image")" -eq 0 ]
}

@test "direct start: four tasks share one container started from the squashfs" {
    # shellcheck disable=SC2016  # expanded inside the container
    run_srun -n 4 --overcommit --container-image="$PXT_IMAGE" sh -c 'echo "mnt=$(readlink /proc/self/ns/mnt)"; echo "STEP=$SLURM_JOB_ID.$SLURM_STEP_ID"'
    [ "$(grep -o 'mnt=mnt:\[[0-9]*\]' <<< "$output" | sort -u | wc -l)" -eq 1 ]
    [ "$(grep -o 'mnt=mnt:\[[0-9]*\]' <<< "$output" | wc -l)" -eq 4 ]
    # unnamed and started directly: no container filesystem was ever made for it
    local step
    step=$(sed -n 's/^STEP=//p' <<< "$output" | head -n 1)
    [ -n "$step" ]
    ! enroot list | grep -qxF "pyxis_$step"
}
