"""A :class:`Fleet` from entrega.yaml's ``target: {kind: ssh}`` (config/ssh.py)."""

from __future__ import annotations

from entrega.config import Config, EnvironmentConfig, SshTargetConfig
from entrega.errors import ConfigError
from entrega.targets.ssh.connections import Fleet, FleetSettings, Host


def ssh_target_of(env: EnvironmentConfig) -> SshTargetConfig:
    if not isinstance(env.target, SshTargetConfig):
        raise ConfigError(f"environment {env.name!r} has target kind {env.target.kind}, "
                          "not ssh", hint="host commands work on an environment whose "
                          "target is {kind: ssh, hosts: [...]}")
    return env.target


def fleet_from_config(config: Config, env: EnvironmentConfig) -> Fleet:
    """The hosts of ``env``'s ssh target and how to reach them. Connects to nothing."""
    target = ssh_target_of(env)
    hosts = [Host(name=target.host_name(h), address=h.address, port=h.port or target.port,
                  user=h.user or target.user, base_dir=h.base_dir or target.base_dir)
             for h in target.hosts]
    return Fleet(hosts, FleetSettings(
        known_hosts=target.path(target.known_hosts, config.base_dir),
        known_hosts_label=target.known_hosts,
        identity_file=target.path(target.identity_file, config.base_dir)
        if target.identity_file else None,
        connect_timeout_s=target.connect_timeout_s,
        command_timeout_s=target.command_timeout_s, max_parallel=target.max_parallel))
