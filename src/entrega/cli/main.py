"""`entrega`: parse, call the server's API, render. Errors are one sentence, exit code 1.

The delivery commands live here; the pipeline's, analysis' and practice 5's in modules of
their own. Each registers on the shared app of ``cli/app.py``; importing them here builds
the whole command line.
"""

from __future__ import annotations

import getpass
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import typer
from rich.live import Live
from rich.text import Text

# Importing a command module registers its commands on the shared app.
from entrega.cli import analysis as _analysis  # noqa: F401
from entrega.cli import groups as _groups  # noqa: F401
from entrega.cli import hosts as _hosts  # noqa: F401
from entrega.cli import insights as _insights  # noqa: F401
from entrega.cli import pipeline as _pipeline  # noqa: F401
from entrega.cli import render
from entrega.cli.app import (
    ConfigOpt,
    Context,
    EnvOpt,
    JsonOpt,
    app,
    check_app,
    config_app,
    console,
    err,
    print_json,
)
from entrega.cli.artifact import commit_meta, upload_release
from entrega.cli.client import Client
from entrega.cli.follow import (
    RECONNECT_TIMEOUT_S,
    Ending,
    event_line,
    follow_rollout,
    judge_start,
    poll,
    stamp,
)
from entrega.cli.init_template import render as render_template
from entrega.config import config_schema, load_config
from entrega.config.apps import load_apps
from entrega.errors import EntregaError
from entrega.names import check_optional_version, check_version
from entrega.views import (
    ConfigReloaded,
    EventView,
    GroupView,
    ReleaseView,
    RolledBack,
    RolloutRef,
    RolloutView,
    StatusView,
)


def _pick_env(ctx: Context, env: str | None, *, busy_first: bool, client: Client) -> str:
    if env:
        return env
    names = [e.name for e in ctx.config.environments]
    if len(names) == 1:
        return names[0]
    if busy_first:
        status = StatusView.model_validate(client.get("/api/v1/status"))
        busy = [e.name for e in status.environments if e.rollout]
        if len(busy) == 1:
            return busy[0]
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
def server(config: str = ConfigOpt,
           listen: str | None = typer.Option(
               None, "--listen", metavar="HOST:PORT",
               help="listen here instead of server.listen (a second server of a "
                    "PostgreSQL store, on the same machine and file)")) -> None:
    """Run the API and the reconcile loop (routers and instances run on their own). On a
    PostgreSQL store several servers may run: one leads, the others stand by."""
    import logging

    from entrega.logs import setup_logging
    from entrega.net import parse_address
    from entrega.server import run_server

    setup_logging(logging.INFO)
    apps = load_apps(config)
    if listen is not None:
        try:
            parse_address(listen)
        except ValueError as exc:
            raise EntregaError(f"--listen {listen!r}: {exc}") from None
    err.print(f"entrega server for [bold]{', '.join(apps.names)}[/] on "
              f"http://{listen or apps.first.server.listen}")
    run_server(apps, config_file=Path(config).resolve(), listen=listen)


@app.command()
def down(config: str = ConfigOpt) -> None:
    """Stop the app's routers and instances (run after stopping `entrega server`); with
    several apps, every app's (or only the one named with --app)."""
    import asyncio

    from entrega.controller.teardown import stop_data_plane
    from entrega.store.database import ControllerLock

    ctx = Context(config)
    apps = [ctx.config] if ctx.app_name else list(ctx.apps)
    lock = ControllerLock(ctx.apps.first.state_path / "controller.lock")
    lock.acquire()  # refuses while a server runs: it would start everything again
    try:
        for cfg in apps:
            for line in asyncio.run(stop_data_plane(cfg)):
                console.print(f"stopped {line}")
    finally:
        lock.release()


@app.command(epilog="With --wait, the exit code says how the rollout ended: 0 promoted, "
                   "1 rolled back or failed (or the server was lost for longer than "
                   "--reconnect-timeout-s), 3 paused until a person runs `entrega promote` "
                   "or `entrega abort`.")
