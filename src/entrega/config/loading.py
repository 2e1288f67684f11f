"""Reading entrega.yaml: YAML to a :class:`~entrega.config.Config`, every mistake named
by file, line and field (``entrega.yaml:6: environments[0].target.instances: ...``), and
the checks no single field can make (a rolling strategy needs hosts, a command where
processes run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from entrega.config import CONFIG_FILE, Config
from entrega.errors import ConfigError
from entrega.yamldoc import Path_, parse_yaml


def _line_for(loc: Path_, lines: dict[Path_, int]) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _clean_loc(loc: tuple[Any, ...]) -> Path_:
    # pydantic inserts tagged-union tags ("local") and validator names into loc; keep the
    # ones that are keys or indexes of the document.
    return tuple(p for p in loc if isinstance(p, (str, int)))


def validate_config(data: Any, *, file: str, lines: dict[Path_, int],
                    base_dir: Path, one_of_many: bool = False) -> Config:
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top (app:, run:, environments:)",
                          file=file, line=1)
    try:
        config = Config.model_validate({**data, "base_dir": base_dir,
                                        "one_of_many": one_of_many})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = _clean_loc(first["loc"])
        # Drop loc parts pydantic adds that are not in the document (union tags).
        doc_loc: list[str | int] = []
        for i, part in enumerate(loc):
            candidate = (*doc_loc, part)
            if candidate in lines or not doc_loc or isinstance(part, int) or i == len(loc) - 1:
                doc_loc.append(part)
        field = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in doc_loc)
        field = field.replace(".[", "[")
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            message = "this field is required"
        elif first["type"] == "extra_forbidden":
            message = "unknown field (check its spelling)"
        elif "input" in first and first["type"] not in ("value_error", "assertion_error"):
            message = f"{message} (got {json.dumps(first['input'], default=str)[:60]})"
        more = len(exc.errors()) - 1
        hint = f"and {more} more problem(s)" if more else None
        raise ConfigError(message, file=file, line=_line_for(tuple(doc_loc), lines),
                          field=field or None, hint=hint) from None
    _refuse_rolling_without_hosts(config, file=file, lines=lines)
    _refuse_canary_hosts_without_hosts(config, file=file, lines=lines)
    _require_command(config, data, file=file, lines=lines)
    if not one_of_many:
        _refuse_other_apps(config, file=file, lines=lines)
    return config


def _refuse_other_apps(config: Config, *, file: str, lines: dict[Path_, int]) -> None:
    """A metric of another app (``app:``) needs that app on the same server: a file of
    several apps checks it (``config/apps.py``); a single-app file has only its own."""
    for i, env in enumerate(config.environments):
        for name, metric in env.analysis.items():
            peer = metric.peer(env.name)
            if peer is None:
                continue
            where = ("environments", i, "analysis", name, "app")
            field = f"environments[{i}].analysis.{name}.app"
            if peer[0] != config.app:
                raise ConfigError(
                    f"names app {peer[0]}, but this file declares only {config.app}",
                    file=file, line=_line_for(where, lines), field=field,
                    hint="declare both apps in one file (apps: [...]) to judge one by "
                         "the other's router")
            if peer[1] not in {e.name for e in config.environments}:
                raise ConfigError(
                    f"names environment {peer[1]} of {config.app}, which has none of that "
                    "name", file=file, line=_line_for(where, lines), field=field,
                    hint=f"environments: {', '.join(e.name for e in config.environments)}")


def _refuse_rolling_without_hosts(config: Config, *, file: str,
                                  lines: dict[Path_, int]) -> None:
    """Rolling moves a release host by host: only a target with hosts can roll."""
    for i, env in enumerate(config.environments):
        if env.strategy.rolling is not None and env.target.kind != "ssh":
            raise ConfigError(
                f"rolling moves a release host by host, and a {env.target.kind} target "
                "has no hosts", file=file,
                line=_line_for(("environments", i, "strategy", "rolling"), lines),
                field=f"environments[{i}].strategy.rolling",
                hint="use canary or blue-green here, or target: {kind: ssh, hosts: [...]}")


def _refuse_canary_hosts_without_hosts(config: Config, *, file: str,
                                       lines: dict[Path_, int]) -> None:
    """``canary_hosts`` picks hosts of a fleet: a target without hosts has none to pick."""
    for i, env in enumerate(config.environments):
        canary = env.strategy.canary
        if canary is not None and canary.canary_hosts is not None \
                and env.target.kind != "ssh":
            raise ConfigError(
                f"canary_hosts picks hosts of a fleet, and a {env.target.kind} target has "
                "no hosts", file=file,
                line=_line_for(("environments", i, "strategy", "canary", "canary_hosts"),
                               lines),
                field=f"environments[{i}].strategy.canary.canary_hosts",
                hint="remove canary_hosts, or use target: {kind: ssh, hosts: [...]}")


def _require_command(config: Config, data: dict[str, Any], *, file: str,
                     lines: dict[Path_, int]) -> None:
    """``run.command`` where an environment runs processes (every target but podman's)."""
    if config.run.command.strip():
        return
    for env in config.environments:
        if env.target.kind == "ssh" and env.target.runtime == "podman":
            continue
        given = isinstance(data.get("run"), dict) and "command" in data["run"]
        raise ConfigError(
            "must not be empty" if given else "this field is required", file=file,
            line=_line_for(("run", "command"), lines), field="run.command",
            hint=f"environment {env.name} runs the app as a process, on target "
                 f"{env.target.kind}: only an ssh target's runtime: podman does without it")


def load_config(path: str | Path | None = None, *, shown_as: str | None = None) -> Config:
    """Load and validate entrega.yaml (default: ./entrega.yaml). ``shown_as`` names the
    file in errors instead of its path (the server's answers show no server-side path)."""
    file = Path(path) if path else Path(CONFIG_FILE)
    name = shown_as or str(file)
    data, lines = parse_yaml(read_config_text(file, name), file=name)
    return validate_config(data, file=name, lines=lines, base_dir=file.resolve().parent)


def read_config_text(file: Path, name: str) -> str:
    """The text of a configuration file, or a ConfigError naming it as ``name``."""
    try:
        return file.read_text()
    except FileNotFoundError:
        raise ConfigError("no such file", file=name,
                          hint="run `entrega init` to write one") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot be read ({getattr(exc, 'strerror', None) or exc})",
                          file=name) from None


