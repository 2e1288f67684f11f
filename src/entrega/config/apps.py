"""Every app one server delivers: a single-app ``entrega.yaml``, or a file of several apps.

A team's API, worker and web front share one server, one store and one set of tokens, so
one file can declare them all::

    server: {listen: "127.0.0.1:7070"}
    auth: {tokens: {...}}          # server, store, auth and state_dir: one for all apps
    apps:
      - app: api                    # each entry: the fields of a single-app file
        run: {...}
        environments: [...]
    apps_dir: apps                  # and/or: every *.yaml there is one app

A single-app file (``app:`` at the top) is read exactly as before. Each app becomes the
same :class:`Config` a single-app file gives (the shared fields copied in), so everything
below the server (controller, routers, targets) is unchanged and never sees the others;
``one_of_many`` tells the API and the routers that the app's paths are under
``/api/v1/apps/<app>``. Errors name the file, the line and the field as they are written
(``apps[1].environments[0].router``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entrega.config import CONFIG_FILE, Config, read_config_text, validate_config
from entrega.errors import ConfigError, EntregaError
from entrega.yamldoc import Path_, parse_yaml

#: The fields that are the server's, not an app's: set once, at the top of the file.
SHARED = ("server", "store", "auth", "state_dir")
#: What a file of several apps may hold at its top.
TOP = (*SHARED, "apps", "apps_dir")


@dataclass(frozen=True)
class AppsConfig:
    """The apps of one configuration file, in the order it declares them."""

    apps: tuple[Config, ...]
    #: declared with ``apps:``/``apps_dir:`` (paths under /api/v1/apps/<app>)
    many: bool = False

    def __iter__(self) -> Iterator[Config]:
        return iter(self.apps)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.app for c in self.apps)

    @property
    def first(self) -> Config:
        """The server's own settings (server, store, auth) are the same in every app."""
        return self.apps[0]

    def app(self, name: str | None) -> Config:
        """The app called ``name``; with no name, the only app (else a clear error)."""
        if name is None:
            if len(self.apps) == 1:
                return self.apps[0]
            raise ConfigError(f"this file declares {len(self.apps)} apps "
                              f"({', '.join(self.names)})",
                              hint="name one with --app NAME (or ENTREGA_APP)")
        for config in self.apps:
            if config.app == name:
                return config
        if not self.many:
            raise EntregaError(f"this entrega.yaml delivers {self.apps[0].app!r}, not "
                               f"{name!r}", hint="run in the app's directory or pass -c "
                                                 "its entrega.yaml")
        raise ConfigError(f"no app named {name!r}", hint=f"apps: {', '.join(self.names)}")


def load_apps(path: str | Path | None = None, *, shown_as: str | None = None) -> AppsConfig:
    """Read a configuration file of one app or several; ``shown_as`` names it in errors."""
    file = Path(path) if path else Path(CONFIG_FILE)
    name = shown_as or str(file)
    data, lines = parse_yaml(read_config_text(file, name), file=name)
    base_dir = file.resolve().parent
    if not isinstance(data, dict) or ("apps" not in data and "apps_dir" not in data):
        return AppsConfig((validate_config(data, file=name, lines=lines, base_dir=base_dir),))
    for key in data:
        if key not in TOP:
            raise ConfigError(
                "an app's field at the top of a file of several apps", file=name,
                line=lines.get((key,)), field=str(key),
                hint=f"move it under the app's entry in apps: (the top holds only "
                     f"{', '.join(TOP)})")
    shared = {k: data[k] for k in SHARED if k in data}
    shared_lines = {k: v for k, v in lines.items() if k and k[0] in SHARED}
    apps: list[Config] = []
    entries = data.get("apps", [])
    if not isinstance(entries, list):
        raise ConfigError("expected a list of apps", file=name, line=lines.get(("apps",)),
                          field="apps", hint="apps: [{app: api, run: ..., environments: ...}]")
    for i, entry in enumerate(entries):
        own = {k[2:]: v for k, v in lines.items() if k[:2] == ("apps", i)}
        apps.append(_one(entry, shared, {**shared_lines, **own}, file=name, where=f"apps[{i}]",
                         line=lines.get(("apps", i)), base_dir=base_dir))
    if "apps_dir" in data:
        apps += _from_dir(data["apps_dir"], shared, shared_lines, file=name,
                          line=lines.get(("apps_dir",)), base_dir=base_dir)
    if not apps:
        raise ConfigError("no apps declared", file=name, line=lines.get(("apps",)),
                          field="apps", hint="declare at least one app under apps:")
    _check_together(apps, file=name, lines=lines, listed=len(entries))
    return AppsConfig(tuple(apps), many=True)


def _one(entry: Any, shared: dict[str, Any], lines: dict[Path_, int], *, file: str,
         where: str, line: int | None, base_dir: Path) -> Config:
    if not isinstance(entry, dict):
        raise ConfigError("expected an app (app:, run:, environments:)", file=file,
                          line=line, field=where or None)
    for key in SHARED:
        if key in entry:
            raise ConfigError(
                f"{key} is the server's, one for all apps", file=file,
                line=lines.get((key,), line), field=f"{where}.{key}".lstrip("."),
                hint="set it once at the top of the main file")
    try:
        return validate_config({**shared, **entry}, file=file, lines=lines,
                               base_dir=base_dir, one_of_many=True)
    except ConfigError as exc:
        if not where or (exc.field or "").split(".")[0].split("[")[0] in SHARED:
            raise
        field = f"{where}.{exc.field}" if exc.field else where
        raise ConfigError(exc.reason, file=exc.file, line=exc.line, field=field,
                          hint=exc.hint) from None


