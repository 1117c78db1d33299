"""Shell text to pipelines of simple commands: bashlex, the rewrites it needs, and a fallback.

`Collector` flattens a bashlex AST into `Pipeline`s of `SimpleCommand`s: pipelines, `&&`/`||`/
`;`, subshells and `{ }` groups, if/for/while bodies, function bodies, `$(...)`, backticks and
`<(...)`; a compound stage of a pipeline is a `Group`, with what it writes when that is
literal. A substitution that only echoes literal words is folded (`$(echo rm) -rf /` gives the
words `rm -rf /`); function bodies that run themselves in the background or piped into
themselves (`:(){ :|:& };:`) are reported as fork bombs.

bashlex lacks a few constructs, so `desugar` rewrites them in place at equal length before a
second attempt: quoted heredoc delimiters, `$((...))`, `[[ ]]`, `time`, `coproc`, `select`,
array assignments, a `~` before a backtick group; code hidden inside the rewritten parts is
returned to be parsed on its own. A `$(...)` bashlex reads as part of a tilde prefix (`~$(id)`)
is found in the source and parsed on its own too (`Collector.hidden_substitutions`).
Input bashlex still cannot parse (unbalanced quotes, `case`, regexes inside `[[ ]]`) goes to
`fallback_pipelines`, a text-level tokenizer that still finds the commands (`rm -rf / '`), and
`FORK_BOMB_TEXT` matches the fork-bomb shape on the raw text. The fallback stops after
`MAX_COMMANDS` commands.

Importing this module patches one bashlex hang (see `_progressing`).
"""

from __future__ import annotations

import functools
import itertools
import posixpath
import re
from dataclasses import dataclass
from typing import Any

import bashlex  # type: ignore[import-untyped]
import bashlex.errors  # type: ignore[import-untyped]
import bashlex.subst  # type: ignore[import-untyped]

from orchestrator.core.payloads import echo_output, printf_output
from orchestrator.core.risk_types import Word


def _progressing(paramexpand: Any) -> Any:
    def guarded(parserobj: Any, string: str, sindex: int) -> tuple[Any, int]:
        node, end = paramexpand(parserobj, string, sindex)
        if end <= sindex:
            raise bashlex.errors.ParsingError("bad substitution", string, sindex)
        return node, end

    guarded.progressing = True  # type: ignore[attr-defined]
    return guarded


# bashlex 0.18 loops forever on an unterminated `${` inside a word (`'${'x`): subst._paramexpand
# returns index 0 and the word expander starts over. This makes it a parse error instead; it
# only turns that hang into an exception, so patching the module once at import is safe.
if not getattr(bashlex.subst._paramexpand, "progressing", False):
    bashlex.subst._paramexpand = _progressing(bashlex.subst._paramexpand)

# The fallback tokenizer stops after this many simple commands; the analysis walks no more either.
MAX_COMMANDS = 4_000

# --- the shape the walker produces ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Redirect:
    op: str
    target: str | None  # None for fd duplication and heredocs
    body: str | None = None  # heredoc or here-string text fed on stdin
    expands: bool = False  # a heredoc with its delimiter unquoted: bash runs the `$(...)` in its body


@dataclass(frozen=True, slots=True)
class SimpleCommand:
    words: tuple[Word, ...]
    redirects: tuple[Redirect, ...]
    text: str
    assignments: tuple[Word, ...] = ()  # `NAME=value` before the words; a `for` loop's variable, once per item
    fed: bool = False  # a `while read` loop's command as xargs of the stages before: read for its risks alone


@dataclass(frozen=True, slots=True)
class Group:
    """A compound stage of a pipeline (`( ... )`, `{ ...; }`, a loop), walked on its own. What
    it writes, for the next stage: `output`, the text its literal echo/printf commands write;
    `complete` when nothing else writes, `lists_crontab` when `crontab -l` writes the cron table."""

    text: str
    output: str = ""
    complete: bool = False
    lists_crontab: bool = False


Pipeline = tuple[SimpleCommand | Group, ...]

