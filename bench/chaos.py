"""The fault campaign: good and bad releases rolled out under traffic while the server,
the router and app instances are killed with ``kill -9``.

    python -m bench.chaos                 # 20 rollouts, a table (~8 minutes here)
    python -m bench.chaos --json          # the same as one JSON object
    python -m bench.chaos --rollouts 3 --router-kills 1 --instance-kills 1 --json

A real ``entrega server`` (the e2e tests' ``Deployment``: the example shop app, two
instances, the embedded router) delivers ``--rollouts`` releases one after the other,
good and bad, by canary and by blue-green, in an order drawn from ``--seed``. A bad canary
answers 5xx on half of its requests (its analysis must roll it back); a bad blue-green
release on all of them (its verification must roll it back). Each rollout:

- the server is killed (``kill -9``) at a random moment of the rollout and started again
  at once (it must adopt the data plane and carry the rollout on);
- in ``--router-kills`` of the rollouts a router process is killed too: a worker when the
  router runs a supervisor with workers, else the router itself;
- in ``--instance-kills`` of them an app instance (the app process, not its supervisor).

Faults follow each other (each waits for the last one's recovery), so every failed
request falls in at most one fault's window: from the kill to the recovery (server
healthy, router answering, instance restarted) plus ``GRACE_S``. A failed request is
attributed to the window it overlaps (``failed_requests_by_fault``), to ``none`` when it
overlaps none. ``router_kill_inflight`` is the number of requests the users had in flight
at the router kills: the issue allows only those to fail.

Outcomes: a good release must be ``promoted``, a bad one ``rolled_back``; anything else
is a wrong outcome. A rollout is lost or stuck when it does not end within
``--rollout-timeout-s`` or when the store (read at the end) does not hold exactly one
row for it, ended. ``targets`` says which of the issue's targets held; ``--check`` exits 1
when one did not. Everything goes to loopback, and the campaign ends by itself.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import signal
import sqlite3
import sys
import tarfile
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import httpx
from tests.e2e.conftest import Deployment, wait_for

from bench.chaos_traffic import COOKIE_CLIENTS, VISITORS, Request, Traffic
from entrega.config import load_config
from entrega.controller.runtime import build_runtime
from entrega.routers.embedded import EmbeddedRouter
from entrega.waiting import wait_until_sync

STRATEGY = """\
      canary:
        steps:
          - weight: 30
          - analysis: {duration_s: 5, metrics: [error-rate]}
          - weight: 100
      blue-green: {auto_promote: true, scale_down_delay_s: 1}
