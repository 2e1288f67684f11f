"""``HaproxyRouter``: HAProxy from the distribution as entrega's production data plane.

HAProxy runs in master-worker mode as a detached process of its own (``-W -D``, pidfile
of the master); ``ensure_running`` adopts one that answers on the runtime socket. Route
changes, cohort rules included, go through the runtime API (render.py explains the
layout) and never reload HAProxy. A reload (SIGUSR2 to the master: the listeners stay
open, the old worker finishes its requests) happens only at the first change after
adopting an HAProxy that read another configuration (other listeners, or an older
entrega's rules: ``render.config_digest``). Nothing is persisted
by entrega: ``get_routes`` reads the live maps and servers back from HAProxy.

What is exact and what is not:

- exact: the weight split (the same 100-slot table as the embedded router), cohort
  header/allowlist/percent (the percent uses the same murmur3 buckets), pins and their
  clearing on rollback, the preview listener, zero-downtime add/remove of releases.
- counters and latencies: HAProxy 2.6 keeps no latency of single requests, so it logs
  one line per finished request to entrega's log sink (sink.py, started beside it and
  adopted like it), which keeps per release what the embedded router keeps: requests,
  5xx (HAProxy's own 503s for a release with no usable server included), the latency
  buckets, the ring of recent latencies and a latency sketch. ``metrics()`` returns those
  with the requests in flight from HAProxy's stats; ``started_at`` is the sink's, so a
  reload or restart of HAProxy does not restart the series, a restart of the sink does.
  HAProxy never waits for the sink: its lines wait in a 4 MiB ring (render.LOG_RING).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
from pathlib import Path

from entrega.dataplane.instances.retire import retire_other_kind
from entrega.errors import RouterError, RouterUnreachable
from entrega.net import Endpoint, unix_socket_path
from entrega.procenv import minimal_env
from entrega.routers.base import CohortRule, ReleaseMetrics, Router, RouterMetrics, Routes
from entrega.routers.haproxy import render
from entrega.routers.haproxy.runtime import RuntimeApi, arg
from entrega.routers.haproxy.sink import HAPROXY_MAX_SOCKET_PATH, LogSinkProcess
from entrega.runner import LocalRunner, ProcessRunner, Program
from entrega.waiting import wait_until

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 70.0  # hard-stop-after 60 s, plus exit
#: srv_admin_state bits meaning "in maintenance" (forced, inherited, from config)
_MAINT = 0x01 | 0x02 | 0x04 | 0x20


def runtime_socket_path(router_dir: Path) -> Path:
    return unix_socket_path(router_dir, "haproxy.sock", fallback_prefix="entrega-haproxy",
                            max_bytes=HAPROXY_MAX_SOCKET_PATH)


class HaproxyRouter(Router):
    """Start, adopt, configure and stop one HAProxy. Every method is idempotent."""

    def __init__(self, *, name: str, listen: str, preview_listen: str | None,
                 state_dir: Path, app: str = "", runtime_socket: Path | None = None,
                 stats_listen: str | None = None, binary: str = "haproxy",
                 runner: ProcessRunner | None = None) -> None:
        self.name = name
        self.listen = listen
        self.preview_listen = preview_listen
        self.app = app
        self.stats_listen = stats_listen
        self.binary = binary
        self.dir = Path(state_dir) / "routers" / name
        #: starts HAProxy and the log sink, reads their pidfiles, signals HAProxy's master
        self.runner = runner or LocalRunner()
        #: where HAProxy's per-request log lines become per-release counters
        self.sink = LogSinkProcess(router=name, dir=self.dir, runner=self.runner)
        self.files = render.Files(self.dir, Path(runtime_socket) if runtime_socket
                                  else runtime_socket_path(self.dir), logs=self.sink.logs)
        self.api = RuntimeApi(self.files.socket, router=name)
        self._lock = asyncio.Lock()
        #: whether a router of another kind on these files was looked for (retire.py)
        self._retire_checked = False
        #: names the configuration this router writes (kept in ``settings.map``)
        self.config_digest = render.config_digest(
            self.files, listen=listen, preview_listen=preview_listen,
            stats_listen=stats_listen, app=app)

    # -- Router ------------------------------------------------------------------------------

    async def ensure_running(self) -> None:
        await self.sink.ensure_running()  # first: no request of a new HAProxy goes unlogged
        if await self._answers():
            await self._retire_other_kind()  # adopted: it holds its table already
            return
        async with self._lock:
            if not await self._answers():
                self.dir.mkdir(parents=True, exist_ok=True)
                if not self.files.config.exists():
                    await self._write(Routes(), {})
                await self._start()

    async def set_routes(self, routes: Routes) -> None:
        try:
            routes.validate()
            render.validate(routes, self.app)
        except ValueError as exc:
            raise RouterError(f"haproxy router {self.name!r}: invalid route table: {exc}",
                              hint="fix the table the controller sent") from None
        async with self._lock:
            slots = dict(await self.api.show_map(self.files.map("backends.map")))
            settings = dict(await self.api.show_map(self.files.map("settings.map")))
            servers = await self._servers(slots)
            new_slots = self._allocate(routes, slots, servers)
            await self._write(routes, {v: s for v, s in new_slots.items()
                                       if v in routes.backends})
            if settings.get("config") != self.config_digest:
                # HAProxy runs another configuration than this router's (other listeners,
                # or the rules of an older entrega): one hitless reload brings the one
                # just written, with every table, live
                await self._reload()
            else:
                await self._apply(routes, slots, new_slots, servers)
        await self._retire_other_kind()

    async def get_routes(self) -> Routes:
        slots = dict(await self.api.show_map(self.files.map("backends.map")))
        settings = dict(await self.api.show_map(self.files.map("settings.map")))
        servers = await self._servers(slots)
        backends: dict[str, tuple[Endpoint, ...]] = {}
        draining: dict[str, int] = {}
        stats = await self._stats(slots) if slots else {}
        for version, slot in slots.items():
            live = [s for s in servers.get(slot, []) if not s.maint]
            if live:
                backends[version] = tuple(
                    Endpoint(s.host, s.port, render.instance_of(s.name)) for s in live)
            else:
                inflight = sum(int(stats.get((slot, s.name), {}).get("scur") or 0)
                               for s in servers.get(slot, []))
                if inflight:
                    draining[version] = inflight
        weights = {k.split(":", 1)[1]: int(v) for k, v in settings.items()
                   if k.startswith("weight:") and k.split(":", 1)[1] in backends}
        users = await self.api.show_acl(self.files.map("users.acl"))
        cohort = _cohort_from(settings, users)
        preview = settings.get("preview")
        return Routes(backends=backends, weights=weights, cohort=cohort,
                      preview=preview if preview in backends else None, draining=draining,
                      pin_salt=bytes.fromhex(settings.get("pin_salt", "")).decode())

    async def metrics(self) -> RouterMetrics:
        """The log sink's per-release counters (one series since ``started_at``), with
        the requests in flight from HAProxy (a request is logged once it has finished)."""
        slots = dict(await self.api.show_map(self.files.map("backends.map")))
        stats = await self._stats(slots)
        by_slot = {slot: version for version, slot in slots.items()}
        inflight: dict[str, int] = {}
        for (slot, _server), row in stats.items():
            version = by_slot.get(slot)
            if version is not None:
                inflight[version] = inflight.get(version, 0) + int(row.get("scur") or 0)
        counters = await self.sink.counters()
        releases = {v: dataclasses.replace(m, inflight=inflight.get(v, 0))
                    for v, m in counters.releases.items()}
        for version, n in inflight.items():
            releases.setdefault(version, ReleaseMetrics(inflight=n))
        return RouterMetrics(started_at=counters.started_at, releases=releases,
                             restarts=tuple(self.sink.restarts))

    async def take_over(self, retiring: Router) -> None:
        """In place of an HAProxy of the same name, files and binary (a changed
        configuration: addresses, stats listener): its configuration is rewritten with this
        router's settings and the live route table, and the master reloads it (SIGUSR2): the
        new worker serves every address before the old one stops accepting and finishes
        its requests in flight. Anything else is stopped first, then this one started."""
        same_files = isinstance(retiring, HaproxyRouter) and retiring.files == self.files
        same_binary = isinstance(retiring, HaproxyRouter) and retiring.binary == self.binary
        if not (same_files and same_binary and await self._answers()):
            await retiring.shutdown()
            if same_files:  # its configuration must not be started again: this one's is
                self.files.config.unlink(missing_ok=True)
            await self.ensure_running()
            return
        async with self._lock:
            routes = dataclasses.replace(await self.get_routes(), draining={})
            slots = dict(await self.api.show_map(self.files.map("backends.map")))
            await self._write(routes, {v: s for v, s in slots.items() if v in routes.backends})
            await self._reload()

    async def shutdown(self) -> None:
        """Soft-stop HAProxy (requests in flight finish), then its log sink; returns once
        both have exited."""
        pid = self._master_pid()
        if pid is not None:
            if not await self.runner.terminate(pid, marks=self._marks(), sig=signal.SIGUSR1,
                                               timeout_s=STOP_TIMEOUT_S):
                raise RouterError(f"haproxy router {self.name!r} (pid {pid}) still runs "
                                  f"{STOP_TIMEOUT_S:g} s after SIGUSR1")
            with contextlib.suppress(FileNotFoundError):
                self.files.pidfile.unlink()
        await self.sink.shutdown()  # last: HAProxy logged its final requests to it

    # -- helpers -----------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The master's pid (from the pidfile)."""
        return self._master_pid()

    def _master_pid(self) -> int | None:
        return self.runner.read_pid(self.files.pidfile)

    def _marks(self) -> tuple[str, ...]:
        """How HAProxy's master is told from whatever has its pid now: its configuration
        file is an argument of its command line (and stays one across reloads)."""
        return (str(self.files.config),)

    async def _answers(self) -> bool:
        if not self.files.socket.exists():
            return False
        try:
            return bool((await self.api.info()).get("Pid"))
        except RouterUnreachable:
            return False

    async def _retire_other_kind(self) -> None:
        """An embedded router of an earlier configuration shares the port (SO_REUSEPORT):
        once HAProxy holds a table (adopted, or given its first one), it is drained and
        stopped (dataplane/instances/retire.py). Not before: an HAProxy just started has
        no table, and would answer 503 to its share of the traffic meanwhile."""
        if not self._retire_checked:
            await self._retire_on_host_or_here()
            self._retire_checked = True

    async def _retire_on_host_or_here(self) -> None:
        await asyncio.to_thread(retire_other_kind, self.dir, "haproxy")

    async def _write(self, routes: Routes, slots: dict[str, str]) -> None:
        """Rewrite every file from ``routes``: what a restarted HAProxy reads."""
        await self._put_files(self._render(routes, slots))

    def _render(self, routes: Routes, slots: dict[str, str]) -> dict[str, str]:
        """The configuration and maps for ``routes`` (file name -> text)."""
        contents = render.render_maps(routes, slots, config=self.config_digest)
        contents["haproxy.cfg"] = render.render_config(
            self.files, routes, listen=self.listen, preview_listen=self.preview_listen,
            stats_listen=self.stats_listen, app=self.app, slots=slots)
        return contents

    async def _put_files(self, contents: dict[str, str]) -> None:
        """Write each file to temp, then rename (HAProxy never reads half a file)."""
        for name, text in contents.items():
            path = self.dir / name
            tmp = path.with_name(f".{name}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)

    async def _start(self) -> None:
        cmd = [self.binary, "-W", "-D", "-f", str(self.files.config),
               "-p", str(self.files.pidfile)]
        try:
            done = await asyncio.to_thread(self.runner.run, Program(cmd, env=minimal_env()),
                                           timeout_s=START_TIMEOUT_S)
        except FileNotFoundError:
            raise RouterError(f"haproxy router {self.name!r}: {self.binary!r} not found",
                              hint="install it (apt-get install haproxy; or "
                                   "scripts/install-system-deps.sh) or set router.binary"
                              ) from None
        if done is None:
            raise RouterError(f"haproxy router {self.name!r} ({self.listen}) did not start "
                              f"within {START_TIMEOUT_S:g} s",
                              hint=f"configuration: {self.files.config}")
        if done.exit_code != 0:
            raise RouterError(f"haproxy router {self.name!r} ({self.listen}) did not start "
                              f"(exit {done.exit_code}): {_tail(done.output)}",
                              hint=f"configuration: {self.files.config}")
        if not await wait_until(self._answers, timeout_s=START_TIMEOUT_S):
            raise RouterError(f"haproxy router {self.name!r} does not answer on "
                              f"{self.files.socket} {START_TIMEOUT_S:g} s after starting")

    async def _reload(self) -> None:
        """Hitless reload of the configuration just written; returns once it is live."""
        old = (await self.api.info()).get("Pid")
        await self._signal_reload()

        async def reloaded() -> bool:
            with contextlib.suppress(RouterUnreachable):
                return (await self.api.info()).get("Pid") not in (None, old)
            return False

        if not await wait_until(reloaded, timeout_s=START_TIMEOUT_S):
            raise RouterError(f"haproxy router {self.name!r}: reload not live after "
                              f"{START_TIMEOUT_S:g} s")

    async def _signal_reload(self) -> None:
        """Check the configuration just written, then ask the master to reload it."""
        check = await asyncio.to_thread(
            self.runner.run, Program([self.binary, "-c", "-q", "-f", str(self.files.config)],
                                     env=minimal_env()), timeout_s=START_TIMEOUT_S)
        if check is None or check.exit_code != 0:
            problem = _tail(check.output) if check else f"no verdict in {START_TIMEOUT_S:g} s"
            raise RouterError(f"haproxy router {self.name!r}: the new configuration is "
                              f"invalid: {problem}",
                              hint=f"configuration: {self.files.config}")
        pid = self._master_pid()
        if pid is None:
            raise RouterError(f"haproxy router {self.name!r}: no pidfile at "
                              f"{self.files.pidfile}, cannot reload")
        if not self.runner.send_signal(pid, signal.SIGUSR2):
            raise RouterError(f"haproxy router {self.name!r}: its master (pid {pid}, from "
                              f"{self.files.pidfile}) is not running, cannot reload")

    def _allocate(self, routes: Routes, slots: dict[str, str],
                  servers: dict[str, list[_Server]]) -> dict[str, str]:
        """Slots after the change: kept ones, new releases in free slots, draining ones kept."""
        out = dict(slots)
        used = set(slots.values())
        free = [f"r{i}" for i in range(render.SLOTS) if f"r{i}" not in used]
        for version in sorted(routes.backends):
            if version in out or not routes.backends[version]:
                continue
            if not free:
                raise RouterError(
                    f"haproxy router {self.name!r}: no free backend slot for release "
                    f"{version!r} (at most {render.SLOTS} releases, draining ones included)",
                    hint="retry once the removed releases have drained")
            out[version] = free.pop(0)
        return out

    async def _apply(self, routes: Routes, old_slots: dict[str, str],
                     slots: dict[str, str], servers: dict[str, list[_Server]]) -> None:
        api = self.api
        m = self.files.map
        # 1. servers of routed releases: present, at the right address, ready
        for version, endpoints in routes.backends.items():
            if not endpoints:
                continue
            slot = slots[version]
            have = {s.name: s for s in servers.get(slot, [])}
            for endpoint in endpoints:
                name = render.server_name(endpoint)
                server = have.get(name)
                if server is None:
                    answer = await api.run(f"add server {slot}/{name} {endpoint.address}")
                    if "New server registered" not in answer:
                        raise RouterError(f"haproxy router {self.name!r}: add server "
                                          f"{slot}/{name}: {answer.strip()}")
                elif (server.host, server.port) != (endpoint.host, endpoint.port):
                    await api.run(f"set server {slot}/{name} addr {endpoint.host} "
                                  f"port {endpoint.port}")
                if server is None or server.maint or (
                        (server.host, server.port) != (endpoint.host, endpoint.port)):
                    await api.check(f"set server {slot}/{name} state ready")
            if version not in old_slots:
                await api.check(f"add map {arg(str(m('backends.map')))} {version} {slot}")
        # 2. the tables, each replaced atomically
        maps = render.render_maps(routes, {}, config=self.config_digest)
        await api.replace("map", m("settings.map"), _entries(maps["settings.map"]))
        await api.replace("acl", m("users.acl"),
                          [arg(u) for u in sorted(routes.cohort.users)] if routes.cohort else [])
        await api.replace("map", m("weights.map"), _entries(maps["weights.map"]))
        # 3. servers and releases no longer routed: no new requests, deleted once idle
        for version, slot in slots.items():
            keep = {render.server_name(e) for e in routes.backends.get(version, ())}
            left = 0
            for server in servers.get(slot, []):
                if server.name in keep:
                    continue
                target = f"{slot}/{server.name}"
                if not server.maint:
                    await api.check(f"set server {target} state maint")
                answer = await api.run(f"del server {target}")
                if "Server deleted" not in answer:
                    left += 1  # still busy: deleted by a later change
            if version not in routes.backends and not left:
                await api.check(f"del map {arg(str(m('backends.map')))} {version}")

    async def _servers(self, slots: dict[str, str]) -> dict[str, list[_Server]]:
        out: dict[str, list[_Server]] = {}
        for row in await self.api.table("show servers state", skip=1):
            backend = row.get("be_name", "")
            if not backend.startswith("r"):
                continue
            out.setdefault(backend, []).append(_Server(
                row["srv_name"], row["srv_addr"], int(row.get("srv_port") or 0),
                bool(int(row.get("srv_admin_state") or 0) & _MAINT)))
        return out

    async def _stats(self, slots: dict[str, str]) -> dict[tuple[str, str], dict[str, str]]:
        rows = await self.api.table("show stat")
        wanted = set(slots.values())
        return {(r["pxname"], r["svname"]): r for r in rows
                if r.get("pxname") in wanted and r.get("svname") not in ("BACKEND", "FRONTEND")}


class _Server:
    __slots__ = ("name", "host", "port", "maint")

    def __init__(self, name: str, host: str, port: int, maint: bool) -> None:
        self.name, self.host, self.port, self.maint = name, host, port, maint


def _entries(text: str) -> list[str]:
    return [" ".join(arg(part) for part in line.split(" ", 1)) for line in text.splitlines()]


def _cohort_from(settings: dict[str, str], users: list[str]) -> CohortRule | None:
    release = settings.get("cohort")
    if release is None:
        return None

    def field(key: str) -> str | None:
        value = settings.get(f"cohort:{key}")
        return bytes.fromhex(value).decode() if value is not None else None

    return CohortRule(release=release, header=field("header"),
                      header_value=field("header_value"), user_header=field("user_header"),
                      user_cookie=field("user_cookie"), users=frozenset(users),
                      percent=int(settings.get("percent") or 0), app=field("app") or "")




def _tail(text: str, lines: int = 8) -> str:
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "(no output)"
