"""Is anyone there? Whether Temporal answers and whether a worker polls a session's task
queue, told in one whole line that says what to run.

A session whose task queue has no poller never moves: its record row is not written, its
updates and queries wait for a worker that is not coming. Temporal knows who polls a queue
(DescribeTaskQueue), so vigil asks before it waits, instead of waiting in the dark.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shlex
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from vigil.workers.settings import Settings

POLLER_FRESH = timedelta(minutes=2)
"""A live worker renews its long poll about once a minute; Temporal keeps listing a poller
for minutes after its worker died, so older ones are not counted."""

STILL_POLLING_SECONDS = 3.0
"""How long `vigil stack down` asks Temporal which workers still poll."""

POLLER_GRACE_SECONDS = 3.0
"""How long a control asks again for a worker before it says none polls: a restarted
Temporal server lists none until its workers poll again, a second or two after it is back."""

CONTROL_WAIT_SECONDS = 30.0
"""How long a control (update) or a query waits for a session whose queue has a worker."""

_UNREACHABLE = (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED)


def temporal_down(address: str) -> str:
    """The one line said when Temporal does not answer."""
    return (
        f"Temporal at {address} is not answering; start it with `vigil stack up` "
        "(or check TEMPORAL_ADDRESS)"
    )


def is_unreachable(exc: BaseException) -> bool:
    """An error that means Temporal is not there (as opposed to Temporal saying no).

    The client connects on first use, and a failed connect is a RuntimeError from the core
    SDK ("Failed client connect: ..."); a dropped connection is UNAVAILABLE."""
    if isinstance(exc, RPCError):
        return exc.status in _UNREACHABLE
    return isinstance(exc, RuntimeError) and str(exc).startswith("Failed client connect")


def worker_command(task_queue: str, default_queue: str) -> str:
    """The command that starts a worker polling ``task_queue``."""
    if task_queue == default_queue:
        return "vigil worker"
    return f"vigil worker --task-queue {shlex.quote(task_queue)}"


def no_worker(task_queue: str, default_queue: str, *, what: str) -> str:
    """The one line said when no worker polls ``task_queue``; ``what`` says what waits."""
    return (
        f"no worker is polling task queue {task_queue!r}, so {what}; "
        f"start one with `{worker_command(task_queue, default_queue)}`"
    )


TOOLS_MARK = " tools:"
"""What a worker's identity adds to ``pid@host``: a digest of the tools it loaded."""


def worker_identity(tools: Iterable[str]) -> str:
    """A worker's Temporal identity: ``pid@host`` (the SDK's default) and a short digest
    of the names of the tools it loaded, so that workers of one queue that load different
    tools can be told apart (a call goes to any worker of its queue)."""
    digest = hashlib.sha256("\n".join(sorted(tools)).encode()).hexdigest()[:8]
    return f"{os.getpid()}@{socket.gethostname()}{TOOLS_MARK}{digest}"


def split_identity(identity: str) -> tuple[str, str | None]:
    """(``pid@host``, the tools' digest or None) of a poller's identity."""
    who, mark, tools = identity.partition(TOOLS_MARK)
    return who, (tools or None) if mark else None


@dataclass(frozen=True)
class Poller:
    identity: str
    seen: datetime | None
    """When Temporal last heard its poll (None: it does not say)."""


async def pollers(client: Client, task_queue: str) -> list[Poller]:
    """The workers polling ``task_queue`` for workflow tasks right now."""
    resp = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    since = datetime.now(UTC) - POLLER_FRESH
    found = [
        Poller(
            p.identity,
            p.last_access_time.ToDatetime(tzinfo=UTC) if p.HasField("last_access_time") else None,
        )
        for p in resp.pollers
    ]
    return [p for p in found if p.seen is None or p.seen >= since]


async def live_pollers(client: Client, task_queue: str) -> list[str]:
    """Identities of the workers polling ``task_queue`` for workflow tasks right now."""
    return [p.identity for p in await pollers(client, task_queue)]


def gone_here(identity: str) -> bool:
    """Whether a poller's identity (``pid@host``, the SDK's default, and vigil's tools
    digest) names a process of this host that no longer runs: Temporal keeps listing a
    worker for a while after it stopped. Asked only where the worker is known to share
    this host's processes (``stack down`` of the embedded stack): a container sharing the
    host's name but not its processes would read as gone."""
    pid, at, host = split_identity(identity)[0].partition("@")
    if not at or host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it runs, as another user's process
        return False
    return False


def still_polling(settings: Settings) -> list[str] | None:
    """Who polls ``settings``' task queue right now (as ``live_pollers``, less the workers
    of this host that are gone), asked in a few seconds at most; None when Temporal does
    not answer (called from sync code)."""
    from vigil.workers.temporal import connect

    async def ask() -> list[str]:
        async with asyncio.timeout(STILL_POLLING_SECONDS):
            client = await connect(settings)
            found = await live_pollers(client, settings.task_queue)
            return [split_identity(i)[0] for i in found if not gone_here(i)]

    try:
        return asyncio.run(ask())
    except Exception:  # advisory: whatever keeps the question from an answer, none
        return None
