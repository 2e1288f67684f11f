"""`entrega feedback`, `entrega report`, `entrega dora`: practice 5 from the command line.

Registered on the shared Typer app (``cli/app.py``) by importing this module (main.py does).
Like every command, they are clients of the server's API. The HTML report is drawn here,
from the report's JSON: the server stays free of matplotlib work for CLI users.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from entrega.cli.app import ConfigOpt, Context, JsonOpt, app, console, print_json
from entrega.cli.client import Client, server_url
from entrega.cli.render import clock
from entrega.errors import EntregaError
from entrega.insights.report import format_change, format_duration, format_figure
from entrega.names import check_version
from entrega.views import (
    DoraMetric,
    DoraView,
    FeedbackList,
    ReleaseReport,
    TeamDoraFigures,
    TeamDoraView,
)

AppOpt = typer.Option(None, "--app", help="The app (must be the one entrega.yaml delivers).")


def _checked(config: str, app_name: str | None) -> Context:
    ctx = Context(config, app=app_name)
    if app_name is not None and app_name != ctx.config.app:
        raise EntregaError(f"{config} delivers {ctx.config.app!r}, not {app_name!r}",
                           hint=f"run in the directory of {app_name}'s entrega.yaml, "
                                "or pass its path with --config")
    return ctx


def _stars(rating: int | None) -> Text:
    return Text("★" * rating + "☆" * (5 - rating), style="yellow") if rating else Text("–")


@app.command()
def feedback(version: str = typer.Option(None, "--version", "-v", help="Only this release."),
             environment: str = typer.Option(None, "--env", "-e", help="Only this environment."),
             limit: int = typer.Option(50, "--limit", "-n", help="How many entries."),
             app_name: str = AppOpt, as_json: bool = JsonOpt, config: str = ConfigOpt) -> None:
    """What users said: ratings and comments per release, newest first."""
    answer = _checked(config, app_name).client().get("/api/v1/feedback", version=version,
                                                       environment=environment, limit=limit)
    if as_json:
        print_json(answer)
        return
    data = FeedbackList.model_validate(answer)
    summary = Table("release", "feedback", "mean rating", "1-2 ratings", box=None,
                    padding=(0, 1), title="per release", title_justify="left")
    for v, s in data.summary.items():
        mean = "–" if s.mean_rating is None else f"{s.mean_rating:.2f}"
        summary.add_row(v, str(s.count), mean, str(s.low_ratings))
    console.print(summary)
    table = Table("time", "release", "env", "rating", "comment", "user", "tags", box=None,
                  padding=(0, 1))
    for f in data.feedback:
        # Text(), never markup: a comment is shown exactly as the user wrote it.
        table.add_row(clock(f.time), Text(f.version), Text(f.environment or ""),
                      _stars(f.rating), Text(f.comment or ""), Text(f.user_id or ""),
                      Text(", ".join(f.tags)))
    if not data.feedback:
        console.print("no feedback yet: add <script src=\"/.entrega/feedback.js\" defer> "
                      "to your pages, or POST to /.entrega/feedback", highlight=False)
    else:
        console.print(table)


@app.command()
def report(version: str = typer.Argument(..., help="The release, e.g. v2.",
                                        callback=check_version),
           fmt: str = typer.Option("text", "--format", "-f", help="text, json or html."),
           output: Path = typer.Option(None, "--output", "-o",
                                       help="Write to this file (html: default "
                                            "<app>-<version>-report.html)."),
           environment: str = typer.Option(None, "--env", "-e",
                                           help="Environment (default: the latest the "
                                                "release reached)."),
           rollout: int = typer.Option(None, "--rollout", "-r",
                                       help="Which rollout of the release, by id (default: "
                                            "its latest; the report lists the others)."),
           app_name: str = AppOpt, as_json: bool = JsonOpt, config: str = ConfigOpt) -> None:
    """One rollout of a release against the release it replaced: scorecard, timeline and
    comments."""
    fmt = "json" if as_json else fmt
    if fmt not in ("text", "json", "html"):
        raise EntregaError(f"unknown format {fmt!r}", hint="use text, json or html")
    ctx = _checked(config, app_name)
    data = ctx.client().get(f"/api/v1/releases/{version}/report", environment=environment,
                            rollout=rollout)
    if fmt == "json":
        if output:
            import json

            output.write_text(json.dumps(data, indent=2, default=str) + "\n")
            console.print(f"wrote {output}")
        else:
            print_json(data)
        return
    if fmt == "html":
        from entrega.insights.report import render_report_html

        path = output or Path(f"{data['app']}-{version}-report.html")
        path.write_text(render_report_html(data))
        console.print(f"wrote {path} (open it in a browser: it is one self-contained file)")
        return
    _print_scorecard(ReleaseReport.model_validate(data))


def _print_scorecard(report: ReleaseReport) -> None:
    verdict = report.verdict
    console.print(Text.assemble((f"{report.app} {report.version}", "bold"),
                                f" vs {report.previous_version or '–'} in "
                                f"{report.environment}: ",
                                (verdict.outcome, "bold"), f", {verdict.quality}"))
    if verdict.reason:
        console.print(Text(verdict.reason, style="italic"))
    if report.rollout is not None:
        shown = report.rollout.id
        others = [str(r.id) for r in report.rollouts if r.id != shown]
        console.print(Text(f"rollout {shown}" + (
            f" (other rollouts of {report.version} here: {', '.join(others)}; "
            "see one with --rollout ID)" if others else ""), style="dim"))
    table = Table("figure", report.previous_version or "previous", report.version, "change",
                  "significant", box=None, padding=(0, 1))
    for f in report.figures:
        if f.significant:
            sig = Text(f"yes, {f.direction}", style="red" if f.direction == "worse" else "green")
        else:
            sig = Text("no" if f.significant is False else "–", style="dim")
        table.add_row(f.label, format_figure(f.previous, f.unit),
                      format_figure(f.current, f.unit), format_change(f.model_dump()), sig)
    console.print(table)
    if report.time_at_weight:
        console.print("time at each weight: " + ", ".join(
            f"{w}% {format_duration(s)}" for w, s in report.time_at_weight.items()))
    for c in report.comments[:10]:
        console.print(Text.assemble(_stars(c.rating), " ", Text(c.comment or "")))


@app.command()
def dora(environment: str = typer.Option(None, "--env", "-e",
                                         help="Environment (default: each app's last one)."),
         days: float = typer.Option(90, "--days", "-d", help="Period, in days up to now."),
         app_name: str = AppOpt, as_json: bool = JsonOpt, config: str = ConfigOpt) -> None:
    """DORA's four keys from entrega's own records, each with its DORA 2024 tier: the
    team's over every app of a file of several (and each app's line), or one app's."""
    ctx = _checked(config, app_name)
    answer = (_team_client(ctx) or ctx.client()).get("/api/v1/dora",
                                                     environment=environment, days=days)
    if as_json:
        print_json(answer)
        return
    if "team" in answer:  # a server of several apps answers for the team
        _print_team_dora(TeamDoraView.model_validate(answer))
        return
    data = DoraView.model_validate(answer)
    console.print(Text.assemble(("DORA ", "bold"), f"{data.environment}, last "
                                f"{data.days:g} days: {data.deployments} deployments"))
    _print_keys(data)
    for f in data.failures:
        console.print(Text(f"  failed: {f.version} ({f.how}), recovered in "
                           f"{format_duration(f.recovery_s)}", style="dim"))


