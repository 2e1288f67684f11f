"""entrega.yaml sections become domain values through one mapping each (``codec.from_config``):
every configured field arrives, lists become tuples, nothing is copied by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from entrega.api.insights import feedback_settings
from entrega.config import Config, validate_config
from entrega.controller.launch import spec_for
from entrega.controller.runtime import _local_target
from entrega.feedback import FeedbackSettings
from entrega.rollouts.model import (
    AnalysisStep,
    Cohort,
    CohortStep,
    PauseStep,
    RolloutSpec,
    UsersStep,
    WeightStep,
)
from entrega.targets.base import HealthCheck


def config(tmp_path: Path, **sections: Any) -> Config:
    environment = {"name": "production", "router": {"kind": "embedded",
                                                    "listen": "127.0.0.1:18080"},
                   **sections.pop("environment", {})}
    data = {"app": "shop", "run": {"command": "true", **sections.pop("run", {})},
            "environments": [environment], **sections}
    return validate_config(data, file="entrega.yaml", lines={}, base_dir=tmp_path)


def test_canary_steps_and_cohort_map_field_by_field(tmp_path: Path) -> None:
    strategy = {"canary": {
        "cohort": {"header": "X-Beta", "value": None, "user_cookie": "uid",
                   "users": ["alice", "bob"]},
        "steps": [{"weight": 5}, {"cohort": "staff"}, {"users": "10%"}, {"pause": {}},
                  {"analysis": {"metrics": ["error-rate"], "duration_s": 20,
                                "check_every_s": 2, "failure_limit": 1,
                                "inconclusive_limit": 3}},
                  {"pause": {"duration_s": 60}}, {"weight": 100}]}}
    env = config(tmp_path, environment={"strategy": strategy}).environments[0]
    assert spec_for(env) == RolloutSpec(
        strategy="canary",
        steps=(WeightStep(5), CohortStep("staff"), UsersStep(10), PauseStep(None),
               AnalysisStep(metrics=("error-rate",), duration_s=20.0, check_every_s=2.0,
                            failure_limit=1, inconclusive_limit=3),
               PauseStep(60.0), WeightStep(100)),
        cohort=Cohort(header="X-Beta", value=None, user_header="X-User-Id",
                      user_cookie="uid", users=("alice", "bob")))


def test_blue_green_settings_map_and_verification_follows_the_environment(
        tmp_path: Path) -> None:
    strategy = {"blue-green": {"auto_promote": False, "scale_down_delay_s": 7}}
    env = config(tmp_path, environment={
        "strategy": strategy, "verify": [{"http": {"path": "/healthz"}}]}).environments[0]
    assert spec_for(env) == RolloutSpec(strategy="blue-green", auto_promote=False,
                                        scale_down_delay_s=7.0, verify=True)
    assert spec_for(env, rollback=True).verify is False


def test_health_check_settings_reach_the_local_target(tmp_path: Path) -> None:
    cfg = config(tmp_path, run={"health": {"path": "/ready", "interval_s": 0.25,
                                           "timeout_s": 1.5, "healthy_threshold": 2,
                                           "unhealthy_threshold": 4}})
    target = _local_target(cfg, cfg.environments[0])
    assert target.health == HealthCheck(path="/ready", interval_s=0.25, timeout_s=1.5,
                                        healthy_threshold=2, unhealthy_threshold=4)


def test_feedback_settings_come_from_the_feedback_section(tmp_path: Path) -> None:
    cfg = config(tmp_path, feedback={"max_body_bytes": 1024, "rate_per_minute": 3,
                                     "burst": 2, "cors_origins": ["https://shop.example"],
                                     "trusted_proxies": ["127.10.0.0/16"]})
    assert feedback_settings(cfg) == FeedbackSettings(
        max_body_bytes=1024, rate_per_minute=3.0, burst=2,
        cors_origins=("https://shop.example",), trusted_proxies=("127.10.0.0/16",))
    assert feedback_settings(object()) == FeedbackSettings()
