"""Schemathesis hooks of the API test (SCHEMATHESIS_HOOKS=tests/integration/schemathesis_hooks.py).

`POST /api/v1/jobs/{job_id}/test` waits up to `timeoutSeconds` (default 60, at most
600) for the results, then answers 202. That wait is the documented behaviour, but a
run of a few minutes must not spend most of it waiting: valid timeouts are capped at
2 s here, which keeps them valid (so a case stays positive or negative as generated).
"""

from __future__ import annotations

from typing import Any

import schemathesis

CAP_S = 2.0
MAX_S = 600.0


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.method.upper() != "POST" or not case.path.endswith("/test") or not isinstance(case.body, dict):
        return
    timeout = case.body.get("timeoutSeconds", CAP_S)
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and 0 < timeout <= MAX_S:
        case.body["timeoutSeconds"] = min(timeout, CAP_S)
