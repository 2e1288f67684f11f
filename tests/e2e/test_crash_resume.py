"""kill -9 of the controller at any point of a rollout: no request dropped, no instance
stopped, and a restarted server resumes the rollout where it stood."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from entrega.routers.base import Routes
from entrega.routers.embedded import EmbeddedRouter
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


def test_a_router_worker_restarted_by_the_data_plane_is_in_history(
        deployment: Deployment) -> None:
    """The router's supervisor replaces a killed worker by itself; the controller reads the
    restart from the router and records it once, as the router's own event."""
    import os
    import signal

    from entrega.config import load_config
    from entrega.controller.runtime import build_runtime

    dep = deployment
    v1 = dep.deploy("v1")
    dep.wait_phase(v1["id"], {"succeeded"})
    config = load_config(dep.config)
    router = build_runtime(config, config.environments[0]).router
    assert isinstance(router, EmbeddedRouter)
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(router.socket_path)),
                      base_url="http://router") as control:
        [worker] = control.get("/health").json()["workers"]["pids"]
    os.kill(worker, signal.SIGKILL)

    def recorded() -> list[dict[str, object]]:
        return [e for e in dep.cli_json("history")
                if e["kind"] == "router_restarted" and e["actor"] == "router"]

    wait_for(lambda: len(recorded()) == 1, timeout_s=30, what="the worker restart in history")
    [event] = recorded()
    assert "router worker" in str(event["message"]) and "signal 9" in str(event["message"])
    assert dep.served_by() == {"v1": 20}  # served all along by the replacement


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


BLUE_GREEN = """\
      blue_green: {auto_promote: true, scale_down_delay_s: 0}
"""


def test_kill_9_in_verification_with_the_preview_route_lost_still_promotes(
        tmp_path: Path) -> None:
    """The server is killed with -9 while it verifies a blue-green preview, and the data
    plane is left behind the store (the preview route gone, as when the kill lands between
    the commit of `verifying` and the route change): the restarted server repairs the
    route before it verifies again, and promotes the good release."""
    dep = Deployment(tmp_path, BLUE_GREEN)
    check = '      - http: {path: /api/products, expect_status: 200, expect_body: "moka pot"}\n'
    text = dep.config.read_text()
    assert check in text
    # A second, slow check keeps the rollout in `verifying` long enough to aim the kill.
    dep.config.write_text(text.replace(check, check + '      - command: "sleep 2"\n'))
    dep.start_server()
    try:
        v1 = dep.deploy("v1")
        dep.wait_phase(v1["id"], {"succeeded"})
        with Users(dep.router_url) as users:
            rid = dep.deploy("v2")["id"]
            dep.wait_phase(rid, {"verifying"})
            dep.kill_server()

            router = EmbeddedRouter(name="shop-production", listen=dep.router_url[7:],
                                    preview_listen=dep.preview_url[7:],
                                    state_dir=dep.root / ".entrega")
            routes = asyncio.run(_drop_preview(router))
            assert routes.preview == "v2" and routes.weights == {"v1": 100}
            assert httpx.get(dep.preview_url + "/api/products", timeout=5).status_code == 503

            dep.start_server()
            done = dep.wait_phase(rid, {"succeeded", "rolled_back", "failed"}, timeout_s=60)
            events = dep.rollout_by_id(rid)["events"]
            assert done["phase"] == "succeeded", [e["message"] for e in events]
            assert [e["kind"] for e in events].count("verified") == 1
            assert "verification_failed" not in [e["kind"] for e in events]
            wait_for(lambda: dep.served_by() == {"v2": 20}, what="all traffic on v2")
        assert users.failures == []
    finally:
        dep.stop()


async def _drop_preview(router: EmbeddedRouter) -> Routes:
    """Take the preview out of the router's table; returns the table it had."""
    try:
        live = await router.get_routes()
        await router.set_routes(Routes(
            backends={v: e for v, e in live.backends.items() if v in live.weights},
            weights=live.weights, cohort=live.cohort, pin_salt=live.pin_salt))
        return live
    finally:
        await router.close()
