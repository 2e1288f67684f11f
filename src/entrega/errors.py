"""One exception tree for entrega.

Every error a user can see derives from :class:`EntregaError` and carries a sentence that
says what failed, where, and (when we know it) what to do next::

    EntregaError
    ├── ConfigError            bad entrega.yaml: file, line, field, what was expected
    ├── InvalidName            a version, app or environment name breaks names.py's rule (400)
    ├── InvalidGroup           a release group's members: unknown depends_on, a cycle (400)
    ├── StoreError             the state database cannot be opened, migrated or locked
    │   ├── ControllerLocked   another controller owns the store
    │   ├── NotLeader          a standby (or a deposed leader) was asked to write (503)
    │   └── SteppedDown        this server led, lost the lead, and ends (plane/leader.py)
    ├── InvalidRecord          JSON read back (a rollout's state, a state file) fails its type
    ├── NotFound               an app, environment, release or rollout does not exist
    ├── Conflict               the request contradicts the current state (409)
    │   ├── ReleaseConflict    same version, other bytes
    │   └── RolloutInProgress  one rollout per environment at a time
    ├── ArtifactError          an artifact cannot be read, unpacked or verified
    ├── TargetError            instances could not be started, probed or stopped
    │   ├── TargetUnreachable  the target (host, runtime) does not answer
    │   ├── HostKeyRefused     an SSH host's key is not the one known_hosts lists
    │   ├── AgentMissing       a fleet host does not have this controller's host agent
    │   └── ResidentGone       a host's resident agent ended before answering (internal)
    ├── RouterError            the router could not be started or reconfigured
    │   └── RouterUnreachable  the router's control socket does not answer
    ├── AnalysisError          a metric could not be measured
    ├── Unauthorized           no valid token or webhook signature (401)
    ├── Forbidden              the token's role does not allow it (403)
    ├── BadRequest             a request the API cannot take as sent (400)
    ├── BadFeedback            a feedback body that is not a rating and comment (422)
    ├── PayloadTooLarge        a request body over the configured limit (413)
    ├── RateLimited            too much feedback from one client (429, Retry-After)
    ├── ApiError               the server answered a CLI call with an error
    ├── ServerUnreachable      the CLI could not reach the server (refused, reset, timeout)
    └── DataPlaneError         inside the router process (a program of its own)
        ├── StartupFailed        the router cannot start (bad address, busy port): exit 2
        ├── WorkerDidNotStart    a worker exited or did not answer before it served
        ├── LinkClosed           a worker's link broke or timed out
        ├── WorkerRefused        a worker answered its supervisor with an error
        ├── RoutesNotApplied     a persisted table some worker did not take (500)
        ├── HeadTooLarge         a request head over the limit (the router answers 431)
        └── HttpParserError      not HTTP/1.x (the stdlib parser's, httptools' names)
            ├── HttpParserCallbackError  a parser callback raised
            └── HttpParserUpgrade        the connection switched protocols

The controller separates temporary failures (retry with backoff) from permanent ones
(abort the rollout) by :attr:`EntregaError.temporary`.

The data plane's errors never cross to the controller as exceptions: the router process
answers its control API with their sentence (``{"error": ...}``), which the controller
raises as a :class:`RouterError`. They live here all the same, so that the one tree is the
whole list, and this module imports nothing, so the router process may import it.
"""

from __future__ import annotations


class EntregaError(Exception):
    """Root of every entrega error; ``str(error)`` is a full sentence for the user."""

    #: HTTP status the API answers with when this error escapes a handler.
    status_code: int = 500
    #: True when retrying later may succeed (network, a process still starting).
    temporary: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class ConfigError(EntregaError):
    """The configuration is invalid; the message names file, line and field."""

    status_code = 400

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = file or "<config>"
        if line is not None:
            where = f"{where}:{line}"
        prefix = f"{where}: " + (f"{field}: " if field else "")
        super().__init__(prefix + message, hint=hint)
        self.file = file
        self.line = line
        self.field = field
        #: what is wrong, without where (config/apps.py names the field again)
        self.reason = message


class InvalidName(EntregaError, ValueError):
    """A version, app or environment name that breaks its rule (``entrega.names``); also a
    ValueError, so that pydantic validators report it as the field's error."""

    status_code = 400


class InvalidGroup(EntregaError, ValueError):
    """A release group whose members cannot be ordered (a ``depends_on`` naming an app that
    is not a member, a cycle, an app twice); also a ValueError, so that a pydantic
    validator of the config reports it as the field's error, with file and line."""

    status_code = 400


class StoreError(EntregaError):
    """The state database cannot be used."""


class ControllerLocked(StoreError):
    """Another controller holds the store's lock."""

    status_code = 409


