"""Stored rollout documents are validated when read back: a damaged row is an error that
names the record and the field, never a KeyError or a wrong value further on."""

from __future__ import annotations

import pytest

from entrega.errors import EntregaError, InvalidRecord
from entrega.rollouts.model import (
    AnalysisStep,
    CohortStep,
    PauseStep,
    Phase,
    RolloutSpec,
    UsersStep,
    WeightStep,
    initial_state,
    spec_from_dict,
    spec_to_dict,
    state_from_dict,
    state_to_dict,
)

GOOD_STATE = state_to_dict(initial_state(stable="1.0", canary="1.1", now=100.0))
GOOD_SPEC = spec_to_dict(RolloutSpec(strategy="canary", steps=(WeightStep(5),)))


@pytest.mark.parametrize(("change", "field", "problem"), [
    ({"phase": "exploding"}, "phase", "Input should be 'pending'"),
    ({"phase": None}, "phase", "Input should be"),
    ({"canary": None}, "canary", "valid string"),
    ({"weights": {"1.0": "most"}}, "weights.1.0", "valid integer"),
    ({"analysis": {"window": 1}}, "analysis.started_at", "Field required"),
    ({"cohort": {"percent": "half"}}, "cohort.percent", "valid integer"),
    ({"analysis_history": "none"}, "analysis_history", "valid tuple"),
], ids=["unknown-phase", "no-phase", "no-canary", "weight-not-a-number",
        "analysis-incomplete", "cohort-percent", "history-not-a-list"])
def test_a_damaged_state_names_the_field(change: dict[str, object], field: str,
                                          problem: str) -> None:
    with pytest.raises(InvalidRecord) as caught:
        state_from_dict({**GOOD_STATE, **change})
    message = str(caught.value)
    assert message.startswith("the stored state of a rollout is invalid: ")
    assert f"{field}: " in message and problem in message
    assert "ValidationError" not in message and "pydantic" not in message


def test_a_missing_field_without_default_is_named() -> None:
    data = {k: v for k, v in GOOD_STATE.items() if k != "canary"}
    with pytest.raises(InvalidRecord, match="canary: Field required"):
        state_from_dict(data)


def test_a_state_that_is_not_a_document_is_refused() -> None:
    with pytest.raises(InvalidRecord) as caught:
        state_from_dict(["pending"])
    assert str(caught.value) == ("the stored state of a rollout is invalid: the document: "
                                 "expected a JSON object")


@pytest.mark.parametrize(("steps", "field", "problem"), [
    ([{"wait": 5}], "steps[0]", "a step is one of weight, pause, analysis, cohort or users"),
    ([{"weight": "lots"}], "steps[0].weight.weight", "Input should be a valid integer"),
    ([{"analysis": {"metrics": ["error-rate"]}}], "steps[0].analysis.duration_s",
     "Field required"),
    (["weight"], "steps[0]", "a step is one of"),
], ids=["unknown-kind", "weight-not-a-number", "analysis-without-duration", "bare-string"])
def test_a_damaged_spec_names_the_step(steps: list[object], field: str, problem: str) -> None:
    with pytest.raises(InvalidRecord) as caught:
        spec_from_dict({**GOOD_SPEC, "steps": steps})
    assert str(caught.value).startswith("the stored spec of a rollout is invalid: ")
    assert f"{field}: {problem}" in str(caught.value)


def test_an_unknown_strategy_is_refused() -> None:
    with pytest.raises(InvalidRecord, match="strategy: Input should be 'canary'"):
        spec_from_dict({**GOOD_SPEC, "strategy": "yolo"})


def test_invalid_records_are_entrega_errors() -> None:
    """So the API answers them with a sentence, like every other failure."""
    assert issubclass(InvalidRecord, EntregaError)


def test_every_step_kind_has_its_stored_shape() -> None:
    spec = RolloutSpec(strategy="canary", steps=(
        WeightStep(5), PauseStep(), PauseStep(60.0), CohortStep("beta"), UsersStep(10),
        AnalysisStep(metrics=("error-rate",), duration_s=30.0)))
    data = spec_to_dict(spec)
    assert data["steps"][:5] == [{"weight": 5}, {"pause": {"duration_s": None}},
                                 {"pause": {"duration_s": 60.0}}, {"cohort": "beta"},
                                 {"users": 10}]
    assert data["steps"][5]["analysis"]["metrics"] == ["error-rate"]
    assert spec_from_dict(data) == spec


def test_a_pause_stored_without_duration_waits_for_promote() -> None:
    spec = spec_from_dict({**GOOD_SPEC, "steps": [{"pause": {}}]})
    assert spec.steps == (PauseStep(None),)


def test_the_phase_is_stored_as_its_plain_string() -> None:
    data = state_to_dict(initial_state(stable=None, canary="1.0", now=0.0))
    assert data["phase"] == "pending" and type(data["phase"]) is str
    assert state_from_dict(data).phase is Phase.PENDING
