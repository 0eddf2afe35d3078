#!/usr/bin/env bash
# A throwaway Slurm 22.05 cluster from Debian packages on this host: munged +
# slurmctld + slurmd(s), plus the unprivileged test user. Every node advertises
# PXT_CPUS CPUs (8 by default, on a 2-core machine) and the partition is
# OverSubscribe=YES, so that multi-task steps and concurrent jobs fit.
#
# PXT_NODES=1 (default): one slurmd on the host itself, node name = hostname -s.
# PXT_NODES=N (N > 1):   N compute nodes node1..nodeN, each a slurmd (`slurmd -N nodeI`,
#                        its own Port 6830+I on 127.0.0.1) started by node-ns.sh in its own
#                        mount, UTS and pid namespace: own hostname, processes, /tmp, /run,
#                        /dev/shm (and so enroot data/runtime directories). The host's slurmd
#                        is stopped meanwhile; `PXT_NODES=1 cluster.sh up` brings it back.
#
#   tests/harness/cluster.sh up              start what is not running; restart what runs
#                                            with an outdated configuration (idempotent, fast
#                                            when already up)
#   tests/harness/cluster.sh down            stop slurmd, slurmctld, munged (ours only, by pidfile)
#   tests/harness/cluster.sh restart-slurmd  restart slurmd (it loads plugstack.conf at start)
#   tests/harness/cluster.sh status
#
# Environment: PXT_NODES (1), PXT_CPUS (8), PXT_REALMEM_MB (16000), PXT_PROCTRACK (auto|linuxproc|cgroup;
# auto = proctrack/cgroup when the cgroup v1 freezer hierarchy is mounted, else linuxproc),
# PXT_SLURMD_DEBUG (info).
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/lib.sh"
need_root

: "${PXT_CPUS:=8}"
: "${PXT_REALMEM_MB:=16000}"
: "${PXT_PROCTRACK:=auto}"
: "${PXT_SLURMD_DEBUG:=info}"
: "${PXT_PARTITION:=debug}"
HOST=$(hostname -s)
SLURMCTLD=/usr/sbin/slurmctld
SLURMD=/usr/sbin/slurmd
MUNGED=/usr/sbin/munged
CTLD_PID=/run/slurm/slurmctld.pid
MUNGE_PID=/run/munge/munged.pid
NODES_FILE=$PXT_STATE/cluster-nodes
case "$PXT_NODES" in ''|*[!0-9]*|0) die "PXT_NODES must be a positive number (got '$PXT_NODES')" ;; esac
[ "$PXT_NODES" -le 16 ] || die "PXT_NODES=$PXT_NODES: at most 16 nodes on one machine"
if [ "$PXT_NODES" -eq 1 ]; then
    NODES=("$HOST")
else
    NODES=()
    for i in $(seq 1 "$PXT_NODES"); do NODES+=("node$i"); done
fi

# every slurmd this harness may have started: the configured nodes, the host's own, and
# namespaced nodes of an earlier multi-node configuration
known_nodes() {
    local d
    printf '%s\n' "${NODES[@]}" "$HOST"
    for d in "$PXT_NODE_DIR"/node*; do [ -d "$d" ] && basename "$d"; done
    return 0
}

stop_slurmd() {
    if [ "$1" != "$HOST" ] && ! node_pid "$1" >/dev/null; then
        rm -f "$(slurmd_pidfile "$1")"
        return 0
    fi
    stop_pidfile "$(slurmd_pidfile "$1")" "$(slurmd_exe "$1")" "slurmd $1"
}

# node_fs_off NODE: unmount a namespaced node's /tmp and /run tmpfs from the host (lazily:
# a namespace still using them keeps its own copy of the mount)
node_fs_off() {
    local m
    [ "$1" != "$HOST" ] || return 0
    for m in tmp run; do
        if mountpoint -q "$PXT_NODE_DIR/$1/$m"; then umount -l "$PXT_NODE_DIR/$1/$m"; fi
    done
}

