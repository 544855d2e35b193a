"""vigil's HTTP API (`vigil api`): FastAPI on uvicorn over the same services as the CLI."""
