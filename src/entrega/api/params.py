"""Types of what the API takes in paths, queries and bodies, with their rules in the
OpenAPI document: versions and environment names by ``entrega.names``'s one rule, ids
and limits within what the store can hold (SQLite integers are 64-bit)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator, WithJsonSchema

from entrega import names

MAX_ID = 2**63 - 1

Version = Annotated[str, AfterValidator(names.check_version), WithJsonSchema(
    {"type": "string", "pattern": names.VERSION_PATTERN, "maxLength": 128,
     "description": f"a release's version: {names.VERSION_RULE}"})]
Environment = Annotated[str, AfterValidator(names.check_environment), WithJsonSchema(
    {"type": "string", "pattern": names.NAME_PATTERN, "maxLength": 63,
     "description": f"an environment's name: {names.NAME_RULE}"})]
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]
Limit = Annotated[int, Query(ge=1, le=100_000)]
