"""Worker versioning: which Temporal worker deployment version a `vigil worker` polls as,
and setting the version new sessions start on.

A deployment is named (``VIGIL_DEPLOYMENT_NAME``), each build of the workflow code has an
id (``VIGIL_BUILD_ID``). Sessions are pinned by default: a session runs to its end on the
build it started on, so a new build's workflow changes need no ``workflow.patched`` for the
sessions already running, as long as the old build's workers keep running until those
sessions end. Temporal server v1.29 keeps a pinned run's version across continue-as-new
(the SDK's upgrade-on-continue-as-new needs a newer server); to move long sessions to a
new build, an operator overrides them to auto-upgrade (`temporal workflow update-options`)
after making sure the new build replays them (tests/replay).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vigil.workers.settings import Settings

if TYPE_CHECKING:
    from temporalio.client import Client
    from temporalio.worker import WorkerDeploymentConfig


class DeploymentSettingsError(ValueError):
    """The deployment settings are half set or malformed."""


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    """The worker's deployment version, or None for an unversioned worker."""
    from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
    from temporalio.worker import WorkerDeploymentConfig

    name, build = settings.deployment_name, settings.build_id
    if not name and not build:
        return None
    if not name or not build:
        raise DeploymentSettingsError(
            "worker versioning needs both VIGIL_DEPLOYMENT_NAME and VIGIL_BUILD_ID"
        )
    if "." in name:
        raise DeploymentSettingsError(f"deployment name {name!r} must not contain '.'")
    behavior = (
        VersioningBehavior.PINNED
        if settings.versioning_behavior == "pinned"
        else VersioningBehavior.AUTO_UPGRADE
    )
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(deployment_name=name, build_id=build),
        use_worker_versioning=True,
        default_versioning_behavior=behavior,
    )


async def set_current_version(
    client: Client, deployment_name: str, build_id: str, *, by: str = "vigil"
) -> None:
    """Make ``build_id`` the version new sessions of ``deployment_name`` start on. The
    version must have polled first (a worker of that build is running)."""
    from temporalio.api.workflowservice.v1 import SetWorkerDeploymentCurrentVersionRequest

    await client.workflow_service.set_worker_deployment_current_version(
        SetWorkerDeploymentCurrentVersionRequest(
            namespace=client.namespace,
            deployment_name=deployment_name,
            build_id=build_id,
            identity=by,
        )
    )


async def describe(client: Client, deployment_name: str) -> tuple[str | None, list[str]]:
    """(current build id, every build id the deployment has seen)."""
    from temporalio.api.workflowservice.v1 import DescribeWorkerDeploymentRequest

    resp = await client.workflow_service.describe_worker_deployment(
        DescribeWorkerDeploymentRequest(namespace=client.namespace, deployment_name=deployment_name)
    )
    info = resp.worker_deployment_info
    current = info.routing_config.current_deployment_version.build_id or None
    builds = [v.deployment_version.build_id for v in info.version_summaries]
    return current, builds
