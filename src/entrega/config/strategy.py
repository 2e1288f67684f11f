"""``strategy:``: how a new release reaches users, canary (its steps: weights, pauses,
analysis, cohorts), blue-green or rolling over a fleet's hosts, and the progress deadline
every strategy shares."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from entrega.config.model import Model as _Model


class AnalysisStepConfig(_Model):
    metrics: list[str] = Field(min_length=1)
    #: How long the step watches the canary before it can pass.
    duration_s: float = Field(30.0, gt=0)
    #: The controller measures and judges this often during the step.
    check_every_s: float = Field(1.0, gt=0)
    #: Failed checks tolerated before rollback (0: the first failure rolls back).
    failure_limit: int = Field(0, ge=0)
    #: Extra durations granted when the step ends inconclusive, then it pauses for a human.
    inconclusive_limit: int = Field(2, ge=0)


class PauseStepConfig(_Model):
    #: None pauses until `entrega promote`.
    duration_s: float | None = Field(None, ge=0)


class CohortConfig(_Model):
    """Who the selected users are: sent to the canary by ``cohort:`` and ``users:`` steps."""

    #: Requests carrying this header (with ``value``, when given) are in the cohort.
    header: str = "X-Entrega-Cohort"
    value: str | None = "beta"
    #: Where a request's user id is: a header and/or a cookie.
    user_header: str | None = "X-User-Id"
    user_cookie: str | None = None
    #: User ids always in the cohort (an allowlist).
    users: list[str] = []


def _percent(value: Any) -> Any:
    if isinstance(value, str) and value.strip().endswith("%"):
        return value.strip()[:-1].strip()
    return value


class CanaryStepConfig(_Model):
    weight: int | None = Field(None, ge=0, le=100)
    pause: PauseStepConfig | None = None
    analysis: AnalysisStepConfig | None = None
    #: Send the cohort (header, allowlist) to the canary; the name is shown in status.
    cohort: str | None = None
    #: Also send this share of users (by a stable hash of their id), e.g. "10%".
    users: int | None = Field(None, ge=0, le=100)

    _users_percent = field_validator("users", mode="before")(_percent)

    @model_validator(mode="after")
    def _exactly_one(self) -> CanaryStepConfig:
        kinds = ("weight", "pause", "analysis", "cohort", "users")
        given = [k for k in kinds if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a step is exactly one of weight, pause, analysis, cohort or users")
        return self


class CanaryConfig(_Model):
    steps: list[CanaryStepConfig] = Field(min_length=1)
    cohort: CohortConfig = CohortConfig()
    #: ssh target: the canary starts on this many hosts first (a count, or a share like
    #: "25%" rounded up), the first in ``hosts:`` order that can run it; it starts on
    #: the others before it takes all traffic. Unset: on every host at once.
    canary_hosts: int | str | None = None
    #: ssh target: hosts that may be left out of the rollout (unreachable, crash loop,
    #: not ready in time) while it goes on with the others: a count or a share rounded
    #: down. 0, as in rolling: a host that cannot run a release usually means the
    #: release is wrong, not the host.
    max_failed: int | str = 0

    @field_validator("canary_hosts", mode="before")
    @classmethod
    def _canary_hosts(cls, value: object) -> int | str | None:
        return None if value is None else _hosts_count_or_share(value, least=1)

    @field_validator("max_failed", mode="before")
    @classmethod
    def _max_failed(cls, value: object) -> int | str:
        return _hosts_count_or_share(value, least=0)

    @field_validator("steps")
    @classmethod
    def _weights_rise(cls, steps: list[CanaryStepConfig]) -> list[CanaryStepConfig]:
        last = last_users = 0
        for step in steps:
            if step.weight is not None:
                if step.weight < last:
                    raise ValueError(f"weights must not go down (got {step.weight} after {last})")
                last = step.weight
            if step.users is not None:
                if step.users < last_users:
                    raise ValueError(f"users must not go down (got {step.users}% after "
                                     f"{last_users}%)")
                last_users = step.users
        return steps


class BlueGreenConfig(_Model):
    #: Switch as soon as the preview passes verification; false waits for `entrega promote`.
    auto_promote: bool = True
    #: The old release stays running this long after the switch, so a rollback is instant.
    scale_down_delay_s: float = Field(30.0, ge=0)
    #: ssh target: hosts that may be left out (as canary's ``max_failed``).
    max_failed: int | str = 0

    @field_validator("max_failed", mode="before")
    @classmethod
    def _max_failed(cls, value: object) -> int | str:
        return _hosts_count_or_share(value, least=0)


def _hosts_count_or_share(value: object, *, least: int) -> int | str:
    """A count of hosts (``2``) or a share of a fleet (``"25%"``), as rolling takes them."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < least:
            raise ValueError(f"expected at least {least}, got {value}")
        return value
    text = str(value).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", text)
    if match is None:
        if text.isdigit():
            return _hosts_count_or_share(int(text), least=least)
        raise ValueError(f"expected a number of hosts (like 2) or a share of them "
                         f"(like \"25%\"), got {value!r}")
    share = float(match.group(1))
    if not (0 < share <= 100 if least else 0 <= share <= 100):
        raise ValueError(f"a share is {'above 0' if least else 'from 0'} to 100%, got {text}")
    return f"{match.group(1)}%"


