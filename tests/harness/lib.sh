# shellcheck shell=bash
# Shared helpers for the pyxis-rs test harness. Source it; do not execute it.
#
# The harness brings up a throwaway single-node Slurm cluster on the machine it
# runs on (as root, Debian 12, no systemd). Every daemon it starts writes a
# pidfile, and the harness only ever stops a process through that pidfile after
# checking that /proc/PID/exe is the binary it expects: nothing here kills by
# name, so daemons and processes that are not ours are never touched.

set -euo pipefail

PXT_HARNESS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# the repository root (tests/harness/../..): the harness never depends on anything outside it
PXT_REPO=$(cd "$PXT_HARNESS/../.." && pwd)
: "${PXT_STATE:=/var/lib/pyxis-rs-test}"       # harness-owned state: images, stamps, markers
: "${PXT_IMAGES:=$PXT_STATE/images}"           # squashfs test images (world-readable)
: "${PXT_LOG:=/var/log/pyxis-rs-test}"         # apt and build logs of the harness
: "${PXT_USER:=pyxistest}"                     # the unprivileged user the integration tests run as
: "${PXT_PREFIX:=/usr/local}"                  # where `make install` puts the plugin
: "${SLURM_ETC:=/etc/slurm}"
# compute nodes: 1 = one slurmd on this host (node = hostname -s); N > 1 = N slurmds
# node1..nodeN, each in its own mount + UTS namespace (cluster.sh, node-ns.sh)
: "${PXT_NODES:=1}"
PXT_NODE_DIR=$PXT_STATE/nodes                  # per-node /tmp and /run, pidfiles (multi-node)
export PXT_HARNESS PXT_REPO PXT_STATE PXT_IMAGES PXT_LOG PXT_USER PXT_PREFIX SLURM_ETC PXT_NODES PXT_NODE_DIR

# PATH given to the daemons we start and to the test user: slurmstepd inherits
# slurmd's environment and finds `enroot` through it, so it must not depend on
# whoever ran the harness (root's PATH here has ~/.cargo/bin, pyenv shims, ...).
PXT_DAEMON_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PXT_DAEMON_PATH

# Public registry names that must never be reached: they are pinned to loopback.
# enroot (real or double) would otherwise try them for any image name that is
# not a path, e.g. the random names of invalid_args.bats.
PXT_GUARD_HOSTS="registry-1.docker.io auth.docker.io index.docker.io docker.io nvcr.io ghcr.io \
production.cloudflare.docker.com quay.io gcr.io registry.k8s.io registry.gitlab.com authn.nvidia.com"

_pxt_c() { if [ -t 2 ]; then printf '\033[%sm' "$1"; fi; }
log()  { printf '%s[harness]%s %s\n' "$(_pxt_c 36)" "$(_pxt_c 0)" "$*" >&2; }
ok()   { printf '%s[ ok ]%s %s\n' "$(_pxt_c 32)" "$(_pxt_c 0)" "$*" >&2; }
warn() { printf '%s[warn]%s %s\n' "$(_pxt_c 33)" "$(_pxt_c 0)" "$*" >&2; }
die()  { printf '%s[FAIL]%s %s\n' "$(_pxt_c 31)" "$(_pxt_c 0)" "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" -eq 0 ] || die "$(basename "$0") must run as root"; }

# cargo is installed by rustup for root (~/.cargo/bin), which is not on the PATH
# of every shell (CI strips some variables): find it without downloading anything.
ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        local d
        for d in "${CARGO_HOME:-}/bin" "${HOME:-/root}/.cargo/bin" /root/.cargo/bin; do
            if [ -x "$d/cargo" ]; then PATH="$d:$PATH"; export PATH; break; fi
        done
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found (expected a rustup toolchain in ~/.cargo/bin)"
}

