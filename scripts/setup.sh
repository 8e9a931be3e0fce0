#!/usr/bin/env bash
# Create (or refresh) the two virtual environments from the project's own files:
#   .venv         main environment: the get3d package + torch (CPU build), DVC, Prefect, MLflow, h5py, ...
#   .venv-render  BlenderProc 2.8 on the bpy 4.2 module (its own numpy 1.26), used only by the render stage.
# Idempotent: a stamp holding the hash of the requirement files skips work when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { echo "setup: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

stamp() { cat "$@" | sha256sum | cut -d' ' -f1; }

main_hash=$(stamp pyproject.toml envs/nodeps-requirements.txt)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.stamp 2>/dev/null)" != "$main_hash" ]; then
  echo "setup: main environment (.venv)"
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  .venv/bin/python -m pip install -q --no-deps -r envs/nodeps-requirements.txt
  echo "$main_hash" > .venv/.stamp
fi

render_hash=$(stamp envs/render-requirements.txt)
if [ "${GET3D_SKIP_RENDER_ENV:-0}" != "1" ] && \
   { [ ! -x .venv-render/bin/python ] || [ "$(cat .venv-render/.stamp 2>/dev/null)" != "$render_hash" ]; }; then
  echo "setup: render environment (.venv-render: bpy 4.2 + BlenderProc 2.8, ~1.4 GB)"
  "$PY" -m venv .venv-render
  .venv-render/bin/python -m pip install -q --upgrade pip
  .venv-render/bin/python -m pip install -q -r envs/render-requirements.txt
  echo "$render_hash" > .venv-render/.stamp
fi

# No phone-home from DVC (analytics, update checks); Prefect/MLflow are silenced by get3d/offline.py + env.sh.
.venv/bin/dvc config --local core.analytics false >/dev/null 2>&1 || true
.venv/bin/dvc config --local core.check_update false >/dev/null 2>&1 || true

# Vendored JavaScript of the export gallery (@google/model-viewer; package-lock.json pins it). The page loads
# nothing from the internet: get3d.export.gallery copies dist/model-viewer-umd.min.js next to each page.
if command -v npm >/dev/null; then
  lock_hash=$(stamp package-lock.json)
  if [ ! -f node_modules/.stamp ] || [ "$(cat node_modules/.stamp)" != "$lock_hash" ]; then
    echo "setup: npm ci (gallery viewer)"
    npm ci --no-audit --no-fund --silent && echo "$lock_hash" > node_modules/.stamp
  fi
else
  echo "setup: npm not found: the export gallery needs it (apt-get install -y npm)" >&2
fi

# Headless Chromium: the gallery test opens the page offline (Debian package).
command -v chromium >/dev/null || { apt-get update && apt-get install -y chromium; } \
  || echo "setup: chromium could not be installed; the gallery browser test will skip" >&2
