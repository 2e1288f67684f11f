"""The records between the controller and the host agent, checked with the standard
library alone: what a start request turns into, and that ``supervisor.json`` is read
field by field for every field the supervisor writes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from entrega.dataplane.instances import supervisor
from entrega.dataplane.instances.supervisor import STATE_FILE, SupervisorState, read_state
from entrega.dataplane.instances.wire import ReleaseSpec

BASE = {"version": "1.0.0", "path": "/srv/shop/1.0.0", "command": "python app.py",
        "env": {"GREETING": "hola"}, "instances": 2}


@pytest.mark.parametrize(("request_", "expected"), [
    (BASE, ReleaseSpec("1.0.0", "/srv/shop/1.0.0", "python app.py", {"GREETING": "hola"}, 2)),
    ({**BASE, "ports": [20000, 20999]},
     ReleaseSpec("1.0.0", "/srv/shop/1.0.0", "python app.py", {"GREETING": "hola"}, 2,
                 (20000, 20999))),
    ({**BASE, "ports": None},
     ReleaseSpec("1.0.0", "/srv/shop/1.0.0", "python app.py", {"GREETING": "hola"}, 2)),
], ids=["kernel-ports", "port-range", "null-ports"])
def test_a_start_request_becomes_a_release_spec(request_: dict[str, object],
                                                expected: ReleaseSpec) -> None:
    assert ReleaseSpec.from_json(request_) == expected
    # ...and back: what the controller sends is what the agent reads.
    as_json = json.loads(json.dumps(dataclasses.asdict(expected)))
    assert ReleaseSpec.from_json(as_json) == expected


def test_every_field_of_the_state_file_has_a_checked_type() -> None:
    assert set(supervisor._FIELD_TYPES) == {f.name for f in dataclasses.fields(SupervisorState)}


@pytest.mark.parametrize(("field", "value"), [
    ("supervisor_pid", True), ("port", 2.5), ("child_pid", "12"), ("restarts", None),
    ("started_at", "yesterday"), ("error", 3), ("updated_at", None),
], ids=lambda v: str(v))
def test_a_state_field_of_the_wrong_type_makes_the_file_count_as_none(
        tmp_path: Path, field: str, value: object) -> None:
    data = {"supervisor_pid": 7, "port": 20001, "command": "x", field: value}
    (tmp_path / STATE_FILE).write_text(json.dumps(data))
    assert read_state(tmp_path) is None
