#!/usr/bin/env bash
# The one test command of pyxis-rs (README and CI). As root:
#
#   tests/run-all.sh                      everything below
#   tests/run-all.sh basic.bats ...       only these integration suites (after the static checks)
#   ENROOT=/usr/local/bin/enroot tests/run-all.sh
#                                         integration suites against a real enroot instead of
#                                         the project's enroot test double
#   PXT_SKIP_STATIC=1 tests/run-all.sh    skip fmt/clippy/cargo test (quick iteration; the
#                                         plugin is then installed with make install)
#   PXT_INSTALL=deb|make                  install the built deb (default of a full run) or
#                                         use make install (default with PXT_SKIP_STATIC)
#   PXT_RELEASES="trixie sid" tests/run-all.sh
#                                         also the suites against Slurm 24.11 (trixie) and 26.05
#                                         (sid), each in its own namespaced Debian root filesystem
#                                         (tests/harness/release.sh); per-release counts at the end
#   PXT_SKIP_FUZZ=1 tests/run-all.sh      skip the short fuzzing run (tests/fuzz/run.sh)
#   PXT_SKIP_MEMCHECK=1 tests/run-all.sh  skip valgrind memcheck of the plugin (tools/memcheck.sh)
#
#   1. Debian packages (tests/harness/packages.sh), cargo fmt --check, cargo clippy --workspace --all-targets -D warnings,
#      the spank-sys bindings drift check (tools/check-bindings.sh),
#      cargo test --workspace (unit tests and the enroot double's tests),
#      the fuzz targets' seed replay and a short coverage-guided run of each
#      (tests/fuzz/run.sh --seconds ${PXT_FUZZ_SECONDS:-5}; docs/fuzzing.md)
#   2. tests/harness/packaging.sh (PXT_INSTALL=deb): the deb with dpkg-buildpackage (the
#      same cargo target dir, so the release build is done once), lintian without errors,
#      the rpm spec with rpmspec --parse and rpmbuild;
#      tests/harness/up.sh: packages, single-node Slurm, enroot, images, the plugin
#      installed from that deb (or with `make install`), plugstack.conf
#   3. make check-symbols (the exported symbols are exactly pyxis's), tools/memcheck.sh
#   4. the integration suites in tests/integration/*.bats as the unprivileged test
#      user through real srun/sbatch/salloc; config.bats and root_*.bats (they rewrite
#      plugstack.conf) as root
#   5. the multi-node stage: the cluster brought up with PXT_NODES=$PXT_MULTINODE_NODES (3)
#      namespaced nodes, multinode.bats (user) and root_multinode.bats (root) on it, then the
#      single-node cluster restored. PXT_MULTINODE_NODES=0 leaves the stage out.
#
# Prints a summary and ends with "N passed, N failed, N skipped"; exits non-zero
# on any failure, after printing the tail of the Slurm daemon logs.
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/harness/lib.sh"
need_root
if [ -z "${PXT_PREBUILT:-}" ]; then ensure_cargo; fi

RUN_LOG="$PXT_LOG/run-all"
rm -rf "$RUN_LOG"
install -d -m 0755 "$RUN_LOG"
PASS=0 FAIL=0 SKIP=0
SUMMARY=()
T0=$SECONDS

banner() { printf '\n==== %s\n' "$*"; }
record() { # STATUS NAME [DETAIL]
    case "$1" in
        pass) PASS=$((PASS + 1)) ;;
        fail) FAIL=$((FAIL + 1)) ;;
        skip) SKIP=$((SKIP + 1)) ;;
    esac
    SUMMARY+=("$(printf '%-5s %s%s' "$1" "$2" "${3:+  ($3)}")")
}

# step NAME CMD...: run CMD (output shown and kept in $RUN_LOG/NAME.log), record pass/fail
step() {
    local name="$1" t=$SECONDS rc=0; shift
    banner "$name: $*"
    (cd "$PXT_REPO" && "$@") 2>&1 | tee "$RUN_LOG/$name.log" || rc=$?
    if [ "$rc" -eq 0 ]; then record pass "$name" "$((SECONDS - t)) s"; else record fail "$name" "exit $rc, log $RUN_LOG/$name.log"; fi
    return "$rc"
}

