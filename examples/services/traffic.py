#!/usr/bin/env python3
"""Simulated users for the example services: steady requests against given URLs, counted.

A delivery is only as good as what its users saw, so the services demo sends traffic the
whole time through the routers (the web front's and the API's) and counts every answer per
(url, status), and every request that got no answer at all (a refused or broken connection,
a time-out) per url. Those counts are the demo's evidence: a rollout that drops or breaks
requests shows in them whatever entrega's own metrics say.

Use it from Python::

    traffic = Traffic(["http://127.0.0.1:8080/", "http://127.0.0.1:8081/api/items"],
                      users=4, rps=80).start()
    ...
    counts = traffic.stop()          # every user finished its request in hand, then ended
    counts.statuses[("http://127.0.0.1:8080/", 502)]

or as a script: ``python traffic.py URL [URL...] --rps 80 --duration-s 10`` prints the
counts as one JSON line.

Request ``i`` (counted over all users) goes to ``urls[i % len(urls)]``, so the URLs share
the load evenly and a bounded run (``max_requests``) has an exact split. Every request is a
new anonymous visitor (no cookies kept): the router pins a visitor to the release it first
got, and one cookie jar shared by every request would be a single user. The run is bounded
in time even if nobody calls ``stop`` (``max_duration_s``), so no load outlives its test.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

#: How many distinct failure descriptions are kept (the first ones), each with its count:
#: enough to see what went wrong without a long run's memory growing with every failure.
KEPT_FAILURE_REASONS = 50


@dataclass(frozen=True)
class TrafficCounts:
    """A snapshot of what the simulated users got so far."""

    #: answers per (url, HTTP status)
    statuses: dict[tuple[str, int], int] = field(default_factory=dict)
    #: requests per url that got no answer: refused or broken connections, time-outs
    failures: dict[str, int] = field(default_factory=dict)
    #: the first few distinct failures, said in words ("url: what happened"), with counts
    failure_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        """Every request sent and finished, answered or not."""
        return sum(self.statuses.values()) + sum(self.failures.values())

    def answered(self, url: str | None = None, *, status: int | None = None) -> int:
        """Answers (to ``url``, with ``status``; each ``None`` means any)."""
        return sum(n for (u, s), n in self.statuses.items()
                   if (url is None or u == url) and (status is None or s == status))

    def errors(self, url: str | None = None) -> int:
        """Requests (to ``url``, or any) that failed: a 5xx answer or no answer at all."""
        server_errors = sum(n for (u, s), n in self.statuses.items()
                            if s >= 500 and (url is None or u == url))
        return server_errors + sum(n for u, n in self.failures.items()
                                   if url is None or u == url)

    def since(self, earlier: TrafficCounts) -> TrafficCounts:
        """What happened between ``earlier`` (a snapshot of the same traffic) and this one:
        how the demo tells one delivery's requests and failures from the others'."""
        statuses = {key: n - earlier.statuses.get(key, 0) for key, n in self.statuses.items()}
        failures = {url: n - earlier.failures.get(url, 0) for url, n in self.failures.items()}
        reasons = {text: n - earlier.failure_reasons.get(text, 0)
                   for text, n in self.failure_reasons.items()}
        return TrafficCounts({k: n for k, n in statuses.items() if n},
                             {k: n for k, n in failures.items() if n},
                             {k: n for k, n in reasons.items() if n})

    def to_json(self) -> dict[str, object]:
        by_url: dict[str, dict[str, int]] = {}
        for (url, status), n in sorted(self.statuses.items()):
            by_url.setdefault(url, {})[str(status)] = n
        return {"requests": self.requests, "errors": self.errors(), "statuses": by_url,
                "failures": dict(sorted(self.failures.items())),
                "failure_reasons": dict(self.failure_reasons)}


def describe_failure(exc: httpx.HTTPError) -> str:
    """What happened to a request without an answer, in words a person reads in a report."""
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time"
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect ({exc})" if str(exc) else "could not connect"
    return f"the connection broke ({exc})" if str(exc) else "the connection broke"


class Traffic:
    """``users`` threads sending ``rps`` requests per second in all (``None``: as fast as
    answers come) to ``urls`` until ``stop()``, ``max_requests`` or ``max_duration_s``."""

    def __init__(self, urls: Sequence[str], *, users: int = 4, rps: float | None = 50.0,
                 timeout_s: float = 5.0, max_requests: int | None = None,
                 max_duration_s: float = 600.0) -> None:
        if not urls:
            raise ValueError("traffic needs at least one URL to send requests to")
        if users < 1 or (rps is not None and rps <= 0):
            raise ValueError(f"traffic needs users >= 1 and rps > 0, got users={users}, "
                             f"rps={rps}")
        self.urls = list(urls)
        self.users = users
        self.rps = rps
        self.timeout_s = timeout_s
        self.max_requests = max_requests
        self.max_duration_s = max_duration_s
        self._lock = threading.Lock()
        self._sent = 0
        self._statuses: Counter[tuple[str, int]] = Counter()
        self._failures: Counter[str] = Counter()
        self._reasons: Counter[str] = Counter()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Traffic:
        """Start the users (once); returns self so ``Traffic(...).start()`` reads well."""
        if self._threads:
            raise RuntimeError("this traffic has already started")
        ends_at = time.monotonic() + self.max_duration_s
        self._threads = [threading.Thread(target=self._user, args=(n, ends_at),
                                          name=f"traffic-user-{n}", daemon=True)
                         for n in range(self.users)]
        for thread in self._threads:
            thread.start()
        return self

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until every user has ended by itself (``max_requests`` or
        ``max_duration_s`` reached); False if ``timeout_s`` passed first."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def stop(self, timeout_s: float | None = None) -> TrafficCounts:
        """No new requests; wait for the ones in flight (each ends within the request
        time-out) and return the final counts. Idempotent."""
        self._stopping.set()
        self.wait(self.timeout_s + 5 if timeout_s is None else timeout_s)
        return self.counts()

    def counts(self) -> TrafficCounts:
        with self._lock:
            return TrafficCounts(dict(self._statuses), dict(self._failures),
                                 dict(self._reasons))

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _next_url(self) -> str | None:
        """The URL of the next request, or None once ``max_requests`` have been sent."""
        with self._lock:
            if self.max_requests is not None and self._sent >= self.max_requests:
                return None
            url = self.urls[self._sent % len(self.urls)]
            self._sent += 1
            return url

    def _user(self, n: int, ends_at: float) -> None:
        interval_s = 0.0 if self.rps is None else self.users / self.rps
        # Users start spread over one interval, so the load is steady rather than in bursts.
        next_at = time.monotonic() + n * interval_s / self.users
        with httpx.Client(timeout=self.timeout_s, trust_env=False) as client:
            while not self._stopping.is_set():
                if self._stopping.wait(max(0.0, next_at - time.monotonic())):
                    break
                if time.monotonic() >= ends_at:
                    break
                next_at += interval_s
                url = self._next_url()
                if url is None:
                    break
                client.cookies.clear()  # a new anonymous visitor each time
                try:
                    response = client.get(url)
                except httpx.HTTPError as exc:
                    self._count_failure(url, describe_failure(exc))
                    continue
                with self._lock:
                    self._statuses[(url, response.status_code)] += 1

    def _count_failure(self, url: str, reason: str) -> None:
        with self._lock:
            self._failures[url] += 1
            described = f"{url}: {reason}"
            if described in self._reasons or len(self._reasons) < KEPT_FAILURE_REASONS:
                self._reasons[described] += 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Simulated users against the example "
                                     "services; prints the counts as one JSON line.")
    parser.add_argument("urls", nargs="+", metavar="URL")
    parser.add_argument("--users", type=int, default=4, help="concurrent users (threads)")
    parser.add_argument("--rps", type=float, default=50.0,
                        help="requests per second over all users")
    parser.add_argument("--duration-s", type=float, default=10.0, help="how long to run")
    parser.add_argument("--requests", type=int, default=None,
                        help="stop after this many requests")
    parser.add_argument("--timeout-s", type=float, default=5.0, help="per request")
    args = parser.parse_args(argv)
    try:
        traffic = Traffic(args.urls, users=args.users, rps=args.rps, timeout_s=args.timeout_s,
                          max_requests=args.requests, max_duration_s=args.duration_s)
    except ValueError as exc:
        parser.error(str(exc))
    traffic.start()
    try:
        traffic.wait()
    except KeyboardInterrupt:
        pass
    print(json.dumps(traffic.stop().to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
