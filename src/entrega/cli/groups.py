"""Commands of release groups: `group list`, `group show`, `group promote`, `group abort`
(`release create --group` creates one)."""

from __future__ import annotations

import time

import typer
from rich.table import Table

from entrega.cli.app import ConfigOpt, Context, JsonOpt, app, console, print_json
from entrega.views import GroupView

group_app = typer.Typer(help="Release groups: several apps' releases moved as one.",
                        no_args_is_help=True)
app.add_typer(group_app, name="group")

PHASE_STYLE = {"succeeded": "green", "rolled_back": "red", "failed": "red", "aborted": "red",
               "reverted": "yellow", "reverting": "yellow", "deploying": "cyan"}
ENDED = ("succeeded", "rolled_back", "failed", "aborted")


def group_table(view: GroupView) -> Table:
    table = Table(title=f"release group {view.name}: {view.phase}"
                        + (f" ({view.message})" if view.message else ""))
    table.add_column("member")
    for env in view.environments:
        table.add_column(env)
    for member in view.members:
        cells = []
        for env in view.environments:
            phase = view.progress.get(env, {}).get(member.app, {}).get("phase", "-")
            cells.append(f"[{PHASE_STYLE.get(phase, 'dim')}]{phase}[/]")
        after = f" (after {', '.join(member.depends_on)})" if member.depends_on else ""
        table.add_row(f"{member.app} {member.version}{after}", *cells)
    return table


@group_app.command("list")
def group_list(as_json: bool = JsonOpt, config: str = ConfigOpt) -> None:
    """The release groups, newest first."""
    answer = Context(config).client().get("/api/v1/groups")
    if as_json:
        print_json(answer)
        return
    for view in (GroupView.model_validate(g) for g in answer):
        members = ", ".join(f"{m.app} {m.version}" for m in view.members)
        console.print(f"{view.name:<16} {view.phase:<12} {members}")


@group_app.command("show")
def group_show(name: str = typer.Argument(..., help="The group's name."),
               wait: bool = typer.Option(False, "--wait",
                                         help="Follow it until it ends; exit 0 if it "
                                              "succeeded, 1 otherwise."),
               as_json: bool = JsonOpt, config: str = ConfigOpt) -> None:
    """Where each member of the group stands in each environment."""
    client = Context(config).client()
    view = GroupView.model_validate(client.get(f"/api/v1/groups/{name}"))
    while wait and view.phase not in ENDED:
        time.sleep(1.0)
        view = GroupView.model_validate(client.get(f"/api/v1/groups/{name}"))
    if as_json:
        print_json(view.model_dump(mode="json"))
    else:
        console.print(group_table(view))
    if wait and view.phase != "succeeded":
        raise typer.Exit(1)


@group_app.command("promote")
def group_promote(name: str = typer.Argument(..., help="The group's name."),
                  config: str = ConfigOpt) -> None:
    """Promote the group's members whose rollouts run now (end their pause)."""
    view = GroupView.model_validate(Context(config).client().post(
        f"/api/v1/groups/{name}/promote"))
    console.print(f"release group {view.name}: promote requested")


@group_app.command("abort")
def group_abort(name: str = typer.Argument(..., help="The group's name."),
                config: str = ConfigOpt) -> None:
    """Send the members already moved in the group's environment back, and stop it."""
    view = GroupView.model_validate(Context(config).client().post(
        f"/api/v1/groups/{name}/abort"))
    console.print(f"release group {view.name}: abort requested (moved members go back)")
