"""A guard: every route of the app (the API, the insights router, the dashboard) has an
in-process test of a success and one of an error, listed here. A new route without both
fails this test until they are written and named below."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import pytest
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from entrega.api.apps import AppDispatch
from entrega.api.leader import LEADER_API, LEADER_HEALTH, LeaderGate
from tests.api.delivery import Delivery

S, F = "tests/api/test_status.py", "tests/feedback/test_intake.py"
R, W = "tests/insights/test_report_api.py", "tests/web/test_pages.py"
D, C = "tests/api/test_deploy.py", "tests/api/test_rollout_control.py"
A = "tests/api/test_many_apps.py"
TD = "tests/api/test_team_dora.py"
TWO = "tests/e2e/test_two_servers.py"

#: "METHOD path" -> (a success test, an error test); a reason instead of an error test
#: where the route takes no input that could be wrong and needs no role.
TESTED: dict[str, tuple[str, str]] = {
    "GET /healthz": (f"{S}::test_healthz_is_public_and_says_which_app",
                     f"{S}::test_healthz_takes_no_changes"),
    "GET /api/v1/status": (f"{S}::test_status_shows_what_runs_and_the_rollout_in_progress",
                           f"{S}::test_reads_need_a_token"),
    "GET /api/v1/pipeline": (f"{S}::test_pipeline_shows_each_release_in_each_environment",
                             f"{S}::test_pipeline_refuses_a_limit_below_one"),
    "GET /api/v1/releases": (f"{S}::test_releases_newest_first",
                             f"{S}::test_reads_need_a_token"),
    "GET /api/v1/history": (f"{S}::test_history_lists_events_and_pages_after_an_id",
                            f"{S}::test_history_of_an_unknown_environment_is_refused"),
    "POST /api/v1/releases": (
        "tests/api/test_releases.py::test_a_new_release_with_deploy_answers_the_rollout",
        "tests/api/test_releases.py::test_a_bad_signature_is_refused"),
    "POST /api/v1/environments/{environment}/deploy": (
        f"{D}::test_a_deploy_behind_a_rollout_in_progress_is_queued",
        f"{D}::test_production_before_staging_breaks_the_order"),
    "POST /api/v1/environments/{environment}/approve": (
        "tests/api/test_gate.py::test_approve_queues_the_waiting_release",
        "tests/api/test_gate.py::test_a_release_not_waiting_cannot_be_approved"),
    "POST /api/v1/environments/{environment}/promote": (
        f"{C}::test_promote_asks_the_rollout_to_move_on",
        f"{C}::test_promote_without_a_rollout_is_not_found"),
    "POST /api/v1/environments/{environment}/abort": (
        f"{C}::test_abort_asks_the_rollout_to_roll_back",
        f"{C}::test_abort_without_a_rollout_is_not_found"),
    "POST /api/v1/environments/{environment}/rollback": (
        f"{C}::test_rollback_restores_the_release_the_current_one_replaced",
        f"{C}::test_rollback_with_nothing_earlier_is_not_found"),
    "POST /api/v1/config/reload": (
        "tests/api/test_config_reload.py::test_an_admin_reloads_and_live_changes_apply_at_once",
        "tests/api/test_config_reload.py::test_reloading_needs_an_admin_and_a_bad_file_is_"
        "refused_with_its_line"),
    "GET /api/v1/rollouts/{rollout_id}": (
        "tests/api/test_rollouts.py::test_a_rollout_with_its_events_and_live_analysis",
        "tests/api/test_rollouts.py::test_an_unknown_rollout_is_not_found"),
    "GET /api/v1/rollouts/{rollout_id}/analysis": (
        "tests/api/test_rollouts.py::test_analysis_lists_each_window_with_the_judges_settings",
        "tests/api/test_rollouts.py::test_the_analysis_of_an_unknown_rollout_is_not_found"),
    "POST /api/v1/feedback": ("tests/api/test_feedback.py::test_feedback_is_taken_and_listed",
                              f"{F}::test_validation"),
    "OPTIONS /api/v1/feedback": (f"{F}::test_cors", f"{F}::test_cors"),
    "POST /.entrega/feedback": ("tests/api/test_feedback.py::test_feedback_is_taken_and_listed",
                                "tests/api/test_errors.py::test_bad_input_is_a_4xx_that_says_what"),
    "OPTIONS /.entrega/feedback": ("tests/api/test_feedback.py::test_the_widgets_preflight",
                                   "tests/api/test_feedback.py::test_the_widgets_preflight"),
    "GET /.entrega/feedback.js": (f"{F}::test_widget_script_is_served",
                                  "no input, public: a static script"),
    "GET /api/v1/feedback": ("tests/api/test_feedback.py::test_feedback_is_taken_and_listed",
                             "tests/api/test_feedback.py::test_the_list_refuses_a_bad_limit"),
    "GET /api/v1/releases/{version}/report": (
        f"{R}::test_report_json_compares_with_the_replaced_release",
        f"{R}::test_bad_requests_say_what_is_wrong"),
    "GET /api/v1/dora": (f"{R}::test_dora_from_the_store",
                         f"{R}::test_bad_requests_say_what_is_wrong"),
    "GET /metrics": (f"{R}::test_prometheus_metrics", f"{R}::test_reads_need_a_token"),
    "GET /": (f"{W}::test_dashboard_shows_history_feedback_dora_and_escapes_comments",
              f"{W}::test_pages_need_a_login"),
    "GET /ui/state.json": (f"{W}::test_state_says_what_the_caller_may_do",
                           f"{W}::test_pages_need_a_login"),
    "GET /releases/{version}": (
        "tests/web/test_release_page.py::test_a_release_page_is_its_report",
        "tests/web/test_release_page.py::test_a_page_for_an_unknown_release_says_so"),
    "GET /login": ("tests/web/test_release_page.py::test_the_login_form_keeps_a_local_next",
                   "tests/web/test_release_page.py::test_the_login_form_drops_a_foreign_next"),
    "POST /login": (f"{W}::test_token_login_sets_an_httponly_strict_cookie",
                    f"{W}::test_login_and_logout_refuse_another_sites_form"),
    "POST /logout": (f"{W}::test_token_login_sets_an_httponly_strict_cookie",
                     f"{W}::test_login_and_logout_refuse_another_sites_form"),
    "GET /ui/static/{name}": (f"{W}::test_static_files", f"{W}::test_static_files"),
    "GET /api/v1/apps": (f"{A}::test_the_overview_lists_the_apps_a_token_may_see",
                         f"{A}::test_a_token_limited_to_apps_is_refused_elsewhere"),
    "POST /api/v1/groups": (
        f"{A}::test_a_group_is_created_by_a_deployer_allowed_on_every_member",
        f"{A}::test_the_webhook_signs_a_group_as_it_signs_an_upload"),
    "GET /api/v1/groups": (f"{A}::test_groups_are_read_and_driven_by_whoever_may_see_every_"
                           "member", "no input but its limit: the caller's groups"),
    "GET /api/v1/groups/{name}": (
        f"{A}::test_groups_are_read_and_driven_by_whoever_may_see_every_member",
        f"{A}::test_groups_are_read_and_driven_by_whoever_may_see_every_member"),
    "POST /api/v1/groups/{name}/promote": (
        f"{A}::test_groups_are_read_and_driven_by_whoever_may_see_every_member",
        f"{A}::test_groups_are_read_and_driven_by_whoever_may_see_every_member"),
    "POST /api/v1/groups/{name}/restore": (
        f"{A}::test_groups_are_read_and_driven_by_whoever_may_see_every_member",
        f"{A}::test_groups_are_read_and_driven_by_whoever_may_see_every_member"),
    "POST /api/v1/groups/{name}/abort": (
        f"{A}::test_groups_are_read_and_driven_by_whoever_may_see_every_member",
        f"{A}::test_groups_are_read_and_driven_by_whoever_may_see_every_member"),
    "GET /api/v1/leader": (f"{TWO}::test_the_standby_serves_reads_sends_writes_to_the_leader_"
                           "and_takes_over_a_killed_one", "no input: who leads"),
    "GET /healthz/leader": (f"{TWO}::test_the_standby_serves_reads_sends_writes_to_the_leader_"
                            "and_takes_over_a_killed_one", "no input: 200 on the leader only"),
    "GET /api/v1/team/dora": (f"{TD}::test_a_single_app_server_keeps_its_dora_and_answers_the_"
                              "teams", f"{TD}::test_bad_requests_say_what_is_wrong"),
}


def routes(served: Sequence[BaseRoute]) -> set[str]:
    """Every "METHOD path" served, included routers too (none of ours has a prefix)."""
    found: set[str] = set()
    for route in served:
        if isinstance(route, APIRoute):
            found |= {f"{method} {route.path}" for method in route.methods if method != "HEAD"}
        elif (included := getattr(route, "original_router", None)) is not None:
            # FastAPI 0.16x keeps an included router whole instead of copying its routes
            found |= routes(included.routes)
    return found


def exists(node: str) -> bool:
    path, name = node.split("::")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return callable(getattr(module, name, None))


def test_every_route_is_listed(delivery: Delivery) -> None:
    gate = delivery.client.app
    assert isinstance(gate, LeaderGate)
    dispatch = gate.app
    assert isinstance(dispatch, AppDispatch) and dispatch.only is not None
    # the server's own routes: its catch-alls answer about paths and are not API
    own = [r for r in dispatch.top.routes  # type: ignore[attr-defined]
           if not isinstance(r, APIRoute) or r.include_in_schema]
    served = routes(dispatch.only.routes) | routes(own)  # type: ignore[attr-defined]
    served |= {f"GET {path}" for path in (LEADER_API, LEADER_HEALTH)}  # the gate's own
    assert sorted(served - set(TESTED)) == [], "routes without tests: list them in TESTED"
    assert sorted(set(TESTED) - served) == [], "TESTED names routes the app no longer has"


@pytest.mark.parametrize("route", sorted(TESTED))
def test_each_route_has_its_tests(route: str) -> None:
    success, error = TESTED[route]
    assert exists(success), f"{route}: no test {success}"
    assert "::" not in error or exists(error), f"{route}: no test {error}"
