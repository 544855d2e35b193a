"""Who serves a tool worker's task queue: asked of Temporal (DescribeTaskQueue), so a
workflow can fail a call that no worker would ever pick up instead of waiting for one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from vigil.schema import names
from vigil.schema.tool_calls import ProbeToolQueueInput, ProbeToolQueueOutput
from vigil.workflows import constants as c


class ToolQueueActivities:
    """Asks Temporal who polls a tool worker's task queue, so a workflow can fail a call
    that no worker would ever pick up instead of waiting for one."""

    def __init__(self, *, fresh: timedelta = c.TOOL_POLLER_FRESH) -> None:
        self.fresh = fresh

    def all(self) -> list[Any]:
        return [self.probe_tool_queue]

    @activity.defn(name=names.ACT_PROBE_TOOL_QUEUE)
    async def probe_tool_queue(self, arg: ProbeToolQueueInput) -> ProbeToolQueueOutput:
        client = activity.client()
        resp = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=arg.task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            )
        )
        now = datetime.now(UTC)
        alive = [
            p.identity
            for p in resp.pollers
            if not p.HasField("last_access_time")
            or now - p.last_access_time.ToDatetime(tzinfo=UTC) <= self.fresh
        ]
        return ProbeToolQueueOutput(task_queue=arg.task_queue, pollers=len(alive), identities=alive)
