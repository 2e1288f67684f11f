"""``python -m entrega.dataplane.instances.hostctl OPERATION``: the host agent's command line.

A controller that drives instances on another host (the SSH target) can run one remote
command per operation: this one, with one JSON object on stdin, answered by one JSON
object on stdout (it keeps ``serve``, below, running instead, and falls back to this).
The work is :class:`~.host.HostInstances`', the same code the local target calls in
process, so a fleet behaves as this machine does. Operations, all idempotent (a repeated
start adopts, a repeated stop does nothing)::

    start    {where..., version, path, command, env, instances, ports}  -> {"endpoints": [...]}
    observe  {where..., version?}                                       -> {"instances": [...]}
    explain  {where..., version}                                        -> {"instances": [...]}
    stop     {where..., version, drain_s}                               -> {"stopped": [...]}
    router-start {where..., listen, preview_listen?, metrics_listen?, workers?}
                                                   -> {"router": {"pid", "listen", "control"...}}
    router-stop  {where..., listen}                                     -> {"stopped": bool}
    haproxy-start  {where..., haproxy..., files}   -> {"pid", "started", "sink_pid", "sink_started"}
    haproxy-write  {where..., haproxy..., files}                        -> {}
    haproxy-reload {where..., haproxy...}                               -> {"pid"}
    haproxy-stop   {where..., haproxy...}                               -> {"stopped": bool}
    router-retire  {where..., keep: embedded|haproxy}                   -> {"retired": [...]}

(``router-*``: the environment's router on this host, :mod:`.hostrouter`; ``listen`` is
``HOST:PORT`` on this host's own address. ``haproxy-*``: the environment's HAProxy and
its log sink, :mod:`.hosthaproxy`; ``haproxy...`` is ``dir``, ``socket``, ``logs``,
``control`` (absolute paths) and ``binary``; ``files``: file name -> text.)

``serve`` is the same operations without a process each: a resident agent that answers
requests as JSON lines for as long as its stdin is open (:mod:`.resident`).

where ``where`` is ``app``, ``environment``, ``state_dir`` (absolute, on this host),
``address`` (the host's address the instances listen on; default 127.0.0.1) and
``runtime`` (``process``, the default: supervised processes, :mod:`.host`; ``podman``:
containers, :mod:`.containers`). The records are :mod:`.wire`'s.

A failure answers ``{"error": SENTENCE, "hint": HINT_OR_NULL}``: exit code 2 when the
request itself is wrong (not JSON, an unknown operation or field), 1 when the operation
failed. Stdout never carries anything but that one object, never a traceback: an internal
error's traceback goes to stderr, for whoever debugs the agent. Standard library only: a
host has nothing else (see :mod:`.host`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from entrega.dataplane.instances.host import HostInstances
from entrega.dataplane.instances.hosthaproxy import HostHaproxy
from entrega.dataplane.instances.hostrouter import HostRouter, router_dir
from entrega.dataplane.instances.retire import KINDS, retire_other_kind
from entrega.dataplane.instances.wire import (
    RELEASE_FIELDS,
    ReleaseSpec,
    field,
    refuse_unknown,
)
from entrega.errors import BadRequest, EntregaError
from entrega.jsonin import loads_json

PROGRAM = "python -m entrega.dataplane.instances.hostctl"
#: Exit codes: the request is wrong (fix the caller), the operation failed (see error).
EXIT_BAD_REQUEST, EXIT_FAILED = 2, 1

_WHERE = {"app", "environment", "state_dir", "address", "runtime"}
#: How instances run (``runtime`` in every request; default: supervised processes).
RUNTIMES = ("process", "podman")

Request = Mapping[str, Any]


def _agent(request: Request) -> HostInstances:
    state_dir = field(request, "state_dir", str)
    if not Path(state_dir).is_absolute():
        raise BadRequest(f"field 'state_dir': expected an absolute path, got {state_dir!r}")
    runtime = field(request, "runtime", str, optional=True) or "process"
    if runtime not in RUNTIMES:
        raise BadRequest(f"field 'runtime': expected one of {', '.join(RUNTIMES)}, "
                         f"got {runtime!r}")
    kind: type[HostInstances] = HostInstances
    if runtime == "podman":
        # Imported here: every operation is a process of its own, and one on processes
        # need not pay for the container runtime's imports (tarfile...).
        from entrega.dataplane.instances.containers import HostContainers

        kind = HostContainers
    return kind(app=field(request, "app", str), environment=field(request, "environment", str),
                state_dir=Path(state_dir),
                address=field(request, "address", str, optional=True) or "127.0.0.1")


def start(request: Request) -> dict[str, object]:
    refuse_unknown(request, _WHERE | RELEASE_FIELDS, operation="start")
    agent = _agent(request)
    endpoints = agent.start(ReleaseSpec.from_json(request))
    return {"endpoints": [e.to_dict() for e in endpoints]}


def observe(request: Request) -> dict[str, object]:
    refuse_unknown(request, _WHERE | {"version"}, operation="observe")
    agent = _agent(request)
    observed = agent.observe(field(request, "version", str, optional=True))
    return {"instances": [dataclasses.asdict(o) for o in observed]}


def explain(request: Request) -> dict[str, object]:
    refuse_unknown(request, _WHERE | {"version"}, operation="explain")
    agent = _agent(request)
    reports = agent.explain(field(request, "version", str))
    return {"instances": [dataclasses.asdict(r) for r in reports]}


def stop(request: Request) -> dict[str, object]:
    refuse_unknown(request, _WHERE | {"version", "drain_s"}, operation="stop")
    agent = _agent(request)
    drain_s = field(request, "drain_s", float)
    if drain_s < 0:
        raise BadRequest(f"field 'drain_s': expected a number of seconds >= 0, got {drain_s}")
    return {"stopped": agent.stop(field(request, "version", str), drain_s=drain_s)}


_ROUTER_FIELDS = {"listen", "preview_listen", "metrics_listen", "workers"}


def _host_router(request: Request) -> HostRouter:
    state_dir = field(request, "state_dir", str)
    if not Path(state_dir).is_absolute():
        raise BadRequest(f"field 'state_dir': expected an absolute path, got {state_dir!r}")
    workers = field(request, "workers", int, optional=True) or 1
    if not 1 <= workers <= 64:
        raise BadRequest(f"field 'workers': expected 1 to 64, got {workers}")
    return HostRouter(app=field(request, "app", str),
                      environment=field(request, "environment", str),
                      state_dir=Path(state_dir), listen=field(request, "listen", str),
                      preview_listen=field(request, "preview_listen", str, optional=True),
                      metrics_listen=field(request, "metrics_listen", str, optional=True),
                      workers=workers)


def router_start(request: Request) -> dict[str, object]:
    refuse_unknown(request, _WHERE | _ROUTER_FIELDS, operation="router-start")
    return {"router": _host_router(request).ensure()}


def router_stop(request: Request) -> dict[str, object]:
    refuse_unknown(request, _WHERE | _ROUTER_FIELDS, operation="router-stop")
    return {"stopped": _host_router(request).stop()}


_HAPROXY_FIELDS = {"dir", "socket", "logs", "control", "binary"}


def _host_haproxy(request: Request, *, operation: str, files: bool = False
                  ) -> HostHaproxy:
    refuse_unknown(request, _WHERE | _HAPROXY_FIELDS | ({"files"} if files else set()),
                   operation=operation)
    paths = {}
    for name in ("dir", "socket", "logs", "control"):
        path = field(request, name, str)
        if not Path(path).is_absolute():
            raise BadRequest(f"field {name!r}: expected an absolute path, got {path!r}")
        paths[name] = Path(path)
    app, environment = field(request, "app", str), field(request, "environment", str)
    return HostHaproxy(**paths, binary=field(request, "binary", str, optional=True)
                       or "haproxy", where=f"the haproxy router of {app} {environment}")


def _files(request: Request) -> dict[str, str]:
    files = field(request, "files", dict)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise BadRequest("field 'files': expected file names mapped to their text")
    return files


def haproxy_start(request: Request) -> dict[str, object]:
    return _host_haproxy(request, operation="haproxy-start", files=True).ensure(
        _files(request))


def haproxy_write(request: Request) -> dict[str, object]:
    _host_haproxy(request, operation="haproxy-write", files=True).write(_files(request))
    return {}


def haproxy_reload(request: Request) -> dict[str, object]:
    return _host_haproxy(request, operation="haproxy-reload").reload()


def haproxy_stop(request: Request) -> dict[str, object]:
    return _host_haproxy(request, operation="haproxy-stop").stop()


def router_retire(request: Request) -> dict[str, object]:
    """Once the environment's router of kind ``keep`` holds its table: the router of
    another kind that an earlier configuration left on the same port is drained and
    stopped (retire.py)."""
    refuse_unknown(request, _WHERE | {"keep"}, operation="router-retire")
    keep = field(request, "keep", str)
    if keep not in KINDS:
        raise BadRequest(f"field 'keep': expected one of {', '.join(KINDS)}, got {keep!r}")
    state_dir = field(request, "state_dir", str)
    if not Path(state_dir).is_absolute():
        raise BadRequest(f"field 'state_dir': expected an absolute path, got {state_dir!r}")
    directory = router_dir(Path(state_dir), field(request, "app", str),
                           field(request, "environment", str))
    return {"retired": retire_other_kind(directory, keep)}


OPERATIONS: dict[str, Callable[[Request], dict[str, object]]] = {
    "start": start, "observe": observe, "explain": explain, "stop": stop,
    "router-start": router_start, "router-stop": router_stop,
    "haproxy-start": haproxy_start, "haproxy-write": haproxy_write,
    "haproxy-reload": haproxy_reload, "haproxy-stop": haproxy_stop,
    "router-retire": router_retire}


def run(operation: str, text: str) -> tuple[int, dict[str, object]]:
    """The exit code and the answer of ``operation`` on the request ``text``."""
    return answer(operation, lambda: _parse(text))


def answer(operation: str, request: Callable[[], Request]) -> tuple[int, dict[str, object]]:
    """The exit code and the answer of ``operation`` on what ``request`` reads (it raises
    BadRequest when the request is not one)."""
    try:
        handler = OPERATIONS.get(operation)
        if handler is None:
            raise BadRequest(f"unknown operation {operation!r}",
                             hint="one of " + ", ".join(OPERATIONS))
        return 0, handler(request())
    except BadRequest as exc:
        return EXIT_BAD_REQUEST, _error(exc)
    except EntregaError as exc:
        return EXIT_FAILED, _error(exc)
    except OSError as exc:  # the state directory cannot be written, a disk is full...
        where = f" ({exc.filename})" if exc.filename else ""
        return EXIT_FAILED, {"error": f"{operation} failed on this host: "
                                      f"{exc.strerror or 'an operating system error'}{where}",
                             "hint": "check the state directory's permissions and space"}
    except Exception:
        traceback.print_exc(file=sys.stderr)
        return EXIT_FAILED, {"error": f"{operation} failed on this host with an internal "
                                      "error of the host agent",
                             "hint": "its stderr holds the details; please report it"}


def _parse(text: str) -> Request:
    if not text.strip():
        raise BadRequest("expected one JSON object on stdin, got nothing")
    try:
        request = loads_json(text)
    except ValueError as exc:
        raise BadRequest(f"the request on stdin is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise BadRequest("the request on stdin must be a JSON object")
    return request


def _error(exc: EntregaError) -> dict[str, object]:
    return {"error": exc.message, "hint": exc.hint}


def main(argv: list[str] | None = None, *, stdin: IO[str] | None = None,
         stdout: IO[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = stdout or sys.stdout
    answer: dict[str, object]
    if len(args) != 1 or args[0].startswith("-"):
        code, answer = EXIT_BAD_REQUEST, {
            "error": f"usage: {PROGRAM} OPERATION, with the request as JSON on stdin",
            "hint": "OPERATION is one of " + ", ".join((*OPERATIONS, "serve"))}
    elif args[0] == "serve":
        from entrega.dataplane.instances.resident import serve  # it imports this module

        return serve(stdin or sys.stdin, out)
    else:
        code, answer = run(args[0], (stdin or sys.stdin).read())
    out.write(json.dumps(answer, sort_keys=True) + "\n")
    out.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