def _team_client(ctx: Context) -> Client | None:
    """A client of the server's own routes when the question is the team's: no app named
    and an entrega.yaml of several apps. (Without an entrega.yaml, ENTREGA_SERVER's
    ``/api/v1/dora`` says by its answer whether it is one app's or the team's.)"""
    if ctx.app_name is not None:
        return None
    try:
        apps = ctx.apps
    except EntregaError:
        return None
    return Client(server_url(apps.first.server.listen)) if apps.many else None


DORA_KEYS = (("deployment frequency", "deployment_frequency"),
             ("lead time for changes (median)", "lead_time"),
             ("change failure rate", "change_failure_rate"),
             ("failed deployment recovery time (median)", "recovery_time"))
TIER_STYLES = {"elite": "green", "high": "cyan", "medium": "yellow", "low": "red"}


def _shown(key: str, metric: DoraMetric) -> str:
    value = metric.value
    if value is None:
        return "–"
    if key == "deployment_frequency":
        return f"{value:.2f}/day"
    if key == "change_failure_rate":
        return f"{value:.1%}"
    return format_duration(value)


def _tier(metric: DoraMetric) -> Text:
    return Text(metric.tier or "no data", style=TIER_STYLES.get(metric.tier or "", "dim"))


def _print_keys(figures: DoraView | TeamDoraFigures) -> None:
    table = Table("metric", "value", "tier", "from", box=None, padding=(0, 1))
    for label, key in DORA_KEYS:
        m = getattr(figures, key)
        table.add_row(label, _shown(key, m), _tier(m), f"{m.samples}")
    console.print(table)


def _print_team_dora(data: TeamDoraView) -> None:
    console.print(Text.assemble(
        ("DORA ", "bold"), f"team of {len(data.apps)} apps, last {data.days:g} days: "
        f"{data.team.deployments} deployments (a release group counts once)"))
    _print_keys(data.team)
    for f in data.team.failures:
        what = ", ".join(f"{app} {version}" for app, version in f.releases.items())
        group = f"group {f.group}: " if f.group else ""
        console.print(Text(f"  failed: {group}{what} ({f.how}), recovered in "
                           f"{format_duration(f.recovery_s)}", style="dim"))
    table = Table("app", "environment", "deployments", *(label.removesuffix(" (median)")
                                                         for label, _ in DORA_KEYS),
                  box=None, padding=(0, 1), title="each app", title_justify="left")
    for name, report in data.apps.items():
        cells = [Text.assemble(_shown(key, getattr(report, key)), " ",
                               _tier(getattr(report, key))) for _, key in DORA_KEYS]
        table.add_row(Text(name), Text(report.environment), str(report.deployments), *cells)
    console.print(table)