# hosts_guard: pin public registry names to 127.0.0.1 in /etc/hosts (idempotent).
hosts_guard() {
    local h missing=()
    for h in ${PXT_GUARD_HOSTS}; do
        getent hosts "$h" 2>/dev/null | grep -q '^127\.0\.0\.1' || missing+=("$h")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        printf '127.0.0.1 %s # pyxis-rs-test guard: never reach public registries\n' "${missing[*]}" >> /etc/hosts
        log "hosts guard: pinned ${missing[*]} to 127.0.0.1"
    fi
    for h in ${PXT_GUARD_HOSTS}; do
        getent hosts "$h" | grep -q '^127\.0\.0\.1' || die "hosts guard failed for $h"
    done
}

# apt_ensure PKG...: install the missing Debian packages without starting their
# services. A policy-rc.d that answers 101 ("action forbidden") stops invoke-rc.d
# from starting munge/slurmd/docker-registry at install time: the harness starts
# and owns its daemons itself.
apt_ensure() {
    local p missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "apt: installing ${missing[*]}"
    local created_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    local rc=0
    export DEBIAN_FRONTEND=noninteractive
    if ! compgen -G '/var/lib/apt/lists/*Packages*' >/dev/null; then
        apt-get update -q >>"$PXT_LOG/apt.log" 2>&1 || rc=$?
    fi
    if [ "$rc" -eq 0 ]; then
        apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >>"$PXT_LOG/apt.log" 2>&1 || rc=$?
        if [ "$rc" -ne 0 ]; then
            # stale package lists are the usual cause: refresh once and retry
            rc=0
            apt-get update -q >>"$PXT_LOG/apt.log" 2>&1 || true
            apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >>"$PXT_LOG/apt.log" 2>&1 || rc=$?
        fi
    fi
    if [ -n "$created_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
    if [ "$rc" -ne 0 ]; then
        tail -20 "$PXT_LOG/apt.log" >&2
        if grep -q 'pyxis-rs : Depends: enroot' "$PXT_LOG/apt.log"; then
            warn "the plugin package installed with --ignore-depends=enroot blocks apt: add ${missing[*]} to packages.sh, which runs before it"
        fi
        die "apt-get install ${missing[*]} failed (see $PXT_LOG/apt.log)"
    fi
    return 0
}

# pid_of PIDFILE EXE: print the pid in PIDFILE if that process is alive and runs EXE.
pid_of() {
    local pidfile="$1" exe="$2" pid real
    [ -s "$pidfile" ] || return 1
    pid=$(tr -dc '0-9' < "$pidfile")
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
    real=$(readlink -f "/proc/$pid/exe" 2>/dev/null || true)
    real=${real% (deleted)}
    [ "$real" = "$(readlink -f "$exe")" ] || return 1
    printf '%s\n' "$pid"
}

# stop_pidfile PIDFILE EXE NAME: TERM the process named by PIDFILE (only if it
# runs EXE), wait up to 10 s, then KILL it. A pidfile naming anything else is
# considered stale and removed without signalling anybody.
stop_pidfile() {
    local pidfile="$1" exe="$2" name="$3" pid
    pid=$(pid_of "$pidfile" "$exe") || { rm -f "$pidfile"; return 0; }
    log "stopping ${name} (pid ${pid})"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        [ -d "/proc/$pid" ] || break
        sleep 0.1
    done
    if [ -d "/proc/$pid" ]; then
        warn "${name} (pid ${pid}) ignored TERM for 10 s, sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidfile"
}

# The compute nodes cluster.sh configured last ($PXT_STATE/cluster-nodes, one name a line;
# this host's short name before the first `cluster.sh up`).
pxt_node_names() {
    if [ -s "$PXT_STATE/cluster-nodes" ]; then cat "$PXT_STATE/cluster-nodes"; else hostname -s; fi
}

# slurmd_pidfile NODE, slurmd_exe NODE: the process that stands for NODE's slurmd: the host's
# own slurmd, or for a namespaced node the init of its pid namespace (node-ns.sh, a bash),
# whose end takes that node's slurmd and every process of the node with it.
slurmd_pidfile() {
    if [ "$1" = "$(hostname -s)" ]; then echo /run/slurm/slurmd.pid; else echo "$PXT_NODE_DIR/$1/node.pid"; fi
}
slurmd_exe() {
    if [ "$1" = "$(hostname -s)" ]; then echo /usr/sbin/slurmd; else readlink -f /bin/bash; fi
}

# node_pid NODE: the pid (host's view) of that process, if it runs (for a namespaced node:
# a bash running node-ns.sh for NODE, not any bash that got the pid later).
node_pid() {
    local pid
    pid=$(pid_of "$(slurmd_pidfile "$1")" "$(slurmd_exe "$1")") || return 1
    if [ "$1" != "$(hostname -s)" ]; then
        tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "node-ns.sh $1 " || return 1
    fi
    printf '%s\n' "$pid"
}

# slurmd_log NODE: the SlurmdLogFile of NODE.
slurmd_log() {
    if [ "$1" = "$(hostname -s)" ]; then echo /var/log/slurm/slurmd.log; else echo "/var/log/slurm/slurmd-$1.log"; fi
}

# slurmd_pids: "NODE=PID ..." for every configured node (PID empty when it is not running),
# so that a restart of any slurmd changes the string.
slurmd_pids() {
    local n out=()
    for n in $(pxt_node_names); do
        out+=("$n=$(node_pid "$n" || true)")
    done
    echo "${out[*]}"
}

# wait_for SECONDS DESCRIPTION CMD...: poll CMD (quietly) until it succeeds; 1 on timeout.
wait_for() {
    local secs="$1" what="$2"; shift 2
    local end=$((SECONDS + secs))
    while ! "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$end" ]; then
            warn "timed out after ${secs}s waiting for ${what}"
            return 1
        fi
        sleep 0.3
    done
    return 0
}