# node_off NODE: the node is powered off: its slurmd stopped, its node-local file systems gone
node_off() { stop_slurmd "$1"; node_fs_off "$1"; }

stop_all() {
    local n
    for n in $(known_nodes | sort -u); do node_off "$n"; done
    stop_pidfile "$CTLD_PID" "$SLURMCTLD" slurmctld
    stop_pidfile "$MUNGE_PID" "$MUNGED" munged
}

ensure_user() {
    if ! id "$PXT_USER" >/dev/null 2>&1; then
        useradd --create-home --shell /bin/bash "$PXT_USER" || die "useradd $PXT_USER failed"
        log "created user $PXT_USER ($(id -u "$PXT_USER"))"
    fi
    local home; home=$(user_home)
    if [ ! -d "$home" ]; then install -d -o "$PXT_USER" -g "$(id -gn "$PXT_USER")" -m 0755 "$home"; fi
    # other users (root running the harness, slurmstepd before it drops privileges) look around in it
    chmod 0755 "$home"
}

# munged: the key is created once and kept (jobs and credentials survive restarts)
start_munge() {
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge /etc/munge
    if [ ! -s /etc/munge/munge.key ]; then
        log "munge: creating key"
        if command -v mungekey >/dev/null; then
            runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key --force
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    if pid_of "$MUNGE_PID" "$MUNGED" >/dev/null && munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0
    fi
    stop_pidfile "$MUNGE_PID" "$MUNGED" munged
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    daemon_run runuser -u munge -- "$MUNGED" --pid-file="$MUNGE_PID" \
        || die "munged failed to start (see /var/log/munge/munged.log)"
    wait_for 10 "munge round trip" sh -c 'munge -n </dev/null | unmunge' || die "munge round trip failed (munge -n | unmunge)"
    ok "munged up (pid $(pid_of "$MUNGE_PID" "$MUNGED"))"
}

# write_conf: render slurm.conf (+ cgroup.conf) and install them; sets CONF_CHANGED=1 if
# either differs from what is installed.
CONF_CHANGED=0
install_if_changed() { # SRC DEST: install SRC as DEST (0644) unless identical
    if ! cmp -s "$1" "$2"; then
        install -m 0644 "$1" "$2"
        CONF_CHANGED=1
    fi
    rm -f "$1"
}

write_conf() {
    install -d -m 0755 "$SLURM_ETC" "$SLURM_ETC/plugstack.conf.d"
    install -d -o slurm -g slurm -m 0755 /run/slurm /var/log/slurm /var/lib/slurm /var/lib/slurm/slurmctld
    install -d -o root -g root -m 0755 /var/lib/slurm/slurmd
    # slurmctld and slurmd look the node names up; nothing else may answer for them
    local n
    for n in "$HOST" "${NODES[@]}"; do
        getent hosts "$n" >/dev/null || echo "127.0.0.1 $n # pyxis-rs-test: node name" >> /etc/hosts
        getent hosts "$n" | grep -q '^127\.0\.0\.1' || die "$n does not resolve to 127.0.0.1 (/etc/hosts)"
    done
    local proctrack=$PXT_PROCTRACK
    if [ "$proctrack" = auto ]; then
        # proctrack/cgroup (cgroup v1) finds every process of a step, including enroot's
        # helpers; linuxproc (parent-pid walk) is the fallback where freezer is not mounted
        if mountpoint -q /sys/fs/cgroup/freezer; then proctrack=cgroup; else proctrack=linuxproc; fi
    fi
    case "$proctrack" in linuxproc|cgroup) ;; *) die "PXT_PROCTRACK must be auto, linuxproc or cgroup" ;; esac
    # the single node keeps Debian's paths; namespaced nodes get their own (%n = NodeName)
    local pidfile=/run/slurm/slurmd.pid spool=/var/lib/slurm/slurmd log=/var/log/slurm/slurmd.log
    local nodelines partnodes
    if [ "${#NODES[@]}" -eq 1 ]; then
        nodelines="NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${PXT_CPUS} Sockets=1 CoresPerSocket=${PXT_CPUS} ThreadsPerCore=1 RealMemory=${PXT_REALMEM_MB} State=UNKNOWN"
        partnodes=$HOST
    else
        # (SlurmdPidFile: in the node's own /run, a pid of the node's pid namespace)
        spool=/var/lib/slurm/slurmd-%n log=/var/log/slurm/slurmd-%n.log
        nodelines=$(for i in "${!NODES[@]}"; do
            printf 'NodeName=%s NodeHostname=%s NodeAddr=127.0.0.1 Port=%s CPUs=%s Sockets=1 CoresPerSocket=%s ThreadsPerCore=1 RealMemory=%s State=UNKNOWN\n' \
                "${NODES[$i]}" "${NODES[$i]}" $((6831 + i)) "$PXT_CPUS" "$PXT_CPUS" "$PXT_REALMEM_MB"
        done)
        partnodes="node[1-${#NODES[@]}]"
    fi
    local what="one node"
    [ "${#NODES[@]}" -eq 1 ] || what="${#NODES[@]} nodes"
    local tmp; tmp=$(mktemp)
    cat > "$tmp" <<EOF
