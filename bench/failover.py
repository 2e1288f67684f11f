"""The failover campaign: servers sharing one PostgreSQL store lose their leader to
``kill -9`` and to SIGSTOP while canaries run under traffic.

    python -m bench.failover                      # 10 kills + 3 pauses, a table (~5 min)
    python -m bench.failover --json               # the same as one JSON object
    python -m bench.failover --kills 2 --pauses 1 --json

One throwaway PostgreSQL (bench/postgres.py), ``--servers`` ``entrega server`` processes
on one configuration file and state directory (the e2e tests' shop app, two instances,
the embedded router, a canary whose analysis decides by itself), simulated users sending
requests through the router all along (bench/chaos_traffic.py), and a webhook receiver
for every event. For each fault, a release is rolled out (good ones must succeed, bad ones
answering 5xx on half of their requests must be rolled back by analysis) and, while it is
in flight, the leader is:

- killed (``kill -9``), then started again at once as a standby (as a supervisor would);
- or paused (SIGSTOP) for twice the lease, then woken (SIGCONT): it must step down and
  exit without writing, and is started again as a standby.

``takeover_s`` is from the kill or the stop to a standby answering ``GET /api/v1/leader``
with ``role: leader`` (polled every 50 ms). What counts as wrong, read at the end:

- ``wrong_outcomes``: rollouts that ended otherwise than expected (or not at all);
- ``double_actions``: an instance started while its earlier supervisor was still running
  it (``events.jsonl`` of each instance directory: ``started`` with no ``stopped`` since;
  a restart after the app crashed is the supervisor's ``restarted``, not counted), plus
  webhook deliveries received twice (the same ``X-Entrega-Delivery``, the outbox row);
- ``failed_requests``: connection errors and any answer but 200 that is not a bad
  release's injected failure;
- ``stale_leader_writes``: events whose epoch is lower than that of a leader that already
  led when they were written (every epoch's start as the ``leadership`` row and the polls
  of ``/api/v1/leader`` saw it), plus events a paused leader wrote after it woke.

Everything goes to loopback, and the campaign ends by itself.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from statistics import median
from typing import Any

import httpx
from tests.e2e.conftest import Deployment, wait_for

from bench.chaos_traffic import Traffic
from bench.postgres import running_postgres
from entrega.net import free_port
from entrega.waiting import wait_until_sync

STRATEGY = """\
      canary:
        steps:
          - weight: 30
          - analysis: {duration_s: 5, metrics: [error-rate]}
          - weight: 100
