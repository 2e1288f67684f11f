"""The HAProxy configuration of one environment, rendered from a ``Routes`` table.

Design (why it needs no reload for a weight change or a new release):

- Each routed release owns one of ``SLOTS`` fixed backends ``r0``..``r7``; its instances
  are the servers of that backend (``i<instance>``), balanced round-robin. ``backends.map``
  says which slot a release owns. A new release gets a free slot and its servers with
  ``add server`` (dynamic servers, HAProxy >= 2.5); a removed one's servers go to
  ``maint`` and are deleted with ``del server`` once their connections are gone.
- The split by weight is the embedded router's: ``weights.map`` has 100 entries, slot
  ``0..99`` -> release, the cohort's release first. A request takes ``rand(100)``'s entry;
  a user with an id takes the entry of its bucket - 1, so it stays on its release while
  that release's share grows. The map is replaced atomically (``prepare map`` /
  ``commit map``), so a weight change is one atomic switch, as in the embedded router.
- Pins, as in the embedded router: a client without an id is drawn a slot ``rand(100)``
  and keeps it in ``Set-Cookie: entrega-pin=<tag>.<slot>``, ``<tag>`` naming the table's
  ``pin_salt`` (the rollout). While the tag is the live one (``pin_tag`` in
  ``settings.map``), the client takes its slot's entry of ``weights.map``: one release
  per visitor, moving only to a release whose weight grows. A pin of another rollout is
  redrawn. ``entrega-release=<version>`` names the release served (feedback reads it) and
  is set again when it changes.
- Retries: a request whose connection fails, or that gets no response byte or no
  response in time, is retried once on another server of its release (``retry-on``,
  ``retries 1``, ``option redispatch``); only a connection failure retries a request
  other than GET/HEAD/OPTIONS (``disable-l7-retry``): its bytes may have reached the app.
- A request with two different Host values (HAProxy itself), or HTTP/1.1 without one,
  is refused with 400.
- Cohorts: the header, header value, user header and cookie and the app name are written
  into the configuration (changing them reloads HAProxy, hitless in master-worker mode);
  the cohort's release, its percent and the allowlist (``users.acl``) change at runtime.
  The user bucket is murmur3 x86_32 of ``"<app>:<user id>"`` % 100 + 1, computed by a
  small Lua converter (``entrega.lua``): the same buckets as the embedded router.
- ``settings.map`` keeps what ``get_routes`` needs to rebuild the table exactly (weights
  per release, the cohort rule, the preview release, the pin salt): the state lives in
  HAProxy only.

- Per-request log: every request a frontend routes is logged (``accesslog.LOG_FORMAT``:
  release, status, latency in us) into the ``entrega_requests`` ring, whose forwarder
  streams it to entrega's log sink (``routers/haproxy/sink.py``): the same per-release
  counters and latencies as the embedded router keeps.

Every file is rewritten from the whole table on each change, so a HAProxy restarted after
a crash comes back with the last routes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from entrega.dataplane.accesslog import LOG_FORMAT, START_RULE
from entrega.net import Endpoint
from entrega.routers.base import CohortRule, Routes, pin_tag, weight_slots

SLOTS = 8
PIN_COOKIE = "entrega-release"
DRAW_COOKIE = "entrega-pin"
_COOKIE_ATTRIBUTES = "Path=/; HttpOnly; SameSite=Lax"
#: release names HAProxy can carry in a map, a header and a cookie without escaping
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+:@-]{0,127}$")
_SERVER_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,60}$")
_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")

LUA = r"""-- entrega: the cohort bucket of a user, murmur3 x86_32 of "<app>:<user>" % 100 + 1
local function murmur3(s)
  local m = 0xffffffff
  local h = 0
  local len = #s
  local nblocks = len // 4
  local function mix(k)
    k = (k * 0xcc9e2d51) & m
    k = ((k << 15) | (k >> 17)) & m
    return (k * 0x1b873593) & m
  end
  for i = 0, nblocks - 1 do
    local a, b, c, d = string.byte(s, i * 4 + 1, i * 4 + 4)
    h = h ~ mix(a | (b << 8) | (c << 16) | (d << 24))
    h = ((h << 13) | (h >> 19)) & m
    h = (h * 5 + 0xe6546b64) & m
  end
  local tail = len & 3
  if tail > 0 then
    local k = 0
    for j = tail, 1, -1 do
      k = (k << 8) | string.byte(s, nblocks * 4 + j)
    end
    h = h ~ mix(k)
  end
  h = h ~ len
  h = h ~ (h >> 16)
  h = (h * 0x85ebca6b) & m
  h = h ~ (h >> 13)
  h = (h * 0xc2b2ae35) & m
  h = h ~ (h >> 16)
  return h
