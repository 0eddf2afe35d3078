#!/usr/bin/env bash
# Coverage-guided fuzzing of pyxis-rs's parsers with AFL++ through cargo-afl (docs/fuzzing.md).
#
#   tests/fuzz/run.sh --seconds N [--execs M] [--out DIR] [target...]
#
# Builds the targets with `cargo afl build --release`, then fuzzes each target (all of
# them by default) for N seconds, one after the other, stopping a target early once it
# reached M executions (if given). Starts from the committed seeds in
# tests/fuzz/seeds/<target> and from the findings in tests/fuzz/findings/<target>.
# Prints one line per target: executions, executions per second, corpus size, crashes
# and hangs; copies every crash to DIR/<target>/crashes (default
# tests/fuzz/out, not committed) and exits non-zero if any target crashed or hung.
# Ends with "N passed, N failed". Installs cargo-afl from crates.io (and builds AFL++)
# when it is missing. Set PXT_FUZZ_NICE=19 to run at low priority.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ALL=(args pyxis_env mount config image list envfilter conf_script digest edf)
seconds=10 execs="" out="$here/out" targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --execs) execs="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
        -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")
for t in "${targets[@]}"; do
    [ -d "$here/seeds/$t" ] || { echo "run.sh: no target $t (seeds/$t missing)" >&2; exit 2; }
done
nice_cmd=(nice -n "${PXT_FUZZ_NICE:-0}")

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! cargo afl --version >/dev/null 2>&1; then
    echo "run.sh: installing cargo-afl (crates.io)"
    "${nice_cmd[@]}" cargo install --locked cargo-afl --version '^0.18'
fi
# `cargo afl config --build` compiles AFL++ once per Rust toolchain and refuses to
# do it again ("already built")
if ! cfg_log=$("${nice_cmd[@]}" cargo afl config --build 2>&1) && ! grep -q 'already built' <<<"$cfg_log"; then
    echo "run.sh: building AFL++ (cargo afl config --build) failed:" >&2
    tail -n 20 <<<"$cfg_log" >&2
    exit 1
fi

cd "$here"
"${nice_cmd[@]}" cargo afl build --release --locked --features afl --bins

# afl-fuzz refuses to start on a machine tuned for neither it nor CI; these only
# silence checks of the host (core_pattern, CPU governor), not of the target
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
export AFL_NO_UI=1 AFL_QUIET=1 AFL_SKIP_CRASHES=1 AFL_NO_STARTUP_CALIBRATION=1
pass=0 fail=0
for t in "${targets[@]}"; do
    work=$(mktemp -d "/tmp/pyxis-fuzz-$t.XXXXXX")
    mkdir -p "$work/in"
    cp "$here/seeds/$t/"* "$work/in/"
    if [ -d "$here/findings/$t" ]; then cp "$here/findings/$t/"* "$work/in/" 2>/dev/null || true; fi
    args=(-i "$work/in" -o "$work/out" -V "$seconds" -t 1000 -m none)
    [ -z "$execs" ] || args+=(-E "$execs")
    rc=0
    "${nice_cmd[@]}" cargo afl fuzz "${args[@]}" -- "$here/target/release/$t" > "$work/afl.log" 2>&1 || rc=$?
    stats="$work/out/default/fuzzer_stats"
    if [ ! -f "$stats" ]; then
        echo "FAIL $t: afl-fuzz did not start (exit $rc); its log:"
        tail -n 20 "$work/afl.log"
        fail=$((fail + 1)); continue
    fi
    stat() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
    crashes=$(stat saved_crashes) hangs=$(stat saved_hangs)
    line=$(printf '%-12s %12s execs %8s/s  corpus %5s  crashes %s  hangs %s  (%s s)' \
        "$t" "$(stat execs_done)" "$(stat execs_per_sec)" "$(stat corpus_count)" \
        "$crashes" "$hangs" "$(stat run_time)")
    if [ "${crashes:-0}" -eq 0 ] && [ "${hangs:-0}" -eq 0 ]; then
        echo "ok   $line"; pass=$((pass + 1))
    else
        mkdir -p "$out/$t"
        cp -r "$work/out/default/crashes" "$work/out/default/hangs" "$out/$t/"
        echo "FAIL $line  -> $out/$t"; fail=$((fail + 1))
    fi
    rm -rf "$work"
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
