"""``target: {kind: ssh}``: a fleet of hosts reached over SSH.

Instances run on every host as supervised processes (``runtime: process``) or as podman
containers of the image in the release's artifact (``runtime: podman``).

A host is written ``"web-1.example.com"``, ``"10.0.0.5:2222"``, ``"[2001:db8::5]:22"``
or, to give it a name or its own user or port, as a mapping. Paths (identity_file,
known_hosts) are relative to the config file's directory; ``~`` is the user's home.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from entrega.config.model import Model
from entrega.net import parse_address


class SshHostConfig(Model):
    """One host, when it needs more than its address."""

    address: str = Field(min_length=1)
    #: How the host is called in messages and ``host check`` (default: its address).
    name: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    user: str | None = None
    #: This host's own base_dir (hosts that differ, or several "hosts" on one machine).
    base_dir: str | None = None

    @field_validator("base_dir")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return None if value is None else _absolute_path(value)


def _host_entry(value: object) -> object:
    """``"HOST"`` or ``"HOST:PORT"`` as a mapping; mappings pass through."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        raise ValueError("a host is an address, like 10.0.0.5 or web-1.example.com:2222")
    if text.startswith("[") or text.count(":") == 1:
        try:
            address, port = parse_address(text)
        except ValueError:
            raise ValueError(f"expected HOST or HOST:PORT, got {text!r}") from None
        return {"address": address, "port": port}
    return {"address": text}


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"base_dir is a path on the hosts and must be absolute, got {value!r}")
    return posixpath.normpath(value)


class SshTargetConfig(Model):
    kind: Literal["ssh"]
    hosts: list[Annotated[SshHostConfig, BeforeValidator(_host_entry)]] = Field(min_length=1)
    #: The login on every host (a host entry may give its own).
    user: str = "root"
    port: int = Field(22, ge=1, le=65535)
    #: The client's private key (a deploy key readable by the controller only); unset:
    #: the default keys of ~/.ssh (id_ed25519, id_rsa, ...). The ssh agent is never used.
    identity_file: str | None = None
    #: The only source of trust in host keys: a host missing from it, or with another
    #: key, is refused. OpenSSH's format (``ssh-keyscan HOST >> known_hosts``).
    known_hosts: str = "~/.ssh/known_hosts"
    #: Where entrega keeps releases and instances on each host.
    base_dir: str = "/srv/entrega"
    instances_per_host: int = Field(1, ge=1, le=64)
    #: How an instance runs on a host: ``process``, the release's ``run.command`` under
    #: entrega's supervisor; ``podman``, a container of the artifact's ``image.tar`` (its
    #: own entrypoint; listening on $HOST:$PORT). Process is the default: it needs
    #: nothing on a host but Python.
    runtime: Literal["process", "podman"] = "process"
    #: Hosts worked on at once: a rollout's speed against the load on the controller and
    #: the network; ten matches Ansible's default forks... minus the wait for the slowest.
    max_parallel: int = Field(10, ge=1, le=1000)
    #: TCP, key exchange and login, per host: a host that does not answer within this
    #: is reported unreachable instead of holding a rollout.
    connect_timeout_s: float = Field(10.0, gt=0)
    #: Every remote command (for an upload: every chunk of it, and the final check).
    command_timeout_s: float = Field(60.0, gt=0)

    @field_validator("base_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return _absolute_path(value)

    @model_validator(mode="after")
    def _unique_hosts(self) -> SshTargetConfig:
        for label, values in (("names", [self.host_name(h) for h in self.hosts]),
                              ("addresses", [f"{h.address}:{h.port or self.port}"
                                             for h in self.hosts])):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"host {label} must be unique, repeated: {repeated}")
        return self

    @staticmethod
    def host_name(host: SshHostConfig) -> str:
        return host.name or host.address

    @property
    def instances(self) -> int:
        """Instances of one release across the fleet."""
        return self.instances_per_host * len(self.hosts)

    def path(self, value: str, config_dir: Path) -> Path:
        """A path setting (identity_file, known_hosts) as the controller opens it."""
        return config_dir / Path(value).expanduser()