# Written by tests/harness/cluster.sh (pyxis-rs test cluster, ${what}). Re-run it instead of editing.
ClusterName=pyxisrs
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/${proctrack}
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${pidfile}
SlurmctldPort=6817
SlurmdPort=6818
SlurmdSpoolDir=${spool}
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=${log}
SlurmctldDebug=info
SlurmdDebug=${PXT_SLURMD_DEBUG}
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
PlugStackConfig=${SLURM_ETC}/plugstack.conf
# the node claims more CPUs than the machine has, so that -n 4 and parallel jobs fit
SlurmdParameters=config_overrides
InactiveLimit=0
KillWait=5
MinJobAge=30
Waittime=0
MessageTimeout=30
SlurmdTimeout=300
${nodelines}
PartitionName=${PXT_PARTITION} Nodes=${partnodes} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
    install_if_changed "$tmp" "$SLURM_ETC/slurm.conf"
    if [ "$proctrack" = cgroup ]; then
        tmp=$(mktemp)
        printf 'CgroupPlugin=cgroup/v1\nCgroupMountpoint=/sys/fs/cgroup\nConstrainCores=no\nConstrainRAMSpace=no\nConstrainDevices=no\n' > "$tmp"
        install_if_changed "$tmp" "$SLURM_ETC/cgroup.conf"
    elif [ -n "${PXT_CGROUP_PLUGIN:-}" ]; then
        # slurmd >= 23.11 initialises a cgroup plugin even for proctrack/linuxproc and fails
        # without a cgroup filesystem; tests/harness/release.sh sets PXT_CGROUP_PLUGIN=disabled
        tmp=$(mktemp)
        printf 'CgroupPlugin=%s\n' "$PXT_CGROUP_PLUGIN" > "$tmp"
        install_if_changed "$tmp" "$SLURM_ETC/cgroup.conf"
    elif [ -e "$SLURM_ETC/cgroup.conf" ]; then
        rm -f "$SLURM_ETC/cgroup.conf"; CONF_CHANGED=1
    fi
    # plugstack.conf: the include line only (plugstack.sh manages what is in the .d folder)
    if [ ! -s "$SLURM_ETC/plugstack.conf" ]; then
        printf '# Written by tests/harness/cluster.sh: plugins are configured in plugstack.conf.d/\ninclude %s/plugstack.conf.d/*\n' \
            "$SLURM_ETC" > "$SLURM_ETC/plugstack.conf"
        CONF_CHANGED=1
    fi
    chmod 0644 "$SLURM_ETC/plugstack.conf"
    if [ "$CONF_CHANGED" = 1 ]; then
        ok "slurm.conf written (node(s) ${NODES[*]}, CPUs=${PXT_CPUS} each, proctrack/${proctrack})"
    fi
}