# ---------------------------------------------------------------- 1. static checks + unit tests
# the build needs Debian packages too (libclang for bindgen, <slurm/spank.h>)
if ! "$PXT_HARNESS/packages.sh"; then
    echo "0 passed, 1 failed"
    die "installing the Debian packages failed"
fi
export PXT_PACKAGES_DONE=1
if [ -z "${PXT_SKIP_STATIC:-}" ]; then
    step fmt cargo fmt --all --check -- --color=never || true
    step clippy cargo clippy --workspace --all-targets --locked -- -D warnings || true
    step bindings "$PXT_REPO/tools/check-bindings.sh" || true
    # no dead code: the plugin built with its modules crate-private (core is public only
    # for the fuzz targets; sys::cache and sys::dirs are the node tools' API)
    step dead-code cargo rustc --lib --locked -- --cfg pyxis_private_core -D dead_code -D unused || true
    banner "cargo test --workspace"
    rc=0
    (cd "$PXT_REPO" && cargo test --workspace --locked) 2>&1 | tee "$RUN_LOG/cargo-test.log" || rc=$?
    # one summary line per test binary: "test result: ok. 12 passed; 0 failed; 1 ignored; ..."
    read -r tp tf ti < <(awk '/^test result:/ {
            for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) g += $i }
        } END { print p + 0, f + 0, g + 0 }' "$RUN_LOG/cargo-test.log")
    PASS=$((PASS + tp)); FAIL=$((FAIL + tf)); SKIP=$((SKIP + ti))
    grep -E '^test .* FAILED$' "$RUN_LOG/cargo-test.log" | sed 's/^/        cargo /' >> "$RUN_LOG/failed-tests.txt" || true
    if [ "$rc" -ne 0 ] && [ "$tf" -eq 0 ]; then
        FAIL=$((FAIL + 1))   # did not build or a test binary crashed: count it once
        SUMMARY+=("fail  cargo test  (exit $rc without a failed test: build error? log $RUN_LOG/cargo-test.log)")
    else
        SUMMARY+=("$( [ "$rc" -eq 0 ] && echo pass || echo fail)  cargo test  ($tp passed, $tf failed, $ti ignored)")
    fi
else
    SUMMARY+=("skip  fmt, clippy, cargo test  (PXT_SKIP_STATIC set)")
fi
if [ -z "${PXT_SKIP_FUZZ:-}" ]; then
    # the committed seeds and findings through every target, then a few seconds of afl each
    step fuzz-replay bash -c 'cd tests/fuzz && cargo test --release --locked' || true
    step fuzz bash tests/fuzz/run.sh --seconds "${PXT_FUZZ_SECONDS:-5}" || true
else
    SUMMARY+=("skip  fuzz  (PXT_SKIP_FUZZ set)")
fi

# ---------------------------------------------------------------- 2. test environment
if [ -z "${PXT_INSTALL:-}" ]; then
    if [ -z "${PXT_SKIP_STATIC:-}" ]; then PXT_INSTALL=deb; else PXT_INSTALL=make; fi
fi
export PXT_INSTALL
if [ "$PXT_INSTALL" = deb ]; then
    if ! step packaging "$PXT_HARNESS/packaging.sh"; then
        warn "the packages did not build: the suites run against make install instead"
        PXT_INSTALL=make
    fi
fi
up_ok=1
step harness-up "$PXT_HARNESS/up.sh" || up_ok=

# ---------------------------------------------------------------- 3. exported symbols
if [ -n "$up_ok" ]; then
    step check-symbols make check-symbols || true
fi
# valgrind memcheck of srun's option parsing and of whole steps (docs/memcheck.md)
if [ -n "$up_ok" ] && [ -z "${PXT_SKIP_MEMCHECK:-}" ]; then
    step memcheck tools/memcheck.sh || true
elif [ -n "${PXT_SKIP_MEMCHECK:-}" ]; then
    SUMMARY+=("skip  memcheck  (PXT_SKIP_MEMCHECK set)")
fi

