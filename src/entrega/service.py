"""Use cases: create a release, deploy, promote, abort, roll back, and the read models.

The API calls these; they validate, write through the repository under the environment's
lock (so a command never interleaves with a reconcile pass of the same environment), and
wake the controller.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from entrega.config import Config, EnvironmentConfig
from entrega.controller.loop import Controller
from entrega.errors import Conflict, NotFound, RolloutInProgress
from entrega.releases.artifacts import ArtifactStore
from entrega.releases.catalog import create_release
from entrega.rollouts.model import (
    AnalysisStep,
    PauseStep,
    Phase,
    RolloutSpec,
    Step,
    WeightStep,
    initial_state,
    spec_from_dict,
    spec_to_dict,
    state_from_dict,
    state_to_dict,
)
from entrega.store.models import Event, Release, Rollout
from entrega.store.repository import Repository

STRATEGIES = ("canary", "blue-green", "direct")


def spec_for(env: EnvironmentConfig, strategy: str | None = None, *,
             rollback: bool = False) -> RolloutSpec:
    """The rollout spec an environment's config gives (optionally another strategy).

    A rollback restores a release that ran here before: it skips verification, since
    getting back to a known state fast matters more than checking it again."""
    chosen = strategy or env.strategy.name
    if chosen not in STRATEGIES:
        raise Conflict(f"unknown strategy {chosen!r}", hint=f"use one of {STRATEGIES}")
    verify = bool(env.verify) and not rollback
    if chosen == "direct":
        return RolloutSpec(strategy="direct", verify=verify)
    if chosen == "blue-green":
        bg = env.strategy.blue_green
        if bg is None:
            return RolloutSpec(strategy="blue-green", verify=verify)
        return RolloutSpec(strategy="blue-green", auto_promote=bg.auto_promote,
                           scale_down_delay_s=bg.scale_down_delay_s, verify=verify)
    canary = env.strategy.canary
    raw_steps = canary.steps if canary else []
    steps: list[Step] = []
    for step in raw_steps:
        if step.weight is not None:
            steps.append(WeightStep(step.weight))
        elif step.pause is not None:
            steps.append(PauseStep(step.pause.duration_s))
        elif step.analysis is not None:
            a = step.analysis
            steps.append(AnalysisStep(metrics=tuple(a.metrics), duration_s=a.duration_s,
                                      check_every_s=a.check_every_s,
                                      failure_limit=a.failure_limit,
                                      inconclusive_limit=a.inconclusive_limit))
    if not steps:
        steps = [WeightStep(100)]
    return RolloutSpec(strategy="canary", steps=tuple(steps), verify=verify)


class Service:
    def __init__(self, config: Config, repo: Repository, artifacts: ArtifactStore,
                 controller: Controller) -> None:
        self.config = config
        self.repo = repo
        self.artifacts = artifacts
        self.controller = controller

    @property
    def app(self) -> str:
        return self.config.app

    # -- releases --------------------------------------------------------------------------

    def create_release(self, *, version: str, artifact: Path, meta: dict[str, Any],
                       actor: str) -> tuple[Release, bool]:
        return create_release(self.repo, self.artifacts, app=self.app, version=version,
                              source=artifact, meta=meta, actor=actor)

    def release(self, version: str) -> Release:
        release = self.repo.release(self.app, version)
        if release is None:
            raise NotFound(f"no release {version} of {self.app}",
                           hint="create it with `entrega deploy VERSION --artifact PATH`")
        return release

    # -- rollouts --------------------------------------------------------------------------

    async def deploy(self, *, environment: str, version: str, actor: str,
                     strategy: str | None = None, reason: str = "") -> Rollout:
        env = self.config.environment(environment)
        self.release(version)
        async with self._lock(environment):
            active = self.repo.active_rollout(self.app, environment)
            if active is not None:
                raise RolloutInProgress(
                    f"{environment} is busy with rollout {active.id} of {active.version} "
                    f"({active.phase})", hint="wait for it, or `entrega abort` it")
            current = self._environment(environment).current_version
            if current == version:
                raise Conflict(f"{environment} already runs {version}")
            spec = spec_for(env, strategy)
            state = initial_state(stable=current, canary=version, now=time.time())
            rollout = self.repo.create_rollout(
                app=self.app, environment=environment, version=version,
                from_version=current, strategy=spec.strategy if current else "direct",
                spec=spec_to_dict(spec), state=state_to_dict(state), actor=actor,
                reason=reason)
        self.controller.wake()
        return rollout

    def _lock(self, environment: str) -> asyncio.Lock:
        self.config.environment(environment)  # a clear error for an unknown name
        return self.controller.locks[environment]

    def _environment(self, name: str) -> Any:
        env = self.repo.environment(self.app, name)
        if env is None:
            raise NotFound(f"no environment {name!r}")
        return env

    def _active(self, environment: str) -> Rollout:
        self.config.environment(environment)
        active = self.repo.active_rollout(self.app, environment)
        if active is None:
            raise NotFound(f"no rollout in progress in {environment}")
        return active

    async def promote(self, *, environment: str, actor: str, full: bool = False) -> Rollout:
        async with self._lock(environment):
            row = self._active(environment)
            state = state_from_dict(row.state)
            state = replace(state, promote_requested=True, promote_full=full)
            what = "fully promoted" if full else "promoted (current step ends)"
            self.controller.update_state(row, state, actor=actor,
                                         message=f"{row.version} {what} by {actor}")
            return row

    async def abort(self, *, environment: str, actor: str) -> Rollout:
        async with self._lock(environment):
            row = self._active(environment)
            state = replace(state_from_dict(row.state), abort_requested=True)
            self.controller.update_state(row, state, actor=actor,
                                         message=f"rollout of {row.version} aborted by {actor}")
            return row

    async def rollback(self, *, environment: str, actor: str,
                       to: str | None = None) -> Rollout:
        """Abort the rollout in progress, or restore an earlier release (default: the
        one the current release replaced)."""
        self.config.environment(environment)
        active = self.repo.active_rollout(self.app, environment)
        if active is not None and to in (None, active.from_version):
            return await self.abort(environment=environment, actor=actor)
        if active is not None:
            raise RolloutInProgress(f"{environment} has rollout {active.id} in progress",
                                    hint="abort it first")
        current = self._environment(environment).current_version
        if to is None:
            to = self._previous(environment, current)
        return await self.deploy(environment=environment, version=to, actor=actor,
                                 strategy="direct", reason=f"rollback from {current}")

    def _previous(self, environment: str, current: str | None) -> str:
        for row in self.repo.rollouts(self.app, environment, limit=200):
            if row.phase == Phase.SUCCEEDED.value and row.version == current \
                    and row.from_version:
                return row.from_version
        raise NotFound(f"{environment} has no earlier release to roll back to",
                       hint="name one with --to VERSION")

    # -- read models -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        environments = []
        for env in self.repo.environments(self.app):
            active = self.repo.active_rollout(self.app, env.name)
            last = self.repo.rollouts(self.app, env.name, limit=1)
            environments.append({
                "name": env.name,
                "current": env.current_version,
                "rollout": self.rollout_view(active) if active else None,
                "last_rollout": self.rollout_view(last[0]) if last and not active else None,
            })
        return {"app": self.app, "environments": environments}

    def rollout_view(self, row: Rollout) -> dict[str, Any]:
        state = state_from_dict(row.state)
        spec = spec_from_dict(row.spec)
        steps = [_step_text(s) for s in spec.steps]
        analysis = None
        if state.analysis is not None:
            run = self.repo.analysis_run(row.id, state.analysis.window)
            analysis = {"window": state.analysis.window, "checks": state.analysis.checks,
                        "failures": state.analysis.failures,
                        "verdict": state.analysis.last_verdict,
                        "reason": state.analysis.last_reason,
                        "metrics": (run.result or {}).get("metrics") if run else None}
        return {
            "id": row.id, "environment": row.environment, "version": row.version,
            "from_version": row.from_version, "strategy": row.strategy,
            "phase": state.phase.value, "weights": state.weights, "preview": state.preview,
            "step_index": state.step_index, "steps": steps, "message": state.message,
            "analysis": analysis, "analysis_history": list(state.analysis_history),
            "created_at": row.created_at, "updated_at": row.updated_at,
            "finished_at": row.finished_at, "created_by": row.created_by,
            "reason": row.reason,
        }

    def rollout(self, rollout_id: int) -> dict[str, Any]:
        row = self.repo.rollout(rollout_id)
        if row is None or row.app != self.app:
            raise NotFound(f"no rollout {rollout_id}")
        view = self.rollout_view(row)
        view["events"] = [event_view(e) for e in self.repo.events(self.app,
                                                                   rollout_id=rollout_id)]
        return view

    def history(self, *, environment: str | None = None, limit: int = 100,
                after_id: int = 0) -> list[dict[str, Any]]:
        if environment:
            self.config.environment(environment)
        return [event_view(e) for e in self.repo.events(self.app, environment=environment,
                                                        limit=limit, after_id=after_id)]

    def releases(self) -> list[dict[str, Any]]:
        return [{"version": r.version, "digest": r.digest, "meta": r.meta,
                 "created_at": r.created_at, "created_by": r.created_by}
                for r in self.repo.releases(self.app)]


def event_view(event: Event) -> dict[str, Any]:
    return {"id": event.id, "time": event.time, "environment": event.environment,
            "version": event.version, "rollout_id": event.rollout_id, "kind": event.kind,
            "actor": event.actor, "message": event.message, "data": event.data}


def _step_text(step: Step) -> str:
    if isinstance(step, WeightStep):
        return f"weight {step.weight}%"
    if isinstance(step, PauseStep):
        return f"pause {step.duration_s:g}s" if step.duration_s is not None else "pause"
    return f"analysis {', '.join(step.metrics)} {step.duration_s:g}s"