"""
#: the shop's settings (examples/shop/app.py: shop.json) of a bad release, per strategy:
#: half of a canary's answers fail, which its analysis at 30% sees within seconds; all of
#: a blue-green release's fail, so its verification on the preview sees it at once
BAD = {"canary": {"error_rate": 0.5}, "blue-green": {"error_rate": 1.0}}
#: a rollout's length without faults (start, steps, verification, switch) before one of
#: its kind was measured: the server kill is drawn uniformly in the length of the last
#: rollout of the same kind (strategy, good or bad), less the time its faults took, so
#: that it lands in every phase on a fast machine and a loaded one alike
USUAL_S = {"canary": 5.0, "blue-green": 3.0}
#: a fault's window goes on this long after its recovery: what the data plane or the
#: controller still needs to settle (routes sent again, a health check passed)
GRACE_S = 2.0
#: how long a restarted server may take to answer before it counts as lost
SERVER_START_S = 120.0
TERMINAL = ("succeeded", "rolled_back", "failed")
OUTCOME = {"succeeded": "promoted"}
FAULTS = ("server_kill", "router_kill", "instance_kill")


@dataclass
class Fault:
    kind: str                  # one of FAULTS
    at: float                  # time.monotonic() of the kill
    recovered_at: float        # when it was back (or gave up waiting)
    in_flight: int             # the users' requests in flight at the kill
    phase: str                 # the rollout's phase just before the kill
    target: str                # what was killed: "server", "router", "router worker",
                               # "instance <version>"
    recovered: bool = True


@dataclass
class Rollout:
    version: str
    strategy: str
    good: bool
    id: int | None = None
    outcome: str = "not started"
    duration_s: float = 0.0
    problem: str = ""
    reason: str = ""           # the rollout's last message: why it ended so
    started_at: float = 0.0    # time.monotonic()
    ended_at: float = 0.0
    faults: list[str] = field(default_factory=list)
    #: the rollout's own release: requests it served during the rollout, per user kind
    served: dict[str, int] = field(default_factory=dict)

    @property
    def expected(self) -> str:
        return "promoted" if self.good else "rolled_back"


def attribute(request: Request, faults: list[Fault], grace_s: float = GRACE_S) -> str:
    """The fault whose window [kill, recovery + grace] the request's life overlaps, the
    latest killed when several do; ``none`` when it overlaps no window."""
    hits = [f for f in faults if f.at <= request.end and request.start <= f.recovered_at
            + grace_s]
    return max(hits, key=lambda f: f.at).kind if hits else "none"


def plan(rollouts: int, rng: random.Random) -> list[tuple[str, bool]]:
    """(strategy, good) of each rollout: the four kinds in turn, then shuffled."""
    kinds = [("canary", True), ("canary", False), ("blue-green", True),
             ("blue-green", False)]
    order = [kinds[i % len(kinds)] for i in range(rollouts)]
    rng.shuffle(order)
    return order


class ChaosDeployment(Deployment):
    """The e2e tests' deployment with both strategies, driven through the API."""

    def __init__(self, root: Path, *, router_workers: int) -> None:
        super().__init__(root, STRATEGY)
        if router_workers > 1:
            text = self.config.read_text().replace(
                "router: {kind: embedded, ", f"router: {{kind: embedded, workers: "
                                             f"{router_workers}, ")
            self.config.write_text(text)
        self.client = httpx.Client(base_url=self.api, timeout=10)
        config = load_config(self.config)
        router = build_runtime(config, config.environments[0]).router
        if not isinstance(router, EmbeddedRouter) or router.workers != router_workers:
            raise RuntimeError(f"{self.config}: expected the embedded router with "
                               f"{router_workers} worker(s); the e2e config changed?")
        self.router = router
        self.store = config.state_path / "state.db"

    def restart_server(self) -> None:
        assert self.server is not None
        self.server.wait(timeout=10)
        if self._log is not None:
            self._log.close()
        try:
            self.start_server()
        except AssertionError:
            # the e2e tests give a start 30 s; on a loaded machine it can take longer, and
            # a server that is still starting is no lost server
            if self.server.poll() is not None:
                raise
            wait_for(self.answers, SERVER_START_S - 30, "the server to answer")

    def answers(self) -> bool:
        try:
            return self.client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def release(self, version: str, **settings: Any) -> None:
        """Upload the release's bytes as CI would (multipart, without deploying it)."""
        directory = self.artifact(version, **settings)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for item in sorted(directory.iterdir()):
                tar.add(item, arcname=item.name)
        answer = self.client.post("/api/v1/releases",
                                  data={"version": version, "deploy": "false"},
                                  files={"artifact": (f"{version}.tar.gz", buffer.getvalue())})
        if answer.status_code not in (200, 201):
            raise RuntimeError(f"release {version} refused: {answer.status_code} "
                               f"{answer.text[:200]}")

    def start_rollout(self, version: str, strategy: str | None) -> int:
        answer = self.client.post("/api/v1/environments/production/deploy",
                                  json={"version": version, "strategy": strategy,
                                        "queue": False})
        if answer.status_code != 201:
            raise RuntimeError(f"deploy {version} refused: {answer.status_code} "
                               f"{answer.text[:200]}")
        return int(answer.json()["id"])

    def view(self, rollout_id: int) -> dict[str, Any]:
        """The API's view of the rollout; ``{"phase": "unknown (...)"}`` when the server
        does not answer (it may be down: the campaign kills it)."""
        try:
            answer = self.client.get(f"/api/v1/rollouts/{rollout_id}")
        except httpx.HTTPError:
            return {"phase": "unknown (server not answering)"}
        if answer.status_code != 200:
            return {"phase": f"unknown ({answer.status_code})"}
        return dict(answer.json())

    def phase(self, rollout_id: int) -> str:
        return str(self.view(rollout_id).get("phase"))

    def wait_ended(self, rollout_id: int, deadline: float) -> str | None:
        """The rollout's last phase, or None if it did not end before ``deadline``."""
        def ended() -> str | None:
            phase = self.phase(rollout_id)
            return phase if phase in TERMINAL else None

        return wait_until_sync(ended, timeout_s=max(0.0, deadline - time.monotonic()),
                               interval_s=0.1)

    def abort(self) -> None:
        try:
            self.client.post("/api/v1/environments/production/abort")
        except httpx.HTTPError:
            pass

    def router_process(self, rng: random.Random) -> tuple[int, str] | None:
        """A router process to kill: one of the workers serving traffic (the supervisor's
        ``GET /health`` names them; its spare, also a child, serves nothing until a worker
        dies), else the router itself."""
        pid = self.router.pid()
        if pid is None:
            return None
        workers = self.serving_workers()
        if workers:
            return rng.choice(workers), "router worker"
        return pid, "router"

    def serving_workers(self) -> list[int]:
        try:
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(self.router.socket_path)),
                              base_url="http://router", timeout=5) as control:
                health = control.get("/health").json()
        except (httpx.HTTPError, ValueError):
            return []
        workers = health.get("workers") if isinstance(health, dict) else None
        pids = workers.get("pids") if isinstance(workers, dict) else None
        return [int(p) for p in pids] if isinstance(pids, list) else []

    def router_answers(self) -> bool:
        try:
            answer = httpx.get(self.router_url + "/api/products", timeout=2)
        except httpx.HTTPError:
            return False
        return answer.status_code < 502 and "x-entrega-release" in answer.headers


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux /proc), none when it has none or is gone."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return sorted(set(found))


