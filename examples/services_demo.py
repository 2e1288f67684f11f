#!/usr/bin/env python3
"""The services demo: three apps of one team delivered by one entrega server, under traffic.

``examples/services/`` holds an API, a web front that calls the API through the API's
router, and a worker. One ``entrega server`` delivers all three (one file, ``apps:``),
with the web front declared ``depends_on: [api]``. Simulated users call the web front and
the API through their routers the whole time. Four deliveries:

1. release group 2026.12.1 (api, web, worker v1): the first releases, promoted;
2. release group 2026.12.2 (api v2, web v2): each member by its own canary, api first,
   promoted as a whole;
3. the worker alone (v2): a single-app release between groups, promoted;
4. release group 2026.12.3 (api v3, web v3): api v3 answers 200 in a shape the web front
   cannot read, so the web front answers 502 while api's own error rate stays 0. api's
   canary analysis names the web front's error rate (``app: web``), catches it, and the
   group is rolled back as a whole: both members back on v2.

Prints one JSON line: ``{"deliveries": [...], "requests", "failed_requests",
"injected_failures", "duration_s"}``; ``failed_requests`` counts every request that failed
for any reason other than delivery 4's injected breakage, and must be 0. Exit 0 when every
delivery ended as expected and no request failed.

Run with ``make demo-services`` (or ``python examples/services_demo.py --json``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
SERVICES = HERE / "services"
WORK = HERE / ".services-demo"

APP = """\
  - app: {name}
    depends_on: {depends}
    run:
      command: "{python} app.py"
      env: {env}
      health: {{path: /healthz, interval_s: 0.1, healthy_threshold: 2}}
      drain_s: 1
    environments:
      - name: production
        target: {{kind: local, instances: 2}}
        router: {{kind: embedded, listen: "127.0.0.1:{port}"}}
        strategy:
          canary:
            steps:
              - weight: 50
              - {step}
              - weight: 100
        analysis:
          error-rate: {{judge: sequential, max_increase: 0.01, min_requests: 20,
                       pass_rate: 0.2}}
{extra}"""
#: api's canary also judges the web front's error rate: its callers show its breakage
WEB_EVIDENCE = """\
          web-errors: {app: web, measure: error-rate, judge: sequential, max_increase: 0.02,
                       min_requests: 20, pass_rate: 0.2}
