#!/usr/bin/env bats
# Options that become enroot settings (reference §5.18, §5.15): --[no-]container-remap-root
# (uid and uid_map), the seccomp filter that fakes chown/setuid-family calls for every
# ABI (W17), --[no-]container-mount-home in both remap modes, --container-readonly and
# --container-writable.

load common
load features

setup() {
    [ -r "$PXT_IMAGE" ] || skip "no test image $PXT_IMAGE (run tests/harness/up.sh)"
    snapshot_containers
    HOME_MARKER=""
}

teardown() {
    if [ -n "$HOME_MARKER" ]; then rm -f "$HOME_MARKER"; fi
}

# squeeze LINE: LINE with its fields separated by single spaces (uid_map pads with blanks,
# /proc/self/status uses a tab).
squeeze() {
    awk '{$1 = $1; print}' <<< "$1"
}

@test "remap-root: --container-remap-root is uid 0, mapped to the user, with seccomp" {
    run_srun_stdout --container-image="$PXT_IMAGE" --container-remap-root \
        sh -c 'id -u; cat /proc/self/uid_map; grep "^Seccomp:" /proc/self/status'
    [ "$(sed -n 1p <<< "$output")" = 0 ]
    [ "$(squeeze "$(sed -n 2p <<< "$output")")" = "0 $(id -u) 1" ]
    [ "$(squeeze "$(sed -n 3p <<< "$output")")" = "Seccomp: 2" ]
    assert_no_own_leftovers
}

@test "remap-root: --no-container-remap-root keeps the uid, mapped to itself, with seccomp" {
    run_srun_stdout --container-image="$PXT_IMAGE" --no-container-remap-root \
        sh -c 'id -u; cat /proc/self/uid_map; grep "^Seccomp:" /proc/self/status'
    [ "$(sed -n 1p <<< "$output")" = "$(id -u)" ]
    [ "$(squeeze "$(sed -n 2p <<< "$output")")" = "$(id -u) $(id -u) 1" ]
    [ "$(squeeze "$(sed -n 3p <<< "$output")")" = "Seccomp: 2" ]
    assert_no_own_leftovers
}

@test "seccomp: as remapped root, chown to unmapped ids and setuid/setgroups succeed (faked)" {
    # a single-id mapping: without the filter chown(1234) fails with EINVAL and su cannot
    # setgroups; package managers need these to "work"
    # shellcheck disable=SC2016  # expanded inside the container
    run_srun_stdout --container-image="$PXT_IMAGE" --container-remap-root --container-writable \
        sh -c 'touch /i4-owned && chown 1234:1234 /i4-owned && echo chown-ok; su nobody -s /bin/sh -c "echo su-ok uid=\$(id -u)"'
    printf 'container:\n%s\n' "$output"
    [ "$output" = "$(printf 'chown-ok\nsu-ok uid=0')" ]
    # the same calls in a plain user namespace (no filter) fail: the test can tell
    if command -v unshare >/dev/null && [ -x /bin/busybox ] && unshare -r true 2>/dev/null; then
        run unshare -r /bin/busybox su nobody -s /bin/sh -c 'echo su-ok'
        printf 'plain user namespace: status %s: %s\n' "$status" "$output"
        [ "$status" -ne 0 ]
        refute_output_contains su-ok
    fi
    assert_no_own_leftovers
}

@test "seccomp: without remap-root, chown to another id succeeds (faked) too" {
    run_srun_stdout --container-image="$PXT_IMAGE" --no-container-remap-root \
        sh -c 'touch /tmp/i4-owned && chown 1234:1234 /tmp/i4-owned && echo chown-ok'
    [ "$output" = chown-ok ]
    assert_no_own_leftovers
}

# build_chown32 OUT: a static i386 program doing chown32(argv[1], 1234, 1234) through
# int $0x80 and exiting with the negated result (0 on success, errno otherwise).
build_chown32() {
    local d
    d=$(dirname "$1")
    cat > "$d/chown32.S" <<'EOF'
	.globl _start
	.text
_start:
	movl 8(%esp), %ebx
	movl $212, %eax
	movl $1234, %ecx
	movl $1234, %edx
	int $0x80
	negl %eax
	movl %eax, %ebx
	movl $1, %eax
	int $0x80
EOF
    as --32 -o "$d/chown32.o" "$d/chown32.S" 2>/dev/null && ld -m elf_i386 -static -o "$1" "$d/chown32.o" 2>/dev/null
}

