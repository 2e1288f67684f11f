"""Token buckets per client, in memory: a public endpoint must not be a way to fill the store.

A bucket holds ``burst`` tokens and refills at ``rate_per_s``; each request takes one.
Buckets live in the server process (one writer owns the store, so one limiter suffices);
a restart forgets them, which only ever lets a client in early. The table is bounded by
``max_clients``: the least recently seen client is forgotten first.
"""

from __future__ import annotations

import math
from collections import OrderedDict


class TokenBuckets:
    def __init__(self, *, rate_per_s: float, burst: int, max_clients: int = 10_000) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, *, now: float) -> float:
        """Take a token for ``key``; 0.0 if granted, else the seconds until one is free."""
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate_per_s)
        if tokens >= 1.0:
            self._remember(key, (tokens - 1.0, now))
            return 0.0
        self._remember(key, (tokens, now))
        return math.ceil((1.0 - tokens) / self.rate_per_s * 1000) / 1000

    def _remember(self, key: str, value: tuple[float, float]) -> None:
        self._buckets[key] = value
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
