"""`entrega feedback | report | dora` through the real CLI against a real server whose
collector samples a real router while users send traffic."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Users, serving, wait_for
from tests.web.deployment import InsightsDeployment

pytestmark = [pytest.mark.real, pytest.mark.slow]


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[InsightsDeployment]:
    yield from serving(InsightsDeployment(tmp_path))


def test_feedback_report_and_dora_from_the_cli(deployment: InsightsDeployment,
                                               tmp_path: Path) -> None:
    first = deployment.deploy("v1")
    deployment.wait_phase(first["id"], {"succeeded"})
    with Users(deployment.router_url, rps=50):
        wait_for(lambda: deployment.cli_json("report", "v1")
                 ["figures"][0]["current"] >= 50, 20, "the collector to sample v1's traffic")
    for n, (rating, comment) in enumerate([(5, "[bold]fast[/bold] <b>x</b>"), (4, None),
                                           (2, "slow")]):
        response = deployment.feedback(rating, comment, release="v1", client_ip=f"127.0.0.{n + 2}")
        assert response.status_code == 201 and response.json()["environment"] == "production"
    assert deployment.feedback(3, "no cookie").json()["version"] == "unknown"

    listed = deployment.cli_json("feedback", "--version", "v1")
    assert [f["rating"] for f in listed["feedback"]] == [2, 4, 5]
    assert listed["summary"]["v1"]["mean_rating"] == pytest.approx(11 / 3)
    text = deployment.cli("feedback").stdout
    assert "[bold]fast[/bold] <b>x</b>" in text and "unknown" in text

    report = deployment.cli_json("report", "v1")
    assert report["verdict"]["outcome"] == "promoted" and report["previous_version"] is None
    html_path = tmp_path / "v1.html"
    deployment.cli("report", "v1", "--format", "html", "--output", str(html_path))
    html = html_path.read_text()
    assert "data:image/png;base64," in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert "requests served" in deployment.cli("report", "v1").stdout

    dora = deployment.cli_json("dora", "--days", "7")
    assert dora["deployments"] == 1 and dora["deployment_frequency"]["value"] == \
        pytest.approx(1 / 7)
    assert "deployment frequency" in deployment.cli("dora", "--app", "shop").stdout
    wrong = deployment.cli("dora", "--app", "other", check=False)
    assert wrong.returncode == 1 and "delivers 'shop', not 'other'" in wrong.stderr

    metrics = httpx.get(deployment.api + "/metrics", timeout=10).text
    assert 'entrega_feedback_total{app="shop",rating="5",version="v1"} 1.0' in metrics
    assert json.loads(json.dumps(report))  # JSON-clean all the way
