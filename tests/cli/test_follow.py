"""The follow loop of `deploy --wait` on its own: endings, backoff, reconnecting, giving up
(a scripted fetch, an injected clock: no server, no sleeping)."""

from __future__ import annotations

from typing import Any

import pytest

from entrega.cli.follow import (
    MAX_BACKOFF_S,
    compute_backoff_s,
    event_line,
    follow_rollout,
    judge_ending,
)
from entrega.errors import ApiError, ServerUnreachable


def view(phase: str, *events: tuple[int, str], message: str = "") -> dict[str, Any]:
    return {"id": 7, "version": "v2", "environment": "production", "phase": phase,
            "message": message,
            "events": [{"id": i, "time": 1_700_000_000 + i, "kind": "step", "message": m}
                       for i, m in events]}


@pytest.mark.parametrize(("phase", "code"), [
    ("pending", None), ("starting", None), ("progressing", None), ("verifying", None),
    ("scaling_down", None), ("succeeded", 0), ("rolled_back", 1), ("failed", 1),
    ("paused", 3)])
def test_ending_per_phase(phase: str, code: int | None) -> None:
    ending = judge_ending(view(phase))
    assert (ending.exit_code if ending else None) == code


@pytest.mark.parametrize(("attempt", "delay_s"), [
    (0, 0.2), (1, 0.4), (2, 0.8), (4, 3.2), (5, MAX_BACKOFF_S), (60, MAX_BACKOFF_S)])
def test_backoff_doubles_up_to_a_cap(attempt: int, delay_s: float) -> None:
    assert compute_backoff_s(attempt) == pytest.approx(delay_s)


def test_event_line_is_one_line_in_utc() -> None:
    line = event_line({"time": 0, "kind": "rolled_back", "message": "analysis failed:\n  x"})
    assert line == "1970-01-01T00:00:00Z rolled_back  analysis failed: x"


class Script:
    """Answers (or failures) in order, on a clock that only sleeping moves."""

    def __init__(self, *answers: dict[str, Any] | Exception) -> None:
        self.answers = list(answers)
        self.now = 0.0
        self.sleeps: list[float] = []
        self.shown: list[str] = []
        self.notes: list[str] = []

    def fetch(self) -> dict[str, Any]:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def run(self, **kwargs: Any) -> tuple[dict[str, Any], Any]:
        return follow_rollout(self.fetch, show_event=lambda e: self.shown.append(e["message"]),
                              note=self.notes.append, sleep=self.sleep,
                              clock=lambda: self.now, **kwargs)


def test_reconnects_and_shows_every_event_once() -> None:
    lost = ServerUnreachable("cannot reach the entrega server at http://127.0.0.1:1")
    script = Script(view("progressing", (1, "a")), lost, lost, lost,
                    ApiError("bad gateway", status_code=502),
                    view("progressing", (1, "a"), (2, "b"), (3, "c")),
                    view("succeeded", (1, "a"), (2, "b"), (3, "c"), (4, "promoted")))

    final, ending = script.run(poll_s=0.5)

    assert ending.exit_code == 0 and final["phase"] == "succeeded"
    assert script.shown == ["a", "b", "c", "promoted"]
    assert script.sleeps == [0.5, 0.2, 0.4, 0.8, 1.6, 0.5]
    assert script.notes[0].startswith("lost the server (cannot reach the entrega server")
    assert script.notes[1] == "reconnected after 3.0 s"


def test_gives_up_after_the_reconnect_timeout() -> None:
    script = Script(view("progressing", (1, "a")), ServerUnreachable("connection refused"))

    with pytest.raises(ServerUnreachable) as raised:
        script.run(reconnect_timeout_s=12)

    assert "no answer from the server for 12 s" in raised.value.message
    assert "entrega status" in str(raised.value.hint)
    assert sum(script.sleeps) == pytest.approx(0.5 + 12)  # never waits past the bound
    assert max(script.sleeps) <= MAX_BACKOFF_S


def test_a_real_error_is_not_retried() -> None:
    script = Script(ApiError("no rollout 7", status_code=404))
    with pytest.raises(ApiError):
        script.run()
    assert script.sleeps == []
