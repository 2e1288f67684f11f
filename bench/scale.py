"""How far one control plane keeps up: a thousand canaries in flight, analysed every second.

    python -m bench.scale                 # 200 apps x 5 environments, 60 s (the README's)
    python -m bench.scale --json          # the same as one JSON object
    python -m bench.scale --real-routers 10 --json   # 10 rollouts on a real data plane
    python -m bench.scale --store-url postgresql+psycopg://...   # another store

One server in process, as ``entrega server`` runs a file of many apps (``build_plane``:
one store, one controller per app, every controller a task of one event loop). Each of
``--apps`` apps has ``--environments`` environments, each with a canary strategy: weight
20%, then an analysis of the default metrics (error rate, p95, p99) checked every second
and lasting longer than the run, then 100%. Every environment gets v1 (straight, no
canary yet), then v2: once every v2 canary is in its analysis (``--apps`` x
``--environments`` rollouts in flight), the window of ``--duration`` seconds starts.

What is measured, over that window only:

- ``lag_p50_s``/``lag_p99_s``/``lag_max_s``: reconcile lag, from the controller itself
  (``Controller.on_lag``): for every pass over a rollout that was due, the time from its
  ``requeue_at`` (here: its next analysis check) to the pass. ``checks`` counts them; at
  one check a second each, it is close to rollouts x duration when the loop keeps up.
- ``controller_cpu``: CPU seconds (user + system) of the server process per wall second,
  from ``resource.getrusage`` (2.0 is both cores of this machine).
- ``passes``: reconcile passes, summed over the apps' controllers.
- ``rolled_back``: rollouts that ended during the run (none should: the data plane is
  healthy, so a non-zero count is a fault of the benchmark or the controller).
- ``store_statements_per_s``/``store_write_transactions_per_s``: what the server asked
  of its store per wall second: SQL statements sent (a statement of many rows counts
  once), and transactions that wrote something.

The data plane. ``"data_plane": "stand-in"`` (the default): two thousand instances and a
thousand routers do not fit on two cores, so every environment's target and router are
replaced, before the server starts, by ``bench/scale_standin.py``'s, which answer at
once and serve synthetic, healthy counters; the controller's whole pass runs as usual
(store, state machine, analysis judges, events, release metrics). ``--real-routers N``
(``"data_plane": "embedded"``): N apps of one environment each, real embedded routers
and real instances of the example shop app (three processes or more per rollout); no
traffic is sent, so each check judges an empty window (inconclusive, the analysis goes
on), which costs the controller less than counted requests do.

``--store-url`` (default: SQLite in a temporary directory): the same run on another store.
On PostgreSQL the server runs as ``entrega server`` does there (``"elected": true``): it
wins the election first, renews its lease throughout, and every transaction that writes
is fenced by the leader's epoch (a ``SELECT ... FOR SHARE`` more).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event

from bench.scale_standin import StandInRouter, StandInTarget
from entrega.config.apps import AppsConfig, load_apps
from entrega.controller.teardown import stop_data_plane
from entrega.net import free_port
from entrega.plane import ControlPlane, build_plane
from entrega.plane.leader import LeaderRole
from entrega.store.database import Store
from entrega.store.leadership import Election

ROOT = Path(__file__).resolve().parents[1]
SHOP = ROOT / "examples" / "shop" / "app.py"
#: how long setting up may take per rollout in flight (v1 then v2 everywhere)
SETUP_S_PER_ROLLOUT = 0.3
#: the analysis step lasts this much longer than the run: it must not end inside it
ANALYSIS_MARGIN_S = 600.0

APP = """\
  - app: {name}
    run:
      command: "{python} app.py"
      health: {{path: /healthz, interval_s: 0.2, healthy_threshold: 1}}
      drain_s: 0.2
    environments:
{environments}"""
ENVIRONMENT = """\
      - name: {name}
        target: {{kind: local, instances: 1}}
        router: {{kind: embedded, listen: "127.0.0.1:{port}"}}
        strategy:
          canary:
            steps:
              - weight: 20
              - analysis: {{duration_s: {analysis_s:g}, check_every_s: 1,
                            metrics: [error-rate, latency-p95, latency-p99]}}
              - weight: 100
