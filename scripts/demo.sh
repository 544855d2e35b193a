#!/usr/bin/env bash
# The main job: set up, start the embedded stack, and run a demo agent session that stops
# for a human approval, gets it, finishes, and prints its transcript.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.local/bin:$PATH"
./scripts/bootstrap.sh
uv run vigil stack up
uv run vigil demo "$@"
