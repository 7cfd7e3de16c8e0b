#!/usr/bin/env bash
# Build the CPU image here and check it end to end (`make container-test`; tests/test_container_image.py runs it
# when KNEEL_CONTAINER_TEST=1).
#
# No registry can be reached from CI, so the Dockerfile's base image is built locally: a minimal Debian bookworm root
# file system (debootstrap from Debian's mirror: python3 3.11, python3-venv, ca-certificates) imported into podman
# and passed as BASE_IMAGE; torch comes from the CPU wheel on disk (docker/wheels/), everything else from PyPI. The
# same docker/Dockerfile builds users' images on python:3.11-slim.
#
# Then: a tiny random-weight model (mounted read-only) and one synthetic DICOM; `kneel serve` in the container with
# the port from the environment; /health and the image's HEALTHCHECK; the DICOM posted to /v1/predict and
# /kneel/predict/bilateral; `kneel predict` in the container on a mounted folder; all compared with `kneel predict`
# run outside the container (docker/ci_check.py).
#
# Needs root, podman and runc (installed with apt-get when missing), debootstrap the first time. Podman's state goes
# to $KNEEL_CONTAINER_STATE (default /var/tmp/kneel-container): the base image is built once and kept there.
# Environment: PYTHON (default .venv/bin/python), KNEEL_IMAGE, KNEEL_BASE_IMAGE, TORCH_WHEEL, DEBIAN_MIRROR, HOST_CA_BUNDLE,
# KNEEL_CONTAINER_NO_CACHE=1 (rebuild every layer), KNEEL_REBUILD_BASE=1 (rebuild the base too).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${KNEEL_CONTAINER_STATE:-/var/tmp/kneel-container}
PY=${PYTHON:-$ROOT/.venv/bin/python}
KNEEL=$(dirname "$PY")/kneel
IMAGE=${KNEEL_IMAGE:-localhost/kneel:cpu-ci}
BASE=${KNEEL_BASE_IMAGE:-localhost/kneel-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HOST_CA=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
NAME=kneel-ci-$$
T0=$(date +%s)

say() { printf '[container-test %4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { say "FAIL: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (podman with runc and cgroupfs as set up here)"
if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
    say "installing podman and runc with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman runc \
        >/dev/null
fi

# --- podman set-up: what works on these machines (runc, cgroupfs, no default ulimits), state outside the repo ---
mkdir -p "$STATE/conf"
cat >"$STATE/conf/containers.conf" <<CONF
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
CONF
cat >"$STATE/conf/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$STATE/storage"
runroot = "$STATE/run"
CONF
export CONTAINERS_CONF=$STATE/conf/containers.conf CONTAINERS_STORAGE_CONF=$STATE/conf/storage.conf

# --- the local base image (cached) ---
if [ "${KNEEL_REBUILD_BASE:-0}" = "1" ] || ! podman image exists "$BASE"; then
    command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    say "building the base image $BASE with debootstrap from $MIRROR"
    rootfs=$STATE/rootfs
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$MIRROR" \
        >"$STATE/debootstrap.log" 2>&1 || { tail -20 "$STATE/debootstrap.log"; die "debootstrap failed"; }
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
    # This machine's CA bundle (a superset of Debian's; here it also holds the TLS proxy's CA in front of PyPI), and
    # pip told to use it (pip trusts its own certifi bundle otherwise).
    cp "$HOST_CA" "$rootfs/etc/ssl/certs/ca-certificates.crt"
    tar -C "$rootfs" --numeric-owner -c . | podman import --change 'CMD ["/bin/bash"]' \
        --change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt" - "$BASE" >/dev/null
    rm -rf "$rootfs"
    say "base image built"
else
    say "base image $BASE cached"
fi

# --- the CPU image, torch from the wheel on disk ---
TORCH_WHEEL=${TORCH_WHEEL:-$(ls /opt/wheels/torch-*+cpu-cp311-*.whl 2>/dev/null | sort -V | tail -1)}
[ -f "$TORCH_WHEEL" ] || die "no torch CPU wheel for Python 3.11 found (set TORCH_WHEEL)"
WORK=$(mktemp -d /var/tmp/kneel-container-test.XXXXXX)
cleanup() {
    podman rm -f -t 5 "$NAME" >/dev/null 2>&1 || true
    rm -f "$ROOT/docker/wheels/$(basename "$TORCH_WHEEL")"
    rm -rf "$WORK"
}
trap cleanup EXIT
cp "$TORCH_WHEEL" "$ROOT/docker/wheels/"
old_id=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
no_cache=()
[ "${KNEEL_CONTAINER_NO_CACHE:-0}" = "1" ] && no_cache=(--no-cache)
say "building $IMAGE (base $BASE, torch $(basename "$TORCH_WHEEL"))"
t_build=$(date +%s)
podman build --pull=never --format docker --network host "${no_cache[@]}" -f "$ROOT/docker/Dockerfile" \
    --build-arg BASE_IMAGE="$BASE" -t "$IMAGE" "$ROOT" >"$STATE/build.log" 2>&1 \
    || { tail -30 "$STATE/build.log"; die "podman build failed (log: $STATE/build.log)"; }
new_id=$(podman image inspect --format '{{.Id}}' "$IMAGE")
[ -n "$old_id" ] && [ "$old_id" != "$new_id" ] && podman rmi "$old_id" >/dev/null 2>&1 || true
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
say "image built in $(($(date +%s) - t_build)) s: $IMAGE, $((size / 1000000)) MB"
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
[ "$user" = "kneel" ] || die "the image runs as '$user', not the non-root user kneel"
podman image inspect --format '{{.Config.Healthcheck}}' "$IMAGE" | grep -q /health || die "no HEALTHCHECK on /health"

# --- inputs: a tiny model, one synthetic DICOM, kneel predict outside the container ---
"$PY" "$ROOT/docker/ci_check.py" make-model "$WORK/model"
"$KNEEL" synth --out "$WORK/data" --n 1 --seed 0 --layout flat --no-progress >/dev/null
dicom=$(find "$WORK/data" -name '*.dcm' | head -1)
[ -n "$dicom" ] || die "kneel synth wrote no DICOM"
mkdir -p "$WORK/films" && cp "$dicom" "$WORK/films/"
"$KNEEL" predict "$dicom" --model "$WORK/model" --out "$WORK/outside" --force --knees both --workers 0 --quiet
mkdir -p "$WORK/inside" && chmod -R a+rX "$WORK" && chmod a+rwx "$WORK/inside"

# --- kneel serve in the container: model read-only, port from the environment, host network ---
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
say "starting kneel serve in the container on port $port"
# No systemd here to time the HEALTHCHECK (podman logs "unable to get systemd connection to add healthchecks": harmless);
# `podman healthcheck run` below runs the image's check once instead.
podman run -d --name "$NAME" --network host -e KNEEL_PORT="$port" -e KNEEL_FORCE=1 -e KNEEL_MAX_ACTIVE=1 \
    -v "$WORK/model:/models:ro" "$IMAGE" >/dev/null
url=http://127.0.0.1:$port
for _ in $(seq 1 180); do
    curl -fsS "$url/health" >/dev/null 2>&1 && break
    [ "$(podman inspect --format '{{.State.Running}}' "$NAME")" = "true" ] || { podman logs "$NAME"; die "the server exited"; }
    sleep 1
done
curl -fsS "$url/health" >/dev/null || { podman logs "$NAME" | tail -20; die "/health did not answer within 180 s"; }
say "/health answers: $(curl -fsS "$url/health" | head -c 200)"
podman healthcheck run "$NAME" >/dev/null || die "the image's HEALTHCHECK failed"
say "HEALTHCHECK healthy; posting the DICOM to both endpoints"

# --- kneel predict in the container on a mounted folder ---
podman run --rm --network none -v "$WORK/model:/models:ro" -v "$WORK/films:/data:ro" -v "$WORK/inside:/out" "$IMAGE" \
    predict /data --model /models --out /out --force --knees both --workers 0 --quiet >/dev/null

"$PY" "$ROOT/docker/ci_check.py" compare --dicom "$dicom" --expected "$WORK/outside/landmarks.csv" --url "$url" \
    --container-table "$WORK/inside/landmarks.csv" || { podman logs "$NAME" | tail -20; die "landmarks differ"; }
say "PASS in $(($(date +%s) - T0)) s (image $IMAGE, $((size / 1000000)) MB)"
