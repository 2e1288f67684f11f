from __future__ import annotations

from pathlib import Path

import pytest

from tests.insights.stack import Stack, make_stack


@pytest.fixture
def stack(tmp_path: Path, store_url: str) -> Stack:
    """The insights' queries (DORA, scorecards, reports) run on SQLite, then PostgreSQL."""
    return make_stack(tmp_path, store_url=store_url)
