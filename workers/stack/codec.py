"""The embedded stack's payload key and codec server (`vigil codec-server` as a daemon)."""

from __future__ import annotations

from vigil.workers.settings import Settings
from vigil.workers.stack.daemon import VigilDaemon


class CodecServer(VigilDaemon):
    """``vigil codec-server`` on loopback, with the key and token of the state folder."""

    name = "codec server"
    command = ("codec-server",)
    port_setting = "VIGIL_CODEC_PORT"

    def __init__(self, settings: Settings) -> None:
        state, host, port = settings.resolved_state_dir, settings.codec_host, settings.codec_port
        super().__init__(state, host, port, "codec")
        self.settings = settings

    def prepare(self) -> str:
        """Generate the payload key (unless keys are configured) and the access token the
        first time; returns the token."""
        from vigil.workers.codec import codec_token, ensure_key_file

        if self.settings.payload_keys is None:
            ensure_key_file(self.state_dir)
        token = codec_token(self.settings, create=True)
        assert token is not None
        return token

    def ui_endpoint(self, token: str) -> str:
        """What the embedded Temporal UI calls: a browser cannot add the Authorization
        header, so the token travels in the path."""
        return f"{self.url}/t/{token}"

    def env(self) -> dict[str, str]:
        """The settings the daemon needs that may have come from arguments, not the
        environment: the UI's origin for CORS, and keys or token given explicitly."""
        from vigil.workers.codec_server import ui_origins

        s = self.settings
        env = {"VIGIL_CODEC_CORS_ORIGINS": ",".join(ui_origins(s))}
        if s.payload_keys is not None:
            env["VIGIL_PAYLOAD_KEYS"] = s.payload_keys.get_secret_value()
        if s.payload_key_id is not None:
            env["VIGIL_PAYLOAD_KEY_ID"] = s.payload_key_id
        if s.codec_token is not None:
            env["VIGIL_CODEC_TOKEN"] = s.codec_token.get_secret_value()
        return env
