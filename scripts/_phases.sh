# Phase lines for scripts/setup.sh and scripts/test.sh (sourced by them, not a command).
# A phase that takes a while announces itself ("==> mypy: ..."); every phase ends with one line
# "==> name (12 s) result", so a person watching a long run sees what runs and where the time goes.
# When RAWVAULT_PHASE_LOG names a file, each finished phase is also appended to it (test.sh prints
# them as a summary at the end).

# phase_start NAME [ANNOUNCEMENT]: start timing NAME; print "==> NAME: ANNOUNCEMENT" if given.
phase_start() {
    PHASE_NAME=$1
    PHASE_STARTED=$SECONDS
    if [ -n "${2:-}" ]; then
        echo "==> $PHASE_NAME: $2"
    fi
}

# phase_end [RESULT]: the closing line of the current phase.
phase_end() {
    local took
    took=$(human_duration $((SECONDS - PHASE_STARTED)))
    echo "==> $PHASE_NAME ($took)${1:+ $1}"
    if [ -n "${RAWVAULT_PHASE_LOG:-}" ]; then
        printf '%s|%s|%s\n' "$PHASE_NAME" "$took" "${1:-}" >>"$RAWVAULT_PHASE_LOG"
    fi
}

# human_duration SECONDS: "42 s", "3 min 05 s".
human_duration() {
    if (($1 < 60)); then
        echo "$1 s"
    else
        printf '%d min %02d s\n' $(($1 / 60)) $(($1 % 60))
    fi
}
