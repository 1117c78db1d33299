"""What a job's `env` means for what runs: values the shell expands, and entries that are code. Pure.

The agent runs the command with the job's `env` in its environment, so `$CMD` with
`CMD="rm -rf /"` in `env` runs `rm -rf /`. `expand(text, values)` writes each `$NAME`,
`${NAME}` and `${NAME:-default}` of a known entry out as the shell would read it (unquoted:
one quoted word per word of the value; inside quotes: escaped for them), so the analysis
checks what really runs. Secret entries are never expanded (their values must not reach a
finding, which is stored in the log): a secret used as a command name stays unresolved.

Some entries are run by the shell, the dynamic loader or a tool without appearing in the
command at all (`executed(env)`): bash functions exported as `BASH_FUNC_name%%`, shell text
in `PROMPT_COMMAND`, `PS4`, `GIT_SSH_COMMAND`, `PAGER`, `EDITOR`, ...; and files loaded as code
(`BASH_ENV`, `ENV`, `LD_PRELOAD`, `LD_AUDIT`, `NODE_OPTIONS=--require ...`), which the
analysis cannot read and so fail closed.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Literal, NamedTuple

from schemas.secrets import MASK, Redaction, is_sealed

_REF = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-=])(?P<default>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")

# Values the shell or a tool runs as a shell command line.
SHELL_TEXT = frozenset(
    {
        "PROMPT_COMMAND", "PS0", "PS4", "GIT_SSH_COMMAND", "GIT_SSH", "GIT_PAGER", "GIT_EDITOR", "GIT_SEQUENCE_EDITOR",
        "GIT_EXTERNAL_DIFF", "GIT_ASKPASS", "SSH_ASKPASS", "SUDO_ASKPASS", "PAGER", "MANPAGER", "SYSTEMD_PAGER",
        "EDITOR", "VISUAL", "BROWSER", "LESSOPEN", "LESSCLOSE", "RSYNC_RSH", "RSYNC_CONNECT_PROG", "CVS_RSH",
    }
)  # fmt: skip
# Values naming a file the shell sources or the loader maps into every program: unreadable here.
LOADED_FILES = frozenset({"BASH_ENV", "ENV", "LD_PRELOAD", "LD_AUDIT", "DYLD_INSERT_LIBRARIES"})
# Interpreter options that load code given by the value.
_LOADING_OPTIONS = {
    "NODE_OPTIONS": re.compile(r"(?:^|\s)(?:-r|--require|--import|--loader|--experimental-loader)\b"),
    "PERL5OPT": re.compile(r"(?:^|\s)-[mMd]"),
    "RUBYOPT": re.compile(r"(?:^|\s)-r"),
    "JAVA_TOOL_OPTIONS": re.compile(r"-(?:javaagent|agentpath|agentlib):"),
    "_JAVA_OPTIONS": re.compile(r"-(?:javaagent|agentpath|agentlib):"),
}
_EXPORTED_FUNCTION = re.compile(r"BASH_FUNC_(?P<name>[^%()=\s]+)(?:%%|\(\))")


class EnvCode(NamedTuple):
    """An env entry that runs as code: shell `text` to analyse, or a `file` that cannot be read."""

    name: str
    kind: Literal["text", "file"]
    value: str


def readable(env: Mapping[str, str], secrets: Iterable[str] = ()) -> dict[str, str]:
    """The entries whose values the analysis may read: not secret (by name pattern, by being
    named in `secrets`, sealed, or already masked)."""
    hidden = set(Redaction().secret_names(env, secrets))
    return {n: v for n, v in env.items() if n not in hidden and v != MASK and not is_sealed(v)}


def expand(text: str, values: Mapping[str, str]) -> str:
    """`text` with the references to `values` written out as the shell reads them."""
    if "$" not in text or not values:
        return text
    out: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and quote != "'":
            out.append(text[i : i + 2])
            i += 2
            continue
        if c in "'\"" and quote in (None, c):
            quote = None if quote == c else c
        elif c == "$" and (m := _REF.match(text, i)) is not None:
            name = m.group("braced") or m.group("bare")
            if name in values:
                value = values[name]
                if m.group("op") and m.group("op").startswith(":") and not value:
                    value = m.group("default")
                out.append(_quoted(value, quote))
                i = m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


def _quoted(value: str, quote: str | None) -> str:
    if quote == "'":  # reached a shell later (`bash -c '$X'`): keep the single quotes closed around it
        return value.replace("'", "'\\''")
    if quote == '"':
        return re.sub(r'([\\"$`])', r"\\\1", value)
    return " ".join(shlex.quote(word) for word in value.split())  # word splitting, each word literal


def executed(env: Mapping[str, str]) -> list[EnvCode]:
    """The entries run as code without being named in the command."""
    found: list[EnvCode] = []
    for name, value in env.items():
        if not value.strip():
            continue
        if fn := _EXPORTED_FUNCTION.fullmatch(name):
            found.append(EnvCode(name, "text", f"{fn.group('name')} {value}"))  # `name () { ...; }`, analysed as if called
        elif name in SHELL_TEXT:
            found.append(EnvCode(name, "text", value))
        elif name in LOADED_FILES or ((option := _LOADING_OPTIONS.get(name)) is not None and option.search(value)):
            found.append(EnvCode(name, "file", value))
    return found
