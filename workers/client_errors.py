"""The client's errors: each failure with a message meant for a person and the exit code
the CLI ends with (the API maps them to HTTP statuses: workers/api/errors.py).

Part of VigilClient (workers/client.py), which re-exports every name.
"""

from __future__ import annotations

from temporalio.service import RPCError, RPCStatusCode


class VigilError(Exception):
    """A failure with a message meant for a person."""

    exit_code = 1


class NotFound(VigilError):
    """No such session or schedule."""

    exit_code = 4


class UnknownSession(NotFound):
    @classmethod
    def erased(cls, session_id: str) -> UnknownSession:
        """A session erased meanwhile (its record gone, Temporal's runs gone or going)."""
        return cls(f"no session with id {session_id!r}: it was erased")


class UnknownSchedule(NotFound):
    pass


class UnknownArtifact(NotFound):
    pass


class UnknownAgent(NotFound):
    """No definition of the agent (or not that version)."""


class NotRecordedYet(UnknownSession):
    """Temporal knows the session but its record row is not written yet."""


class Refused(VigilError):
    """The session refused a control (validator said no, or it has ended)."""

    exit_code = 2


class BadArgument(VigilError):
    """An argument the caller can fix (a format, a policy name, a taken id)."""

    exit_code = 2


class Forbidden(VigilError):
    """The caller may not do this: a start that would loosen what the agent's definition
    holds, asked by someone who may not change the definition (an API control token)."""

    exit_code = 2


class SessionIdTaken(BadArgument):
    """The id already names a session (of any agent: ids are one namespace). ``agent_id``
    and ``status`` are those of the session holding it, when its record is there; a face
    shows them only to a caller who may read that session (:meth:`message`)."""

    def __init__(
        self,
        session_id: str,
        *,
        agent_id: str | None = None,
        status: str | None = None,
        erased: bool = False,
    ) -> None:
        self.session_id = session_id
        self.agent_id = agent_id
        self.status = status
        self.erased = erased
        """The session holding it was erased, and Temporal has not yet deleted its run
        (said only to a caller who may read that session's agent)."""
        super().__init__(self.message(reveal=True, option="--id"))

    def message(self, *, reveal: bool, option: str = "id") -> str:
        if self.erased and reveal:
            return (
                f"the session with id {self.session_id!r} was erased and Temporal is still "
                f"deleting its history; the id is free once it has (try again in a few "
                f"seconds), or choose another {option}"
            )
        held = f" ({self.status})" if reveal and self.status else ""
        return (
            f"a session with id {self.session_id!r} already exists{held}; choose another {option}"
        )


class PayloadKeysMissing(VigilError):
    """What a session answered is encrypted with a key this client does not have: what it
    asked may have been taken (the answer says, and cannot be read here)."""

    exit_code = 1


class Unreachable(VigilError):
    exit_code = 3


class NotAnswered(Unreachable):
    """A worker polls the session's queue, but none answered the request in time (busy,
    or gone while Temporal still lists it)."""


class NotTakenYet(Unreachable):
    """Temporal runs the session and lists a worker on its queue, but none has taken it
    (a worker that stopped is still listed for a while)."""


class NoWorker(Unreachable):
    """Temporal knows the session, but no worker polls its task queue: nothing will move."""


class TemporalRefused(Unreachable):
    """Temporal answered with an error that is no fault of the request: access denied
    (an expired key), exhausted, an internal error. Told as Temporal not serving (the
    API's 503, the CLI's exit 3): a 400 blamed the caller, who would not try again."""


CALLERS_FAULT = frozenset(
    {
        RPCStatusCode.INVALID_ARGUMENT,
        RPCStatusCode.FAILED_PRECONDITION,
        RPCStatusCode.ALREADY_EXISTS,
        RPCStatusCode.OUT_OF_RANGE,
    }
)
"""Temporal's answers that are about the request itself."""


def temporal_refusal(exc: RPCError, what: str = "Temporal refused") -> VigilError:
    """The error to raise for a refusal of Temporal's that is not NOT_FOUND and not
    Temporal being unreachable: the request's fault, or Temporal's (``TemporalRefused``)."""
    if exc.status in CALLERS_FAULT:
        return VigilError(f"{what}: {exc.message}")
    return TemporalRefused(f"{what}: {exc.message} ({exc.status.name.lower()})")
