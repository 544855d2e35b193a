"""History events and bytes per step, counted from recorded session histories.

Reads workflow histories saved as JSON (``tests/replay/histories/*.json``, or any
``temporal workflow show --output json``) and prints, per model step, how many history
events it added and their protobuf size, then the median per history. A step runs from the
search-attribute upsert that ends the last step to the one that ends this step, so what
happens between steps (tool calls, records, human signals) is counted with it::

    uv run python -m bench.history_per_step tests/replay/histories/tools_finish.json \\
        tests/replay/histories/folded_step.json
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from pathlib import Path

from google.protobuf import json_format
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import History, HistoryEvent

from vigil.schema import names
from vigil.workers.client import local_activity_type


def _model_call(event: HistoryEvent) -> bool:
    """Where a model step begins: its activity scheduled, or its local activity's marker
    (only the model call's: records and the agent's resolution are local activities too)."""
    if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
        attrs = event.activity_task_scheduled_event_attributes
        return attrs.activity_type.name == names.ACT_CALL_MODEL
    return local_activity_type(event) == names.ACT_CALL_MODEL


def steps(history: History) -> list[tuple[int, int]]:
    """(events, bytes) of each complete step: from one model call to the next (the last
    step up to the ending's first record, i.e. excluding the session's closing work)."""
    starts = [i for i, e in enumerate(history.events) if _model_call(e)]
    out: list[tuple[int, int]] = []
    for begin, end in itertools.pairwise(starts):
        chunk = history.events[begin:end]
        out.append((len(chunk), sum(e.ByteSize() for e in chunk)))
    return out


def load(path: Path) -> History:
    history = History()
    json_format.Parse(path.read_text(), history, ignore_unknown_fields=True)
    return history


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("histories", nargs="+", type=Path)
    args = parser.parse_args(argv)
    print(f"{'history':36} {'steps':>5} {'events/step':>12} {'bytes/step':>11}  per step")
    for path in args.histories:
        found = steps(load(path))
        if not found:
            print(f"{path.stem:36} {0:>5}")
            continue
        events = statistics.median(n for n, _ in found)
        size = statistics.median(b for _, b in found)
        detail = " ".join(f"{n}/{b}" for n, b in found)
        print(f"{path.stem:36} {len(found):>5} {events:>12.0f} {size:>11.0f}  {detail}")


if __name__ == "__main__":
    main()
