#!/usr/bin/env bash
# The test command: set up, start the test stack (Temporal, PostgreSQL+pgvector, MinIO),
# run every test against it, stop the stack. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.local/bin:$PATH"
./scripts/bootstrap.sh || exit $?

export VIGIL_TEST_STATE_DIR="${VIGIL_TEST_STATE_DIR:-$PWD/.vigil-test}"
stop_stack() { uv run vigil stack down --state-dir "$VIGIL_TEST_STATE_DIR" >/dev/null 2>&1 || true; }
trap stop_stack EXIT

echo "· lint: ruff, types: mypy --strict"
uv run ruff check . || exit 1
uv run mypy || exit 1

echo "· starting the test stack (builds the Go binaries on a cold machine)"
uv run python -m tests.support.teststack || exit 3

echo "· running the tests"
uv run pytest -p no:cacheprovider "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    exit 1
fi
exit "$rc"
