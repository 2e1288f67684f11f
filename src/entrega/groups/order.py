"""The order of a group's members, from their ``depends_on``.

A member starts in an environment only once the members it depends on passed there (the
API before the web front that calls it), and goes back only after the members depending
on it went back: a caller never runs against a version of its dependency it was not
released with. ``layers`` gives that order as topological layers (layer 0 depends on
nothing; members of one layer are independent and move together); reverts walk the layers
backwards.

A group that cannot be ordered is refused when it is created, with an error naming the
members at fault, not discovered halfway through production.
"""

from __future__ import annotations

from collections.abc import Sequence

from entrega.errors import InvalidGroup
from entrega.groups.model import Member


def layers(members: Sequence[Member]) -> tuple[tuple[str, ...], ...]:
    """The members' apps in dependency layers, each layer in the members' declared order.

    Raises :class:`~entrega.errors.InvalidGroup` for an app named twice, a ``depends_on``
    naming an app that is not a member, or a cycle (named member by member)."""
    _check_members(members)
    deps = {m.app: set(m.depends_on) for m in members}
    placed: set[str] = set()
    result: list[tuple[str, ...]] = []
    while len(placed) < len(deps):
        layer = tuple(app for app in deps if app not in placed and deps[app] <= placed)
        if not layer:
            raise InvalidGroup(f"depends_on has a cycle: {' -> '.join(_cycle(deps, placed))}; "
                               "a member cannot wait for itself",
                               hint="remove one of these depends_on")
        result.append(layer)
        placed.update(layer)
    return tuple(result)


def dependencies(members: Sequence[Member]) -> dict[str, frozenset[str]]:
    """Every member's dependencies, direct and through other members: a member skipped in
    an environment (its app has no such environment) still orders the ones around it."""
    deps = {m.app: m.depends_on for m in members}
    closure: dict[str, frozenset[str]] = {}
    for layer in layers(members):
        for app in layer:
            closure[app] = frozenset(deps[app]).union(*(closure[d] for d in deps[app]))
    return closure


def _check_members(members: Sequence[Member]) -> None:
    apps = [m.app for m in members]
    if not apps:
        raise InvalidGroup("a release group needs at least one member")
    twice = sorted({app for app in apps if apps.count(app) > 1})
    if twice:
        raise InvalidGroup(f"the group names {', '.join(twice)} more than once: one release "
                           "per app in a group")
    known = set(apps)
    unknown = [f"{m.app} depends on {', '.join(sorted(set(m.depends_on) - known))}"
               for m in members if set(m.depends_on) - known]
    if unknown:
        raise InvalidGroup(f"depends_on names apps that are not members of the group: "
                           f"{'; '.join(unknown)}",
                           hint=f"the members are {', '.join(apps)}")


def _cycle(deps: dict[str, set[str]], placed: set[str]) -> list[str]:
    """One cycle among the members not placed: each of them waits for another one of
    them, so following the waits from any of them comes back to a member already seen."""
    path: list[str] = []
    app = next(a for a in deps if a not in placed)
    while app not in path:
        path.append(app)
        app = next(d for d in sorted(deps[app]) if d not in placed)
    return [*path[path.index(app):], app]
