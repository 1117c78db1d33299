"""Phase 1 risk analysis: parse a shell command and report what it could destroy.

`analyze(command)` parses with bashlex and walks every simple command: pipelines, `&&`/`||`/`;`,
subshells and `{ }` groups, if/for/while bodies, function bodies, `$(...)`, backticks and
`<(...)`. Each command is unwrapped (sudo, doas, env, nohup, nice, timeout, time, command,
exec, setsid, stdbuf, ionice, chroot, flock, watch, xargs, kubectl/docker exec) and code
handed to another shell is parsed again: `sh -c`/`bash -c` strings, `eval`, `su -c`,
`ssh host CMD`, `env -S`, heredocs and here-strings fed to a shell, and `echo ... | sh`.
Text that is only data (`echo "rm -rf /"`, `grep "DROP TABLE" f.sql`, comments) is never
treated as code. The rules and the severity contract are in `orchestrator.core.risk_rules`.

Decisions worth knowing:
- `$(echo rm) -rf /` is folded: a substitution that only echoes literal words is replaced
  by them, so it is rated as `rm -rf /`. Any other computed command name (`$CMD -rf /`) is
  an info finding (`dynamic_command`): what it runs cannot be checked statically.
- A download piped into a shell or interpreter (`curl ... | sudo bash`, `bash <(curl ...)`,
  `sh -c "$(wget -O- ...)"`) is critical `remote_code`; decoded data piped into a shell
  (`base64 -d | sh`) is a warning.
- Function bodies are checked as if called. A function that runs itself in the background or
  piped into itself (`:(){ :|:& };:`) is a critical `fork_bomb`.
- Input bashlex cannot parse (unbalanced quotes, `case`, regexes inside `[[ ]]`) gives an
  `unparseable` warning and is checked by a text-level tokenizer, so `rm -rf / '` is still
  critical; the fork-bomb shape is then matched on the raw text. `parsed` is False whenever
  any part needed that fallback. Before giving up, a few constructs bashlex lacks are
  rewritten in place: quoted heredoc delimiters, `$((...))`, `[[ ]]`, `time`, `coproc`,
  `select`, array assignments.
- Work is capped so 100 KB of input takes well under a second: 8 KB per bashlex parse, 16 KB
  of bashlex parsing per call (each parse also costs 256 characters of that budget), 5 levels
  of nested shells and 4,000 simple commands. Past a cap the text-level fallback takes over
  and the result carries an `unparseable` warning.
- `tool` names the program that receives `command`: for a SQL client (`psql`, `mysql`, ...)
  the command is SQL; for anything else it is a shell command line.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import bashlex  # type: ignore[import-untyped]
import bashlex.errors  # type: ignore[import-untyped]
import bashlex.subst  # type: ignore[import-untyped]
import msgspec

from orchestrator.core.risk_rules import (
    FIND_DELETERS,
    SEVERITY_RANK,
    SQL_CLIENTS,
    Invocation,
    Risk,
    Severity,
    Word,
    command_risks,
    find_parts,
    is_sql_client,
    program,
    redirect_risks,
    sql_risks,
)


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

_MAX_DEPTH = 5
# bashlex costs 4 to 30 microseconds per character (backticks are the slowest), plus a fixed
# cost per call that _PARSE_OVERHEAD charges against the budget.
_MAX_PARSE_CHARS = 8_192
_MAX_TOTAL_PARSE = 16_384
_PARSE_OVERHEAD = 256
_MAX_COMMANDS = 4_000
_MAX_SHOWN = 300

_SHELLS = frozenset(["sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "yash", "fish"])
_INTERPRETERS = frozenset(["python", "python2", "python3", "perl", "ruby", "node", "php", "lua"])
_DOWNLOADERS = frozenset(["curl", "wget", "fetch", "http", "https", "aria2c", "lwp-request", "GET"])
_SIMPLIFY = "Check the quoting, or split the command into simpler steps the analyzer can parse"
_REMOTE_SUGGESTIONS = (
    "Download the script, inspect it, then run it: curl -fsSLo install.sh URL && less install.sh && sh install.sh",
    "Pin the downloaded script to a known checksum before running it",
)


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """One risk found in a command; `command` is the simple command that triggered it."""

    type: str
    severity: Severity
    message: str
    command: str


class Analysis(msgspec.Struct, frozen=True, kw_only=True):
    """Every finding of a command, suggestions tied to them, and whether bashlex parsed it all."""

    findings: list[Finding]
    suggestions: list[str]
    parsed: bool

    @property
    def severity(self) -> Severity | None:
        if not self.findings:
            return None
        return max((f.severity for f in self.findings), key=SEVERITY_RANK.__getitem__)


def analyze(command: str, tool: str = "bash") -> Analysis:
    """Parse `command` and report its risks; never raises on malformed input."""
    run = _Run()
    if posixpath.basename(tool) in SQL_CLIENTS:
        for risk in sql_risks(command):
            run.add(risk, command)
    else:
        run.script(command, 0)
    return Analysis(findings=run.findings, suggestions=run.suggestions, parsed=run.parsed)


# --- the shape the walker produces ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Redirect:
    op: str
    target: str | None  # None for fd duplication and heredocs
    body: str | None = None  # heredoc or here-string text fed on stdin


@dataclass(frozen=True, slots=True)
class _Simple:
    words: tuple[Word, ...]
    redirects: tuple[_Redirect, ...]
    text: str


_Pipeline = tuple[_Simple | None, ...]  # None: a compound stage, walked on its own


@dataclass(slots=True)
class _Unwrapped:
    argv: tuple[Word, ...] = ()
    via_xargs: bool = False
    scripts: list[Word] = field(default_factory=list)  # shell code to parse again
    code_files: list[Word] = field(default_factory=list)  # files run as code (`source F`, `bash F`)
    stdin: Literal["shell", "code"] | None = None  # the program runs its stdin


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


def _echo_constant(node: Any) -> str | None:
    """The output of `echo`/`printf` with literal arguments, or None."""
    if node.kind != "command" or any(p.kind != "word" or getattr(p, "parts", None) for p in node.parts):
        return None
    words = [str(p.word) for p in node.parts]
    if words[0] not in {"echo", "printf"}:
        return None
    args = words[1:]
    while args and args[0] in {"-n", "-e", "-E"}:
        args = args[1:]
    return " ".join(args)


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


class _Collector:
    """Flattens a bashlex AST into pipelines of simple commands."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.pipelines: list[_Pipeline] = []
        self.fork_bombs: list[str] = []
        self.scripts: list[str] = []  # $(...) inside ${x:-...}, which bashlex leaves as text

    def text(self, node: Any) -> str:
        start, end = node.pos
        return self.source[start:end]

    def visit(self, node: Any) -> None:
        kind = node.kind
        if kind == "command":
            self.pipelines.append((self.simple(node),))
        elif kind == "pipeline":
            stages: list[_Simple | None] = []
            for part in node.parts:
                if part.kind == "command":
                    stages.append(self.simple(part))
                elif part.kind not in {"pipe", "reservedword"}:
                    stages.append(None)
                    self.visit(part)
            self.pipelines.append(tuple(stages))
        elif kind == "function":
            if _is_fork_bomb(str(node.name.word), node.body):
                self.fork_bombs.append(self.text(node))
            self.visit(node.body)
        elif kind == "compound":
            for part in node.list:
                self.visit(part)
            redirects = tuple(self.redirect(r) for r in getattr(node, "redirects", None) or ())
            if redirects:
                self.pipelines.append((_Simple((), redirects, self.text(node)),))
        elif kind in {"list", "if", "for", "while", "until"}:
            for part in node.parts:
                self.visit(part)
        elif kind in {"word", "assignment"}:
            self.word_parts(node)
        elif kind in {"commandsubstitution", "processsubstitution"}:
            self.visit(node.command)

    def word_parts(self, node: Any) -> None:
        for part in getattr(node, "parts", None) or ():
            if part.kind in {"commandsubstitution", "processsubstitution"}:
                self.visit(part.command)
            elif part.kind == "parameter" and (subs := _substitutions(str(getattr(part, "value", "")))):
                self.scripts.append(": " + " ".join(subs))
            else:
                self.word_parts(part)

    def word(self, node: Any) -> list[Word]:
        parts = getattr(node, "parts", None) or []
        subs = [p for p in parts if p.kind in {"commandsubstitution", "processsubstitution"}]
        dynamic = bool(subs) or any(p.kind == "parameter" for p in parts)
        if len(subs) == 1 and self.text(subs[0]) == node.word:
            folded = _echo_constant(subs[0].command)
            if folded is not None:
                return [Word(folded)] if self.source[node.pos[0]] == '"' else [Word(t) for t in folded.split()]
        programs = frozenset().union(*(_programs(s.command) for s in subs))
        return [Word(str(node.word), dynamic, programs)]

    def simple(self, node: Any) -> _Simple:
        words: list[Word] = []
        redirects: list[_Redirect] = []
        for part in node.parts:
            if part.kind == "redirect":
                redirects.append(self.redirect(part))
            elif part.kind in {"word", "assignment"}:
                self.word_parts(part)
                if part.kind == "word" or words:
                    words.extend(self.word(part))
        return _Simple(tuple(words), tuple(redirects), self.text(node))

    def redirect(self, node: Any) -> _Redirect:
        output = node.output
        target = None
        if hasattr(output, "kind"):
            self.word_parts(output)
            target = str(output.word)
        heredoc = getattr(node, "heredoc", None)
        if heredoc is not None:
            lines = str(heredoc.value).split("\n")[:-1]  # the last line is the delimiter
            if node.type == "<<-":
                lines = [line.lstrip("\t") for line in lines]
            return _Redirect(node.type, None, "\n".join(lines))
        if node.type == "<<<":
            return _Redirect(node.type, None, target)
        return _Redirect(node.type, target)