# ---------------------------------------------------------------- 4. integration suites
# bats_suite NAME AS_USER(yes|no) FILE...: run bats (TAP) and count its results
bats_suite() {
    local name="$1" as="$2" rc=0 tap="$RUN_LOG/bats-$1.tap"; shift 2
    banner "integration suite $name ($*) as $([ "$as" = yes ] && echo "$PXT_USER" || echo root)"
    if [ "$as" = yes ]; then
        PXT_USER_CWD="$SUITE_DIR" PXT_PASS_ENV="PXT_CMD_TIMEOUT BATS_TEST_TIMEOUT" \
            as_user timeout 1800 bats --tap "$@" 2>&1 | tee "$tap" || rc=$?
    else
        (cd "$SUITE_DIR" && env PATH="$PXT_DAEMON_PATH" timeout 900 bats --tap "$@") 2>&1 | tee "$tap" || rc=$?
    fi
    local p f s
    p=$(grep -E '^ok [0-9]+ ' "$tap" | grep -vEc '^ok [0-9]+ .*# skip' || true)
    s=$(grep -Ec '^ok [0-9]+ .*# skip' "$tap" || true)
    f=$(grep -Ec '^not ok [0-9]+ ' "$tap" || true)
    PASS=$((PASS + p)); FAIL=$((FAIL + f)); SKIP=$((SKIP + s))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        FAIL=$((FAIL + 1))
        SUMMARY+=("fail  bats $name  (exit $rc without a failed test: bats itself failed or timed out; $tap)")
    else
        SUMMARY+=("$( [ "$f" -eq 0 ] && [ "$rc" -eq 0 ] && echo pass || echo fail)  bats $name  ($p passed, $f failed, $s skipped)")
    fi
    grep -E '^not ok ' "$tap" | sed 's/^/        /' >> "$RUN_LOG/failed-tests.txt" || true
}

