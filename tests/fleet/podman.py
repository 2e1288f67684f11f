"""Real podman for tests: small images built here, with no network, and their cleanup.

An image is ``FROM scratch`` plus Debian's static busybox (busybox-static): its httpd
serves ``/www`` (``/healthz``, ``VERSION``) on ``$HOST:$PORT``, and its shell, as the
container's first process, turns SIGTERM into a clean exit (a first process has no
default signal handlers), so a stop drains instead of waiting for SIGKILL. It is saved as
an OCI archive into a release directory (``image.tar``) and removed from podman's storage,
so the host agent has to load it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

BUSYBOX = Path("/bin/busybox")

SERVE = ('trap "kill \\$pid; wait \\$pid; exit 0" TERM; '
         '/bin/busybox httpd -f -p "$HOST:$PORT" -h /www & pid=$!; wait $pid')
#: Serves, but ignores SIGTERM: only the end of the drain (SIGKILL) stops it.
STUBBORN = ('trap "" TERM; /bin/busybox httpd -f -p "$HOST:$PORT" -h /www & pid=$!; '
            'while :; do wait $pid; done')
CRASH = 'echo "shop: cannot reach the database" >&2; exit 4'


def require_podman() -> None:
    """Skip (a failure under CI=true: these tests are marked real) without podman."""
    if shutil.which("podman") is None or not BUSYBOX.exists():
        pytest.skip("podman or busybox-static is not installed "
                    "(run scripts/install-system-deps.sh)")


def podman(*args: str, timeout_s: float = 120) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr}"
    return done.stdout


def build_release(root: Path, version: str, *, script: str = SERVE) -> Path:
    """A release directory holding ``image.tar``: the busybox image running ``script``."""
    context = root / "build" / version
    (context / "bin").mkdir(parents=True)
    (context / "www").mkdir()
    shutil.copy(BUSYBOX, context / "bin" / "busybox")
    (context / "www" / "healthz").write_text("ok\n")
    (context / "www" / "VERSION").write_text(version)
    (context / "Containerfile").write_text(
        "FROM scratch\nCOPY bin /bin\nCOPY www /www\n"
        f"CMD {json.dumps(['/bin/busybox', 'sh', '-c', script])}\n")
    tag = f"localhost/entrega-test-{root.name.lower()}:{version.lower()}"
    podman("build", "--quiet", "--network", "none", "--tag", tag, str(context))
    release = root / "artifacts" / version
    release.mkdir(parents=True)
    podman("save", "--quiet", "--format", "oci-archive", "--output",
           str(release / "image.tar"), tag)
    podman("rmi", tag)
    return release


def remove_containers(label: str) -> None:
    """Remove every container carrying ``label`` (``KEY=VALUE``), whatever its state."""
    ids = podman("ps", "--all", "--quiet", "--filter", f"label={label}").split()
    if ids:
        with contextlib.suppress(AssertionError):
            podman("rm", "--force", "--time", "0", *ids)


def remove_image(image_id: str) -> None:
    with contextlib.suppress(AssertionError):
        podman("rmi", "--force", image_id)
