"""bench/postgres.py: a throwaway PostgreSQL that leaves nothing behind."""

from __future__ import annotations

import psycopg
import pytest
from bench.postgres import running_postgres

pytestmark = pytest.mark.real


def test_a_cluster_serves_fresh_databases_then_is_gone() -> None:
    with running_postgres() as cluster:
        directory, process = cluster.directory, cluster.process
        assert cluster.host == "127.0.0.1" and directory.is_dir()
        url = cluster.create_database("orders")
        assert url == f"postgresql+psycopg://entrega@127.0.0.1:{cluster.port}/orders"
        with psycopg.connect(url.replace("+psycopg", "")) as db:
            db.execute("CREATE TABLE t (x int)")
            assert db.execute("SHOW server_version").fetchone()[0].startswith("15")  # type: ignore[index]
        fresh = cluster.create_database("orders_2")
        with psycopg.connect(fresh.replace("+psycopg", "")) as db:
            assert db.execute("SELECT count(*) FROM pg_tables WHERE tablename = 't'"
                              ).fetchone() == (0,)
        cluster.drop_database("orders")
        assert cluster.databases == ["orders_2"]
    assert process.poll() is not None
    assert not directory.exists()
