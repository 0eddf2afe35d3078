#!/usr/bin/env bash
# A throwaway single-node Slurm 22.05 cluster from Debian packages on this host:
# munged + slurmctld + slurmd, plus the unprivileged test user. The node
# advertises PXT_CPUS CPUs (8 by default, on a 2-core machine) and the
# partition is OverSubscribe=YES, so that multi-task steps and concurrent jobs
# fit.
#
#   tests/harness/cluster.sh up              start what is not running; restart what runs
#                                            with an outdated configuration (idempotent, fast
#                                            when already up)
#   tests/harness/cluster.sh down            stop slurmd, slurmctld, munged (ours only, by pidfile)
#   tests/harness/cluster.sh restart-slurmd  restart slurmd (it loads plugstack.conf at start)
#   tests/harness/cluster.sh status
#
# Environment: PXT_CPUS (8), PXT_REALMEM_MB (16000), PXT_PROCTRACK (auto|linuxproc|cgroup;
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
NODE=$(hostname -s)
SLURMCTLD=/usr/sbin/slurmctld
SLURMD=/usr/sbin/slurmd
MUNGED=/usr/sbin/munged
CTLD_PID=/run/slurm/slurmctld.pid
SLURMD_PID=/run/slurm/slurmd.pid
MUNGE_PID=/run/munge/munged.pid

stop_all() {
    stop_pidfile "$SLURMD_PID" "$SLURMD" slurmd
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
    # slurmctld and slurmd look the node name up; nothing else may answer for it
    getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE # pyxis-rs-test: node name" >> /etc/hosts
    local proctrack=$PXT_PROCTRACK
    if [ "$proctrack" = auto ]; then
        # proctrack/cgroup (cgroup v1) finds every process of a step, including enroot's
        # helpers; linuxproc (parent-pid walk) is the fallback where freezer is not mounted
        if mountpoint -q /sys/fs/cgroup/freezer; then proctrack=cgroup; else proctrack=linuxproc; fi
    fi
    case "$proctrack" in linuxproc|cgroup) ;; *) die "PXT_PROCTRACK must be auto, linuxproc or cgroup" ;; esac
    local tmp; tmp=$(mktemp)
    cat > "$tmp" <<EOF
# Written by tests/harness/cluster.sh (pyxis-rs test cluster, one node). Re-run it instead of editing.
ClusterName=pyxisrs
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/${proctrack}
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldPort=6817
SlurmdPort=6818
SlurmdSpoolDir=/var/lib/slurm/slurmd
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
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
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${PXT_CPUS} Sockets=1 CoresPerSocket=${PXT_CPUS} ThreadsPerCore=1 RealMemory=${PXT_REALMEM_MB} State=UNKNOWN
PartitionName=${PXT_PARTITION} Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
    install_if_changed "$tmp" "$SLURM_ETC/slurm.conf"
    if [ "$proctrack" = cgroup ]; then
        tmp=$(mktemp)
        printf 'CgroupPlugin=cgroup/v1\nCgroupMountpoint=/sys/fs/cgroup\nConstrainCores=no\nConstrainRAMSpace=no\nConstrainDevices=no\n' > "$tmp"
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
        ok "slurm.conf written (node ${NODE}, CPUs=${PXT_CPUS}, proctrack/${proctrack})"
    fi
}

node_state() { sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -1; }

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

# ensure_node_usable: bring the node back to a schedulable state. A slurmd
# restarted under a running step can leave the node 'completing' forever, and a
# step that could not be killed drains it: down + resume clears both.
ensure_node_usable() {
    local st
    wait_for 30 "node $NODE to register" sh -c "sinfo -h -n $NODE -o %T | grep -Eq '^(idle|mixed|allocated|completing|drain|down)'" || true
    st=$(node_state)
    if [[ "$st" == completing* ]]; then
        if ! wait_for 15 "node to finish completing" sh -c "sinfo -h -n $NODE -o %T | grep -Evq '^completing'"; then
            warn "node stuck in completing state: down + resume to clear stale jobs"
            scontrol update nodename="$NODE" state=down reason=pxt-clear-completing || true
            scontrol update nodename="$NODE" state=resume || true
            sleep 1
        fi
        st=$(node_state)
    fi
    case "$st" in
        # a trailing '-' only means "planned by the backfill scheduler" (busy cluster)
        idle|idle~|idle-|mixed|mixed-|allocated|allocated-|plnd*|planned*) ;;
        *)  log "node state '${st}', resuming"
            scontrol update nodename="$NODE" state=resume 2>/dev/null || true
            wait_for 20 "node $NODE usable" sh -c "sinfo -h -n $NODE -o %T | grep -Eq '^(idle|mixed|allocated)-?$'" \
                || { tail -20 /var/log/slurm/slurmd.log >&2; die "node $NODE not usable (state: $(node_state))"; } ;;
    esac
}

start_slurmd() {
    local force="${1-}"
    if [ -z "$force" ] && [ "$CONF_CHANGED" = 0 ] && pid_of "$SLURMD_PID" "$SLURMD" >/dev/null; then
        ensure_node_usable
        return 0
    fi
    stop_pidfile "$SLURMD_PID" "$SLURMD" slurmd
    daemon_run "$SLURMD" -f "$SLURM_ETC/slurm.conf" \
        || { tail -20 /var/log/slurm/slurmd.log >&2; die "slurmd failed to start (see /var/log/slurm/slurmd.log)"; }
    pid_of "$SLURMD_PID" "$SLURMD" >/dev/null || wait_for 10 "slurmd pidfile" pid_of "$SLURMD_PID" "$SLURMD" \
        || { tail -20 /var/log/slurm/slurmd.log >&2; die "slurmd exited right after start (see /var/log/slurm/slurmd.log)"; }
    ensure_node_usable
    ok "slurmd up (pid $(pid_of "$SLURMD_PID" "$SLURMD")), node $NODE $(node_state)"
}

status() {
    local n p e
    for n in munged:$MUNGE_PID:$MUNGED slurmctld:$CTLD_PID:$SLURMCTLD slurmd:$SLURMD_PID:$SLURMD; do
        IFS=: read -r p e <<< "${n#*:}"
        if pid_of "$p" "$e" >/dev/null; then echo "${n%%:*}: running (pid $(pid_of "$p" "$e"))"; else echo "${n%%:*}: stopped"; fi
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
        start_slurmd
        ok "slurm cluster up: $(sinfo -h -o '%P %a %D %T %c' | head -1)" ;;
    down)
        stop_all; ok "test cluster stopped" ;;
    restart-slurmd)
        start_slurmd force ;;
    status)
        status ;;
    *)
        die "usage: $0 [up|down|restart-slurmd|status]" ;;
esac