"""
#: the shop's settings (examples/shop/app.py: shop.json) of a bad release: half of its
#: answers fail, which the analysis at 30% sees within its 5 s
BAD = {"error_rate": 0.5}
TERMINAL = ("succeeded", "rolled_back", "failed")
#: a rollout's length without faults before one of its kind was measured (s): a good
#: canary runs its 5 s analysis to the end, a bad one is failed within a second or two
USUAL_S = {True: 9.0, False: 3.0}
#: ``python -m entrega`` with the stacks of every thread written to its log on SIGUSR1:
#: what a standby that does not take over is doing (see ``stuck_takeovers``)
LAUNCH = ("import faulthandler, runpy, signal; "
          "faulthandler.register(signal.SIGUSR1, all_threads=True); "
          "runpy.run_module('entrega', run_name='__main__', alter_sys=True)")
#: how often a standby is asked whether it leads, while a takeover is awaited (s)
POLL_S = 0.05
#: a takeover not seen by then is a missed one (the campaign goes on with the next fault)
TAKEOVER_TIMEOUT_S = 30.0
#: how long a (re)started server may take to answer its first request
SERVER_START_S = 90.0
#: how long a woken leader may take to step down and exit
STEP_DOWN_S = 30.0


# -- the pure judging: tables in tests/bench/test_failover_smoke.py -------------------------

def judge_double_starts(events: list[dict[str, Any]]) -> int:
    """Starts of one instance while its earlier supervisor still ran it: a ``started``
    with no ``stopped`` since the last one. (A crashed app brought back by its supervisor
    is ``restarted``, not ``started``: that is no double action.)"""
    running = False
    doubles = 0
    for event in events:
        kind = event.get("event")
        if kind == "started":
            doubles += running
            running = True
        elif kind == "stopped":
            running = False
    return doubles


def judge_duplicate_deliveries(delivery_ids: Iterable[str]) -> int:
    """Deliveries received again: each id beyond its first."""
    return sum(n - 1 for n in Counter(delivery_ids).values())


def judge_stale_writes(events: list[dict[str, Any]], epochs: dict[int, float],
                       woken: list[tuple[int, float]]) -> list[dict[str, Any]]:
    """Events written by a leader after a newer one led: an event of epoch ``e`` whose
    time is at or after the start (``epochs``: epoch -> since) of an epoch above ``e``;
    and events of a paused leader's epoch written after it woke (``woken``: (epoch, time
    it was woken))."""
    stale = []
    for event in events:
        epoch, at = event.get("epoch"), float(event["time"])
        if epoch is None:
            continue
        newer = [since for e, since in epochs.items() if e > epoch]
        if (newer and at >= min(newer)) or any(epoch == e and at >= t for e, t in woken):
            stale.append(event)
    return stale


def judge_outcome(expected: str, phase: str | None) -> bool:
    return phase == expected


# -- the webhook receiver -----------------------------------------------------------------

class Receiver:
    """An HTTP receiver on loopback keeping each delivery's ``X-Entrega-Delivery``."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, str, float]] = []  # (id, event kind, time)
        lock = threading.Lock()
        received = self.deliveries

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    kind = str(json.loads(body).get("event"))
                except ValueError:
                    kind = "?"
                with lock:
                    received.append((self.headers.get("x-entrega-delivery", "?"), kind,
                                     time.time()))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the servers ------------------------------------------------------------------------

