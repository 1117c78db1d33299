"""JSON Schema of every event: `python -m schemas.export` or `nexus schema`."""

from __future__ import annotations

import typing

import msgspec

from schemas.events import Event, NodeHeartbeat


def json_schema() -> dict[str, typing.Any]:
    (events, heartbeat), components = msgspec.json.schema_components(
        [Event, NodeHeartbeat], ref_template="#/$defs/{name}"
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Nexus events",
        "description": "Every payload on nexus.evt.>, tagged by `type`; and the nexus-nodes heartbeat value.",
        "oneOf": events.get("anyOf", [events]),
        "$defs": components,
    }


def main() -> None:
    print(msgspec.json.format(msgspec.json.encode(json_schema()), indent=2).decode())


if __name__ == "__main__":
    main()
