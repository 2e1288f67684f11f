"""What a changed entrega.yaml changes, and what the server runs once it is reloaded.

Pure: two validated configs in, a classified list of changes (or a config) out. The
server (``controller/reload.py``) does the I/O: reading the file, swapping the running
config, restarting a router.

Every change is one of three kinds, by where it is read:

- ``live``: read afresh at each use, so it applies at once: an environment's strategy,
  analysis, verification and gate, the notifications, the API's tokens and limits
  (``auth``), retention. A rollout in progress keeps the steps it started with (its spec is
  stored with it: step 3 of a changed list would mean something else); the metric
  definitions, verification checks and gate apply to its next check.
- ``data_plane``: an environment's router (its addresses, its kind, its workers...). A
  router is a process of its own started with these settings, so a change needs a new
  router process. It waits until the environment has no rollout in progress (a router
  swapped under an analysis window would spoil it), then the new router starts beside the
  old one, which drains its requests in flight.
- ``server``: the rest (the server's own address, the store, the state directory, how an
  instance runs, the targets, the list of environments, feedback and insights settings):
  reported as "restart the server to apply"; until then the server keeps the running
  values, whatever the file says.

Anything not listed as live or data plane is a server change: a new setting is safe by
default (it waits for a restart) rather than half-applied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from entrega.config import DEFAULT_METRICS, Config, EnvironmentConfig, RouterConfig
from entrega.errors import ConfigError


class ChangeKind(StrEnum):
    LIVE = "live"
    DATA_PLANE = "data_plane"
    SERVER = "server"


#: Top-level sections read afresh at each use.
LIVE_SECTIONS = frozenset({"notify", "auth", "retention"})
#: Sections of one environment read afresh at each use.
LIVE_ENVIRONMENT_SECTIONS = frozenset({"strategy", "analysis", "verify", "gate"})
#: Sections whose values are not shown in a change (tokens' digests, webhook URLs, which
#: often carry a secret in their path).
HIDDEN_SECTIONS = frozenset({"auth", "notify"})


@dataclass(frozen=True)
class ConfigChange:
    """One setting that differs. ``before``/``after`` are its values as JSON text (None:
    absent, or hidden for secrets); ``environment`` names the environment it belongs to."""

    path: str
    kind: ChangeKind
    environment: str | None = None
    before: str | None = None
    after: str | None = None

    def describe(self) -> str:
        if self.before is None and self.after is None:
            return f"{self.path} changed"
        return f"{self.path}: {self.before or '(unset)'} -> {self.after or '(unset)'}"


def diff_configs(running: Config, new: Config) -> list[ConfigChange]:
    """Every setting ``new`` changes from ``running``, classified (module docstring)."""
    old_data, new_data = _dump(running), _dump(new)
    changes: list[ConfigChange] = []
    for key in _keys(old_data, new_data):
        if key == "environments":
            continue
        kind = ChangeKind.LIVE if key in LIVE_SECTIONS else ChangeKind.SERVER
        changes += _leaves(key, old_data.get(key), new_data.get(key), kind=kind,
                           hidden=key in HIDDEN_SECTIONS)
    old_envs = {e["name"]: e for e in old_data["environments"]}
    new_envs = {e["name"]: e for e in new_data["environments"]}
    if list(old_envs) != list(new_envs):
        changes.append(ConfigChange(
            "environments", ChangeKind.SERVER, before=", ".join(old_envs),
            after=", ".join(new_envs)))
    for name, old_env in old_envs.items():
        new_env = new_envs.get(name)
        if new_env is None:
            continue
        for key in _keys(old_env, new_env):
            if key in LIVE_ENVIRONMENT_SECTIONS:
                kind = ChangeKind.LIVE
            elif key == "router":
                kind = ChangeKind.DATA_PLANE
            else:
                kind = ChangeKind.SERVER
            changes += _leaves(f"environments[{name}].{key}", old_env.get(key),
                               new_env.get(key), kind=kind, environment=name)
    return changes


def running_config(running: Config, new: Config, *, shown_as: str) -> Config:
    """The config the server runs after reloading ``new``: its live settings, and the
    running values of everything else (data-plane and server changes wait).

    Validated again as a whole: the mix must hold too (say the file turns tokens off while
    it moves the server to loopback, which only a restart applies: the running server
    would be open beyond loopback). Raises ConfigError naming the problem.
    """
    fresh = {e.name: e for e in new.environments}
    environments = [
        fresh[env.name].model_copy(update={"router": env.router, "target": env.target})
        if env.name in fresh else env
        for env in running.environments]
    mixed = running.model_copy(update={
        "environments": environments, "notify": new.notify, "auth": new.auth,
        "retention": new.retention})
    return _revalidated(mixed, shown_as=shown_as)


def with_router(config: Config, environment: str, router: RouterConfig) -> Config:
    """``config`` with ``environment`` on ``router`` (a data-plane change applied)."""
    environments = [e.model_copy(update={"router": router}) if e.name == environment else e
                    for e in config.environments]
    return config.model_copy(update={"environments": environments})


def pending_routers(running: Config, new: Config) -> dict[str, RouterConfig]:
    """Per environment (of both), the router ``new`` asks for where it differs from the
    running one."""
    fresh = {e.name: e for e in new.environments}
    return {env.name: fresh[env.name].router for env in running.environments
            if env.name in fresh and fresh[env.name].router != env.router}


def metrics_in_use_problem(env: EnvironmentConfig, used: set[str]) -> str | None:
    """Why ``env`` cannot take over while a rollout uses the metrics ``used``, or None."""
    missing = sorted(m for m in used if m not in env.analysis and m not in DEFAULT_METRICS)
    if not missing:
        return None
    return (f"environment {env.name!r}: the rollout in progress analyses "
            f"{', '.join(missing)}, which the new file no longer defines under analysis:")


# -- helpers -------------------------------------------------------------------------------


def _dump(config: Config) -> dict[str, Any]:
    return config.model_dump(mode="json", by_alias=True)


def _keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys([*old, *new]))


def _leaves(path: str, old: Any, new: Any, *, kind: ChangeKind,
            environment: str | None = None, hidden: bool = False) -> list[ConfigChange]:
    """The differing values under ``path``: mappings are walked key by key; a list or a
    scalar is one value (steps are compared as a whole)."""
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[ConfigChange] = []
        for key in _keys(old, new):
            found += _leaves(f"{path}.{key}", old.get(key), new.get(key), kind=kind,
                             environment=environment, hidden=hidden)
        return found
    if hidden:
        return [ConfigChange(path, kind, environment)]
    return [ConfigChange(path, kind, environment, before=_shown(old), after=_shown(new))]


def _shown(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(_given(value), separators=(",", ":"))


def _given(value: Any) -> Any:
    """``value`` without its unset (null) fields: a step shows as ``{"weight":20}``."""
    if isinstance(value, dict):
        return {k: _given(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_given(v) for v in value]
    return value


def _revalidated(config: Config, *, shown_as: str) -> Config:
    data = config.model_dump(mode="json", by_alias=True)
    try:
        return Config.model_validate({**data, "base_dir": config.base_dir})
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(
            f"the new file, with the settings that apply only after a server restart kept "
            f"as they run, is not valid: {problem}", file=shown_as,
            hint="restart the server to apply the whole file, or change it so it holds "
                 "with the running server's settings") from None