if [ -n "$up_ok" ]; then
    # the test user must be able to read the suites: copy them out of the repository
    # (which may live under a directory only root can enter) into a world-readable place
    SUITE_DIR=$(mktemp -d /tmp/pyxis-rs-suites.XXXXXX)
    trap 'rm -rf "$SUITE_DIR"' EXIT
    cp -r "$PXT_REPO/tests/integration/." "$SUITE_DIR/"
    chmod -R a+rX "$SUITE_DIR"
    # jobs left by an interrupted earlier run would hold CPUs and confuse the suites
    if [ -n "$(squeue -h -u "$PXT_USER" -o %i)" ]; then
        warn "cancelling leftover jobs of $PXT_USER: $(squeue -h -u "$PXT_USER" -o %i | tr '\n' ' ')"
        scancel -u "$PXT_USER" || true
        sleep 2
    fi
    # suites that rewrite plugstack.conf run as root: config.bats and root_*.bats;
    # *multinode*.bats need the multi-node cluster: they run in stage 5
    is_root_suite() { case "$1" in config.bats | root_*.bats | docs.bats) return 0 ;; *) return 1 ;; esac; }
    is_mn_suite() { case "$1" in *multinode*.bats) return 0 ;; *) return 1 ;; esac; }
    suites=() user_suites=() root_suites=() mn_user_suites=() mn_root_suites=()
    if [ $# -gt 0 ]; then
        for f in "$@"; do
            f=$(basename "$f")
            [ -f "$SUITE_DIR/$f" ] || die "no suite tests/integration/$f"
            suites+=("$f")
        done
    else
        for f in "$SUITE_DIR"/*.bats; do suites+=("$(basename "$f")"); done
    fi
    for f in "${suites[@]}"; do
        if is_mn_suite "$f"; then
            if is_root_suite "$f"; then mn_root_suites+=("$f"); else mn_user_suites+=("$f"); fi
        elif is_root_suite "$f"; then root_suites+=("$f"); else user_suites+=("$f"); fi
    done
    if [ "${#user_suites[@]}" -gt 0 ]; then bats_suite user yes "${user_suites[@]}"; fi
    if [ "${#root_suites[@]}" -gt 0 ]; then bats_suite root no "${root_suites[@]}"; fi

    # ------------------------------------------------------------ 5. multi-node stage
    : "${PXT_MULTINODE_NODES:=3}"
    if [ $((${#mn_user_suites[@]} + ${#mn_root_suites[@]})) -gt 0 ]; then
        if [ "$PXT_MULTINODE_NODES" = 0 ]; then
            record skip "multi-node stage" "PXT_MULTINODE_NODES=0"
        elif PXT_NODES=$PXT_MULTINODE_NODES step harness-multinode "$PXT_HARNESS/up.sh"; then
            if [ "${#mn_user_suites[@]}" -gt 0 ]; then bats_suite multinode yes "${mn_user_suites[@]}"; fi
            if [ "${#mn_root_suites[@]}" -gt 0 ]; then bats_suite multinode-root no "${mn_root_suites[@]}"; fi
        fi
        # later stages and other users of this host expect the single-node cluster
        PXT_NODES=1 step harness-single-node "$PXT_HARNESS/up.sh" || true
    fi
else
    record fail "integration suites" "not run: the test environment did not come up"
fi

# ---------------------------------------------------------------- 5. other Slurm releases
# PXT_RELEASES="trixie sid": the same suites again against Debian trixie's Slurm 24.11 and
# sid's 26.05, each in a cached Debian root filesystem started in its own namespaces
# (tests/harness/release.sh); their counts are added to the totals and listed per release.
HOST_REL="$(. /etc/os-release && echo "${VERSION_CODENAME:-host}") (Slurm $("$PXT_REPO/tools/slurm-release.sh" 2>/dev/null || echo '?'))"
REL_LINES=("$(printf '%-28s %s passed, %s failed, %s skipped' "$HOST_REL" "$PASS" "$FAIL" "$SKIP")")
for rel in ${PXT_RELEASES:-}; do
    rc=0 t=$SECONDS
    banner "Slurm release $rel: tests/harness/release.sh $rel $*"
    "$PXT_HARNESS/release.sh" "$rel" "$@" 2>&1 | tee "$RUN_LOG/release-$rel.log" || rc=$?
    read -r rp rf rs < <(awk '/^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$/ {p = $1; f = $3; s = $5}
        END {print p + 0, f + 0, s + 0}' "$RUN_LOG/release-$rel.log")
    PASS=$((PASS + rp)); FAIL=$((FAIL + rf)); SKIP=$((SKIP + rs))
    rroot="${PXT_RELEASE_CACHE:-/var/cache/pyxis-rs}/$rel"
    rname="$rel (Slurm $(SLURM_INCLUDE_DIR="$rroot/usr/include" "$PXT_REPO/tools/slurm-release.sh" 2>/dev/null || echo '?'))"
    if [ "$rc" -ne 0 ] && [ "$rf" -eq 0 ]; then
        FAIL=$((FAIL + 1)); rf=1
        SUMMARY+=("fail  release $rname  (exit $rc without a failed test: setup or timeout; $RUN_LOG/release-$rel.log)")
    else
        SUMMARY+=("$( [ "$rc" -eq 0 ] && echo pass || echo fail)  release $rname  ($rp passed, $rf failed, $rs skipped, $((SECONDS - t)) s)")
    fi
    REL_LINES+=("$(printf '%-28s %s passed, %s failed, %s skipped' "$rname" "$rp" "$rf" "$rs")")
    if [ -s "$rroot$PXT_LOG/run-all/failed-tests.txt" ]; then
        sed "s/^/  [$rel] /" "$rroot$PXT_LOG/run-all/failed-tests.txt" >> "$RUN_LOG/failed-tests.txt"
    fi
done

# ---------------------------------------------------------------- summary
banner "summary ($((SECONDS - T0)) s, enroot: $(cat "$PXT_STATE/enroot-kind" 2>/dev/null || echo 'not set up'))"
printf '  %s\n' "${SUMMARY[@]}"
if [ -n "${PXT_RELEASES:-}" ]; then
    echo "  per Slurm release:"
    printf '    %s\n' "${REL_LINES[@]}"
fi
if [ -s "$RUN_LOG/failed-tests.txt" ]; then
    echo "  failed tests:"
    cat "$RUN_LOG/failed-tests.txt"
fi
if [ "$FAIL" -ne 0 ]; then
    for l in /var/log/slurm/slurmd.log /var/log/slurm/slurmd-node*.log /var/log/slurm/slurmctld.log; do
        if [ -r "$l" ]; then banner "tail -n 40 $l"; tail -n 40 "$l"; fi
    done
fi
echo "logs: $RUN_LOG"
echo
echo "${PASS} passed, ${FAIL} failed, ${SKIP} skipped"
[ "$FAIL" -eq 0 ]