"""


def write_config(root: Path, *, apps: int, environments: int, store_url: str,
                 analysis_s: float, real: bool) -> Path:
    """The file of many apps the server runs. Stand-in routers never listen, so their
    ports only have to differ; real ones get free ports."""
    port = iter(range(20000, 65000))
    entries = []
    for a in range(apps):
        envs = "".join(ENVIRONMENT.format(name=f"env-{e}", analysis_s=analysis_s,
                                          port=free_port() if real else next(port))
                       for e in range(environments))
        entries.append(APP.format(name=f"app-{a:03d}", python=sys.executable,
                                  environments=envs))
    text = (f'server: {{listen: "127.0.0.1:{free_port()}"}}\n'
            f"store: {{url: {json.dumps(store_url)}}}\n"
            f"state_dir: {json.dumps(str(root / 'state'))}\n"
            "apps:\n" + "".join(entries))
    root.mkdir(parents=True, exist_ok=True)
    (root / "entrega.yaml").write_text(text)
    return root / "entrega.yaml"


def use_stand_ins(plane: ControlPlane) -> None:
    """Every environment's target and router become stand-ins (before the server starts,
    so nothing of the real ones ever runs)."""
    port = iter(range(20000, 65000))
    for service in plane:
        for runtime in service.controller.runtimes.values():
            runtime.target = StandInTarget(environment=runtime.name, port=next(port))
            runtime.router = StandInRouter()


async def release(plane: ControlPlane, root: Path, version: str) -> None:
    """``version`` of every app, from one artifact (content-addressed: stored once)."""
    artifact = root / "artifacts" / version
    artifact.mkdir(parents=True, exist_ok=True)
    (artifact / "app.py").write_bytes(SHOP.read_bytes())
    (artifact / "VERSION").write_text(version)
    for service in plane:
        await service.create_release(version=version, artifact=artifact, meta={},
                                     actor="bench")


async def deploy_everywhere(plane: ControlPlane, version: str) -> None:
    """``version`` to every environment of every app at once. Forced past the pipeline's
    order (staging before production...): the benchmark wants every environment busy."""
    async def deploy(service: Any, environment: str) -> None:
        await service.deploy(environment=environment, version=version, actor="bench",
                             force=True, admin=True, reason="bench.scale")

    await asyncio.gather(*(deploy(s, env.name) for s in plane
                           for env in s.config.environments))


async def wait_for(check: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout_s:.0f} s")
        await asyncio.sleep(0.5)


def phases(plane: ControlPlane, version: str) -> dict[str, int]:
    """How many of ``version``'s rollouts are in each phase (+ ``analysing``)."""
    repo = next(iter(plane)).repo
    counted: dict[str, int] = {}
    for service in plane:
        for row in repo.rollouts(service.app, limit=50):
            if row.version != version:
                continue
            counted[row.phase] = counted.get(row.phase, 0) + 1
            if row.phase == "progressing" and (row.state or {}).get("analysis"):
                counted["analysing"] = counted.get("analysing", 0) + 1
    return counted


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def store_kind(url: str) -> str:
    """The store's engine, never its credentials: ``sqlite``, ``postgresql``."""
    return url.split(":", 1)[0].split("+", 1)[0]


async def measure(plane: ControlPlane, *, rollouts: int, duration_s: float, warmup_s: float,
                  on_step: Callable[[str], None]) -> dict[str, Any]:
    lags: list[float] = []
    controllers = [s.controller for s in plane]
    setup_s = 60 + SETUP_S_PER_ROLLOUT * rollouts
    on_step("v1 everywhere")
    await deploy_everywhere(plane, "v1")
    await wait_for(lambda: phases(plane, "v1").get("succeeded", 0) == rollouts,
                   timeout_s=setup_s, what=f"v1 in {rollouts} environments")
    on_step("v2 canaries")
    await deploy_everywhere(plane, "v2")
    await wait_for(lambda: phases(plane, "v2").get("analysing", 0) == rollouts,
                   timeout_s=setup_s, what=f"{rollouts} v2 canaries in their analysis")
    if warmup_s > 0:
        # The canaries entered their analysis within seconds of each other, behind the
        # setup's thousand deploys: their first checks are one burst, the setup's, not
        # the steady state the figures are about (the README quotes both).
        on_step(f"warming up {warmup_s:g} s")
        await asyncio.sleep(warmup_s)
    on_step(f"measuring {duration_s:g} s")
    for controller in controllers:
        controller.on_lag = lags.append
    passes = sum(c.passes for c in controllers)
    engine = next(iter(plane)).repo.store.engine
    store_calls = {"statements": 0, "writes": 0}

    def statement(connection: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        store_calls["statements"] += 1
        if sql.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
            connection.info["wrote"] = True

    def commit(connection: Any) -> None:
        store_calls["writes"] += connection.info.pop("wrote", False)

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)
    cpu, wall = cpu_s(), time.monotonic()
    await asyncio.sleep(duration_s)
    cpu, wall = cpu_s() - cpu, time.monotonic() - wall
    event.remove(engine, "before_cursor_execute", statement)
    event.remove(engine, "commit", commit)
    passes = sum(c.passes for c in controllers) - passes
    for controller in controllers:
        controller.on_lag = None
    counted = phases(plane, "v2")
    return {
        "duration_s": round(wall, 1),
        "warmup_s": warmup_s,
        "lag_p50_s": round(statistics.median(lags), 4) if lags else None,
        "lag_p99_s": round(percentile(lags, 0.99), 4) if lags else None,
        "lag_max_s": round(max(lags), 4) if lags else None,
        "controller_cpu": round(cpu / wall, 3),
        "passes": passes,
        "checks": len(lags),
        "in_flight": counted.get("progressing", 0),
        "rolled_back": counted.get("rolled_back", 0) + counted.get("failed", 0),
        "store_statements_per_s": round(store_calls["statements"] / wall, 1),
        "store_write_transactions_per_s": round(store_calls["writes"] / wall, 1),
    }


