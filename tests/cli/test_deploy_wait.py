"""`entrega deploy --wait` in process: one timestamped line per event when the output is not
a terminal, the last line in words, and an exit code per ending (0, 1, 3)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from entrega.rollouts.model import Phase
from entrega.waiting import wait_until_sync
from tests.cli.conftest import ApiServer, invoke

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \S+ +\S")

CANARY = [
    (Phase.PROGRESSING, "step 1/3", [("step", "v2 is ready"),
                                     ("step", "step 1/3: v2 receives 20% of traffic"),
                                     ("traffic", "router now sends v2 20%, v1 80%")]),
]


def lines_of(text: str) -> list[str]:
    assert text.endswith("\n"), f"the last line has no newline: {text[-80:]!r}"
    return text.splitlines()


def test_one_line_per_event_then_promoted_exit_0(api: ApiServer) -> None:
    api.release("v1")
    api.release("v2")
    assert invoke(api, ["deploy", "v1"]).exit_code == 0
    api.play(api.rollout(), [(Phase.SUCCEEDED, "v1 is live", [("promoted", "v1 promoted")])])

    result = api.invoke_while(["deploy", "v2", "--wait"], [
        *CANARY, (Phase.SUCCEEDED, "v2 promoted", [("promoted", "v2 promoted")])])

    assert result.exit_code == 0, result.output
    lines = lines_of(result.stdout)
    assert all(LINE.match(line) for line in lines), lines
    assert "following rollout 2 in production: v1 → v2 (canary)" in lines[0]
    assert [line.split(maxsplit=2)[1:] for line in lines[1:-1]] == [
        ["rollout", "rollout of v2 to production requested (canary, from v1)"],
        ["step", "v2 is ready"], ["step", "step 1/3: v2 receives 20% of traffic"],
        ["traffic", "router now sends v2 20%, v1 80%"], ["promoted", "v2 promoted"]]
    assert lines[-1].endswith("deploy       rollout 2: v2 promoted in production")
    assert "╭" not in result.stdout and "█" not in result.stdout  # no live panel in a pipe


@pytest.mark.parametrize(("phase", "message", "code", "last"), [
    (Phase.ROLLED_BACK, "analysis failed: error-rate", 1,
     "rollout 2: v2 rolled back in production: analysis failed: error-rate"),
    (Phase.FAILED, "v2 never became ready", 1,
     "rollout 2: v2 failed in production: v2 never became ready"),
    (Phase.PAUSED, "step 2/3: paused until promoted", 3,
     "rollout 2: v2 paused in production (step 2/3: paused until promoted): waiting for a "
     "person: `entrega promote -e production` or `entrega abort -e production`"),
], ids=["rolled-back", "failed", "paused"])
def test_exit_code_says_how_it_ended(api: ApiServer, phase: Phase, message: str, code: int,
                                     last: str) -> None:
    api.release("v1")
    api.release("v2")
    invoke(api, ["deploy", "v1"])
    api.play(api.rollout(), [(Phase.SUCCEEDED, "v1 is live", [])])

    result = api.invoke_while(["deploy", "v2", "--wait"],
                              [*CANARY, (phase, message, [("step", message)])])

    assert result.exit_code == code, result.output
    assert lines_of(result.stdout)[-1].endswith(last)


def test_first_release_shows_no_canary_steps(api: ApiServer) -> None:
    api.release("v1")
    result = api.invoke_while(["deploy", "v1", "--wait"], [
        (Phase.STARTING, "starting", [("step", "starting instances of v1")]),
        (Phase.SUCCEEDED, "v1 is live", [("traffic", "router now sends v1 100%"),
                                         ("promoted", "v1 promoted")])])

    assert result.exit_code == 0, result.output
    assert "v1 (first release: straight to 100%)" in result.stdout
    assert "weight" not in result.stdout and "pause" not in result.stdout
    view = json.loads(invoke(api, ["status", "--json"]).stdout)["environments"][0]
    assert view["last_rollout"]["strategy"] == "direct"
    assert view["last_rollout"]["steps"] == []


def test_json_keeps_stdout_for_the_view_and_lines_on_stderr(api: ApiServer) -> None:
    api.release("v1")
    api.release("v2")
    invoke(api, ["deploy", "v1"])
    api.play(api.rollout(), [(Phase.SUCCEEDED, "v1 is live", [])])

    result = api.invoke_while(["deploy", "v2", "--wait", "--json"], [
        *CANARY, (Phase.PAUSED, "step 2/3: paused until promoted", [])])

    assert result.exit_code == 3
    assert json.loads(result.stdout)["phase"] == "paused"
    lines = lines_of(result.stderr)
    assert all(LINE.match(line) for line in lines) and "paused in production" in lines[-1]


def test_help_documents_the_exit_codes(api: ApiServer) -> None:
    text = " ".join(invoke(api, ["deploy", "--help"]).stdout.split())
    assert "0 promoted, 1 rolled back or failed" in text
    assert "3 paused until a person runs `entrega promote`" in text


def test_an_unreachable_server_is_one_sentence(api: ApiServer) -> None:
    from entrega.net import free_port

    result = invoke(ApiServer(api.config, f"http://127.0.0.1:{free_port()}", api.service),
                    ["deploy", "v1", "--wait"])
    assert result.exit_code == 1
    assert str(result.exception).startswith("cannot reach the entrega server at")


def test_a_queued_deploy_is_followed_once_it_starts(api: ApiServer) -> None:
    from entrega.controller.pipeline import start_next

    for version in ("v1", "v2", "v3"):
        api.release(version)
    invoke(api, ["deploy", "v1"])
    api.play(api.rollout(), [(Phase.SUCCEEDED, "v1 is live", [])])
    invoke(api, ["deploy", "v2"])  # in progress: v3 queues behind it
    busy = api.rollout()

    def controller() -> None:
        api.play(busy, [(Phase.SUCCEEDED, "v2 promoted", [])])
        started = start_next(api.service.repo, api.service.config, "production")
        assert started is not None
        api.play(started, [(Phase.SUCCEEDED, "v3 promoted", [("promoted", "v3 promoted")])])

    # the controller's turn comes only after the CLI has seen v3 queued
    result = _invoke_then(api, ["deploy", "v3", "--wait"], controller)

    assert result.exit_code == 0, result.output
    lines = lines_of(result.stdout)
    assert all(LINE.match(line) for line in lines), lines
    assert "v3 queued for production behind the rollout in progress" in lines[0]
    assert "following rollout 3 in production: v2 → v3 (canary)" in lines[1]
    assert lines[-1].endswith("rollout 3: v3 promoted in production")


def test_a_superseded_deploy_exits_1(api: ApiServer) -> None:
    for version in ("v1", "v2", "v3", "v4"):
        api.release(version)
    invoke(api, ["deploy", "v1"])
    api.play(api.rollout(), [(Phase.SUCCEEDED, "v1 is live", [])])
    invoke(api, ["deploy", "v2"])

    # Another deployer (over the API: CliRunner is one per process at a time) asks for v4.
    result = _invoke_then(api, ["deploy", "v3", "--wait"], lambda: httpx.post(
        f"{api.url}/api/v1/environments/production/deploy", json={"version": "v4"},
        timeout=10).raise_for_status())

    assert result.exit_code == 1, result.output
    assert lines_of(result.stdout)[-1].endswith(
        "v3's deploy to production was superseded before it started: nothing was rolled out "
        "(`entrega history` says why)")


def _invoke_then(api: ApiServer, args: list[str], then: Callable[[], object]) -> Any:
    """Run `entrega ARGS` while, once its deploy request is queued, ``then`` runs."""
    def later() -> None:
        assert wait_until_sync(lambda: any(
            r.status == "queued"
            for r in api.service.repo.waiting_requests("shop", "production")),
            timeout_s=20), "the deploy was never queued"
        then()

    thread = threading.Thread(target=later, daemon=True)
    thread.start()
    try:
        return invoke(api, args)
    finally:
        thread.join(timeout=20)


def test_a_terminal_gets_the_live_panel_and_the_same_lines(
        api: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from entrega.cli import main

    screen = io.StringIO()
    monkeypatch.setattr(main, "console", Console(file=screen, force_terminal=True, width=200,
                                                 color_system=None))
    api.release("v1")
    api.release("v2")
    invoke(api, ["deploy", "v1"])
    api.play(api.rollout(), [(Phase.SUCCEEDED, "v1 is live", [])])

    result = api.invoke_while(["deploy", "v2", "--wait"], [
        *CANARY, (Phase.ROLLED_BACK, "analysis failed", [("rolled_back", "back to v1")])])

    assert result.exit_code == 1
    text = screen.getvalue()
    assert "step 1/3: v2 receives 20% of traffic" in text and "back to v1" in text
    assert "rollout 2: v1 → v2 (canary) rolled_back" in text  # the panel's last state
    assert text.endswith("rollout 2: v2 rolled back in production: analysis failed\n")
