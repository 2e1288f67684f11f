"""JSON from users refuses a key given twice, as entrega.yaml does.

Python keeps the last of two equal keys, other parsers the first: a webhook body that CI
signed meaning one version could mean another to entrega. Pure cases by table, then the
two public JSON endpoints in process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from entrega.jsonin import loads_json
from tests.insights.stack import make_stack


@pytest.mark.parametrize(("text", "expected"), [
    ('{"a": 1, "b": {"a": 2}}', {"a": 1, "b": {"a": 2}}),
    ('[{"a": 1}, {"a": 2}]', [{"a": 1}, {"a": 2}]),
    ("null", None),
], ids=["same-key-in-two-objects", "same-key-in-two-items", "not-an-object"])
def test_distinct_keys_load(text: str, expected: object) -> None:
    assert loads_json(text) == expected


@pytest.mark.parametrize("text", [
    '{"version": "v1", "version": "v2"}',
    '{"meta": {"sha": "a", "sha": "b"}}',
    '[{"rating": 5, "rating": 1}]',
], ids=["top-level", "nested", "in-a-list"])
def test_duplicate_keys_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duplicate key"):
        loads_json(text)


async def test_feedback_with_a_duplicate_key_is_refused(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)
    response = await stack.client.post(
        "/api/v1/feedback", content=b'{"rating": 5, "comment": "ok", "rating": 1}',
        headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]
    listed = await stack.client.get("/api/v1/feedback", headers=stack.headers("viewer"))
    assert listed.status_code == 200 and listed.json()["feedback"] == [], listed.text


async def test_webhook_json_with_a_duplicate_key_is_refused(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)
    response = await stack.client.post(
        "/api/v1/releases", content=b'{"version": "v1", "artifact": "x", "version": "v2"}',
        headers={"content-type": "application/json", **stack.headers("deployer")})
    assert response.status_code == 400, response.text
    assert "duplicate key 'version'" in response.json()["error"]


async def test_api_bodies_parsed_by_fastapi_refuse_duplicate_keys(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)
    deployer = {"content-type": "application/json", **stack.headers("deployer")}
    response = await stack.client.post(
        "/api/v1/environments/staging/deploy", headers=deployer,
        content=b'{"version": "v1", "version": "v2"}')
    assert response.status_code == 422, response.text
    assert "duplicate key 'version'" in response.text
    # The same body without the second key is parsed as before (v1 does not exist).
    response = await stack.client.post("/api/v1/environments/staging/deploy",
                                       headers=deployer, content=b'{"version": "v1"}')
    assert response.status_code == 404, response.text
