"""`python -m vigil.workers.cli`."""

from vigil.workers.cli import main

main()