# user_home: the test user's home directory.
user_home() { getent passwd "$PXT_USER" | cut -d: -f6; }

# as_user CMD...: run CMD as the test user with a clean, login-like environment
# (no root PATH, no cargo or CI variables), from the user's home directory.
# Variables named in PXT_PASS_ENV (space separated) are passed through.
as_user() {
    local home v envs=()
    home=$(user_home)
    for v in ${PXT_PASS_ENV:-}; do
        if [ -n "${!v+x}" ]; then envs+=("$v=${!v}"); fi
    done
    (cd "${PXT_USER_CWD:-$home}" && runuser -u "$PXT_USER" -- env -i \
        HOME="$home" USER="$PXT_USER" LOGNAME="$PXT_USER" SHELL=/bin/bash \
        PATH="$PXT_DAEMON_PATH" LANG=C.UTF-8 "${envs[@]}" "$@")
}

# close_inherited_fds: close every file descriptor above 2 of the current (sub)shell. A
# daemon started from the harness must keep none of its caller's descriptors: run under
# `flock /run/pyxis-host-cluster.lock ...`, munged and docker-registry kept the lock's
# descriptor and so held the shared cluster lock for as long as they ran (and under bats,
# fd 3 kept open by a daemon makes bats wait forever).
close_inherited_fds() {
    local fd
    for fd in /proc/"$BASHPID"/fd/*; do
        fd=${fd##*/}
        case "$fd" in 0 | 1 | 2 | *[!0-9]*) continue ;; esac
        eval "exec $fd>&-" 2>/dev/null || true
    done
}

# daemon_run CMD...: run a daemon's start command with a clean environment from /,
# so that slurmd (and through it slurmstepd, enroot and the plugin) sees the
# PATH a packaged Slurm would have, whatever shell started the harness; no descriptor
# of the caller but stdin/stdout/stderr reaches it (close_inherited_fds).
daemon_run() {
    (cd / && close_inherited_fds && exec env -i PATH="$PXT_DAEMON_PATH" LANG=C.UTF-8 "$@")
}

install -d -m 0755 "$PXT_STATE" "$PXT_LOG"