#: The HTTP header a standby names the leader's address in (the CLI sends writes there).
LEADER_HEADER = "X-Entrega-Leader"


class NotLeader(StoreError):
    """This server does not lead the servers sharing its store (store/leadership.py): it
    was asked to write, or it lost the lead (a pause, a cut to the database). ``leader``
    is the address of the server that leads, when one does."""

    status_code = 503

    def __init__(self, message: str, *, leader: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.leader = leader


class SteppedDown(StoreError):
    """This server led and lost the lead: it ends, to be started again as a standby."""


class InvalidRecord(EntregaError):
    """A document read back from the store or from another process (a rollout's state, a
    supervisor's state file) does not match its type; the message names the field."""


class NotFound(EntregaError):
    status_code = 404


class Conflict(EntregaError):
    status_code = 409


class ReleaseConflict(Conflict):
    """The same version was created before with different bytes."""


class RolloutInProgress(Conflict):
    """The environment already has a rollout that has not finished."""


class ArtifactError(EntregaError):
    status_code = 400


class TargetError(EntregaError):
    """Instances could not be started, probed or stopped."""


class TargetUnreachable(TargetError):
    temporary = True


class HostKeyRefused(TargetError):
    """An SSH host is missing from known_hosts or presents another key: permanent until
    an operator checks the host and updates known_hosts."""


class AgentMissing(TargetError):
    """A fleet host does not have this controller's host agent (yet): it runs nothing
    that this agent could report on; a start installs it."""


class ResidentGone(TargetError):
    """A host's resident agent ended (or its channel broke) before answering: internal,
    never shown; the call runs again as a command of its own (every call is idempotent)."""

    temporary = True

    def __init__(self, message: str = "the host's resident agent ended before answering"
                 ) -> None:
        super().__init__(message)


class RouterError(EntregaError):
    """The router could not be started or reconfigured."""


class RouterUnreachable(RouterError):
    temporary = True


class AnalysisError(EntregaError):
    """A metric could not be measured (the judge then sees no data, never a pass)."""

    temporary = True


class Unauthorized(EntregaError):
    status_code = 401


class Forbidden(EntregaError):
    status_code = 403


class BadRequest(EntregaError):
    status_code = 400


class BadFeedback(EntregaError):
    status_code = 422


class PayloadTooLarge(EntregaError):
    status_code = 413


class RateLimited(EntregaError):
    """A client sent more than its token bucket allows; ``retry_after_s`` says when to."""

    status_code = 429

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("too much feedback from this client",
                         hint=f"try again in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class ApiError(EntregaError):
    """The server answered with an error; carries its status code."""

    def __init__(self, message: str, *, status_code: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status_code = status_code


class ServerUnreachable(EntregaError):
    """The CLI got no answer from the server: it is down, restarting or too slow. Temporary:
    a command that follows a rollout reconnects (the rollout goes on without it).
    ``not_sent``: the connection was refused, so the request was never sent (another
    server of the same store may take it)."""

    temporary = True

    def __init__(self, message: str, *, hint: str | None = None,
                 not_sent: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.not_sent = not_sent


# -- the router process ---------------------------------------------------------------------


class DataPlaneError(EntregaError):
    """An error inside the router process; logged there, or answered on its control API."""


class StartupFailed(DataPlaneError):
    """The router cannot start; the message says why and is logged before exiting 2."""


class WorkerDidNotStart(DataPlaneError):
    """A worker process exited or stopped answering before it served; says which and why."""


class LinkClosed(DataPlaneError):
    """The worker is gone (or stopped answering and was given up on: ``timed_out``)."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class WorkerRefused(DataPlaneError):
    """The worker answered with an error."""


class RoutesNotApplied(DataPlaneError):
    """The table was persisted but some part of the data plane did not take it (500)."""

    status_code = 500


class HeadTooLarge(DataPlaneError):
    """Raised from a parser callback to stop parsing an oversized request head (431)."""

    status_code = 431


class HttpParserError(DataPlaneError):
    """The bytes are not a valid HTTP/1.x message: raised by the standard-library parser
    (``dataplane/http1parse.py``) that stands in for httptools on a fleet host's python3,
    under httptools' own names so that the proxy catches either."""

    status_code = 400


class HttpParserCallbackError(HttpParserError):
    """A callback of the protocol raised; its exception is this one's ``__context__``."""


class HttpParserUpgrade(HttpParserError):  # noqa: N818 - httptools' name
    """The connection switched protocols; ``args[0]`` (as httptools'): where the new
    protocol's bytes begin in the data given to the ``feed_data`` call that raised it."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"the connection switched protocols at byte {offset}")
        self.args = (offset,)
        self.offset = offset
