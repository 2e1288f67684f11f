"""`entrega promote`, `abort`, `rollback` and `approve` in process: each asks the server,
says what it asked, and says what was wrong when the server refuses."""

from __future__ import annotations

from entrega.rollouts.model import Phase, state_from_dict
from tests.cli.conftest import ApiServer, invoke


def canary(api: ApiServer) -> None:
    api.release("v1")
    api.release("v2")
    invoke(api, ["deploy", "v1"])
    api.play(api.rollout(), [(Phase.SUCCEEDED, "v1 is live", [])])
    assert invoke(api, ["deploy", "v2"]).exit_code == 0


def test_promote_asks_the_rollout_in_progress(api: ApiServer) -> None:
    canary(api)
    result = invoke(api, ["promote", "--full"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "rollout 2 in production: promote requested"
    assert state_from_dict(api.rollout().state).promote_full


def test_promote_without_a_rollout_is_refused(api: ApiServer) -> None:
    result = invoke(api, ["promote"])
    assert result.exit_code == 1
    assert str(result.exception) == "no rollout in progress in production"


def test_abort_asks_the_rollout_to_roll_back(api: ApiServer) -> None:
    canary(api)
    result = invoke(api, ["abort"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "rollout 2 in production: abort requested"
    assert state_from_dict(api.rollout().state).abort_requested


def test_abort_without_a_rollout_is_refused(api: ApiServer) -> None:
    result = invoke(api, ["abort", "--env", "production"])
    assert result.exit_code == 1
    assert str(result.exception) == "no rollout in progress in production"


def test_rollback_restores_the_replaced_release(api: ApiServer) -> None:
    canary(api)
    api.play(api.rollout(), [(Phase.SUCCEEDED, "v2 promoted", [])])
    result = invoke(api, ["rollback", "shop"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "rollout 3 in production: back to v1"
    assert api.rollout().reason == "rollback from v2"


def test_rollback_of_another_app_is_refused_before_asking(api: ApiServer) -> None:
    result = invoke(api, ["rollback", "billing"])
    assert result.exit_code == 1
    assert str(result.exception).startswith("this entrega.yaml delivers 'shop', not 'billing'")


def test_rollback_with_nothing_earlier_says_how_to_name_one(api: ApiServer) -> None:
    api.release("v1")
    invoke(api, ["deploy", "v1"])
    api.play(api.rollout(), [(Phase.SUCCEEDED, "v1 is live", [])])
    result = invoke(api, ["rollback"])
    assert result.exit_code == 1
    assert str(result.exception) == ("production has no earlier release to roll back to "
                                     "(name one with --to VERSION)")


def test_approve_lets_a_waiting_release_through(api: ApiServer) -> None:
    api.release("v1")
    api.service.repo.add_request(app="shop", environment="production", version="v1",
                                 status="awaiting_approval", actor="controller", reason="")
    result = invoke(api, ["approve", "shop", "v1", "--env", "production"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "v1 approved for production"
    (request,) = api.service.repo.requests("shop", limit=10)
    assert request.status == "queued"


def test_approve_needs_a_gated_environment_or_env(api: ApiServer) -> None:
    result = invoke(api, ["approve", "v1"])
    assert result.exit_code == 1
    assert str(result.exception) == "say which environment with --env"


def test_approve_of_a_release_not_waiting_is_refused(api: ApiServer) -> None:
    api.release("v1")
    result = invoke(api, ["approve", "v1", "--env", "production"])
    assert result.exit_code == 1
    assert str(result.exception).startswith("v1 is not waiting for approval in production")
