"""What the activities read of the worker's configuration.

Activities never import the worker's settings module: the worker hands its settings in,
and activities see them through this protocol (only the fields they use), so the
dependency points from workers/ to activities/, never back.
"""

from __future__ import annotations

from typing import Protocol


class ActivitySettings(Protocol):
    """The settings activities and built-in tools read (``vigil.workers.settings.Settings``
    satisfies it)."""

    @property
    def context_tokens(self) -> int: ...

    @property
    def inline_limit_bytes(self) -> int: ...

    @property
    def http_allowlist(self) -> list[str]: ...

    @property
    def http_max_bytes(self) -> int: ...

    @property
    def http_timeout_seconds(self) -> float: ...
