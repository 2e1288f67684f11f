"""The users of the fleet benchmark (bench/fleet.py): steady traffic while a delivery runs.

A process of its own, so that its requests neither wait for the controller running in the
benchmark's process nor slow it down (one GIL would couple the two). It sends ``GET /``
to the URLs it is given, round-robin, at most ``--rps`` requests a second spread over
``--users`` threads, each request with a timeout, until a line (or end of file) arrives on
its standard input; then it prints one JSON object::

    {"requests": N, "failed_requests": N, "versions": {"v2": N, ...}, "errors": [...]}

A request failed when it got no answer (refused, reset, timed out) or an answer other
than 200. ``errors`` keeps the first few reasons, to tell a benchmark's reader why.

    python -m bench.fleet_load [--rps 100] [--users 4] URL [URL...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
from collections import Counter

import httpx

REQUEST_TIMEOUT_S = 5.0
KEPT_ERRORS = 10


class Traffic:
    """Counters shared by the user threads (one lock: a few hundred requests a second)."""

    def __init__(self, urls: list[str]) -> None:
        self._next_url = itertools.cycle(urls)
        self._lock = threading.Lock()
        self.requests = 0
        self.failed = 0
        self.versions: Counter[str] = Counter()
        self.errors: list[str] = []
        self.stopped = threading.Event()

    def url(self) -> str:
        with self._lock:
            return next(self._next_url)

    def record(self, *, version: str | None, error: str) -> None:
        with self._lock:
            self.requests += 1
            if version is not None:
                self.versions[version] += 1
            if error:
                self.failed += 1
                if len(self.errors) < KEPT_ERRORS:
                    self.errors.append(error)


def user(traffic: Traffic, every_s: float) -> None:
    """One user: a request every ``every_s`` seconds (later when answers are slower)."""
    with httpx.Client(trust_env=False, timeout=REQUEST_TIMEOUT_S) as client:
        due = time.monotonic()
        while not traffic.stopped.is_set():
            url = traffic.url()
            try:
                response = client.get(url)
            except httpx.HTTPError as exc:
                traffic.record(version=None, error=f"{url}: no answer ({exc})")
            else:
                if response.status_code == 200:
                    traffic.record(version=response.json().get("version"), error="")
                else:
                    traffic.record(version=None, error=f"{url}: {response.status_code} "
                                                       f"{response.text[:100]!r}")
            due = max(due + every_s, time.monotonic())
            traffic.stopped.wait(max(0.0, due - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rps", type=float, default=100.0,
                        help="requests a second at most, all users together")
    parser.add_argument("--users", type=int, default=4, help="concurrent users")
    parser.add_argument("urls", nargs="+", help="where to send GET / (round-robin)")
    args = parser.parse_args(argv)
    traffic = Traffic(args.urls)
    threads = [threading.Thread(target=user, args=(traffic, args.users / args.rps),
                                daemon=True) for _ in range(args.users)]
    for thread in threads:
        thread.start()
    print("started", flush=True)
    sys.stdin.readline()
    traffic.stopped.set()
    for thread in threads:
        thread.join(timeout=REQUEST_TIMEOUT_S + 1)
    print(json.dumps({"requests": traffic.requests, "failed_requests": traffic.failed,
                      "versions": dict(traffic.versions), "errors": traffic.errors}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
