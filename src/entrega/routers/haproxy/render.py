"""The HAProxy configuration of one environment, rendered from a ``Routes`` table.

Design (why no route change needs a reload: weights, releases, instances, pins, cohorts):

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
- Cohorts change at run time, like weights: the configuration holds one fixed set of
  rules that reads the whole cohort rule from ``settings.map`` on each request (its
  release, header and header value, user header and cookie, app, percent; names and
  values hex-encoded so that any of them is one map word) and the allowlist from
  ``users.acl``. Entering a cohort step, widening it, naming another header or cookie and
  dropping the cohort are map and ACL updates, never a reload. Small Lua fetches
  (``entrega.lua``) do what a constant-argument fetch cannot: read the header and cookie
  whose names are in the map, and compute a user's bucket, murmur3 x86_32 of
  ``"<app>:<user id>"`` % 100 + 1, the same buckets as the embedded router. Without a
  cohort, ``txn.cohort`` is unset and none of them runs.
- ``settings.map`` keeps what ``get_routes`` needs to rebuild the table exactly (weights
  per release, the cohort rule, the preview release, the pin salt): the state lives in
  HAProxy only. It also keeps the digest of the configuration HAProxy read
  (``config_digest``): only a change of that (the listeners) needs a reload.

- Per-request log: every request a frontend routes is logged (``accesslog.LOG_FORMAT``:
  release, status, latency in us) into the ``entrega_requests`` ring, whose forwarder
  streams it to entrega's log sink (``routers/haproxy/sink.py``): the same per-release
  counters and latencies as the embedded router keeps.

Every file is rewritten from the whole table on each change, so a HAProxy restarted after
a crash comes back with the last routes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from entrega.dataplane.accesslog import LOG_FORMAT, START_RULE
from entrega.net import Endpoint
from entrega.routers.base import Routes, pin_tag, weight_slots

SLOTS = 8
PIN_COOKIE = "entrega-release"
DRAW_COOKIE = "entrega-pin"
_COOKIE_ATTRIBUTES = "Path=/; HttpOnly; SameSite=Lax"
#: release names HAProxy can carry in a map, a header and a cookie without escaping
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+:@-]{0,127}$")
_SERVER_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,60}$")
_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")

LUA = r"""-- entrega: cohort matching, with the rule read from settings.map on each request
-- (routers/haproxy/render.py); a user's bucket is murmur3 x86_32 of "<app>:<user>" % 100 + 1
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

local function unhex(s)
  return (s:gsub("..", function(pair) return string.char(tonumber(pair, 16)) end))
end

-- a setting of the cohort rule (hex in settings.map, copied into txn.c_<name>), or nil
local function setting(txn, name)
  local value = txn:get_var("txn.c_" .. name)
  if value == nil or value == "" then return nil end
  return unhex(value)
end

-- every value of request header `name` (whole lines, not split on commas)
local function header_values(txn, name)
  return txn.http:req_get_headers()[string.lower(name)]
end

-- "1" when the request carries the cohort's header (with its value, when one is set)
core.register_fetches("entrega_cohort_header", function(txn)
  local name = setting(txn, "header")
  if name == nil then return "0" end
  local values = header_values(txn, name)
  if values == nil then return "0" end
  local wanted = setting(txn, "header_value")
  if wanted == nil then return "1" end
  for _, value in pairs(values) do
    if value == wanted then return "1" end
  end
  return "0"
end)

-- the user id: the user header's last value when present (even empty), else the
-- cookie; "" without one (never nil: HAProxy would turn it into a boolean sample)
core.register_fetches("entrega_user", function(txn)
  local name = setting(txn, "user_header")
  if name ~= nil then
    local values = header_values(txn, name)
    if values ~= nil then
      local last = nil
      for i, _ in pairs(values) do
        if last == nil or i > last then last = i end
      end
      if last ~= nil then return values[last] end
    end
  end
  local cookie = setting(txn, "user_cookie")
  if cookie ~= nil then
    return txn.f:req_cook(cookie) or ""
  end
  return ""
end)