@test "seccomp (W17): the i386 ABI's chown32 is faked as well" {
    case "$(uname -m)" in x86_64) ;; *) skip "i386 check on x86_64 only" ;; esac
    local bin="$BATS_TEST_TMPDIR/chown32"
    build_chown32 "$bin" || skip "cannot assemble an i386 program (binutils as --32 / ld -m elf_i386)"
    # the program runs (IA32 emulation) and really calls chown: it fails in a plain user
    # namespace where 1234 is not mapped
    if ! command -v unshare >/dev/null || ! unshare -r true 2>/dev/null; then
        skip "no unprivileged unshare for the control run"
    fi
    touch "$BATS_TEST_TMPDIR/target"
    run unshare -r "$bin" "$BATS_TEST_TMPDIR/target"
    [ "$status" -ne 126 ] || skip "i386 programs cannot run on this kernel"
    printf 'plain user namespace: chown32 exit %s (errno)\n' "$status"
    [ "$status" -eq 22 ]   # EINVAL: unmapped id

    run_srun_stdout --container-image="$PXT_IMAGE" --container-remap-root --container-writable \
        --container-mounts="$bin:/usr/local/bin/i4-chown32:ro" \
        sh -c 'touch /i4-owned; /usr/local/bin/i4-chown32 /i4-owned; echo "remap=$?"'
    [ "$output" = remap=0 ]
    run_srun_stdout --container-image="$PXT_IMAGE" --no-container-remap-root \
        --container-mounts="$bin:/usr/local/bin/i4-chown32:ro" \
        sh -c 'touch /tmp/i4-owned; /usr/local/bin/i4-chown32 /tmp/i4-owned; echo "noremap=$?"'
    [ "$output" = noremap=0 ]
    assert_no_own_leftovers
}

# home_marker: a file in $HOME to look for inside the container; prints its name.
home_marker() {
    HOME_MARKER=$(mktemp "$HOME/.i4-home-XXXXXX")
    basename "$HOME_MARKER"
}

@test "mount-home: with remap-root the home is at /root and HOME=/root" {
    local m
    m=$(home_marker)
    # shellcheck disable=SC2016  # expanded inside the container
    run_srun_stdout --container-image="$PXT_IMAGE" --container-mount-home --container-remap-root \
        sh -c 'echo "HOME=$HOME"; ls -a /root'
    assert_output_contains "HOME=/root"
    grep -qxF "$m" <<< "$output"
    assert_no_own_leftovers
}

@test "mount-home: without remap-root the home is at \$HOME" {
    local m
    m=$(home_marker)
    # shellcheck disable=SC2016  # expanded inside the container
    run_srun_stdout --container-image="$PXT_IMAGE" --container-mount-home --no-container-remap-root \
        sh -c 'echo "HOME=$HOME"; ls -a "$HOME"'
    assert_output_contains "HOME=$HOME"
    grep -qxF "$m" <<< "$output"
    assert_no_own_leftovers
}

@test "mount-home: --no-container-mount-home mounts it nowhere (both remap modes)" {
    local m r
    m=$(home_marker)
    for r in --container-remap-root --no-container-remap-root; do
        # shellcheck disable=SC2016  # expanded inside the container
        run_srun_stdout --container-image="$PXT_IMAGE" --no-container-mount-home "$r" \
            sh -c 'ls -a /root "$HOME" 2>/dev/null; grep -c " \(/root\|$HOME\) " /proc/self/mountinfo || :'
        printf '%s:\n%s\n' "$r" "$output"
        refute_output_contains "$m"
        [ "$(tail -n 1 <<< "$output")" = 0 ]
    done
    assert_no_own_leftovers
}

@test "writable: --container-readonly makes the root filesystem read-only" {
    run_srun_unchecked --container-image="$PXT_IMAGE" --container-readonly touch /i4-x
    [ "$status" -ne 0 ]
    assert_output_contains "Read-only file system"
    assert_no_own_leftovers
}

@test "writable: --container-writable lets the task write the root filesystem" {
    run_srun_stdout --container-image="$PXT_IMAGE" --container-writable sh -c 'touch /i4-x && echo /i4-x is there'
    [ "$output" = "/i4-x is there" ]
    assert_no_own_leftovers
}
