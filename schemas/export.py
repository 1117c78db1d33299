"""JSON Schema of every event: `python -m schemas.export` or `nexus schema`."""

from __future__ import annotations

import typing

import msgspec

from schemas.events import Event, NodeHeartbeat

_EVENT_NAMES = {cls.__name__ for cls in typing.get_args(Event)}


def json_schema() -> dict[str, typing.Any]:
    (events, _heartbeat), components = msgspec.json.schema_components([Event, NodeHeartbeat], ref_template="#/$defs/{name}")
    for name, definition in components.items():
        # The decoder takes the type from the subject, so publishers may leave `type` out.
        if name in _EVENT_NAMES and "type" in definition.get("required", []):
            definition["required"] = [f for f in definition["required"] if f != "type"]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Nexus events",
        "description": "Every payload on nexus.evt.>, tagged by `type`; and the nexus-nodes heartbeat value.",
        "oneOf": events.get("anyOf", [events]),
        "$defs": components,
    }


def main() -> None:
    try:
        print(msgspec.json.format(msgspec.json.encode(json_schema()), indent=2).decode())
    except BrokenPipeError:  # the reader left (`| head`): end quietly with 1, as click ends `nexus schema`
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
