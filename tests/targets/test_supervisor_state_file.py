"""``supervisor.json`` is written by another process: the controller validates what it
reads, field by field, and a file that is not a supervisor's state counts as none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from entrega.dataplane.instances.supervisor import STATE_FILE, SupervisorState, read_state


def write(directory: Path, data: object) -> Path:
    (directory / STATE_FILE).write_text(json.dumps(data))
    return directory


def test_a_state_file_reads_back_as_written(tmp_path: Path) -> None:
    data = {"supervisor_pid": 4242, "port": 20001, "command": "python app.py",
            "status": "running", "child_pid": 4243, "restarts": 1, "started_at": 10.5,
            "last_exit_code": -9, "next_start_at": None, "stderr_offset": 120,
            "error": None, "updated_at": 11.0}
    assert read_state(write(tmp_path, data)) == SupervisorState(**data)  # type: ignore[arg-type]


def test_fields_of_a_newer_supervisor_are_ignored_and_missing_ones_default(
        tmp_path: Path) -> None:
    state = read_state(write(tmp_path, {"supervisor_pid": 7, "port": 20002, "command": "x",
                                        "cpu_limit": "2"}))
    assert state == SupervisorState(supervisor_pid=7, port=20002, command="x")


@pytest.mark.parametrize("data", [
    {"supervisor_pid": "kill-everyone", "port": 20003, "command": "x"},
    {"supervisor_pid": 7, "port": [20003], "command": "x"},
    {"supervisor_pid": 7, "command": "x"},
    ["not", "an", "object"],
], ids=["pid-not-a-number", "port-not-a-number", "no-port", "not-an-object"])
def test_a_file_that_is_not_a_supervisor_state_counts_as_none(tmp_path: Path,
                                                             data: object) -> None:
    assert read_state(write(tmp_path, data)) is None


def test_no_file_or_a_torn_one_is_none(tmp_path: Path) -> None:
    assert read_state(tmp_path) is None
    (tmp_path / STATE_FILE).write_text('{"supervisor_pid": 7, "po')
    assert read_state(tmp_path) is None
