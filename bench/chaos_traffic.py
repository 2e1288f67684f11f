"""The users of the fault campaign (bench/chaos.py): bounded traffic through the router,
every request kept with its start and end, and kills done between two of its requests.

Two kinds of users, as a public service sees them:

- ``visitors``: many anonymous visitors without a cookie jar (a crawler, a first visit, a
  browser in private mode): every request is a new visitor, the router draws a release
  for each;
- ``cookie_clients``: a few long-lived clients that keep every cookie the router sets
  (a mobile app, ``requests.Session``, ``httpx.Client``): they carry their
  ``entrega-release`` pin from one rollout into the next, which is what issue 10's item 15
  is about, so their requests are counted apart per release.

The traffic runs on an event loop in a thread of its own, so the campaign's blocking work
(restarting the server, polling the API) never pauses it. A kill is done *on that loop*
(``kill``): no request starts or ends between reading how many are in flight and the
signal, so ``in_flight`` is exactly what the generator had outstanding at the kill.

Bounded: each user sends at most ``rps`` requests a second, each with a timeout, and all
of them stop when ``stop`` is called (the campaign always calls it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

VISITORS = "visitors"
COOKIE_CLIENTS = "cookie_clients"
PATH = "/api/products"
REQUEST_TIMEOUT_S = 10.0
#: the body of the shop's own injected 5xx (examples/shop/app.py): a bad release failing
#: as it was built to, which the campaign expects and does not count as a failed request
INJECTED = b"injected failure"


@dataclass(frozen=True)
class Request:
    """One request as the user saw it; times are ``time.monotonic()`` seconds."""

    start: float
    end: float
    user: str              # VISITORS or COOKIE_CLIENTS
    release: str | None    # X-Entrega-Release of the answer, None without an answer
    status: int | None     # None: no answer (connection refused, reset, timeout)
    injected: bool = False
    error: str = ""        # why it failed, empty when it did not

    @property
    def failed(self) -> bool:
        return bool(self.error)


@dataclass(frozen=True)
class Kill:
    """A ``kill -9`` done on the traffic loop: when, and what the users had in flight."""

    at: float
    in_flight: int


def classify(status: int, body: bytes) -> tuple[bool, str]:
    """(injected, error) of an answer: the shop's own injected 500 is no failure; any
    other answer but 200 is one (a 502/503 from the router, a 404 from a wrong route)."""
    if status == 500 and INJECTED in body:
        return True, ""
    if status != 200:
        return False, f"status {status}"
    return False, ""


class Traffic:
    """``visitors`` + ``cookie_clients`` users sending GET requests to ``url``."""

    def __init__(self, url: str, *, visitors: int, visitor_rps: float, cookie_clients: int,
                 cookie_client_rps: float) -> None:
        self.url = url
        self.visitors = visitors
        self.visitor_rps = visitor_rps
        self.cookie_clients = cookie_clients
        self.cookie_client_rps = cookie_client_rps
        self.requests: list[Request] = []
        self.in_flight = 0
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-traffic", daemon=True)

    # -- the campaign's side (another thread) ---------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = REQUEST_TIMEOUT_S + 5) -> None:
        """Let every user finish its request in flight, then end the loop's thread."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout_s)

    def kill(self, pid: int) -> Kill:
        """``kill -9 pid`` on the traffic loop, with the users' requests in flight then."""
        return self.on_loop(lambda: self._kill_now(pid))

    def on_loop(self, fn: Callable[[], Kill]) -> Kill:
        async def call() -> Kill:
            return fn()
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=10)

    def by_release(self) -> dict[str, dict[str, int]]:
        """Answered requests per kind of user and release (a snapshot)."""
        counts: dict[str, Counter[str]] = {VISITORS: Counter(), COOKIE_CLIENTS: Counter()}
        for r in list(self.requests):
            if r.release is not None:
                counts[r.user][r.release] += 1
        return {user: dict(sorted(c.items())) for user, c in counts.items()}

    # -- the loop's side -------------------------------------------------------------------

    def _kill_now(self, pid: int) -> Kill:
        in_flight = self.in_flight
        at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):  # it died first: killed all the same
            os.kill(pid, signal.SIGKILL)
        return Kill(at=at, in_flight=in_flight)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._users())
        finally:
            self._loop.close()

    async def _users(self) -> None:
        # A jar whose policy accepts no domain: the visitors' shared client never keeps a
        # cookie, so each of their requests is a first visit.
        forgetful = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        limits = httpx.Limits(max_connections=self.visitors,
                              max_keepalive_connections=self.visitors)
        async with httpx.AsyncClient(cookies=forgetful, limits=limits,
                                     timeout=REQUEST_TIMEOUT_S) as shared:
            clients = [httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S)
                       for _ in range(self.cookie_clients)]
            try:
                await asyncio.gather(
                    *(self._user(shared, VISITORS, self.visitor_rps, i, self.visitors)
                      for i in range(self.visitors)),
                    *(self._user(c, COOKIE_CLIENTS, self.cookie_client_rps, i,
                                 self.cookie_clients) for i, c in enumerate(clients)))
            finally:
                for c in clients:
                    await c.aclose()

    async def _user(self, client: httpx.AsyncClient, user: str, rps: float, n: int,
                    of: int) -> None:
        interval = 1 / rps
        next_at = time.monotonic() + interval * n / of  # spread the users over a period
        while not self._stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                    return
                except TimeoutError:
                    pass
            next_at = max(next_at + interval, time.monotonic())
            self.requests.append(await self._one(client, user))

    async def _one(self, client: httpx.AsyncClient, user: str) -> Request:
        self.in_flight += 1
        start = time.monotonic()
        try:
            answer = await client.get(self.url + PATH)
        except httpx.HTTPError as exc:
            return Request(start, time.monotonic(), user, None, None,
                           error=f"{type(exc).__name__}: {exc}"[:200])
        finally:
            self.in_flight -= 1
        injected, error = classify(answer.status_code, answer.content)
        release = answer.headers.get("x-entrega-release")
        if error:
            error = f"{error} from {release or 'no release'}: {answer.text[:80]}"
        return Request(start, time.monotonic(), user, release, answer.status_code,
                       injected=injected, error=error)