end

core.register_converters("entrega_bucket", function(user, app)
  return murmur3(app .. ":" .. user) % 100 + 1
end)
"""


@dataclass(frozen=True)
class Files:
    """Where one router's HAProxy files live (all in one directory)."""

    dir: Path
    socket: Path
    #: the log sink's socket, where HAProxy's ring sends a line per request (None: no log)
    logs: Path | None = None

    @property
    def config(self) -> Path:
        return self.dir / "haproxy.cfg"

    @property
    def pidfile(self) -> Path:
        return self.dir / "haproxy.pid"

    def map(self, name: str) -> Path:
        return self.dir / name


def check_version(version: str) -> None:
    if not _VERSION.match(version):
        raise ValueError(f"release name {version!r}: the haproxy router needs letters, digits "
                         "and . _ + : @ - only (it goes into a map, a header and a cookie)")


def server_name(endpoint: Endpoint) -> str:
    """``i<instance>``, or ``x<hex of instance>`` when the name has other characters."""
    if _SERVER_SAFE.match(endpoint.instance):
        return "i" + endpoint.instance
    return "x" + endpoint.instance.encode().hex()


def instance_of(server: str) -> str:
    if server.startswith("x"):
        return bytes.fromhex(server[1:]).decode()
    return server[1:]


def cohort_shape(cohort: CohortRule | None) -> tuple[str, ...]:
    """What of a cohort rule is written into the configuration (a change means a reload)."""
    if cohort is None:
        return ()
    return (cohort.header or "", "" if cohort.header_value is None else "=" + cohort.header_value,
            cohort.user_header or "", cohort.user_cookie or "", cohort.app)


def settings(routes: Routes) -> dict[str, str]:
    """The ``settings.map`` entries (keys and values are single words)."""
    out = {f"weight:{v}": str(w) for v, w in routes.weights.items()}
    if routes.preview:
        out["preview"] = routes.preview
    out["pin_tag"] = pin_tag(routes.pin_salt)
    if routes.pin_salt:
        out["pin_salt"] = routes.pin_salt.encode().hex()  # any string, as one word
    cohort = routes.cohort
    if cohort is not None:
        out["cohort"] = cohort.release
        out["percent"] = str(cohort.percent)
        for key in ("header", "header_value", "user_header", "user_cookie", "app"):
            value = getattr(cohort, key)
            if value is not None and value != "":
                out[f"cohort:{key}"] = value.encode().hex()  # any bytes, as one word
    return out


def validate(routes: Routes, default_app: str) -> None:
    """What HAProxy cannot express beyond the rules of every table (``Routes.validate``):
    names go into maps, headers and cookies, so they are restricted to safe characters."""
    for version in routes.backends:
        check_version(version)
    cohort = routes.cohort
    if cohort is not None:
        for name in (cohort.header, cohort.user_header, cohort.user_cookie):
            if name is not None and not _HEADER.match(name):
                raise ValueError(f"cohort header or cookie name {name!r} is not a token")
        for value in (cohort.header_value, *cohort.users, cohort.app or default_app):
            if value is not None and not value.isprintable() or '"' in (value or ""):
                raise ValueError(f"cohort value {value!r} must be printable, without quotes")


#: HAProxy's buffer of log lines not yet read by the sink: about 80,000 requests' lines, so
#: a sink that is late, or restarting, loses none (HAProxy never waits for it)
LOG_RING = "entrega_requests"
LOG_RING_BYTES = 4 * 1024 * 1024


def _log_ring(sink: Path) -> list[str]:
    return [
        f"ring {LOG_RING}",
        "    format raw",
        "    maxlen 1024",
        f"    size {LOG_RING_BYTES}",
        "    timeout connect 5s",
        "    timeout server 10s",
        f"    server sink unix@{sink}",
        "",
    ]