class SharedStore(Deployment):
    """The e2e deployment with its store in PostgreSQL, a short lease, a webhook for
    every event, and ``count`` servers on the one configuration file (``--listen``)."""

    def __init__(self, root: Path, *, store_url: str, lease_s: float, hook: str,
                 count: int) -> None:
        super().__init__(root, STRATEGY)
        text = self.config.read_text().replace(
            "server: {", f'store: {{url: "{store_url}"}}\nserver: {{lease_s: {lease_s}, ')
        text += f'notify:\n  - webhook: {{url: "{hook}", events: ["*"]}}\n'
        self.config.write_text(text)
        self.ports = [self.server_port] + [free_port() for _ in range(count - 1)]
        self.apis = [f"http://127.0.0.1:{port}" for port in self.ports]
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * count
        self.client = httpx.Client(timeout=5)

    def start(self, i: int) -> None:
        with (self.root / f"server-{i}.log").open("ab") as log:
            self.processes[i] = subprocess.Popen(
                [sys.executable, "-c", LAUNCH, "server", "-c", str(self.config),
                 "--listen", f"127.0.0.1:{self.ports[i]}"],
                cwd=self.root, stdout=log, stderr=subprocess.STDOUT)

        def answers() -> bool:
            process = self.processes[i]
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"server {i} exited while starting:\n{self.log(i)}")
            return self.who(self.apis[i]) is not None

        wait_for(answers, SERVER_START_S, f"server {i} to answer")

    def log(self, i: int, since: int | None = None) -> str:
        """Server ``i``'s log: from byte ``since``, else its last 3,000 characters."""
        path = self.root / f"server-{i}.log"
        if not path.exists():
            return ""
        if since is not None:
            with path.open("rb") as log:
                log.seek(since)
                return log.read().decode(errors="replace")
        return path.read_text(errors="replace")[-3000:]

    def log_size(self, i: int) -> int:
        path = self.root / f"server-{i}.log"
        return path.stat().st_size if path.exists() else 0

    def who(self, api: str, timeout_s: float = 2.0) -> dict[str, Any] | None:
        try:
            return dict(self.client.get(api + "/api/v1/leader", timeout=timeout_s).json())
        except (httpx.HTTPError, ValueError):
            return None

    def leader(self) -> tuple[int, dict[str, Any]] | None:
        """(index, answer) of the server that says it leads, None when none does."""
        for i, api in enumerate(self.apis):
            if (answer := self.who(api)) is not None and answer.get("role") == "leader":
                return i, answer
        return None

    def leader_api(self) -> str:
        found = wait_for(self.leader, TAKEOVER_TIMEOUT_S, "a server to lead")
        return self.apis[found[0]]

    def release(self, version: str, **settings: Any) -> None:
        """Upload the release's bytes as CI would (multipart, without deploying it)."""
        directory = self.artifact(version, **settings)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for item in sorted(directory.iterdir()):
                tar.add(item, arcname=item.name)
        answer = self.client.post(self.leader_api() + "/api/v1/releases", timeout=30,
                                  data={"version": version, "deploy": "false"},
                                  files={"artifact": (f"{version}.tar.gz", buffer.getvalue())})
        if answer.status_code not in (200, 201):
            raise RuntimeError(f"release {version} refused: {answer.status_code} "
                               f"{answer.text[:200]}")

    def start_rollout(self, version: str) -> int:
        answer = self.client.post(self.leader_api() + "/api/v1/environments/production/deploy",
                                  json={"version": version, "queue": False}, timeout=30)
        if answer.status_code != 201:
            raise RuntimeError(f"deploy {version} refused: {answer.status_code} "
                               f"{answer.text[:200]}")
        return int(answer.json()["id"])

    def view(self, rollout_id: int) -> dict[str, Any]:
        """The rollout as any answering server reads it (standbys serve reads)."""
        for api in self.apis:
            try:
                answer = self.client.get(f"{api}/api/v1/rollouts/{rollout_id}")
            except httpx.HTTPError:
                continue
            if answer.status_code == 200:
                return dict(answer.json())
        return {"phase": "unknown (no server answers)"}

    def phase(self, rollout_id: int) -> str:
        return str(self.view(rollout_id)["phase"])

    def wait_ended(self, rollout_id: int, timeout_s: float) -> str | None:
        def ended() -> str | None:
            phase = self.phase(rollout_id)
            return phase if phase in TERMINAL else None

        return wait_until_sync(ended, timeout_s=timeout_s, interval_s=0.2)

    def instance_events(self) -> dict[str, list[dict[str, Any]]]:
        """Each instance directory's supervisor events, by ``<version>/<n>``."""
        found = {}
        for path in sorted((self.root / ".entrega" / "run" / "production")
                           .glob("*/*/events.jsonl")):
            lines = path.read_text().splitlines()
            found[f"{path.parent.parent.name}/{path.parent.name}"] = [
                json.loads(line) for line in lines if line.strip()]
        return found

    def refused_supervisors(self) -> int:
        """Supervisors started for an instance another supervisor already ran: the lock
        (``supervisor.lock``) made them exit at once, so nothing ran twice, but a
        controller did try to start a running instance."""
        return sum(path.read_text(errors="replace").count("another supervisor already runs")
                   for path in (self.root / ".entrega" / "run" / "production")
                   .glob("*/*/supervisor.log"))

    def stop_all(self) -> None:
        for process in self.processes:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            if process is not None:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.cli("down", check=False)
        self.client.close()


# -- the campaign -----------------------------------------------------------------------

@dataclass
class Fault:
    kind: str                      # "kill" or "pause"
    server: int                    # the index of the leader it hit
    epoch: int                     # the epoch that leader held
    phase: str                     # the rollout's phase at the fault
    takeover_s: float | None       # None: no standby led within TAKEOVER_TIMEOUT_S
    new_leader: int | None = None
    exit_code: int | None = None   # a paused leader's, once woken
    stepped_down: bool | None = None


