#!/usr/bin/env bash
# Runs INSIDE a fresh mount + UTS namespace made by cluster.sh for one compute node of the
# multi-node test cluster (`unshare --mount --uts --propagation private`), sets up what is
# node-local on a real cluster, then starts that node's slurmd (which daemonizes and keeps
# the namespace alive for itself, its slurmstepds and their tasks):
#
#   hostname  NODE (its own UTS namespace)
#   /tmp      bind of $PXT_NODE_DIR/NODE/tmp   (enroot data and cache: /tmp/enroot-*)
#   /run      bind of $PXT_NODE_DIR/NODE/run   (enroot runtime /run/enroot, pyxis /run/pyxis),
#             with the host's /run/munge bound back in (slurmd talks to the one munged)
#   /dev/shm  a private tmpfs (the plugin's lock between the tasks of a node lives there)
#   freezer   with proctrack/cgroup, /sys/fs/cgroup/freezer is this node's own sub-hierarchy
#             pxt-NODE: Debian's Slurm is built without --enable-multiple-slurmd, so every
#             slurmd would otherwise use the same slurm/uid_U/job_J cgroups for a job
#             that runs on several nodes
#
# /tmp and /run are directories on the host, so the harness and the tests can look at what
# a node left behind (e.g. $PXT_NODE_DIR/node2/tmp/enroot-data/user-1001) from outside.
# Everything else (/home, /var/lib/pyxis-rs-test with the images, /etc, /usr) is shared, as
# a site's shared file systems and software are.
#
#   node-ns.sh NODE PROCTRACK SLURMD_ARGS...      (only ever run by cluster.sh)
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/lib.sh"
need_root

[ $# -ge 2 ] || die "usage: $0 NODE PROCTRACK SLURMD_ARGS..."
node=$1 proctrack=$2
shift 2
case "$node" in node[0-9]*) ;; *) die "refusing node name '$node'" ;; esac
d=$PXT_NODE_DIR/$node
[ -d "$d/tmp" ] && [ -d "$d/run" ] || die "$d/tmp and $d/run must exist (cluster.sh makes them)"

# nothing below may leak to the host: the namespace must not share mount propagation
[ "$(readlink /proc/self/ns/mnt)" != "$(readlink /proc/1/ns/mnt)" ] || die "not in a private mount namespace"
mount --make-rprivate /

hostname "$node"
install -d -m 0755 "$d/run/munge"
mount --bind /run/munge "$d/run/munge"
mount --rbind "$d/run" /run
mount --bind "$d/tmp" /tmp
mount -t tmpfs -o mode=1777,nosuid,nodev,size=256m "shm-$node" /dev/shm
if [ "$proctrack" = cgroup ]; then
    install -d /sys/fs/cgroup/freezer/"pxt-$node"
    mount --bind /sys/fs/cgroup/freezer/"pxt-$node" /sys/fs/cgroup/freezer
fi
# what a booted node has (cluster.sh and enroot.sh make the same on the host)
install -d -o slurm -g slurm -m 0755 /run/slurm
install -d -m 1777 /run/enroot /tmp/enroot-cache /tmp/enroot-data

# the daemon's environment is what daemon_run gives the host's slurmd, nothing of ours
exec env -i PATH="$PXT_DAEMON_PATH" LANG=C.UTF-8 /usr/sbin/slurmd -N "$node" "$@"
