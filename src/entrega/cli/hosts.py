"""`entrega host check` and `entrega host prepare`: the hosts of an environment's ssh target.

Unlike the other commands these do not go through the server: they are what an operator
runs before the first deploy to a fleet, from the machine that holds the SSH key, reading
entrega.yaml itself. ``check`` says whether entrega can reach every host; ``prepare``
installs the host agent on each (the server also does it at its first start there).
"""

from __future__ import annotations

import asyncio
import dataclasses

import typer
from rich.table import Table
from rich.text import Text

from entrega.cli.app import ConfigOpt, Context, EnvOpt, JsonOpt, app, console, print_json
from entrega.cli.render import host_reasons
from entrega.config import Config, EnvironmentConfig
from entrega.errors import ConfigError

host_app = typer.Typer(help="The hosts of an ssh target (kind: ssh).", no_args_is_help=True)
app.add_typer(host_app, name="host")


def ssh_environment(cfg: Config, name: str | None) -> EnvironmentConfig:
    """``--env``, or the one environment whose target is ssh."""
    if name:
        return cfg.environment(name)
    fleets = [e for e in cfg.environments if e.target.kind == "ssh"]
    if len(fleets) == 1:
        return fleets[0]
    if not fleets:
        raise ConfigError("no environment of this entrega.yaml has target kind: ssh",
                          hint="add target: {kind: ssh, hosts: [...]} to an environment")
    raise ConfigError(f"several environments have ssh targets "
                      f"({', '.join(e.name for e in fleets)})", hint="choose one with --env")


def exit_if_any_failed(failed: list[str], total: int, *, as_json: bool) -> None:
    """Exit status 1 when a host failed, named under the table (the JSON says it per host)."""
    if not failed:
        return
    if not as_json:
        console.print(Text(f"{len(failed)} of {total} host(s) failed: {', '.join(failed)}",
                           "red"))
    raise typer.Exit(1)


def _disk(free: int | None) -> str:
    if free is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if free < 1024:
            return f"{free:.0f} {unit}"
        free //= 1024
    return f"{free} TiB"


@host_app.command("check")
def host_check(env: str = EnvOpt, as_json: bool = JsonOpt, config: str = ConfigOpt) -> None:
    """Connect to every host (in parallel) and report: reachable, host key verified,
    python3 version, free disk in base_dir, releases there. Exits 1 if any host fails."""
    from entrega.targets.ssh import HostCheck, check_hosts, fleet_from_config

    cfg = Context(config).config
    environment = ssh_environment(cfg, env)
    fleet = fleet_from_config(cfg, environment)

    async def check() -> list[HostCheck]:
        async with fleet:
            return await check_hosts(fleet, app=cfg.app)

    reports = asyncio.run(check())
    if as_json:
        print_json([dataclasses.asdict(r) for r in reports])
    else:
        table = Table(title=f"{cfg.app} / {environment.name}: {len(reports)} host(s)")
        for column in ("host", "address", "state", "host key", "python3", "free in base_dir",
                       "releases"):
            table.add_column(column)
        for r in reports:
            key = {True: Text("verified", "green"), False: Text("REFUSED", "bold red"),
                   None: Text("-", "dim")}[r.host_key_verified]
            if r.ok:
                releases = (", ".join(r.releases) or "none") if r.releases_dir_exists \
                    else "no releases dir yet"
                state = Text("ok", "green")
            else:
                releases, state = "-", Text("failed", "red")
            table.add_row(r.host, f"{r.address}:{r.port}", state, key, r.python or "-",
                          _disk(r.free_bytes) + ("" if r.base_dir_exists is not False
                                                 else " (base_dir missing)"), releases)
        console.print(table)
        if reasons := host_reasons({r.host: r.error or "failed" for r in reports if not r.ok}):
            console.print(reasons)
    exit_if_any_failed([r.host for r in reports if not r.ok], len(reports), as_json=as_json)


@host_app.command("prepare")
def host_prepare(env: str = EnvOpt, as_json: bool = JsonOpt, config: str = ConfigOpt) -> None:
    """Install entrega's host agent on every host (this installation's own code, sent
    once per host by content; the host needs only python3) and check that it runs there.
    Exits 1 if any host fails."""
    from entrega.targets.ssh import fleet_from_config
    from entrega.targets.ssh.agent import PreparedHost, prepare_hosts

    cfg = Context(config).config
    environment = ssh_environment(cfg, env)
    fleet = fleet_from_config(cfg, environment)

    async def prepare() -> list[PreparedHost]:
        async with fleet:
            return await prepare_hosts(fleet, app=cfg.app, environment=environment.name)

    reports = asyncio.run(prepare())
    if as_json:
        print_json([dataclasses.asdict(r) for r in reports])
    else:
        table = Table(title=f"{cfg.app} / {environment.name}: host agent {reports[0].agent}")
        for column in ("host", "address", "agent"):
            table.add_column(column)
        for r in reports:
            state = (Text("installed", "green") if r.sent else Text("already there", "green")) \
                if r.ok else Text("failed", "red")
            table.add_row(r.host, r.address, state)
        console.print(table)
        if reasons := host_reasons({r.host: r.error or "failed" for r in reports if not r.ok}):
            console.print(reasons)
    exit_if_any_failed([r.host for r in reports if not r.ok], len(reports), as_json=as_json)
