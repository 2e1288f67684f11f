"""`entrega`: parse, call the server's API, render. Errors are one sentence, exit code 1."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.live import Live

from entrega.cli import render
from entrega.cli.artifact import upload_release
from entrega.cli.client import Client, server_url
from entrega.cli.init_template import render as render_template
from entrega.config import CONFIG_FILE, Config, config_schema, load_config
from entrega.errors import EntregaError

app = typer.Typer(help="entrega: continuous delivery for network services.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
config_app = typer.Typer(help="Check entrega.yaml or print its JSON Schema.",
                         no_args_is_help=True)
app.add_typer(config_app, name="config")

console = Console()
err = Console(stderr=True)

ConfigOpt = typer.Option(CONFIG_FILE, "--config", "-c", help="Path of entrega.yaml.")
EnvOpt = typer.Option(None, "--env", "-e", help="Environment (default: see each command).")
JsonOpt = typer.Option(False, "--json", help="Print JSON instead of tables.")


class _Context:
    def __init__(self, config_path: str) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def client(self) -> Client:
        listen = None
        try:
            listen = self.config.server.listen
        except EntregaError:
            import os
            if not os.environ.get("ENTREGA_SERVER"):
                raise
        return Client(server_url(listen))


def _ctx(config_path: str) -> _Context:
    return _Context(config_path)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _pick_env(ctx: _Context, env: str | None, *, busy_first: bool, client: Client) -> str:
    if env:
        return env
    names = [e.name for e in ctx.config.environments]
    if len(names) == 1:
        return names[0]
    if busy_first:
        status = client.get("/api/v1/status")
        busy = [e["name"] for e in status["environments"] if e["rollout"]]
        if len(busy) == 1:
            return str(busy[0])
    raise EntregaError(f"several environments ({', '.join(names)}): say which with --env")


# -- commands --------------------------------------------------------------------------------


@app.command()
def init(
    app_name: str = typer.Option(None, "--app", help="The app's name (default: directory)."),
    command: str = typer.Option("python app.py", "--command", help="How to run one instance."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing entrega.yaml."),
    path: str = ConfigOpt,
) -> None:
    """Write an entrega.yaml with every field explained."""
    target = Path(path)
    if target.exists() and not force:
        raise EntregaError(f"{target} exists already", hint="use --force to overwrite it")
    name = app_name or re.sub(r"[^a-z0-9-]+", "-", Path.cwd().name.lower()).strip("-") or "app"
    target.write_text(render_template(name, command))
    load_config(target)  # the template must always be valid
    console.print(f"wrote [bold]{target}[/]: read the comments, then run `entrega server`")


@app.command()
def server(config: str = ConfigOpt) -> None:
    """Run the API and the reconcile loop (routers and instances run on their own)."""
    import logging

    from entrega.logs import setup_logging
    from entrega.server import run_server

    setup_logging(logging.INFO)
    cfg = load_config(config)
    err.print(f"entrega server for [bold]{cfg.app}[/] on http://{cfg.server.listen}")
    run_server(cfg)


@app.command()
def down(config: str = ConfigOpt) -> None:
    """Stop the app's routers and instances (run after stopping `entrega server`)."""
    import asyncio

    from entrega.controller.teardown import stop_data_plane
    from entrega.store.database import ControllerLock

    cfg = load_config(config)
    lock = ControllerLock(cfg.state_path / "controller.lock")
    lock.acquire()  # refuses while a server runs: it would start everything again
    try:
        for line in asyncio.run(stop_data_plane(cfg)):
            console.print(f"stopped {line}")
    finally:
        lock.release()


@app.command()
def deploy(
    version: str = typer.Argument(..., help="The release's version, e.g. v2 or 1.4.0."),
    artifact: Path = typer.Option(None, "--artifact", "-a",
                                  help="Directory or .tar.gz to create the release from."),
    env: str = typer.Option(None, "--env", "-e", help="Environment (default: the first)."),
    strategy: str = typer.Option(None, "--strategy", "-s",
                                 help="canary, blue-green or direct (default: from config)."),
    wait: bool = typer.Option(False, "--wait", "-w", help="Follow the rollout until it ends."),
    no_queue: bool = typer.Option(False, "--no-queue",
                                  help="Fail if a rollout is in progress instead of queueing."),
    force: bool = typer.Option(False, "--force",
                               help="Admin: skip the pipeline's order (needs --reason)."),
    reason: str = typer.Option("", "--reason", help="Why (recorded in the audit log)."),
    as_json: bool = JsonOpt,
    config: str = ConfigOpt,
) -> None:
    """Create a release (with --artifact) and roll it out to an environment."""
    ctx = _ctx(config)
    client = ctx.client()
    env = env or ctx.config.environments[0].name
    body: dict[str, Any] = {"version": version, "strategy": strategy, "queue": not no_queue,
                            "force": force, "reason": reason}
    if artifact is not None:
        # The bytes go up first (the server reads no path we name), then the deploy.
        upload_release(client, version, artifact, deploy=False)
    rollout = client.post(f"/api/v1/environments/{env}/deploy", body)
    if "queued" in rollout:
        if as_json:
            _print_json(rollout)
        else:
            console.print(f"{version} queued for {env} behind the rollout in progress "
                          "(a newer request replaces it)")
        return
    if not wait:
        if as_json:
            _print_json(rollout)
        else:
            console.print(f"rollout {rollout['id']}: {version} → {env} "
                          f"({rollout['strategy']}); follow with `entrega status --watch`")
        return
    final = _follow(client, rollout["id"], quiet=as_json)
    if as_json:
        _print_json(final)
    if final["phase"] != "succeeded":
        raise typer.Exit(2)


