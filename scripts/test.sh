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

# Exit code 5 (nothing collected) is a failure, never a silent pass.
run_pytest() {
    uv run pytest -p no:cacheprovider "$@"
    local rc=$?
    if [ "$rc" -eq 5 ]; then
        echo "error: pytest collected no tests ($*)" >&2
        return 1
    fi
    return "$rc"
}

if [ "$#" -gt 0 ]; then
    echo "· running the tests: $*"
    run_pytest "$@"
    exit $?
fi

# Independent modules run in parallel (each xdist worker has its own database; task
# queues are per test), then the few that stop a part of the shared stack run alone.
WORKERS="${VIGIL_TEST_WORKERS:-2}"
echo "· running the tests: $WORKERS in parallel, then the disruptive ones alone"
run_pytest -n "$WORKERS" --dist loadfile -m "not disruptive"
rc_parallel=$?
run_pytest -m disruptive
rc_alone=$?
if [ "$rc_parallel" -ne 0 ]; then exit "$rc_parallel"; fi
exit "$rc_alone"
