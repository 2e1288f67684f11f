"""Taking feedback in: whose release it is about, who sent it (hashed), and how often.

The release comes from, in order: the body's ``version`` (a client that knows it), the
``X-Entrega-Release`` header (added by the embedded router on ``/.entrega/*`` from its pin
cookie), the ``entrega-release`` cookie (a browser posting straight to the server). A name
that is not a release of the app is kept as ``claimed_version`` and the feedback filed
under ``unknown``: a forged cookie cannot invent releases, and nothing is dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from entrega.errors import RateLimited
from entrega.feedback.model import UNKNOWN, FeedbackIn
from entrega.feedback.ratelimit import TokenBuckets
from entrega.names import is_version
from entrega.store.insights_repository import InsightsRepository
from entrega.store.models import Feedback
from entrega.store.repository import Repository

RELEASE_HEADER = "x-entrega-release"
ENVIRONMENT_HEADER = "x-entrega-environment"
RELEASE_COOKIE = "entrega-release"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class FeedbackSettings:
    #: Largest accepted body; a rating with a long comment is well under 4 KiB.
    max_body_bytes: int = 8 * 1024
    #: Sustained submissions per client per minute; a person rates a release once or twice.
    rate_per_minute: float = 10.0
    #: Submissions a client may send at once before the rate applies.
    burst: int = 5
    #: Origins allowed to post across origins ("*": any, without credentials). The widget
    #: posts to its own page's origin through the router and needs none.
    cors_origins: tuple[str, ...] = ("*",)
    #: Proxies (addresses or networks) in front of the server whose X-Forwarded-For is
    #: believed. None by default: any local process can connect from loopback, so being on
    #: loopback proves nothing. The embedded router is believed through its key instead.
    trusted_proxies: tuple[str, ...] = ()


def parse_proxies(entries: Sequence[str]) -> tuple[IPNetwork, ...]:
    """``trusted_proxies`` entries as networks (an address is a network of one)."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"trusted proxy {entry!r}: expected an IP address or network "
                             "(like 10.0.0.5 or 10.0.0.0/24)") from None
    return tuple(networks)


def load_or_create_key(path: Path) -> bytes:
    """The server's key for hashing client addresses (created once, mode 0600)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key


class FeedbackIntake:
    def __init__(self, *, app: str, repo: Repository, insights: InsightsRepository,
                 key: bytes, settings: FeedbackSettings | None = None,
                 router_key: bytes = b"", clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.repo = repo
        self.insights = insights
        self.key = key
        self.settings = settings or FeedbackSettings()
        #: what the embedded routers send as ``X-Entrega-Router-Key`` (dataplane/proof.py)
        self.router_key = router_key
        self.trusted_proxies = parse_proxies(self.settings.trusted_proxies)
        self.clock = clock
        self.buckets = TokenBuckets(rate_per_s=self.settings.rate_per_minute / 60,
                                    burst=self.settings.burst)

    def client_of(self, peer: str | None, forwarded_for: str | None,
                  router_proofs: Sequence[str] = ()) -> str:
        """A keyed hash of the client's address.

        The peer's address, unless the peer is a proxy we believe: an embedded router that
        sent its key, or a configured ``trusted_proxies`` entry. Then the hop that proxy
        appended to X-Forwarded-For, and so on leftwards while the hop is itself a trusted
        proxy. Hops a client wrote itself are never reached.
        """
        address = peer or "?"
        believed = self._from_router(router_proofs) or self._trusted(address)
        hops = [h.strip() for h in (forwarded_for or "").split(",") if h.strip()]
        while believed and hops:
            address = hops.pop()
            believed = self._trusted(address)
        return hmac.new(self.key, address.encode(), hashlib.sha256).hexdigest()[:24]

    def _from_router(self, proofs: Sequence[str]) -> bool:
        # Every value is checked: a visitor's own header of that name, forwarded beside the
        # router's, must neither count nor hide the real one.
        key = self.router_key
        return bool(key) and any(hmac.compare_digest(p.strip().encode(), key) for p in proofs)

    def _trusted(self, address: str) -> bool:
        if not self.trusted_proxies:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_proxies)

    def admit(self, client: str) -> None:
        """Take one submission from the client's bucket, or raise :class:`RateLimited`."""
        wait_s = self.buckets.take(client, now=self.clock())
        if wait_s > 0:
            raise RateLimited(wait_s)

    def resolve(self, body: FeedbackIn, *, header_release: str | None,
                cookie_release: str | None, header_environment: str | None,
                ) -> tuple[str, str | None, str | None]:
        """(version or ``unknown``, environment or None, the claimed name if unknown)."""
        claimed = body.version or header_release or \
            (unquote(cookie_release) if cookie_release else None)
        if claimed and (not is_version(claimed) or self.repo.release(self.app, claimed) is None):
            return UNKNOWN, self._environment(body.environment or header_environment, None), \
                claimed[:128]
        environment = self._environment(body.environment or header_environment, claimed)
        return (claimed or UNKNOWN), environment, None

    def _environment(self, named: str | None, version: str | None) -> str | None:
        environments = self.repo.environments(self.app)
        if named:
            return named if any(e.name == named for e in environments) else None
        if version is None:
            return None
        # The environment nearest production that serves the release now.
        for env in reversed(environments):
            active = self.repo.active_rollout(self.app, env.name)
            if env.current_version == version or (active and active.version == version):
                return env.name
        return None

    def submit(self, body: FeedbackIn, *, client: str, header_release: str | None = None,
               cookie_release: str | None = None,
               header_environment: str | None = None) -> Feedback:
        """Rate-limit, attribute and store one submission."""
        self.admit(client)
        version, environment, claimed = self.resolve(
            body, header_release=header_release, cookie_release=cookie_release,
            header_environment=header_environment)
        return self.insights.add_feedback(
            app=self.app, version=version, environment=environment, claimed_version=claimed,
            rating=body.rating, comment=body.comment, user_id=body.user_id, tags=body.tags,
            client=client, at=self.clock())