def _substitutions(text: str) -> list[str]:
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


def _try_bashlex(text: str) -> list[Any] | None:
    try:
        return list(bashlex.parse(text))
    except Exception:  # bashlex raises many unrelated types (ParsingError, NotImplementedError, ...)
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


def _desugar(text: str) -> tuple[str, list[str]]:
    """Rewrite, at equal length, constructs bashlex cannot parse; return code they hid."""
    hidden: list[str] = []
    text = re.sub(r"(<<-?[ \t]*)(['\"])([^'\"\s]{1,64})\2", lambda m: m.group(1) + m.group(3) + "  ", text)
    text = _blank_parens(text, _ARITHMETIC, "0", hidden)
    text = _blank_parens(text, _ARRAY, "", hidden)
    text = re.sub(r"(?<![^\s;&|(!])\[\[(?=\s)", " [", text)
    text = re.sub(r"(?<=\s)\]\](?=$|[\s;&|)])", "] ", text)
    text = re.sub(r"(?<![^\s;&|({!])(?:time(?:\s+-p)?|coproc)(?=\s)", lambda m: " " * len(m.group(0)), text)
    text = re.sub(r"(?<![^\s;&|({])select(?=\s)", "for   ", text)
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
        if subs := _substitutions(text[open_at + 1 : close]):
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
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\+?=")
_FORK_BOMB_TEXT = re.compile(r"(?<![\w:.-])([\w:.-]{1,64})\s*\(\s*\)\s*\{[^{}]*?(?<![\w:.-])\1\s*(?:\||&(?!&))")


