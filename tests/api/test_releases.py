"""`POST /api/v1/releases` (the CI webhook) in process: the answer names the release and,
when the upload asked for it, the deploy it started; refusals say why."""

from __future__ import annotations

from tests.api.conftest import Api, tarball

GOOD = tarball({"app.py": b"print('v1')\n"})


def test_a_new_release_without_deploy_has_no_deploy_field(api: Api) -> None:
    response = api.upload("v1", GOOD)
    assert response.status_code == 201, response.text
    answer = response.json()
    assert list(answer) == ["version", "digest", "created"]
    assert answer["version"] == "v1" and answer["created"] is True
    assert answer["digest"].startswith("sha256:")


def test_a_new_release_with_deploy_answers_the_rollout(api: Api) -> None:
    response = api.upload("v1", GOOD, deploy=True)
    assert response.status_code == 201, response.text
    answer = response.json()
    assert list(answer) == ["version", "digest", "created", "deploy"]
    rollout = answer["deploy"]["rollout"]
    assert (rollout["environment"], rollout["version"], rollout["strategy"]) == (
        "production", "v1", "direct")
    assert rollout["created_by"] == "ci" and rollout["reason"] == "new release"


def test_a_bad_signature_is_refused(api: Api) -> None:
    response = api.upload("v1", GOOD, signature="sha256=" + "0" * 64)
    assert response.status_code == 401
    assert response.json()["error"] == "the webhook signature does not match the body"
    assert api.client.get("/api/v1/releases", headers=api.deployer()).json() == []
