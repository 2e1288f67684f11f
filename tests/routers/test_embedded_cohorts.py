"""Selected users first, through a real router: cohorts, user-id buckets and visitor pins
(the pins' rollout-by-rollout behaviour, through both routers: test_visitor_pins.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
from collections import Counter

import httpx
import pytest

from entrega.dataplane.http.cohort import user_bucket
from entrega.routers.base import CohortRule, pin_tag
from entrega.routers.embedded import EmbeddedRouter
from tests.routers.conftest import Backend, make_routes

pytestmark = pytest.mark.real

PIN = "entrega-release"
DRAW = "entrega-pin"


async def get(router: EmbeddedRouter, *, cookies: dict[str, str] | None = None,
              headers: dict[str, str] | None = None) -> httpx.Response:
    """One request on a fresh client: nothing is remembered between calls."""
    async with httpx.AsyncClient(base_url=f"http://{router.listen}", cookies=cookies) as c:
        response = await c.get("/", headers=headers)
    assert response.status_code == 200
    return response


def released(response: httpx.Response) -> str:
    return response.headers["x-entrega-release"]


async def test_client_without_id_is_pinned_with_a_cookie(
        router: EmbeddedRouter, backends: dict[str, Backend]) -> None:
    await router.set_routes(dataclasses.replace(make_routes(backends, {"v1": 50, "v2": 50}),
                                                pin_salt="rollout-3"))
    r = await get(router)
    release_cookie, pin_cookie = r.headers.get_list("set-cookie")
    assert release_cookie == f"{PIN}={released(r)}; Path=/; HttpOnly; SameSite=Lax"
    assert re.fullmatch(f"{DRAW}={pin_tag('rollout-3')}\\.[0-9]{{1,2}}; Path=/; HttpOnly; "
                        "SameSite=Lax", pin_cookie), pin_cookie
    async with httpx.AsyncClient(base_url=f"http://{router.listen}") as c:
        first = await c.get("/")  # httpx keeps the cookies like a browser
        pinned = released(first)
        assert c.cookies[PIN] == pinned and c.cookies[DRAW]
        for _ in range(30):
            r = await c.get("/")
            assert released(r) == pinned and "set-cookie" not in r.headers


async def test_a_release_cookie_alone_decides_nothing(
        router: EmbeddedRouter, backends: dict[str, Backend]) -> None:
    # entrega-release only says what a visitor saw (feedback reads it): a visitor with
    # it and no pin of this rollout is drawn by weight, like a new one
    await router.set_routes(make_routes(backends, {"v1": 90, "v2": 10}))
    seen = Counter()
    for _ in range(200):
        r = await get(router, cookies={PIN: "v2"})
        seen[released(r)] += 1
        assert DRAW in r.headers["set-cookie"]
    assert 0 < seen["v2"] < 60, seen


async def test_rollback_clears_the_pin(
        router: EmbeddedRouter, backends: dict[str, Backend]) -> None:
    await router.set_routes(make_routes(backends, {"v1": 50, "v2": 50}))
    async with httpx.AsyncClient(base_url=f"http://{router.listen}") as c:
        while released(await c.get("/")) != "v2":
            c.cookies.clear()  # a new visitor, until one is drawn to v2
        await router.set_routes(make_routes(backends, {"v1": 100, "v2": 0}))  # the rollback
        r = await c.get("/")
        assert released(r) == "v1" and r.headers["set-cookie"].startswith(f"{PIN}=v1;")
        assert c.cookies[PIN] == "v1"
    # a release removed from the table altogether, and a pin to an unknown release
    await router.set_routes(make_routes(backends, {"v1": 100}, releases=("v1",)))
    for stale in ("v2", "nonsense", ""):
        r = await get(router, cookies={PIN: stale})
        assert released(r) == "v1" and r.headers["set-cookie"].startswith(f"{PIN}=v1;")


async def test_cohort_release_at_weight_zero_serves_only_its_cohort(
        router: EmbeddedRouter, backends: dict[str, Backend]) -> None:
    cohort = CohortRule(release="v2", header="X-Entrega-Cohort", header_value="beta")
    await router.set_routes(make_routes(backends, {"v1": 100, "v2": 0}, cohort=cohort))
    assert released(await get(router, cookies={PIN: "v2"})) == "v1"
    assert released(await get(router, headers={"X-Entrega-Cohort": "beta"})) == "v2"
    assert released(await get(router, headers={"X-Entrega-Cohort": "alpha"})) == "v1"
    r = await get(router, cookies={PIN: "v3"})  # v3 is routed, with weight 0
    assert released(r) == "v1" and "set-cookie" in r.headers


async def test_pins_follow_weights_for_new_clients(
        router: EmbeddedRouter, backends: dict[str, Backend]) -> None:
    await router.set_routes(make_routes(backends, {"v1": 80, "v2": 20}))
    counts: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=f"http://{router.listen}") as c:
        for _ in range(1000):
            r = await c.get("/")
            counts[r.headers["set-cookie"].split(";")[0]] += 1
            c.cookies.clear()
    sd = math.sqrt(1000 * 0.2 * 0.8)
    assert abs(counts[f"{PIN}=v2"] - 200) < 5 * sd, counts


async def test_allowlist_and_header_cohort(
        router: EmbeddedRouter, backends: dict[str, Backend]) -> None:
    cohort = CohortRule(release="v2", header="X-Entrega-Cohort", header_value="beta",
                        user_header="X-User", user_cookie="uid",
                        users=frozenset({"alice", "bob"}))
    await router.set_routes(make_routes(backends, {"v1": 100, "v2": 0}, cohort=cohort))
    assert released(await get(router, headers={"X-User": "alice"})) == "v2"
    assert released(await get(router, cookies={"uid": "bob"})) == "v2"
    assert released(await get(router, headers={"X-User": "carol"})) == "v1"
    assert released(await get(router, headers={"x-entrega-cohort": "beta"})) == "v2"
    # the cohort wins over a pin to the stable release, and sets no pin
    r = await get(router, headers={"X-User": "alice"}, cookies={PIN: "v1"})
    assert released(r) == "v2" and "set-cookie" not in r.headers
    # users with an id are routed by their bucket, never pinned
    assert "set-cookie" not in (await get(router, headers={"X-User": "carol"})).headers


async def test_user_buckets_spread_and_stay_put_as_the_cohort_grows(
        router: EmbeddedRouter, backends: dict[str, Backend]) -> None:
    users = [f"user-{i}" for i in range(250)]
    previous: set[str] = set()
    # 250 requests at once: on a loaded machine the default 5 s wait for one of the
    # pool's 100 connections can pass; the test is about buckets, not speed
    async with httpx.AsyncClient(base_url=f"http://{router.listen}", timeout=60) as c:
        async def canary_users() -> set[str]:
            async def one(u: str) -> str | None:
                r = await c.get("/", headers={"X-User": u})
                return u if released(r) == "v2" else None
            return {u for u in await asyncio.gather(*(one(u) for u in users)) if u}

        # `users: 10%`, then `users: 30%`, then `weight: 50` (same buckets), then 60
        steps = [(10, 0), (30, 0), (30, 50), (30, 60)]
        for percent, weight in steps:
            cohort = CohortRule(release="v2", user_header="X-User", percent=percent,
                                app="shop")
            await router.set_routes(make_routes(
                backends, {"v1": 100 - weight, "v2": weight}, cohort=cohort))
            got = await canary_users()
            share = max(percent, weight)
            expected = {u for u in users if user_bucket("shop", u) <= share}
            assert got == expected
            assert abs(len(got) - 2.5 * share) < 5 * math.sqrt(250 * share / 100), len(got)
            assert previous <= got  # nobody went back to the stable release
            previous = got