def _unquote(raw: str) -> Word:
    out: list[str] = []
    dynamic = False
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
            dynamic |= "$" in bare or "`" in bare
            out.append(bare)
    return Word("".join(out), dynamic)


def _fallback_pipelines(text: str) -> list[_Pipeline]:
    pipelines: list[_Pipeline] = []
    stages: list[_Simple | None] = []
    words: list[Word] = []
    redirects: list[_Redirect] = []
    pending: str | None = None
    span = [-1, -1]
    count = 0

    def close_command() -> None:
        nonlocal words, redirects
        if words or redirects:
            stages.append(_Simple(tuple(words), tuple(redirects), text[span[0] : span[1]]))
        words, redirects = [], []
        span[0] = -1

    for m in _TOKEN.finditer(text):
        if count > _MAX_COMMANDS:
            break
        kind, value = m.lastgroup, m.group(0)
        if kind in {"space", "comment"}:
            continue
        if span[0] < 0:
            span[0] = m.start()
        span[1] = m.end()
        if kind == "word":
            word = _unquote(value)
            if pending is not None:
                redirects.append(_Redirect(pending, None if pending.startswith("<<") else word.text))
                pending = None
            elif words or (word.text not in _RESERVED and not _ASSIGNMENT.match(word.text)):
                words.append(word)
            else:
                span[0] = -1
        elif value in _REDIRECT_OPS:
            pending = value
        elif value in {"|", "|&"}:
            close_command()
            count += 1
        else:
            close_command()
            count += 1
            if stages:
                pipelines.append(tuple(stages))
                stages = []
    close_command()
    if stages:
        pipelines.append(tuple(stages))
    return pipelines


