"""Limits on everything that crosses an edge (bus, HTTP API, CLI, YAML).

One place, so the API, the codec, the decider and docs/operations.md agree.
Strings are bounded in characters (what msgspec checks); the byte budget of a
whole message is checked separately (`MAX_EVENT_BYTES`), since a dispatch
carries the command twice (as `command` and in `argv`).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

# ------------------------------------------------------------ whole messages

MAX_EVENT_BYTES = 512 * 1024
"""Largest event payload Nexus decodes or publishes (a dispatch included). The
NATS server's default max_payload is 1 MiB; half of it leaves room for headers."""
MAX_DEPTH = 32
"""Deepest nesting of JSON arrays/objects in any payload (ours need fewer than 8)."""
MAX_OUTPUT_TEST_BYTES = 64 * 1024
"""`output_contains` looks at the output through a window this much larger than each chunk."""

# ------------------------------------------------------------ numbers

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_PRIORITY = 1_000_000
MAX_TIMEOUT_S = 30 * 24 * 3600.0
"""Longest timeout for a job, a test or a health check: 30 days."""
MAX_MAX_JOBS = 10_000

# ------------------------------------------------------------ strings and collections

MAX_COMMAND_CHARS = 64 * 1024
MAX_PATH_CHARS = 4096
MAX_NAME_CHARS = 256
"""Tool names, users, label keys and values, env names."""
MAX_ENV_VALUE_CHARS = 16 * 1024
MAX_ENV_ENTRIES = 64
MAX_LABELS = 32
MAX_TESTS = 32
MAX_PATTERN_CHARS = 4096
MAX_METADATA_ENTRIES = 64
MAX_METADATA_CHARS = 4096
MAX_AFTER = 100
MAX_REASON_CHARS = 4096
MAX_PIPELINE_STEPS = 256
MAX_LIST_ITEMS = 1000
"""Any other list on the wire (tools, candidates, results, ...)."""

# ------------------------------------------------------------ annotated types for Structs

Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
Count = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
Attempt = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
Priority = Annotated[int, msgspec.Meta(ge=-MAX_PRIORITY, le=MAX_PRIORITY)]
TimeoutS = Annotated[float, msgspec.Meta(gt=0, le=MAX_TIMEOUT_S)]
Command = Annotated[str, msgspec.Meta(max_length=MAX_COMMAND_CHARS)]
Path = Annotated[str, msgspec.Meta(max_length=MAX_PATH_CHARS)]
Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME_CHARS)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_REASON_CHARS)]
Pattern = Annotated[str, msgspec.Meta(max_length=MAX_PATTERN_CHARS)]
EnvValue = Annotated[str, msgspec.Meta(max_length=MAX_ENV_VALUE_CHARS)]
Env = Annotated[dict[Name, EnvValue], msgspec.Meta(max_length=MAX_ENV_ENTRIES)]
Labels = Annotated[dict[Name, Name], msgspec.Meta(max_length=MAX_LABELS)]
Names = Annotated[list[Name], msgspec.Meta(max_length=MAX_LIST_ITEMS)]
MetaText = Annotated[str, msgspec.Meta(max_length=MAX_METADATA_CHARS)]
MetaValue = MetaText | Int64 | float | bool | None
Metadata = Annotated[dict[Name, MetaValue], msgspec.Meta(max_length=MAX_METADATA_ENTRIES)]


JOB_OUTPUT_MAX_BYTES = 1024 * 1024 * 1024
"""Output an agent keeps of one attempt by default (`--output-max-mb`): past it the command runs on,
its output is read and dropped, and `exited.output_dropped` counts it. One runaway job (`yes`) can
then push at most this much of everyone's older output out of NEXUS_OUTPUT (8 GiB by default)."""

DISPATCH_TTL_S = 15 * 60
"""A dispatch not accepted within this long of its decision is refused by the agent (signed expiry)."""
