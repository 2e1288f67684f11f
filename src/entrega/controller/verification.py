"""Verification of a release on a live address: HTTP checks and commands.

HTTP checks compare status (and optionally a body substring) within a timeout. Commands
run with ``ENTREGA_URL`` and ``ENTREGA_VERSION`` set; the exit code decides. Output is
captured (bounded) so a failure explains itself in the event log.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import httpx

from entrega.config import VerifyStep

OUTPUT_LIMIT = 4000


@dataclass(frozen=True)
class VerificationResult:
    passed: bool
    detail: str
    duration_s: float


async def _http_check(client: httpx.AsyncClient, base_url: str, step: VerifyStep) -> str | None:
    assert step.http is not None
    check = step.http
    url = base_url.rstrip("/") + check.path
    try:
        response = await client.get(url, timeout=check.timeout_s)
    except httpx.HTTPError as exc:
        return f"GET {check.path}: {type(exc).__name__}: {exc}"
    if response.status_code != check.expect_status:
        return (f"GET {check.path}: status {response.status_code}, "
                f"expected {check.expect_status}")
    if check.expect_body is not None and check.expect_body not in response.text:
        return f"GET {check.path}: body does not contain {check.expect_body!r}"
    return None


async def _command_check(base_url: str, version: str, step: VerifyStep,
                         cwd: str | None) -> str | None:
    assert step.command is not None
    env = {**os.environ, "ENTREGA_URL": base_url, "ENTREGA_VERSION": version}
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
                           cwd: str | None = None) -> VerificationResult:
    """Run every step in order; the first failure decides."""
    started = time.monotonic()
    async with httpx.AsyncClient() as client:
        for step in steps:
            if step.http is not None:
                problem = await _http_check(client, base_url, step)
            else:
                problem = await _command_check(base_url, version, step, cwd)
            if problem:
                return VerificationResult(False, problem, time.monotonic() - started)
    took = time.monotonic() - started
    return VerificationResult(True, f"{len(steps)} check(s) passed in {took:.2f}s", took)
