"""kill -9 of the controller at any point of a rollout: no request dropped, no instance
stopped, and a restarted server resumes the rollout where it stood."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.conftest import Deployment, Users, wait_for

pytestmark = [pytest.mark.real, pytest.mark.slow]

CANARY = """\
      canary:
        steps:
          - weight: 20
          - pause: {duration_s: 2}
          - analysis: {duration_s: 4, metrics: [error-rate]}
          - weight: 60
          - pause: {}
          - weight: 100
"""


@pytest.mark.parametrize("kill_in", ["starting", "pause", "analysis", "paused"])
def test_kill_9_then_restart_resumes_the_rollout(
        make_deployment: Callable[[str], Deployment], kill_in: str) -> None:
    dep = make_deployment(CANARY)
    v1 = dep.deploy("v1")
    dep.wait_phase(v1["id"], {"succeeded"})
    stable_pids = sorted(dep.instance_pids()["v1"])

    with Users(dep.router_url) as users:
        rollout = dep.deploy("v2")
        rid = rollout["id"]
        if kill_in == "starting":
            pass  # kill at once: the rollout is pending or starting
        elif kill_in == "pause":
            wait_for(lambda: dep.rollout_by_id(rid)["message"].startswith("step 2/6: pause"),
                     what="the timed pause")
        elif kill_in == "analysis":
            wait_for(lambda: dep.rollout_by_id(rid)["analysis"] is not None,
                     what="the analysis step")
        else:
            dep.wait_phase(rid, {"paused"})
        before = dep.rollout_by_id(rid)
        dep.kill_server()

        # The data plane does not notice: requests keep flowing on the last routes.
        served = users.total
        wait_for(lambda: users.total > served + 60, what="traffic while the controller is down")
        assert users.failures == []
        assert sorted(dep.instance_pids()["v1"]) == stable_pids

        dep.start_server()
        # The restart is in the history: what the new server adopted, by pid.
        adopted = [e for e in dep.cli_json("history", "--limit", "500")
                   if e["kind"] == "adopted"]
        assert len(adopted) == 1, adopted
        assert adopted[0]["data"]["router"]["pid"] == _router_pid(dep)
        assert sorted(i["pid"] for i in adopted[0]["data"]["instances"]["v1"]) == stable_pids
        after = dep.rollout_by_id(rid)
        assert after["step_index"] >= before["step_index"]
        dep.wait_phase(rid, {"paused"}, timeout_s=40)
        assert dep.rollout_by_id(rid)["weights"] == {"v1": 40, "v2": 60}
        dep.cli("promote")
        done = dep.wait_phase(rid, {"succeeded"})
        assert done["weights"] == {"v2": 100}
        wait_for(lambda: "v1" not in dep.instance_pids(), what="v1 to be stopped")
    assert users.failures == []
    assert users.by_release["v1"] > 0 and users.by_release["v2"] > 0
    # One rollout, resumed: no second start of v2 and no duplicate step events.
    history = dep.cli_json("history", "--limit", "500")
    weight_events = [e["message"] for e in history
                     if e["kind"] == "step" and "receives 60%" in e["message"]]
    assert len(weight_events) == 1


def test_stopped_router_is_restarted_with_its_routes(deployment: Deployment) -> None:
    import os
    import signal

    dep = deployment
    v1 = dep.deploy("v1")
    dep.wait_phase(v1["id"], {"succeeded"})
    killed = _router_pid(dep)
    os.kill(killed, signal.SIGKILL)
    # The controller's repair pass notices and starts the router again, on its last routes.
    wait_for(lambda: _served(dep) == {"v1": 20}, timeout_s=20, what="the router to be back")
    # ... and says so in the history.
    [event] = [e for e in dep.cli_json("history") if e["kind"] == "router_restarted"]
    assert event["actor"] == "controller" and event["data"]["pid"] == _router_pid(dep) != killed
    assert "did not answer on its control socket" in event["message"]


def _served(dep: Deployment) -> dict[str, int] | None:
    import httpx

    try:
        return dict(dep.served_by())
    except httpx.HTTPError:
        return None


def _router_pid(dep: Deployment) -> int:
    import json

    text = next((dep.root / ".entrega" / "routers").glob("*/router.pid")).read_text()
    return int(json.loads(text)["pid"]) if text.startswith("{") else int(text.strip())
