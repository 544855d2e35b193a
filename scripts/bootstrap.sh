#!/usr/bin/env bash
# Install what vigil needs on a fresh machine: uv (from PyPI) and the locked environment.
# The Go-built binaries (Temporal CLI, MinIO) are built and cached by `vigil stack up`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
    echo "· installing uv from PyPI"
    python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
    export PATH="$HOME/.local/bin:$PATH"
fi
if ! command -v go >/dev/null 2>&1 && ! command -v temporal >/dev/null 2>&1; then
    echo "error: neither a Go toolchain nor a temporal binary is on PATH; install Go (https://go.dev/dl)" >&2
    exit 2
fi
echo "· syncing the Python environment (uv sync --frozen)"
# --compile-bytecode: installed modules compiled once here, so no process compiles them at
# start-up where Python may not write its caches (PYTHONDONTWRITEBYTECODE=1). A flag of
# the setup, not a project setting: as a setting, every `uv run` checks them all again.
uv sync --frozen --quiet --compile-bytecode
