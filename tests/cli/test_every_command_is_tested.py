"""A guard: every command of the CLI has an in-process test (Typer's CliRunner) of a
success and one of an error, listed here. A new command without both fails this test
until they are written and named below."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import typer.main

from entrega.cli.main import app

RC = "tests/cli/test_rollout_commands.py"
P = "tests/cli/test_pipeline.py"
G = "tests/cli/test_groups.py"

#: command -> (a success test, an error test)
TESTED: dict[str, tuple[str, str]] = {
    "init": ("tests/cli/test_config.py::test_init_writes_a_config_that_validates",
             "tests/cli/test_config.py::test_init_does_not_overwrite_without_force"),
    "server": ("tests/cli/test_server.py::test_server_serves_until_sigterm_and_down_stops_"
               "its_router",
               "tests/cli/test_server.py::test_server_refuses_an_invalid_config"),
    "down": ("tests/cli/test_down.py::test_down_with_nothing_running_is_a_no_op",
             "tests/cli/test_down.py::test_down_refuses_while_a_server_owns_the_store"),
    "deploy": ("tests/cli/test_deploy_wait.py::test_one_line_per_event_then_promoted_exit_0",
               "tests/cli/test_deploy_commit.py::test_commit_metadata_needs_a_new_release"),
    "status": ("tests/cli/test_status.py::test_status_shows_the_rollout_in_progress",
               "tests/cli/test_status.py::test_status_without_a_server_says_so"),
    "promote": (f"{RC}::test_promote_asks_the_rollout_in_progress",
                f"{RC}::test_promote_without_a_rollout_is_refused"),
    "abort": (f"{RC}::test_abort_asks_the_rollout_to_roll_back",
              f"{RC}::test_abort_without_a_rollout_is_refused"),
    "rollback": (f"{RC}::test_rollback_restores_the_replaced_release",
                 f"{RC}::test_rollback_with_nothing_earlier_says_how_to_name_one"),
    "approve": (f"{RC}::test_approve_lets_a_waiting_release_through",
                f"{RC}::test_approve_of_a_release_not_waiting_is_refused"),
    "history": ("tests/cli/test_history.py::test_history_lists_who_did_what",
                "tests/cli/test_history.py::test_history_of_an_unknown_environment_is_refused"),
    "releases": ("tests/cli/test_history.py::test_releases_newest_first",
                 "tests/cli/test_history.py::test_releases_need_a_reachable_server"),
    "pipeline": (f"{P}::test_pipeline_shows_where_each_release_stands",
                 f"{P}::test_pipeline_of_another_app_is_refused"),
    "group list": (f"{G}::test_release_create_group_uploads_each_member_and_creates_the_group",
                   f"{G}::test_group_commands_say_what_is_wrong"),
    "group show": (f"{G}::test_release_create_group_uploads_each_member_and_creates_the_group",
                   f"{G}::test_group_commands_say_what_is_wrong"),
    "group promote": (
        f"{G}::test_release_create_group_uploads_each_member_and_creates_the_group",
        f"{G}::test_group_commands_say_what_is_wrong"),
    "group abort": (f"{G}::test_release_create_group_uploads_each_member_and_creates_the_group",
                    f"{G}::test_group_commands_say_what_is_wrong"),
    "release create": (f"{P}::test_release_create_uploads_and_can_deploy",
                       f"{P}::test_release_create_of_a_missing_artifact_is_refused"),
    "token create": (f"{P}::test_token_create_prints_the_token_and_its_digest",
                     f"{P}::test_token_create_refuses_an_unknown_role"),
    "config validate": ("tests/cli/test_config.py::test_init_writes_a_config_that_validates",
                        "tests/cli/test_config.py::test_config_validate_names_the_file_line_"
                        "and_field"),
    "config schema": ("tests/cli/test_config.py::test_config_schema_is_json_schema",
                      "tests/cli/test_config.py::test_config_schema_takes_no_arguments"),
    "config reload": (
        "tests/cli/test_config_reload.py::test_config_reload_says_what_applied_what_waits_and_"
        "what_needs_a_restart",
        "tests/cli/test_config_reload.py::test_config_reload_of_a_file_with_a_mistake_is_"
        "refused_with_its_line"),
    "analysis explain": (
        "tests/cli/test_analysis_explain.py::test_explain_shows_why_the_analysis_failed",
        "tests/cli/test_analysis_explain.py::test_explain_an_unknown_rollout"),
    "feedback": ("tests/cli/test_feedback.py::test_feedback_per_release_and_each_comment_as_"
                 "written",
                 "tests/cli/test_feedback.py::test_feedback_of_another_app_is_refused"),
    "dora": ("tests/cli/test_feedback.py::test_dora_shows_the_four_keys",
             "tests/cli/test_feedback.py::test_dora_refuses_a_period_out_of_range"),
    "report": ("tests/cli/test_report.py::test_report_one_rollout_of_three",
               "tests/cli/test_report.py::test_report_one_rollout_of_three"),
    "host check": (
        "tests/fleet/test_host_check.py::test_host_check_reports_every_host_and_fails_on_any",
        "tests/fleet/test_host_check.py::test_host_check_needs_an_ssh_environment"),
    "host prepare": (
        "tests/fleet/test_host_prepare.py::test_the_agent_is_sent_once_runs_on_every_host_and_"
        "a_lost_host_is_named",
        "tests/fleet/test_host_prepare.py::test_the_agent_is_sent_once_runs_on_every_host_and_"
        "a_lost_host_is_named"),
}


def commands(group: Any, prefix: str = "") -> set[str]:
    """Every command's full name ("release create"), by walking the groups (duck-typed:
    Typer's groups are click's, or its own copy of them, depending on the version)."""
    found: set[str] = set()
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found |= commands(command, f"{prefix}{name} ")
        else:
            found.add(prefix + name)
    return found


def exists(node: str) -> bool:
    path, name = node.split("::")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return callable(getattr(module, name, None))


def test_every_command_is_listed() -> None:
    found = commands(typer.main.get_command(app))
    assert sorted(found - set(TESTED)) == [], "commands without tests: list them in TESTED"
    assert sorted(set(TESTED) - found) == [], "TESTED names commands the CLI no longer has"


@pytest.mark.parametrize("command", sorted(TESTED))
def test_each_command_has_its_tests(command: str) -> None:
    success, error = TESTED[command]
    assert exists(success), f"{command}: no test {success}"
    assert exists(error), f"{command}: no test {error}"
