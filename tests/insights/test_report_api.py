"""Reports, DORA and /metrics through the API, in process."""

from __future__ import annotations

import re
import time

import pytest

from tests.insights.stack import Stack, seed_history


@pytest.fixture
def seeded(stack: Stack) -> Stack:
    seed_history(stack)
    stack.clock[0] = time.time() + 60
    return stack


async def test_report_json_compares_with_the_replaced_release(seeded: Stack) -> None:
    response = await seeded.client.get("/api/v1/releases/v2/report",
                                       headers=seeded.headers("viewer"))
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["version"], report["previous_version"], report["environment"]) == \
        ("v2", "v1", "production")
    figures = {f["name"]: f for f in report["figures"]}
    assert figures["requests"]["current"] == 2500 and figures["requests"]["previous"] == 6000
    assert figures["latency_p95"]["direction"] == "worse"
    assert figures["mean_rating"]["direction"] == "worse"
    assert report["verdict"] == {"outcome": "promoted", "phase": "succeeded",
                                 "reason": "v2 promoted", "quality": "worse"}
    assert set(report["time_at_weight"]) == {"20", "100"}
    assert [m["weights"] for m in report["weight_marks"]][-2:] == \
        [{"v1": 80, "v2": 20}, {"v2": 100}]
    # The series spans the release's life here; the first sample's requests since the
    # router started are spread back to that start, partly before the span. (float sums)
    assert 2300 < sum(p["requests"] for p in report["series"]["current"]) <= 2500.01
    assert report["ratings"]["current"] == {"1": 6, "2": 5, "3": 1, "4": 0, "5": 0}
    assert any(c["comment"].startswith("<script>") for c in report["comments"])
    assert [e["kind"] for e in report["timeline"]][:2] == ["rollout", "traffic"]


async def test_report_html_is_self_contained_and_escapes_comments(seeded: Stack) -> None:
    response = await seeded.client.get("/api/v1/releases/v2/report?format=html",
                                       headers=seeded.headers("viewer"))
    assert response.status_code == 200
    html = response.text
    assert "<script>alert" not in html and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert html.count("data:image/png;base64,") == 2  # the series and the ratings
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched


@pytest.mark.parametrize(("path", "status"), [
    ("/api/v1/releases/v9/report", 404),
    ("/api/v1/releases/v2/report?format=pdf", 400),
    ("/api/v1/releases/v2/report?environment=nowhere", 400),
    ("/api/v1/dora?days=0", 400),
    ("/api/v1/dora?environment=nowhere", 400),
], ids=["unknown-release", "unknown-format", "unknown-environment", "bad-days",
        "dora-unknown-environment"])
async def test_bad_requests_say_what_is_wrong(seeded: Stack, path: str, status: int) -> None:
    response = await seeded.client.get(path, headers=seeded.headers("viewer"))
    assert response.status_code == status
    assert response.json()["error"]


@pytest.mark.parametrize("path", ["/api/v1/releases/v2/report", "/api/v1/dora",
                                  "/api/v1/feedback", "/metrics"])
async def test_reads_need_a_token(seeded: Stack, path: str) -> None:
    assert (await seeded.client.get(path)).status_code == 401
    bad = await seeded.client.get(path, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    assert (await seeded.client.get(path, headers=seeded.headers("viewer"))).status_code == 200


async def test_dora_from_the_store(seeded: Stack) -> None:
    dora = (await seeded.client.get("/api/v1/dora?days=30",
                                    headers=seeded.headers("viewer"))).json()
    assert dora["environment"] == "production" and dora["deployments"] == 2
    assert dora["deployment_frequency"]["value"] == pytest.approx(2 / 30)
    # commits 2 h and 1 h before their releases reached 100% (just now): median 1.5 h
    assert dora["lead_time"]["value"] == pytest.approx(5400, abs=60)
    assert dora["lead_time"]["tier"] == "elite"
    assert dora["change_failure_rate"]["value"] == 0.0


async def test_prometheus_metrics(seeded: Stack) -> None:
    response = await seeded.client.get("/metrics", headers=seeded.headers("viewer"))
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert 'entrega_rollouts{app="shop",environment="production",phase="succeeded"} 2.0' in text
    assert 'entrega_promotions_total{app="shop",environment="production"} 2.0' in text
    assert 'entrega_feedback_total{app="shop",rating="1",version="v2"} 6.0' in text
    assert 'entrega_rollout_step_duration_seconds_count{app="shop",environment="production"}' \
        in text
