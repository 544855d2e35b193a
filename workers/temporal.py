"""The one place that wires Temporal for both the worker and the client.

Data converter, workflow runner, failure types and search attributes all live here,
so a worker and a client can never disagree on how payloads look.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from temporalio.api.common.v1 import Payload as TemporalPayload
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    EncodingPayloadConverter,
)

from vigil.schema.names import SEARCH_ATTRIBUTES, UNDECRYPTABLE_ENCODING, UNDECRYPTABLE_REASON
from vigil.workers.codec import ENCODING as ENCRYPTED_ENCODING
from vigil.workers.codec import payload_codec
from vigil.workers.settings import Settings
from vigil.workers.telemetry import client_interceptors

if TYPE_CHECKING:
    # The worker and its sandbox are imported by the functions that build them: a client
    # (every CLI command) never needs them.
    from temporalio.runtime import Runtime
    from temporalio.worker import Worker, WorkerDeploymentConfig, WorkflowRunner

# Modules handed to the workflow sandbox as they are instead of being re-imported per run.
PASSTHROUGH_MODULES = (
    "pydantic",  # payload models: pure data, importing it again per workflow is slow
    "pydantic_core",  # pydantic's compiled core
    "annotated_types",  # pydantic field constraints
    "vigil.schema",  # vigil's payload models and names; imports no I/O library
    "re2",  # linear-time patterns of tool schemas (vigil.schema.patterns): compiled code
)

SDK_POLLERS = 5
"""temporalio's default number of concurrent polls per task kind."""


class PayloadUnreadable(ValueError):
    """A payload this process cannot read: encrypted with a key it does not have, or
    encrypted while it has no payload keys at all."""


class UndecryptablePayloadConverter(EncodingPayloadConverter):
    """The codec's stand-in for a payload it could not decrypt (``binary/undecryptable``,
    workers/codec.py): never written, and read as no value at all: whoever needs the value
    gets the reason as a ValueError (a control signal or update: refused as malformed)."""

    @property
    def encoding(self) -> str:
        return UNDECRYPTABLE_ENCODING.decode()

    def to_payload(self, value: Any) -> TemporalPayload | None:
        return None

    def from_payload(self, payload: TemporalPayload, type_hint: type | None = None) -> Any:
        reason = payload.metadata.get(UNDECRYPTABLE_REASON, b"").decode(errors="replace")
        raise PayloadUnreadable(f"payload could not be decrypted: {reason or 'no reason given'}")


class EncryptedPayloadConverter(UndecryptablePayloadConverter):
    """An encrypted payload that reached the converter still sealed: this process has no
    payload keys (no codec ran). Read as no value at all, with the reason."""

    @property
    def encoding(self) -> str:
        return ENCRYPTED_ENCODING.decode()

    def from_payload(self, payload: TemporalPayload, type_hint: type | None = None) -> Any:
        raise PayloadUnreadable(
            "payload is encrypted and this process has no payload keys: give it the "
            "worker's (VIGIL_PAYLOAD_KEYS, or VIGIL_STATE_DIR naming the stack's state folder)"
        )


class PayloadConverter(CompositePayloadConverter):
    """Payloads as pydantic JSON (``temporalio.contrib.pydantic``'s encoders, so the bytes
    are the same), with one set of encoders for the whole process.

    The SDK builds a payload converter for every workflow run and two more for every
    workflow activation (to find the codec): each pydantic converter built anew sets up
    its serializer and starts an empty cache of type adapters, so a workflow run built
    its adapters again and a step paid for a few converters it never used. Here every
    instance shares the first one's encoders (the adapter cache is thread-safe)."""

    _shared: ClassVar[dict[bytes, EncodingPayloadConverter] | None] = None

    def __init__(self) -> None:
        shared = PayloadConverter._shared
        if shared is None:
            shared = dict(PydanticPayloadConverter().converters)
            for unreadable in (UndecryptablePayloadConverter(), EncryptedPayloadConverter()):
                shared[unreadable.encoding.encode()] = unreadable
            PayloadConverter._shared = shared
        self.converters = shared


DATA_CONVERTER = DataConverter(payload_converter_class=PayloadConverter)
"""Payloads as pydantic JSON, without encryption (replaying plain recorded histories)."""


def data_converter(settings: Settings) -> DataConverter:
    """The converter of every client and worker: pydantic JSON, then the payload codec
    (AES-GCM) when a key is configured. Search attributes are not payloads: they stay plain.
    """
    codec = payload_codec(settings, mark_undecryptable=True)
    if codec is None:
        return DATA_CONVERTER
    return dataclasses.replace(DATA_CONVERTER, payload_codec=codec)


def workflow_runner(*, sandboxed: bool) -> WorkflowRunner:
    """How a worker runs workflow code. ``sandboxed``: Temporal's sandbox, which imports
    the workflow modules again for every run and checks each call at run time (what the
    replay tests use, so a non-deterministic call in vigil's workflows fails there);
    otherwise the workflows run as plain Python (``worker_workflow_sandbox``, README
    "Performance")."""
    from temporalio.worker import UnsandboxedWorkflowRunner
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

    if not sandboxed:
        return UnsandboxedWorkflowRunner()
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
    return SandboxedWorkflowRunner(restrictions=restrictions)


CORE_LOGGER = "temporalio.core"
"""Where a client's SDK core log lines go (Python's logging): a retried call's warning was
written straight to the terminal, colours and all, ahead of what vigil said of it."""


