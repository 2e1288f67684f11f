"""The live providers of one environment: its target and its router, built from config.

Registries are plain dicts filled explicitly; a provider kind is chosen by ``kind:`` in
entrega.yaml.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from entrega.codec import from_config
from entrega.config import (
    Config,
    EmbeddedRouterConfig,
    EnvironmentConfig,
    HaproxyRouterConfig,
    LocalTargetConfig,
)
from entrega.config.ssh import SshTargetConfig
from entrega.net import Endpoint, local_url, parse_address
from entrega.routers.base import CohortRule, Router, Routes
from entrega.routers.embedded import EmbeddedRouter
from entrega.targets.base import HealthCheck, InstanceState, ReleaseRef, Target, host_of
from entrega.targets.local import LocalTarget


def _local_target(config: Config, env: EnvironmentConfig) -> Target:
    target = env.target
    assert isinstance(target, LocalTargetConfig)  # chosen by kind in TARGETS
    # The apps of one server share its state directory; their instances' directories
    # (run/<environment>/<release>/<n>) would collide, so each app has its own there.
    state_dir = config.state_path / "apps" / config.app if config.one_of_many \
        else config.state_path
    return LocalTarget(
        app=config.app, environment=env.name, command=config.run.command,
        env=dict(config.run.env), instances=target.instances,
        health=from_config(HealthCheck, config.run.health),
        state_dir=state_dir, host=target.host,
        inherit_env=tuple(config.run.inherit_env), ports=target.port_range)


def _embedded_router(config: Config, env: EnvironmentConfig) -> Router:
    router = env.router
    assert isinstance(router, EmbeddedRouterConfig)
    if router.placement == "every_host":
        return _every_host_router(config, env, router)
    control_plane = router.control_plane_url
    if control_plane is None:
        control_plane = local_url(config.server.listen)
        if config.one_of_many:  # the feedback its users send goes to this app (api/apps.py)
            control_plane += f"/apps/{config.app}"
    return EmbeddedRouter(name=f"{config.app}-{env.name}", listen=router.listen,
                          preview_listen=router.preview_listen,
                          state_dir=config.state_path, app=config.app,
                          metrics_listen=router.metrics_listen,
                          control_plane_url=control_plane or None, workers=router.workers)


def _every_host_router(config: Config, env: EnvironmentConfig,
                       router: EmbeddedRouterConfig | HaproxyRouterConfig, *,
                       fleet: Any = None) -> Router:
    """A router (embedded or HAProxy) on every host of the ssh target, reached over SSH
    (the router adapters know nothing of SSH: each host's link comes from the ssh
    target's package). ``fleet``: the target's, whose pooled connection per host it then
    shares (a fleet closed by one is reopened by the other's next call); otherwise one
    of its own."""
    from entrega.routers.every_host import EveryHostRouter
    from entrega.targets.ssh import Fleet, fleet_from_config
    from entrega.targets.ssh.hostrouter import SshHostRouter

    def port(listen: str | None) -> int | None:
        return parse_address(listen)[1] if listen else None

    if not isinstance(fleet, Fleet):
        fleet = fleet_from_config(config, env)
    listen_port = port(router.listen)
    assert listen_port is not None
    if isinstance(router, HaproxyRouterConfig):
        return _haproxy_on_every_host(config, env, router, fleet, listen_port)
    return EveryHostRouter(name=f"{config.app}-{env.name}", hosts=[
        SshHostRouter(fleet, host, app=config.app, environment=env.name, port=listen_port,
                      preview_port=port(router.preview_listen),
                      metrics_port=port(router.metrics_listen), workers=router.workers)
        for host in fleet.hosts], close=fleet.close)


def _haproxy_on_every_host(config: Config, env: EnvironmentConfig,
                           router: HaproxyRouterConfig, fleet: Any, listen_port: int
                           ) -> Router:
    """HAProxy on every host, each driven as the controller's own HAProxy is: its runtime
    socket through the host's SSH connection, its processes kept by the host agent."""
    from entrega.routers.every_host import EveryHostRouter, RouterOnHost
    from entrega.routers.haproxy.on_host import HostHaproxyRouter
    from entrega.targets.ssh.hostrouter import SshHostAccess, host_listen

    def on(host: Any, listen: str | None) -> str | None:
        return host_listen(host, parse_address(listen)[1]) if listen else None

    links = []
    for host in fleet.hosts:
        haproxy = HostHaproxyRouter(
            SshHostAccess(fleet, host, app=config.app), app=config.app,
            environment=env.name, listen=host_listen(host, listen_port),
            preview_listen=on(host, router.preview_listen),
            stats_listen=on(host, router.stats_listen), binary=router.binary)
        links.append(RouterOnHost(haproxy, name=host.name, listen=haproxy.listen,
                                  health=haproxy.health))
    return EveryHostRouter(name=f"{config.app}-{env.name}", hosts=links, close=fleet.close)


def _haproxy_router(config: Config, env: EnvironmentConfig) -> Router:
    from entrega.routers.haproxy import HaproxyRouter

    router = env.router
    assert isinstance(router, HaproxyRouterConfig)
    if router.placement == "every_host":
        return _every_host_router(config, env, router)
    return HaproxyRouter(name=f"{config.app}-{env.name}", listen=router.listen,
                         preview_listen=router.preview_listen, state_dir=config.state_path,
                         app=config.app,
                         runtime_socket=Path(router.runtime_socket)
                         if router.runtime_socket else None,
                         stats_listen=router.stats_listen, binary=router.binary)


def _ssh_target(config: Config, env: EnvironmentConfig) -> Target:
    # Imported here: asyncssh is an extra, needed only where a fleet is configured (the
    # package says what to install when it is missing).
    from entrega.targets.ssh import fleet_from_config, ssh_target_of
    from entrega.targets.ssh.target import SshTarget

    target = ssh_target_of(env)
    return SshTarget(
        app=config.app, environment=env.name, fleet=fleet_from_config(config, env),
        command=config.run.command, env=dict(config.run.env),
        instances_per_host=target.instances_per_host,
        health=from_config(HealthCheck, config.run.health),
        inherit_env=tuple(config.run.inherit_env), runtime=target.runtime)


TARGETS: dict[str, Callable[[Config, EnvironmentConfig], Target]] = {
    "local": _local_target, "ssh": _ssh_target}
ROUTERS: dict[str, Callable[[Config, EnvironmentConfig], Router]] = {
    "embedded": _embedded_router, "haproxy": _haproxy_router}


@dataclass
class EnvironmentRuntime:
    config: EnvironmentConfig
    target: Target
    router: Router
    #: seconds an instance may take to finish its requests after SIGTERM
    drain_s: float = 10.0
    #: release version -> endpoints of its running instances (filled by start/observe)
    endpoints: dict[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    #: release version -> why it cannot run (from a failed start)
    start_errors: dict[str, str] = field(default_factory=dict)
    #: releases that lost instances with their supervisor: started again next pass
    lost_instances: dict[str, int] = field(default_factory=dict)
    #: the instances as last observed (every OBSERVE_INTERVAL_S), for status
    observed: tuple[InstanceState, ...] = ()
    #: instance key -> restarts already recorded as events
    restarts_seen: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def host_names(self) -> tuple[str, ...]:
        """The target's hosts by name, in the config's order (none for a local target)."""
        target = self.config.target
        if isinstance(target, SshTargetConfig):
            return tuple(target.host_name(h) for h in target.hosts)
        return ()

    def endpoints_on(self, version: str, hosts: tuple[str, ...] | None) -> tuple[Endpoint, ...]:
        """The release's known endpoints (on ``hosts`` only, when given)."""
        known = self.endpoints.get(version, ())
        if hosts is None:
            return known
        return tuple(e for e in known if host_of(e.instance) in hosts)

    def routes_for(self, weights: dict[str, int], preview: str | None,
                   cohort: CohortRule | None = None, *, rollout_id: int | None = None,
                   hosts: dict[str, tuple[str, ...]] | None = None) -> Routes:
        """The route table that sends ``weights``, ``preview`` and the cohort to running
        instances (of a release named in ``hosts``: only those on its hosts, as rolling
        moves a fleet host by host).

        A release with no known endpoints yet is left out of the table (it cannot take
        traffic); the weights of the others are kept as they are. Visitors' pins are drawn
        per rollout (``pin_salt``): a pin from an earlier rollout is drawn again, so it
        cannot keep a visitor off a new canary.
        """
        wanted = set(weights) | ({preview} if preview else set())
        hosts = hosts or {}
        backends = {v: found for v in sorted(wanted)
                    if (found := self.endpoints_on(v, hosts.get(v)))}
        return Routes(backends=backends,
                      weights={v: w for v, w in weights.items() if v in backends},
                      cohort=cohort if cohort and cohort.release in backends else None,
                      preview=preview if preview in backends else None,
                      pin_salt=f"rollout-{rollout_id}" if rollout_id is not None else "")


def build_runtime(config: Config, env: EnvironmentConfig) -> EnvironmentRuntime:
    target = TARGETS[env.target.kind](config, env)
    router_config = env.router
    if router_config.placement == "every_host":
        # the hosts' routers go over the target's own SSH connections
        router = _every_host_router(config, env, router_config,
                                    fleet=getattr(target, "fleet", None))
    else:
        router = ROUTERS[env.router.kind](config, env)
    return EnvironmentRuntime(config=env, target=target, router=router,
                              drain_s=config.run.drain_s)


def release_ref(app: str, version: str, digest: str, path: str | Path) -> ReleaseRef:
    return ReleaseRef(app=app, version=version, digest=digest, path=Path(path))