-- the user's bucket, 1..100 (0 without a user id)
core.register_fetches("entrega_bucket", function(txn)
  local user = txn:get_var("txn.user")
  if user == nil or user == "" then return 0 end
  return murmur3((setting(txn, "app") or "") .. ":" .. user) % 100 + 1
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


def settings(routes: Routes, *, config: str = "") -> dict[str, str]:
    """The ``settings.map`` entries (keys and values are single words); ``config`` is the
    ``config_digest`` of the configuration these tables go with."""
    out = {f"weight:{v}": str(w) for v, w in routes.weights.items()}
    if config:
        out["config"] = config
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
    lines += _cohort_rules(m("settings.map"), m("weights.map"), default_app=app)
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


#: the cohort rule's fields as ``settings.map`` keys, copied into ``txn.c_<field>``
_COHORT_FIELDS = ("header", "header_value", "user_header", "user_cookie")


def _cohort_rules(settings_map: Path, weights_map: Path, *, default_app: str) -> list[str]:
    """The frontend's cohort rules. They are the same text for every cohort (and for none):
    the rule itself is read from ``settings.map`` per request, so a cohort change is a map
    update. A cohort rule without ``app`` buckets users by the router's app."""
    app_default = f",{default_app.encode().hex()}" if default_app else ""
    lines = [
        f"    http-request set-var(txn.cohort) str(cohort),map({settings_map})",
        "    acl has_cohort var(txn.cohort) -m found",
    ]
    for key in _COHORT_FIELDS:
        lines.append(f"    http-request set-var(txn.c_{key}) str(cohort:{key}),"
                     f"map({settings_map}) if has_cohort")
    lines += [
        f"    http-request set-var(txn.c_app) str(cohort:app),"
        f"map({settings_map}{app_default}) if has_cohort",
        "    http-request set-var(txn.user) lua.entrega_user if has_cohort",
        "    acl has_user var(txn.user),length gt 0",
        "    acl cohort_header lua.entrega_cohort_header -m str 1",
        f"    http-request set-var(txn.percent) str(percent),map({settings_map},0) if has_user",
        "    http-request set-var(txn.bucket) lua.entrega_bucket if has_user",
        "    acl cohort_percent var(txn.bucket),sub(txn.percent) le 0",
        # `has_cohort` first: HAProxy evaluates a condition left to right and stops early,
        # so without a cohort no Lua runs
        "    http-request set-var(txn.release) var(txn.cohort) if !chosen has_cohort "
        "cohort_header",
        "    http-request set-var(txn.release) var(txn.cohort) if !chosen has_user cohort_user",
        "    http-request set-var(txn.release) var(txn.cohort) if !chosen has_user "
        "cohort_percent",
        # a user outside the cohort keeps the weights' entry of its bucket, as in the
        # embedded router: it stays on its release while that release's share grows
        f"    http-request set-var(txn.release) var(txn.bucket),sub(1),map({weights_map}) "
        "if !chosen has_user",
        "    acl by_user var(txn.bucket) -m found",
    ]
    return lines


def config_digest(files: Files, *, listen: str, preview_listen: str | None,
                  stats_listen: str | None, app: str) -> str:
    """A digest of what HAProxy reads only when it starts or reloads: the configuration
    without its servers (those change at run time). ``settings.map`` keeps the digest of
    the configuration the running HAProxy read, so a router whose listeners changed, or
    one adopted from an older entrega with other rules, is seen and reloaded once."""
    text = render_config(files, Routes(), listen=listen, preview_listen=preview_listen,
                         stats_listen=stats_listen, app=app, slots={})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def render_maps(routes: Routes, slots: dict[str, str], *, config: str = "") -> dict[str, str]:
    """File name -> content of every map and ACL file for ``routes`` (``config``: see
    ``config_digest``)."""
    def lines(pairs: list[tuple[str, str]]) -> str:
        return "".join(f"{k} {v}\n" for k, v in pairs)
    cohort = routes.cohort
    return {
        "weights.map": lines([(str(i), v) for i, v in enumerate(
            weight_slots(routes.weights, cohort.release if cohort else None))]),
        "backends.map": lines(sorted(slots.items())),
        "settings.map": lines(sorted(settings(routes, config=config).items())),
        "users.acl": "".join(f"{u}\n" for u in sorted(cohort.users)) if cohort else "",
        "entrega.lua": LUA,
    }
