"""The README's curl + openssl webhook example works as written (against a real server)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import SHOP, Deployment, wait_for

pytestmark = [pytest.mark.real]

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_snippet() -> str:
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("tar czf build.tar.gz"))
    end = next(i for i in range(start, len(lines)) if "--data-binary @body" in lines[i])
    return "\n".join(lines[start:end + 1])


def test_the_readme_signing_example_creates_a_release(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTREGA_WEBHOOK_SECRET", "readme-secret")
    dep = Deployment(tmp_path / "app")
    text = dep.config.read_text().replace(
        "run:", "auth: {webhook_secret_env: ENTREGA_WEBHOOK_SECRET}\nrun:", 1)
    dep.config.write_text(text)
    dep.start_server()
    try:
        build = tmp_path / "ci" / "build"
        build.mkdir(parents=True)
        shutil.copy(SHOP, build / "app.py")
        (build / "VERSION").write_text("v2")
        script = readme_snippet().replace("http://127.0.0.1:7070", dep.api)
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=build.parent,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert '"created":true' in done.stdout.replace(" ", "")
        wait_for(lambda: httpx.get(dep.router_url + "/api/products", timeout=5)
                 .headers.get("x-entrega-release") == "v2", 30, "v2 to serve")
        # The same body signed with another secret is refused.
        bad = script.replace('"$ENTREGA_WEBHOOK_SECRET"', '"not-the-secret"')
        refused = subprocess.run(["bash", "-euo", "pipefail", "-c", bad], cwd=build.parent,
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "signature does not match" in refused.stdout
    finally:
        dep.stop()
