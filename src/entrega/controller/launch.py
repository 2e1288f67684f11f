"""Starting rollouts: the spec an environment's config gives, and the rollout row.

Both the service (a user's deploy) and the controller (the next queued request, the
next environment of the pipeline) start rollouts, so this lives below both.
"""

from __future__ import annotations

import time
from dataclasses import replace

from entrega.codec import from_config
from entrega.config import CanaryStepConfig, Config, EnvironmentConfig, RollingConfig
from entrega.config.ssh import SshTargetConfig
from entrega.errors import Conflict, NotFound
from entrega.rollouts.model import (
    AnalysisStep,
    Cohort,
    CohortRoute,
    CohortStep,
    FleetSpec,
    PauseStep,
    RollingSpec,
    RolloutSpec,
    Step,
    UsersStep,
    WeightStep,
    initial_state,
    spec_to_dict,
    state_to_dict,
)
from entrega.routers.base import CohortRule
from entrega.store.models import Rollout
from entrega.store.repository import Repository

STRATEGIES = ("canary", "blue-green", "direct", "rolling")


def spec_for(env: EnvironmentConfig, strategy: str | None = None, *,
             rollback: bool = False) -> RolloutSpec:
    """The rollout spec an environment's config gives (optionally another strategy), with
    the environment's progress deadline."""
    return replace(_strategy_spec(env, strategy, rollback=rollback),
                   progress_deadline_s=env.strategy.progress_deadline_s)


def _strategy_spec(env: EnvironmentConfig, strategy: str | None, *,
                   rollback: bool) -> RolloutSpec:
    """The spec of the chosen strategy.

    A rollback restores a release that ran here before: it skips verification, since
    getting back to a known state fast matters more than checking it again."""
    chosen = strategy or env.strategy.name
    if chosen not in STRATEGIES:
        raise Conflict(f"unknown strategy {chosen!r}", hint=f"use one of {STRATEGIES}")
    verify = bool(env.verify) and not rollback
    if chosen == "direct":
        return RolloutSpec(strategy="direct", verify=verify)
    if chosen == "rolling":
        return _rolling_spec(env, verify=verify)
    if chosen == "blue-green":
        bg = env.strategy.blue_green
        if bg is None:
            return RolloutSpec(strategy="blue-green", verify=verify, fleet=_fleet(env))
        return from_config(RolloutSpec, bg, strategy="blue-green", verify=verify,
                           fleet=_fleet(env, max_failed=bg.max_failed))
    canary = env.strategy.canary
    if canary is None:
        return RolloutSpec(strategy="canary", steps=(WeightStep(100),), verify=verify,
                           fleet=_fleet(env))
    steps = tuple(_step(step) for step in canary.steps)
    return RolloutSpec(strategy="canary", steps=steps or (WeightStep(100),), verify=verify,
                       cohort=from_config(Cohort, canary.cohort),
                       fleet=_fleet(env, canary_hosts=canary.canary_hosts,
                                    max_failed=canary.max_failed))


def _fleet(env: EnvironmentConfig, *, canary_hosts: int | str | None = None,
           max_failed: int | str = 0) -> FleetSpec | None:
    """Canary and blue-green over the target's hosts (None: a target without hosts)."""
    target = env.target
    if not isinstance(target, SshTargetConfig):
        return None
    return FleetSpec(hosts=tuple(target.host_name(h) for h in target.hosts),
                     canary_hosts=canary_hosts, max_failed=max_failed)


def _rolling_spec(env: EnvironmentConfig, *, verify: bool) -> RolloutSpec:
    """Rolling over the target's hosts in their configured order (one at a time unless
    the config says otherwise)."""
    target = env.target
    if not isinstance(target, SshTargetConfig):
        raise Conflict(f"rolling moves a release host by host, and {env.name}'s "
                       f"{target.kind} target has no hosts",
                       hint="use canary or blue-green there")
    rolling = env.strategy.rolling or RollingConfig()
    return RolloutSpec(strategy="rolling", verify=verify, rolling=RollingSpec(
        hosts=tuple(target.host_name(h) for h in target.hosts), batch=rolling.batch,
        max_failed=rolling.max_failed, max_unavailable=rolling.max_unavailable,
        pause_between_batches_s=rolling.pause_between_batches_s,
        analysis=from_config(AnalysisStep, rolling.analysis) if rolling.analysis else None))


def _step(step: CanaryStepConfig) -> Step:
    """The rollout step a configured step describes: the one field it gives, mapped by
    name (``pause``, ``analysis``) or wrapped (``weight``, ``cohort``, ``users``)."""
    if step.pause is not None:
        return from_config(PauseStep, step.pause)
    if step.analysis is not None:
        return from_config(AnalysisStep, step.analysis)
    if step.cohort is not None:
        return CohortStep(step.cohort)
    if step.users is not None:
        return UsersStep(step.users)
    assert step.weight is not None  # CanaryStepConfig holds exactly one of the five
    return WeightStep(step.weight)


def cohort_rule(cohort: Cohort, route: CohortRoute | None, *, canary: str,
                app: str) -> CohortRule | None:
    """The router's rule for a rollout's cohort routing (None: no cohort)."""
    if route is None:
        return None
    return CohortRule(release=canary,
                      header=cohort.header if route.selected else None,
                      header_value=cohort.value if route.selected else None,
                      user_header=cohort.user_header, user_cookie=cohort.user_cookie,
                      users=frozenset(cohort.users) if route.selected else frozenset(),
                      percent=route.percent, app=app)


def launch_rollout(repo: Repository, config: Config, *, environment: str, version: str,
                   actor: str, strategy: str | None = None, reason: str = "",
                   rollback: bool = False, group_id: int | None = None) -> Rollout:
    """Create the rollout of ``version`` in an idle environment (the caller holds the
    environment's lock and has checked it is idle)."""
    env_config = config.environment(environment)
    env = repo.environment(config.app, environment)
    if env is None:
        raise NotFound(f"no environment {environment!r}")
    release = repo.release(config.app, version)
    if release is None:
        raise NotFound(f"no release {version} of {config.app}")
    if release.pruned_at is not None:
        raise Conflict(f"release {version} is no longer retained (its artifact was deleted)",
                       hint=f"retention keeps the last {config.retention.keep} per environment")
    current = env.current_version
    if current == version:
        raise Conflict(f"{environment} already runs {version}")
    spec = spec_for(env_config, strategy, rollback=rollback)
    state = initial_state(stable=current, canary=version, now=time.time())
    return repo.create_rollout(
        app=config.app, environment=environment, version=version, from_version=current,
        strategy=spec.strategy if current else "direct", spec=spec_to_dict(spec),
        state=state_to_dict(state), actor=actor, reason=reason,
        purpose="rollback" if rollback else "deploy", group_id=group_id)
