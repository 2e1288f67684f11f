"""The pipeline: a release flows through the environments in their configured order.

A release that succeeded in one environment is requested for the next one: queued at
once through an ``automatic`` gate, or left ``awaiting_approval`` at a ``manual`` one.
An environment runs one rollout at a time; when it is idle, its newest queued request
starts (older ones were superseded when the newer one arrived). A rollout that rolled
back or failed requests nothing: the flow stops there.
"""

from __future__ import annotations

import logging

from entrega.config import Config
from entrega.controller.launch import launch_rollout
from entrega.errors import EntregaError
from entrega.store.models import DeployRequest, Rollout
from entrega.store.repository import Repository
from entrega.vocabulary import EventKind, Phase, RequestStatus

log = logging.getLogger("entrega.controller")


def start_next(repo: Repository, config: Config, environment: str, *,
               waiting: list[DeployRequest] | None = None) -> Rollout | None:
    """Start the environment's queued request, if any (the environment must be idle).
    ``waiting``: its waiting requests, when the caller has just read them."""
    if waiting is None:
        waiting = repo.waiting_requests(config.app, environment)
    queued = [r for r in waiting if r.status == RequestStatus.QUEUED]
    if not queued:
        return None
    request = queued[-1]
    try:
        rollout = launch_rollout(repo, config, environment=environment,
                                 version=request.version, actor=request.actor,
                                 strategy=request.strategy, reason=request.reason)
    except EntregaError as exc:
        repo.set_request_status(request.id, RequestStatus.CANCELLED)
        repo.add_event(app=config.app, environment=environment, version=request.version,
                       kind=EventKind.ERROR, actor="controller",
                       message=f"queued deploy of {request.version} dropped: {exc}")
        return None
    repo.set_request_status(request.id, RequestStatus.STARTED, rollout_id=rollout.id)
    return rollout


def after_success(repo: Repository, config: Config, rollout: Rollout) -> None:
    """Request the next environment for a release that succeeded in this one."""
    if rollout.purpose != "deploy":
        return  # restoring an old release moves nothing along the pipeline
    if rollout.group_id is not None:
        return  # a release group's members enter the next environment together (plane/)
    names = [e.name for e in config.environments]
    position = names.index(rollout.environment)
    if position + 1 == len(names):
        repo.add_event(app=config.app, environment=rollout.environment,
                       version=rollout.version, rollout_id=rollout.id, kind=EventKind.RELEASED,
                       actor="controller",
                       message=f"{rollout.version} reached {rollout.environment}, the last "
                               "environment of the pipeline")
        return
    following = config.environments[position + 1]
    reason = f"passed {rollout.environment}"
    if following.gate == "automatic":
        repo.add_request(app=config.app, environment=following.name, version=rollout.version,
                         status=RequestStatus.QUEUED, actor="controller", reason=reason)
        return
    repo.add_request(app=config.app, environment=following.name, version=rollout.version,
                     status=RequestStatus.AWAITING_APPROVAL, actor="controller", reason=reason)
    repo.add_event(app=config.app, environment=following.name, version=rollout.version,
                   kind=EventKind.APPROVAL_NEEDED, actor="controller",
                   message=f"{rollout.version} passed {rollout.environment} and waits for "
                           f"approval to enter {following.name} (entrega approve "
                           f"{rollout.version} --env {following.name})")


def passed(repo: Repository, app: str, version: str) -> set[str]:
    """Environments where ``version`` was rolled out successfully (as a deploy)."""
    return {r.environment for r in repo.rollouts(app, limit=1000)
            if r.version == version and r.phase == Phase.SUCCEEDED and r.purpose == "deploy"}


def order_problem(repo: Repository, config: Config, environment: str,
                  version: str) -> str | None:
    """Why ``version`` may not enter ``environment`` yet, or None."""
    names = [e.name for e in config.environments]
    earlier = names[:names.index(environment)]
    missing = [name for name in earlier if name not in passed(repo, config.app, version)]
    if missing:
        return (f"{version} has not passed {', '.join(missing)}; releases reach "
                f"{environment} only through {' -> '.join(names)}")
    return None