@dataclass
class Rollout:
    version: str
    good: bool
    id: int | None = None
    phase: str | None = None
    problem: str = ""
    duration_s: float | None = None
    faults: list[str] = field(default_factory=list)

    @property
    def expected(self) -> str:
        return "succeeded" if self.good else "rolled_back"


class Campaign:
    def __init__(self, dep: SharedStore, receiver: Receiver, args: argparse.Namespace,
                 store_url: str) -> None:
        self.dep = dep
        self.receiver = receiver
        self.args = args
        self.store_url = store_url
        self.rng = random.Random(args.seed)
        self.traffic = Traffic(dep.router_url, visitors=args.visitors, visitor_rps=5.0,
                               cookie_clients=args.cookie_clients, cookie_client_rps=2.0)
        self.faults: list[Fault] = []
        self.rollouts: list[Rollout] = []
        self.notes: list[str] = []
        #: epoch -> when it started leading (the leader's ``since``), as polls saw it
        self.epochs: dict[int, float] = {}
        #: (epoch of a paused leader, time.time() it was woken)
        self.woken: list[tuple[int, float]] = []
        #: takeovers not seen within TAKEOVER_TIMEOUT_S: the database's sessions then
        self.stuck: list[dict[str, Any]] = []
        #: good release? -> the last such rollout's own length (s); first guesses
        self.usual_s = dict(USUAL_S)

    def saw(self, answer: dict[str, Any] | None) -> None:
        leader = (answer or {}).get("leader") or {}
        if leader.get("epoch") and leader.get("since") is not None:
            self.epochs.setdefault(int(leader["epoch"]), float(leader["since"]))

    def await_takeover(self, fallen: int, since: float) -> tuple[float | None, int | None]:
        """Poll the other servers every POLL_S until one says it leads."""
        others = [i for i in range(len(self.dep.apis)) if i != fallen]
        deadline = since + TAKEOVER_TIMEOUT_S
        while time.monotonic() < deadline:
            for i in others:
                answer = self.dep.who(self.dep.apis[i], timeout_s=0.5)
                if answer is not None and answer.get("role") == "leader":
                    took = time.monotonic() - since
                    self.saw(answer)
                    return took, i
            time.sleep(POLL_S)
        return None, None

    def fault(self, kind: str, rollout: Rollout) -> None:
        assert rollout.id is not None
        found = self.dep.leader()
        if found is None:
            self.notes.append(f"{rollout.version}: no leader to {kind}")
            return
        index, answer = found
        self.saw(answer)
        process = self.dep.processes[index]
        assert process is not None
        phase = self.dep.phase(rollout.id)
        epoch = int(answer["leader"]["epoch"])
        at = time.monotonic()
        process.send_signal(signal.SIGKILL if kind == "kill" else signal.SIGSTOP)
        took, new = self.await_takeover(index, at)
        fault = Fault(kind, index, epoch, phase, None if took is None else round(took, 3), new)
        self.faults.append(fault)
        rollout.faults.append(kind)
        if took is None:
            self.notes.append(f"{rollout.version}: no standby led within "
                              f"{TAKEOVER_TIMEOUT_S:g} s of the {kind} of server {index}")
            # what held the standbys back, seen before the fallen leader is woken
            standbys = [i for i in range(len(self.dep.apis)) if i != index]
            for i in standbys:
                if (standby := self.dep.processes[i]) is not None:
                    standby.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
            self.stuck.append({"version": rollout.version, "kind": kind, "server": index,
                               "epoch": epoch, "sessions": self.sessions(),
                               "standbys": {i: self.dep.who(self.dep.apis[i])
                                            for i in standbys},
                               "standby_logs": {i: self.dep.log(i)[-6000:]
                                                for i in standbys}})
        if kind == "pause":
            # Asleep for twice the lease (from the stop), then woken: it must see it lost
            # the lead, write nothing and exit.
            time.sleep(max(0.0, at + 2 * self.args.lease_s - time.monotonic()))
            log_before = self.dep.log_size(index)
            process.send_signal(signal.SIGCONT)
            self.woken.append((epoch, time.time()))
            try:
                fault.exit_code = process.wait(timeout=STEP_DOWN_S)
            except subprocess.TimeoutExpired:
                self.notes.append(f"server {index} woke from a pause and did not exit "
                                  f"within {STEP_DOWN_S:g} s: killed")
                process.kill()
            # what it logged once woken (the log is appended to across restarts)
            fault.stepped_down = "stepping down" in self.dep.log(index, since=log_before)
        process.wait(timeout=10)
        self.dep.start(index)  # as a supervisor would: it comes back as a standby

    def run_one(self, rollout: Rollout, kind: str) -> None:
        self.dep.release(rollout.version, **({} if rollout.good else BAD))
        rollout.id = self.dep.start_rollout(rollout.version)
        # A random moment of the canary (its start, weight step, analysis or last step):
        # drawn within most of the last such rollout's own length, so that the fault
        # finds it in flight whether the analysis passes (slow) or fails (fast).
        usual = self.usual_s[rollout.good]
        time.sleep(self.rng.uniform(0.1 * usual, 0.8 * usual))
        self.fault(kind, rollout)
        rollout.phase = self.dep.wait_ended(rollout.id, self.args.rollout_timeout_s)
        if rollout.phase is None:
            rollout.problem = (f"still {self.dep.phase(rollout.id)} after "
                               f"{self.args.rollout_timeout_s:g} s")
            return
        view = self.dep.view(rollout.id)
        if view.get("finished_at") and view.get("created_at"):
            rollout.duration_s = round(float(view["finished_at"]) - float(view["created_at"]),
                                       2)
            # its own length: it stood still from the fault to the takeover
            took = self.faults[-1].takeover_s if self.faults else None
            self.usual_s[rollout.good] = max(1.0, rollout.duration_s - (took or 0.0))

    def run(self) -> dict[str, Any]:
        args = self.args
        started = time.monotonic()
        kinds = ["kill"] * args.kills + ["pause"] * args.pauses
        self.rng.shuffle(kinds)
        goods = [i % 2 == 0 for i in range(len(kinds))]
        self.rng.shuffle(goods)
        for i in range(len(self.dep.apis)):
            self.dep.start(i)
        self.dep.release("v0")
        first = self.dep.start_rollout("v0")
        if self.dep.wait_ended(first, 90) != "succeeded":
            raise RuntimeError("the first release v0 did not go live:\n" + self.dep.log(0))
        self.traffic.start()
        try:
            time.sleep(1.0)
            for n, (kind, good) in enumerate(zip(kinds, goods, strict=True), start=1):
                rollout = Rollout(f"v{n}", good)
                self.rollouts.append(rollout)
                try:
                    self.run_one(rollout, kind)
                except (RuntimeError, AssertionError, httpx.HTTPError) as exc:
                    rollout.problem = str(exc)[:500]
                    self.notes.append(f"campaign stopped at {rollout.version}: {exc}"[:800])
                    break
                print(f"  {row(rollout, self.faults[-1] if self.faults else None)}",
                      file=sys.stderr, flush=True)
            time.sleep(2.0)  # the last takeover's aftermath, under traffic
        finally:
            self.traffic.stop()
        # the deliveries of the last events: the outbox is looked at every 0.5 s
        time.sleep(2.0)
        return self.result(time.monotonic() - started)

    def sessions(self) -> list[dict[str, Any]]:
        """The database's sessions as PostgreSQL sees them: state, what each waits on,
        which sessions block it, its open transaction's age and last statement."""
        import psycopg

        dsn = self.store_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn, autocommit=True) as connection:
            rows = connection.execute(
                "SELECT pid, state, wait_event_type, wait_event, pg_blocking_pids(pid), "
                "round(extract(epoch FROM now() - xact_start)::numeric, 2), "
                "round(extract(epoch FROM now() - state_change)::numeric, 2), "
                "left(query, 160) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchall()
        return [{"pid": pid, "state": state, "wait": f"{wtype}/{wevent}",
                 "blocked_by": blocked, "xact_age_s": None if xact is None else float(xact),
                 "state_age_s": None if age is None else float(age), "query": query}
                for pid, state, wtype, wevent, blocked, xact, age, query in rows]

    def read_store(self) -> tuple[list[dict[str, Any]], dict[int, float], list[int]]:
        """Every event, every epoch's start and the ids of the deliveries the outbox says
        were sent, read from PostgreSQL itself."""
        import psycopg

        dsn = self.store_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn) as connection:
            events = [{"id": i, "time": t, "kind": k, "epoch": e, "actor": a}
                      for i, t, k, e, a in connection.execute(
                          "SELECT id, time, kind, epoch, actor FROM events ORDER BY id")]
            sent = [int(i) for (i,) in connection.execute(
                "SELECT id FROM notifications WHERE status = 'sent'")]
        return events, dict(self.epochs), sent

    def result(self, duration_s: float) -> dict[str, Any]:
        requests = list(self.traffic.requests)
        failed = [r for r in requests if r.failed]
        events, epochs, sent = self.read_store()
        stale = judge_stale_writes(events, epochs, self.woken)
        instances = self.dep.instance_events()
        double_starts = {name: n for name, evs in instances.items()
                         if (n := judge_double_starts(evs))}
        ids = [d for d, _, _ in self.receiver.deliveries]
        duplicates = judge_duplicate_deliveries(ids)
        never_received = sorted(set(map(str, sent)) - set(ids))
        takeovers = [f.takeover_s for f in self.faults if f.takeover_s is not None]
        wrong = [r for r in self.rollouts if not judge_outcome(r.expected, r.phase)]
        pauses = [f for f in self.faults if f.kind == "pause"]
        return {
            "failovers": len(takeovers),
            "max_takeover_s": max(takeovers) if takeovers else None,
            "median_takeover_s": round(median(takeovers), 3) if takeovers else None,
            "rollouts": len(self.rollouts),
            "wrong_outcomes": len(wrong),
            "double_actions": sum(double_starts.values()) + duplicates,
            "failed_requests": len(failed),
            "stale_leader_writes": len(stale),
            "kills": sum(f.kind == "kill" for f in self.faults),
            "pauses": len(pauses),
            "missed_takeovers": sum(f.takeover_s is None for f in self.faults),
            "takeovers_s": [f.takeover_s for f in self.faults],
            "faults_mid_rollout": sum(f.phase not in TERMINAL for f in self.faults),
            "paused_leaders_stepped_down": sum(bool(f.stepped_down) and f.exit_code not in
                                               (None, 0) for f in pauses),
            "double_instance_starts": double_starts,
            "instance_starts": sum(sum(e.get("event") == "started" for e in evs)
                                   for evs in instances.values()),
            "refused_second_supervisors": self.dep.refused_supervisors(),
            "instance_crash_restarts": sum(sum(e.get("event") == "restarted" for e in evs)
                                           for evs in instances.values()),
            "deliveries": len(ids),
            "duplicate_deliveries": duplicates,
            "sent_never_received": len(never_received),
            "events": len(events),
            "epochs": len(epochs),
            "stale_samples": stale[:5],
            "stuck_takeovers": self.stuck,
            "requests": len(requests),
            "injected_errors": sum(r.injected for r in requests),
            "failure_samples": [r.error for r in failed[:5]],
            "outcomes": [{"version": r.version, "expected": r.expected, "outcome": r.phase,
                          "faults": r.faults, "duration_s": r.duration_s,
                          **({"problem": r.problem} if r.problem else {})}
                         for r in self.rollouts],
            "faults": [{"kind": f.kind, "server": f.server, "epoch": f.epoch,
                        "phase": f.phase, "takeover_s": f.takeover_s,
                        "new_leader": f.new_leader,
                        **({"exit_code": f.exit_code, "stepped_down": f.stepped_down}
                           if f.kind == "pause" else {})} for f in self.faults],
            "store": "postgresql",
            "servers": len(self.dep.apis),
            "lease_s": self.args.lease_s,
            "notes": self.notes,
            "duration_s": round(duration_s, 1),
            "settings": {k: v for k, v in vars(self.args).items() if k != "json"},
            "command": "python -m bench.failover --json",
        }