class Campaign:
    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.dep = ChaosDeployment(root, router_workers=args.router_workers)
        self.traffic = Traffic(self.dep.router_url, visitors=args.visitors,
                               visitor_rps=args.visitor_rps,
                               cookie_clients=args.cookie_clients,
                               cookie_client_rps=args.cookie_client_rps)
        self.faults: list[Fault] = []
        self.rollouts: list[Rollout] = []
        self.notes: list[str] = []
        self.t0 = time.monotonic()
        #: (strategy, good) -> the last such rollout's own length (see USUAL_S)
        self.usual_s: dict[tuple[str, bool], float] = {}

    # -- faults ----------------------------------------------------------------------------

    def kill_server(self, rollout: Rollout) -> None:
        assert self.dep.server is not None and rollout.id is not None
        phase = self.dep.phase(rollout.id)
        kill = self.traffic.kill(self.dep.server.pid)
        recovered = True
        try:
            self.dep.restart_server()
        except AssertionError as exc:  # wait_for's way of saying the deadline passed
            recovered = False
            self.notes.append(f"server did not come back after a kill: {exc}")
        self.faults.append(Fault("server_kill", kill.at, time.monotonic(), kill.in_flight,
                                 phase, "server", recovered))

    def kill_router(self, rollout: Rollout) -> None:
        assert rollout.id is not None
        target = self.dep.router_process(self.rng)
        if target is None:
            self.notes.append(f"{rollout.version}: no router pid to kill")
            return
        pid, what = target
        supervisor = self.dep.router.pid()
        workers = children(supervisor) if supervisor is not None else []
        phase = self.dep.phase(rollout.id)
        kill = self.traffic.kill(pid)

        def back() -> bool:
            # a killed worker is back when the supervisor has as many again (the other
            # workers answer meanwhile); a killed router when the address answers again
            if pid in workers and supervisor is not None:
                now = children(supervisor)
                if pid in now or len(now) < len(workers):
                    return False
            return self.dep.router_answers()

        recovered = self._recover(back, 30)
        self.faults.append(Fault("router_kill", kill.at, time.monotonic(), kill.in_flight,
                                 phase, what, recovered))

    def kill_instance(self, rollout: Rollout) -> None:
        assert rollout.id is not None
        running = self.dep.instance_pids()
        if not running:
            self.notes.append(f"{rollout.version}: no app instance to kill")
            return
        version = self.rng.choice(sorted(running))
        pid = self.rng.choice(running[version])
        phase = self.dep.phase(rollout.id)
        kill = self.traffic.kill(pid)

        def replaced() -> bool:
            now = self.dep.instance_pids().get(version, [])
            # back to as many instances, the killed one replaced; or the release stopped
            return pid not in now and len(now) >= len(running[version]) or not now

        recovered = self._recover(replaced, 20)
        self.faults.append(Fault("instance_kill", kill.at, time.monotonic(), kill.in_flight,
                                 phase, f"instance {version}", recovered))

    @staticmethod
    def _recover(ready: Any, timeout_s: float) -> bool:
        try:
            wait_for(ready, timeout_s, "recovery")
        except AssertionError:
            return False
        return True

    # -- rollouts --------------------------------------------------------------------------

    def run_one(self, rollout: Rollout, extra: list[str]) -> None:
        dep = self.dep
        dep.release(rollout.version, **({} if rollout.good else BAD[rollout.strategy]))
        rollout.started_at = time.monotonic()
        try:
            rollout.id = dep.start_rollout(rollout.version, rollout.strategy)
        except (RuntimeError, httpx.HTTPError) as exc:
            rollout.outcome, rollout.problem = "not started", str(exc)
            return
        kind = (rollout.strategy, rollout.good)
        usual = self.usual_s.get(kind, USUAL_S[rollout.strategy])
        # the server first, at a random moment of the rollout; then the others, each at a
        # random moment after the last one's recovery
        for fault in ["server_kill", *extra]:
            time.sleep(self.rng.uniform(0, usual))
            {"server_kill": self.kill_server, "router_kill": self.kill_router,
             "instance_kill": self.kill_instance}[fault](rollout)
            rollout.faults.append(fault)
        deadline = rollout.started_at + self.args.rollout_timeout_s
        phase = dep.wait_ended(rollout.id, deadline)
        rollout.ended_at = time.monotonic()
        rollout.duration_s = round(rollout.ended_at - rollout.started_at, 2)
        if phase is None:
            rollout.outcome = "stuck"
            rollout.problem = (f"still {dep.phase(rollout.id)} after "
                               f"{self.args.rollout_timeout_s:g} s: aborted")
            dep.abort()
            if dep.wait_ended(rollout.id, time.monotonic() + 30) is None:
                raise RuntimeError(f"rollout {rollout.id} neither ended nor could be "
                                   "aborted")
            return
        rollout.outcome = OUTCOME.get(phase, phase)
        view = dep.view(rollout.id)
        rollout.reason = str(view.get("message") or "")
        if view.get("finished_at") and view.get("created_at"):
            # the rollout stood still while the server was down; it ran on through the
            # other kills (the data plane's own)
            down_s = sum(f.recovered_at - f.at for f in self.faults
                         if f.kind == "server_kill" and f.at >= rollout.started_at
                         and f.phase not in TERMINAL)
            own_s = float(view["finished_at"]) - float(view["created_at"]) - down_s
            self.usual_s[kind] = max(1.0, own_s)

    def run(self) -> dict[str, Any]:
        args = self.args
        started = self.t0 = time.monotonic()
        order = plan(args.rollouts, self.rng)
        extra: list[list[str]] = [[] for _ in order]
        for kind, count in (("router_kill", args.router_kills),
                            ("instance_kill", args.instance_kills)):
            for i in self.rng.sample(range(len(order)), min(count, len(order))):
                extra[i].append(kind)
        for kinds in extra:
            self.rng.shuffle(kinds)
        self.dep.start_server()
        try:
            # the first release, without faults: the stable one the campaign starts from
            self.dep.release("v0")
            first = self.dep.start_rollout("v0", None)
            if self.dep.wait_ended(first, time.monotonic() + 60) != "succeeded":
                raise RuntimeError("the first release v0 did not go live:\n"
                                   + self.dep.server_log())
            self.traffic.start()
            time.sleep(1.0)  # every cookie client holds a pin before the first rollout
            for i, (strategy, good) in enumerate(order, start=1):
                rollout = Rollout(f"v{i}", strategy, good)
                self.rollouts.append(rollout)
                try:
                    self.run_one(rollout, extra[i - 1])
                except (RuntimeError, httpx.HTTPError) as exc:
                    # the server is gone for good, or a rollout cannot be ended: the
                    # rollouts so far are the result, and the note says why it stopped
                    self.notes.append(f"campaign stopped at {rollout.version}: {exc}")
                    break
                # progress on stderr, so that --json's stdout stays one object
                print(f"  {row(rollout)}", file=sys.stderr, flush=True)
            time.sleep(GRACE_S)  # the last fault's window, under traffic
        finally:
            self.traffic.stop()
            self.dep.client.close()
            self.dep.stop()
        self.check_store()
        return self.result(time.monotonic() - started)

    def check_store(self) -> None:
        """Each rollout the campaign started is exactly one row of the store, ended."""
        uri = f"file:{self.dep.store}?mode=ro"
        with sqlite3.connect(uri, uri=True) as db:
            rows = db.execute("SELECT id, version, phase FROM rollouts "
                              "WHERE environment = 'production'").fetchall()
        by_version = Counter(version for _, version, _ in rows)
        ours = {"v0", *(r.version for r in self.rollouts)}
        if strays := sorted(v for v in by_version if v not in ours):
            self.notes.append(f"rollouts in the store the campaign did not start: {strays}")
        phases = {rid: phase for rid, _, phase in rows}
        for r in self.rollouts:
            if r.id is None:
                continue
            if phases.get(r.id) is None:
                r.problem += " missing in the store"
            elif by_version[r.version] != 1:
                r.problem += f" {by_version[r.version]} rows in the store"
            elif phases[r.id] not in TERMINAL:
                r.problem += f" still {phases[r.id]} in the store"
            else:
                continue
            r.outcome = "lost" if r.outcome in ("promoted", "rolled_back") else r.outcome

    # -- the result ------------------------------------------------------------------------

    def result(self, duration_s: float) -> dict[str, Any]:
        requests = list(self.traffic.requests)
        failed = [r for r in requests if r.failed]
        by_fault = Counter({k: 0 for k in (*FAULTS, "none")})
        router_failed_new = 0
        samples: dict[str, list[str]] = {}
        router_kills = [f for f in self.faults if f.kind == "router_kill"]
        for r in failed:
            kind = attribute(r, self.faults)
            by_fault[kind] += 1
            if kind == "router_kill" and any(f.at <= r.start <= f.recovered_at + GRACE_S
                                             for f in router_kills):
                router_failed_new += 1
            if len(kept := samples.setdefault(kind, [])) < 5:
                kept.append(f"{r.user}: {r.error}")
        for rollout in self.rollouts:
            rollout.served = {user: sum(1 for r in requests if r.release == rollout.version
                                        and r.user == user
                                        and rollout.started_at <= r.start
                                        <= (rollout.ended_at or r.start))
                              for user in (VISITORS, COOKIE_CLIENTS)}
        kills = Counter(f.kind for f in self.faults)
        wrong = [r for r in self.rollouts
                 if r.outcome in ("promoted", "rolled_back", "failed")
                 and r.outcome != r.expected]
        lost = [r for r in self.rollouts if r.outcome in ("stuck", "lost", "not started")]
        inflight = sum(f.in_flight for f in router_kills)
        targets = {
            "wrong_outcomes": not wrong,
            "lost_or_stuck": not lost,
            "server_kill_failed_requests": by_fault["server_kill"] == 0,
            "instance_kill_failed_requests": by_fault["instance_kill"] == 0,
            "router_kill_failed_within_inflight": by_fault["router_kill"] <= inflight,
        }
        return {
            "rollouts": len(self.rollouts),
            "server_kills": kills["server_kill"],
            "router_kills": kills["router_kill"],
            "instance_kills": kills["instance_kill"],
            # server kills that found the rollout still running (the others came after
            # it had ended: the moment is drawn from the last such rollout's length)
            "server_kills_mid_rollout": sum(1 for f in self.faults if f.kind == "server_kill"
                                            and f.phase not in TERMINAL),
            "wrong_outcomes": len(wrong),
            "lost_or_stuck": len(lost),
            "requests": len(requests),
            "failed_requests": len(failed),
            "failed_requests_by_fault": dict(by_fault),
            "router_kill_inflight": inflight,
            # of the router kills' failures, those sent after the kill (refused or reset
            # on a new connection): only the ones in flight in the killed process may fail
            "router_kill_failed_after_kill": router_failed_new,
            "injected_errors": sum(1 for r in requests if r.injected),
            "requests_by_release": self.traffic.by_release(),
            "targets": targets,
            "targets_met": all(targets.values()),
            "outcomes": [{"version": r.version, "strategy": r.strategy,
                          "expected": r.expected, "outcome": r.outcome,
                          "duration_s": r.duration_s, "faults": r.faults,
                          "reason": r.reason,
                          "served": r.served, **({"problem": r.problem.strip()}
                                                 if r.problem else {})}
                         for r in self.rollouts],
            "faults": [{"kind": f.kind, "target": f.target, "phase": f.phase,
                        "at_s": round(f.at - self.t0, 3), "in_flight": f.in_flight,
                        "recovery_s": round(f.recovered_at - f.at, 3),
                        "recovered": f.recovered} for f in self.faults],
            "recovery_s": {kind: round(median(f.recovered_at - f.at for f in self.faults
                                              if f.kind == kind), 3)
                           for kind in FAULTS if kills[kind]},
            "failure_samples": samples,
            "notes": self.notes,
            "duration_s": round(duration_s, 1),
            "settings": {k: v for k, v in vars(self.args).items() if k not in ("json", "check")},
            "command": "python -m bench.chaos --json",
        }


