"""Verification of a release on a live address: HTTP checks and commands.

An HTTP check tells two failures apart, because only one of them says anything about
the release:

- *the release answered wrongly* (a status other than the expected one, a body without
  the expected text): the check fails at once;
- *the release could not be reached* (connection refused or reset, no answer in time,
  or, through the router, the router's own 502/503/504 that it sends when it has no
  route or no instance answers): the check tries again, with backoff, until its
  ``timeout_s`` is spent. A router restarting, or a route being applied, takes well
  under that; a release that stays unreachable still fails, saying so.

Commands run with ``ENTREGA_URL`` and ``ENTREGA_VERSION`` set; the exit code decides.
Output is captured (bounded) so a failure explains itself in the event log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from entrega.config import VerifyStep
from entrega.procenv import PYTHON_VARIABLES, minimal_env

OUTPUT_LIMIT = 4000
#: Statuses the router answers by itself when it cannot reach the release (no route on
#: the listener, no instance accepted the connection, the upstream timed out).
ROUTER_UNREACHABLE = frozenset({502, 503, 504})
#: Backoff between tries to reach the release: fast at first (a route being applied,
#: a router worker restarting take milliseconds), then at most once a second.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0


@dataclass(frozen=True)
class VerificationResult:
    passed: bool
    detail: str
    duration_s: float


async def _http_check(client: httpx.AsyncClient, base_url: str, step: VerifyStep, *,
                      via_router: bool) -> str | None:
    assert step.http is not None
    check = step.http
    url = base_url.rstrip("/") + check.path
    deadline = time.monotonic() + check.timeout_s
    delay = RETRY_FIRST_S
    tries = 0
    while True:
        tries += 1
        remaining = max(deadline - time.monotonic(), RETRY_FIRST_S)
        try:
            response = await client.get(url, timeout=remaining)
        except httpx.TransportError as exc:
            unreachable = _describe(exc, remaining)
        except httpx.HTTPError as exc:  # an answer came, but not one HTTP can read
            return f"GET {check.path}: the release answered wrongly: {exc}"
        else:
            status = response.status_code
            if via_router and status in ROUTER_UNREACHABLE and status != check.expect_status:
                first = response.text.strip().splitlines()[:1]
                unreachable = f"the router answered {status}" + \
                    (f" ({first[0][:200]})" if first else "")
            elif status != check.expect_status:
                return (f"GET {check.path}: the release answered wrongly: status {status}, "
                        f"expected {check.expect_status}")
            elif check.expect_body is not None and check.expect_body not in response.text:
                return (f"GET {check.path}: the release answered wrongly: the body does not "
                        f"contain {check.expect_body!r}")
            else:
                return None
        left = deadline - time.monotonic()
        if left <= 0:
            return (f"GET {check.path}: could not reach the release at {url} within "
                    f"{check.timeout_s:g}s ({tries} tries); last: {unreachable}")
        # The last try lands on the deadline, not before it: a release that starts
        # listening in the final back-off interval still passes, and "within Ns"
        # means the whole N seconds were given.
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, RETRY_MAX_S)


def _describe(exc: httpx.TransportError, timeout_s: float) -> str:
    """Why a request got no answer, in words (never a Python class name)."""
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout_s:.1f}s"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({exc})" if str(exc) else "cannot connect"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return "the connection was closed before an answer"
    return f"no answer ({exc})" if str(exc) else "no answer"


async def _command_check(base_url: str, version: str, step: VerifyStep,
                         cwd: str | None, inherit_env: Sequence[str]) -> str | None:
    assert step.command is not None
    # A check is the user's own program, like an instance: it gets the minimal environment
    # and what run.inherit_env names, never the controller's secrets (the webhook's).
    env = {**minimal_env(inherit=(*PYTHON_VARIABLES, "VIRTUAL_ENV", *inherit_env)),
           "ENTREGA_URL": base_url, "ENTREGA_VERSION": version}
    process = await asyncio.create_subprocess_shell(
        step.command, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=step.timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        return f"`{step.command}` timed out after {step.timeout_s:g}s"
    if process.returncode != 0:
        text = output.decode(errors="replace")[-OUTPUT_LIMIT:].strip()
        return f"`{step.command}` exited {process.returncode}: {text}"
    return None


async def run_verification(steps: list[VerifyStep], *, base_url: str, version: str,
                           cwd: str | None = None,
                           via_router: bool = False,
                           inherit_env: Sequence[str] = ()) -> VerificationResult:
    """Run every step in order; the first failure decides.

    ``via_router``: ``base_url`` is a router's listener, whose own 502/503/504 mean the
    release was not reached (on an instance's address they are the release's answer).
    """
    started = time.monotonic()
    async with httpx.AsyncClient() as client:
        for step in steps:
            if step.http is not None:
                problem = await _http_check(client, base_url, step, via_router=via_router)
            else:
                problem = await _command_check(base_url, version, step, cwd, inherit_env)
            if problem:
                return VerificationResult(False, problem, time.monotonic() - started)
    took = time.monotonic() - started
    return VerificationResult(True, f"{len(steps)} check(s) passed in {took:.2f}s", took)
