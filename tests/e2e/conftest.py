"""End-to-end fixtures: a real `entrega server`, real routers and app processes, the real
CLI, and simulated users sending real HTTP traffic through the router."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from entrega.net import free_port
from entrega.waiting import wait_until_sync

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop" / "app.py"

CONFIG = """\
app: shop
server: {{listen: "127.0.0.1:{server}"}}
run:
  command: "{python} app.py"
  health: {{path: /healthz, interval_s: 0.1, healthy_threshold: 2}}
  drain_s: 3
environments:
  - name: production
    target: {{kind: local, instances: 2}}
    router: {{kind: embedded, listen: "127.0.0.1:{router}", preview_listen: "127.0.0.1:{preview}"}}
    strategy:
{strategy}
    analysis:
      # a step passes on evidence; these tests send a few hundred requests, not the
      # ~600 clean ones that prove a rate below the default pass_rate (1%): 20% takes ~30
      error-rate: {{judge: sequential, max_increase: 0.002, min_requests: 20, pass_rate: 0.2}}
    verify:
      - http: {{path: /api/products, expect_status: 200, expect_body: "moka pot"}}
"""

PAUSED_CANARY = """\
      canary:
        steps:
          - weight: 20
          - pause: {}
          - weight: 100
"""


def wait_for(predicate: Callable[[], Any], timeout_s: float = 20.0, what: str = "") -> Any:
    last: Any = None

    def check() -> Any:
        nonlocal last
        last = predicate()
        return last

    found = wait_until_sync(check, timeout_s=timeout_s, interval_s=0.05)
    if found:
        return found
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}; "
                         f"last: {last!r}")


class Users:
    """Simulated users in a thread: steady requests through the router, every failure kept."""

    def __init__(self, url: str, rps: float = 60) -> None:
        self.url = url
        self.interval = 1 / rps
        self.by_release: Counter[str] = Counter()
        self.injected = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Users:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += self.interval
                # Each request is a new anonymous visitor: the router pins a visitor to a
                # release with a cookie, and one jar for all would be a single user.
                client.cookies.clear()
                try:
                    response = client.get(self.url + "/api/products")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                release = response.headers.get("x-entrega-release", "?")
                self.by_release[release] += 1
                if response.status_code == 500 and b"injected failure" in response.content:
                    self.injected += 1
                elif response.status_code >= 500:
                    self.failures.append(f"{response.status_code} {release} {response.text[:60]}")

    @property
    def total(self) -> int:
        return sum(self.by_release.values()) + len(self.failures)


class Deployment:
    """One app under entrega in a temporary directory."""

    def __init__(self, root: Path, strategy: str = PAUSED_CANARY,
                 router: str = "embedded") -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.server_port, self.router_port, self.preview_port = (free_port(), free_port(),
                                                                 free_port())
        self.config = root / "entrega.yaml"
        text = CONFIG.format(server=self.server_port, router=self.router_port,
                             preview=self.preview_port, python=sys.executable,
                             strategy=strategy)
        if router == "haproxy":
            text = text.replace(
                "router: {kind: embedded,", f'router: {{kind: haproxy, binary: "{haproxy()}",')
        self.config.write_text(text)
        self.api = f"http://127.0.0.1:{self.server_port}"
        self.router_url = f"http://127.0.0.1:{self.router_port}"
        self.preview_url = f"http://127.0.0.1:{self.preview_port}"
        self.server: subprocess.Popen[bytes] | None = None
        self._log = None

    # -- artifacts and processes -----------------------------------------------------------

    def artifact(self, version: str, **settings: Any) -> Path:
        path = self.root / "artifacts" / version
        path.mkdir(parents=True, exist_ok=True)
        shutil.copy(SHOP, path / "app.py")
        (path / "VERSION").write_text(version)
        if settings:
            (path / "shop.json").write_text(json.dumps(settings))
        return path

    def start_server(self) -> None:
        self._log = (self.root / "server.log").open("ab")
        self.server = subprocess.Popen(
            [sys.executable, "-m", "entrega", "server", "-c", str(self.config)],
            cwd=self.root, stdout=self._log, stderr=subprocess.STDOUT)

        def healthy() -> bool:
            assert self.server is not None
            if self.server.poll() is not None:
                raise AssertionError("server exited:\n" + self.server_log())
            try:
                return httpx.get(self.api + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        # Generous: a start is seconds, but a loaded 2-core CI machine has made it 30 s.
        try:
            wait_for(healthy, 90, "the server to answer")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its log:\n{self.server_log()}") from None

    def kill_server(self) -> None:
        """kill -9: no chance to clean anything up."""
        assert self.server is not None
        self.server.send_signal(signal.SIGKILL)
        self.server.wait(timeout=10)

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.server.kill()
        self.cli("down", check=False)
        if self._log:
            self._log.close()

    def server_log(self) -> str:
        path = self.root / "server.log"
        return path.read_text()[-3000:] if path.exists() else ""

    # -- the user's view -------------------------------------------------------------------

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "entrega", *args, "-c", str(self.config)],
                                cwd=self.root, capture_output=True, text=True, timeout=120,
                                env={**os.environ, "COLUMNS": "200"})
        if check and result.returncode != 0:
            raise AssertionError(f"entrega {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}\n{self.server_log()}")
        return result

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def status(self) -> dict[str, Any]:
        env = self.cli_json("status")["environments"][0]
        return dict(env)

    def rollout(self) -> dict[str, Any] | None:
        return self.status()["rollout"]

    def rollout_by_id(self, rollout_id: int) -> dict[str, Any]:
        return dict(httpx.get(f"{self.api}/api/v1/rollouts/{rollout_id}", timeout=10).json())

    def wait_phase(self, rollout_id: int, phases: set[str], timeout_s: float = 30) -> dict:
        return dict(wait_for(lambda: (v := self.rollout_by_id(rollout_id))["phase"] in phases
                             and v, timeout_s, f"rollout {rollout_id} to reach {phases}"))

    def deploy(self, version: str, *args: str, **settings: Any) -> dict[str, Any]:
        result = self.cli("deploy", version, "--artifact", str(self.artifact(version, **settings)),
                          *args, "--json")
        return dict(json.loads(result.stdout))

    def served_by(self, url: str | None = None, n: int = 20) -> Counter[str]:
        seen: Counter[str] = Counter()
        with httpx.Client(timeout=5) as client:
            for _ in range(n):
                client.cookies.clear()  # a new visitor each time (see Users)
                seen[client.get((url or self.router_url) + "/api/products")
                     .headers.get("x-entrega-release", "?")] += 1
        return seen

    def instance_pids(self) -> dict[str, list[int]]:
        pids: dict[str, list[int]] = {}
        for state in (self.root / ".entrega" / "run" / "production").glob("*/*/supervisor.json"):
            data = json.loads(state.read_text())
            if data.get("status") != "stopped" and _alive(data.get("child_pid")):
                pids.setdefault(state.parent.parent.name, []).append(int(data["child_pid"]))
        return pids


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


AnyDeployment = TypeVar("AnyDeployment", bound=Deployment)


def serving(dep: AnyDeployment) -> Iterator[AnyDeployment]:
    """A deployment fixture's body: start its server, yield it, stop all it started."""
    dep.start_server()
    try:
        yield dep
    finally:
        dep.stop()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    yield from serving(Deployment(tmp_path))


def haproxy() -> str:
    """Debian's HAProxy; a test needing it fails (never skips) when it is missing."""
    binary = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    assert binary, "haproxy is not installed: run scripts/install-system-deps.sh"
    return binary


#: the router kinds a delivery scenario runs on: the behaviour is the router's
ROUTER_KINDS = pytest.mark.parametrize("router_kind", ["embedded", "haproxy"])


@pytest.fixture
def make_routed_deployment(tmp_path: Path, router_kind: str,
                           ) -> Iterator[Callable[..., Deployment]]:
    """Like ``make_deployment``, on the router kind of the test's ``router_kind``."""
    yield from _deployments(tmp_path, router_kind)


@pytest.fixture
def make_deployment(tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    yield from _deployments(tmp_path, "embedded")


def _deployments(tmp_path: Path, router: str) -> Iterator[Callable[..., Deployment]]:
    """A maker of started deployments, each stopped when the test ends."""
    made: list[Deployment] = []

    def make(strategy: str = PAUSED_CANARY) -> Deployment:
        dep = Deployment(tmp_path / f"d{len(made)}", strategy, router=router)
        made.append(dep)
        dep.start_server()
        return dep

    yield make
    for dep in made:
        dep.stop()