def _from_dir(value: Any, shared: dict[str, Any], shared_lines: dict[Path_, int], *,
              file: str, line: int | None, base_dir: Path) -> list[Config]:
    if not isinstance(value, str) or not value:
        raise ConfigError("expected a directory (relative to this file)", file=file,
                          line=line, field="apps_dir")
    folder = base_dir / value
    if not folder.is_dir():
        raise ConfigError(f"{value} is not a directory", file=file, line=line,
                          field="apps_dir", hint="one YAML file per app in it")
    apps = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        shown = str(Path(value) / path.name)
        data, lines = parse_yaml(read_config_text(path, shown), file=shown)
        # the shared fields' lines are the main file's: a mistake there names it
        apps.append(_one(data, shared, {**shared_lines, **lines}, file=shown, where="",
                         line=1, base_dir=base_dir))
    if not apps:
        raise ConfigError(f"{value} holds no .yaml file", file=file, line=line,
                          field="apps_dir")
    return apps


def _check_together(apps: list[Config], *, file: str, lines: dict[Path_, int],
                    listed: int = 0) -> None:
    """What no single app can check: unique names, listeners no two apps share, tokens
    limited to apps that exist, metrics of other apps that exist (``listed``: how many
    apps the file's ``apps:`` holds, before those of ``apps_dir``)."""
    seen: set[str] = set()
    for config in apps:
        if config.app in seen:
            raise ConfigError(f"two apps are called {config.app!r}", file=file,
                              field="apps", hint="each app needs its own name")
        seen.add(config.app)
    listeners: dict[str, str] = {}
    for config in apps:
        for env in config.environments:
            router = env.router
            for address in (getattr(router, "listen", None),
                            getattr(router, "preview_listen", None),
                            getattr(router, "metrics_listen", None)):
                if not address or getattr(router, "placement", "") == "every_host":
                    continue
                where = f"{config.app}/{env.name}"
                if address in listeners and listeners[address] != where:
                    raise ConfigError(
                        f"{where}'s router listens on {address}, as {listeners[address]}'s "
                        "does", file=file, field="apps",
                        hint="each app's router needs its own address")
                listeners[address] = where
    for config in apps:
        unknown = sorted(set(config.depends_on) - seen)
        if unknown or config.app in config.depends_on:
            raise ConfigError(f"app {config.app!r} depends on "
                              f"{', '.join(unknown) or config.app}, not another declared app",
                              file=file, field=f"{config.app}.depends_on",
                              hint=f"apps: {', '.join(sorted(seen))}")
    cycle = _cycle({c.app: set(c.depends_on) for c in apps})
    if cycle:
        raise ConfigError(f"apps depend on each other in a circle: {' -> '.join(cycle)}",
                          file=file, field="depends_on",
                          hint="a release group moves the apps one after another: "
                               "depends_on must say who goes first")
    _check_peers(apps, file=file, lines=lines, listed=listed)
    for token, spec in apps[0].auth.tokens.items():
        unknown = sorted(set(spec.apps or ()) - seen)
        if unknown:
            raise ConfigError(f"token {token!r} names apps that are not declared: "
                              f"{', '.join(unknown)}", file=file,
                              line=lines.get(("auth", "tokens", token, "apps")),
                              field=f"auth.tokens.{token}.apps",
                              hint=f"apps: {', '.join(sorted(seen))}")


def _cycle(deps: dict[str, set[str]]) -> list[str]:
    """A circle of ``depends_on`` (``[a, b, a]``), or [] when the apps can be ordered."""
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    path: list[str] = []

    def walk(app: str) -> list[str]:
        state[app], found = 1, []
        path.append(app)
        for dep in sorted(deps.get(app, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep):], dep]
            if dep not in state and (found := walk(dep)):
                return found
        state[app] = 2
        path.pop()
        return found

    for app in sorted(deps):
        if app not in state and (circle := walk(app)):
            return circle
    return []


def _check_peers(apps: list[Config], *, file: str, lines: dict[Path_, int],
                 listed: int) -> None:
    """A metric naming another app (``app:``) reads that app's router in that environment:
    both must be declared here. An app from ``apps_dir`` is named by its app name (its
    lines are its own file's)."""
    environments = {c.app: {e.name for e in c.environments} for c in apps}
    for i, config in enumerate(apps):
        for j, env in enumerate(config.environments):
            for name, metric in env.analysis.items():
                peer = metric.peer(env.name)
                if peer is None:
                    continue
                path = ("environments", j, "analysis", name, "app")
                where = f"apps[{i}]" if i < listed else config.app
                field = f"{where}.environments[{j}].analysis.{name}.app"
                line = lines.get(("apps", i, *path)) if i < listed else None
                if peer[0] not in environments:
                    raise ConfigError(
                        f"names app {peer[0]}, which this file does not declare", file=file,
                        line=line, field=field, hint=f"apps: {', '.join(environments)}")
                if peer[1] not in environments[peer[0]]:
                    raise ConfigError(
                        f"names {peer[0]}'s environment {peer[1]}, which {peer[0]} does not "
                        "have", file=file, line=line, field=field,
                        hint=f"{peer[0]}'s environments: "
                             f"{', '.join(sorted(environments[peer[0]]))}"
                             + ("" if metric.environment else
                                " (set environment: the default is the analysing one's)"))
