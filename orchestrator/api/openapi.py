"""The OpenAPI document at /schema/openapi.json: what the server really accepts and answers.

Litestar writes the paths, operations and parameters. Three things it cannot
say well are settled here, once, when the document is first served:

- Component schemas come from msgspec (`msgspec.json.schema_components`), the
  same library that decodes the bodies: unknown fields refused
  (`additionalProperties: false`), ids as patterns, every bound of
  schemas.limits (lengths, entries, integer ranges) as JSON Schema keywords.
- Parameters a handler checks itself, to answer with its own problem slug,
  carry the pattern it enforces: path ids (`job_id`, `node_id`,
  `pipeline_id`: `subjects.check_id`, 400 `invalid-*-id`), `Last-Event-ID`
  (400 `invalid-last-event-id`), `label` and `prefer` (KEY=VALUE).
- Public paths (/health) need no `Authorization`; with a token file every
  other operation does (`bearer`); an open API documents no security at all.

Error answers are documented per route with `problems(...)`: each is
application/problem+json (`Problem`) with the statuses that route can give.
tests/integration/test_api_schema.py runs Schemathesis against a live API, so
the document cannot drift from the server.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import msgspec
from litestar import Request
from litestar.enums import OpenAPIMediaType
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import OpenAPIRenderPlugin

from orchestrator.api import models
from orchestrator.api.errors import MAX_BODY_BYTES, PROBLEM_JSON
from orchestrator.app import metrics_models
from schemas.limits import MAX_LABELS

_REF = "#/components/schemas/{name}"
PATH_IDS = frozenset({"job_id", "node_id", "pipeline_id"})

_PROBLEMS: dict[int, str] = {
    400: "`invalid-body`, `invalid-parameter`, `invalid-job-id`, `invalid-node-id`, `invalid-pipeline-id`, "
    "`invalid-last-event-id` or `invalid-request`: the request breaks a rule of this document",
    401: "`unauthorized`: no bearer token, or an unknown one (only when the API runs with a token file)",
    403: "`forbidden`: the caller's role is below the role this call needs; or, on an API without a token file, "
    "a `Host` or `Origin` that is not a loopback name (open mode serves this machine's own clients only)",
    404: "`unknown-job`, `unknown-node`, `unknown-pipeline` or `not-found`",
    409: "`wrong-state` (e.g. cancelling a finished job), `job-exists` or `pipeline-exists` (the id is taken by another request)",
    413: f"`too-large`: a body over {MAX_BODY_BYTES} bytes, or an event the bus would refuse as too large",
    415: "`unsupported-media-type`: a `Content-Type` other than `application/json` (`; charset=utf-8` allowed), or a body without one",
    422: "`unknown-node` (a job aimed at a node nobody knows), `conflicting-fields` (`nodeId` and `node` differ), "
    "`invalid-template` or `no-rollback-command`",
    503: "`unavailable` or `query-failed`: NATS or the orchestrator cannot answer now; retry later",
}
_ALWAYS = (400, 503)
_GUARDED = (401, 403)
_WITH_BODY = (413, 415)


def problems(*statuses: int, body: bool = False, public: bool = False) -> dict[int, ResponseSpec]:
    """The problem+json answers of one route: 400 and 503 always, 401/403 unless `public`,
    413/415 with a `body`, plus `statuses`."""
    chosen = sorted({*_ALWAYS, *(() if public else _GUARDED), *(_WITH_BODY if body else ()), *statuses})
    return {
        status: ResponseSpec(data_container=models.Problem, description=_PROBLEMS[status], media_type=PROBLEM_JSON, generate_examples=False)
        for status in chosen
    }


def _struct_types() -> list[type[msgspec.Struct]]:
    """Every public body model of the API (the Structs they use come along)."""
    return [
        obj
        for module in (models, metrics_models)
        for name, obj in vars(module).items()
        if inspect.isclass(obj) and issubclass(obj, msgspec.Struct) and obj.__module__ == module.__name__ and not name.startswith("_")
    ]


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


def _constrain(param: dict[str, Any]) -> None:
    """The pattern a handler enforces on a parameter (with its own problem slug), in the document."""
    where, name = param.get("in"), param.get("name")
    if where == "path" and name in PATH_IDS:
        param["schema"] = {"type": "string", "pattern": models.ID_PATTERN, "description": "[A-Za-z0-9_-]{1,64}"}
    elif (where, name) in (("header", "Last-Event-ID"), ("query", "lastEventId")):
        param["schema"] = {"type": "string", "pattern": models.POSITION_PATTERN}
        param["example"] = "12:3"
    elif (where, name) in (("query", "label"), ("query", "prefer")):
        items = {"type": "string", "pattern": models.LABEL_PATTERN}
        param["schema"] = {"type": "array", "items": items, "maxItems": MAX_LABELS}


# What POST /api/v1/jobs refuses before storing (core.judge.invalid, app/refusals.py `refuse_unrunnable`),
# said in the document as patterns: a command with something to run, no NUL byte a process could
# not take, env names without `=`. The server's answer is its own 400 `invalid-body`, with the reason.
_NO_NUL = "^[^\\x00]*$"
_RUNNABLE = {
    "command": "^[^\\x00]*[^\\x00\\s][^\\x00]*$",
    "tool": _NO_NUL,
    "workingDir": _NO_NUL,
    "working_dir": _NO_NUL,
}


def _runnable(body: dict[str, Any]) -> None:
    """Constrain a job body's schema (in place) to what a process can be given."""
    props = body["properties"]
    for name, pattern in _RUNNABLE.items():
        for schema in props[name].get("anyOf", [props[name]]):
            if schema.get("type") == "string":
                schema["pattern"] = pattern
    for name in ("env", "secretEnv"):
        props[name]["propertyNames"]["pattern"] = "^[^=\\x00]+$"
        props[name]["additionalProperties"]["pattern"] = _NO_NUL


