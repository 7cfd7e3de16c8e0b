#!/bin/sh
# The container's entry point. `serve` (the default): `kneel serve` configured from the environment:
#   KNEEL_MODEL       model folder (MODEL/{lc,hc}/fold_<k>/, mount it read-only) or a published model's name
#                     (default /models)
#   KNEEL_FETCH=1     with a published model's name: `kneel models fetch` it first (into $KNEEL_CACHE, mount a
#                     volume there to keep it across restarts)
#   KNEEL_HOST, KNEEL_PORT, KNEEL_DEVICE, KNEEL_PRECISION, KNEEL_MAX_ACTIVE, KNEEL_MAX_QUEUE, KNEEL_MAX_REQUEST_MB,
#   KNEEL_LOG_LEVEL   the `kneel serve` options of the same names
#   KNEEL_FORCE=1     --force (skip the knee presence decision)
#   KNEEL_SERVE_ARGS  more `kneel serve` options, word-split
# Anything else runs `kneel ARGS...` (e.g. `predict /data --model /models --out /out`); `sh` or `bash` gives a shell.
set -eu

if [ "$#" -eq 0 ] || [ "$1" = "serve" ]; then
    [ "$#" -gt 0 ] && shift
    if [ "${KNEEL_FETCH:-0}" = "1" ]; then
        kneel models fetch --quiet "${KNEEL_MODEL:-/models}"
    fi
    set -- --model "${KNEEL_MODEL:-/models}" --host "${KNEEL_HOST:-0.0.0.0}" --port "${KNEEL_PORT:-5000}" \
        --device "${KNEEL_DEVICE:-cpu}" --max-active "${KNEEL_MAX_ACTIVE:-2}" --max-queue "${KNEEL_MAX_QUEUE:-16}" "$@"
    [ -n "${KNEEL_PRECISION:-}" ] && set -- "$@" --precision "$KNEEL_PRECISION"
    [ -n "${KNEEL_MAX_REQUEST_MB:-}" ] && set -- "$@" --max-request-mb "$KNEEL_MAX_REQUEST_MB"
    [ -n "${KNEEL_LOG_LEVEL:-}" ] && set -- "$@" --log-level "$KNEEL_LOG_LEVEL"
    [ "${KNEEL_FORCE:-0}" = "1" ] && set -- "$@" --force
    # shellcheck disable=SC2086  # word-splitting is the point
    exec kneel serve "$@" ${KNEEL_SERVE_ARGS:-}
fi
case "$1" in
    sh | bash | python | python3) exec "$@" ;;
esac
exec kneel "$@"
