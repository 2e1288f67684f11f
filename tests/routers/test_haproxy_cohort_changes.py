"""A rollout's cohort changes on the real HAProxy: runtime API only, never a reload.

A reload forks a new worker (another ``Pid`` in ``show info``) and starts its counters
afresh, so each step of the rollout checks that the worker is the same one and that its
uptime kept counting, and that routing follows the new rule.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from entrega.controller.launch import cohort_rule
from entrega.dataplane.http.cohort import user_bucket
from entrega.net import free_port
from entrega.rollouts import advance
from entrega.rollouts.model import (
    Cohort,
    CohortStep,
    Observed,
    RolloutSpec,
    SetRoutes,
    UsersStep,
    WeightStep,
    initial_state,
)
from entrega.routers.base import CohortRule
from entrega.routers.haproxy import HaproxyRouter
from tests.routers.conftest import Backend, HaproxyFactory, make_routes

pytestmark = pytest.mark.real

USERS = [f"user{i}" for i in range(60)]


async def release(router: HaproxyRouter, *, headers: dict[str, str] | None = None,
                  cookies: dict[str, str] | None = None) -> str:
    """The release that serves one new visitor's request."""
    async with httpx.AsyncClient(base_url=f"http://{router.listen}", cookies=cookies) as c:
        r = await c.get("/", headers=headers)
    assert r.status_code == 200, r.text
    return r.headers["x-entrega-release"]


async def worker(router: HaproxyRouter) -> tuple[str, str]:
    """(worker pid, start time): both change when HAProxy reloads."""
    info = await router.api.info()
    return info["Pid"], info["Start_time_sec"]


async def test_entering_widening_and_dropping_a_cohort_never_reloads(
        make_haproxy: HaproxyFactory, backends: dict[str, Backend]) -> None:
    haproxy = await make_haproxy()
    plain = make_routes(backends, {"v1": 100, "v2": 0}, releases=("v1", "v2"))
    await haproxy.set_routes(plain)
    before = await worker(haproxy)
    master = haproxy.pid()

    # enter the cohort step: a header with a value, and an allowlist by user header
    entered = CohortRule(release="v2", header="X-Beta", header_value="yes",
                         user_header="X-User", users=frozenset({"alice"}))
    routes = make_routes(backends, {"v1": 100, "v2": 0}, releases=("v1", "v2"),
                         cohort=entered)
    await haproxy.set_routes(routes)
    assert (await haproxy.get_routes()).same_table(routes)
    assert await release(haproxy, headers={"X-Beta": "yes"}) == "v2"
    assert await release(haproxy, headers={"X-Beta": "no"}) == "v1"
    assert await release(haproxy, headers={"X-User": "alice"}) == "v2"
    assert await release(haproxy, headers={"X-User": "bob"}) == "v1"
    assert await release(haproxy) == "v1"
    assert await worker(haproxy) == before

    # widen it: another header (any value), a user cookie too, more users, a percent
    widened = CohortRule(release="v2", header="X-Canary", user_header="X-User",
                         user_cookie="uid", users=frozenset({"alice", "carol"}), percent=40,
                         app="store")
    routes = make_routes(backends, {"v1": 100, "v2": 0}, releases=("v1", "v2"),
                         cohort=widened)
    await haproxy.set_routes(routes)
    assert (await haproxy.get_routes()).same_table(routes)
    assert await release(haproxy, headers={"X-Canary": "whatever"}) == "v2"
    assert await release(haproxy, headers={"X-Beta": "yes"}) == "v1"  # the old header
    assert await release(haproxy, cookies={"uid": "carol"}) == "v2"
    assert await release(haproxy, headers={"X-User": "alice"}) == "v2"
    got = {u: await release(haproxy, cookies={"uid": u}) for u in USERS}
    # the rule's own app names the buckets, the same ones as the embedded router's
    assert got == {u: "v2" if user_bucket("store", u) <= 40 else "v1" for u in USERS}
    assert set(got.values()) == {"v1", "v2"}
    assert await worker(haproxy) == before

    # the canary takes weight and the cohort widens again: both at run time
    routes = make_routes(backends, {"v1": 50, "v2": 50}, releases=("v1", "v2"),
                         cohort=CohortRule(release="v2", user_header="X-User", percent=100))
    await haproxy.set_routes(routes)
    assert {await release(haproxy, headers={"X-User": u}) for u in USERS} == {"v2"}
    assert await worker(haproxy) == before

    # drop it: the weights alone decide again, whatever the request carries
    await haproxy.set_routes(plain)
    assert (await haproxy.get_routes()).same_table(plain)
    assert (await haproxy.get_routes()).cohort is None
    for headers in ({"X-Canary": "1"}, {"X-Beta": "yes"}, {"X-User": "alice"}):
        assert await release(haproxy, headers=headers) == "v1"
    assert await release(haproxy, cookies={"uid": "carol"}) == "v1"
    assert await worker(haproxy) == before
    assert haproxy.pid() == master