def _nullable(body: dict[str, Any]) -> bool:
    """Whether a request body's schema takes null: the route's body is optional."""
    schema = body.get("content", {}).get("application/json", {}).get("schema", {})
    return any(s.get("type") == "null" for s in schema.get("oneOf", schema.get("anyOf", [])))


def refine(document: dict[str, Any], *, secured: bool, public_prefixes: tuple[str, ...]) -> dict[str, Any]:
    """The document Litestar generated, with the schemas, ids and security the server enforces."""
    doc = copy.deepcopy(document)
    _, components = msgspec.json.schema_components(_struct_types(), ref_template=_REF)
    doc.setdefault("components", {})["schemas"] = {**doc.get("components", {}).get("schemas", {}), **components}
    _runnable(doc["components"]["schemas"]["CreateJobRequest"])
    for path, item in doc.get("paths", {}).items():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for param in operation.get("parameters", []):
                _constrain(param)
            body = operation.get("requestBody")
            if body is not None and _nullable(body):
                body["required"] = False  # `JSONBody[X | None] = None`: no body at all is fine (Litestar says required)
            if secured and path.startswith(public_prefixes):
                operation["security"] = []
    if not secured:
        doc.pop("security", None)
        doc.get("components", {}).pop("securitySchemes", None)
    missing = {r for r in _refs(doc) if r.removeprefix("#/components/schemas/") not in doc["components"]["schemas"]}
    assert not missing, f"OpenAPI document refers to undefined schemas: {sorted(missing)}"
    return doc


class RefinedJson(OpenAPIRenderPlugin):
    """Serves /schema/openapi.json: Litestar's document passed through `refine` (computed once)."""

    def __init__(self, *, secured: bool, public_prefixes: tuple[str, ...]) -> None:
        super().__init__(path="/openapi.json", media_type=OpenAPIMediaType.OPENAPI_JSON)
        self.secured = secured
        self.public_prefixes = public_prefixes
        self._rendered: bytes | None = None

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        if self._rendered is None:
            doc = refine(openapi_schema, secured=self.secured, public_prefixes=self.public_prefixes)
            self._rendered = self.render_json(request, doc)
        return self._rendered