def row(r: Rollout) -> str:
    mark = "ok " if r.outcome == r.expected else "BAD"
    return (f"{mark} {r.version:<4} {r.strategy:<10} {'good' if r.good else 'bad':<4} "
            f"-> {r.outcome:<11} {r.duration_s:6.1f} s  faults: {', '.join(r.faults)}"
            + (f"  ({r.problem.strip()})" if r.problem else ""))


def table(result: dict[str, Any]) -> str:
    lines = ["| rollout | strategy | expected | outcome | s | faults | new release served "
             "(visitors / cookie clients) |", "|---|---|---|---|---:|---|---|"]
    for o in result["outcomes"]:
        lines.append(f"| {o['version']} | {o['strategy']} | {o['expected']} | {o['outcome']} "
                     f"| {o['duration_s']:.1f} | {', '.join(o['faults'])} | "
                     f"{o['served'].get(VISITORS, 0)} / {o['served'].get(COOKIE_CLIENTS, 0)} |")
    by_fault = result["failed_requests_by_fault"]
    lines += [
        "",
        f"{result['rollouts']} rollouts; kills: {result['server_kills']} server, "
        f"{result['router_kills']} router, {result['instance_kills']} instance",
        f"wrong outcomes {result['wrong_outcomes']}, lost or stuck {result['lost_or_stuck']}",
        f"{result['requests']} requests, {result['failed_requests']} failed: "
        + ", ".join(f"{k} {v}" for k, v in by_fault.items())
        + f" (router kills: {result['router_kill_inflight']} requests were in flight)",
        "targets: " + ", ".join(f"{k} {'held' if v else 'MISSED'}"
                                for k, v in result["targets"].items()),
    ]
    lines += [f"{o['version']}: expected {o['expected']}, got {o['outcome']}: "
              f"{o.get('problem') or o['reason']}"
              for o in result["outcomes"] if o["outcome"] != o["expected"]]
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rollouts", type=int, default=20, help="rollouts after the first (>= 1)")
    p.add_argument("--router-kills", type=int, default=None,
                   help="rollouts with a router kill (default: a third of them)")
    p.add_argument("--instance-kills", type=int, default=None,
                   help="rollouts with an instance kill (default: a third of them)")
    p.add_argument("--seed", type=int, default=10, help="draws the order and the moments")
    p.add_argument("--router-workers", type=int, default=1,
                   help="the router's workers: setting (1: the default)")
    p.add_argument("--visitors", type=int, default=6, help="concurrent cookie-less visitors")
    p.add_argument("--visitor-rps", type=float, default=5.0, help="requests/s per visitor")
    p.add_argument("--cookie-clients", type=int, default=6, help="cookie-keeping clients")
    p.add_argument("--cookie-client-rps", type=float, default=2.0,
                   help="requests/s per cookie-keeping client")
    p.add_argument("--rollout-timeout-s", type=float, default=120.0,
                   help="a rollout not ended by then is stuck")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    if args.rollouts < 1:
        p.error("--rollouts must be at least 1")
    third = max(1, args.rollouts // 3)
    args.router_kills = third if args.router_kills is None else args.router_kills
    args.instance_kills = third if args.instance_kills is None else args.instance_kills
    with tempfile.TemporaryDirectory(prefix="entrega-chaos-") as tmp:
        # a Ctrl-C or SIGTERM still stops the server, the router and the instances
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            result = Campaign(Path(tmp), args).run()
        except RuntimeError as exc:  # the campaign could not even start: say why
            print(f"bench.chaos: {exc}", file=sys.stderr)
            return 2
    print(json.dumps(result, indent=1) if args.json else table(result))
    return 1 if args.check and not result["targets_met"] else 0


if __name__ == "__main__":
    sys.exit(main())
