"""The host agent on a fleet host: entrega's own code, installed by content, driven by
one command per operation.

A fleet host has Python 3 and nothing else. What runs instances there is the same code
that runs them on this machine (:mod:`entrega.dataplane.instances`: the supervisor and
:class:`~entrega.dataplane.instances.host.HostInstances`), which needs only the standard
library. So the agent is this controller's own ``entrega`` package, its Python sources
only (no compiled modules: the host's Python may differ; the data plane's pure-Python
path is the same code), copied once per host by content like a release:

    <base_dir>/.entrega/releases/agent-<digest>/entrega/...

(``.entrega`` cannot be an app's name, which starts with a letter). A host that has this
controller's agent receives nothing; a controller upgraded to other code installs its
agent beside the old one, whose supervisors keep running what they started.

Every instance operation is then ``PYTHONPATH=<agent> python3 -m
entrega.dataplane.instances.hostctl OP`` with one JSON object on stdin and one on stdout
(see :mod:`entrega.dataplane.instances.hostctl`), asked of the host's resident agent
(``hostctl serve`` on one channel, :mod:`.resident`) when it runs, by command otherwise.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import posixpath
import shlex
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import entrega
from entrega.errors import AgentMissing, ResidentGone, TargetError
from entrega.targets.ssh.connections import Fleet, Host

# The host-side helper's copy of the release digest (the same as releases/artifacts.py's,
# which this layer may not import): the host checks the agent with it.
from entrega.targets.ssh.hostside import tree_digest
from entrega.targets.ssh.remote import PYTHON
from entrega.targets.ssh.resident import (
    agent_installed,
    resident_agent,
    running_agent,
)
from entrega.targets.ssh.transfer import release_path, sync_release

log = logging.getLogger(__name__)

#: The agent is kept like a release of this pseudo-app on each host.
AGENT_APP = ".entrega"
HOSTCTL = "entrega.dataplane.instances.hostctl"
#: Files of the package the agent carries: sources and the data the data plane reads.
_SKIPPED_SUFFIXES = (".pyc", ".so", ".pyd", ".c", ".o")
#: Fleet -> the hosts it installed this controller's agent on.
_INSTALLED: weakref.WeakKeyDictionary[Fleet, set[str]] = weakref.WeakKeyDictionary()
#: A call whose resident agent ended late in its time still gets this long by command (s).
MIN_FALLBACK_S = 1.0


@functools.cache
def agent_bundle() -> tuple[Path, str, str]:
    """This controller's agent as a directory (built once per process in a temporary
    place), its content digest and its version name (``agent-<first 16 hex>``)."""
    package = Path(entrega.__file__).resolve().parent
    root = Path(tempfile.mkdtemp(prefix="entrega-agent-"))
    shutil.copytree(package, root / "entrega",
                    ignore=lambda _dir, names: [n for n in names if n == "__pycache__"
                                                or n.endswith(_SKIPPED_SUFFIXES)])
    digest = tree_digest(root)
    return root, digest, "agent-" + digest.removeprefix("sha256:")[:16]


def state_dir(host: Host, app: str) -> str:
    """Where the agent keeps ``app``'s instances on ``host`` (``run/<env>/<version>/...``,
    as locally under the controller's state directory)."""
    return posixpath.join(host.base_dir, app, "state")


def agent_path(host: Host) -> str:
    """Where this controller's agent is (or will be) on ``host``."""
    _root, _digest, version = agent_bundle()
    return release_path(host, AGENT_APP, version)


async def install_agent(fleet: Fleet, host: Host) -> bool:
    """Put this controller's agent on ``host`` unless it is there; True when it was sent.
    Idempotent (a cut install is repaired by the next, see :func:`sync_release`). A host
    this fleet installed it on, or whose resident agent runs, is not asked again (until a
    call finds it missing)."""
    if host.name in _INSTALLED.get(fleet, ()) or running_agent(fleet, host) is not None:
        return False
    root, digest, version = agent_bundle()
    result = await sync_release(fleet, host, app=AGENT_APP, version=version, digest=digest,
                                source=root)
    agent_installed(fleet, host)
    _INSTALLED.setdefault(fleet, set()).add(host.name)
    return not result.already_present


