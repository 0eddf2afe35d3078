#!/usr/bin/env bats
# Environment definition files (issue 8 item 2, src/core/edf, src/sys/edf.rs):
# `--environment=NAME|PATH` and PYXIS_ENVIRONMENT give the step the file's image,
# mounts, working directory and [env] (with ${VAR} from the job's environment and
# base_environment inheritance); command-line options override the file; mistakes are
# reported once, with file, line and key, before any job starts.

load common

setup() {
    [ -r "$PXT_IMAGE" ] || skip "no test image $PXT_IMAGE (run tests/harness/up.sh)"
    [ -n "${HOME-}" ] && [ -w "$HOME" ] || skip "no writable HOME for ~/.edf"
    mkdir -p "$HOME/.edf"
    NAME="i3-edf-$$-$RANDOM"
    EDF="$HOME/.edf/$NAME.toml"
    BASE="$HOME/.edf/$NAME-base.toml"
    DATA="$BATS_TEST_TMPDIR/data"
    mkdir -p "$DATA"
    echo "hello from the host" > "$DATA/hello"
    chmod -R a+rX "$BATS_TEST_TMPDIR"
    cat > "$BASE" <<EOT
image = "$PXT_IMAGE"
mounts = ["$DATA:/mnt/edf:ro"]
[env]
EDF_BASE = "base"
EDF_VAR = "overridden"
EOT
    cat > "$EDF" <<EOT
base_environment = "$NAME-base"
workdir = "/mnt/edf"
[env]
EDF_VAR = "from-\${USER}"
EOT
}

teardown() {
    rm -f "${EDF-}" "${BASE-}"
    release_jobs
}

@test "edf: srun --environment=NAME runs with the file's image, mounts, workdir and env" {
    # shellcheck disable=SC2016  # expanded inside the container
    run_srun --environment="$NAME" sh -c 'grep PRETTY /etc/os-release; echo "pwd=$(pwd)"; cat hello; echo "var=$EDF_VAR base=$EDF_BASE"'
    assert_output_contains "$PXT_PRETTY"
    assert_output_contains "pwd=/mnt/edf"
    assert_output_contains "hello from the host"
    assert_output_contains "var=from-$(id -un) base=base"
}

@test "edf: command-line options override the file, mounts and env merge" {
    mkdir -p "$BATS_TEST_TMPDIR/more"
    echo more > "$BATS_TEST_TMPDIR/more/m"
    # shellcheck disable=SC2016  # expanded inside the container
    run_srun --environment="$NAME" --container-workdir=/ --container-mounts="$BATS_TEST_TMPDIR/more:/mnt/more" \
        sh -c 'echo "pwd=$(pwd)"; cat /mnt/edf/hello /mnt/more/m; echo "var=$EDF_VAR"'
    assert_output_contains "pwd=/"
    refute_output_contains "pwd=/mnt"
    assert_output_contains "hello from the host"
    assert_output_contains "more"
    assert_output_contains "var=from-$(id -un)"
}

@test "edf: PYXIS_ENVIRONMENT=PATH works like the option, and sbatch takes --environment" {
    # shellcheck disable=SC2016  # expanded inside the container
    PYXIS_ENVIRONMENT="$EDF" run_srun sh -c 'cat /mnt/edf/hello'
    assert_output_contains "hello from the host"
    run_sbatch --environment="$NAME" --wrap 'grep PRETTY /etc/os-release; pwd'
    assert_output_contains "$PXT_PRETTY"
    assert_output_contains "/mnt/edf"
}

@test "edf: an unknown key is reported once with file, line and key, before any job" {
    printf 'image = "%s"\nimgae = "typo"\n' "$PXT_IMAGE" > "$EDF"
    run_srun_unchecked --environment="$NAME" true
    assert_failure_with "pyxis: --environment: $EDF:2: imgae: unknown field \`imgae\`"
    [ "$(grep -cF -- "--environment: $EDF:2" <<< "$output")" -eq 1 ]
}

@test "edf: a type error and a missing file name the file, line and key" {
    printf 'image = "%s"\n\nwritable = "yes"\n' "$PXT_IMAGE" > "$EDF"
    run_srun_unchecked --environment="$NAME" true
    assert_failure_with "--environment: $EDF:3: writable: invalid type"
    run_srun_unchecked --environment="i3-no-such-env-$$" true
    assert_failure_with "--environment: i3-no-such-env-$$: no such environment file (searched $HOME/.edf/i3-no-such-env-$$.toml"
}