"""

DELIVERIES: list[dict[str, Any]] = [
    {"group": "2026.12.1", "versions": {"api": "v1", "web": "v1", "worker": "v1"},
     "expect": "promoted"},
    {"group": "2026.12.2", "versions": {"api": "v2", "web": "v2"}, "expect": "promoted"},
    {"app": "worker", "version": "v2", "expect": "promoted"},
    {"group": "2026.12.3", "versions": {"api": "v3", "web": "v3"}, "expect": "rolled_back",
     "breaks": {"api": {"breaks_contract": True}}},
]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_traffic() -> ModuleType:
    spec = importlib.util.spec_from_file_location("services_traffic", SERVICES / "traffic.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["services_traffic"] = module
    spec.loader.exec_module(module)
    return module


class Demo:
    def __init__(self) -> None:
        shutil.rmtree(WORK, ignore_errors=True)
        WORK.mkdir(parents=True)
        self.ports = {"server": free_port(), "api": free_port(), "web": free_port(),
                      "worker": free_port()}
        self.config = WORK / "entrega.yaml"
        self.config.write_text(self.file())
        self.server: subprocess.Popen[bytes] | None = None

    def file(self) -> str:
        api = f"http://127.0.0.1:{self.ports['api']}"
        analysis = "analysis: {{duration_s: 8, check_every_s: 1, metrics: [{}]}}"
        apps = [
            ("api", [], {}, analysis.format("error-rate, web-errors"), WEB_EVIDENCE),
            ("web", ["api"], {"API_URL": api, "API_TIMEOUT_MS": "2000"},
             analysis.format("error-rate"), ""),
            # nobody calls the worker: its canary is a pause with its health checks on
            ("worker", [], {"API_URL": api}, "pause: {duration_s: 3}", ""),
        ]
        entries = [APP.format(name=name, depends=json.dumps(depends), python=sys.executable,
                              env=json.dumps(env), port=self.ports[name], step=step,
                              extra=extra)
                   for name, depends, env, step, extra in apps]
        return f'server: {{listen: "127.0.0.1:{self.ports["server"]}"}}\napps:\n' \
            + "".join(entries)

    def build(self, app: str, version: str, behaviour: dict[str, Any] | None) -> Path:
        path = WORK / "builds" / app / version
        path.mkdir(parents=True)
        shutil.copy(SERVICES / app / "app.py", path / "app.py")
        (path / "VERSION").write_text(version)
        if behaviour:
            (path / "behaviour.json").write_text(json.dumps(behaviour))
        return path

    def entrega(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "entrega", *args, "-c", str(self.config)],
                              cwd=WORK, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "COLUMNS": "200", "ENTREGA_SERVER": "",
                                   "ENTREGA_APP": ""})

    def start(self) -> None:
        log = (WORK / "server.log").open("ab")
        self.server = subprocess.Popen([sys.executable, "-m", "entrega", "server", "-c",
                                        str(self.config)], cwd=WORK, stdout=log,
                                       stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{self.ports['server']}/healthz"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise SystemExit("the server exited: see " + str(WORK / "server.log"))
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit("the server did not answer in 90 s")

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.server.kill()
        self.entrega("down")

    def deliver(self, delivery: dict[str, Any]) -> dict[str, Any]:
        breaks = delivery.get("breaks", {})
        if "group" in delivery:
            members = [f"{app}:{version}={self.build(app, version, breaks.get(app))}"
                       for app, version in delivery["versions"].items()]
            created = self.entrega("release", "create", "--group", delivery["group"],
                                   *members)
            if created.returncode != 0:
                raise SystemExit(f"release create --group failed: {created.stderr}")
            shown = self.entrega("group", "show", delivery["group"], "--wait", "--json")
            if not shown.stdout.strip():
                raise SystemExit(f"group show failed: {shown.stderr}")
            view = json.loads(shown.stdout)
            outcome = "promoted" if view["phase"] == "succeeded" else view["phase"]
            env = view["environment"]
            moved_back = sorted(app for app, member in view["progress"].get(env, {}).items()
                                if member["phase"] in ("rolled_back", "reverted"))
            return {"group": delivery["group"], "versions": delivery["versions"],
                    "outcome": outcome, "rolled_back_apps": moved_back,
                    "running": self.running(list(delivery["versions"]))}
        app, version = delivery["app"], delivery["version"]
        done = self.entrega("--app", app, "deploy", version, "--artifact",
                            str(self.build(app, version, breaks.get(app))), "--wait",
                            "--json")
        if not done.stdout.strip():
            raise SystemExit(f"entrega --app {app} deploy failed: {done.stderr}")
        text = done.stdout  # the rollout as it ended: the last JSON document printed
        view = json.loads(text[text.rfind("\n{") + 1:])
        outcome = "promoted" if view.get("phase") == "succeeded" else view.get("phase")
        return {"app": app, "version": version, "outcome": outcome,
                "rolled_back_apps": [app] if outcome == "rolled_back" else [],
                "running": self.running([app])}

    def running(self, apps: list[str]) -> dict[str, str | None]:
        found = {}
        for app in apps:
            status = json.loads(self.entrega("--app", app, "status", "--json").stdout)
            found[app] = status["environments"][0]["current"]
        return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    traffic_module = load_traffic()
    demo = Demo()
    began = time.monotonic()
    web = f"http://127.0.0.1:{demo.ports['web']}/"
    api = f"http://127.0.0.1:{demo.ports['api']}/api/items"
    deliveries: list[dict[str, Any]] = []
    traffic = None
    injected = 0
    try:
        demo.start()
        deliveries.append(demo.deliver(DELIVERIES[0]))
        traffic = traffic_module.Traffic([web, api], users=4, rps=60).start()
        for delivery in DELIVERIES[1:]:
            before = traffic.counts()
            deliveries.append(demo.deliver(delivery))
            if delivery.get("breaks"):  # the web front's 502s are the breakage itself
                injected += traffic.counts().since(before).answered(web, status=502)
            if not args.json:
                print(json.dumps(deliveries[-1]), file=sys.stderr)
    finally:
        counts = traffic.stop() if traffic is not None else None
        demo.stop()
    failed = (counts.errors() if counts else 0) - injected
    result = {"deliveries": deliveries, "requests": counts.requests if counts else 0,
              "failed_requests": failed, "injected_failures": injected,
              "duration_s": round(time.monotonic() - began, 1)}
    print(json.dumps(result))
    expected = all(d["outcome"] == want["expect"]
                   for d, want in zip(deliveries, DELIVERIES, strict=True))
    return 0 if expected and failed == 0 and len(deliveries) == len(DELIVERIES) else 1


if __name__ == "__main__":
    raise SystemExit(main())
