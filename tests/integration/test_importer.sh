#!/bin/sh
# A pyxis importer (reference §5.11) for root_fetch.bats, configured as
# `importer=<copy of this file>`. pyxis runs it as the job user with the job
# environment (plus SLURM_JOB_UID, PYXIS_RUNTIME_PATH, PYXIS_VERSION):
#
#   test_importer.sh get URI   prints the path of a squashfs made for this step
#   test_importer.sh release   removes it; idempotent (pyxis calls it more than once)
#
# Like upstream's simple_importer.sh the file is
# $PYXIS_RUNTIME_PATH/$SLURM_JOB_UID/<job>.<step>.importer.squashfs. Knobs, read from
# the job environment so that each test sets its own:
#
#   PXT_IMPORTER_LOG=DIR       append one line per call to DIR/calls (what the tests check)
#   PXT_IMPORTER_SQUASHFS=F    copy F instead of running `enroot import`
#   PXT_IMPORTER_SLEEP=SECS    sleep after writing the file, before answering (to cancel get)
#   PXT_IMPORTER_FAIL=TEXT     get prints TEXT on stderr and exits 3
#   PXT_IMPORTER_EMPTY=1       get answers with an empty line
set -eu

# the batch step has no SLURM_STEP_ID in its environment
step="${SLURM_JOB_ID:?}.${SLURM_STEP_ID:-batch}"
out="${PYXIS_RUNTIME_PATH:?}/${SLURM_JOB_UID:?}/$step.importer.squashfs"

log() {
    if [ -n "${PXT_IMPORTER_LOG:-}" ]; then
        printf '%s\n' "$*" >> "$PXT_IMPORTER_LOG/calls"
    fi
}

case "${1-}" in
    get)
        # the process contract of §5.11/§5.20, for the tests to check
        log "get $step uri=${2-} uid=$(id -u) job_uid=$SLURM_JOB_UID stdin=$(readlink /proc/self/fd/0) version=${PYXIS_VERSION-} runtime=$PYXIS_RUNTIME_PATH"
        if [ -n "${PXT_IMPORTER_FAIL:-}" ]; then
            echo "$PXT_IMPORTER_FAIL" >&2
            exit 3
        fi
        if [ -n "${PXT_IMPORTER_EMPTY:-}" ]; then
            echo
            exit 0
        fi
        rm -f "$out"
        if [ -n "${PXT_IMPORTER_SQUASHFS:-}" ]; then
            cp "$PXT_IMPORTER_SQUASHFS" "$out"
        else
            # stdout is pyxis's answer channel: enroot's chatter goes to the log (stderr)
            enroot import --output "$out" "$2" >&2
        fi
        if [ -n "${PXT_IMPORTER_SLEEP:-}" ]; then
            log "sleeping $step"
            sleep "$PXT_IMPORTER_SLEEP"
        fi
        echo "$out"
        ;;
    release)
        if [ -e "$out" ]; then
            rm -f "$out"
            log "release $step removed"
        else
            log "release $step nothing"
        fi
        ;;
    *)
        echo "usage: $0 get URI | release" >&2
        exit 2
        ;;
esac
