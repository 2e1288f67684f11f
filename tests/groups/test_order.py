"""The depends_on order: (members) -> layers, or an error naming the members at fault."""

from __future__ import annotations

import pytest

from entrega.errors import EntregaError, InvalidGroup
from entrega.groups.model import Member
from entrega.groups.order import dependencies, layers


def m(app: str, *depends_on: str) -> Member:
    return Member(app, "v1", depends_on=depends_on)


@pytest.mark.parametrize(("members", "expected"), [
    pytest.param([m("api")], (("api",),), id="one-member"),
    pytest.param([m("web"), m("api"), m("worker")], (("web", "api", "worker"),),
                 id="independent-members-share-one-layer-in-declared-order"),
    pytest.param([m("web", "api"), m("api", "db"), m("db")], (("db",), ("api",), ("web",)),
                 id="chain-declared-backwards"),
    pytest.param([m("db"), m("api", "db"), m("auth", "db"), m("web", "api", "auth")],
                 (("db",), ("api", "auth"), ("web",)), id="diamond"),
    pytest.param([m("api"), m("worker"), m("web", "api")], (("api", "worker"), ("web",)),
                 id="independent-member-in-the-first-layer"),
    pytest.param([m("api"), m("web", "api", "api")], (("api",), ("web",)),
                 id="a-dependency-named-twice"),
])
def test_layers(members, expected):
    assert layers(members) == expected


@pytest.mark.parametrize(("members", "words"), [
    pytest.param([m("api"), m("web", "cache", "api")],
                 ["not members of the group", "web depends on cache", "members are api, web"],
                 id="unknown-dependency-named"),
    pytest.param([m("api", "web"), m("web", "api")], ["cycle", "api -> web -> api"],
                 id="two-member-cycle"),
    pytest.param([m("db"), m("api", "db", "web"), m("web", "worker"), m("worker", "api")],
                 ["cycle", "api -> web -> worker -> api"], id="cycle-behind-a-good-member"),
    pytest.param([m("api", "api")], ["cycle", "api -> api"], id="member-depends-on-itself"),
    pytest.param([m("api"), m("web"), Member("api", "v2")], ["api more than once"],
                 id="app-named-twice"),
    pytest.param([], ["at least one member"], id="empty-group"),
])
def test_a_group_that_cannot_be_ordered_is_refused_naming_the_members(members, words):
    with pytest.raises(InvalidGroup) as caught:
        layers(members)
    message = str(caught.value)
    for word in words:
        assert word in message
    # a user-facing 400 that pydantic validators also take as the field's error
    assert isinstance(caught.value, EntregaError) and isinstance(caught.value, ValueError)
    assert caught.value.status_code == 400
    assert "Error" not in message


def test_dependencies_go_through_members():
    members = [m("db"), m("api", "db"), m("web", "api"), m("worker")]
    assert dependencies(members) == {"db": frozenset(), "api": {"db"}, "web": {"api", "db"},
                                     "worker": frozenset()}
