"""`entrega config reload` in process, against the API over a real socket: what applied
now, what waits, what needs a restart; a file with a mistake is refused by the server
with its line, and nothing changes."""

from __future__ import annotations

import json

from tests.cli.conftest import ApiServer, invoke


def test_config_reload_says_what_applied_what_waits_and_what_needs_a_restart(
        api: ApiServer) -> None:
    text = api.config.read_text()
    router = text.split('listen: "')[2].split('"')[0]
    server = text.split('listen: "')[1].split('"')[0]
    api.config.write_text(text.replace("- weight: 20\n", "- weight: 30\n")
                          .replace(router, "127.0.0.1:1")
                          .replace('command: "python app.py"', 'command: "python app2.py"'))

    result = invoke(api, ["config", "reload"])

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "configuration reloaded: 1 applied now, 1 waiting, 1 need a server restart",
        "applied now:",
        '  environments[production].strategy.canary.steps: [{"weight":20},{"pause":{}},'
        '{"weight":100}] -> [{"weight":30},{"pause":{}},{"weight":100}]',
        "router changes, applied once no rollout is in progress (production: applying now):",
        f"  environments[production].router.listen: {router} -> 127.0.0.1:1",
        "restart the server to apply:",
        "  run.command: python app.py -> python app2.py"]
    assert api.service.config.run.command == "python app.py"  # kept until a restart
    assert api.service.config.environment("production").router.listen == router
    assert server in api.url

    again = invoke(api, ["config", "reload", "--json"])
    assert again.exit_code == 0, again.output
    answer = json.loads(again.stdout)
    assert answer["applied"] == []
    assert [c["path"] for c in answer["waiting"]] == ["environments[production].router.listen"]
    assert [c["path"] for c in answer["needs_restart"]] == ["run.command"]


def test_config_reload_of_a_file_with_a_mistake_is_refused_with_its_line(
        api: ApiServer) -> None:
    api.config.write_text(api.config.read_text().replace("- weight: 20\n", "- weight: -5\n"))

    result = invoke(api, ["config", "reload"])

    assert result.exit_code == 1
    assert str(result.exception).startswith(
        "entrega.yaml:11: environments[0].strategy.canary.steps[0].weight: Input should be "
        "greater than or equal to 0")
    assert str(api.config.parent) not in str(result.exception)
    steps = api.service.config.environment("production").strategy.canary
    assert steps is not None and steps.steps[0].weight == 20
