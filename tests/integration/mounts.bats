#!/usr/bin/env bats
# --container-mounts as pyxis parses it (reference §4.3): SRC:DST[:FLAGS] with "+"
# between flags, the short form, tmpfs and umount sources, relative paths, spaces,
# several entries, the rejected sources and targets, the missing-source message, and
# targets that try to leave the container root. Hostile path names (W5) are data:
# they are mounted literally or refused, and never run as shell code.

# bats runs each test in its own shell: $status set by `run` in a test is that test's
# shellcheck disable=SC2030,SC2031

load common
load features

setup() {
    [ -r "$PXT_IMAGE" ] || skip "no test image $PXT_IMAGE (run tests/harness/up.sh)"
    snapshot_containers
    SRC="$BATS_TEST_TMPDIR/src"
    mkdir -p "$SRC"
    echo "i4 mount source" > "$SRC/file"
}

teardown() {
    # markers of the injection tests live in the shared /tmp: never leave one behind
    rm -f /tmp/i4-pwned-"$$"-* 2>/dev/null || true
}

# mountinfo_line TARGET: the line of /proc/self/mountinfo (in $output) mounted at TARGET.
mountinfo_line() {
    awk -v t="$1" '$5 == t' <<< "$output"
}

@test "mounts: SRC:DST binds a host directory read-write" {
    run_srun_stdout --container-image="$PXT_IMAGE" --container-mounts="$SRC:/mnt/i4" \
        sh -c 'cat /mnt/i4/file && echo written-inside > /mnt/i4/new'
    [ "$output" = "i4 mount source" ]
    # the write went to the host directory
    [ "$(cat "$SRC/new")" = "written-inside" ]
    assert_no_own_leftovers
}

@test "mounts: SRC:DST:ro is read-only" {
    run_srun_unchecked --container-image="$PXT_IMAGE" --container-mounts="$SRC:/mnt/i4:ro" \
        sh -c 'cat /mnt/i4/file; touch /mnt/i4/new'
    [ "$status" -ne 0 ]
    assert_output_contains "i4 mount source"
    assert_output_contains "Read-only file system"
    [ ! -e "$SRC/new" ]
    assert_no_own_leftovers
}

@test "mounts: flags joined with + all apply (ro+unbindable)" {
    run_srun_stdout --container-image="$PXT_IMAGE" --container-mounts="$SRC:/mnt/i4:ro+unbindable" \
        cat /proc/self/mountinfo
    local line
    line=$(mountinfo_line /mnt/i4)
    printf 'mountinfo line: %s\n' "$line"
    [ -n "$line" ]
    # field 6 holds the per-mount options, the optional fields the propagation type
    [[ "$(awk '{print $6}' <<< "$line")" =~ (^|,)ro(,|$) ]]
    [[ "$line" == *" unbindable "* ]]
    assert_no_own_leftovers
}

@test "mounts: a file and a character device can be bind-mounted" {
    run_srun_stdout --container-image="$PXT_IMAGE" \
        --container-mounts="$SRC/file:/etc/i4-file:ro,/dev/null:/i4-null" \
        sh -c 'cat /etc/i4-file; [ -f /etc/i4-file ] && echo regular; [ -c /i4-null ] && echo chardev; echo x > /i4-null && echo writable'
    [ "$output" = "$(printf 'i4 mount source\nregular\nchardev\nwritable')" ]
    assert_no_own_leftovers
}

@test "mounts: the short form /path mounts the path at the same place" {
    run_srun_stdout --container-image="$PXT_IMAGE" --container-mounts="$SRC" cat "$SRC/file"
    [ "$output" = "i4 mount source" ]
    assert_no_own_leftovers
}

@test "mounts: a relative source (./dir) is resolved against the submission directory" {
    cd "$BATS_TEST_TMPDIR"
    run_srun_stdout --container-image="$PXT_IMAGE" --container-mounts="./src:/mnt/i4-rel" cat /mnt/i4-rel/file
    [ "$output" = "i4 mount source" ]
    assert_no_own_leftovers
}

@test "mounts: a relative target (./dir) is relative to the container root" {
    run_srun_stdout --container-image="$PXT_IMAGE" --container-mounts="$SRC:./i4-reltarget" cat /i4-reltarget/file
    [ "$output" = "i4 mount source" ]
    assert_no_own_leftovers
}

@test "mounts: tmpfs:/dst mounts an empty, writable tmpfs" {
    run_srun_stdout --container-image="$PXT_IMAGE" --container-mounts="tmpfs:/mnt/i4-tmp" \
        sh -c 'ls -A /mnt/i4-tmp; touch /mnt/i4-tmp/x && echo writable; cat /proc/self/mountinfo'
    local line
    line=$(mountinfo_line /mnt/i4-tmp)
    printf 'mountinfo line: %s\n' "$line"
    [ "$(head -n 1 <<< "$output")" = writable ]
    [ "$(awk '{for (i = 7; i <= NF; i++) if ($i == "-") {print $(i+1); exit}}' <<< "$line")" = tmpfs ]
    assert_no_own_leftovers
}

