"""``hostctl serve``: the host agent kept running, answering many requests on one channel.

One ``hostctl OPERATION`` command per request costs a new ``python3`` on the host, which
imports entrega again each time (100-300 ms on a loaded host, more than the work of an
``observe``). A rollout asks every host many times (start, readiness reports, observe,
stop), so the controller keeps one agent per host running on one SSH channel of its
pooled connection instead, and sends it the same requests as lines:

    first line out: {"serving": AGENT_VERSION}      (before any request is read)
    in:  {"id": N, "op": "start"|"observe"|"explain"|"stop", "request": {...}}
    out: {"id": N, "code": EXIT_CODE, "answer": {...}}    (in any order)

``answer`` and ``code`` are what ``hostctl OP`` would print and exit with. Every request
runs in a thread of its own, so a stop that drains for seconds never holds an observe;
the work is :class:`~.host.HostInstances`', safe across threads (its start lock is an
``flock`` per open). ``AGENT_VERSION`` is the name of the directory the agent's code was
installed in (``agent-<digest>``): a controller of other code sees that this agent is not
its own and does not use it.

The agent lives exactly as long as its stdin: when the channel closes (the controller
closed it, died, or lost the host), it finishes the requests it has and exits. What it
starts does not depend on it: supervisors detach as they do for ``hostctl start``, so
instances outlive the agent, the SSH session and the controller.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from entrega.dataplane.instances.hostctl import EXIT_BAD_REQUEST, answer
from entrega.errors import BadRequest

#: The directory the running code was installed in: ``agent-<digest>`` on a fleet host.
AGENT_VERSION = Path(__file__).resolve().parents[3].name


def serve(stdin: IO[str], stdout: IO[str]) -> int:
    """Answer request lines from ``stdin`` until it ends; 0 then."""
    writing = threading.Lock()

    def send(message: dict[str, Any]) -> None:
        with writing:
            try:
                stdout.write(json.dumps(message, sort_keys=True) + "\n")
                stdout.flush()
            except (OSError, ValueError):  # the channel is gone: nobody waits any more
                pass

    send({"serving": AGENT_VERSION})
    workers: list[threading.Thread] = []
    for line in stdin:
        if not line.strip():
            continue
        try:
            message = json.loads(line)
            request_id = message["id"]
        except (ValueError, TypeError, KeyError):
            # Without an id no caller can be answered: say so on a line of its own.
            send({"id": None, "code": EXIT_BAD_REQUEST, "answer": {
                "error": "a request line must be a JSON object with an id", "hint": None}})
            continue
        worker = threading.Thread(target=_handle, args=(message, request_id, send),
                                  name=f"request {request_id}")
        worker.start()
        workers = [w for w in workers if w.is_alive()] + [worker]
    for worker in workers:  # a start or stop in progress is finished, not cut
        worker.join()
    return 0


def _handle(message: dict[str, Any], request_id: object,
            send: Callable[[dict[str, Any]], None]) -> None:
    def request() -> dict[str, Any]:
        body = message.get("request")
        if not isinstance(body, dict):
            raise BadRequest("the request must be a JSON object")
        return body

    code, body = answer(str(message.get("op")), request)
    send({"id": request_id, "code": code, "answer": body})