def deploy(
    version: str = typer.Argument(..., help="The release's version, e.g. v2 or 1.4.0.",
                                  callback=check_version),
    artifact: Path = typer.Option(None, "--artifact", "-a",
                                  help="Directory or .tar.gz to create the release from."),
    commit_sha: str = typer.Option(None, "--commit-sha",
                                   help="With --artifact: the commit built."),
    commit_time: str = typer.Option(None, "--commit-time",
                                    help="With --artifact: when it was committed (ISO 8601 "
                                         "or Unix seconds), for DORA's lead time."),
    ci_url: str = typer.Option(None, "--ci-url", help="With --artifact: link to the CI run."),
    env: str = typer.Option(None, "--env", "-e", help="Environment (default: the first)."),
    strategy: str = typer.Option(None, "--strategy", "-s",
                                 help="canary, blue-green, direct or rolling "
                                      "(default: from config)."),
    wait: bool = typer.Option(False, "--wait", "-w",
                              help="Follow the rollout until it ends, one line per event; "
                                   "the exit code says how it ended (below)."),
    reconnect_timeout_s: float = typer.Option(
        RECONNECT_TIMEOUT_S, "--reconnect-timeout-s",
        help="With --wait: how long to keep reconnecting to a server that went away "
             "(restart, upgrade) before giving up, in seconds."),
    no_queue: bool = typer.Option(False, "--no-queue",
                                  help="Fail if a rollout is in progress instead of queueing."),
    force: bool = typer.Option(False, "--force",
                               help="Admin: skip the pipeline's order (needs --reason)."),
    reason: str = typer.Option("", "--reason", help="Why (recorded in the audit log)."),
    as_json: bool = JsonOpt,
    config: str = ConfigOpt,
) -> None:
    """Create a release (with --artifact) and roll it out to an environment."""
    meta = commit_meta(commit_sha=commit_sha, commit_time=commit_time, ci_url=ci_url)
    if meta and artifact is None:
        raise EntregaError("--commit-sha, --commit-time and --ci-url describe a new release: "
                           "give them with --artifact",
                           hint="an existing release keeps the metadata it was created with")
    ctx = Context(config)
    client = ctx.client()
    env = env or ctx.config.environments[0].name
    body: dict[str, Any] = {"version": version, "strategy": strategy, "queue": not no_queue,
                            "force": force, "reason": reason}
    if artifact is not None:
        # The bytes go up first (the server reads no path we name), then the deploy.
        upload_release(client, version, artifact, deploy=False, fields=meta,
                       secret=ctx.webhook_secret())
    rollout = client.post(f"/api/v1/environments/{env}/deploy", body)
    stream = sys.stderr if as_json else sys.stdout
    if "queued" in rollout:
        if not wait:
            if as_json:
                print_json(rollout)
            else:
                console.print(f"{version} queued for {env} behind the rollout in progress "
                              "(a newer request replaces it)")
            return
        started = _wait_start(client, rollout["queued"], stream=stream,
                              reconnect_timeout_s=reconnect_timeout_s)
        if isinstance(started, Ending):
            if as_json:
                print_json(rollout)
            raise typer.Exit(started.exit_code)
        rollout = started
    if not wait:
        if as_json:
            print_json(rollout)
        else:
            started_view = RolloutView.model_validate(rollout)
            console.print(f"rollout {started_view.id}: {version} → {env} "
                          f"({started_view.strategy}); follow with `entrega status --watch`")
        return
    final, ending = _wait(client, rollout, live=console.is_terminal and not as_json,
                          stream=stream, reconnect_timeout_s=reconnect_timeout_s)
    if as_json:
        print_json(final)
    raise typer.Exit(ending.exit_code)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "cli"