# --- bashlex ------------------------------------------------------------------------------


def _children(node: Any) -> list[Any]:
    out: list[Any] = [*(getattr(node, "parts", None) or ()), *(getattr(node, "list", None) or ())]
    for attr in ("command", "output", "heredoc"):
        child = getattr(node, attr, None)
        if hasattr(child, "kind"):
            out.append(child)
    out.extend(getattr(node, "redirects", None) or ())
    return out


def _first_word(node: Any) -> str | None:
    words = [p for p in node.parts if p.kind == "word"]
    return str(words[0].word) if words else None


def _programs(node: Any) -> frozenset[str]:
    found: set[str] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n.kind == "command" and (name := _first_word(n)):
            found.add(posixpath.basename(name))
        stack.extend(_children(n))
    return frozenset(found)


def _echo_constant(node: Any, source: str) -> str | None:
    """The output of `echo`/`printf` with literal arguments, or None."""
    if node.kind != "command" or any(p.kind != "word" or getattr(p, "parts", None) for p in node.parts):
        return None
    words = [unquote(source[p.pos[0] : p.pos[1]]) for p in node.parts]
    if words[0] == "printf":
        return printf_output(words[1:])
    return echo_output(words[1:]) if words[0] == "echo" else None


def _is_fork_bomb(name: str, body: Any) -> bool:
    stack: list[tuple[Any, bool]] = [(body, False)]
    while stack:
        node, background = stack.pop()
        if node.kind == "list":
            parts = node.parts
            for i, part in enumerate(parts):
                nxt = parts[i + 1] if i + 1 < len(parts) else None
                stack.append((part, background or (nxt is not None and nxt.kind == "operator" and nxt.op == "&")))
        elif node.kind == "pipeline":
            calls = sum(1 for p in node.parts if p.kind == "command" and _first_word(p) == name)
            if calls >= 2 or (calls and background):
                return True
            stack.extend((p, background) for p in node.parts)
        elif node.kind == "command":
            if background and _first_word(node) == name:
                return True
        else:
            stack.extend((c, background) for c in _children(node))
    return False


_READ_VALUES = frozenset(["-a", "-d", "-i", "-n", "-N", "-p", "-t", "-u"])  # read's options that take a value


