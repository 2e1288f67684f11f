"""What ``entrega host check`` reports of each host, before anything is deployed to it.

One connection and one call of the host-side helper per host, all hosts in parallel
(``max_parallel``): is the host reachable, was its key the one known_hosts lists, which
Python it has, how much disk is free under ``base_dir`` and which releases are there. A
host that fails is a report with its error, never an exception: one bad host does not hide
what the others say.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from entrega.errors import EntregaError, HostKeyRefused, TargetUnreachable
from entrega.targets.ssh.connections import Fleet, Host
from entrega.targets.ssh.remote import call_hostside


@dataclass(frozen=True)
class HostCheck:
    """One host's answers; None where the check could not get that far."""

    host: str
    address: str
    port: int
    base_dir: str
    ok: bool
    #: The host answered on its SSH port (whatever it said next).
    reachable: bool
    #: Its key is the one known_hosts lists (None: it never got that far).
    host_key_verified: bool | None
    error: str | None = None
    python: str | None = None
    free_bytes: int | None = None
    base_dir_exists: bool | None = None
    releases_dir_exists: bool | None = None
    releases: list[str] = field(default_factory=list)


async def check_hosts(fleet: Fleet, *, app: str) -> list[HostCheck]:
    """Check every host of ``fleet`` for ``app``; one report per host, in order."""
    outcomes = await fleet.each(lambda host: _inspect(fleet, host, app))
    return [outcome.value if outcome.value is not None
            else _failed(outcome.host, outcome.error) for outcome in outcomes]


async def _inspect(fleet: Fleet, host: Host, app: str) -> HostCheck:
    answer, _ = await call_hostside(fleet, host, {"op": "inspect", "base_dir": host.base_dir,
                                                  "app": app})
    return HostCheck(
        host=host.name, address=host.address, port=host.port, base_dir=host.base_dir,
        ok=True, reachable=True, host_key_verified=True,
        python=str(answer.get("python")), free_bytes=int(answer.get("free_bytes", 0)),
        base_dir_exists=bool(answer.get("base_dir_exists")),
        releases_dir_exists=bool(answer.get("releases_dir_exists")),
        releases=[str(v) for v in answer.get("releases", [])])


def _failed(host: Host, error: EntregaError | None) -> HostCheck:
    refused_key = isinstance(error, HostKeyRefused)
    # Anything but an unreachable host got at least as far as the key exchange.
    reachable = not isinstance(error, TargetUnreachable)
    return HostCheck(host=host.name, address=host.address, port=host.port,
                     base_dir=host.base_dir, ok=False, reachable=reachable,
                     host_key_verified=False if refused_key else (None if not reachable
                                                                  else True),
                     error=str(error) if error else "unknown failure")