# --- unwrapping -------------------------------------------------------------------------

_VALUE_OPTIONS: dict[str, frozenset[str]] = {
    "sudo": frozenset(
        ["-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-T", "--user", "--group", "--close-from", "--chdir", "--host", "--prompt"]
    ),
    "doas": frozenset({"-u", "-C"}),
    "nice": frozenset({"-n", "--adjustment"}),
    "timeout": frozenset({"-s", "--signal", "-k", "--kill-after"}),
    "time": frozenset({"-f", "--format", "-o", "--output"}),
    "exec": frozenset({"-a"}),
    "stdbuf": frozenset({"-i", "-o", "-e"}),
    "ionice": frozenset({"-c", "-n", "--class", "--classdata"}),
    "chroot": frozenset({"--userspec", "--groups"}),
    "flock": frozenset({"-w", "--timeout", "-E", "--conflict-exit-code"}),
    "watch": frozenset({"-n", "--interval", "-q", "--equexit"}),
    "xargs": frozenset(
        ["-I", "-L", "-n", "-P", "-d", "-E", "-s", "-a", "--arg-file", "--delimiter", "--max-args", "--max-procs", "--max-lines", "--eof"]
    ),
    "ssh": frozenset(
        ["-b", "-c", "-D", "-E", "-e", "-F", "-I", "-i", "-J", "-L", "-l", "-m", "-O", "-o", "-p", "-Q", "-R", "-S", "-W", "-w", "-B"]
    ),
    "env": frozenset({"-u", "--unset", "-C", "--chdir"}),
    "su": frozenset({"-s", "--shell", "-g", "--group", "-G", "--supp-group"}),
    "runuser": frozenset({"-u", "--user", "-s", "--shell", "-g", "--group", "-G", "--supp-group"}),
    "docker": frozenset(["-e", "--env", "-u", "--user", "-w", "--workdir", "--env-file", "--detach-keys"]),
}
_PREFIXES = frozenset(["nohup", "setsid", "builtin", "unbuffer", "nice", "timeout", "time", "exec", "stdbuf", "ionice", "sudo", "doas"])
_DECODERS = frozenset({"base64", "base32", "xxd", "uudecode"})


def _skip_options(args: tuple[Word, ...], value_options: frozenset[str]) -> int:
    i = 0
    while i < len(args):
        t = args[i].text
        if t == "--":
            return i + 1
        if not t.startswith("-") or t == "-":
            return i
        i += 2 if t in value_options else 1
    return i


def _joined(words: tuple[Word, ...]) -> Word:
    return Word(
        " ".join(w.text for w in words),
        any(w.dynamic for w in words),
        frozenset().union(*(w.substituted for w in words)),
    )


def _option_value(args: tuple[Word, ...], short: str, long: str) -> Word | None:
    for i, w in enumerate(args):
        if w.text in {short, long} and i + 1 < len(args):
            return args[i + 1]
        if w.text.startswith(long + "="):
            return Word(w.text[len(long) + 1 :], w.dynamic, w.substituted)
    return None


