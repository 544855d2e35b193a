"""The cluster profile's config, schema workaround and worker deployment settings (no
server here: tests/cluster runs the real one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.workers.deployments import DeploymentSettingsError, deployment_config
from vigil.workers.settings import Settings
from vigil.workers.stack.cluster import (
    HISTORY_SHARDS,
    ClusterPorts,
    Database,
    _without_btree_gin,
    server_config,
)
from vigil.workers.stack.procs import StackError


def test_ports_are_distinct_and_membership_stays_a_smallint() -> None:
    ports = ClusterPorts(7233, 8233)
    assert len(set(ports.all())) == len(ports.all())
    ports.check()
    with pytest.raises(StackError, match="below 32768"):
        ClusterPorts(32765, 8233).check()


def test_config_is_loopback_on_vigils_databases() -> None:
    db = Database.from_url("postgresql://postgres:p%40ss@127.0.0.1:5433/vigil")
    assert (db.host, db.port, db.user, db.password) == ("127.0.0.1", 5433, "postgres", "p@ss")
    config = server_config(ClusterPorts(7233, 8233), db, Path("/x/dynamic.yaml"))
    persistence = config["persistence"]
    assert isinstance(persistence, dict)
    assert persistence["numHistoryShards"] == HISTORY_SHARDS
    stores = persistence["datastores"]
    assert {s["sql"]["databaseName"] for s in stores.values()} == {
        "temporal",
        "temporal_visibility",
    }
    services = config["services"]
    assert isinstance(services, dict)
    assert set(services) == {"frontend", "history", "matching", "worker"}
    assert all(s["rpc"]["bindOnLocalHost"] for s in services.values())


def test_visibility_schema_without_btree_gin() -> None:
    sql = (
        "CREATE EXTENSION IF NOT EXISTS btree_gin;\n"
        "CREATE INDEX by_text_01 ON executions_visibility USING GIN (namespace_id, Text01);\n"
        "CREATE INDEX by_kw ON executions_visibility USING GIN (namespace_id, K jsonb_path_ops);\n"
    )
    out = _without_btree_gin(sql)
    assert "btree_gin" not in out
    assert "USING GIN (Text01)" in out and "USING GIN (K jsonb_path_ops)" in out


def test_deployment_settings_both_or_neither() -> None:
    assert deployment_config(Settings()) is None
    config = deployment_config(Settings(deployment_name="vigil", build_id="abc123"))
    assert config is not None and config.use_worker_versioning
    assert config.version.to_canonical_string() == "vigil.abc123"
    with pytest.raises(DeploymentSettingsError):
        deployment_config(Settings(deployment_name="vigil"))
    with pytest.raises(DeploymentSettingsError):
        deployment_config(Settings(deployment_name="a.b", build_id="1"))


def test_both_servers_let_the_history_queues_readers_load_past_the_default() -> None:
    """Temporal's default of 20 loads a second per shard held every task handed to a
    worker up to 50 ms on these one- and four-shard servers (README "Performance"):
    the dev server's flags and the cluster's dynamic config both raise it, for the
    queues that hand tasks on."""
    from vigil.workers.stack.cluster import DYNAMIC_CONFIG
    from vigil.workers.stack.services import DEV_SERVER_TUNING, READER_QUEUES, READER_RPS

    assert READER_RPS > 20
    pairs = zip(DEV_SERVER_TUNING[::2], DEV_SERVER_TUNING[1::2], strict=True)
    values = [value for flag, value in pairs if flag == "--dynamic-config-value"]
    for queue in ("transfer", "timer", "visibility"):
        assert queue in READER_QUEUES
        key = f"history.{queue}ProcessorMaxPollRPS"
        assert f"{key}={READER_RPS}" in values
        assert DYNAMIC_CONFIG[key] == READER_RPS


def test_both_servers_start_a_sessions_next_run_without_waiting_out_a_second() -> None:
    """Temporal holds a run that continued as new until a second after the last run's
    start by default: a short low-latency run then waited up to 0.4 s for its first
    task (README "Performance"). Both servers shorten that interval, to the same value."""
    from vigil.workers.stack.cluster import DYNAMIC_CONFIG
    from vigil.workers.stack.services import DEV_SERVER_TUNING, RUN_MIN_INTERVAL

    key = "history.workflowIdReuseMinimalInterval"
    pairs = zip(DEV_SERVER_TUNING[::2], DEV_SERVER_TUNING[1::2], strict=True)
    values = [value for flag, value in pairs if flag == "--dynamic-config-value"]
    assert f'{key}="{RUN_MIN_INTERVAL}"' in values
    assert DYNAMIC_CONFIG[key] == RUN_MIN_INTERVAL
    assert RUN_MIN_INTERVAL.endswith("ms") and int(RUN_MIN_INTERVAL[:-2]) < 1000


def test_both_servers_mark_a_closed_runs_close_processed_every_second() -> None:
    """A closed run's deletion waits until the server has marked its close processed (by
    the transfer and visibility queues), every 30 s by Temporal's default: erasing an
    ended session waited up to 20 s and often left the run still being deleted. Both
    servers mark it every second."""
    from vigil.workers.stack.cluster import DYNAMIC_CONFIG
    from vigil.workers.stack.services import ACK_INTERVAL, DEV_SERVER_TUNING

    pairs = zip(DEV_SERVER_TUNING[::2], DEV_SERVER_TUNING[1::2], strict=True)
    values = [value for flag, value in pairs if flag == "--dynamic-config-value"]
    for queue in ("transfer", "visibility"):
        key = f"history.{queue}ProcessorUpdateAckInterval"
        assert f'{key}="{ACK_INTERVAL}"' in values
        assert DYNAMIC_CONFIG[key] == ACK_INTERVAL
    assert ACK_INTERVAL == "1s"
