"""Following a rollout to its end (`deploy --wait`): what a CI log and its exit code see.

A CI job runs `entrega deploy v2 --wait` with its output in a pipe for as long as the
rollout takes (minutes: analysis windows, pauses). So:

- every event of the rollout is one line, written and flushed as it arrives, timestamped
  in UTC (a terminal also gets the live panel; a pipe gets only the lines, since a live
  view drawn into a pipe shows nothing until it ends);
- the server may restart meanwhile (an upgrade, a crash) while the rollout goes on: the
  rollout and its events are in the store, so a lost connection is retried with backoff
  for up to ``reconnect_timeout_s``, and the events missed meanwhile are printed once it
  is back (events are followed by id, never by time);
- the exit code says how the rollout ended (:data:`EXIT_CODES`) and the last line says it
  in words: 0 promoted, 1 rolled back or failed, 3 paused until a person promotes or aborts.

:func:`follow_rollout` takes its I/O (fetch, print, sleep, clock) as arguments: the loop
and its backoff are tested without a server, the command with one.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from entrega.errors import ApiError, EntregaError, ServerUnreachable

EXIT_PROMOTED = 0
EXIT_FAILED = 1
EXIT_PAUSED = 3
#: the exit code of `deploy --wait` per final phase (paused is not final, but it waits for
#: a person, and a CI job should not)
EXIT_CODES = {"succeeded": EXIT_PROMOTED, "rolled_back": EXIT_FAILED, "failed": EXIT_FAILED,
              "paused": EXIT_PAUSED}
#: How long a lost server is waited for: a restart (even with a migration) is back in
#: seconds; after 5 minutes something else is wrong, and a CI job should say so and end.
RECONNECT_TIMEOUT_S = 300.0
POLL_S = 0.5
#: Backoff between reconnection attempts: quick at first (a restart takes about a second),
#: then no more than one attempt per MAX_BACKOFF_S.
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0
#: Status codes a proxy in front of the server answers while the server is away.
GATEWAY_ERRORS = (502, 503, 504)


T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Ending:
    """How a followed rollout ended: the exit code and the last line, in words."""

    exit_code: int
    line: str


def stamp(ts: float) -> str:
    """An instant as CI logs want it: ISO 8601, UTC, to the second."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_line(event: dict[str, Any]) -> str:
    """One event as one line (a message never spans lines: a log grep finds it whole)."""
    message = " ".join(str(event["message"]).split())
    return f"{stamp(event['time'])} {event['kind']:<12} {message}"


def judge_ending(view: dict[str, Any]) -> Ending | None:
    """The ending of a rollout in this state, or None while it still moves by itself."""
    phase = view["phase"]
    if phase not in EXIT_CODES:
        return None
    head = f"rollout {view['id']}: {view['version']}"
    env = view["environment"]
    message = view.get("message") or ""
    if phase == "succeeded":
        line = f"{head} promoted in {env}"
    elif phase == "rolled_back":
        line = f"{head} rolled back in {env}" + (f": {message}" if message else "")
    elif phase == "failed":
        line = f"{head} failed in {env}" + (f": {message}" if message else "")
    else:
        line = (f"{head} paused in {env}" + (f" ({message})" if message else "") +
                f": waiting for a person: `entrega promote -e {env}` or "
                f"`entrega abort -e {env}`")
    return Ending(EXIT_CODES[phase], line)


def compute_backoff_s(attempt: int) -> float:
    """The pause before reconnection attempt ``attempt`` (0, 1, ...): doubling, capped."""
    return float(min(FIRST_BACKOFF_S * 2 ** min(attempt, 16), MAX_BACKOFF_S))


def _temporary(exc: EntregaError) -> bool:
    if isinstance(exc, ServerUnreachable):
        return True
    return isinstance(exc, ApiError) and exc.status_code in GATEWAY_ERRORS


def poll(fetch: Callable[[], T], judge: Callable[[T], R | None], *,
         note: Callable[[str], None], reconnect_timeout_s: float = RECONNECT_TIMEOUT_S,
         poll_s: float = POLL_S, sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic) -> R:
    """``fetch`` every ``poll_s`` until ``judge`` returns something. A lost server is retried
    with backoff until ``reconnect_timeout_s`` has passed since it was lost; then
    :class:`ServerUnreachable` says so."""
    lost_at: float | None = None
    attempt = 0
    while True:
        try:
            answer = fetch()
        except EntregaError as exc:
            if not _temporary(exc):
                raise
            now = clock()
            if lost_at is None:
                lost_at = now
                note(f"lost the server ({exc.message}); the rollout goes on there: "
                     f"reconnecting for up to {reconnect_timeout_s:g} s")
            waited = now - lost_at
            if waited >= reconnect_timeout_s:
                raise ServerUnreachable(
                    f"gave up following the rollout: no answer from the server for "
                    f"{waited:.0f} s ({exc.message})",
                    hint="the rollout may still be going on: see `entrega status`") from None
            sleep(min(compute_backoff_s(attempt), reconnect_timeout_s - waited))
            attempt += 1
            continue
        if lost_at is not None:
            note(f"reconnected after {clock() - lost_at:.1f} s")
            lost_at, attempt = None, 0
        result = judge(answer)
        if result is not None:
            return result
        sleep(poll_s)


def follow_rollout(fetch: Callable[[], dict[str, Any]], *,
                   show_event: Callable[[dict[str, Any]], None],
                   note: Callable[[str], None],
                   show_view: Callable[[dict[str, Any]], None] = lambda view: None,
                   **polling: Any) -> tuple[dict[str, Any], Ending]:
    """Poll the rollout (``fetch`` returns its view with ``events``) until it ends; show
    each event once, in order (``polling``: see :func:`poll`)."""
    seen_id = 0

    def judge(view: dict[str, Any]) -> tuple[dict[str, Any], Ending] | None:
        nonlocal seen_id
        for event in sorted(view.get("events") or [], key=lambda e: int(e["id"])):
            if int(event["id"]) > seen_id:
                seen_id = int(event["id"])
                show_event(event)
        show_view(view)
        ending = judge_ending(view)
        return None if ending is None else (view, ending)

    return poll(fetch, judge, note=note, **polling)


def judge_start(stage: dict[str, Any], request: dict[str, Any]) -> int | Ending | None:
    """Where a queued deploy ``request`` stands, from its release's stage in the pipeline
    view: the id of the rollout it started, an ending when it never will, or None."""
    status = stage.get("status")
    if status in ("superseded", "cancelled"):
        return Ending(EXIT_FAILED, f"{request['version']}'s deploy to "
                                   f"{request['environment']} was {status} before it started: "
                                   "nothing was rolled out (`entrega history` says why)")
    rollout_id = stage.get("rollout_id")
    if rollout_id is not None and float(stage.get("since") or 0) >= request["created_at"]:
        return int(rollout_id)
    return None