def _unwrap(argv: tuple[Word, ...]) -> _Unwrapped:
    """Peel wrappers off argv until the program that really runs; collect code run elsewhere."""
    out = _Unwrapped()
    for _ in range(32):  # bounded: `sudo sudo sudo ...` must not loop forever
        if not argv:
            break
        name, args = program(argv[0]), argv[1:]
        if name in _PREFIXES:
            rest = args[_skip_options(args, _VALUE_OPTIONS.get(name, frozenset())) :]
            if name == "timeout" and rest:
                rest = rest[1:]  # the duration
            argv = rest
        elif name == "command":
            argv = () if args[:1] and args[0].text in {"-v", "-V"} else args[_skip_options(args, frozenset()) :]
        elif name == "env":
            split = _option_value(args, "-S", "--split-string")
            if split is not None:
                out.scripts.append(split)
                return out
            i = _skip_options(args, _VALUE_OPTIONS["env"])
            while i < len(args) and _ASSIGNMENT.match(args[i].text):
                i += 1
            argv = args[i:]
        elif name == "xargs":
            out.via_xargs = True
            argv = args[_skip_options(args, _VALUE_OPTIONS["xargs"]) :]
        elif name in {"chroot", "flock"}:
            script = _option_value(args, "-c", "--command") if name == "flock" else None
            if script is not None:
                out.scripts.append(script)
                return out
            argv = args[_skip_options(args, _VALUE_OPTIONS[name]) + 1 :]
        elif name == "watch":
            argv = args[_skip_options(args, _VALUE_OPTIONS["watch"]) :]
            if not any(a.text in {"-x", "--exec"} for a in args) and argv:
                out.scripts.append(_joined(argv))
                return out
        elif name in {"su", "runuser"}:
            script = _option_value(args, "-c", "--command")
            if script is not None:
                out.scripts.append(script)
                return out
            # runuser -u USER CMD runs CMD; `su USER` and `runuser USER` open an interactive shell
            as_user = name == "runuser" and any(a.text in {"-u", "--user"} for a in args)
            argv = args[_skip_options(args, _VALUE_OPTIONS[name]) :] if as_user else ()
        elif name == "ssh":
            rest = args[_skip_options(args, _VALUE_OPTIONS["ssh"]) :]
            if len(rest) > 1:
                out.scripts.append(_joined(rest[1:]))
                return out
            out.stdin = "shell" if rest else None
            return out
        elif name in {"kubectl", "oc"} and any(a.text == "exec" for a in args[:3]):
            dashes = next((i for i, a in enumerate(args) if a.text == "--"), -1)
            argv = args[dashes + 1 :] if dashes >= 0 else ()
        elif name in {"docker", "podman"} and args[:1] and args[0].text == "exec":
            argv = args[1 + _skip_options(args[1:], _VALUE_OPTIONS["docker"]) + 1 :]
        elif name == "busybox" and args:
            argv = args
        elif name == "eval":
            if args:
                out.scripts.append(_joined(args))
            return out
        elif name in {"source", "."}:
            out.code_files.extend(args[:1])
            break
        elif name in _SHELLS:
            return _shell(argv, out)
        elif name in _INTERPRETERS:
            positional = [a for a in args if not a.text.startswith("-")]
            out.code_files.extend(positional[:1])
            if not positional and not any(a.text.startswith(("-c", "-e", "-m", "-r")) for a in args):
                out.stdin = "code"
            break
        else:
            break
    out.argv = argv
    return out


def _shell(argv: tuple[Word, ...], out: _Unwrapped) -> _Unwrapped:
    args = argv[1:]
    run_string = False
    i = 0
    while i < len(args):
        t = args[i].text
        if t in {"-o", "+o", "-O", "+O", "--rcfile", "--init-file"}:
            i += 2
        elif t == "--":
            i += 1
            break
        elif len(t) > 1 and t[0] in "-+":
            run_string |= not t.startswith("--") and "c" in t
            i += 1
        else:
            break
    if run_string and i < len(args):
        out.scripts.append(args[i])
    elif i < len(args):
        out.code_files.append(args[i])
        out.argv = argv
    elif not run_string:
        out.stdin = "shell"
        out.argv = argv
    return out


# --- evaluation -------------------------------------------------------------------------

_Feeder = tuple[_Simple, _Unwrapped]


