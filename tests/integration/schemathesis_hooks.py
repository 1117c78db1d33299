"""Schemathesis hooks of the API test (SCHEMATHESIS_HOOKS=tests/integration/schemathesis_hooks.py).

`POST /api/v1/jobs/{job_id}/test` waits up to `timeoutSeconds` (default 60, at most
600) for the results, then answers 202. That wait is the documented behaviour, but a
run of a few minutes must not spend most of it waiting: valid timeouts are capped at
2 s here, which keeps them valid (so a case stays positive or negative as generated).

Hypothesis describes every filter lambda (only for its reprs) by parsing the lambda's source
file with `ast.parse`; on CPython 3.11.7 that parse can fail with "SystemError: AST
constructor recursion depth mismatch" (a CPython bug, seen with 3.11.7), which
Schemathesis reports as a Runtime Error of the run, not of the API. The description is
cosmetic, so here it is made without parsing.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis.internal import lambda_sources


def _plain_description(f: Any) -> str:
    return f"lambda: <{getattr(f, '__qualname__', 'lambda')}>"


lambda_sources.lambda_description = _plain_description

CAP_S = 2.0
MAX_S = 600.0


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.method.upper() != "POST" or not case.path.endswith("/test") or not isinstance(case.body, dict):
        return
    timeout = case.body.get("timeoutSeconds", CAP_S)
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and 0 < timeout <= MAX_S:
        case.body["timeoutSeconds"] = min(timeout, CAP_S)
