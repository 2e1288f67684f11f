"""JSON from users (webhook bodies, feedback, upload metadata): one value per key.

Python's ``json`` keeps the last of two equal keys in an object, silently, while other
parsers keep the first: a body signed and checked by one tool could then mean something
else to entrega. As for entrega.yaml (see config.py), a key given twice is refused.
"""

from __future__ import annotations

import json
from typing import Any


def refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads`; raises ValueError on a repeated key."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"duplicate key {key!r} in a JSON object")
        data[key] = value
    return data


def loads_json(text: str | bytes) -> Any:
    """:func:`json.loads` that refuses duplicate keys and nesting deeper than Python's
    recursion limit (ValueError, like any bad JSON)."""
    try:
        return json.loads(text, object_pairs_hook=refuse_duplicate_keys)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
