"""A changed entrega.yaml without a server restart, on a real server, real routers and real
traffic: SIGHUP applies a new strategy and analysis to the next rollout, a file with a
mistake is refused with its line while the running configuration keeps working, and a
new router address waits for the rollout in progress, then moves under load with no
failed request (`entrega config reload` says what waits)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from entrega.net import free_port
from tests.e2e.conftest import PAUSED_CANARY, Deployment, Users, wait_for

pytestmark = [pytest.mark.real, pytest.mark.slow]


def events(dep: Deployment, kind: str) -> list[dict[str, Any]]:
    # from the API: the CLI reads entrega.yaml, which a test may have broken on purpose
    history = httpx.get(f"{dep.api}/api/v1/history", params={"limit": 500}, timeout=10)
    return [e for e in history.json() if e["kind"] == kind]


def edit(dep: Deployment, old: str, new: str) -> None:
    text = dep.config.read_text()
    assert old in text, old
    dep.config.write_text(text.replace(old, new))


def sighup(dep: Deployment) -> None:
    assert dep.server is not None
    dep.server.send_signal(signal.SIGHUP)


def listening(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, int(port))) == 0


def test_sighup_applies_a_new_strategy_and_refuses_a_bad_file(
        make_deployment: Callable[[str], Deployment]) -> None:
    dep = make_deployment(PAUSED_CANARY)
    v1 = dep.deploy("v1")
    dep.wait_phase(v1["id"], {"succeeded"})

    edit(dep, "- weight: 20\n", "- weight: 50\n")
    edit(dep, "max_increase: 0.002", "max_increase: 0.05")
    sighup(dep)
    reloaded = wait_for(lambda: events(dep, "config_reloaded"), what="the reload event")[0]
    assert reloaded["actor"] == "SIGHUP"
    assert [c["path"] for c in reloaded["data"]["applied"]] == [
        "environments[production].strategy.canary.steps",
        "environments[production].analysis.error-rate.max_increase"]
    assert reloaded["data"]["waiting"] == [] and reloaded["data"]["needs_restart"] == []

    # The next rollout runs the new steps (a running one would keep the ones it began with).
    v2 = dep.deploy("v2")
    paused = dep.wait_phase(v2["id"], {"paused"}, timeout_s=40)
    assert paused["weights"] == {"v1": 50, "v2": 50}
    assert paused["steps"] == ["weight 50%", "pause", "weight 100%"]

    # A mistake (line 14: a weight above 100) is refused; the running config stays.
    good = dep.config.read_text()
    edit(dep, "- weight: 50\n", "- weight: 500\n")
    sighup(dep)
    refused = wait_for(lambda: events(dep, "config_refused"), what="the refusal event")[0]
    assert "entrega.yaml:14: environments[0].strategy.canary.steps[0].weight: Input should " \
           "be less than or equal to 100" in refused["message"], refused["message"]
    assert "the running configuration stays" in refused["message"]
    assert str(dep.root) not in refused["message"]
    dep.config.write_text(good)
    dep.cli("promote")
    dep.wait_phase(v2["id"], {"succeeded"})
    v3 = dep.deploy("v3")
    assert dep.wait_phase(v3["id"], {"paused"}, timeout_s=40)["weights"] == {"v2": 50, "v3": 50}
    assert dep.served_by(n=40).keys() <= {"v2", "v3"}
    assert len(events(dep, "config_reloaded")) == 1


class MovingUsers(Users):
    """Users sending to the old address until the new one accepts connections, then to
    the new one, as clients behind a health-checking load balancer would."""

    def __init__(self, old: str, new: str, rps: float = 60) -> None:
        super().__init__(old, rps)
        self.new = new
        self.by_address: Counter[str] = Counter()
        self._watch = threading.Thread(target=self._switch_when_up, daemon=True)

    def __enter__(self) -> MovingUsers:
        self._watch.start()
        super().__enter__()
        return self

    def _switch_when_up(self) -> None:
        while not self._stop.is_set():
            if listening(self.new):
                self.url = self.new
                return
            time.sleep(0.02)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += self.interval
                client.cookies.clear()
                url = self.url
                try:
                    response = client.get(url + "/api/products")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{url}: {type(exc).__name__}: {exc}")
                    continue
                self.by_address[url] += 1
                self.by_release[response.headers.get("x-entrega-release", "?")] += 1
                if response.status_code >= 500:
                    self.failures.append(f"{url}: {response.status_code} {response.text[:60]}")


def test_a_new_router_address_waits_for_the_rollout_then_moves_with_no_failed_request(
        make_deployment: Callable[[str], Deployment]) -> None:
    dep = make_deployment(PAUSED_CANARY)
    v1 = dep.deploy("v1")
    dep.wait_phase(v1["id"], {"succeeded"})
    v2 = dep.deploy("v2")
    dep.wait_phase(v2["id"], {"paused"}, timeout_s=40)

    new_port = free_port()
    new_url = f"http://127.0.0.1:{new_port}"
    edit(dep, f'listen: "127.0.0.1:{dep.router_port}"', f'listen: "127.0.0.1:{new_port}"')
    answer = dep.cli_json("config", "reload")
    assert answer["applied"] == [] and answer["needs_restart"] == []
    assert answer["waiting"] == [{
        "path": "environments[production].router.listen", "environment": "production",
        "before": f"127.0.0.1:{dep.router_port}", "after": f"127.0.0.1:{new_port}"}]
    assert answer["waiting_for"] == {"production": f"rollout {v2['id']} of v2 in progress"}
    text = dep.cli("config", "reload").stdout
    assert "router changes, applied once no rollout is in progress (production: rollout " \
           f"{v2['id']} of v2 in progress):" in text, text

    with MovingUsers(dep.router_url, new_url) as users:
        # Deferred: passes go by (the reconcile loop runs every second), nothing moves.
        passes = httpx.get(dep.api + "/healthz").json()["passes"]
        wait_for(lambda: httpx.get(dep.api + "/healthz").json()["passes"] >= passes + 3,
                 what="three reconcile passes")
        assert not listening(new_url)
        assert dep.rollout_by_id(v2["id"])["phase"] == "paused"

        dep.cli("promote")
        dep.wait_phase(v2["id"], {"succeeded"})
        applied = wait_for(lambda: events(dep, "config_applied"), 30, "the router change")[0]
        assert applied["environment"] == "production"
        assert applied["data"]["changes"] == [{
            "path": "environments[production].router.listen",
            "before": f"127.0.0.1:{dep.router_port}", "after": f"127.0.0.1:{new_port}"}]
        wait_for(lambda: not listening(dep.router_url), 30, "the old router to be gone")
        served = users.by_address[new_url]
        wait_for(lambda: users.by_address[new_url] > served + 60, what="traffic on the new "
                 "address")
    assert users.failures == []
    assert users.by_address[dep.router_url] > 60 and users.by_address[new_url] > 60
    assert dep.served_by(new_url, n=20) == Counter({"v2": 20})
    # The router on its new address is the environment's router from now on: the next
    # rollout splits traffic there.
    v3 = dep.deploy("v3")
    dep.wait_phase(v3["id"], {"paused"}, timeout_s=40)
    assert dep.served_by(new_url, n=60).keys() == {"v2", "v3"}
    status = dep.cli("config", "reload").stdout
    assert status.strip() == "configuration reloaded: nothing changed"


def test_more_router_workers_on_the_same_address_with_no_failed_request(
        make_deployment: Callable[[str], Deployment]) -> None:
    """The new router joins the old one's listeners (SO_REUSEPORT) before the old one
    drains: the address never refuses a connection."""
    dep = make_deployment(PAUSED_CANARY)
    v1 = dep.deploy("v1")
    dep.wait_phase(v1["id"], {"succeeded"})
    with Users(dep.router_url, rps=100) as users:
        wait_for(lambda: users.total > 50, what="traffic before the change")
        edit(dep, f'listen: "127.0.0.1:{dep.router_port}"',
             f'listen: "127.0.0.1:{dep.router_port}", workers: 2')
        answer = dep.cli_json("config", "reload")
        assert answer["waiting_for"] == {"production": "applying now"}
        applied = wait_for(lambda: events(dep, "config_applied"), 30, "the router change")[0]
        assert applied["data"]["changes"] == [{
            "path": "environments[production].router.workers", "before": "1", "after": "2"}]
        served = users.total
        wait_for(lambda: users.total > served + 100, what="traffic after the change")
    assert users.failures == []
    assert users.by_release == {"v1": users.total}
    log = (dep.root / ".entrega" / "routers" / "shop-production" / "router.log").read_text()
    assert f"listening on 127.0.0.1:{dep.router_port}, preview 127.0.0.1:" \
           f"{dep.preview_port} with 2 worker(s)" in log
    health = dep.cli_json("status")  # the server still drives the environment
    assert health["environments"][0]["current"] == "v1"


def test_a_server_restarted_on_a_moved_router_address_adopts_then_moves_it(
        make_deployment: Callable[[str], Deployment]) -> None:
    """The file changed while no server ran (or a change still waited when it stopped):
    the new server adopts the router as it runs, then moves it like a reload does."""
    dep = make_deployment(PAUSED_CANARY)
    v1 = dep.deploy("v1")
    dep.wait_phase(v1["id"], {"succeeded"})
    assert dep.server is not None
    dep.server.send_signal(signal.SIGTERM)
    dep.server.wait(timeout=15)
    new_port = free_port()
    new_url = f"http://127.0.0.1:{new_port}"
    edit(dep, f'listen: "127.0.0.1:{dep.router_port}"', f'listen: "127.0.0.1:{new_port}"')

    with MovingUsers(dep.router_url, new_url) as users:
        dep.start_server()
        adopted = wait_for(lambda: events(dep, "config_reloaded"), what="the adoption")[0]
        assert adopted["actor"] == "controller"
        assert f"runs on other settings than entrega.yaml (environments[production].router." \
               f"listen: 127.0.0.1:{dep.router_port} -> 127.0.0.1:{new_port})" \
               in adopted["message"]
        wait_for(lambda: events(dep, "config_applied"), 30, "the router change")
        wait_for(lambda: not listening(dep.router_url), 30, "the old router to be gone")
        served = users.by_address[new_url]
        wait_for(lambda: users.by_address[new_url] > served + 30, what="traffic on the new "
                 "address")
    assert users.failures == []
    assert dep.served_by(new_url, n=10) == Counter({"v1": 10})
