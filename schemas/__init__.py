"""Wire types of Nexus: events, subjects, codec and JSON Schema export.

This package imports msgspec only; every process (orchestrator, agent, CLI,
external tools) shares it.
"""

# schemas.events and schemas.pipelines import each other (pipeline events use the
# job envelope; the Event union includes them): importing events first, here,
# makes that order hold whichever module a caller names.
import schemas.events  # noqa: F401
