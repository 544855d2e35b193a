"""docker-compose.yml (no engine runs here) matches vigil's settings and the embedded stack."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from vigil.workers.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _interpolated(value: object) -> str:
    """Compose's ``${NAME:-default}`` with nothing set in the environment: the default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", lambda m: m[1], str(value))


def _host_ports(service: dict[str, Any]) -> dict[int, int]:
    out: dict[int, int] = {}
    for spec in service.get("ports", []):
        host_ip, host, container = str(spec).split(":")
        assert host_ip == "127.0.0.1", f"{spec} must bind loopback only"
        out[int(container)] = int(host)
    return out


def test_services_are_the_stack() -> None:
    services = _compose()["services"]
    assert {"temporal", "temporal-ui", "postgres", "minio", "worker"} <= set(services)
    assert "pgvector" in services["postgres"]["image"]


def test_ports_match_the_embedded_defaults() -> None:
    services = _compose()["services"]
    # The fields' defaults: a Settings() here would take a local stack's published ports.
    default = {name: f.default for name, f in Settings.model_fields.items()}
    assert _host_ports(services["temporal"])[7233] == default["temporal_port"]
    assert default["temporal_ui_port"] in _host_ports(services["temporal-ui"]).values()
    assert _host_ports(services["postgres"])[5432] == default["postgres_port"]
    assert _host_ports(services["minio"])[9000] == default["minio_port"]


def test_worker_environment_names_are_settings() -> None:
    env = _compose()["services"]["worker"]["environment"]
    fields = Settings.model_fields
    for name in env:
        if name in ("TEMPORAL_ADDRESS", "DATABASE_URL"):
            alias = fields["temporal_address" if name == "TEMPORAL_ADDRESS" else "database_url"]
            assert name in str(alias.validation_alias)
            continue
        assert name.startswith("VIGIL_"), name
        assert name[len("VIGIL_") :].lower() in fields, f"{name} is not a vigil setting"


def test_worker_settings_parse_from_the_compose_environment(monkeypatch: Any) -> None:
    for name, value in _compose()["services"]["worker"]["environment"].items():
        monkeypatch.setenv(name, _interpolated(value))
    s = Settings()
    assert s.temporal_address == "temporal:7233"
    assert s.artifact_backend == "s3" and s.s3_endpoint == "minio:9000"
    ep = s.endpoints()
    assert ep.database_url == "postgresql://vigil:vigil@postgres:5432/vigil"
    assert ep.s3_access_key == "vigil"


def test_temporal_is_the_cluster_profile() -> None:
    """The compose Temporal has the cluster profile's version, shards and dynamic config."""
    from vigil.workers.stack.cluster import HISTORY_SHARDS, SERVER_VERSION, dynamic_config_yaml

    services = _compose()["services"]
    temporal = services["temporal"]
    major_minor = ".".join(SERVER_VERSION.lstrip("v").split(".")[:2])
    assert temporal["image"].endswith(f":{major_minor}"), temporal["image"]
    assert int(temporal["environment"]["NUM_HISTORY_SHARDS"]) == HISTORY_SHARDS
    mounted = [v.split(":")[0] for v in temporal["volumes"]]
    dynamic = yaml.safe_load((ROOT / mounted[0]).read_text())
    assert dynamic == dynamic_config_yaml()
    assert temporal["environment"]["DYNAMIC_CONFIG_FILE_PATH"].endswith(
        Path(temporal["volumes"][0].split(":")[1]).name
    )


def test_many_workers_share_one_setup() -> None:
    services = _compose()["services"]
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["worker"]["environment"] == services["setup"]["environment"]
    assert services["worker"]["depends_on"]["setup"]["condition"] == (
        "service_completed_successfully"
    )
    env = services["worker"]["environment"]
    assert {"VIGIL_DEPLOYMENT_NAME", "VIGIL_BUILD_ID"} <= set(env)
