"""Rich rendering of the API's read models (``entrega.views``) for people (``--json``
prints the server's answer as it came)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from entrega.views import (
    ConfigChangeView,
    ConfigReloaded,
    EventView,
    HostView,
    RolloutView,
    StatusView,
)

PHASE_STYLE = {"succeeded": "green", "rolled_back": "red", "failed": "red",
               "paused": "yellow", "progressing": "cyan", "starting": "cyan",
               "verifying": "cyan", "scaling_down": "cyan", "pending": "dim"}


def clock(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%H:%M:%S")


def weights_bar(weights: dict[str, int], width: int = 30) -> Text:
    text = Text()
    styles = ["green", "magenta", "blue", "yellow"]
    for i, (_, weight) in enumerate(sorted(weights.items())):
        cells = round(width * weight / 100)
        text.append("█" * cells, style=styles[i % len(styles)])
    text.append("  " + "  ".join(f"{v} {w}%" for v, w in sorted(weights.items())))
    return text


def rollout_panel(r: RolloutView) -> Group:
    phase = Text(r.phase, style=PHASE_STYLE.get(r.phase, ""))
    head = Text.assemble(f"rollout {r.id}: {r.from_version or '∅'} → ",
                         (r.version, "bold"), f" ({r.strategy}) ", phase)
    parts: list[Any] = [head, weights_bar(r.weights)]
    if r.steps:
        steps = Text("steps: ")
        for i, step in enumerate(r.steps):
            style = "bold reverse" if i == r.step_index and r.phase in (
                "progressing", "paused") else ("dim" if i < r.step_index else "")
            steps.append(f" {step} ", style=style)
        parts.append(steps)
    if r.message:
        parts.append(Text(r.message, style="italic"))
    if r.hosts_left_out:
        parts.append(Text("left out: " + "; ".join(f"{h} ({why})" for h, why
                                                    in r.hosts_left_out.items()),
                          style="red"))
    if r.analysis is not None and r.analysis.metrics:
        table = Table("metric", "verdict", "canary", "stable", "reason", box=None,
                      padding=(0, 1))
        for m in r.analysis.metrics:
            table.add_row(m["metric"], m["verdict"], _num(m.get("canary")),
                          _num(m.get("stable")), m["reason"])
        parts.append(table)
    return Group(*parts)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def status_view(status: StatusView) -> Group:
    parts: list[Any] = [Text(f"app {status.app}", style="bold")]
    for env in status.environments:
        parts.append(Text.assemble(("\n" + env.name, "bold cyan"), "  runs ",
                                   (env.current or "nothing yet", "bold")))
        if env.rollout:
            parts.append(rollout_panel(env.rollout))
        elif env.last_rollout:
            last = env.last_rollout
            parts.append(Text(f"last rollout {last.id}: {last.version} "
                              f"{last.phase} — {last.message}", style="dim"))
            if last.hosts_left_out:
                parts.append(Text("left out: " + ", ".join(last.hosts_left_out),
                                  style="red"))
        if env.hosts:
            parts.append(hosts_table(env.hosts))
            if reasons := host_reasons({h.name: h.error or "unreachable"
                                        for h in env.hosts if not h.reachable}):
                parts.append(reasons)
    return Group(*parts)


def hosts_table(hosts: list[HostView]) -> Table:
    """A fleet's hosts: reachable or not (why: under the table), live instances per
    release, and each host's own router where there is one."""
    routers = any(host.router is not None for host in hosts)
    columns = ["host", "address", "state", "instances"] + (["router"] if routers else [])
    table = Table(*columns, box=None, padding=(0, 1))
    for host in hosts:
        running = ", ".join(f"{v}: {n}" for v, n in sorted(host.instances.items())) or "none"
        state = Text("ok", "green") if host.reachable else Text("unreachable", "red")
        row: list[str | Text] = [host.name, host.address, state, running]
        if routers:
            row.append(_host_router(host))
        table.add_row(*row)
    return table


def _host_router(host: HostView) -> Text:
    """A host's own router (``placement: every_host``): where, and whether it holds the
    current route table."""
    router = host.router
    if router is None:
        return Text("")
    style = {"in step": "green", "behind": "yellow"}.get(router.state, "red")
    generation = f", table {router.generation}" if router.generation else ""
    return Text(f"{router.listen} {router.state}{generation}", style)


def host_reasons(reasons: dict[str, str]) -> Text | None:
    """Why each failed host failed, one line each under its table: an error is a sentence,
    too long for a column on an 80-column terminal."""
    if not reasons:
        return None
    return Text("\n".join(f"{name}: {why}" for name, why in reasons.items()), style="red")


def history_table(events: list[EventView]) -> Table:
    table = Table("time", "env", "version", "kind", "actor", "what", box=None, padding=(0, 1))
    for e in events:
        style = {"rolled_back": "red", "failed": "red", "promoted": "green",
                 "error": "red"}.get(e.kind, "")
        table.add_row(clock(e.time), e.environment or "", e.version or "",
                      Text(e.kind, style=style), e.actor, e.message)
    return table


def config_reloaded(result: ConfigReloaded) -> str:
    """`entrega config reload`: one line, then each change under what happens to it."""
    if not (result.applied or result.waiting or result.needs_restart):
        return "configuration reloaded: nothing changed"
    lines = [f"configuration reloaded: {len(result.applied)} applied now, "
             f"{len(result.waiting)} waiting, {len(result.needs_restart)} need a server "
             "restart"]

    def section(title: str, changes: list[ConfigChangeView]) -> None:
        if changes:
            lines.append(title)
            lines.extend(f"  {_change(c)}" for c in changes)

    section("applied now:", result.applied)
    waits = "; ".join(f"{env}: {why}" for env, why in sorted(result.waiting_for.items()))
    section(f"router changes, applied once no rollout is in progress ({waits}):",
            result.waiting)
    section("restart the server to apply:", result.needs_restart)
    return "\n".join(lines)


def _change(change: ConfigChangeView) -> str:
    if change.before is None and change.after is None:
        return f"{change.path} (changed)"
    return f"{change.path}: {change.before or '(unset)'} -> {change.after or '(unset)'}"
