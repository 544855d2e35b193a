"""The stack's HTTP API (`vigil api` as a daemon), started after migrations ran."""

from __future__ import annotations

from pydantic import SecretStr

from vigil.workers.settings import Settings
from vigil.workers.stack.daemon import VigilDaemon


class ApiDaemon(VigilDaemon):
    """``vigil api`` on the configured address (loopback unless opened on purpose)."""

    name = "HTTP API"
    command = ("api",)
    port_setting = "VIGIL_API_PORT"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.resolved_state_dir, settings.api_host, settings.api_port, "api")
        self.settings = settings

    def env(self) -> dict[str, str]:
        """Every setting given explicitly (arguments, not only the environment), so the
        daemon sees the same stack as the command that started it."""
        env: dict[str, str] = {}
        for name, value in self.settings.model_dump(exclude_unset=True).items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[f"VIGIL_{name.upper()}"] = str(value)
        return env
