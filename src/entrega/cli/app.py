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
from entrega.config import CONFIG_FILE, Config, load_config
from entrega.errors import EntregaError

app = typer.Typer(help="entrega: continuous delivery for network services.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
config_app = typer.Typer(help="Check entrega.yaml or print its JSON Schema.",
                         no_args_is_help=True)
app.add_typer(config_app, name="config")

console = Console()
err = Console(stderr=True)

ConfigOpt = typer.Option(CONFIG_FILE, "--config", "-c", help="Path of entrega.yaml.")
EnvOpt = typer.Option(None, "--env", "-e", help="Environment (default: see each command).")
JsonOpt = typer.Option(False, "--json", help="Print JSON instead of tables.")


class Context:
    """One command's entrega.yaml (read when first needed: `--help` and commands that
    only talk to ENTREGA_SERVER never parse it) and its API client."""

    def __init__(self, config_path: str) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def client(self) -> Client:
        listen = None
        try:
            listen = self.config.server.listen
        except EntregaError:
            if not os.environ.get("ENTREGA_SERVER"):
                raise
        return Client(server_url(listen))

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
    """Commands may name the app (`entrega rollback shop ...`): it must be this config's."""
    if name and name != cfg.app:
        raise EntregaError(f"this entrega.yaml delivers {cfg.app!r}, not {name!r}",
                           hint="run in the app's directory or pass -c its entrega.yaml")
