"""An end-to-end Deployment for the dashboard and report tests, and browser settings."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e.conftest import PAUSED_CANARY, Deployment

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


class InsightsDeployment(Deployment):
    """Samples router metrics every second, so plots have points within seconds."""

    def __init__(self, root: Path, strategy: str = PAUSED_CANARY) -> None:
        super().__init__(root, strategy)
        text = self.config.read_text().replace(
            "run:", "insights: {sample_interval_s: 1}\nrun:", 1)
        self.config.write_text(text)

    def feedback(self, rating: int | None, comment: str | None = None, *,
                 release: str | None = None, user: str | None = None,
                 client_ip: str = "127.0.0.2") -> httpx.Response:
        """A browser at ``client_ip`` (a loopback address) pinned to ``release`` posts
        feedback through the router, which forwards it to the server."""
        cookies = {"entrega-release": release} if release else None
        transport = httpx.HTTPTransport(local_address=client_ip)
        with httpx.Client(transport=transport, cookies=cookies, timeout=10) as client:
            return client.post(self.router_url + "/.entrega/feedback",
                               json={"rating": rating, "comment": comment, "user_id": user})


def chromium_path() -> str:
    if not CHROMIUM.exists():
        raise AssertionError(f"{CHROMIUM} is missing: run `sudo scripts/install-system-deps.sh` "
                             "(it installs Debian's chromium for the Playwright tests)")
    return str(CHROMIUM)
