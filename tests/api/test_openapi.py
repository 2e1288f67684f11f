"""`/openapi.json` describes every answer: each operation's success is a read model of
``entrega.views`` (FastAPI response models), so a client can be checked against it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.delivery import Delivery


def success_schemas(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """For each operation ("GET /path"), the JSON schema of its first 2xx answer."""
    found = {}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, answer in sorted(operation["responses"].items()):
                if status.startswith("2"):
                    content = answer.get("content", {}).get("application/json", {})
                    found[f"{method.upper()} {path}"] = content.get("schema", {})
                    break
    return found


def test_every_operation_describes_its_answer(delivery: Delivery) -> None:
    schemas = success_schemas(delivery.client.get("/openapi.json").json())
    assert len(schemas) >= 18, sorted(schemas)
    untyped = [op for op, schema in schemas.items() if not schema]
    assert untyped == []


@pytest.mark.parametrize(("operation", "model"), [
    ("GET /api/v1/status", "StatusView"),
    ("GET /api/v1/pipeline", "PipelineView"),
    ("GET /api/v1/rollouts/{rollout_id}", "RolloutDetail"),
    ("GET /api/v1/rollouts/{rollout_id}/analysis", "RolloutAnalysis"),
    ("POST /api/v1/environments/{environment}/deploy", "RolloutView"),
    ("POST /api/v1/releases", "ReleaseCreated"),
    ("GET /api/v1/releases/{version}/report", "ReleaseReport"),
    ("GET /api/v1/dora", "DoraView"),
    ("GET /api/v1/feedback", "FeedbackList"),
])
def test_answers_are_the_read_models(delivery: Delivery, operation: str, model: str) -> None:
    schema = success_schemas(delivery.client.get("/openapi.json").json())[operation]
    assert schema["$ref"].rsplit("/", 1)[-1] == model


def test_sparse_views_describe_their_fields(delivery: Delivery) -> None:
    document = delivery.client.get("/openapi.json").json()
    stage = document["components"]["schemas"]["StageView"]
    assert list(stage["properties"]) == ["status", "rollout_id", "since", "running",
                                         "message"]
    assert sorted(stage["required"]) == ["running", "status"]


def test_a_queued_deploy_is_described_too(delivery: Delivery) -> None:
    document = delivery.client.get("/openapi.json").json()
    deploy = document["paths"]["/api/v1/environments/{environment}/deploy"]["post"]
    queued = deploy["responses"]["202"]["content"]["application/json"]["schema"]
    assert queued["$ref"].endswith("/DeployQueued")
