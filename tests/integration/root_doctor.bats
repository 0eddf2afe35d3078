#!/usr/bin/env bats
# pyxis-doctor (issue 8 item 3) on the test node, as root and as the test user:
#
#   - every check passes on the working node, in text and in --json, exit 0;
#   - after `chmod 000 /dev/fuse` the fuse check FAILs with the fix, exit 1;
#   - after making the runtime directory writable by everyone, or replacing it by a
#     file, the runtime-dir check FAILs with the fix, exit 1;
#   - the user subcommands list the user's cached images and named containers, and
#     remove a named container that no step uses.
#
# As root (it breaks node files; teardown restores them). The doctor is the installed one
# (make install or the deb put it on the PATH next to the plugin).

load common
load containers
load root

doctor_setup() {
    DOCTOR=$(PATH="$PXT_DAEMON_PATH" command -v pyxis-doctor) \
        || { echo "pyxis-doctor is not installed on the PATH ($PXT_DAEMON_PATH)" >&2; return 1; }
    FUSE_MODE=$(stat -c %a /dev/fuse)
    RT_ROOT=$PXT_RUNTIME_PATH
    RT_MODE=$(stat -c %a "$RT_ROOT")
    MOVED=
}

teardown() {
    if [ -n "${FUSE_MODE-}" ]; then chmod "$FUSE_MODE" /dev/fuse; fi
    if [ -n "${MOVED-}" ]; then rm -f "$RT_ROOT"; mv "$MOVED" "$RT_ROOT"; fi
    if [ -n "${RT_MODE-}" ]; then chmod "$RT_MODE" "$RT_ROOT"; fi
    root_teardown
}

# doctor_line NAME: the line of check NAME in $output
doctor_line() {
    grep -E "^(PASS|WARN|FAIL) $1 " <<< "$output"
}

@test "pyxis-doctor passes on the test node, as root and as the user" {
    doctor_setup
    run "$DOCTOR"
    printf '%s\n' "$output"
    [ "$status" -eq 0 ]
    assert_output_contains " 0 failed"
    for c in plugstack plugin slurm-release enroot enroot-features user-namespaces fuse runtime-dir image-cache; do
        doctor_line "$c" >/dev/null || { echo "no line for check $c" >&2; return 1; }
    done
    doctor_line slurm-release | grep -q '^PASS'
    run user_run "$DOCTOR"
    printf '%s\n' "$output"
    [ "$status" -eq 0 ]
    assert_output_contains " 0 failed"
    run user_run "$DOCTOR" --json
    [ "$status" -eq 0 ]
    python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["summary"]["fail"]==0 and len(d["checks"])>=9, d' <<< "$output"
}

@test "pyxis-doctor fails clearly after chmod 000 /dev/fuse" {
    doctor_setup
    chmod 000 /dev/fuse
    run "$DOCTOR"
    printf '%s\n' "$output"
    [ "$status" -eq 1 ]
    doctor_line fuse | grep -q '^FAIL fuse .*/dev/fuse has mode 0000: users cannot open it.* -> fix: chmod 0666 /dev/fuse'
    run "$DOCTOR" --json
    [ "$status" -eq 1 ]
    python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["status"]=="fail" and [c for c in d["checks"] if c["name"]=="fuse"][0]["status"]=="fail", d' <<< "$output"
}

@test "pyxis-doctor fails clearly after breaking the runtime directory" {
    doctor_setup
    chmod 0777 "$RT_ROOT"
    run "$DOCTOR"
    printf '%s\n' "$output"
    [ "$status" -eq 1 ]
    doctor_line runtime-dir | grep -q "^FAIL runtime-dir .*$RT_ROOT.* a directory writable by other users (mode 0777).* -> fix: chown root:root $RT_ROOT"
    chmod "$RT_MODE" "$RT_ROOT"
    MOVED="$RT_ROOT.doctor-test"
    mv "$RT_ROOT" "$MOVED"
    : > "$RT_ROOT"
    run user_run "$DOCTOR"
    printf '%s\n' "$output"
    [ "$status" -eq 1 ]
    doctor_line runtime-dir | grep -q "^FAIL runtime-dir .*$RT_ROOT: Not a directory.* -> fix: remove $RT_ROOT (not a directory) and restart slurmd"
}

@test "pyxis-doctor cache list and containers list/remove act on the user's own" {
    doctor_setup
    run user_run "$DOCTOR" cache list
    printf '%s\n' "$output"
    [ "$status" -eq 0 ]
    assert_output_contains " images, "
    run user_run "$DOCTOR" cache list --json
    [ "$status" -eq 0 ]
    python3 -c 'import json,sys; d=json.load(sys.stdin); assert "images" in d, d' <<< "$output"
    # a named container no step uses, made by a step
    name="doctor$$"
    remove_later "pyxis_$name"
    user_srun --container-image="$PXT_IMAGE" --container-name="$name" true
    must_succeed
    run user_run "$DOCTOR" containers list
    printf '%s\n' "$output"
    [ "$status" -eq 0 ]
    assert_output_contains "pyxis_$name"
    run user_run "$DOCTOR" containers remove "$name"
    printf '%s\n' "$output"
    [ "$status" -eq 0 ]
    assert_output_contains "pyxis_$name: removed"
    run user_run "$DOCTOR" containers list
    refute_output_contains "pyxis_$name"
    run user_run "$DOCTOR" containers remove "$name"
    [ "$status" -eq 1 ]
    assert_output_contains "no such container"
}
