#!/usr/bin/env bats
# Node causes behind enroot failures, each told once per step with the admin's fix
# (issue 8 item 1, src/core/hints.rs): enroot missing from slurmd's PATH, a full file
# system under the plugin's directories, user namespaces disabled. Needs root: it hides
# the installed enroot, mounts a tiny tmpfs and rewrites plugstack.conf (restored in
# teardown). The steps run as the unprivileged test user.

load common
load containers
load root

teardown() {
    if [ -n "${HIDDEN-}" ] && [ -e "$HIDDEN" ]; then mv -f "$HIDDEN" "${HIDDEN%.pxt-hidden}"; fi
    root_teardown
    if [ -n "${FULL-}" ] && mountpoint -q "$FULL"; then umount "$FULL"; fi
}

@test "root errors: enroot missing from slurmd's PATH names the cause and the fix, once" {
    local enroot
    enroot=$(PATH="$PXT_DAEMON_PATH" command -v enroot) || skip "no enroot in slurmd's PATH"
    [ "$(PATH="$PXT_DAEMON_PATH" type -ap enroot | wc -l)" -eq 1 ] || skip "more than one enroot in slurmd's PATH"
    HIDDEN="$enroot.pxt-hidden"
    mv "$enroot" "$HIDDEN"
    user_srun -n 2 --container-image="$PXT_IMAGE" true
    [ "$status" -ne 0 ]
    [ "$(grep -cF "enroot is not installed on this node, or not in slurmd's PATH" <<< "$output")" -eq 1 ] \
        || { echo "$output" >&2; return 1; }
}

@test "root errors: no space left names the directory and the plugstack key, once" {
    FULL="$WORK/full"
    mkdir -p "$FULL"
    mount -t tmpfs -o size=128k,mode=0755 tmpfs "$FULL" || skip "cannot mount a tmpfs here"
    # without the image cache the import goes to <runtime_path>/<uid>/ (a full cache has its
    # own message, naming image_cache_path, from the cache code)
    with_config "runtime_path=$FULL/run" "image_cache_path=none"
    user_srun --container-image="$PXT_REG_BUSYBOX" true
    [ "$status" -ne 0 ]
    [ "$(grep -cF "no space left on device while importing" <<< "$output")" -eq 1 ] \
        || { echo "$output" >&2; return 1; }
    assert_output_contains "runtime_path="
}

@test "root errors: disabled user namespaces name sysctl user.max_user_namespaces" {
    local old
    old=$(cat /proc/sys/user/max_user_namespaces)
    sysctl -qw "user.max_user_namespaces=$old" 2>/dev/null \
        || skip "sysctl user.max_user_namespaces is not writable here (unit tests in src/core/hints.rs cover the message)"
    sysctl -qw user.max_user_namespaces=0
    user_srun --container-image="$PXT_IMAGE" true
    sysctl -qw "user.max_user_namespaces=$old"
    [ "$status" -ne 0 ]
    [ "$(grep -cF "sysctl -w user.max_user_namespaces" <<< "$output")" -eq 1 ] \
        || { echo "$output" >&2; return 1; }
}
