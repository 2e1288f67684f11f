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
                 client_ip: str = "192.0.2.1") -> httpx.Response:
        """What the router sends the server for a browser at ``client_ip`` pinned to
        ``release`` (the router appends the client's address to X-Forwarded-For)."""
        headers = {"X-Forwarded-For": client_ip}
        if release:
            headers["X-Entrega-Release"] = release
        return httpx.post(self.api + "/.entrega/feedback", headers=headers, timeout=10,
                          json={"rating": rating, "comment": comment, "user_id": user})


def chromium_path() -> str:
    if not CHROMIUM.exists():
        raise AssertionError(f"{CHROMIUM} is missing: run `sudo scripts/install-system-deps.sh` "
                             "(it installs Debian's chromium for the Playwright tests)")
    return str(CHROMIUM)