def _writer(stream: TextIO) -> Callable[[str], None]:
    def write(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()  # a pipe is block-buffered: CI would see nothing until the end
    return write


def _line(kind: str, text: str) -> str:
    return f"{stamp(time.time())} {kind:<12} {text}"


def _wait_start(client: Client, request: dict[str, Any], *, stream: TextIO,
                reconnect_timeout_s: float) -> dict[str, Any] | Ending:
    """Wait for a queued deploy to start: its rollout's view, or how it ended without
    one (a newer deploy superseded it)."""
    write = _writer(stream)
    version, env = request["version"], request["environment"]
    write(_line("deploy", f"{version} queued for {env} behind the rollout in progress; "
                          "waiting for it to start (a newer deploy would replace it)"))

    def stage(view: dict[str, Any]) -> dict[str, Any]:
        release = next((r for r in view["releases"] if r["version"] == version), None)
        return dict(release["environments"].get(env) or {}) if release else {}

    started = poll(lambda: dict(client.get("/api/v1/pipeline", limit=200)),
                   lambda view: judge_start(stage(view), request),
                   note=lambda text: write(_line("connection", text)),
                   reconnect_timeout_s=reconnect_timeout_s)
    if isinstance(started, Ending):
        write(_line("deploy", started.line))
        return started
    return dict(client.get(f"/api/v1/rollouts/{started}"))


def _wait(client: Client, rollout: dict[str, Any], *, live: bool, stream: TextIO,
          reconnect_timeout_s: float) -> tuple[dict[str, Any], Ending]:
    """Follow a rollout to its end. A terminal gets the live panel with the event lines
    above it; anything else (a CI log, a pipe, --json's stderr) only the lines, each
    flushed at once."""
    write, line = _writer(stream), _line
    view = RolloutView.model_validate(rollout)
    shape = (f"{view.from_version} → {view.version} ({view.strategy})" if view.from_version
             else f"{view.version} (first release: straight to 100%)")
    start = line("deploy", f"following rollout {view.id} in {view.environment}: {shape}")
    path = f"/api/v1/rollouts/{view.id}"
    if not live:
        write(start)
        final, ending = follow_rollout(lambda: dict(client.get(path)),
                                       show_event=lambda e: write(event_line(e)),
                                       note=lambda text: write(line("connection", text)),
                                       reconnect_timeout_s=reconnect_timeout_s)
        write(line("deploy", ending.line))
        return final, ending
    console.print(Text(start))
    with Live(console=console, refresh_per_second=4, transient=True) as panel:
        final, ending = follow_rollout(
            lambda: dict(client.get(path)),
            show_event=lambda e: panel.console.print(Text(event_line(e))),
            note=lambda text: panel.console.print(Text(line("connection", text))),
            show_view=lambda view: panel.update(
                render.rollout_panel(RolloutView.model_validate(view))),
            reconnect_timeout_s=reconnect_timeout_s)
    console.print(render.rollout_panel(RolloutView.model_validate(final)))
    console.print(Text(line("deploy", ending.line)))
    return final, ending


@app.command()
def status(
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh until interrupted."),
    as_json: bool = JsonOpt,
    config: str = ConfigOpt,
) -> None:
    """What every environment runs, and the live state of rollouts."""
    client = Context(config).client()
    if as_json:
        print_json(client.get("/api/v1/status"))
        return
    if not watch:
        console.print(render.status_view(StatusView.model_validate(client.get(
            "/api/v1/status"))))
        return
    try:
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                live.update(render.status_view(StatusView.model_validate(client.get(
                    "/api/v1/status"))))
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass


@app.command()
def promote(env: str = EnvOpt,
            full: bool = typer.Option(False, "--full", help="Skip all remaining steps."),
            config: str = ConfigOpt) -> None:
    """End the current pause or analysis step (or all steps with --full)."""
    ctx = Context(config)
    client = ctx.client()
    env = _pick_env(ctx, env, busy_first=True, client=client)
    result = RolloutRef.model_validate(
        client.post(f"/api/v1/environments/{env}/promote", {"full": full}))
    console.print(f"rollout {result.rollout} in {env}: promote requested")


@app.command()
def abort(env: str = EnvOpt, config: str = ConfigOpt) -> None:
    """Stop the rollout in progress: all traffic back to stable, then stop the new release."""
    ctx = Context(config)
    client = ctx.client()
    env = _pick_env(ctx, env, busy_first=True, client=client)
    result = RolloutRef.model_validate(client.post(f"/api/v1/environments/{env}/abort"))
    console.print(f"rollout {result.rollout} in {env}: abort requested")


@app.command()
def rollback(app_name: str = typer.Argument(None, metavar="[APP]",
                                            help="The app (must match entrega.yaml)."),
             env: str = EnvOpt,
             to: str = typer.Option(None, "--to", help="Release to restore (default: the "
                                                       "one the current release replaced).",
                                    callback=check_optional_version),
             config: str = ConfigOpt) -> None:
    """Abort the rollout in progress, or restore an earlier release at once. In a file of
    several apps without --app, --to names a release group: its releases are put back."""
    ctx = Context(config, app=app_name)
    if to is not None and ctx.app_name is None and ctx.apps.many:
        answer = ctx.client().post(f"/api/v1/groups/{to}/restore", {"environment": env})
        view = GroupView.model_validate(answer)
        members = ", ".join(f"{m.app} {m.version}" for m in view.members)
        console.print(f"release group {to} is being restored in {view.environments[0]} as "
                      f"group {view.name}: {members} (follow it with `entrega group show "
                      f"{view.name} --wait`)")
        return
    check_app(ctx.config, app_name)
    client = ctx.client()
    env = _pick_env(ctx, env, busy_first=True, client=client)
    result = RolledBack.model_validate(
        client.post(f"/api/v1/environments/{env}/rollback", {"to": to}))
    console.print(f"rollout {result.rollout} in {env}: back to {result.version}")


@app.command()
def history(env: str = EnvOpt,
            limit: int = typer.Option(50, "--limit", "-n", help="How many events."),
            as_json: bool = JsonOpt, config: str = ConfigOpt) -> None:
    """Every event: who did what, when and why."""
    events = Context(config).client().get("/api/v1/history", environment=env, limit=limit)
    if as_json:
        print_json(events)
    else:
        console.print(render.history_table([EventView.model_validate(e) for e in events]))


@app.command()
def releases(as_json: bool = JsonOpt, config: str = ConfigOpt) -> None:
    """The app's releases, newest first."""
    rows = Context(config).client().get("/api/v1/releases")
    if as_json:
        print_json(rows)
        return
    for row in (ReleaseView.model_validate(r) for r in rows):
        console.print(f"{row.version:<16} {row.digest[:19]}  "
                      f"{render.clock(row.created_at)}  {row.created_by}")


@config_app.command("validate")
def config_validate(config: str = ConfigOpt) -> None:
    """Check entrega.yaml and say what is wrong, where."""
    for cfg in load_apps(config):
        console.print(f"{config}: valid ({cfg.app}, environments: "
                      f"{', '.join(e.name for e in cfg.environments)})")


@config_app.command("reload")
def config_reload(as_json: bool = JsonOpt, config: str = ConfigOpt) -> None:
    """Have the server read entrega.yaml again: what applied now, which router changes wait
    for a rollout to end, and what needs a server restart. A file with a mistake is
    refused (file:line) and the server keeps its running configuration."""
    answer = Context(config).client().post("/api/v1/config/reload")
    if as_json:
        print_json(answer)
        return
    # Paths hold brackets (environments[production]): plain text, not Rich markup.
    console.print(render.config_reloaded(ConfigReloaded.model_validate(answer)),
                  markup=False, highlight=False, soft_wrap=True)


@config_app.command("schema")
def config_schema_cmd() -> None:
    """Print the JSON Schema of entrega.yaml (for editors)."""
    print_json(config_schema())


def main() -> None:
    try:
        app()
    except EntregaError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
