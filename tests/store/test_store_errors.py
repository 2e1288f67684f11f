"""A store that cannot be used says which one and why: a URL of an engine entrega does not
run on, a database that does not answer or refuses us. Never a password, never a Python
exception class name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench.postgres import PostgresCluster

from entrega.config import load_config
from entrega.errors import ConfigError, StoreError
from entrega.net import free_port
from entrega.store import Store
from entrega.store.database import masked_url

CLASS_NAMES = ("OperationalError", "ArgumentError", "DBAPIError", "psycopg.", "sqlalchemy",
               "Traceback", "sqlalche.me")


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+psycopg://ops:s3cret@db:5432/entrega",
     "postgresql+psycopg://ops:***@db:5432/entrega"),
    ("postgresql+psycopg://ops@db/entrega", "postgresql+psycopg://ops@db/entrega"),
    ("postgres://ops:p@ss:word@db/x", "postgres://ops:***@db/x"),
    ("sqlite:////srv/state.db", "sqlite:////srv/state.db"),
    ("not a url", "not a url"),
], ids=["password", "no-password", "at-in-password", "sqlite", "garbage"])
def test_a_url_in_a_message_has_no_password(url: str, shown: str) -> None:
    assert masked_url(url) == shown


def _refused(url: str) -> str:
    with pytest.raises(StoreError) as caught:
        Store(url).migrate()
    message = str(caught.value)
    assert "s3cret" not in message
    assert not [name for name in CLASS_NAMES if name in message], message
    return message


@pytest.mark.parametrize(("url", "expected"), [
    ("postgres://ops:s3cret@127.0.0.1/entrega", "names 'postgres', which entrega does not run"),
    ("mysql+pymysql://ops:s3cret@127.0.0.1/entrega", "names 'mysql+pymysql'"),
    ("postgresql://ops:s3cret@127.0.0.1/entrega", "names 'postgresql', which"),
    ("ops:s3cret@127.0.0.1", "is not a database URL"),
], ids=["postgres-scheme", "mysql", "no-driver", "no-scheme"])
def test_a_url_entrega_does_not_run_on_is_refused(url: str, expected: str) -> None:
    message = _refused(url)
    assert expected in message
    assert "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE" in message


def test_a_database_that_does_not_answer_is_named() -> None:
    port = free_port()  # nothing listens there
    message = _refused(f"postgresql+psycopg://ops:s3cret@127.0.0.1:{port}/entrega")
    assert message.startswith(
        f"cannot reach the store postgresql+psycopg://ops:***@127.0.0.1:{port}/entrega: ")
    assert "refused" in message.lower()
    assert "check store.url" in message


@pytest.mark.real
def test_a_database_that_refuses_us_says_why(postgres_cluster: PostgresCluster) -> None:
    url = postgres_cluster.url("no_such_database").replace("entrega@", "entrega:s3cret@")
    message = _refused(url)
    assert "cannot reach the store" in message and ":***@" in message
    assert 'database "no_such_database" does not exist' in message


def test_the_config_refuses_an_unknown_store_url(tmp_path: Path) -> None:
    path = tmp_path / "entrega.yaml"
    path.write_text("app: shop\nrun: {command: x}\nenvironments:\n  - name: production\n"
                    "    router: {kind: embedded, listen: '127.0.0.1:18080'}\n"
                    "store:\n  url: mysql://ops:s3cret@db/entrega\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "entrega.yaml:7" in message and "store.url" in message
    assert "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE" in message
    assert "s3cret" not in message


def test_a_server_whose_database_does_not_answer_says_so_and_exits(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "entrega.yaml").write_text(
        "app: shop\nrun: {command: x}\nenvironments:\n  - name: production\n"
        f"    router: {{kind: embedded, listen: '127.0.0.1:{free_port()}'}}\n"
        f"server: {{listen: '127.0.0.1:{free_port()}'}}\n"
        f"store: {{url: 'postgresql+psycopg://ops:s3cret@127.0.0.1:{port}/entrega'}}\n")
    server = subprocess.run([sys.executable, "-m", "entrega", "server", "-c", "entrega.yaml"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "COLUMNS": "300"})
    said = server.stdout + server.stderr
    assert server.returncode != 0
    assert (f"cannot reach the store postgresql+psycopg://ops:***@127.0.0.1:{port}/entrega: "
            in said), said
    assert "s3cret" not in said
    assert not [name for name in CLASS_NAMES if name in said], said


def test_a_token_name_longer_than_the_stored_actor_is_refused(tmp_path: Path) -> None:
    # The actor column holds 64 characters: PostgreSQL enforces it where SQLite did not.
    path = tmp_path / "entrega.yaml"
    path.write_text("app: shop\nrun: {command: x}\nenvironments:\n  - name: production\n"
                    "    router: {kind: embedded, listen: '127.0.0.1:18080'}\n"
                    f"auth:\n  tokens:\n    {'c' * 65}: {{role: admin, sha256: '{'0' * 64}'}}\n")
    with pytest.raises(ConfigError, match="auth.tokens: .*at most 64 characters"):
        load_config(path)
    path.write_text(path.read_text().replace("c" * 65, "c" * 64))
    assert list(load_config(path).auth.tokens) == ["c" * 64]
