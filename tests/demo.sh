#!/usr/bin/env bash
# The "main job" of pyxis-rs, shown end to end (as root, on a throwaway machine):
# bring up a single-node Slurm with the plugin installed the way an admin would
# (tests/harness/up.sh), then, as the unprivileged user pyxistest, run two
# containerised steps through a real srun.
#
#   tests/demo.sh
#   ENROOT=/usr/local/bin/enroot tests/demo.sh     (with a real enroot installed by hand)
#   PXT_NODES=3 tests/demo.sh                      on 3 namespaced nodes (tests/harness/cluster.sh),
#                                                  with a 3-node step; the single-node cluster is
#                                                  brought back at the end
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/harness/lib.sh"
need_root

"$PXT_HARNESS/up.sh"
IMAGE="$PXT_IMAGES/busybox.sqsh"

kind=$(cat "$PXT_STATE/enroot-kind")
case "$kind" in
    double) enroot_said="the pyxis-rs enroot TEST DOUBLE (tests/enroot-double; ENROOT=/path/to/enroot selects a real one)" ;;
    real*)  enroot_said="the REAL enroot ${kind#real }" ;;
    *)      enroot_said="unknown ($kind)" ;;
esac

failed=0
show() { # run a command as the test user, echoing it first; keep going on failure
    local rc=0
    local a shown=()
    for a in "$@"; do   # show the command as it would be typed
        if [[ "$a" =~ ^[A-Za-z0-9_./=:@%+,-]+$ ]]; then shown+=("$a"); else shown+=("'${a//\'/\'\\\'\'}'"); fi
    done
    printf '\n%s$ %s\n' "$PXT_USER" "${shown[*]}"
    as_user "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then echo "(exit status $rc)"; failed=$((failed + 1)); fi
}

echo
echo "== pyxis-rs demo: $(srun --version) on $(pxt_node_names | paste -sd, -) ($(hostname -s)), plugin $(grep -Ev '^[[:space:]]*(#|$)' "$SLURM_ETC/plugstack.conf.d/pyxis.conf" | head -n 1)"
echo "== enroot used by the plugin: $enroot_said"
show srun --container-image="$IMAGE" grep PRETTY /etc/os-release
# shellcheck disable=SC2016  # expanded by the container's shell, per task
show srun -n 4 --container-image="$IMAGE" sh -c 'echo task $SLURM_PROCID in $(readlink /proc/self/ns/mnt)'
if [ "$PXT_NODES" -gt 1 ]; then
    # one container per node, shared by that node's tasks
    # shellcheck disable=SC2016
    show srun -N "$PXT_NODES" --ntasks-per-node=2 --container-image="$IMAGE" \
        sh -c 'echo task $SLURM_PROCID on $(hostname) in $(readlink /proc/self/ns/mnt)'
fi
# shellcheck disable=SC2016
show srun sh -c 'echo and the host itself is in $(readlink /proc/self/ns/mnt)'
if [ "$PXT_NODES" -gt 1 ]; then
    echo
    echo "== bringing the single-node cluster back (PXT_NODES=1 tests/harness/up.sh)"
    PXT_NODES=1 "$PXT_HARNESS/up.sh" >/dev/null 2>&1 || { echo "(restoring the single-node cluster failed)"; failed=$((failed + 1)); }
fi
echo
if [ "$failed" -eq 0 ]; then
    echo "== done: every step ran; enroot was $enroot_said"
else
    echo "== $failed step(s) FAILED; enroot was $enroot_said"
    exit 1
fi