node_state() { sinfo -h -n "$1" -o '%T' 2>/dev/null | head -1; }

start_slurmctld() {
    if [ "$CONF_CHANGED" = 0 ] && pid_of "$CTLD_PID" "$SLURMCTLD" >/dev/null && scontrol ping 2>/dev/null | grep -q 'is UP'; then
        return 0
    fi
    stop_pidfile "$CTLD_PID" "$SLURMCTLD" slurmctld
    daemon_run "$SLURMCTLD" -f "$SLURM_ETC/slurm.conf" || die "slurmctld failed to start (see /var/log/slurm/slurmctld.log)"
    wait_for 30 "slurmctld (scontrol ping)" sh -c 'scontrol ping | grep -q "is UP"' \
        || { tail -20 /var/log/slurm/slurmctld.log >&2; die "slurmctld not answering (scontrol ping)"; }
    ok "slurmctld up (pid $(pid_of "$CTLD_PID" "$SLURMCTLD"))"
}

# ensure_node_usable NODE: bring the node back to a schedulable state. A slurmd
# restarted under a running step can leave the node 'completing' forever, and a
# step that could not be killed drains it: down + resume clears both.
ensure_node_usable() {
    local node="$1" st
    wait_for 30 "node $node to register" sh -c "sinfo -h -n $node -o %T | grep -Eq '^(idle|mixed|allocated|completing|drain|down)'" || true
    st=$(node_state "$node")
    if [[ "$st" == completing* ]]; then
        if ! wait_for 15 "node $node to finish completing" sh -c "sinfo -h -n $node -o %T | grep -Evq '^completing'"; then
            warn "node $node stuck in completing state: down + resume to clear stale jobs"
            scontrol update nodename="$node" state=down reason=pxt-clear-completing || true
            scontrol update nodename="$node" state=resume || true
            sleep 1
        fi
        st=$(node_state "$node")
    fi
    case "$st" in
        # a trailing '-' only means "planned by the backfill scheduler" (busy cluster)
        idle|idle~|idle-|mixed|mixed-|allocated|allocated-|plnd*|planned*) ;;
        *)  log "node $node state '${st}', resuming"
            scontrol update nodename="$node" state=resume 2>/dev/null || true
            wait_for 20 "node $node usable" sh -c "sinfo -h -n $node -o %T | grep -Eq '^(idle|mixed|allocated)-?$'" \
                || { tail -20 "$(slurmd_log "$node")" >&2; die "node $node not usable (state: $(node_state "$node"))"; } ;;
    esac
}

# launch_slurmd NODE BOOT: start the slurmd of NODE (it daemonizes and writes its pidfile).
# A namespaced node's /tmp and /run are tmpfs mounted on the host at $PXT_NODE_DIR/NODE/
# (node-ns.sh binds them into the node), so the tests can see what a node holds; they must
# be file system roots, as on a real node: `enroot list -f` matches a container's rootfs
# against its path below the mount point of ENROOT_DATA_PATH (a bind of a subdirectory made
# every running container "<unknown>"). BOOT=1: the node was down, so it comes up with empty
# ones, as after a reboot; a mere slurmd restart (plugstack.sh) keeps them, as on a real node.
launch_slurmd() {
    local node="$1" boot="$2" d
    if [ "$node" = "$HOST" ]; then
        daemon_run "$SLURMD" -f "$SLURM_ETC/slurm.conf"
        return
    fi
    d=$PXT_NODE_DIR/$node
    if [ "$boot" = 1 ]; then node_fs_off "$node"; fi
    install -d -m 0755 "$PXT_NODE_DIR" "$d"
    # (mkdir, not install -d -m: that would also reset the mode of a mounted /tmp to 0755)
    mkdir -p "$d/tmp" "$d/run"
    mountpoint -q "$d/tmp" || mount -t tmpfs -o mode=1777,nosuid,nodev,size=4g "pxt-$node-tmp" "$d/tmp"
    mountpoint -q "$d/run" || mount -t tmpfs -o mode=0755,nosuid,nodev,size=256m "pxt-$node-run" "$d/run"
    rm -f "$d/node.pid"
    # unshare stays as the parent of the namespace's init (node-ns.sh), which writes its
    # host pid to node.pid and runs slurmd in the foreground
    (
        close_inherited_fds
        cd /
        exec env -i PATH="$PXT_DAEMON_PATH" LANG=C.UTF-8 PXT_STATE="$PXT_STATE" PXT_NODE_DIR="$PXT_NODE_DIR" \
            PXT_LOG="$PXT_LOG" setsid unshare --mount --uts --pid --fork --propagation private -- \
            "$PXT_HARNESS/node-ns.sh" "$node" -f "$SLURM_ETC/slurm.conf"
    ) </dev/null >>"$PXT_LOG/node-$node.log" 2>&1 &
}

