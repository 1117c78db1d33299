"""Text from the log as the CLI shows it to people: control characters made visible.

Anything in the log may come from a foreign publisher (a command, a reason, a label, a subject),
and a terminal obeys what it is sent: `ESC [2K` erases the line, `ESC ]0;...` sets the window
title, a carriage return writes over what came before. A held job's command could then show
an approver something else than what would run. `printable(text)` shows each such character
as an escape instead (`\\x1b`, `\\r`), so what is read is what the log holds.

Shown as escapes: the C0 controls (U+0000-U+001F) but newline and tab, DEL (U+007F), the C1
controls (U+0080-U+009F: U+009B alone starts a sequence on some terminals) and the
bidirectional formatting characters (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069),
which reorder how a line reads. Newline and tab stay in table cells (a multi-line command,
laid out inside its cell); text printed on one line among others (a detail view's value, a
status line) is `one_line`, where a newline too is shown as `\\n`, since it could start a line
that passes for another field.

Every human-readable rendering of the CLI goes through here (`common.fmt` for tables and detail
views, `follow.Say` for status lines). `--json` gives the data as it is. Job output (`nexus
logs`, `nexus run`) is not filtered: it is the command's own, byte-exact by design.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported when a styled line is printed
    from rich.text import Text

_CONTROLS = (
    *range(0x20), 0x7F, *range(0x80, 0xA0), 0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)
)  # fmt: skip
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(code: int) -> str:
    return _NAMED.get(chr(code)) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


_ONE_LINE = {code: _escape(code) for code in _CONTROLS}
_IN_CELL = {code: shown for code, shown in _ONE_LINE.items() if chr(code) not in "\n\t"}
_FOUND = {one_line: re.compile("[" + "".join(map(chr, table)) + "]") for one_line, table in ((True, _ONE_LINE), (False, _IN_CELL))}


def printable(text: str, *, one_line: bool = False) -> str:
    """`text` with every control character shown as an escape (see the module docstring)."""
    return text.translate(_ONE_LINE if one_line else _IN_CELL)


def printable_text(text: Text, *, one_line: bool = False) -> Text:
    """`printable` for a styled line: the escapes take the place of the characters, the styles stay."""
    found = list(_FOUND[one_line].finditer(text.plain))
    if not found:
        return text
    from rich.text import Text

    shown = Text(style=text.style, end=text.end)
    last = 0
    for m in found:
        shown.append_text(text[last : m.start()])
        shown.append(printable(m.group(), one_line=one_line))
        last = m.end()
    shown.append_text(text[last:])
    return shown
