"""Bad input is a 4xx that says what is wrong; our own failures are a bare 500 with a
request id. No answer carries an exception class name or a server path."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from entrega.api import errors
from tests.insights.stack import Stack

#: what must never be in an answer: exception class names, tracebacks, server paths
LEAKS = re.compile(r"Traceback|\b[A-Z]\w*(Error|Exception)\b|/tmp/|/home/|/root/|\.entrega/"
                   r"|site-packages|\.py\b")
DEEP = "[" * 3000 + "]" * 3000  # within the feedback size limit, past json's recursion


def leaks(text: str) -> list[str]:
    return [m.group(0) for m in LEAKS.finditer(text)]


@pytest.mark.parametrize(("method", "path", "body", "status", "says"), [
    ("POST", "/api/v1/environments/staging/deploy", {"version": "../x"}, 422,
     "invalid version '../x'"),
    ("POST", "/api/v1/environments/staging/deploy",
     {"version": "../x", "artifact": "/nonexistent"}, 422, "invalid version '../x'"),
    ("POST", "/api/v1/environments/staging/deploy", {"version": "v1\n"}, 422,
     "invalid version"),
    ("POST", "/api/v1/environments/Staging_1/deploy", {"version": "v1"}, 422,
     "invalid environment 'Staging_1'"),
    ("POST", "/api/v1/environments/staging/approve", {"version": "a/b"}, 422,
     "invalid version 'a/b'"),
    ("POST", "/api/v1/environments/staging/rollback", {"to": ".."}, 422,
     "invalid version '..'"),
    ("POST", "/api/v1/environments/staging/deploy", DEEP, 422, "nested too deeply"),
    ("POST", "/api/v1/environments/staging/deploy",
     {"version": "v1", "meta": {"a": [[[[[[[[[1]]]]]]]]]}}, 422, "meta nests more than 8"),
    ("POST", "/.entrega/feedback", DEEP, 422, "nested too deeply"),
    ("POST", "/api/v1/feedback", '{"rating": ' + "[" * 2000 + "]" * 2000 + "}", 422,
     "nested too deeply"),
    ("GET", "/api/v1/rollouts/99999999999999999999999", None, 422, "rollout_id"),
    ("GET", "/api/v1/history?after_id=99999999999999999999999", None, 422, "after_id"),
    ("GET", "/api/v1/history?limit=-1", None, 422, "limit"),
    ("GET", "/api/v1/releases/%20x/report", None, 422, "invalid version ' x'"),
    ("GET", "/api/v1/feedback?environment=..", None, 422, "invalid environment"),
], ids=["deploy-dotdot", "deploy-dotdot-with-artifact", "deploy-newline", "deploy-bad-env",
        "approve-slash", "rollback-dotdot", "deploy-deep-json", "deploy-deep-meta",
        "widget-deep-json", "feedback-deep-json", "huge-rollout-id", "huge-after-id",
        "negative-limit", "report-space", "feedback-bad-env"])
async def test_bad_input_is_a_4xx_that_says_what(
        stack: Stack, method: str, path: str, body: Any, status: int, says: str) -> None:
    content = body if isinstance(body, str) else None
    response = await stack.client.request(
        method, path, json=None if content is not None else body, content=content,
        headers={**stack.headers("admin"), "Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert says in response.text
    assert not leaks(response.text)


async def test_a_webhook_with_a_bad_version_is_refused(stack: Stack) -> None:
    response = await stack.client.post(
        "/api/v1/releases", files={"artifact": ("a.tar.gz", b"not a tarball")},
        data={"version": "../../etc"}, headers=stack.headers("admin"))
    assert response.status_code == 400, response.text
    assert "invalid version '../../etc'" in response.json()["error"]
    assert not leaks(response.text)


async def test_an_unexpected_error_is_a_bare_500_with_a_request_id(
        caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()
    errors.install(app)

    @app.get("/boom")
    async def boom() -> None:
        raise OSError(2, "No such file or directory", "/srv/entrega/.entrega/state.db")

    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    with caplog.at_level(logging.ERROR, logger="entrega.api"):
        response = await client.get("/boom")
    assert response.status_code == 500
    answer = response.json()
    request_id = answer["request_id"]
    assert response.headers["x-request-id"] == request_id
    assert request_id in answer["hint"] and answer["error"].startswith("internal error")
    assert not leaks(response.text) and "srv" not in response.text
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the traceback, server-side only


@pytest.mark.parametrize("args", [["deploy", "../x"], ["release", "create", "a/b", "-a", "."],
                                  ["rollback", "--to", ".."], ["approve", "v1 "]],
                         ids=["deploy", "release-create", "rollback", "approve"])
def test_the_cli_refuses_a_bad_version_before_asking(args: list[str], tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "entrega", *args,
                           "-c", str(tmp_path / "missing.yaml")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "invalid version" in done.stderr and not leaks(done.stderr)