#: RFC 9112 3.2: HAProxy itself refuses two different Host values (400) and merges two
#: equal ones, but passes an HTTP/1.1 request without Host on; and L7 retries only for the
#: methods safe to send twice
_REQUEST_CHECKS = (
    "    http-request deny deny_status 400 if HTTP_1.1 !{ req.hdr(host) -m found }",
    "    http-request disable-l7-retry unless METH_GET || METH_OPTIONS",
)


def render_config(files: Files, routes: Routes, *, listen: str, preview_listen: str | None,
                  stats_listen: str | None, app: str, slots: dict[str, str]) -> str:
    """The whole haproxy.cfg; ``slots`` is release -> backend (``r0``..)."""
    m = files.map
    lines = [
        "# Written by entrega (routers/haproxy): edits are overwritten on the next change.",
        "global",
        "    maxconn 4096",
        f"    stats socket {files.socket} mode 600 level admin expose-fd listeners",
        "    stats timeout 30s",
        f"    lua-load {m('entrega.lua')}",
        "    hard-stop-after 60s",
        *([f"    log ring@{LOG_RING} len 1024 format raw local0"] if files.logs else []),
        "",
        *(_log_ring(files.logs) if files.logs else []),
        "defaults",
        "    mode http",
        # one line per finished request, to the log sink (dataplane/accesslog.py)
        *(["    log global", f'    log-format "{LOG_FORMAT}"'] if files.logs else []),
        "    timeout connect 5s",
        "    timeout client 75s",
        "    timeout server 60s",
        "    timeout http-request 30s",
        "    timeout http-keep-alive 75s",
        "    option http-keep-alive",
        "    option forwardfor",
        "    option redispatch",
        "    retries 1",
        "    retry-on conn-failure empty-response response-timeout",
        "    http-reuse safe",
        "",
        "frontend main",
        f"    bind {listen}",
        f"    {START_RULE}",
        *_REQUEST_CHECKS,
        "    acl chosen var(txn.release) -m found",
        # declared even without a cohort so that the file is loaded and runtime-updatable
        f"    acl cohort_user var(txn.user) -m str -f {m('users.acl')}",
        f"    http-request set-var(txn.loaded) str(preview),map({m('settings.map')}) if FALSE",
    ]
    cohort = routes.cohort
    if cohort is not None:
        lines.append(f"    http-request set-var(txn.cohort) str(cohort),map({m('settings.map')})")
        matchers: list[str] = []
        if cohort.header:
            if cohort.header_value is None:
                lines.append(f"    acl cohort_header req.hdr({cohort.header}) -m found")
            else:
                lines.append(f'    acl cohort_header req.hdr({cohort.header}) -m str '
                             f'"{cohort.header_value}"')
            matchers.append("cohort_header")
        if cohort.user_header or cohort.user_cookie:
            if cohort.user_header:
                lines.append(f"    http-request set-var(txn.user) req.hdr({cohort.user_header})")
            if cohort.user_cookie:
                lines.append(f"    http-request set-var(txn.user) req.cook({cohort.user_cookie})"
                             " if !{ var(txn.user) -m found }")
            lines += [
                "    acl has_user var(txn.user),length gt 0",
                f"    http-request set-var(txn.percent) str(percent),map({m('settings.map')},0)",
                f"    http-request set-var(txn.bucket) var(txn.user),"
                f"lua.entrega_bucket({cohort.app or app}) if has_user",
                "    acl cohort_percent var(txn.bucket),sub(txn.percent) le 0",
            ]
            matchers += ["has_user cohort_user", "has_user cohort_percent"]
        for matcher in matchers:
            lines.append(f"    http-request set-var(txn.release) var(txn.cohort) if !chosen "
                         f"{{ var(txn.cohort) -m found }} {matcher}")
        if cohort.user_header or cohort.user_cookie:
            lines.append(f"    http-request set-var(txn.release) var(txn.bucket),sub(1),"
                         f"map({m('weights.map')}) if !chosen has_user")
            lines.append("    acl by_user var(txn.bucket) -m found")
        else:
            lines.append("    acl by_user always_false")
    else:
        lines.append("    acl by_user always_false")
    lines += [
        # a visitor by its draw in this rollout (its pin's tag is the live one)...
        f"    http-request set-var(txn.tag) str(pin_tag),map({m('settings.map')})",
        f"    acl pin_now req.cook({DRAW_COOKIE}),field(1,.),strcmp(txn.tag) eq 0",
        f"    http-request set-var(txn.seen) req.cook({PIN_COOKIE})",
        "    http-request set-var(txn.pinned) bool(1) if !chosen !by_user pin_now",
        f"    http-request set-var(txn.slot) req.cook({DRAW_COOKIE}),field(2,.) "
        "if !chosen !by_user pin_now",
        f"    http-request set-var(txn.release) var(txn.slot),map({m('weights.map')}) "
        "if !chosen !by_user pin_now",
        # ...or drawn now (no pin, another rollout's, or a forged one)
        "    http-request set-var(txn.pin) bool(1) if !chosen !by_user",
        "    http-request set-var(txn.slot) rand(100) if !chosen !by_user",
        f"    http-request set-var(txn.release) var(txn.slot),map({m('weights.map')}) "
        "if !chosen !by_user",
        f"    use_backend %[var(txn.release),map({m('backends.map')})] "
        f"if {{ var(txn.release),map({m('backends.map')}) -m found }}",
        "    default_backend no_release",
        "    http-response set-header X-Entrega-Release %[var(txn.release)] if "
        "{ var(txn.release) -m found }",
        f'    http-response add-header Set-Cookie "{PIN_COOKIE}=%[var(txn.release)]; '
        f'{_COOKIE_ATTRIBUTES}" if {{ var(txn.pin) -m bool }} {{ var(txn.release) -m found }}',
        f'    http-response add-header Set-Cookie "{DRAW_COOKIE}=%[var(txn.tag)].%[var(txn.slot)]; '
        f'{_COOKIE_ATTRIBUTES}" if {{ var(txn.pin) -m bool }} {{ var(txn.release) -m found }}',
        # a pinned visitor whose release changed (its slot moved to the canary): say so
        f'    http-response add-header Set-Cookie "{PIN_COOKIE}=%[var(txn.release)]; '
        f'{_COOKIE_ATTRIBUTES}" if {{ var(txn.pinned) -m bool }} !{{ var(txn.pin) -m bool }} '
        "!{ var(txn.release),strcmp(txn.seen) eq 0 }",
        "",
    ]
    if preview_listen:
        lines += [
            "frontend preview",
            f"    bind {preview_listen}",
            f"    {START_RULE}",
            *_REQUEST_CHECKS,
            f"    http-request set-var(txn.release) str(preview),map({m('settings.map')})",
            f"    use_backend %[var(txn.release),map({m('backends.map')})] "
            f"if {{ var(txn.release),map({m('backends.map')}) -m found }}",
            "    default_backend no_release",
            "    http-response set-header X-Entrega-Release %[var(txn.release)] if "
            "{ var(txn.release) -m found }",
            "",
        ]
    if stats_listen:
        lines += [
            "frontend stats",
            f"    bind {stats_listen}",
            "    no log",
            "    http-request use-service prometheus-exporter if { path /metrics }",
            "    stats enable",
            "    stats uri /stats",
            "",
        ]
    lines += [
        "backend no_release",
        '    http-request return status 503 content-type "text/plain" '
        'string "no release is routable on this listener"',
        "",
    ]
    by_slot = {slot: version for version, slot in slots.items()}
    for i in range(SLOTS):
        slot = f"r{i}"
        lines += [f"backend {slot}", "    balance roundrobin"]
        version = by_slot.get(slot)
        if version is not None:
            for endpoint in routes.backends.get(version, ()):
                lines.append(f"    server {server_name(endpoint)} {endpoint.address}")
        lines.append("")
    return "\n".join(lines)


def render_maps(routes: Routes, slots: dict[str, str]) -> dict[str, str]:
    """File name -> content of every map and ACL file for ``routes``."""
    def lines(pairs: list[tuple[str, str]]) -> str:
        return "".join(f"{k} {v}\n" for k, v in pairs)
    cohort = routes.cohort
    return {
        "weights.map": lines([(str(i), v) for i, v in enumerate(
            weight_slots(routes.weights, cohort.release if cohort else None))]),
        "backends.map": lines(sorted(slots.items())),
        "settings.map": lines(sorted(settings(routes).items())),
        "users.acl": "".join(f"{u}\n" for u in sorted(cohort.users)) if cohort else "",
        "entrega.lua": LUA,
    }
