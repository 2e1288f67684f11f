"""The release report as one self-contained HTML file: the plots are base64 PNGs inside
it, the styles inline, no script, nothing fetched. Users' comments are escaped by
Jinja2's autoescape like every other value."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from entrega.insights.plots import plot_ratings, plot_series


def _env() -> Environment:
    env = Environment(loader=PackageLoader("entrega.insights", "templates"),
                      autoescape=select_autoescape(["html", "j2"], default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["figure"] = format_figure
    env.filters["change"] = format_change
    env.filters["clock"] = format_clock
    env.filters["duration"] = format_duration
    return env


_ENV: Environment | None = None


def environment() -> Environment:
    global _ENV
    if _ENV is None:
        _ENV = _env()
    return _ENV


def format_figure(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    if unit == "ratio":
        return f"{value:.2%}"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "rating":
        return f"{value:.2f}"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.2f}"


def format_change(figure: dict[str, Any]) -> str:
    change = figure.get("change")
    if change is None:
        return "–"
    if figure["unit"] == "ratio":
        return f"{change * 100:+.2f} pp"
    ratio = figure.get("change_ratio")
    text = format_figure(abs(change), figure["unit"])
    sign = "+" if change > 0 else ("−" if change < 0 else "±")
    return f"{sign}{text}" + (f" ({ratio:+.0%})" if ratio is not None else "")


def format_clock(ts: float | None) -> str:
    if ts is None:
        return "–"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_report_html(report: dict[str, Any], *, back_url: str | None = None,
                       plots: bool = True) -> str:
    """The report as HTML; ``back_url`` adds a link back (the dashboard's view of it)."""
    images: dict[str, str] = {}
    if plots:
        images["series"] = _data_uri(plot_series(report))
        if any(report["ratings"]["current"].values()) or \
                any(report["ratings"]["previous"].values()):
            images["ratings"] = _data_uri(plot_ratings(report))
    return environment().get_template("report.html.j2").render(
        r=report, images=images, back_url=back_url)