def agent_command(host: Host, operation: str) -> str:
    """The shell line that runs this controller's agent's ``operation`` on ``host``."""
    return (f"PYTHONPATH={shlex.quote(agent_path(host))} exec {PYTHON} -m {HOSTCTL} "
            f"{shlex.quote(operation)}")


async def call_agent(fleet: Fleet, host: Host, operation: str,
                     request: dict[str, Any], *, timeout_s: float | None = None
                     ) -> dict[str, Any]:
    """Run one hostctl operation on ``host`` and return its answer; its refusal becomes a
    TargetError naming the host. The agent must be installed (:func:`install_agent`).

    Asked of the host's resident agent (:mod:`.resident`), started on first use; by a
    command of its own when that agent cannot run or ends mid-call (every operation is
    idempotent, so asking again is safe). Either way within ``timeout_s`` (default
    ``command_timeout_s``) in all, or TargetUnreachable."""
    timeout_s = fleet.settings.command_timeout_s if timeout_s is None else timeout_s
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    resident = await resident_agent(fleet, host, command=agent_command(host, "serve"),
                                    version=agent_bundle()[2], timeout_s=timeout_s)
    if resident is not None:
        try:
            with fleet.reaching(host, "waiting for the host agent", timeout_s=timeout_s):
                _code, answer = await resident.request(
                    operation, request, timeout_s=max(0.0, deadline - loop.time()))
            return _answered(host, answer)
        except ResidentGone:
            log.info("%s: the resident host agent ended during %s; asking by command",
                     host, operation)
    result = await fleet.run(host, agent_command(host, operation),
                             stdin=json.dumps(request).encode(),
                             timeout_s=max(MIN_FALLBACK_S, deadline - loop.time()))
    try:
        printed = json.loads(result.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError, UnicodeDecodeError):
        printed = None
    if not isinstance(printed, dict):
        said = result.stderr_text(300)
        if "No module named" in said:
            _INSTALLED.get(fleet, set()).discard(host.name)
            raise AgentMissing(f"{host} has no entrega agent at {agent_path(host)}",
                               hint="run `entrega host prepare`")
        raise TargetError(f"{host}: the agent's {operation} failed (exit status "
                          f"{result.exit_status})", hint="see the host's instance logs "
                          f"under {posixpath.dirname(agent_path(host))}")
    return _answered(host, printed)


def _answered(host: Host, answer: dict[str, Any]) -> dict[str, Any]:
    if "error" in answer:
        raise TargetError(f"{host}: {answer['error']}", hint=answer.get("hint"))
    return answer


@dataclass(frozen=True)
class PreparedHost:
    """What ``entrega host prepare`` did on one host."""

    host: str
    address: str
    ok: bool
    #: the agent's version name (``agent-<digest>``) and where it is on the host
    agent: str
    agent_path: str | None = None
    #: True when the agent's files were sent now (False: the host had them)
    sent: bool = False
    error: str | None = None


async def prepare_hosts(fleet: Fleet, *, app: str, environment: str) -> list[PreparedHost]:
    """Install this controller's agent on every host and check that it runs there (one
    ``observe`` of the environment's instances); one report per host, in order."""
    _root, _digest, version = agent_bundle()

    async def on(host: Host) -> bool:
        sent = await install_agent(fleet, host)
        await call_agent(fleet, host, "observe", {
            "app": app, "environment": environment,
            "state_dir": state_dir(host, app), "address": host.address})
        return sent

    return [PreparedHost(host=o.host.name, address=o.host.address, ok=o.ok, agent=version,
                         agent_path=agent_path(o.host) if o.ok else None,
                         sent=bool(o.value), error=None if o.ok else str(o.error))
            for o in await fleet.each(on)]
