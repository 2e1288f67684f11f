"""The report's plots, drawn with matplotlib (Agg, no display) into PNG bytes.

matplotlib is imported inside the functions: importing it costs half a second, which the
server and CLI pay only when a report with plots is asked for.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

CURRENT_COLOR = "#d9480f"
PREVIOUS_COLOR = "#1c7ed6"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def _times(points: list[dict[str, Any]]) -> list[dt.datetime]:
    return [dt.datetime.fromtimestamp(p["time"]) for p in points]


def plot_series(report: dict[str, Any]) -> bytes:
    """Traffic, error rate and latency p95 over time for both releases; weight steps as
    vertical lines labelled with the new release's weight."""
    plt = _pyplot()
    import matplotlib.dates as mdates

    series = report["series"]
    version, previous = report["version"], report.get("previous_version")
    fig, axes = plt.subplots(3, 1, figsize=(9, 6.6), sharex=True)
    panels = (("rps", "requests/s", 1.0), ("error_rate", "error rate (%)", 100.0),
              ("p95_ms", "latency p95 (ms)", 1.0))
    for ax, (key, label, scale) in zip(axes, panels, strict=True):
        for name, points, color in ((previous, series["previous"], PREVIOUS_COLOR),
                                    (version, series["current"], CURRENT_COLOR)):
            if not name or not points:
                continue
            xs = _times(points)
            ys = [None if p[key] is None else p[key] * scale for p in points]
            if key == "rps":
                ys = [y or 0.0 for y in ys]
            ax.plot(xs, [float("nan") if y is None else y for y in ys], color=color,
                    label=name, linewidth=1.6, marker="." if key != "rps" else None,
                    markersize=3)
        ax.set_ylabel(label, fontsize=9)
        ax.grid(True, alpha=0.25)
        ax.set_ylim(bottom=0)
        for mark in report["weight_marks"]:
            ax.axvline(dt.datetime.fromtimestamp(mark["time"]), color="#868e96",
                       linestyle="--", linewidth=0.8)
    top = axes[0]
    for n, mark in enumerate(report["weight_marks"]):
        weight = mark["weights"].get(version, 0)
        # Staggered, so labels of steps close in time do not print over each other.
        top.annotate(f"{version} {weight}%", xy=(dt.datetime.fromtimestamp(mark["time"]), 1),
                     xycoords=("data", "axes fraction"), xytext=(2, -4 - 11 * (n % 3)),
                     textcoords="offset points", fontsize=8, color="#495057",
                     rotation=0, va="top")
    handles, labels = top.get_legend_handles_labels()
    if handles:
        top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
    locator = mdates.AutoDateLocator(minticks=4, maxticks=8)
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    fig.suptitle(f"{report['app']} {version}"
                 + (f" vs {previous}" if previous else "") + f" in {report['environment']}",
                 fontsize=11)
    return _png(fig)


def plot_ratings(report: dict[str, Any]) -> bytes:
    """How many of each rating, both releases side by side."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 2.8))
    stars = [1, 2, 3, 4, 5]
    width = 0.38
    previous = report.get("previous_version")
    if previous:
        ax.bar([s - width / 2 for s in stars],
               [report["ratings"]["previous"][str(s)] for s in stars], width,
               color=PREVIOUS_COLOR, label=previous)
    ax.bar([s + (width / 2 if previous else 0) for s in stars],
           [report["ratings"]["current"][str(s)] for s in stars], width,
           color=CURRENT_COLOR, label=report["version"])
    ax.set_xticks(stars)
    ax.set_xlabel("rating", fontsize=9)
    ax.set_ylabel("users", fontsize=9)
    ax.grid(True, axis="y", alpha=0.25)
    ax.legend(fontsize=9, frameon=False)
    ax.set_title("ratings", fontsize=10)
    return _png(fig)
