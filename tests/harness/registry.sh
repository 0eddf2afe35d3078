#!/usr/bin/env bash
# A Docker registry on 127.0.0.1:5000 (Debian's docker-registry, plain HTTP, no auth,
# loopback only) holding test images built from the busybox root filesystem of
# images.sh, so registry imports are tested without any network:
#
#   127.0.0.1:5000#pyxis/busybox:latest   the busybox rootfs, CMD /bin/sh
#   127.0.0.1:5000#pyxis/app:latest       + ENV (IMAGE_VAR, PATH with /app/bin), WORKDIR /app,
#                                         ENTRYPOINT /app/bin/entrypoint.sh (prints a line,
#                                         exports ENTRYPOINT_VAR, then exec "$@")
#   127.0.0.1:5000#pyxis/badentry:latest  an entrypoint that exits instead of exec "$@"
#
#   tests/harness/registry.sh            build (if needed), start, push
#   tests/harness/registry.sh --stop
#
# Facts from bringing this up on Debian 12: distribution 2.8 answers enroot-style manifest
# probes properly only for Docker schema 2 (skopeo --format v2s2); `umoci insert` 0.4.7
# writes layers GNU tar rejects, so images are built with unpack/repack instead.
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/lib.sh"
need_root

ADDR=127.0.0.1:5000
REG_BIN=/usr/bin/docker-registry
REG_CONF=$PXT_STATE/registry/config.yml
REG_DATA=$PXT_STATE/registry/data
REG_PID=$PXT_STATE/registry/registry.pid
OCI=$PXT_STATE/build/oci
ROOTFS=$PXT_STATE/build/busybox-rootfs
RECIPE_VERSION=1
STAMP=$PXT_STATE/registry/.pushed

stop_registry() { stop_pidfile "$REG_PID" "$REG_BIN" docker-registry; }

build_oci() {
    [ -x "$ROOTFS/bin/busybox" ] || "$PXT_HARNESS/images.sh" >/dev/null
    log "registry: building OCI images in $OCI"
    rm -rf "$OCI" "$PXT_STATE/build/bundle"
    umoci init --layout "$OCI"
    # busybox: the rootfs as one layer
    umoci new --image "$OCI:busybox"
    umoci unpack --rootless --image "$OCI:busybox" "$PXT_STATE/build/bundle" >/dev/null
    cp -a "$ROOTFS/." "$PXT_STATE/build/bundle/rootfs/"
    umoci repack --image "$OCI:busybox" "$PXT_STATE/build/bundle" >/dev/null
    rm -rf "$PXT_STATE/build/bundle"
    umoci config --image "$OCI:busybox" --os linux --architecture amd64 \
        --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --config.cmd /bin/sh
    # app: one more layer with an entrypoint, a workdir and image variables
    umoci tag --image "$OCI:busybox" app
    umoci unpack --rootless --image "$OCI:app" "$PXT_STATE/build/bundle" >/dev/null
    local r=$PXT_STATE/build/bundle/rootfs
    install -d -m 0755 "$r/app/bin" "$r/app/data"
    cat > "$r/app/bin/entrypoint.sh" <<'EOF'
#!/bin/sh
# pyxis-rs test image entrypoint
echo "pyxis-rs test entrypoint ran"
export ENTRYPOINT_VAR=set-by-entrypoint
exec "$@"
EOF
    printf '#!/bin/sh\necho app-only command\n' > "$r/app/bin/apponly"
    chmod 0755 "$r/app/bin/entrypoint.sh" "$r/app/bin/apponly"
    umoci repack --image "$OCI:app" "$PXT_STATE/build/bundle" >/dev/null
    rm -rf "$PXT_STATE/build/bundle"
    umoci config --image "$OCI:app" \
        --config.env PATH=/app/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --config.env IMAGE_VAR=from-image \
        --config.env LANG=C \
        --config.workingdir /app \
        --config.entrypoint /app/bin/entrypoint.sh \
        --config.cmd /bin/sh
    # badentry: an entrypoint that never runs the command
    umoci tag --image "$OCI:busybox" badentry
    umoci unpack --rootless --image "$OCI:badentry" "$PXT_STATE/build/bundle" >/dev/null
    r=$PXT_STATE/build/bundle/rootfs
    printf '#!/bin/sh\necho "this entrypoint ignores its arguments"\nexit 0\n' > "$r/bin/badentry.sh"
    chmod 0755 "$r/bin/badentry.sh"
    umoci repack --image "$OCI:badentry" "$PXT_STATE/build/bundle" >/dev/null
    rm -rf "$PXT_STATE/build/bundle"
    umoci config --image "$OCI:badentry" --config.entrypoint /bin/badentry.sh
    umoci gc --layout "$OCI"
}

start_registry() {
    install -d -m 0755 "$(dirname "$REG_CONF")"
    install -d -o docker-registry -g docker-registry -m 0755 "$REG_DATA"
    cat > "$REG_CONF" <<EOF
# Written by tests/harness/registry.sh: loopback only, plain HTTP, no auth.
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: ${REG_DATA}
  delete:
    enabled: true
http:
  addr: ${ADDR}
EOF
    if pid_of "$REG_PID" "$REG_BIN" >/dev/null; then
        ok "registry already up on http://$ADDR"
        return 0
    fi
    # the sh records its own pid, then execs (same pid) into setpriv -> docker-registry;
    # it keeps no descriptor of ours (the cluster lock's, see close_inherited_fds)
    (
        close_inherited_fds
        exec sh -c 'echo $$ > "$1"; exec setpriv --reuid=docker-registry --regid=docker-registry --init-groups -- "$2" serve "$3"' \
            sh "$REG_PID" "$REG_BIN" "$REG_CONF" </dev/null >>"$PXT_LOG/registry.log" 2>&1
    ) &
    wait_for 20 registry curl -fsS "http://$ADDR/v2/" \
        || { tail -20 "$PXT_LOG/registry.log" >&2; die "registry did not answer on http://$ADDR/v2/"; }
    ok "registry up on http://$ADDR (pid $(pid_of "$REG_PID" "$REG_BIN"))"
}

push_all() {
    local recipe src
    recipe="$RECIPE_VERSION $(cat "$PXT_IMAGES/.busybox.recipe" 2>/dev/null)"
    if [ "$(cat "$STAMP" 2>/dev/null || true)" = "$recipe" ] \
        && curl -fsS "http://$ADDR/v2/pyxis/app/tags/list" 2>/dev/null | grep -q latest; then
        ok "registry images up to date"
        return 0
    fi
    build_oci
    for src in busybox app badentry; do
        skopeo --insecure-policy copy --quiet --format v2s2 --dest-tls-verify=false \
            "oci:$OCI:$src" "docker://$ADDR/pyxis/$src:latest" >>"$PXT_LOG/registry-push.log" 2>&1 \
            || die "push $src failed (see $PXT_LOG/registry-push.log)"
    done
    echo "$recipe" > "$STAMP"
    ok "pushed pyxis/busybox, pyxis/app, pyxis/badentry to $ADDR"
}

case "${1-}" in
    --stop) stop_registry; ok "registry stopped" ;;
    "") for p in docker-registry skopeo umoci curl; do command -v "$p" >/dev/null || { "$PXT_HARNESS/packages.sh"; break; }; done
        start_registry; push_all ;;
    *) die "usage: $0 [--stop]" ;;
esac
