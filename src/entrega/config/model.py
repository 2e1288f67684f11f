"""The base of every section of entrega.yaml: unknown keys are refused (a typo is an
error, never a silently ignored setting), values are frozen once read."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