@test "mounts: umount:/dst removes a mount made by an earlier entry" {
    # shellcheck disable=SC2016  # expanded inside the container
    run_srun_stdout --container-image="$PXT_IMAGE" --container-mounts="$SRC:/mnt/i4-gone,umount:/mnt/i4-gone" \
        sh -c 'cat /proc/self/mountinfo; echo "listing:[$(ls -A /mnt/i4-gone)]"'
    [ -z "$(mountinfo_line /mnt/i4-gone)" ]
    # the mount point stays (enroot created it), empty
    assert_output_contains "listing:[]"
    assert_no_own_leftovers
}

@test "mounts: umount:/etc/hosts removes one of enroot's default mounts" {
    # enroot binds the host's /etc/hosts into every container
    run_srun_stdout --container-image="$PXT_IMAGE" cat /proc/self/mountinfo
    [ -n "$(mountinfo_line /etc/hosts)" ]
    run_srun_stdout --container-image="$PXT_IMAGE" --container-mounts="umount:/etc/hosts" cat /proc/self/mountinfo
    [ -z "$(mountinfo_line /etc/hosts)" ]
    assert_no_own_leftovers
}

@test "mounts: spaces in the source and the target path" {
    mkdir -p "$BATS_TEST_TMPDIR/with space"
    echo spaced > "$BATS_TEST_TMPDIR/with space/f"
    run_srun_stdout --container-image="$PXT_IMAGE" --container-mounts="$BATS_TEST_TMPDIR/with space:/mnt/i4 target dir" \
        cat "/mnt/i4 target dir/f"
    [ "$output" = spaced ]
    assert_no_own_leftovers
}

@test "mounts: a backslash and a tab in the source and the target path" {
    local src="$BATS_TEST_TMPDIR/back\\slash"$'\t'"tab" dst="/mnt/i4 b\\s"$'\t'"t"
    mkdir -p "$src"
    echo escaped > "$src/f"
    run_srun_stdout --container-image="$PXT_IMAGE" --container-mounts="$src:$dst" cat "$dst/f"
    [ "$output" = escaped ]
    assert_no_own_leftovers
}

@test "mounts: several entries in one argument, an identical entry only once" {
    mkdir -p "$BATS_TEST_TMPDIR/second"
    echo second > "$BATS_TEST_TMPDIR/second/f"
    run_srun_stdout --container-image="$PXT_IMAGE" \
        --container-mounts="$SRC:/mnt/a,$BATS_TEST_TMPDIR/second:/mnt/b:ro,tmpfs:/mnt/c,$SRC:/mnt/a" \
        sh -c 'cat /mnt/a/file /mnt/b/f; grep -c " /mnt/a " /proc/self/mountinfo; grep -c " /mnt/c " /proc/self/mountinfo'
    [ "$output" = "$(printf 'i4 mount source\nsecond\n1\n1')" ]
    assert_no_own_leftovers
}

@test "mounts: a source that is not a path, tmpfs or umount is rejected (devpts:/x)" {
    run_srun_unchecked --container-image="$PXT_IMAGE" --container-mounts="devpts:/x" true
    assert_failure_with 'mount source must be a relative path, an absolute path, "tmpfs" or "umount"'
    assert_no_own_leftovers
}

@test "mounts: a target that is not a path is rejected (/tmp:mnt)" {
    run_srun_unchecked --container-image="$PXT_IMAGE" --container-mounts="/tmp:mnt" true
    assert_failure_with "mount target must be a relative path or an absolute path"
    assert_no_own_leftovers
}

@test "mounts: a missing absolute source fails the step with pyxis's message" {
    local missing="$BATS_TEST_TMPDIR/does-not-exist"
    run_srun_unchecked --container-image="$PXT_IMAGE" --container-mounts="$missing:/mnt/i4" true
    assert_failure_with "pyxis: --container-mounts: source path does not exist: $missing"
    assert_no_own_leftovers
}

@test "mounts: a target escaping the container root with ../ fails" {
    run_srun_unchecked --container-image="$PXT_IMAGE" --container-mounts="$SRC:../i4-escape" true
    [ "$status" -ne 0 ]
    # enroot refuses to resolve a path outside the root filesystem
    assert_output_contains "cross-device link"
    run_srun_unchecked --container-image="$PXT_IMAGE" --container-mounts="$SRC:/mnt/../../../i4-escape" true
    [ "$status" -ne 0 ]
    assert_output_contains "cross-device link"
    [ ! -e /i4-escape ]
    assert_no_own_leftovers
}

# hostile_source NAME CONTENT: a directory under $BATS_TEST_TMPDIR whose path contains
# NAME (possibly with slashes), holding a file f with CONTENT; prints its path.
hostile_source() {
    local d="$BATS_TEST_TMPDIR/hostile/$1"
    mkdir -p "$d"
    printf '%s\n' "$2" > "$d/f"
    printf '%s\n' "$d"
}