@functools.cache
def client_runtime() -> Runtime:
    """The Temporal runtime of vigil's client (the CLI's, the API's): the SDK core's log
    lines forwarded to Python's logger ``CORE_LOGGER``, where the process's logging setup
    decides (the API logs them; a command keeps errors only)."""
    from temporalio.runtime import (
        LogForwardingConfig,
        LoggingConfig,
        Runtime,
        TelemetryConfig,
        TelemetryFilter,
    )

    logging_config = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger(CORE_LOGGER)),
    )
    return Runtime(telemetry=TelemetryConfig(logging=logging_config))


async def connect(
    settings: Settings, *, lazy: bool = False, runtime: Runtime | None = None
) -> Client:
    """A Temporal client for ``settings``: its address, namespace and payload codec, so the
    worker, the client API and the CLI always read and write payloads alike. ``lazy``: no
    connection until the first call (which then fails if Temporal is not there). Traced
    when a collector is configured (workers/telemetry.py); ``runtime``: the worker's, with
    its metrics endpoint."""
    return await Client.connect(
        settings.endpoints().temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        lazy=lazy,
        interceptors=client_interceptors(settings),
        runtime=runtime,
    )


def new_worker(
    client: Client,
    *,
    task_queue: str,
    workflows: Sequence[type],
    activities: Sequence[Callable[..., Any]],
    settings: Settings | None = None,
    max_concurrent_activities: int | None = None,
    eager_activities: bool = True,
    deployment_config: WorkerDeploymentConfig | None = None,
    identity: str | None = None,
) -> Worker:
    """A worker with vigil's workflow runner and the ``worker_*`` options of ``settings``
    (defaults when none); ``max_concurrent_activities`` overrides the setting.
    ``eager_activities=False`` (benchmarks) always dispatches through the task queue.
    ``identity``: what Temporal calls the worker (the client's, ``pid@host``, when None)."""
    from temporalio.worker import PollerBehaviorSimpleMaximum, Worker

    opts = settings or Settings()
    return Worker(
        client,
        task_queue=task_queue,
        identity=identity,
        deployment_config=deployment_config,
        # A versioned worker's build is its deployment version's.
        build_id=None if deployment_config else code_build_id(),
        workflows=list(workflows),
        activities=list(activities),
        workflow_runner=workflow_runner(sandboxed=opts.worker_workflow_sandbox),
        max_cached_workflows=opts.worker_max_cached_workflows,
        max_concurrent_workflow_tasks=opts.worker_max_concurrent_workflow_tasks,
        max_concurrent_activities=max_concurrent_activities
        or opts.worker_max_concurrent_activities,
        # Unset: the SDK's default poller behaviour (at most 5 polls of each kind).
        workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(
            opts.worker_workflow_pollers or SDK_POLLERS
        ),
        activity_task_poller_behavior=PollerBehaviorSimpleMaximum(
            opts.worker_activity_pollers or SDK_POLLERS
        ),
        disable_eager_activity_execution=not eager_activities,
        graceful_shutdown_timeout=timedelta(seconds=opts.worker_graceful_shutdown_seconds),
        # Workflow tasks on the event loop, not a thread: Settings.worker_inline_workflow_tasks.
        debug_mode=opts.worker_inline_workflow_tasks and not opts.worker_workflow_sandbox,
        # A dead worker's cached workflows move to another worker after this long.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=3),
    )


CODE_PACKAGES = ("vigil.workflows", "vigil.schema")
"""What decides how a session's history replays: the workflow code and its payloads."""


@functools.cache
def code_build_id(packages: Sequence[str] = CODE_PACKAGES) -> str:
    """An unversioned worker's build id: a digest of the source of ``packages`` with the
    versions of vigil and the SDK. The SDK's default hashes the bytecode of every loaded
    module, 1.5 s of CPU at each worker start on the development machine (1,700 modules);
    this reads a few dozen files. Temporal records it on each workflow task the worker
    completes."""
    import temporalio

    from vigil import __version__

    digest = hashlib.md5(usedforsecurity=False)
    digest.update(f"vigil {__version__} temporalio {temporalio.__version__}".encode())
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"{package} is not a package")
        for root in spec.submodule_search_locations:
            base = Path(root)
            for path in sorted(base.rglob("*.py")):
                digest.update(f"{package}/{path.relative_to(base).as_posix()}".encode())
                digest.update(path.read_bytes())
    return f"vigil-{__version__}-{digest.hexdigest()[:16]}"


_INDEXED = {
    SearchAttributeIndexedValueType.KEYWORD: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    SearchAttributeIndexedValueType.INT: IndexedValueType.INDEXED_VALUE_TYPE_INT,
    SearchAttributeIndexedValueType.TEXT: IndexedValueType.INDEXED_VALUE_TYPE_TEXT,
}


async def missing_search_attributes(client: Client) -> list[str]:
    resp = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return [key.name for key in SEARCH_ATTRIBUTES if key.name not in resp.custom_attributes]


async def ensure_search_attributes(client: Client) -> list[str]:
    """Register vigil's search attributes; returns the names that were added."""
    missing = await missing_search_attributes(client)
    if missing:
        wanted = {key.name: _INDEXED[key.indexed_value_type] for key in SEARCH_ATTRIBUTES}
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=client.namespace,
                search_attributes={name: wanted[name] for name in missing},
            )
        )
    return missing
