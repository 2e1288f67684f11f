"""Item 3: artifacts are unpacked within bounds (bytes, members, ratio), refused with 413
and a clear message before the bytes land, with nothing left on disk."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from entrega.config import ArtifactsConfig
from entrega.releases.unpack import RATIO_ALLOWANCE_BYTES, UnpackBudget
from tests.api.bombs import gzip_bomb, many_members, pax_bomb
from tests.api.conftest import Api, tarball

MiB = 1 << 20
LIMITS = ArtifactsConfig(max_unpacked_bytes=100 * MiB, max_members=10,
                         max_compression_ratio=50)


@pytest.mark.parametrize(
    ("compressed", "members", "unpacked", "problem"),
    [
        (10 * MiB, 3, 5 * MiB, None),
        (10 * MiB, 10, 100 * MiB, None),
        (10 * MiB, 11, 1, "more than 10 members"),
        (10 * MiB, 1, 100 * MiB + 1, "more than 104857600 bytes"),
        (1 * MiB, 1, 50 * MiB + RATIO_ALLOWANCE_BYTES, None),
        (1 * MiB, 1, 50 * MiB + RATIO_ALLOWANCE_BYTES + 1, "more than 50 times"),
        (100, 1, RATIO_ALLOWANCE_BYTES, None),  # tiny tarballs of padded files pass
        (None, 10, 100 * MiB, None),  # a directory: no ratio
    ],
    ids=["fits", "at-every-limit", "too-many-members", "too-many-bytes", "ratio-at-limit",
         "ratio-over", "small-allowance", "directory"])
def test_budget_judges_each_limit(compressed: int | None, members: int, unpacked: int,
                                  problem: str | None) -> None:
    verdict = UnpackBudget(LIMITS, compressed).judge(members=members,
                                                     unpacked_bytes=unpacked)
    if problem is None:
        assert verdict is None
    else:
        assert verdict is not None and problem in verdict


def test_a_gzip_bomb_is_refused_fast_with_nothing_left(api: Api) -> None:
    bomb = gzip_bomb(1 << 30)
    assert len(bomb) < 1_200_000  # 1 MB that would become 1 GiB
    before = api.stored()
    started = time.monotonic()
    response = api.upload("v1", bomb)
    elapsed = time.monotonic() - started
    assert response.status_code == 413, response.text
    assert "the uploaded artifact was refused" in response.json()["error"]
    assert "artifacts.max" in response.json()["error"]
    assert elapsed < 2.0, f"took {elapsed:.2f}s to refuse"
    assert api.stored() == before
    assert not list((api.state / "artifacts" / ".staging").iterdir())
    assert api.service.repo.release("shop", "v1") is None


@pytest.mark.parametrize(
    ("settings", "artifact", "words"),
    [
        ("artifacts: {max_unpacked_bytes: 4194304}", lambda: gzip_bomb(8 * MiB),
         "more than 4194304 bytes (artifacts.max_unpacked_bytes)"),
        ("artifacts: {max_members: 20}", lambda: many_members(21),
         "more than 20 members (artifacts.max_members)"),
        ("", lambda: gzip_bomb(64 * MiB),
         "more than 100 times its"),
        ("artifacts: {max_unpacked_bytes: 4194304}", lambda: pax_bomb(8 * MiB),
         "the uploaded artifact was refused"),
    ],
    ids=["bytes", "members", "ratio", "pax-header"])
def test_each_limit_is_configurable_and_named(make_api: Callable[..., Api], settings: str,
                                              artifact: Callable[[], bytes],
                                              words: str) -> None:
    api = make_api(extra=settings)
    before = api.stored()
    response = api.upload("v1", artifact())
    assert response.status_code == 413, response.text
    assert words in response.json()["error"]
    assert "entrega.yaml" in response.json()["hint"]
    assert api.stored() == before


def test_an_artifact_within_the_limits_is_stored(make_api: Callable[..., Api]) -> None:
    api = make_api(extra="artifacts: {max_members: 3}")
    response = api.upload("v1", tarball({"app.py": b"print(1)\n", "lib/x.txt": b"x" * 5000}))
    assert response.status_code == 201, response.text
    digest = response.json()["digest"]
    stored = api.service.artifacts.path_for(digest)
    assert (stored / "app.py").read_bytes() == b"print(1)\n"
    assert (stored / "lib" / "x.txt").stat().st_size == 5000
