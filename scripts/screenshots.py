#!/usr/bin/env python3
"""Make docs/dashboard.png and docs/report.png from a real delivery.

Starts a real entrega server, router and shop instances in a temporary directory (the
end-to-end tests' Deployment), delivers four releases with simulated users sending traffic
and ratings (v3 fails a third of its requests, is slower, and its users rate it low:
entrega rolls it back), then drives Debian's chromium with Playwright:

- docs/dashboard.png: the dashboard while v4's canary is being analysed at 20%;
- docs/report.png: v3's report (its scorecard against v2, the plots, the comments).

    .venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402
from tests.e2e.conftest import Users, wait_for  # noqa: E402
from tests.web.deployment import CHROMIUM_ARGS, InsightsDeployment, chromium_path  # noqa: E402

from entrega.cli.artifact import pack  # noqa: E402

STRATEGY = """\
      canary:
        steps:
          - weight: 20
          - analysis: {duration_s: 8, metrics: [error-rate]}
          - weight: 50
          - pause: {duration_s: 4}
          - weight: 100
"""
RELEASES = [  # version, shop.json, ratings users give, comments
    ("v1", {}, [4, 5, 5, 4, 5, 3, 5, 4], ["Quick and easy.", "Found the moka pot at once."]),
    ("v2", {}, [5, 4, 5, 5, 4, 5, 4, 5, 5], ["New search is great!"]),
    ("v3", {"error_rate": 0.3, "latency_ms": 25}, [1, 2, 1, 3, 2, 1, 2, 1, 1, 2],
     ["Checkout keeps failing <again>", "Very slow today", "Error 500 when paying"]),
    ("v4", {}, [5, 4, 4, 5, 5, 4, 5], ["Works again, thanks"]),
]


def rate(dep: InsightsDeployment, version: str, ratings: list[int], comments: list[str],
         ) -> None:
    rng = random.Random(version)
    for n, rating in enumerate(ratings):
        comment = comments[n] if n < len(comments) else None
        user = rng.randint(1, 250)
        dep.feedback(rating, comment, release=version, user=f"user-{user}",
                     client_ip=f"198.51.100.{user}").raise_for_status()


def packed(directory: Path) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return pack(directory, Path(tmp)).read_bytes()


def deliver(dep: InsightsDeployment, version: str, settings: Mapping[str, object],
            age_h: float) -> int:
    # The bytes go up first (the server reads no path it is handed), then the deploy.
    meta = {"commit_sha": f"{random.getrandbits(40):010x}",
            "commit_time": time.time() - age_h * 3600,
            "ci_url": f"https://ci.example/shop/{version}"}
    httpx.post(dep.api + "/api/v1/releases", timeout=30, headers={"X-Entrega-Actor": "ci"},
               data={"version": version, "deploy": "false", "meta": json.dumps(meta)},
               files={"artifact": ("build.tar.gz",
                                   packed(dep.artifact(version, **settings)))},
               ).raise_for_status()
    response = httpx.post(dep.api + "/api/v1/environments/production/deploy", timeout=30,
                          json={"version": version}, headers={"X-Entrega-Actor": "ci"})
    response.raise_for_status()
    return int(response.json()["id"])


def main() -> int:
    executable = chromium_path()
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="entrega-shots-") as tmp:
        dep = InsightsDeployment(Path(tmp), STRATEGY)
        dep.start_server()
        try:
            rollout = deliver(dep, "v1", {}, age_h=5)
            dep.wait_phase(rollout, {"succeeded"}, 60)
            with Users(dep.router_url, rps=60), sync_playwright() as p:
                rate(dep, "v1", *RELEASES[0][2:])
                for version, settings, ratings, comments in RELEASES[1:3]:
                    time.sleep(4)
                    rollout = deliver(dep, version, settings, age_h=3)
                    dep.wait_phase(rollout, {"succeeded", "rolled_back"}, 90)
                    rate(dep, version, ratings, comments)
                time.sleep(4)
                rollout = deliver(dep, "v4", {}, age_h=1.5)
                browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1360, "height": 940})
                wait_for(lambda: (v := dep.rollout_by_id(rollout))["analysis"]
                         and v["analysis"].get("metrics"), 60, "v4's analysis")
                time.sleep(2.5)
                page.goto(dep.api + "/")
                page.wait_for_selector('.env[data-env="production"] .analysis')
                page.screenshot(path=str(docs / "dashboard.png"))
                rate(dep, "v4", *RELEASES[3][2:])
                dep.wait_phase(rollout, {"succeeded"}, 90)
                page.set_viewport_size({"width": 1100, "height": 900})
                page.goto(dep.api + "/releases/v3")
                page.wait_for_selector("#scorecard")
                page.screenshot(path=str(docs / "report.png"), full_page=True)
                browser.close()
        finally:
            dep.stop()
    print(f"wrote {docs / 'dashboard.png'} and {docs / 'report.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
