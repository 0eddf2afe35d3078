#!/usr/bin/env bash
# The init (pid 1) of one compute node of the multi-node test cluster: cluster.sh starts it
# in fresh mount, UTS and pid namespaces (`unshare --mount --uts --pid --fork`). It sets up
# what is node-local on a real cluster, runs that node's slurmd in the foreground, forwards
# SIGTERM to it, reaps what is left to it, and when slurmd has gone it exits, which ends
# every process of the node (slurmstepds, tasks, enroot's helpers), as a node's power-off.
# It writes its own pid as the host sees it to $PXT_NODE_DIR/NODE/node.pid.
#
#   hostname  NODE (its own UTS namespace)
#   processes its own pid namespace and /proc: `enroot list -f` (lsns) and pyxis see this
#             node's containers only, not those of the same name on the other nodes
#   /tmp      the tmpfs $PXT_NODE_DIR/NODE/tmp (enroot data and cache: /tmp/enroot-*)
#   /run      the tmpfs $PXT_NODE_DIR/NODE/run (enroot runtime /run/enroot, pyxis /run/pyxis),
#             with the host's /run/munge bound back in (slurmd talks to the one munged)
#   /dev/shm  a private tmpfs (the plugin's lock between the tasks of a node lives there)
#
# The cgroup hierarchy stays the host's: Debian's Slurm is built with multiple-slurmd support
# and puts each node's jobs under slurm_<node>/ (so a job on three nodes has three cgroups),
# and enroot's cgroups hook finds a task's cgroup from /proc/self/cgroup at the host's path
# (a per-node bind of a sub-hierarchy over /sys/fs/cgroup/freezer broke that hook).
#
# /tmp and /run are tmpfs that cluster.sh mounted on the host, so the harness and the tests
# can look at what a node holds (e.g. $PXT_NODE_DIR/node2/tmp/enroot-data/user-1001) from
# outside.
# Everything else (/home, /var/lib/pyxis-rs-test with the images, /etc, /usr) is shared, as
# a site's shared file systems and software are.
#
#   node-ns.sh NODE SLURMD_ARGS...      (only ever run by cluster.sh)
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/lib.sh"
need_root

[ $# -ge 1 ] || die "usage: $0 NODE SLURMD_ARGS..."
node=$1
shift
case "$node" in node[0-9]*) ;; *) die "refusing node name '$node'" ;; esac
d=$PXT_NODE_DIR/$node
mountpoint -q "$d/tmp" && mountpoint -q "$d/run" || die "$d/tmp and $d/run must be mounted (cluster.sh mounts them)"

[ "$$" = 1 ] || die "not the init of a new pid namespace (run by cluster.sh only)"
# nothing below may leak to the host: the namespace must not share mount propagation
mount --make-rprivate /
# /proc is still the host's here: our pid as the host sees it (read by this shell itself,
# a child's /proc/self would be the child)
hostpid=
while read -r key val _; do
    if [ "$key" = NSpid: ]; then hostpid=$val; fi
done < /proc/self/status
[ -n "$hostpid" ] && [ "$hostpid" != 1 ] || die "cannot tell this init's host pid"

hostname "$node"
install -d -m 0755 "$d/run/munge"
mount --bind /run/munge "$d/run/munge"
mount --rbind "$d/run" /run
mount --bind "$d/tmp" /tmp
mount -t tmpfs -o mode=1777,nosuid,nodev,size=256m "shm-$node" /dev/shm
mount -t proc -o nosuid,nodev,noexec "proc-$node" /proc
# what a booted node has (cluster.sh and enroot.sh make the same on the host)
install -d -o slurm -g slurm -m 0755 /run/slurm
install -d -m 1777 /run/enroot /tmp/enroot-cache /tmp/enroot-data

# the daemon's environment is what daemon_run gives the host's slurmd, nothing of ours
env -i PATH="$PXT_DAEMON_PATH" LANG=C.UTF-8 /usr/sbin/slurmd -D -N "$node" "$@" &
slurmd=$!
trap 'kill -TERM "$slurmd" 2>/dev/null || true' TERM INT HUP
echo "$hostpid" > "$d/node.pid"
# `wait` reaps every child, also the orphans the kernel hands to this init
while kill -0 "$slurmd" 2>/dev/null; do wait "$slurmd" || true; done
log "node $node: slurmd ended, the node goes down"
