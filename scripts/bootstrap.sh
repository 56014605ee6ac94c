#!/usr/bin/env bash
# Create (or reuse) ./.venv with everything lumin_inferno needs. Idempotent: re-runs only when requirements change.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LUMIN_INFERNO_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.lumin_inferno_stamp"
WANT="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-nodeps.txt" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
# Two concurrent set-ups of one venv corrupt it: serialise on a lock next to it, then re-check the stamp.
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
echo "[bootstrap] setting up $VENV (first run takes a few minutes)" >&2
"$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade "pip>=23"
# 1. torch first: the CPU wheel; a bare `torch` requirement would otherwise pull a multi-GB CUDA build.
"${PIP[@]}" install "torch==2.13.0"
# 2. LUMIN and the rest, numpy kept <2 by requirements.txt.
"${PIP[@]}" install -r "$ROOT/requirements.txt"
# 3. LUMIN's undeclared import, without its heavy and conflicting requirements.
"${PIP[@]}" install --no-deps -r "$ROOT/requirements-nodeps.txt"
# 4. this package, editable.
"${PIP[@]}" install --no-deps --no-build-isolation -e "$ROOT"
echo "$WANT" > "$STAMP"
echo "[bootstrap] done" >&2