async def run(*, apps: int, environments: int, duration_s: float, store_url: str | None,
              real_routers: int, on_step: Callable[[str], None],
              warmup_s: float = 0.0) -> dict[str, Any]:
    if real_routers:
        apps, environments = real_routers, 1
    rollouts = apps * environments
    with tempfile.TemporaryDirectory(prefix="entrega-scale-") as tmp:
        root = Path(tmp)
        url = store_url or f"sqlite:///{root / 'state.db'}"
        config = load_apps(write_config(root / "server", apps=apps, environments=environments,
                                        store_url=url, real=bool(real_routers),
                                        analysis_s=warmup_s + duration_s + ANALYSIS_MARGIN_S))
        plane, store = build_plane(config)
        if not real_routers:
            use_stand_ins(plane)
        role = None
        try:
            if store.shared:  # as `entrega server` runs on PostgreSQL: elected, fenced
                role = await lead(plane, store, config)
            else:
                await plane.start()  # each app's row first: its releases refer to it
            await release(plane, root, "v1")
            await release(plane, root, "v2")
            figures = await measure(plane, rollouts=rollouts, duration_s=duration_s,
                                    warmup_s=warmup_s, on_step=on_step)
        finally:
            await stop(plane, config, role, real=bool(real_routers))
            store.close()
    return {"rollouts": rollouts, "apps": apps, "environments": environments,
            "data_plane": "embedded" if real_routers else "stand-in",
            "store": store_kind(url), "elected": role is not None, **figures,
            "command": "python -m bench.scale " + " ".join(sys.argv[1:])}


async def lead(plane: ControlPlane, store: Store, config: AppsConfig) -> LeaderRole:
    """The server leads its store as ``entrega server`` does on PostgreSQL (serve()):
    elected, every write fenced by the epoch, the lease renewed; returns once every
    app's controller runs."""
    election = Election(store.url, identity="bench.scale", address="http://127.0.0.1:9",
                        lease_s=config.first.server.lease_s)
    role = LeaderRole(plane, store, election)
    plane.role = role
    role.start()
    await wait_for(lambda: role.leads and all(s.controller.running for s in plane),
                   timeout_s=60, what="the server leading with every app's controller")
    return role


async def stop(plane: ControlPlane, config: AppsConfig, role: LeaderRole | None, *,
               real: bool) -> None:
    if role is not None:
        await role.stop()
    else:
        await plane.stop()
    if real:
        stopping: list[Awaitable[Any]] = [stop_data_plane(c, drain_s=0.2) for c in config]
        await asyncio.gather(*stopping)


def table(result: dict[str, Any]) -> str:
    return "\n".join([
        f"{result['rollouts']} rollouts in flight ({result['apps']} apps x "
        f"{result['environments']} environments), data plane: {result['data_plane']}, "
        f"store: {result['store']}, {result['duration_s']} s",
        f"reconcile lag   p50 {result['lag_p50_s']} s   p99 {result['lag_p99_s']} s   "
        f"max {result['lag_max_s']} s   ({result['checks']} rollout passes that were due)",
        f"controller CPU  {result['controller_cpu']} s per s   passes {result['passes']}",
        f"store           {result['store_statements_per_s']} statements/s   "
        f"{result['store_write_transactions_per_s']} transactions that wrote/s",
        f"rolled back     {result['rolled_back']}   still in flight {result['in_flight']}",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--apps", type=int, default=200, help="apps in the one server")
    p.add_argument("--environments", type=int, default=5, help="environments per app")
    p.add_argument("--duration", type=float, default=60.0, help="seconds measured")
    p.add_argument("--warmup", type=float, default=10.0,
                   help="seconds between the last canary entering its analysis and the "
                   "measurement (0: measure the burst of first checks too)")
    p.add_argument("--store-url", default=None,
                   help="SQLAlchemy URL of the store (default: SQLite in a temp dir)")
    p.add_argument("--real-routers", type=int, default=0, metavar="N",
                   help="N rollouts on real embedded routers and instances instead")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if min(args.apps, args.environments) < 1 or args.duration <= 0 or args.real_routers < 0 \
            or args.warmup < 0:
        p.error("--apps and --environments must be at least 1, --duration positive, "
                "--warmup not negative")

    def step(what: str) -> None:
        print(f"... {what}", file=sys.stderr, flush=True)

    result = asyncio.run(run(apps=args.apps, environments=args.environments,
                             duration_s=args.duration, store_url=args.store_url,
                             real_routers=args.real_routers, on_step=step,
                             warmup_s=args.warmup))
    print(json.dumps(result) if args.json else table(result))
    return 0 if result["rolled_back"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
