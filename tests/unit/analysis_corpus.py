"""The labelled command corpus of the risk analysis, read from tests/unit/corpus/.

Each line of a `corpus/<part>/<domain>.txt` file is `LABEL SOURCE COMMAND`:

- LABEL is the severity a reviewer expects: `critical` (held for approval on production),
  `warning`, `info` or `none`; `@TOOL` after it names the tool the command is for
  (`critical@psql`), and a trailing `?` marks a known gap (the analyzer is known to miss it;
  it stays in so the figures stay honest).
- SOURCE says where the command comes from (see corpus/README.md): `issue12` (the issue that
  asked for this corpus), `nexus` (the earlier corpus of this project), `nexus:<tool>` (written
  for this corpus after the tool's documented usage), `dcg:<pack>` (a destructive form one of
  the packs of the public destructive_command_guard lists).
- COMMAND runs to the end of the line; `⏎` stands for a newline (heredocs).

`tuned/` is the part the rules were developed against; `heldout/` was written before it was
ever run through the analyzer and is only measured, never tuned on. It came in two batches:
`heldout/<domain>.txt` (measured once, then the analyzer bugs it showed were fixed, its labels
unchanged) and `heldout/<domain>.2.txt` (written after that, measured once, nothing fixed since).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple

Expected = Literal["info", "warning", "critical"] | None
Part = Literal["tuned", "heldout"]
CORPUS_DIR = Path(__file__).parent / "corpus"
_LABELS: dict[str, Expected] = {"none": None, "info": "info", "warning": "warning", "critical": "critical"}


class Case(NamedTuple):
    command: str
    expected: Expected
    tool: str = "bash"
    gap: bool = False
    domain: str = ""
    source: str = ""
    part: Part = "tuned"
    where: str = ""  # file:line, for failure messages


def _parse(line: str, domain: str, part: Part, where: str) -> Case:
    label, source, command = line.split(None, 2)
    gap = label.endswith("?")
    label = label.rstrip("?")
    label, _, tool = label.partition("@")
    if label not in _LABELS:
        raise ValueError(f"{where}: unknown label {label!r}")
    return Case(command.replace("⏎", "\n"), _LABELS[label], tool or "bash", gap, domain, source, part, where)


def load(part: Part) -> list[Case]:
    cases: list[Case] = []
    for path in sorted((CORPUS_DIR / part).glob("*.txt")):
        for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = raw.rstrip()
            if line and not line.startswith("#"):
                cases.append(_parse(line, path.stem.split(".")[0], part, f"{part}/{path.name}:{n}"))
    return cases


TUNED = load("tuned")
HELDOUT = load("heldout")
CORPUS = TUNED + HELDOUT