# assert_literal_or_refused EXPECTED: the step either printed EXPECTED (the mount was made
# at the literal path) or was refused with a pyxis message; nothing else is acceptable.
assert_literal_or_refused() {
    if [ "$status" -eq 0 ]; then
        assert_output_contains "$1"
    else
        assert_failure_with ""
    fi
}

@test "mounts (W5): \$(...), backticks, quotes in source paths are data, never shell code" {
    local marker="/tmp/i4-pwned-$$-$RANDOM" s1 s2 s3 s4
    # shellcheck disable=SC2016  # literal on purpose
    s1=$(hostile_source "dollar \$(touch $marker)" one)
    # shellcheck disable=SC2016
    s2=$(hostile_source "tick \`touch $marker\`" two)
    s3=$(hostile_source 'dq "quoted' three)
    s4=$(hostile_source "sq it's; touch $marker" four)
    run_srun_unchecked --container-image="$PXT_IMAGE" --container-mounts="$s1:/m1,$s2:/m2,$s3:/m3,$s4:/m4" \
        cat /m1/f /m2/f /m3/f /m4/f
    printf 'status %s, output:\n%s\n' "$status" "$output"
    [ ! -e "$marker" ]
    assert_literal_or_refused "$(printf 'one\ntwo\nthree\nfour')"
    assert_no_own_leftovers
}

@test "mounts (W5): \$(...) and quotes in a target path are data, never shell code" {
    local marker="/tmp/i4-pwned-$$-$RANDOM"
    # shellcheck disable=SC2016  # literal on purpose
    local t1="/mnt/i4 \$(touch $marker)" t2='/mnt/i4 "dq`id`'
    run_srun_unchecked --container-image="$PXT_IMAGE" --container-mounts="$SRC:$t1,$SRC:$t2" \
        cat "$t1/file" "$t2/file"
    printf 'status %s, output:\n%s\n' "$status" "$output"
    [ ! -e "$marker" ]
    assert_literal_or_refused "$(printf 'i4 mount source\ni4 mount source')"
    assert_no_own_leftovers
}

@test "mounts (W5): \$(...) and backticks in mount flags are data, never shell code" {
    local marker="/tmp/i4-pwned-$$-$RANDOM" flags
    # no blank in them (flags with blanks are refused up front): ${IFS} instead
    for flags in "ro+\$(touch\${IFS}$marker)" "ro+\`touch\${IFS}$marker\`"; do
        run_srun_unchecked --container-image="$PXT_IMAGE" --container-mounts="$SRC:/mnt/i4:$flags" cat /mnt/i4/file
        printf 'flags %s: status %s, output:\n%s\n' "$flags" "$status" "$output"
        [ ! -e "$marker" ]
        assert_literal_or_refused "i4 mount source"
    done
    assert_no_own_leftovers
}

# bytes_dir: a directory whose name is not UTF-8 (\xff\xfe), holding a copy of the test
# image and a mount source whose name is not UTF-8 either; sets BDIR and BSRC.
bytes_dir() {
    BDIR="$BATS_TEST_TMPDIR/d"$'\xff\xfe'
    BSRC="$BDIR/src"$'\xff'
    mkdir -p "$BSRC"
    cp "$PXT_IMAGE" "$BDIR/img.sqsh"
    echo "bytes mount source" > "$BSRC/file"$'\xfe'
}

@test "mounts: paths that are not UTF-8 reach enroot byte-exact (image, mount source and target, workdir)" {
    bytes_dir
    local target=/mnt/b$'\xfe'
    # the listing is the shell's glob: BusyBox ls shows such bytes as "?"
    run_srun_stdout --container-image="$BDIR/img.sqsh" --container-mounts="$BSRC:$target" \
        --container-workdir="$target" sh -c 'pwd; printf "%s\n" *; cat ./*'
    printf 'output: %q\n' "$output"
    [ "$output" = "$target"$'\n'"file"$'\xfe'$'\n'"bytes mount source" ]
    assert_no_own_leftovers
}

@test "mounts: PYXIS_CONTAINER_IMAGE, _MOUNTS and _WORKDIR that are not UTF-8 pass through too" {
    bytes_dir
    export PYXIS_CONTAINER_IMAGE="$BDIR/img.sqsh" PYXIS_CONTAINER_MOUNTS="$BSRC:/mnt/e"$'\xff'
    export PYXIS_CONTAINER_WORKDIR=/mnt/e$'\xff'
    run_srun_stdout sh -c 'pwd; cat ./file*'
    printf 'output: %q\n' "$output"
    [ "$output" = "/mnt/e"$'\xff'$'\n'"bytes mount source" ]
    assert_no_own_leftovers
}

@test "mounts: a missing source that is not UTF-8 is named with its bytes shown as \\xNN" {
    run_srun_unchecked --container-image="$PXT_IMAGE" --container-mounts=/nonexistent$'\xff'":/mnt" true
    [ "$status" -ne 0 ]
    assert_output_contains '/nonexistent\xff'
    assert_no_own_leftovers
}
