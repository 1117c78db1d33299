"""Tables for people, at any terminal width (80 columns included).

`fit_table` keeps every header on one line and every cell of a "whole" column (an id, a key, a
time, a status) in one piece: `nexus creds revoke --key` needs the whole key, `nexus show` the
whole id. Columns are two spaces apart, one when that makes them fit; when even that does not
fit the width, it leaves out columns with nothing in them, then the caller's `drop` columns
(least important first). The other
columns (commands, names, reasons) share what is left, folded at spaces and never narrower than
their longest word (up to WORD_MAX), nor than ROOMY unless all they hold is shorter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported when a table is made
    from rich.table import Table

WORD_MAX = 24  # a longer word (a path in a command) may be folded inside
ROOMY = 20  # a folded column gets at least this many characters (or its longest cell), before any is left out


def whole_column(name: str) -> bool:
    """Ids, keys, times and states: never shortened."""
    return name.endswith(("_id", "_at", "key")) or name in ("seq", "ts", "node", "status", "type")


def fit_table(
    columns: Sequence[str],
    cells: Sequence[Sequence[str]],
    width: int,
    *,
    title: str | None = None,
    whole: Callable[[str], bool] = whole_column,
    drop: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
    styles: Mapping[str, Mapping[str, str]] | None = None,
) -> Table:
    """A table of `cells` (text, one list per row) that fits `width` (see the module docstring).
    `headers` renames columns for display; `drop` names the columns that may be left out;
    `styles[column][value]` is the style of a cell (a status in colour)."""
    from rich.table import Table
    from rich.text import Text

    shown = headers or {}
    hard = [_need(shown.get(c, c), [row[i] for row in cells], whole(c)) for i, c in enumerate(columns)]
    longest = [max((len(row[i]) for row in cells), default=0) for i in range(len(columns))]
    roomy = [n if whole(c) else max(n, min(ROOMY, most)) for c, n, most in zip(columns, hard, longest, strict=True)]
    keep = list(range(len(columns)))

    def fits(gap: int, needs: list[int]) -> bool:
        return sum(needs[i] for i in keep) + gap * (len(keep) - 1) <= width

    empty = [i for i in keep if not any(row[i] for row in cells)]
    for i in [*empty, *(columns.index(c) for c in drop if c in columns)]:
        if fits(1, roomy) or len(keep) == 1:
            break
        if i in keep:
            keep.remove(i)
    needs = roomy if fits(1, roomy) else hard
    gap = 2 if fits(2, needs) else 1
    widths = _share(needs, longest, keep, width - gap * (len(keep) - 1))
    table = Table(title=title, header_style="bold", box=None, pad_edge=False, padding=(0, 1) if gap == 2 else (0, 0, 0, 1))
    for i in keep:
        table.add_column(shown.get(columns[i], columns[i]), no_wrap=whole(columns[i]), width=widths[i], overflow="fold")
    styled = styles or {}
    for row in cells:
        table.add_row(*(Text(row[i], style=styled.get(columns[i], {}).get(row[i], "")) for i in keep))
    return table


def _need(header: str, values: list[str], whole: bool) -> int:
    if whole:
        return max([len(header), *(len(v) for v in values)])
    return max([len(header), *(min(len(w), WORD_MAX) for v in values for w in v.split())])


def _share(needs: list[int], longest: list[int], keep: list[int], room: int) -> dict[int, int]:
    """Each kept column's width: what it needs, then the room left shared out one character at
    a time among the columns whose longest cell wants more (rich would squeeze the narrow ones)."""
    widths = {i: needs[i] for i in keep}
    spare = room - sum(widths.values())
    wanting = [i for i in keep if longest[i] > widths[i]]
    while spare > 0 and wanting:
        for i in list(wanting):
            if spare == 0:
                break
            widths[i] += 1
            spare -= 1
            if widths[i] >= longest[i]:
                wanting.remove(i)
    return widths
