"""Calling :mod:`.hostside` on a host: ``python3 -c <its source> <one JSON argument>``.

The host needs Python 3 and nothing else (as Ansible's hosts do): the helper's source
travels with every call, a few kilobytes on a connection that is already open. Its answer
is one JSON object on stdout, validated here; a refusal it reports (exit 2) becomes an
:class:`~entrega.errors.ArtifactError` naming the host.
"""

from __future__ import annotations

import functools
import json
import shlex
from pathlib import Path
from typing import Any

from entrega.errors import ArtifactError, TargetError
from entrega.targets.ssh.connections import CommandResult, Fleet, Host

#: The remote interpreter. Exit status 127 from the shell: it is not installed.
PYTHON = "python3"
_SHELL_NOT_FOUND = 127


@functools.cache
def hostside_source() -> str:
    return (Path(__file__).with_name("hostside.py")).read_text()


def hostside_command(args: dict[str, Any]) -> str:
    return " ".join([PYTHON, "-c", shlex.quote(hostside_source()),
                     shlex.quote(json.dumps(args))])


async def call_hostside(fleet: Fleet, host: Host, args: dict[str, Any], *,
                        stdin_file: Path | None = None) -> tuple[dict[str, Any], int]:
    """Run the helper's ``args["op"]`` on ``host``; returns its answer and the bytes of
    ``stdin_file`` sent to it (0 without one; with ``args["ask_first"]``, only when the
    helper's first line says it lacks them: ``{"state": "absent"}``)."""
    command = hostside_command(args)
    sent = 0
    if stdin_file is None:
        result = await fleet.run(host, command)
    else:
        wants = _absent if args.get("ask_first") else None
        result, sent = await fleet.run_streaming(host, command, stdin_file, send_if=wants)
    return parse_answer(host, args["op"], result), sent


def _absent(first_line: bytes) -> bool:
    try:
        return bool(json.loads(first_line).get("state") == "absent")
    except (ValueError, AttributeError):
        return False  # not the helper's line: its final answer says what went wrong


def parse_answer(host: Host, op: str, result: CommandResult) -> dict[str, Any]:
    if result.exit_status == _SHELL_NOT_FOUND:
        raise TargetError(f"{host} has no {PYTHON} (the one thing a fleet host needs)",
                          hint="install Python 3 on the host")
    try:
        answer = json.loads(result.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError, UnicodeDecodeError):
        answer = None
    if not isinstance(answer, dict):
        said = _last_words(result.stderr)
        raise TargetError(f"{host}: the {op} step failed (exit status {result.exit_status})"
                          + (f": {said}" if said else ""))
    if "error" in answer:
        raise ArtifactError(f"{host}: {answer['error']}")
    return answer


def _last_words(stderr: bytes) -> str:
    """The last line the host's shell said (a login script's complaint, a missing
    command), unless it is a Python traceback's, which names exception classes."""
    lines = stderr.decode(errors="replace").strip().splitlines()
    if not lines or any(line.startswith("Traceback") for line in lines):
        return ""
    return lines[-1].strip()[:300]