def _follow(client: Client, rollout_id: int, *, quiet: bool) -> dict[str, Any]:
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while True:
            view = client.get(f"/api/v1/rollouts/{rollout_id}")
            if not quiet:
                live.update(render.rollout_panel(view))
            if view["phase"] in ("succeeded", "rolled_back", "failed"):
                return dict(view)
            time.sleep(0.5)


@app.command()
def status(
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh until interrupted."),
    as_json: bool = JsonOpt,
    config: str = ConfigOpt,
) -> None:
    """What every environment runs, and the live state of rollouts."""
    client = _ctx(config).client()
    if as_json:
        _print_json(client.get("/api/v1/status"))
        return
    if not watch:
        console.print(render.status_view(client.get("/api/v1/status")))
        return
    try:
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                live.update(render.status_view(client.get("/api/v1/status")))
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass


@app.command()
def promote(env: str = EnvOpt,
            full: bool = typer.Option(False, "--full", help="Skip all remaining steps."),
            config: str = ConfigOpt) -> None:
    """End the current pause or analysis step (or all steps with --full)."""
    ctx = _ctx(config)
    client = ctx.client()
    env = _pick_env(ctx, env, busy_first=True, client=client)
    result = client.post(f"/api/v1/environments/{env}/promote", {"full": full})
    console.print(f"rollout {result['rollout']} in {env}: promote requested")


@app.command()
def abort(env: str = EnvOpt, config: str = ConfigOpt) -> None:
    """Stop the rollout in progress: all traffic back to stable, then stop the new release."""
    ctx = _ctx(config)
    client = ctx.client()
    env = _pick_env(ctx, env, busy_first=True, client=client)
    result = client.post(f"/api/v1/environments/{env}/abort")
    console.print(f"rollout {result['rollout']} in {env}: abort requested")


@app.command()
def rollback(app_name: str = typer.Argument(None, metavar="[APP]",
                                            help="The app (must match entrega.yaml)."),
             env: str = EnvOpt,
             to: str = typer.Option(None, "--to", help="Release to restore (default: the "
                                                       "one the current release replaced)."),
             config: str = ConfigOpt) -> None:
    """Abort the rollout in progress, or restore an earlier release at once."""
    ctx = _ctx(config)
    check_app(ctx.config, app_name)
    client = ctx.client()
    env = _pick_env(ctx, env, busy_first=True, client=client)
    result = client.post(f"/api/v1/environments/{env}/rollback", {"to": to})
    console.print(f"rollout {result['rollout']} in {env}: back to {result['version']}")


@app.command()
def history(env: str = EnvOpt,
            limit: int = typer.Option(50, "--limit", "-n", help="How many events."),
            as_json: bool = JsonOpt, config: str = ConfigOpt) -> None:
    """Every event: who did what, when and why."""
    events = _ctx(config).client().get("/api/v1/history", environment=env, limit=limit)
    if as_json:
        _print_json(events)
    else:
        console.print(render.history_table(events))


@app.command()
def releases(as_json: bool = JsonOpt, config: str = ConfigOpt) -> None:
    """The app's releases, newest first."""
    rows = _ctx(config).client().get("/api/v1/releases")
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        console.print(f"{row['version']:<16} {row['digest'][:19]}  "
                      f"{render.clock(row['created_at'])}  {row['created_by']}")


@config_app.command("validate")
def config_validate(config: str = ConfigOpt) -> None:
    """Check entrega.yaml and say what is wrong, where."""
    cfg = load_config(config)
    console.print(f"{config}: valid ({cfg.app}, environments: "
                  f"{', '.join(e.name for e in cfg.environments)})")


@config_app.command("schema")
def config_schema_cmd() -> None:
    """Print the JSON Schema of entrega.yaml (for editors)."""
    _print_json(config_schema())


def check_app(cfg: Config, name: str | None) -> None:
    """Commands may name the app (`entrega rollback shop ...`): it must be this config's."""
    if name and name != cfg.app:
        raise EntregaError(f"this entrega.yaml delivers {cfg.app!r}, not {name!r}",
                           hint="run in the app's directory or pass -c its entrega.yaml")


# Command groups kept in modules of their own register themselves on `app`.
from entrega.cli import analysis as _analysis  # noqa: E402,F401
from entrega.cli import insights as _insights  # noqa: E402,F401
from entrega.cli import pipeline as _pipeline  # noqa: E402,F401


def main() -> None:
    try:
        app()
    except EntregaError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
