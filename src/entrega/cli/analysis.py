"""`entrega analysis explain ROLLOUT`: why a rollout's analysis decided what it did."""

from __future__ import annotations

import math
from typing import Any

import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from entrega.cli.app import ConfigOpt, Context, JsonOpt, app, console, print_json
from entrega.cli.render import clock
from entrega.views import RolloutAnalysis

analysis_app = typer.Typer(help="Canary analysis: what was measured and judged.",
                           no_args_is_help=True)
app.add_typer(analysis_app, name="analysis")

VERDICT_STYLE = {"pass": "green", "fail": "bold red", "inconclusive": "yellow",
                 "no-data": "dim"}


def _explain_sequential(d: dict[str, Any]) -> str:
    nc, ns = d.get("canary_requests", 0), d.get("stable_requests", 0)
    ec, es = d.get("canary_errors", 0), d.get("stable_errors", 0)
    share = nc / (nc + ns) if nc + ns else 0.0
    evidence = math.exp(min(float(d.get("log_evidence", 0.0)), 700))
    fail_at = math.exp(float(d.get("fail_at", 0.0)))
    return (f"{d.get('test', 'sequential test')}: {nc} canary and {ns} stable requests, so "
            f"if the canary were no worse an error would be the canary's with probability "
            f"{share:.3f}. {ec} of {ec + es} errors were the canary's: the evidence that "
            f"it is worse is {evidence:.3g}:1; the test fails at {fail_at:.3g}:1 "
            f"(false alarm <= {d.get('alpha', 0):g} however often it is checked), and "
            f"only if the increase is above {d.get('max_increase') or 0:g}.")


def _explain_feedback(d: dict[str, Any]) -> str:
    nc, ns = d.get("canary_ratings", 0), d.get("stable_ratings", 0)
    lc, ls = d.get("canary_low", 0), d.get("stable_low", 0)
    share = nc / (nc + ns) if nc + ns else 0.0
    evidence = math.exp(min(float(d.get("log_evidence", 0.0)), 700))
    fail_at = math.exp(float(d.get("fail_at", 0.0)))
    return (f"{d.get('test', 'sequential test')}: {nc} canary and {ns} stable ratings, so "
            f"if the canary were no worse a low rating (1-2) would be the canary's with "
            f"probability {share:.3f}. {lc} of {lc + ls} low ratings were the canary's: the "
            f"evidence that it is worse is {evidence:.3g}:1; the test fails at "
            f"{fail_at:.3g}:1 (false alarm <= {d.get('alpha', 0):g} however often it is "
            f"checked), and only if the increase is above {d.get('max_increase') or 0:g}.")


def _explain_mann_whitney(d: dict[str, Any]) -> str:
    parts = [f"{d.get('test', 'Mann-Whitney U')}: {d.get('canary_samples', 0)} canary vs "
             f"{d.get('stable_samples', 0)} stable request latencies"]
    if "p_location" in d:
        parts.append(f"p(location) = {d['p_location']:.3g}")
    if "p_tail" in d:
        parts.append(f"p(tail above {d.get('tail_from_ms', 0):.1f} ms) = {d['p_tail']:.3g}")
    if "fail_below_p" in d:
        parts.append(f"fails below p = {d['fail_below_p']:.3g} (alpha {d.get('alpha', 0):g} "
                     f"spread over {d.get('max_checks', 0)} checks)")
    return "; ".join(parts) + "."


def _metric_block(metric: dict[str, Any]) -> Group:
    verdict = metric["verdict"]
    head = Text.assemble((f"  {metric['metric']}", "bold"), "  ",
                         (verdict, VERDICT_STYLE.get(verdict, "")),
                         ("  (critical)" if metric.get("critical") else "", "dim"))
    lines: list[Any] = [head, Text(f"    {metric['reason']}")]
    details = metric.get("details") or {}
    test = str(details.get("test", ""))
    if "canary_ratings" in details:
        lines.append(Text(f"    {_explain_feedback(details)}", style="dim"))
    elif "log_evidence" in details:
        lines.append(Text(f"    {_explain_sequential(details)}", style="dim"))
    elif test.startswith("one-sided Mann-Whitney"):
        lines.append(Text(f"    {_explain_mann_whitney(details)}", style="dim"))
    elif details:
        shown = ", ".join(f"{k}={v}" for k, v in details.items())
        lines.append(Text(f"    {shown}", style="dim"))
    return Group(*lines)


@analysis_app.command("explain")
def explain(rollout: int = typer.Argument(..., help="The rollout's id (see `status`)."),
            as_json: bool = JsonOpt, config: str = ConfigOpt) -> None:
    """Per metric: the numbers, the test, and why it decided."""
    answer = Context(config).client().get(f"/api/v1/rollouts/{rollout}/analysis")
    if as_json:
        print_json(answer)
        return
    data = RolloutAnalysis.model_validate(answer)
    r = data.rollout
    console.print(Text.assemble(f"rollout {r.id}: {r.from_version or '∅'} → ",
                                (r.version, "bold"), f" in {r.environment}: ",
                                (r.phase, "bold"), f" — {r.message}"))
    if not data.windows:
        console.print("no analysis ran in this rollout")
        return
    for window in data.windows:
        result = window.result or {}
        verdict = result.get("verdict") or window.verdict or "pending"
        # a rolling rollout is analysed after its batches, a canary at its steps
        unit = "batch" if r.strategy == "rolling" else "step"
        where = f"{unit} {window.step}/{data.steps}" if window.step else unit
        state = "final" if window.final else "latest check"
        console.print(Text.assemble(
            f"\nwindow {window.window} ({where}, from {clock(window.started_at)} to "
            f"{clock(window.updated_at)}, {state}): ",
            (verdict, VERDICT_STYLE.get(verdict, ""))))
        for metric in result.get("metrics") or []:
            console.print(_metric_block(metric))
    table = Table("metric", "judge settings", box=None, padding=(0, 1))
    for name, settings in data.environment_metrics.items():
        table.add_row(name, ", ".join(f"{k}={v}" for k, v in settings.items()))
    console.print(Text("\nhow the environment judges each metric:", style="dim"))
    console.print(table)