def row(r: Rollout, fault: Fault | None) -> str:
    mark = "ok " if r.phase == r.expected else "BAD"
    took = "-" if fault is None or fault.takeover_s is None else f"{fault.takeover_s:.2f} s"
    return (f"{mark} {r.version:<4} {'good' if r.good else 'bad':<4} -> {r.phase or '?':<11} "
            f"{'/'.join(r.faults)} (takeover {took})" + (f"  {r.problem}" if r.problem else ""))


def table(result: dict[str, Any]) -> str:
    lines = ["| rollout | expected | outcome | fault |", "|---|---|---|---|"]
    lines += [f"| {o['version']} | {o['expected']} | {o['outcome']} | {', '.join(o['faults'])} |"
              for o in result["outcomes"]]
    lines += [
        "",
        f"{result['failovers']} failovers ({result['kills']} kills, {result['pauses']} "
        f"pauses) among {result['servers']} servers on PostgreSQL: takeover median "
        f"{result['median_takeover_s']} s, max {result['max_takeover_s']} s",
        f"{result['rollouts']} rollouts, {result['wrong_outcomes']} wrong outcomes; "
        f"{result['double_actions']} double actions ({result['instance_starts']} instance "
        f"starts, {result['deliveries']} webhook deliveries); {result['failed_requests']} of "
        f"{result['requests']} requests failed; {result['stale_leader_writes']} stale "
        f"leader writes",
    ]
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=10, help="leader kills (kill -9)")
    p.add_argument("--pauses", type=int, default=3, help="leader pauses (SIGSTOP)")
    p.add_argument("--servers", type=int, default=2, help="servers sharing the store (>= 2)")
    p.add_argument("--lease-s", type=float, default=3.0, help="server.lease_s")
    p.add_argument("--seed", type=int, default=15, help="draws the order and the moments")
    p.add_argument("--visitors", type=int, default=6, help="concurrent cookie-less visitors")
    p.add_argument("--cookie-clients", type=int, default=6, help="cookie-keeping clients")
    p.add_argument("--rollout-timeout-s", type=float, default=120.0,
                   help="a rollout not ended by then is a wrong outcome")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if args.servers < 2 or args.kills < 0 or args.pauses < 0 or args.kills + args.pauses < 1:
        p.error("needs --servers >= 2 and at least one kill or pause")
    # a Ctrl-C or SIGTERM still stops the servers, the router, the instances and PostgreSQL
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="entrega-failover-") as tmp, \
            running_postgres() as cluster, Receiver() as receiver:
        url = cluster.create_database("failover")
        dep = SharedStore(Path(tmp), store_url=url, lease_s=args.lease_s,
                          hook=receiver.url, count=args.servers)
        try:
            result = Campaign(dep, receiver, args, url).run()
        except RuntimeError as exc:  # the campaign could not even start: say why
            print(f"bench.failover: {exc}", file=sys.stderr)
            return 2
        finally:
            dep.stop_all()
    print(json.dumps(result, indent=1) if args.json else table(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
