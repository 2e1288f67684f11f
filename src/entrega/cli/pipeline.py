"""Commands of the pipeline: `release create`, `approve`, `pipeline`, `token create`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from entrega.cli.app import (
    ConfigOpt,
    Context,
    EnvOpt,
    JsonOpt,
    app,
    check_app,
    console,
    print_json,
)
from entrega.cli.artifact import commit_meta, create_group, parse_member, upload_release
from entrega.errors import EntregaError
from entrega.names import check_version
from entrega.views import GroupView, PipelineView, ReleaseCreated

release_app = typer.Typer(help="Create releases (what CI's webhook does).",
                          no_args_is_help=True)
token_app = typer.Typer(help="Make API tokens.", no_args_is_help=True)
app.add_typer(release_app, name="release")
app.add_typer(token_app, name="token")

STAGE_STYLE = {"succeeded": "green", "rolled_back": "red", "failed": "red",
               "awaiting_approval": "yellow", "queued": "cyan", "superseded": "dim",
               "cancelled": "dim", "-": "dim"}


@release_app.command("create")
def release_create(
    args: list[str] = typer.Argument(..., metavar="VERSION | APP:VERSION=ARTIFACT...",
                                     help="The new release's version; with --group, each "
                                          "member as APP:VERSION=ARTIFACT."),
    artifact: Path = typer.Option(None, "--artifact", "-a", help="Directory or .tar.gz."),
    group: str = typer.Option(None, "--group", "-g",
                              help="Create a release group of this name (its version, "
                                   "e.g. 2026.12.1): the members move together."),
    commit_sha: str = typer.Option(None, "--commit-sha", help="The commit built."),
    commit_time: str = typer.Option(None, "--commit-time",
                                    help="When it was committed (ISO 8601): for lead time."),
    ci_url: str = typer.Option(None, "--ci-url", help="Link to the CI run."),
    deploy: bool = typer.Option(True, "--deploy/--no-deploy",
                                help="Start the pipeline at once (default) or only store it."),
    as_json: bool = JsonOpt,
    config: str = ConfigOpt,
) -> None:
    """Upload an artifact as a new immutable release; it then flows through the pipeline.
    With --group, several apps' releases that move (and go back) together."""
    # Everything the command line says is checked before entrega.yaml is read.
    if group is not None:
        check_version(group)
        for member in args:
            check_version(parse_member(member)[1])
    elif len(args) != 1 or artifact is None:
        raise EntregaError("release create takes one VERSION and --artifact",
                           hint="or --group NAME APP:VERSION=ARTIFACT ...")
    else:
        check_version(args[0])
    meta = commit_meta(commit_sha=commit_sha, commit_time=commit_time, ci_url=ci_url)
    ctx = Context(config)
    client = ctx.client()
    if group is not None:
        answer = create_group(client, group, args, fields=meta, secret=ctx.webhook_secret())
        if as_json:
            print_json(answer)
            return
        view = GroupView.model_validate(answer)
        console.print(f"release group {view.name}: "
                      f"{', '.join(f'{m.app} {m.version}' for m in view.members)}; "
                      f"through {' -> '.join(view.environments)}. Follow it with "
                      f"`entrega group show {view.name}`")
        return
    assert artifact is not None
    answer = upload_release(client, args[0], artifact, deploy=deploy, fields=meta,
                            secret=ctx.webhook_secret())
    if as_json:
        print_json(answer)
        return
    created = ReleaseCreated.model_validate(answer)
    verb = "created" if created.created else "exists already (same bytes)"
    console.print(f"release {created.version} {verb}: {created.digest[:19]}")
    if created.deploy is not None:
        console.print("the pipeline has started; follow it with `entrega pipeline`")


@app.command()
def approve(
    args: list[str] = typer.Argument(..., metavar="[APP] VERSION",
                                     help="The release to let through the gate."),
    env: str = EnvOpt,
    config: str = ConfigOpt,
) -> None:
    """Pass a manual gate: the release enters the environment."""
    if len(args) > 2:
        raise EntregaError("give at most an app and a version")
    version = check_version(args[-1])
    ctx = Context(config, app=args[0] if len(args) == 2 else None)
    check_app(ctx.config, args[0] if len(args) == 2 else None)
    if env is None:
        gated = [e.name for e in ctx.config.environments if e.gate == "manual"]
        if len(gated) != 1:
            raise EntregaError("say which environment with --env")
        env = gated[0]
    ctx.client().post(f"/api/v1/environments/{env}/approve", {"version": version})
    console.print(f"{version} approved for {env}")


@app.command()
def pipeline(
    app_name: str = typer.Argument(None, metavar="[APP]", help="Must match entrega.yaml."),
    limit: int = typer.Option(10, "--limit", "-n", help="How many recent releases."),
    as_json: bool = JsonOpt,
    config: str = ConfigOpt,
) -> None:
    """Where every recent release stands in every environment."""
    ctx = Context(config, app=app_name)
    check_app(ctx.config, app_name)
    answer = ctx.client().get("/api/v1/pipeline", limit=limit)
    if as_json:
        print_json(answer)
        return
    view = PipelineView.model_validate(answer)
    table = Table("release", *view.environments, box=None, padding=(0, 2))
    for release in view.releases:
        cells = []
        for env in view.environments:
            stage = release.environments[env]
            text = Text(stage.status.replace("_", " "),
                        style=STAGE_STYLE.get(stage.status, "cyan"))
            if stage.running:
                text.append(" ●", style="bold green")
            cells.append(text)
        name = release.version + ("" if release.retained else " (pruned)")
        table.add_row(name, *cells)
    console.print(table)
    console.print("● runs there now", style="dim")


@token_app.command("create")
def token_create(
    name: str = typer.Argument(..., help="Who or what uses it: alice, ci..."),
    role: str = typer.Option("deployer", "--role", help="viewer, deployer or admin."),
) -> None:
    """Make a token: prints it once, and the line to add under auth.tokens."""
    from entrega.auth import ROLES, new_token

    if role not in ROLES:
        raise EntregaError(f"unknown role {role!r}", hint=f"use one of {', '.join(ROLES)}")
    token, digest = new_token()
    console.print(f"token for {name} (shown once; give it as ENTREGA_TOKEN):\n{token}\n")
    console.print("add to entrega.yaml:\nauth:\n  tokens:\n"
                  f"    {name}: {{role: {role}, sha256: \"{digest}\"}}", highlight=False)