@dataclass(slots=True)
class _Upstream:
    """The earlier stages of a pipeline, as seen by the next one."""

    feeder: _Feeder | None = None  # the stage writing into this one
    programs: set[str] = field(default_factory=set)
    text: str = ""  # e.g. "curl -fsSL URL" when checking "curl -fsSL URL | sudo bash"


def _heredoc(stage: _Simple) -> str | None:
    return next((r.body for r in stage.redirects if r.body is not None), None)


def _piped_text(stage: _Simple, unwrapped: _Unwrapped) -> str | None:
    """What a pipeline stage writes, when it is literal: echo/printf words or a heredoc via cat."""
    argv = unwrapped.argv
    if not argv or any(w.dynamic for w in argv[1:]):
        return None
    name = program(argv[0])
    if name in {"echo", "printf"}:
        return " ".join(w.text for w in argv[1:] if w.text not in {"-n", "-e", "-E"})
    if name == "cat" and len(argv) == 1:
        return _heredoc(stage)
    return None


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


class _Run:
    """One call of `analyze`: its findings, suggestions and work budget."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.suggestions: list[str] = []
        self.parsed = True
        self.parse_budget = _MAX_TOTAL_PARSE
        self.commands = 0

    def add(self, risk: Risk, command: str) -> None:
        finding = Finding(type=risk.type, severity=risk.severity, message=risk.message, command=_clip(command))
        if finding not in self.findings:
            self.findings.append(finding)
        self.suggestions.extend(s for s in risk.suggestions if s not in self.suggestions)

    def script(self, text: str, depth: int, origin: str | None = None) -> None:
        if depth > _MAX_DEPTH:
            self.add(
                Risk("unparseable", "warning", "Command nests shells more than 5 levels deep; not analyzed further", (_SIMPLIFY,)),
                origin or text,
            )
            return
        if not text.strip():
            return
        pipelines, bombs, hidden = self.parse(text)
        for bomb in bombs:
            self.add(
                Risk(
                    "fork_bomb",
                    "critical",
                    "Command defines a fork bomb (a function that spawns copies of itself) - requires approval",
                    ("Remove the fork bomb; to test process limits use a disposable container with ulimit -u",),
                ),
                bomb,
            )
        for code in hidden:
            self.script(code, depth + 1, origin)
        for pipeline in pipelines:
            self.pipeline(pipeline, depth)

    def parse(self, text: str) -> tuple[list[_Pipeline], list[str], list[str]]:
        if not any(m.lastgroup == "word" for m in _TOKEN.finditer(text)):
            return [], [], []  # blank or only comments, which bashlex rejects
        cost = len(text) + _PARSE_OVERHEAD
        reason = "too long to parse" if len(text) > _MAX_PARSE_CHARS else "analysis budget used up"
        if len(text) <= _MAX_PARSE_CHARS and cost <= self.parse_budget:
            self.parse_budget -= cost
            # bashlex misreads ANSI-C strings ($'...'); as plain '...' they keep their words
            source = text.replace("$'", " '")
            hidden: list[str] = []
            nodes = _try_bashlex(source)
            if nodes is None:
                desugared, hidden = _desugar(source)
                if desugared != source and cost <= self.parse_budget:
                    self.parse_budget -= cost
                    nodes = _try_bashlex(desugared)
            if nodes is not None:
                collector = _Collector(text)
                try:
                    for node in nodes:
                        collector.visit(node)
                except RecursionError:
                    reason = "nested too deeply"
                else:
                    return collector.pipelines, collector.fork_bombs, hidden + collector.scripts
            else:
                reason = "the shell parser rejected it"
        self.parsed = False
        self.add(
            Risk("unparseable", "warning", f"Could not parse the command ({reason}); checked it with a text-level fallback", (_SIMPLIFY,)),
            text,
        )
        bombs = [m.group(0) for m in _FORK_BOMB_TEXT.finditer(text[:_MAX_TOTAL_PARSE])]
        return _fallback_pipelines(text), bombs, []

    def pipeline(self, stages: _Pipeline, depth: int) -> None:
        upstream = _Upstream()
        for stage in stages:
            if stage is None:
                continue
            self.commands += 1
            if self.commands > _MAX_COMMANDS:
                if self.commands == _MAX_COMMANDS + 1:
                    self.add(
                        Risk(
                            "unparseable",
                            "warning",
                            f"Command has more than {_MAX_COMMANDS} simple commands; the rest was not analyzed",
                            (_SIMPLIFY,),
                        ),
                        stage.text,
                    )
                return
            unwrapped = _unwrap(stage.words) if stage.words else None
            self.simple(stage, unwrapped, upstream, depth)
            upstream.text = f"{upstream.text} | {stage.text}" if upstream.text else stage.text
            if unwrapped is not None:
                upstream.feeder = (stage, unwrapped)
                upstream.programs.update(program(w) for w in unwrapped.argv[:1])

    def simple(self, stage: _Simple, unwrapped: _Unwrapped | None, upstream: _Upstream, depth: int) -> None:
        for redirect in stage.redirects:
            if redirect.target is not None:
                for risk in redirect_risks(redirect.op, redirect.target):
                    self.add(risk, stage.text)
        if unwrapped is None:
            return
        for word in unwrapped.code_files:
            if downloads := sorted(word.substituted & _DOWNLOADERS):
                self.add(self.remote(downloads[0], f"'{program(unwrapped.argv[0])}'"), stage.text)
        for script in unwrapped.scripts:
            self.script(script.text, depth + 1, stage.text)
        argv = unwrapped.argv
        if argv:
            self.invocation(stage, unwrapped, upstream.feeder, depth)
        stdin = unwrapped.stdin or ("sql" if argv and is_sql_client(Invocation(argv)) else None)
        if stdin is None:
            return
        body = _heredoc(stage)
        if body is None and upstream.feeder is not None:
            piped = f"{upstream.text} | {stage.text}"
            if downloads := sorted(upstream.programs & _DOWNLOADERS):
                self.add(self.remote(downloads[0], f"'{program(argv[0])}'" if argv else "a remote shell"), piped)
                return
            if upstream.programs & _DECODERS and stdin != "sql":
                self.add(
                    Risk(
                        "remote_code",
                        "warning",
                        "Command pipes decoded data into an interpreter; the code it runs is hidden - review before running",
                        ("Decode to a file and read it before running it",),
                    ),
                    piped,
                )
                return
            body = _piped_text(*upstream.feeder)
        if body is None:
            return
        if stdin == "shell":
            self.script(body, depth + 1, stage.text)
        elif stdin == "sql":
            for risk in sql_risks(body):
                self.add(risk, stage.text)

    def invocation(self, stage: _Simple, unwrapped: _Unwrapped, feeder: _Feeder | None, depth: int) -> None:
        argv = unwrapped.argv
        head = argv[0]
        if downloads := sorted(head.substituted & _DOWNLOADERS):
            self.add(self.remote(downloads[0], "the shell"), stage.text)
        elif head.dynamic:
            self.add(
                Risk("dynamic_command", "info", f"Command name '{head.text}' is computed at run time; what it runs cannot be checked"),
                stage.text,
            )
        fed = feeder[1].argv if feeder else ()
        roots = tuple(find_parts(fed)[0]) if unwrapped.via_xargs and fed and program(fed[0]) == "find" else ()
        for risk in command_risks(Invocation(argv, unwrapped.via_xargs, roots)):
            self.add(risk, stage.text)
        if program(head) == "find" and depth < _MAX_DEPTH:
            find_roots, execs, _ = find_parts(argv)
            for cmd in execs:
                if program(cmd[0]) not in FIND_DELETERS:
                    words = tuple(find_roots[0] if w.text == "{}" else w for w in cmd)
                    self.simple(_Simple(words, (), stage.text), _unwrap(words), _Upstream(), depth + 1)

    @staticmethod
    def remote(download: str, runner: str) -> Risk:
        return Risk(
            "remote_code",
            "critical",
            f"Command runs code downloaded with '{download}' in {runner} without inspecting it - requires approval",
            _REMOTE_SUGGESTIONS,
        )
