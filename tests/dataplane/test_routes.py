"""The route table read from JSON (every field's type checked, the wrong one named) and
the rules every table obeys (``Routes.validate``)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from entrega.dataplane.admin.state import parse_routes
from entrega.dataplane.routes import CohortRule, Routes
from entrega.net import Endpoint

A = Endpoint("127.0.0.1", 9001, "0")
B = Endpoint("::1", 9002, "1")

FULL = Routes(
    backends={"v1": (A,), "v2": (B,)}, weights={"v1": 90, "v2": 10},
    cohort=CohortRule(release="v2", header="X-Beta", header_value="1", user_header="X-User",
                      user_cookie="uid", users=frozenset({"alice", "bob"}), percent=5,
                      app="shop"),
    preview="v2", draining={"v0": 3}, pin_salt="rollout-7")


def test_a_table_survives_json_both_ways() -> None:
    again = Routes.from_dict(json.loads(json.dumps(FULL.to_dict())))
    assert again == FULL
    again.validate()


def test_missing_optional_fields_take_their_defaults() -> None:
    assert Routes.from_dict({}) == Routes()
    assert Routes.from_dict({"backends": None, "weights": None, "cohort": None}) == Routes()
    assert Routes.from_dict({"backends": {"v1": [{"host": "h", "port": 1}]}}).backends == {
        "v1": (Endpoint("h", 1, "0"),)}


def _with(**fields: Any) -> dict[str, Any]:
    return {**FULL.to_dict(), **fields}


@pytest.mark.parametrize(("data", "message"), [
    ([], "the route table: expected an object, got a list"),
    (_with(backends=["v1"]), "backends: expected an object, got a list"),
    (_with(backends={"v1": {"host": "h"}}), "backends['v1']: expected a list of endpoints"),
    (_with(backends={"v1": [{"port": 1}]}), "backends['v1'][0]: missing field 'host'"),
    (_with(backends={"v1": [{"host": "h", "port": "80"}]}),
     "backends['v1'][0].port: expected a whole number, got a string \"80\""),
    (_with(backends={"v1": [{"host": 7, "port": 80}]}),
     "backends['v1'][0].host: expected a string, got a number 7"),
    (_with(weights={"v1": "50%"}), "weights['v1']: expected a whole number"),
    (_with(weights={"v1": True}), "weights['v1']: expected a whole number, got a boolean"),
    (_with(weights={"v1": 12.5}), "weights['v1']: expected a whole number, got a number"),
    (_with(cohort="v2"), "cohort: expected an object, got a string"),
    (_with(cohort={"header": "X-Beta"}), "cohort: missing field 'release'"),
    (_with(cohort={"release": "v2", "users": "alice"}), "cohort.users: expected a list"),
    (_with(cohort={"release": "v2", "users": ["alice", 3]}), "cohort.users[1]: expected a"),
    (_with(cohort={"release": "v2", "percent": "5"}), "cohort.percent: expected a whole"),
    (_with(preview=2), "preview: expected a string, got a number 2"),
    (_with(draining={"v0": None}), "draining['v0']: expected a whole number, got null"),
    (_with(pin_salt=["x"]), "pin_salt: expected a string"),
], ids=["not-object", "backends-list", "endpoints-object", "no-host", "port-text",
        "host-number", "weight-text", "weight-bool", "weight-fraction", "cohort-text",
        "cohort-no-release", "users-text", "user-number", "percent-text", "preview-number",
        "draining-null", "salt-list"])
def test_a_malformed_table_names_the_wrong_field(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Routes.from_dict(data)


def test_the_control_api_reads_bodies_with_the_same_checks() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_routes(b"{not json")
    with pytest.raises(ValueError, match=re.escape(
            "not a route table (backends['v1'][0]: missing field 'host')")):
        parse_routes(json.dumps({"backends": {"v1": [{"port": 1}]}}))


@pytest.mark.parametrize(("routes", "message"), [
    (Routes(backends={"v1": (A,)}, weights={"v1": 60}), "sum to 100"),
    (Routes(backends={"v1": (A,)}, weights={"v2": 100}), "not in backends"),
    (Routes(backends={"v1": ()}, weights={"v1": 100}), "has weight 100 but no endpoints"),
    (Routes(backends={"v1": (A,), "v2": (B,)}, weights={"v1": 101, "v2": -1}),
     "weight of release 'v1' is 101, expected 0..100"),
    (Routes(backends={"v1": (A,)}, weights={"v1": 100}, cohort=CohortRule(release="v9")),
     "cohort release 'v9' has no endpoints"),
    (Routes(backends={"v1": (A,)}, weights={"v1": 100},
            cohort=CohortRule(release="v1", percent=150)), "cohort percent is 150"),
    (Routes(backends={"v1": (A,)}, weights={"v1": 100}, preview="v9"),
     "preview release 'v9' has no endpoints"),
    (Routes(backends={"bad\nname": (A,)}), "printable"),
    (Routes(backends={"": (A,)}), "non-empty"),
    (Routes(backends={"v1": (Endpoint("127.0.0.1", 0),)}), "bad endpoint"),
    (Routes(backends={"v1": (Endpoint("", 80),)}), "bad endpoint"),
], ids=["sum", "unknown-release", "no-endpoints", "over-100", "cohort-release",
        "cohort-percent", "preview", "name", "empty-name", "port-0", "no-host"])
def test_tables_every_router_refuses(routes: Routes, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        routes.validate()


@pytest.mark.parametrize("routes", [
    Routes(),
    Routes(backends={"v1": (A,)}),  # no weights: only cohort traffic is routed
    Routes(backends={"v1": (A,), "v2": ()}, weights={"v1": 100, "v2": 0}),
    FULL,
], ids=["empty", "no-weights", "zero-weight-without-endpoints", "full"])
def test_tables_every_router_accepts(routes: Routes) -> None:
    routes.validate()
