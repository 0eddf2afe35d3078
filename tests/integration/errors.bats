#!/usr/bin/env bats
# Errors that say what to do (issue 8 item 1, src/core/hints.rs): Docker's
# REGISTRY/IMAGE syntax is converted to enroot's REGISTRY#IMAGE, a registry address
# alone and an #SBATCH line cut at its "#" get the escaping advice, a file name
# without "./" gets a hint, and 401/403/404 from a registry are told apart. Each hint
# is printed once per step. The 401/403 answers come from the refusing loopback
# registry of refusing_registry.py (next to this suite, which run-all.sh copies for the
# test user), started here on 127.0.0.1:5001 and stopped by its pidfile.
# Node causes (user namespaces, /dev/fuse, enroot missing) are in root_errors.bats.

load common
load containers

REFUSING_PORT=5001

setup_file() {
    export REFUSING_PID="$BATS_FILE_TMPDIR/refusing.pid"
    python3 "$BATS_TEST_DIRNAME/refusing_registry.py" "$REFUSING_PORT" "$REFUSING_PID" \
        >"$BATS_FILE_TMPDIR/refusing.log" 2>&1 3>&- &
    local i
    for i in $(seq 50); do
        [ -s "$REFUSING_PID" ] && curl -fsS -o /dev/null "http://127.0.0.1:$REFUSING_PORT/v2/" && return 0
        sleep 0.1
    done
    echo "the refusing registry did not start: $(cat "$BATS_FILE_TMPDIR/refusing.log")" >&2
    return 1
}

teardown_file() {
    if [ -s "${REFUSING_PID-}" ]; then kill "$(cat "$REFUSING_PID")" 2>/dev/null || true; fi
}

setup() {
    curl -fsS -o /dev/null http://127.0.0.1:5000/v2/pyxis/busybox/tags/list \
        || skip "no loopback registry on 127.0.0.1:5000 (run tests/harness/up.sh)"
}

teardown() {
    release_jobs
}

@test "errors: Docker's REGISTRY/IMAGE form runs, and the step's verbose log shows the enroot form" {
    local image=127.0.0.1:5000/pyxis/busybox:latest
    run_srun_unchecked --slurmd-debug=verbose --container-image="$image" grep PRETTY /etc/os-release
    if [ "$status" -ne 0 ] && grep -q "allowed only for root and SlurmUser" <<< "$output"; then
        # Slurm >= 24.11 gives --slurmd-debug to root and SlurmUser only: the enroot command
        # line is not visible to the user there; the step itself must still run
        echo "# --slurmd-debug is root-only on this Slurm: only the step's success is checked" >&3
        run_srun --container-image="$image" grep PRETTY /etc/os-release
        assert_output_contains "$PXT_PRETTY"
        return 0
    fi
    [ "$status" -eq 0 ] || { printf '%s\n' "$output" >&2; return 1; }
    assert_output_contains "$PXT_PRETTY"
    # slurmstepd's init_post_opt (where the verbose note is logged, to slurmd's log) runs
    # before the step's stderr is connected, so check the enroot command line instead
    assert_output_contains 'pyxis: running enroot command: "enroot '
    assert_output_contains " docker://127.0.0.1:5000#pyxis/busybox:latest"
}

@test "errors: HOST:PORT alone is refused as a registry address, once, before any step" {
    run_srun_unchecked --container-image=127.0.0.1:5000 true
    assert_failure_with "--container-image: 127.0.0.1:5000 is only a registry address, not an image"
    [ "$(count_lines_with "is only a registry address")" -eq 1 ]
    assert_output_contains '127.0.0.1:5000\#IMAGE[:TAG]'
}

@test "errors: an #SBATCH image cut at its # is refused by sbatch with the escaping hint" {
    local script="$BATS_TEST_TMPDIR/cut.sh"
    printf '#!/bin/sh\n#SBATCH --container-image=127.0.0.1:5000#pyxis/busybox:latest\ntrue\n' > "$script"
    run timeout "$PXT_CMD_TIMEOUT" sbatch -o /dev/null "$script"
    assert_failure_with "is only a registry address"
    assert_output_contains 'an unescaped "#" starts a comment'
    [ "$(count_lines_with "is only a registry address")" -eq 1 ]
}

@test "errors: a registry host without an image gets the escaping hint once" {
    run_srun_unchecked --container-image=nvcr.io true
    assert_failure_with "pyxis: failed to import docker image: nvcr.io"
    [ "$(count_lines_with 'nvcr.io is a registry host without an image name')" -eq 1 ]
    assert_output_contains 'nvcr.io\#IMAGE[:TAG]'
}

@test "errors: a file name without ./ that exists in the working directory gets a hint once" {
    local dir="$BATS_TEST_TMPDIR/cwd"
    mkdir -p "$dir"
    cp "$PXT_IMAGE" "$dir/hello.sqsh"
    run_srun_unchecked --chdir="$dir" --container-image=hello.sqsh true
    assert_failure_with "pyxis: failed to import docker image: hello.sqsh"
    [ "$(count_lines_with "use --container-image=./hello.sqsh")" -eq 1 ]
    # and the advice works
    run_srun --chdir="$dir" --container-image=./hello.sqsh grep PRETTY /etc/os-release
    assert_output_contains "$PXT_PRETTY"
}

@test "errors: 401 says not found, or needs credentials, once" {
    run_srun_unchecked --container-image="127.0.0.1:$REFUSING_PORT/login/private:1" true
    assert_failure_with "pyxis: failed to import docker image: 127.0.0.1:$REFUSING_PORT/login/private:1"
    assert_output_contains "401 Unauthorized"
    [ "$(count_lines_with "the image was not found, or it needs credentials: see ~/.config/enroot/.credentials")" -eq 1 ]
    refute_output_contains "403 Forbidden:"
}

@test "errors: 403 says the credentials are refused, once" {
    run_srun_unchecked --container-image="127.0.0.1:$REFUSING_PORT/denied/x" true
    assert_failure_with "pyxis: failed to import docker image"
    [ "$(count_lines_with "the registry answered 403 Forbidden: the registry refuses these credentials")" -eq 1 ]
    refute_output_contains "needs credentials"
}

@test "errors: 404 says the image or tag does not exist, once per 2-task step" {
    run_srun_unchecked -n 2 --container-image="127.0.0.1:5000/pyxis/i3-does-not-exist:latest" true
    assert_failure_with "pyxis: failed to import docker image"
    [ "$(count_lines_with "the registry answered 404 Not Found: the image or its tag does not exist")" -eq 1 ]
    refute_output_contains "needs credentials"
}
