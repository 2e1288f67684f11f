"""Schemathesis over the OpenAPI document: every operation, inputs that fit the schema and
inputs that do not, in process (ASGI) against the real app on a real store in a temp dir.

Whatever it sends, the answer is never a 5xx and never shows an exception class name or a
server path. Bounded: ``EXAMPLES`` per operation and mode, and ``BUDGET_S`` in all (past
it, the remaining examples are not sent), so it stays a few seconds of `make test`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.python import asgi

from tests.api.test_errors import leaks
from tests.insights.stack import TOKENS, make_stack

EXAMPLES = 20
BUDGET_S = 40.0


def fuzz(operation: Any, mode: GenerationMode, *, session: Any, headers: dict[str, str],
         deadline: float, found: list[str], sent: list[int]) -> None:
    """Send up to EXAMPLES cases of one operation in one mode; record bad answers."""
    strategy = operation.as_strategy(generation_mode=mode)

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        if time.monotonic() > deadline:
            return
        response = case.call(session=session, headers=headers)
        sent[0] += 1
        if response.status_code >= 500 or leaks(response.text):
            found.append(f"{operation.label} ({mode.value}): {response.status_code} "
                         f"{response.text[:300]}\n  {case.as_curl_command()}")

    try:
        run()
    except Unsatisfiable:
        # no invalid input exists (an operation without parameters): nothing to send
        assert mode is GenerationMode.NEGATIVE, operation.label


def test_no_server_errors_and_no_leaks(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)
    schema = schemathesis.openapi.from_asgi("/openapi.json", stack.app)
    headers = {"Authorization": f"Bearer {TOKENS['admin']}"}
    deadline = time.monotonic() + BUDGET_S
    found: list[str] = []
    sent = [0]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]
    with asgi.get_client(stack.app) as session:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                fuzz(operation, mode, session=session, headers=headers, deadline=deadline,
                     found=found, sent=sent)
    print(f"schemathesis: {sent[0]} requests over {len(operations)} operations in "
          f"{time.monotonic() - deadline + BUDGET_S:.1f} s")
    assert not found, f"{len(found)} bad answers of {sent[0]}:\n" + "\n".join(found[:20])
    assert sent[0] >= len(operations) * 2, f"only {sent[0]} requests within {BUDGET_S} s"
