"""Schemathesis hooks of the API test (SCHEMATHESIS_HOOKS=tests/integration/schemathesis_hooks.py).

`POST /api/v1/jobs/{job_id}/test` waits up to `timeoutSeconds` (default 60, at most
600) for the results, then answers 202. That wait is the documented behaviour, but a
run of a few minutes must not spend most of it waiting: valid timeouts are capped at
2 s here, which keeps them valid (so a case stays positive or negative as generated).

With `--workers 2`, two threads may describe Hypothesis filter lambdas at once; each
description parses the lambda's source file with `ast.parse`, and on CPython 3.11
concurrent parses can fail with "SystemError: AST constructor recursion depth mismatch"
(a Runtime Error of the run, not of the API). Those descriptions are serialised here.
"""

from __future__ import annotations

import threading
from typing import Any

import schemathesis
from hypothesis.internal import lambda_sources

_describe = lambda_sources._lambda_description
_parsing = threading.Lock()


def _one_at_a_time(*args: Any, **kwargs: Any) -> Any:
    with _parsing:
        return _describe(*args, **kwargs)


lambda_sources._lambda_description = _one_at_a_time

CAP_S = 2.0
MAX_S = 600.0


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.method.upper() != "POST" or not case.path.endswith("/test") or not isinstance(case.body, dict):
        return
    timeout = case.body.get("timeoutSeconds", CAP_S)
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and 0 < timeout <= MAX_S:
        case.body["timeoutSeconds"] = min(timeout, CAP_S)
