"""The Typer app and what every command shares: consoles, common options, the command's
context (its entrega.yaml, its API client) and the JSON printer.

Command modules (``main``, ``pipeline``, ``analysis``, ``insights``) register themselves
on :data:`app` from here, so none of them imports another; ``main`` imports them all to
build the whole command line.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import typer
from rich.console import Console

from entrega.cli.client import Client, server_url
from entrega.config import CONFIG_FILE, Config
from entrega.config.apps import AppsConfig, load_apps
from entrega.errors import EntregaError

app = typer.Typer(help="entrega: continuous delivery for network services.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
config_app = typer.Typer(help="Check entrega.yaml or print its JSON Schema.",
                         no_args_is_help=True)
app.add_typer(config_app, name="config")

console = Console()
err = Console(stderr=True)

#: the app named with `entrega --app NAME ...` (or ENTREGA_APP): a server of several apps
_selected: dict[str, str | None] = {"app": None}


@app.callback()
def _options(app_name: str = typer.Option(
        None, "--app", envvar="ENTREGA_APP",
        help="The app, when entrega.yaml or the server has several (default: the only "
             "one).")) -> None:
    _selected["app"] = app_name

ConfigOpt = typer.Option(CONFIG_FILE, "--config", "-c", help="Path of entrega.yaml.")
EnvOpt = typer.Option(None, "--env", "-e", help="Environment (default: see each command).")
JsonOpt = typer.Option(False, "--json", help="Print JSON instead of tables.")


class Context:
    """One command's entrega.yaml (read when first needed: `--help` and commands that
    only talk to ENTREGA_SERVER never parse it), its app, and its API client.

    The app is the one named (``--app``, before the command or, for the commands that
    take one, after it), else the file's only app. Its API calls go to
    ``/api/v1/apps/<app>/...`` whenever the app is known to be one of several (named, or
    from a file of several apps), else to today's paths, which any server answers for its
    only app."""

    def __init__(self, config_path: str, *, app: str | None = None) -> None:
        self.config_path = config_path
        self.app_name = app or _selected["app"]
        self._apps: AppsConfig | None = None

    @property
    def apps(self) -> AppsConfig:
        if self._apps is None:
            self._apps = load_apps(self.config_path)
        return self._apps

    @property
    def config(self) -> Config:
        return self.apps.app(self.app_name)

    def client(self) -> Client:
        listen, app, unnamed = None, self.app_name, None
        try:
            listen = self.apps.first.server.listen
            if app is None and self.apps.many:
                try:
                    app = self.config.app  # the only app of the file
                except EntregaError as exc:
                    unnamed = exc  # said when a command asks an app's API, not before
        except EntregaError:
            if not os.environ.get("ENTREGA_SERVER"):
                raise
        return Client(server_url(listen), app=app, unnamed=unnamed)

    def webhook_secret(self) -> str | None:
        """The CI webhook's secret when this shell holds it (the variable entrega.yaml
        names): uploads are then signed like CI's, as a server with a secret requires."""
        try:
            name = self.config.auth.webhook_secret_env
        except EntregaError:  # no entrega.yaml here (ENTREGA_SERVER): no secret either
            return None
        return (os.environ.get(name) or None) if name else None


def print_json(data: Any) -> None:
    """The server's answer as it came (``--json``): the API's field names are the contract."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def check_app(cfg: Config, name: str | None) -> None:
    """Commands may name the app (`entrega rollback shop ...`): it must be this config's
    (a Context made with ``app=name`` picks it in a file of several apps)."""
    if name and name != cfg.app:
        raise EntregaError(f"this entrega.yaml delivers {cfg.app!r}, not {name!r}",
                           hint="run in the app's directory or pass -c its entrega.yaml")
