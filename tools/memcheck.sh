#!/usr/bin/env bash
# Valgrind memcheck of spank_pyxis.so through its C ABI (docs/memcheck.md).
#
#   tools/memcheck.sh [PLUGIN]        default target/release/libspank_pyxis.so (built if missing)
#
# tools/memcheck/harness.c plays srun and slurmstepd: it provides the spank_*/slurm_*
# symbols, dlopens the plugin and calls its hooks in Slurm's order. Runs, each under
# `valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite`
# with tools/memcheck/pyxis.supp:
#   srun-*   srun's option parsing: slurm_spank_init, every --container-* callback with
#            ordinary and hostile values (quotes, $(), newlines, control bytes, 64 kB),
#            init_post_opt, exit
#   step-*   (root only) one whole container step as slurmstepd runs it, against the
#            enroot test double and the harness's busybox image: init, the options,
#            init_post_opt, user_init (enroot create), a forked task with the job user's
#            credentials (task_init: enroot start, setns, then exec of `true` in the
#            container), task_exit (enroot remove), exit
# Prints one line per run and ends with "N passed, N failed"; a run fails when
# valgrind reports an error, the harness a failed hook, or the step leaves its container.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
plugin=${1:-$repo/target/release/libspank_pyxis.so}
work=$(mktemp -d /tmp/pyxis-memcheck.XXXXXX)
chmod 0755 "$work"
trap 'rm -rf "$work"' EXIT
command -v valgrind >/dev/null || { echo "memcheck: valgrind is not installed (apt-get install valgrind)" >&2; echo "0 passed, 1 failed"; exit 1; }
if [ ! -f "$plugin" ]; then
    (cd "$repo" && cargo build --release --locked -p pyxis-rs) || { echo "0 passed, 1 failed"; exit 1; }
fi
harness="$work/harness"
gcc -Wall -Wextra -Werror -g -O0 -rdynamic -o "$harness" "$repo/tools/memcheck/harness.c" -ldl || {
    echo "0 passed, 1 failed"; exit 1; }

pass=0 fail=0
vg=(valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
    --track-origins=yes --suppressions="$repo/tools/memcheck/pyxis.supp" --trace-children=no)

# run NAME CMD...: CMD (the harness itself, never a wrapper: valgrind does not follow
# exec) under valgrind, in the environment RUN_ENV (env(1) arguments; none: this one)
RUN_ENV=()
run() {
    local name="$1" rc=0; shift
    env "${RUN_ENV[@]}" "${vg[@]}" --log-file="$work/$name.vg" "$@" > "$work/$name.log" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ] && ! grep -q '==[0-9]*==' "$work/$name.vg"; then
        echo "ok   $name"; pass=$((pass + 1))
    else
        echo "FAIL $name (exit $rc)"; fail=$((fail + 1))
        sed 's/^/    /' "$work/$name.vg" | head -n 60
        tail -n 20 "$work/$name.log" | sed 's/^/    | /'
    fi
}

big=$(head -c 65536 /dev/zero | tr '\0' x)
hostile=$'q\'"`id`$(id)\\\n\t\x01\x1b[2J'
run srun-options "$harness" "$plugin" srun \
    --container-image=docker://nvcr.io#nvidia/pytorch:24.01-py3 \
    --container-mounts=/tmp:/tmp:ro,tmpfs:/scratch,/a:/b:x-create=file+bind \
    --container-workdir=/work --container-name=c1:no_exec --container-save=/tmp/x.sqsh \
    --no-container-mount-home --container-remap-root --no-container-entrypoint \
    --container-entrypoint-log --container-writable --container-env=A,B_2 \
    --container-unshare=net,ipc
# the hostile and invalid values are refused by the callbacks (or taken verbatim):
# those are results, not memcheck errors, so option failures do not fail these runs
export PXT_MC_IGNORE_OPTION_ERRORS=1
run srun-hostile "$harness" "$plugin" srun \
    --container-image="$hostile" --container-mounts="$hostile:/x" --container-workdir="$hostile" \
    --container-name="$hostile" --container-save="$hostile" --container-env="$hostile" \
    --container-unshare="$hostile" --container-image="$big" --container-mounts="/$big:/y" \
    --container-workdir="$big" --container-name="$big"
run srun-invalid "$harness" "$plugin" srun --container-name=: --container-mounts=: \
    --container-mounts=.. --container-name=. --container-name='x y' \
    --container-env=, --container-unshare=pid --container-save=/tmp/
unset PXT_MC_IGNORE_OPTION_ERRORS

if [ "$(id -u)" -eq 0 ] && [ -r "${PXT_IMAGES:-/var/lib/pyxis-rs-test/images}/busybox.sqsh" ] && id pyxistest >/dev/null 2>&1; then
    uid=$(id -u pyxistest) gid=$(id -g pyxistest)
    home=$(getent passwd pyxistest | cut -d: -f6)
    rt="$work/runtime"
    install -d -m 0755 "$rt"
    job=$((900000 + RANDOM))
    img="${PXT_IMAGES:-/var/lib/pyxis-rs-test/images}/busybox.sqsh"
    # step ARGS NAME PLUGIN_ARGS OPTION...: one whole step, then nothing of it may be left
    step() {
        local name="$1" pargs="$2"; shift 2
        job=$((job + 1))
        RUN_ENV=(-i PATH=/usr/local/bin:/usr/bin:/bin HOME="$home" USER=pyxistest
            PXT_MC_PLUGIN_ARGS="runtime_path=$rt $pargs")
        run "$name" "$harness" "$plugin" step "$uid" "$gid" "$job" 0 "$@" -- /bin/echo in-container
        RUN_ENV=()
        grep -q '^in-container$' "$work/$name.log" || { echo "FAIL $name: the task did not run in the container"; fail=$((fail + 1)); }
        if runuser -u pyxistest -- env HOME="$home" enroot list 2>/dev/null | grep -q "^pyxis_$job\."; then
            echo "FAIL $name left container pyxis_$job.0"; fail=$((fail + 1))
            runuser -u pyxistest -- env HOME="$home" enroot remove -f "pyxis_$job.0" >/dev/null 2>&1 || true
        fi
        if [ -n "$(ls -A "$rt/$uid" 2>/dev/null | grep "^$job\.")" ]; then
            echo "FAIL $name left files in $rt/$uid: $(ls -A "$rt/$uid")"; fail=$((fail + 1))
        fi
    }
    # the direct start (squashfuse) and the enroot create path with mounts and env
    step step-direct "" --container-image="$img"
    step step-create "use_squashfuse=0" --container-image="$img" \
        --container-mounts=/tmp:/mnt/tmp:ro,tmpfs:/scratch --container-env=HOME --no-container-mount-home
else
    echo "memcheck: the whole-step run needs root, the test user pyxistest and the harness images (tests/harness/up.sh); not run"
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
