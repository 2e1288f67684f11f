"""The resident host agent, seen from the controller: one per host, on one SSH channel.

Each ``hostctl OPERATION`` command starts a new ``python3`` on the host that imports
entrega again (100-300 ms on a loaded host), and a rollout asks every host many times. So
:func:`~.agent.call_agent` first tries the host's resident agent (``hostctl serve``, see
:mod:`entrega.dataplane.instances.resident`): started once on a channel of the pooled
connection, it answers the same requests as JSON lines, each with an id, so calls run
concurrently and their answers are matched by id, not by order.

What it must never change is what a call means:

- every request keeps its timeout; a host that stops answering is named within it
  (:class:`~entrega.errors.TargetUnreachable`) and its connection is dropped, which ends
  the channel and so the agent;
- an agent that is gone (killed on the host, its channel or connection lost) fails the
  calls it was answering with :class:`ResidentGone`; they are idempotent, and the caller
  runs them once more as a command of their own. The next call starts a new agent;
- an agent that does not come up (an old host Python, a missing install) is not tried
  again for :data:`RETRY_AFTER_S`: its calls go by command meanwhile, which say what is
  wrong exactly as before;
- an agent answers only for the code it runs: its first line names the directory it was
  installed in (``agent-<digest>``), and one that is not this controller's is closed
  unused (an upgraded controller never talks to an older agent).

The agent lives as long as its channel; the instances it starts do not depend on it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import weakref
from typing import Any

import asyncssh

from entrega.errors import ResidentGone
from entrega.targets.ssh.connections import Fleet, Host

log = logging.getLogger(__name__)

#: After an agent failed to come up on a host, its calls go by command this long (s).
RETRY_AFTER_S = 30.0


class ResidentAgent:
    """A running ``hostctl serve`` on one host, and the requests waiting for its answers."""

    def __init__(self, host: Host, process: asyncssh.SSHClientProcess[bytes]) -> None:
        self.host = host
        self._process = process
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[tuple[int, dict[str, Any]]]] = {}
        self._reader = asyncio.create_task(self._read(), name=f"resident agent {host}")

    @property
    def alive(self) -> bool:
        return not self._reader.done()

    async def request(self, operation: str, request: dict[str, Any], *,
                      timeout_s: float) -> tuple[int, dict[str, Any]]:
        """The exit code and answer of ``operation``. Raises TimeoutError after
        ``timeout_s`` and ResidentGone when the agent ends first."""
        if not self.alive:
            raise ResidentGone
        request_id = next(self._ids)
        answered = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = answered
        try:
            line = json.dumps({"id": request_id, "op": operation, "request": request})
            try:
                self._process.stdin.write((line + "\n").encode())
            except (asyncssh.Error, OSError) as exc:
                raise ResidentGone from exc
            async with asyncio.timeout(timeout_s):
                return await answered
        finally:
            self._waiting.pop(request_id, None)

    async def _read(self) -> None:
        try:
            while line := await self._process.stdout.readline():
                try:
                    message = json.loads(line)
                    answered = self._waiting.get(message["id"])
                    code, answer = int(message["code"]), message["answer"]
                except (ValueError, TypeError, KeyError):
                    continue  # not an answer to anyone (a stray line)
                if answered is not None and not answered.done() and isinstance(answer, dict):
                    answered.set_result((code, answer))
        except (asyncssh.Error, OSError):
            pass  # the channel broke: as if the agent had ended
        finally:
            for answered in self._waiting.values():
                if not answered.done():
                    answered.set_exception(ResidentGone())

    def close(self) -> None:
        """End the channel (the agent finishes what it has and exits)."""
        self._process.close()


class _HostAgents:
    """The resident agents of one fleet, host by host."""

    def __init__(self) -> None:
        self.agents: dict[str, ResidentAgent] = {}
        self.opening: dict[str, asyncio.Lock] = {}
        #: host name -> when (loop time) its agent may be tried again after a failure
        self.retry_at: dict[str, float] = {}


_FLEETS: weakref.WeakKeyDictionary[Fleet, _HostAgents] = weakref.WeakKeyDictionary()


def running_agent(fleet: Fleet, host: Host) -> ResidentAgent | None:
    """The host's resident agent if one is up now (never starts one)."""
    agents = _FLEETS.get(fleet)
    agent = agents.agents.get(host.name) if agents is not None else None
    return agent if agent is not None and agent.alive else None


def agent_installed(fleet: Fleet, host: Host) -> None:
    """The agent was just installed on ``host``: an agent that could not start there
    before (it was missing) is tried again at the next call."""
    agents = _FLEETS.get(fleet)
    if agents is not None:
        agents.retry_at.pop(host.name, None)


async def resident_agent(fleet: Fleet, host: Host, *, command: str, version: str,
                         timeout_s: float) -> ResidentAgent | None:
    """The host's resident agent, started with ``command`` when there is none; None when
    it cannot run there now (the caller goes by command). Raises TargetUnreachable when
    the host cannot be reached at all."""
    agents = _FLEETS.setdefault(fleet, _HostAgents())
    async with agents.opening.setdefault(host.name, asyncio.Lock()):
        agent = agents.agents.get(host.name)
        if agent is not None and agent.alive:
            return agent
        loop = asyncio.get_running_loop()
        if loop.time() < agents.retry_at.get(host.name, 0.0):
            return None
        process = await fleet.start_process(host, command, timeout_s=timeout_s,
                                            doing="starting the host agent")
        serving = await _first_line(fleet, host, process, timeout_s)
        if serving != version:
            process.close()
            # No answer is expected before the agent's first install (a new host); an
            # agent of other code is not.
            log.log(logging.WARNING if serving else logging.INFO,
                    "%s: the resident host agent is not used (%s); its calls go by command "
                    "for %g s", host, f"it runs {serving}, not {version}" if serving
                    else "it did not start", RETRY_AFTER_S)
            agents.retry_at[host.name] = loop.time() + RETRY_AFTER_S
            return None
        agents.agents[host.name] = agent = ResidentAgent(host, process)
        return agent


async def _first_line(fleet: Fleet, host: Host, process: asyncssh.SSHClientProcess[bytes],
                      timeout_s: float) -> str | None:
    """The version the agent says it serves, or None when it ended without saying it (a
    Python that cannot run it, no agent installed: the command says why)."""
    with fleet.reaching(host, "starting the host agent", timeout_s=timeout_s):
        async with asyncio.timeout(timeout_s):
            line = await process.stdout.readline()
    try:
        serving = json.loads(line)["serving"]
    except (ValueError, TypeError, KeyError):
        return None
    return serving if isinstance(serving, str) else None
