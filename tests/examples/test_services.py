"""The three example services of issue 14 (an API, a web front calling it, a worker) and the
simulated users that count what they get: each service as a real process on loopback.

They are what the services demo delivers, so what the demo's verdicts rest on is checked
here: the API can break its contract while answering 200, and then it is the web front
that fails (502); a stalled worker turns its health 503; SIGTERM never drops a request.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from entrega.net import free_port
from entrega.waiting import wait_until_sync

SERVICES = Path(__file__).resolve().parents[2] / "examples" / "services"

real = pytest.mark.real


def load(path: Path, name: str) -> ModuleType:
    """A module of examples/services, which is a folder of scripts, not a package."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


traffic = load(SERVICES / "traffic.py", "services_traffic")
web_app = load(SERVICES / "web" / "app.py", "services_web_app")


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    base: str
    directory: Path

    def behave(self, behaviour: dict[str, object] | None) -> None:
        """Write (or, with None, remove) the behaviour.json the service re-reads."""
        path = self.directory / "behaviour.json"
        if behaviour is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(json.dumps(behaviour))


class Services:
    """Starts services from examples/services in directories of their own (like releases),
    and kills whatever is left of them at the end of the test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *, version: str = "1.0.0", env: dict[str, str] | None = None,
              behaviour: dict[str, object] | None = None, port: int | None = None,
              directory: Path | None = None) -> Service:
        if directory is None:
            directory = self.root / f"{name}-{len(self.processes)}"
            directory.mkdir()
            shutil.copy(SERVICES / name / "app.py", directory / "app.py")
            (directory / "VERSION").write_text(version + "\n")
        port = port or free_port()
        process = subprocess.Popen([sys.executable, "app.py"], cwd=directory,
                                   env={"HOST": "127.0.0.1", "PORT": str(port), **(env or {})},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.processes.append(process)
        service = Service(process, f"http://127.0.0.1:{port}", directory)
        service.behave(behaviour)

        def listening() -> bool:
            try:
                httpx.get(f"{service.base}/healthz", trust_env=False)
            except httpx.ConnectError:
                assert process.poll() is None, f"the {name} service exited while starting"
                return False
            return True

        assert wait_until_sync(listening, timeout_s=10), f"the {name} service did not listen"
        return service

    def close(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()
            if process.stderr:
                process.stderr.close()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    started = Services(tmp_path)
    yield started
    started.close()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10) as client:
        yield client


# --- the web front's reading of the API's answer: a pure function, by table ---------------

GOOD_ITEMS = [{"id": 1, "name": "moka pot", "stock": 3}]


@pytest.mark.parametrize(("payload", "problem"), [
    ({"version": "v1", "items": GOOD_ITEMS}, None),
    ({"version": "v1", "items": []}, None),
    ({"version": "v2", "data": GOOD_ITEMS}, "no 'items' list"),
    ({"version": "v2", "items": [{"id": 1, "title": "moka pot"}]}, "no 'id' and 'name'"),
    ({"version": "v2", "items": [{"id": "1", "name": "moka pot"}]}, "no 'id' and 'name'"),
    ({"version": "v2", "items": "moka pot"}, "no 'items' list"),
    ([GOOD_ITEMS], "not a JSON object"),
], ids=["contract", "no-items", "items-renamed", "name-renamed", "id-not-int",
        "items-not-list", "not-object"])
def test_web_front_reads_only_the_api_contract(payload: object, problem: str | None) -> None:
    if problem is None:
        version, items = web_app.read_items(payload)
        assert (version, items) == (payload["version"], payload["items"])  # type: ignore[index]
    else:
        with pytest.raises(web_app.ApiFailed, match=problem):
            web_app.read_items(payload)


@pytest.mark.parametrize(("earlier", "later", "window"), [
    ({}, {("a", 200): 3}, {("a", 200): 3}),
    ({("a", 200): 3}, {("a", 200): 5, ("a", 502): 2}, {("a", 200): 2, ("a", 502): 2}),
    ({("a", 200): 3, ("b", 500): 1}, {("a", 200): 3, ("b", 500): 1}, {}),
], ids=["from-nothing", "new-and-grown", "nothing-new"])
def test_traffic_counts_since_a_snapshot(earlier: dict[tuple[str, int], int],
                                         later: dict[tuple[str, int], int],
                                         window: dict[tuple[str, int], int]) -> None:
    before = traffic.TrafficCounts(earlier, {"c": 1}, {"c: could not connect": 1})
    after = traffic.TrafficCounts(later, {"c": 4}, {"c: could not connect": 4})

    between = after.since(before)

    assert between.statuses == window
    assert between.failures == {"c": 3}
    assert between.failure_reasons == {"c: could not connect": 3}
    assert between.requests == sum(window.values()) + 3


# --- the API -------------------------------------------------------------------------------

@real
def test_api_answers_its_items_with_the_version(services: Services, client: httpx.Client) -> None:
    api = services.start("api", version="v41")

    listing = client.get(f"{api.base}/api/items")
    one = client.get(f"{api.base}/api/items/2")
    missing = client.get(f"{api.base}/api/items/9")

    assert listing.status_code == 200 and listing.headers["x-version"] == "v41"
    assert listing.json()["version"] == "v41"
    assert [item["name"] for item in listing.json()["items"]] == [
        "espresso cup", "moka pot", "coffee beans, 1 kg"]
    assert one.json() == {"version": "v41", "item": {"id": 2, "name": "moka pot", "stock": 3}}
    assert missing.status_code == 404 and missing.json()["version"] == "v41"
    assert client.get(f"{api.base}/healthz").text == "ok\n"
    assert client.get(f"{api.base}/nope").status_code == 404


@real
def test_api_behaviour_injects_errors_and_latency(services: Services,
                                                  client: httpx.Client) -> None:
    api = services.start("api", behaviour={"error_rate": 0.3})

    statuses = [client.get(f"{api.base}/api/items").status_code for _ in range(300)]
    assert set(statuses) == {200, 500}
    assert 0.18 < statuses.count(500) / len(statuses) < 0.42  # p(outside) < 1e-5
    assert {client.get(f"{api.base}/healthz").status_code for _ in range(20)} == {200}

    api.behave({"latency_ms": 200, "fail_health": True})  # re-read by the next request
    began = time.monotonic()
    assert client.get(f"{api.base}/api/items").status_code == 200
    assert time.monotonic() - began >= 0.2
    assert client.get(f"{api.base}/healthz").status_code == 503


@real
def test_api_breaking_its_contract_answers_200_and_fails_the_web_front(
        services: Services, client: httpx.Client) -> None:
    api = services.start("api", version="v42")
    web = services.start("web", version="v17", env={"API_URL": api.base})
    assert client.get(f"{web.base}/?format=json").status_code == 200

    api.behave({"breaks_contract": True})
    api_statuses = [client.get(f"{api.base}/api/items").status_code for _ in range(20)]
    web_answers = [client.get(f"{web.base}/?format=json") for _ in range(20)]

    assert set(api_statuses) == {200}  # the API's own error rate stays 0...
    assert "items" not in client.get(f"{api.base}/api/items").json()
    assert client.get(f"{api.base}/api/items/1").json()["data"]["title"] == "espresso cup"
    assert {answer.status_code for answer in web_answers} == {502}  # ...its caller's does not
    assert web_answers[0].json() == {"error": "the API's answer has no 'items' list",
                                     "version": "v17"}

    api.behave(None)
    assert client.get(f"{web.base}/?format=json").status_code == 200


# --- the web front -------------------------------------------------------------------------

@real
def test_web_front_shows_the_api_items(services: Services, client: httpx.Client) -> None:
    api = services.start("api", version="v41")
    web = services.start("web", version="v17", env={"API_URL": api.base})

    page = client.get(f"{web.base}/")
    as_json = client.get(f"{web.base}/", headers={"Accept": "application/json"})

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<li>moka pot</li>" in page.text and "web v17, api v41" in page.text
    assert as_json.json() == {"version": "v17", "api_version": "v41", "items": [
        {"id": 1, "name": "espresso cup"}, {"id": 2, "name": "moka pot"},
        {"id": 3, "name": "coffee beans, 1 kg"}]}
    assert client.get(f"{web.base}/healthz").text == "ok\n"


@real
def test_web_front_answers_502_when_the_api_fails_or_is_gone(
        services: Services, client: httpx.Client) -> None:
    api = services.start("api", behaviour={"error_rate": 1.0})
    web = services.start("web", env={"API_URL": api.base, "API_TIMEOUT_MS": "300"})

    failed = client.get(f"{web.base}/?format=json")
    assert failed.status_code == 502
    assert failed.json()["error"] == f"the API at {api.base} answered 500"

    api.behave({"latency_ms": 1000})
    slow = client.get(f"{web.base}/?format=json")
    assert slow.status_code == 502
    assert slow.json()["error"] == f"the API at {api.base} did not answer within 300 ms"

    api.process.kill()
    api.process.wait()
    gone = client.get(f"{web.base}/")
    assert gone.status_code == 502
    assert "refused the connection" in gone.text and "Error" not in gone.text
    # The front's own health is not the API's: its instances stay in the router.
    assert client.get(f"{web.base}/healthz").status_code == 200


@real
def test_web_front_keeps_answering_across_an_api_restart(
        services: Services, client: httpx.Client) -> None:
    """The kept-alive connection to the old API is closed under the front: sent again on a
    new one, the request succeeds (no 502 for a connection recycled by the other side)."""
    api = services.start("api", version="v41")
    web = services.start("web", env={"API_URL": api.base})
    assert client.get(f"{web.base}/?format=json").json()["api_version"] == "v41"

    api.process.send_signal(signal.SIGTERM)
    assert api.process.wait(5) == 0
    (api.directory / "VERSION").write_text("v42\n")
    services.start("api", port=int(api.base.rsplit(":", 1)[1]), directory=api.directory)

    answers = [client.get(f"{web.base}/?format=json") for _ in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
    assert answers[0].json()["api_version"] == "v42"


@real
def test_web_front_behaviour_and_missing_api_url(services: Services,
                                                 client: httpx.Client) -> None:
    api = services.start("api")
    web = services.start("web", env={"API_URL": api.base},
                         behaviour={"error_rate": 1.0, "fail_health": True})

    injected = client.get(f"{web.base}/?format=json")
    assert injected.status_code == 500 and injected.json()["error"] == "injected failure"
    assert client.get(f"{web.base}/healthz").status_code == 503

    web.behave({"latency_ms": 200})
    began = time.monotonic()
    assert client.get(f"{web.base}/").status_code == 200
    assert time.monotonic() - began >= 0.2

    for env, problem in [({}, "API_URL is not set"), ({"API_URL": "127.0.0.1:80"},
                                                      "API_URL must be http://HOST:PORT")]:
        result = subprocess.run([sys.executable, str(SERVICES / "web" / "app.py")],
                                env={"PORT": str(free_port()), **env}, capture_output=True,
                                text=True, timeout=10)
        assert result.returncode == 2
        assert problem in result.stderr and "Traceback" not in result.stderr


# --- the worker ----------------------------------------------------------------------------

WORKER_ENV = {"JOB_INTERVAL_MS": "20", "STALL_AFTER_MS": "300"}


@real
def test_worker_does_jobs_and_reports_them(services: Services, client: httpx.Client) -> None:
    worker = services.start("worker", version="v9", env=WORKER_ENV)

    first = client.get(f"{worker.base}/stats").json()
    later = wait_until_sync(lambda: (s := client.get(f"{worker.base}/stats").json())
                            ["jobs_done"] >= first["jobs_done"] + 5 and s, timeout_s=5)

    assert later, "the worker did no 5 jobs in 5 s"
    assert later["version"] == "v9" and later["jobs_failed"] == 0
    assert later["checksum"] != first["checksum"]
    assert client.get(f"{worker.base}/healthz").status_code == 200

    worker.behave({"error_rate": 1.0})
    failing = wait_until_sync(lambda: client.get(f"{worker.base}/stats").json()
                              ["jobs_failed"] >= 3, timeout_s=5)
    assert failing, "the worker's jobs did not fail under error_rate 1.0"


@real
def test_worker_health_turns_503_while_its_loop_stalls(services: Services,
                                                       client: httpx.Client) -> None:
    worker = services.start("worker", env=WORKER_ENV)
    assert client.get(f"{worker.base}/healthz").status_code == 200

    worker.behave({"stall": True})
    unhealthy = wait_until_sync(lambda: (h := client.get(f"{worker.base}/healthz"))
                                .status_code == 503 and h, timeout_s=5)
    assert unhealthy, "the stalled worker stayed healthy for 5 s"
    assert "the job loop has finished no job for" in unhealthy.text
    stalled = client.get(f"{worker.base}/stats").json()
    assert stalled["stalled"] is True and stalled["since_last_job_ms"] > 300

    worker.behave(None)
    assert wait_until_sync(lambda: client.get(f"{worker.base}/healthz").status_code == 200,
                           timeout_s=5), "the worker did not recover once the stall was gone"
    assert client.get(f"{worker.base}/stats").json()["jobs_done"] > stalled["jobs_done"]


# --- graceful shutdown, all three ----------------------------------------------------------

@real
@pytest.mark.parametrize("name", ["api", "web", "worker"])
def test_sigterm_finishes_the_request_in_flight_and_exits_0(
        name: str, services: Services, client: httpx.Client) -> None:
    env = {"API_URL": "http://127.0.0.1:9"} if name == "web" else {}
    service = services.start(name, env=env)
    with httpx.Client(trust_env=False) as idle:
        idle.get(f"{service.base}/healthz")  # leaves an idle keep-alive connection open
        with client.stream("GET", f"{service.base}/slow?ms=600") as response:
            service.process.send_signal(signal.SIGTERM)  # the headers are in: it is in flight
            body = response.read()
        code = service.process.wait(5)

    assert json.loads(body)["slept_ms"] == 600
    assert code == 0
    with pytest.raises(httpx.ConnectError):
        client.get(f"{service.base}/healthz")


# --- the simulated users -------------------------------------------------------------------

@real
def test_traffic_counts_a_known_number_of_requests(services: Services) -> None:
    api = services.start("api")
    broken = services.start("api", behaviour={"error_rate": 1.0})
    web = services.start("web", env={"API_URL": api.base})
    dead = f"http://127.0.0.1:{free_port()}/"
    urls = [f"{web.base}/", f"{api.base}/api/items", f"{broken.base}/api/items", dead]

    users = traffic.Traffic(urls, users=3, rps=None, max_requests=80).start()
    assert users.wait(timeout_s=20), "80 requests did not finish in 20 s"
    counts = users.stop()

    assert counts.statuses == {(urls[0], 200): 20, (urls[1], 200): 20, (urls[2], 500): 20}
    assert counts.failures == {dead: 20}
    assert counts.requests == 80 and counts.errors() == 40 and counts.errors(urls[0]) == 0
    assert counts.answered(status=200) == 40 and counts.answered(urls[2]) == 20
    assert list(counts.failure_reasons) == [f"{dead}: could not connect "
                                            "([Errno 111] Connection refused)"]
    assert counts.failure_reasons[f"{dead}: could not connect "
                                  "([Errno 111] Connection refused)"] == 20


@real
def test_traffic_stops_cleanly_at_its_rate(services: Services) -> None:
    api = services.start("api", behaviour={"latency_ms": 100})
    users = traffic.Traffic([f"{api.base}/api/items"], users=4, rps=40)

    with users:
        assert wait_until_sync(lambda: users.counts().requests >= 10, timeout_s=5)
        began = time.monotonic()
    stopped_in_s = time.monotonic() - began
    final = users.counts()

    assert stopped_in_s < 1.0  # the requests in flight (100 ms each) finish, no more start
    assert not any(thread.is_alive() for thread in users._threads)
    assert final.failures == {} and set(final.statuses) == {(f"{api.base}/api/items", 200)}
    time.sleep(0.2)  # nothing is sent after stop: the counts stay as they were
    assert users.counts() == final


@real
def test_traffic_as_a_script_prints_its_counts(services: Services) -> None:
    api = services.start("api")
    url = f"{api.base}/api/items"

    result = subprocess.run([sys.executable, str(SERVICES / "traffic.py"), url,
                             "--requests", "12", "--rps", "200", "--duration-s", "10"],
                            capture_output=True, text=True, timeout=30)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"requests": 12, "errors": 0,
                                         "statuses": {url: {"200": 12}}, "failures": {},
                                         "failure_reasons": {}}