async def test_an_adopted_haproxy_with_older_rules_is_reloaded_once(
        make_haproxy: HaproxyFactory, backends: dict[str, Backend]) -> None:
    """An HAProxy started by an older entrega runs other rules (its settings map has no
    digest of entrega's configuration): the first change reloads it onto them, once."""
    haproxy = await make_haproxy()
    await haproxy.set_routes(make_routes(backends, {"v1": 100}, releases=("v1",)))
    settings = haproxy.files.map("settings.map")
    await haproxy.api.check(f"del map {settings} config")  # as an older entrega left it
    before = await worker(haproxy)
    cohort = CohortRule(release="v2", header="X-Beta")
    routes = make_routes(backends, {"v1": 100, "v2": 0}, releases=("v1", "v2"),
                         cohort=cohort)
    await haproxy.set_routes(routes)
    reloaded = await worker(haproxy)
    assert reloaded[0] != before[0]
    assert (await haproxy.get_routes()).same_table(routes)
    assert await release(haproxy, headers={"X-Beta": "1"}) == "v2"
    await haproxy.set_routes(make_routes(backends, {"v1": 100, "v2": 0},
                                         releases=("v1", "v2")))
    assert await worker(haproxy) == reloaded
    assert await release(haproxy, headers={"X-Beta": "1"}) == "v1"


async def test_adopted_with_another_listen_address_moves_with_one_reload(
        make_haproxy: HaproxyFactory, backends: dict[str, Backend], tmp_path: Path) -> None:
    """The listen address is what HAProxy reads at start: a router adopting an HAProxy
    that listens elsewhere brings it to its own address with one hitless reload."""
    first = await make_haproxy("moved")
    routes = make_routes(backends, {"v1": 100}, releases=("v1",))
    await first.set_routes(routes)
    before = await worker(first)
    moved = HaproxyRouter(name="moved", listen=f"127.0.0.1:{free_port()}",
                          preview_listen=None, state_dir=tmp_path, app="shop",
                          binary=first.binary)
    await moved.ensure_running()
    assert moved.pid() == first.pid()  # adopted, not started again
    await moved.set_routes(routes)
    assert (await worker(moved))[0] != before[0]
    assert await release(moved) == "v1"
    with pytest.raises(httpx.ConnectError):
        await release(first)
    again = await worker(moved)
    await moved.set_routes(make_routes(backends, {"v1": 50, "v2": 50}, releases=("v1", "v2")))
    assert await worker(moved) == again


async def test_a_canary_rollouts_route_tables_apply_without_a_reload(
        make_haproxy: HaproxyFactory, backends: dict[str, Backend]) -> None:
    """The tables the canary state machine asks for, in its order (a share of users, then
    the cohort, then weights, then promotion), each applied to HAProxy as the controller
    does: the routing follows every one, and the same worker serves them all."""
    haproxy = await make_haproxy()
    await haproxy.set_routes(make_routes(backends, {"v1": 100}, releases=("v1",)))
    before = await worker(haproxy)
    cohort = Cohort(users=("alice",))
    spec = RolloutSpec(strategy="canary", cohort=cohort,
                       steps=(UsersStep(20), CohortStep("beta"), WeightStep(50),
                              WeightStep(100)))
    state = initial_state(stable="v1", canary="v2", now=0.0)
    tables: list[SetRoutes] = []
    for now in range(1, 20):
        transition = advance(spec, state, Observed(canary_ready=True), now=float(now))
        state = transition.state
        tables += [a for a in transition.actions if isinstance(a, SetRoutes)]
        if state.phase.terminal:
            break
    assert state.phase == "succeeded"
    assert [t.cohort is not None for t in tables].count(True) >= 3  # entered, widened, kept
    assert tables[-1].cohort is None  # ...and dropped at promotion

    for table in tables:
        rule = cohort_rule(cohort, table.cohort, canary="v2", app="shop")
        routes = make_routes(backends, table.weights, releases=tuple(table.weights),
                             cohort=rule)
        await haproxy.set_routes(routes)
        assert (await haproxy.get_routes()).same_table(routes)
        everyone = "v2" if table.weights.get("v1", 0) == 0 else None
        beta = await release(haproxy, headers={"X-Entrega-Cohort": "beta"})
        alice = await release(haproxy, headers={"X-User-Id": "alice"})
        if rule is not None and rule.header:
            assert (beta, alice) == ("v2", "v2")
        elif table.weights.get("v2", 0) == 0:
            assert (beta, alice) == ("v1", "v1" if user_bucket("shop", "alice") > 20
                                     else "v2")
        if rule is not None:
            for user in USERS:
                if user_bucket("shop", user) <= rule.percent:
                    assert await release(haproxy, headers={"X-User-Id": user}) == "v2"
        if everyone:
            assert {beta, alice, await release(haproxy)} == {everyone}
        assert await worker(haproxy) == before
