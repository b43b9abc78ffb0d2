#!/usr/bin/env bash
# batchprof's GPU check in one command (issue 17):
#   bash scripts/gpu_check.sh OUT_DIR [--dry-run] [--only part,part]
# PYTHON names the interpreter to install into and run with (default: python3, the GPU image's
# own, with its own torch; nothing is fetched from a registry). The driver keeps the whole check
# inside 480 s; `timeout` here is the backstop if the driver itself hangs. Everything finished
# is already in OUT_DIR/gpu-check.json and gpu-check.md by then.
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT_DIR="${1:?usage: scripts/gpu_check.sh OUT_DIR [--dry-run] [--only PARTS]}"
shift
mkdir -p "$OUT_DIR"
exec timeout -k 5 490 "$PY" scripts/gpu_check.py "$OUT_DIR" "$@"