# start_slurmds [force]: every configured node's slurmd running (restarted when forced or
# when the configuration changed); slurmds of nodes no longer configured are stopped.
start_slurmds() {
    local force="${1-}" n boot started=()
    for n in $(known_nodes | sort -u); do
        if ! printf '%s\n' "${NODES[@]}" | grep -qxF "$n"; then node_off "$n"; fi
    done
    printf '%s\n' "${NODES[@]}" > "$NODES_FILE.tmp" && mv -f "$NODES_FILE.tmp" "$NODES_FILE"
    for n in "${NODES[@]}"; do
        if [ -z "$force" ] && [ "$CONF_CHANGED" = 0 ] && node_pid "$n" >/dev/null; then
            continue
        fi
        boot=1
        if node_pid "$n" >/dev/null; then boot=0; fi
        stop_slurmd "$n"
        launch_slurmd "$n" "$boot" \
            || { tail -20 "$(slurmd_log "$n")" >&2; die "slurmd $n failed to start (see $(slurmd_log "$n"))"; }
        started+=("$n")
    done
    for n in "${started[@]}"; do
        node_pid "$n" >/dev/null || wait_for 10 "slurmd $n pidfile" node_pid "$n" \
            || { tail -20 "$(slurmd_log "$n")" >&2; die "slurmd $n exited right after start (see $(slurmd_log "$n"))"; }
    done
    for n in "${NODES[@]}"; do ensure_node_usable "$n"; done
    for n in "${started[@]}"; do
        ok "slurmd up (pid $(node_pid "$n")), node $n $(node_state "$n")"
    done
}

status() {
    local n p e
    for n in munged:$MUNGE_PID:$MUNGED slurmctld:$CTLD_PID:$SLURMCTLD; do
        IFS=: read -r p e <<< "${n#*:}"
        if pid_of "$p" "$e" >/dev/null; then echo "${n%%:*}: running (pid $(pid_of "$p" "$e"))"; else echo "${n%%:*}: stopped"; fi
    done
    for n in $(pxt_node_names); do
        if node_pid "$n" >/dev/null; then echo "slurmd $n: running (pid $(node_pid "$n"))"; else echo "slurmd $n: stopped"; fi
    done
    sinfo 2>/dev/null || true
}

case "${1-up}" in
    up)
        "$PXT_HARNESS/packages.sh"
        ensure_user
        write_conf
        start_munge
        start_slurmctld
        start_slurmds
        ok "slurm cluster up: $(sinfo -h -o '%P %a %D %T %c' | head -1)" ;;
    down)
        stop_all; ok "test cluster stopped" ;;
    restart-slurmd)
        # the nodes as configured last (whatever PXT_NODES says now): plugstack.sh restarts
        # them after a change of the plugin stack, also in the middle of a multi-node stage
        mapfile -t NODES < <(pxt_node_names)
        start_slurmds force ;;
    status)
        status ;;
    *)
        die "usage: $0 [up|down|restart-slurmd|status]" ;;
esac