class Collector:
    """Flattens a bashlex AST into pipelines of simple commands."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.pipelines: list[Pipeline] = []
        self.fork_bombs: list[str] = []
        self.scripts: list[str] = []  # $(...) inside ${x:-...}, which bashlex leaves as text
        self.commands: dict[tuple[int, int], SimpleCommand] = {}  # by source position, as visited

    def text(self, node: Any) -> str:
        start, end = node.pos
        return self.source[start:end]

    def visit(self, node: Any) -> None:
        kind = node.kind
        if kind == "command":
            self.commands[node.pos] = command = self.simple(node)
            self.pipelines.append((command,))
        elif kind == "pipeline":
            stages: list[SimpleCommand | Group] = []
            fed: list[Pipeline] = []
            for part in node.parts:
                if part.kind == "command":
                    self.commands[part.pos] = command = self.simple(part)
                    stages.append(command)
                elif part.kind not in {"pipe", "reservedword"}:
                    upstream = tuple(stages)
                    stages.append(self.group(part))
                    self.visit(part)
                    fed += [(*upstream, command) for command in self.read_loop(part)] if upstream else []
            self.pipelines.append(tuple(stages))
            self.pipelines += fed
        elif kind == "function":
            if _is_fork_bomb(str(node.name.word), node.body):
                self.fork_bombs.append(self.text(node))
            self.visit(node.body)
        elif kind == "compound":
            for part in node.list:
                self.visit(part)
            redirects = tuple(self.redirect(r) for r in getattr(node, "redirects", None) or ())
            if redirects:
                self.pipelines.append((SimpleCommand((), redirects, self.text(node)),))
            if feed := self.process_feed(node):  # `while read f; do ...; done < <(find /etc)`
                self.pipelines += [(*feed, command) for command in self.read_loop(node)]
        elif kind in {"list", "if", "for", "while", "until"}:
            if kind == "for" and (loop := self.loop_variable(node)) is not None:
                self.pipelines.append((loop,))
            for part in node.parts:
                self.visit(part)
        elif kind in {"word", "assignment"}:
            self.word_parts(node)
        elif kind in {"commandsubstitution", "processsubstitution"}:
            self.visit(node.command)

    def group(self, node: Any) -> Group:
        """What a compound stage writes: `(crontab -l; echo '* * * * * job') | crontab -`."""
        writes: list[str] = []
        complete = node.kind == "compound"
        lists_crontab = False
        stack = [node]
        while stack:
            n = stack.pop()
            if n.kind == "command":
                words = [str(p.word) for p in n.parts if p.kind == "word"]
                if words[:1] == ["crontab"] and "-l" in words:
                    lists_crontab = True
                elif (text := _echo_constant(n, self.source)) is not None:
                    writes.append(text)
                else:
                    complete = False
            elif n.kind == "pipeline":
                complete = False
                stack.extend(p for p in n.parts if p.kind == "command")
            elif n.kind in {"compound", "list"}:
                stack.extend(reversed([p for p in (getattr(n, "list", None) or n.parts) if p.kind != "operator"]))
            elif n.kind != "reservedword":
                complete = False
        return Group(self.text(node), "\n".join(writes), complete, lists_crontab)

    def read_loop(self, node: Any) -> list[SimpleCommand]:
        """`LIST | while read f; do rm -f "$f"; done` as `LIST | xargs rm -f "$f"`: each command of
        the body that uses what `read` took, run for every line the stages before list (the
        xargs rules then see a find's roots or a key listing). The body itself is walked as
        written too; these copies are read for their risks only (`fed`)."""
        loop = node.list[0] if node.kind == "compound" and len(node.list) == 1 else node
        if loop.kind not in {"while", "until"} or len(loop.parts) < 4 or loop.parts[1].kind != "list":
            return []
        condition = [p for p in loop.parts[1].parts if p.kind == "command"]
        words = [str(p.word) for p in condition[0].parts if p.kind == "word"] if len(condition) == 1 else []
        if words[:1] != ["read"]:
            return []
        names: list[str] = []
        rest = iter(words[1:])
        for word in rest:
            if word.startswith("-"):
                if word in _READ_VALUES:
                    next(rest, None)
            elif re.fullmatch(r"[A-Za-z_]\w*", word):
                names.append(word)
        if not names:
            names = ["REPLY"]
        uses = re.compile(r"\$(?:\{(?:" + "|".join(names) + r")\}|(?:" + "|".join(names) + r")\b)")
        fed: list[SimpleCommand] = []
        stack = list(loop.parts[2:])
        while stack:
            n = stack.pop()
            if n.kind == "command":
                command = self.commands.get(n.pos)
                if command is not None and command.words and any(uses.search(w.text) for w in command.words):
                    fed.append(SimpleCommand((Word("xargs"), Word("-I{}"), *command.words), (), command.text, fed=True))
            elif n.kind not in {"while", "until", "commandsubstitution", "processsubstitution"}:
                stack.extend(_children(n))
        return fed[::-1]

    def process_feed(self, node: Any) -> tuple[SimpleCommand, ...]:
        """The commands of a process substitution a compound reads (`done < <(find /etc)`), as visited."""
        for redirect in getattr(node, "redirects", None) or ():
            if redirect.type != "<":
                continue
            for part in getattr(redirect.output, "parts", None) or ():
                if part.kind != "processsubstitution":
                    continue
                inner = part.command
                parts = [inner] if inner.kind == "command" else [c for c in getattr(inner, "parts", ()) if c.kind == "command"]
                if inner.kind in {"command", "pipeline"} and parts and all(c.pos in self.commands for c in parts):
                    return tuple(self.commands[c.pos] for c in parts)
        return ()

    def loop_variable(self, node: Any) -> SimpleCommand | None:
        """`for d in / /etc` as the assignments `d=/` and `d=/etc`, so the body is read with them."""
        parts = node.parts
        if len(parts) < 4 or parts[1].kind != "word" or parts[2].kind != "reservedword" or parts[2].word != "in":
            return None
        items: list[Word] = []
        for part in parts[3:]:
            if part.kind != "word":
                break
            items.extend(self.word(part))
        name = str(parts[1].word)
        values = tuple(Word(f"{name}={w.text}", w.dynamic, w.substituted) for w in items)
        return SimpleCommand((), (), self.text(node), values) if values else None

    def word_parts(self, node: Any) -> None:
        for part in getattr(node, "parts", None) or ():
            if part.kind in {"commandsubstitution", "processsubstitution"}:
                self.visit(part.command)
            elif part.kind in {"parameter", "tilde"} and (subs := self.hidden_substitutions(part, node)):
                self.scripts.append(": " + " ".join(subs))
            else:
                self.word_parts(part)

    def hidden_substitutions(self, part: Any, word: Any) -> list[str]:
        """The `$(...)` and backticks bashlex leaves as text: inside `${x:-...}`, and in a tilde
        prefix. It reads `~$(id)` as one tilde (and `~$(rm -rf /x)` only up to the first `/`),
        but no login name has a `$` or a backtick, so bash leaves the tilde alone and runs them:
        read from the source up to the word's end, but those starting after the tilde's span,
        which bashlex parsed itself."""
        if part.kind == "parameter":
            return substitutions(str(getattr(part, "value", "")))
        if not _expanding_tilde(part):
            return []
        start, end = part.pos
        rest = self.source[start : word.pos[1]]
        return [sub for sub in substitutions(rest) if rest.find(sub) < end - start]

    def word(self, node: Any) -> list[Word]:
        parts = getattr(node, "parts", None) or []
        raw = self.text(node)
        if not parts and (alternatives := brace_expansion(raw)) is not None:
            return [Word(unquote(a)) for a in alternatives if a]
        # bashlex's own quote removal is wrong for words that join quoted pieces ('a "b"'"" loses
        # the inner quotes, 'a'"'"'b' keeps them all), and nested shell text is parsed again
        # from this: the quotes are removed here, from the source, expansions kept as written.
        start = node.pos[0]
        text = unquote(raw, [(p.pos[0] - start, p.pos[1] - start) for p in parts if p.kind in _EXPANSIONS])
        subs = [p for p in parts if p.kind in {"commandsubstitution", "processsubstitution"}]
        dynamic = bool(subs) or any(p.kind == "parameter" or _expanding_tilde(p) for p in parts)
        if len(subs) == 1 and self.text(subs[0]) == text:
            folded = _echo_constant(subs[0].command, self.source)
            if folded is not None:
                return [Word(folded)] if raw.startswith('"') else [Word(t) for t in folded.split()]
        for sub in list(subs):  # `/$(echo)`, `/e$(printf tc)`: a literal echo inside a word
            if (folded := _echo_constant(sub.command, self.source)) is not None and "\n" not in folded.strip():
                text = text.replace(self.text(sub), folded.strip(), 1)
                subs.remove(sub)
        if not subs and not any(p.kind == "parameter" or _expanding_tilde(p) for p in parts):
            dynamic = False
        programs = frozenset().union(*(_programs(s.command) for s in subs))
        expansions = [(p.pos[0] - start, p.pos[1] - start) for p in parts if p.kind in _EXPANSIONS]
        split = dynamic and _unquoted_expansion(raw, expansions)
        return [Word(text, dynamic, programs, split)]

    def simple(self, node: Any) -> SimpleCommand:
        words: list[Word] = []
        redirects: list[Redirect] = []
        assignments: list[Word] = []
        for part in node.parts:
            if part.kind == "redirect":
                redirects.append(self.redirect(part))
            elif part.kind in {"word", "assignment"}:
                self.word_parts(part)
                if part.kind == "word" or words:
                    words.extend(self.word(part))
                else:
                    assignments.extend(self.array(part) or self.word(part))
        return SimpleCommand(tuple(words), tuple(redirects), self.text(node), tuple(assignments))

    def array(self, node: Any) -> list[Word]:
        """`a=(x y)`, which `desugar` blanked to `a=`: one assignment per item, read from the source."""
        end = node.pos[1]
        if not self.text(node).endswith("=") or self.source[end : end + 1] != "(":
            return []
        close = _closing_paren(self.source, end)
        items = [_unquote(m.group(0)) for m in _TOKEN.finditer(self.source[end + 1 : close]) if m.lastgroup == "word"]
        name = self.text(node).rstrip("+=")
        return [Word(f"{name}={w.text}", w.dynamic) for w in items[:64]]

    def redirect(self, node: Any) -> Redirect:
        output = node.output
        target = None
        if hasattr(output, "kind"):
            self.word_parts(output)
            target = next(iter(self.word(output)), Word("")).text if output.kind == "word" else str(output.word)
        heredoc = getattr(node, "heredoc", None)
        if heredoc is not None:
            lines = str(heredoc.value).split("\n")[:-1]  # the last line is the delimiter
            if node.type == "<<-":
                lines = [line.lstrip("\t") for line in lines]
            delimiter = self.text(output) if hasattr(output, "pos") else str(getattr(output, "word", ""))
            return Redirect(node.type, None, "\n".join(lines), expands=not any(q in delimiter for q in "'\"\\"))
        if node.type == "<<<":
            return Redirect(node.type, None, target)
        return Redirect(node.type, target)


_EXPANSIONS = frozenset({"parameter", "commandsubstitution", "processsubstitution", "tilde"})


def _expanding_tilde(part: Any) -> bool:
    """A tilde prefix bashlex read with an expansion in it (`~$(id)`, `~$USER`): no login name has
    a `$` or a backtick, so bash expands the rest at run time."""
    return part.kind == "tilde" and ("$" in str(part.value) or "`" in str(part.value))


_MAX_BRACE_WORDS = 64


def _unquoted_expansion(raw: str, spans: list[tuple[int, int]]) -> bool:
    """Whether one of the expansion `spans` (offsets into the raw word) stands outside quotes,
    where bash splits its value into words: `$c` and `x$c` do, `"$c"` and `'$c'` do not."""
    starts = dict(spans)
    quote = ""
    i = 0
    while i < len(raw):
        c = raw[i]
        if i in starts and quote != "'":
            if not quote:
                return True
            i = starts[i]
            continue
        if quote == "'":
            quote = "" if c == "'" else quote
        elif c == "\\":
            i += 1
        elif c == '"' or (not quote and c == "'"):
            quote = "" if quote == c else c
        i += 1
    return False


def unquote(raw: str, kept: list[tuple[int, int]] | None = None) -> str:
    """A word's text as the shell hands it on: quotes and escapes removed. The `kept` spans
    (expansions, offsets into raw) are copied as written."""
    spans = dict(kept or ())
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(raw):
        c = raw[i]
        if not quote and c == "$" and raw[i + 1 : i + 2] == '"':
            i += 1  # $"..." is a translated string: the quotes are plain double quotes
            continue
        if i in spans:
            out.append(raw[i : spans[i]])
            i = spans[i]
            continue
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                out.append(c)
        elif c == "\\" and i + 1 < len(raw) and (not quote or raw[i + 1] in '$`"\\\n'):
            if raw[i + 1] != "\n":
                out.append(raw[i + 1])
            i += 1
        elif c == '"' or (not quote and c == "'"):
            quote = "" if quote == c else c
        else:
            out.append(c)
        i += 1
    return "".join(out)


def brace_expansion(raw: str) -> list[str] | None:
    """The words an unquoted `{a,b}` in a literal word expands to (`{rm,-rf,/}` is three words,
    `/etc/{passwd,shadow}` two), still quoted; None when the word has no such braces."""
    opening = _brace(raw)
    if opening is None:
        return None
    words: list[str] = []
    pending = [raw]
    while pending and len(words) < _MAX_BRACE_WORDS:
        word = pending.pop(0)
        found = _brace(word)
        if found is None:
            words.append(word)
            continue
        start, commas, end = found
        cuts = [start, *commas, end]
        pending[:0] = [word[:start] + word[a + 1 : b] + word[end + 1 :] for a, b in itertools.pairwise(cuts)]
    return words


def _brace(raw: str) -> tuple[int, list[int], int] | None:
    """The first unquoted `{...,...}` group: where it opens, its top-level commas, where it closes."""
    quote = ""
    stack: list[tuple[int, list[int]]] = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and quote == '"':
                i += 1
        elif c == "\\":
            i += 1
        elif c in "'\"":
            quote = c
        elif c == "{" and raw[i - 1 : i] != "$":
            stack.append((i, []))
        elif c == "," and stack:
            stack[-1][1].append(i)
        elif c == "}" and stack:
            start, commas = stack.pop()
            if commas:
                return start, commas, i
        i += 1
    return None


def substitutions(text: str) -> list[str]:
    """Every `$(...)` and backtick group in text (one pass; an unclosed group ends the scan)."""
    found: list[str] = []
    pos = 0
    while (start := _first_substitution(text, pos)) >= 0:
        end = text.find("`", start + 1) if text[start] == "`" else _closing_paren(text, start + 1)
        if end < 0:
            break
        found.append(text[start : end + 1])
        pos = end + 1
    return found


def _first_substitution(text: str, pos: int = 0) -> int:
    hits = [i for i in (text.find("$(", pos), text.find("`", pos)) if i >= 0]
    return min(hits) if hits else -1


def try_bashlex(text: str) -> list[Any] | None:
    try:
        return list(bashlex.parse(text))
    except Exception:  # bashlex raises many unrelated types (ParsingError, NotImplementedError, ...)
        return None


# Tokens bash never accepts where bashlex reports them unexpected. `(` is not among them: bashlex
# also rejects `for ((`, `[[ =~ (a|b) ]]` and extglob patterns there, all valid bash.
_STRAY_TOKENS = frozenset({")", "&&", "||", "|", ";", ";;", "&", "then", "else", "elif", "fi", "do", "done", "esac", "}"})
# Constructs bashlex does not parse as bash does: no syntax error is claimed where they appear.
_BASHLEX_GAPS = re.compile(r"\[\[|\(\(|\$\[|(?<![\w-])(?:case|select|coproc)(?![\w-])|\\\s*$")


@functools.lru_cache(maxsize=1024)  # pure; a fan-out checks one command text for every node
def syntax_error(text: str) -> str | None:
    """Why bash would refuse `text` before running any of it (what `bash -n` says), or None.

    Only errors bashlex and bash agree on are claimed: an unclosed quote, `$(` or `${`, a command
    line that ends inside an `if`/`for`/`while`/`(`/`{` or after `|`/`&&`, and a token no
    command can start with (`echo )`, `&& ls`, `fi`). Text bashlex cannot read for other reasons
    is left to the analysis' fallback (None)."""
    if (unclosed := _unclosed_arithmetic(text)) is not None:
        return unclosed
    if _BASHLEX_GAPS.search(text) or not has_words(text):
        return None
    try:
        bashlex.parse(text)
        return None
    except bashlex.errors.ParsingError as exc:
        error = exc
    except Exception:  # bashlex's own limits (NotImplementedError, ...), not the command's
        return None
    desugared, _ = desugar(text)
    if desugared != text and try_bashlex(desugared) is not None:
        return None
    message = str(error.message)
    if message.startswith("unexpected EOF while looking for matching") or message == "unexpected EOF":
        what = "the command ends too early (an unclosed if, for, while, ( or {, or a trailing | or &&)"
        return what if message == "unexpected EOF" else message
    token = re.fullmatch(r"unexpected token '(.*)'", message)
    if token and token.group(1) in _STRAY_TOKENS:
        return f"syntax error near unexpected token '{token.group(1)}' (at character {error.position + 1})"
    return None


_COMMAND_START = re.compile(r"(?:^|[;&|(\n{!]|(?<![\w-])(?:if|then|else|elif|do|while|until|time))\s*$")


def _unclosed_arithmetic(text: str) -> str | None:
    """bash's error for a `$((` or a `((` command never closed (bashlex does not read arithmetic),
    or None. Quotes and escapes are followed as bash follows them; inside, parentheses count."""
    if "<<" in text:  # a heredoc's body is expanded only when it runs: `bash -n` passes it
        return None
    i, quote = 0, ""
    while i < len(text):
        c = text[i]
        if quote == "'":
            quote = "" if c == "'" else quote
        elif c == "#" and not quote and (i == 0 or text[i - 1] in " \t\n;&|()"):
            i = text.find("\n", i)  # a comment, to the end of its line
            if i < 0:
                return None
        elif c == "\\":
            i += 1  # the next character is taken as it is
        elif c == '"' or (c == "'" and not quote):
            quote = "" if quote == c else quote or c
        elif text.startswith("$((", i) or (not quote and text.startswith("((", i) and _COMMAND_START.search(text[:i])):
            end = _closing_paren(text, i + 1 if c == "$" else i)
            if end < 0:
                return "unexpected EOF while looking for matching `)'"
            i = end
        i += 1
    return None


def _closing_paren(text: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


def desugar(text: str) -> tuple[str, list[str]]:
    """Rewrite, at equal length, constructs bashlex cannot parse; return code they hid."""
    hidden: list[str] = []
    text = re.sub(r"(<<-?[ \t]*)(['\"])([^'\"\s]{1,64})\2", lambda m: m.group(1) + m.group(3) + "  ", text)
    text = _blank_parens(text, _ARITHMETIC, "0", hidden)
    text = _blank_parens(text, _ARRAY, "", hidden)
    text = re.sub(r"(?<![^\s;&|(!])\[\[(?=\s)", " [", text)
    text = re.sub(r"(?<=\s)\]\](?=$|[\s;&|)])", "] ", text)
    text = re.sub(r"(?<![^\s;&|({!])(?:time(?:\s+-p)?|coproc)(?=\s)", lambda m: " " * len(m.group(0)), text)
    text = re.sub(r"(?<![^\s;&|({])select(?=\s)", "for   ", text)
    # bashlex fails on a backtick group inside a tilde prefix (`~\`id -u\``); no login name has a `$` or
    # a backtick, so bash leaves that `~` as it is and runs the group: any other letter reads the same.
    text = re.sub(r"~(?=[$`])", "x", text)
    return text, hidden


_ARITHMETIC = re.compile(r"\$(?=\(\()")  # $((1+2)) -> 0
_ARRAY = re.compile(r"(?<![^\s;&|(])[A-Za-z_]\w*\+?=(?=\()")  # a=(1 2) -> a=


def _blank_parens(text: str, opener: re.Pattern[str], replacement: str, hidden: list[str]) -> str:
    """Blank each `opener(...)` group: all of it if `replacement` is given, else the parentheses."""
    pos = 0
    while (m := opener.search(text, pos)) is not None:
        open_at = m.end()
        close = _closing_paren(text, open_at)
        if close < 0:
            break
        if subs := substitutions(text[open_at + 1 : close]):
            hidden.append(": " + " ".join(subs))
        start = m.start() if replacement else open_at
        text = text[:start] + replacement + " " * (close + 1 - start - len(replacement)) + text[close + 1 :]
        pos = close + 1
    return text


# --- text-level fallback -----------------------------------------------------------------

_TOKEN = re.compile(
    r"(?P<space>[ \t\r\f\v]+|\\\n)"
    r"|(?P<comment>(?<![^\s;&|()])\#[^\n]*)"
    r"|(?P<op>\n|&&|\|\||;;|\|&|&>>|&>|>>|>\||<<<|<<-?|[;&|()<>{}])"
    r"|(?P<word>(?:'[^']*'?|\"(?:\\.|[^\"\\])*\"?|\\.|[^\s;&|()<>'\"\\])+)",
    re.S,
)
_PIECE = re.compile(r"'([^']*)'?|\"((?:\\.|[^\"\\])*)\"?|\\(.)|([^'\"\\]+)", re.S)
_REDIRECT_OPS = frozenset({">", ">>", "&>", "&>>", ">|", "<", "<<", "<<-", "<<<"})
_RESERVED = frozenset(
    [
        "if",
        "then",
        "else",
        "elif",
        "fi",
        "do",
        "done",
        "while",
        "until",
        "for",
        "in",
        "case",
        "esac",
        "function",
        "select",
        "!",
        "{",
        "}",
        "[[",
        "]]",
        "time",
    ]
)
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\+?=")
FORK_BOMB_TEXT = re.compile(r"(?<![\w:.-])([\w:.-]{1,64})\s*\(\s*\)\s*\{[^{}]*?(?<![\w:.-])\1\s*(?:\||&(?!&))")


def has_words(text: str) -> bool:
    """False for blank text or text that is only comments, which bashlex rejects."""
    return any(m.lastgroup == "word" for m in _TOKEN.finditer(text))


def _unquote(raw: str) -> Word:
    out: list[str] = []
    dynamic = split = False
    for m in _PIECE.finditer(raw):
        single, double, escaped, bare = m.groups()
        if single is not None:
            out.append(single)
        elif double is not None:
            dynamic |= "$" in double or "`" in double
            out.append(re.sub(r"\\([$`\"\\\n])", r"\1", double))
        elif escaped is not None:
            out.append(escaped)
        else:
            split |= "$" in bare or "`" in bare
            out.append(bare)
    return Word("".join(out), dynamic or split, split=split)


def fallback_pipelines(text: str) -> list[Pipeline]:
    pipelines: list[Pipeline] = []
    stages: list[SimpleCommand | Group] = []
    words: list[Word] = []
    redirects: list[Redirect] = []
    pending: str | None = None
    span = [-1, -1]
    count = 0
    # Words that are not commands: the subject and list of `case`/`for`/`select` up to `in`/`do`,
    # and a `case` item's patterns up to `)`.
    header: str | None = None
    patterns = False

    def close_command() -> None:
        nonlocal words, redirects
        if words or redirects:
            stages.append(SimpleCommand(tuple(words), tuple(redirects), text[span[0] : span[1]]))
        words, redirects = [], []
        span[0] = -1

    for m in _TOKEN.finditer(text):
        if count > MAX_COMMANDS:
            break
        kind, value = m.lastgroup, m.group(0)
        if kind in {"space", "comment"}:
            continue
        if span[0] < 0:
            span[0] = m.start()
        span[1] = m.end()
        if kind == "word":
            word = _unquote(value)
            if header is not None or patterns:
                if header == "case" and value == "in":
                    header, patterns = None, True
                elif header in ("for", "select") and value == "do":
                    header = None
                span[0] = -1
                continue
            if not words and pending is None and value in ("case", "for", "select"):
                header = value
                span[0] = -1
                continue
            if not words and value == "esac":
                span[0] = -1
                continue
            if pending is not None:
                redirects.append(Redirect(pending, None if pending.startswith("<<") else word.text))
                pending = None
            elif words or (word.text not in _RESERVED and not ASSIGNMENT.match(word.text)):
                words.append(word)
            else:
                span[0] = -1
        elif patterns:
            patterns = value != ")"  # `a|b)` and `(a)` are one pattern
            span[0] = -1
        elif header in ("for", "select") and value in {";", "\n"}:
            header = None
            span[0] = -1
        elif value in _REDIRECT_OPS:
            pending = value
        elif value in {"|", "|&"}:
            close_command()
            count += 1
        else:
            close_command()
            count += 1
            patterns = value == ";;"  # the next `case` item starts with its patterns
            if stages:
                pipelines.append(tuple(stages))
                stages = []
    close_command()
    if stages:
        pipelines.append(tuple(stages))
    return pipelines