class RollingConfig(_Model):
    """Rolling over the hosts of an ssh target, a batch at a time (Ansible's ``serial``).

    ``batch``: hosts per batch, a count or a share of the fleet (``"25%"``, rounded up).
    ``max_failed``: failed hosts tolerated before the rollout stops and restores the old
    release everywhere, a count or a share (rounded down); 0 by default because a host
    that cannot run the release usually means the release is wrong, not the host.
    ``max_unavailable``: hosts that may be out of serving at once, a count or a share
    (rounded down); unset, a whole batch is drained while it starts the new release,
    which is fastest; fewer keeps the rest of the batch serving the old release until
    the new one is ready beside it (0: no host ever leaves the route table before its
    replacement is ready).
    """

    batch: int | str = 1
    max_failed: int | str = 0
    max_unavailable: int | str | None = None
    #: Time to watch a batch's hosts serve before the next batch is drained.
    pause_between_batches_s: float = Field(0.0, ge=0)
    #: After each batch serves (while the old release still serves other hosts), judge
    #: the new release against the old on live traffic as a canary analysis step does;
    #: a failure restores the old release. None: no analysis.
    analysis: AnalysisStepConfig | None = None

    @field_validator("batch", mode="before")
    @classmethod
    def _batch(cls, value: object) -> int | str:
        return _hosts_count_or_share(value, least=1)

    @field_validator("max_failed", mode="before")
    @classmethod
    def _max_failed(cls, value: object) -> int | str:
        return _hosts_count_or_share(value, least=0)

    @field_validator("max_unavailable", mode="before")
    @classmethod
    def _max_unavailable(cls, value: object) -> int | str | None:
        return None if value is None else _hosts_count_or_share(value, least=0)


class StrategyConfig(_Model):
    """How new releases reach users. Several may be given: ``default`` is used unless a
    deploy asks for another (``entrega deploy --strategy blue-green``)."""

    canary: CanaryConfig | None = None
    blue_green: BlueGreenConfig | None = Field(None, alias="blue-green")
    rolling: RollingConfig | None = None
    default: Literal["canary", "blue-green", "rolling"] | None = None
    #: How long a new release may take to become ready (every instance healthy, on
    #: every host) before its rollout fails saying why it was not.
    progress_deadline_s: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _at_least_one(self) -> StrategyConfig:
        configured = {"canary": self.canary, "blue-green": self.blue_green,
                      "rolling": self.rolling}
        given = [name for name, value in configured.items() if value is not None]
        if not given:
            raise ValueError("give canary, blue-green or rolling (or several, with default:)")
        if self.default is not None and configured[self.default] is None:
            raise ValueError(f"default is {self.default} but it is not configured")
        if len(given) > 1 and self.default is None and "rolling" in given:
            raise ValueError(f"{' and '.join(given)} are configured: say which is used "
                             "with default:")
        return self

    @property
    def name(self) -> str:
        if self.default:
            return self.default
        if self.canary is not None:
            return "canary"
        return "blue-green" if self.blue_green is not None else "rolling"
