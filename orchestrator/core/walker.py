"""The walk behind `orchestrator.core.analysis.analyze`: every simple command, and every piece of
code a command hands on, visited once with the working directory it runs in.

`Walk` parses shell text (bashlex, with the rewrites and text fallback of `shell_parse`), follows
`cd`, unwraps each command (`unwrap`), reads nested shell text, `eval` words, code in other
languages (`inline_code`) and literal payloads (`payloads`), and rates each command with the
rule packs (`risk_rules`). It records `Hit`s; `analysis` turns them into the public `Finding`s.
The caps on work are described in `orchestrator.core.analysis`.
"""

from __future__ import annotations

import functools
import posixpath
import re
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import NamedTuple

from orchestrator.core import inline_code, payloads
from orchestrator.core.launchers import Unwrapped
from orchestrator.core.payloads import DECODERS, DOWNLOADERS, ENV_SETUP, ENV_TOOLS, HIDDEN_SUGGESTION, hidden_risk, remote_risk
from orchestrator.core.risk.databases import (
    REDIS_CLIENTS,
    SQL_CLIENTS,
    is_sql_client,
    redis_listed_risk,
    redis_reads_commands,
    redis_text_risks,
    sql_risks,
)
from orchestrator.core.risk.filesystem import FIND_DELETERS, emptied_risks, find_delete_severity, find_parts
from orchestrator.core.risk.paths import GLOB
from orchestrator.core.risk_rules import command_risks, known_programs, redirect_risks
from orchestrator.core.risk_types import Invocation, Risk, Severity, Word, program
from orchestrator.core.shell_parse import (
    ASSIGNMENT,
    FORK_BOMB_TEXT,
    MAX_COMMANDS,
    Collector,
    Group,
    Pipeline,
    Redirect,
    SimpleCommand,
    desugar,
    fallback_pipelines,
    has_words,
    substitutions,
    try_bashlex,
)
from orchestrator.core.unwrap import RUNNERS, unwrap

_MAX_DEPTH = 5
# bashlex costs 4 to 30 microseconds per character (backticks are the slowest), plus a fixed
# cost per call that _PARSE_OVERHEAD charges against the budget.
_MAX_PARSE_CHARS = 8_192
_MAX_TOTAL_PARSE = 16_384
_PARSE_OVERHEAD = 256
_MAX_SHOWN = 300

_SIMPLIFY = "Check the quoting, or split the command into simpler steps the analyzer can parse"
_SPELL_OUT = "Name the program literally (or put the command itself in the job) so it can be reviewed"
# A program named by its full path below a directory from a variable (`$HOME/bin/tool`,
# `${VENV}/bin/python`), or looked up by name (`$(command -v python3)`): the name is known.
# A real expansion: a variable, `${...}`, `$(...)`, a positional parameter or backticks. `$?`, `$$`,
# `$!`, `$#` and a lone `$` expand to numbers or to themselves, never to a program.
_EXPANSION = re.compile(r"\$[A-Za-z_{(@*0-9]|`")
_NAMED_PROGRAM = re.compile(r"\$\{?\w+\}?/[^$`]+|(?:\$\(|`)\s*(?:which|command\s+-v|type\s+-[pP])\s+[\w.+-]+\s*[)`]")
_ANSI_C = re.compile(r"\$'((?:\\.|[^'\\])*)'")
_SETTERS = frozenset({"export", "declare", "typeset", "local", "readonly"})
_VARIABLE = re.compile(r"\$\{?([A-Za-z_]\w*)\}?")
_MAX_VALUES = 16
_DEFAULT = re.compile(r"\$\{([A-Za-z_]\w*):?[-=]([^}$`]*)\}")
_LISTING = re.compile(r"\$\(\s*ls(?:\s+-[\w-]+)*(?:\s+[^\s*?$`()]+)?\s*\)|`\s*ls(?:\s+-[\w-]+)*(?:\s+[^\s*?$`()]+)?\s*`")
_ALL_POSITIONAL = frozenset({"$@", "${@}", "$*", "${*}"})
_IFS = " \t\n"  # bash's default IFS
# Words that change IFS other than by assigning it: `read IFS`, `unset IFS`, `printf -v IFS ...`.
_NAMES_IFS = re.compile(r"(?:-v)?IFS(?:\+?=.*)?", re.S)
# The program names a pattern in a command name is matched against (`/usr/bin/r[m]` can be `rm`).
_KNOWN_PROGRAMS = tuple(sorted(known_programs() | RUNNERS | DOWNLOADERS | DECODERS))
_CRON_BACKUP = "Back the table up first: crontab -l > crontab.backup; edit single jobs with crontab -e"
# A crontab line's schedule (`* * * * *`, `@reboot`) and comments: what is left is the command.
_CRON_LINE = re.compile(r"^\s*(?:#.*|@\w+\s+|(?:\S+\s+){5}|[A-Za-z_]\w*=.*)")


class Hit(NamedTuple):
    """One risk and the simple command that triggered it."""

    type: str
    severity: Severity
    message: str
    command: str


_Stage = tuple[SimpleCommand, Unwrapped]


@dataclass(slots=True)
class _Upstream:
    """The earlier stages of a pipeline, as seen by the next one."""

    stages: list[_Stage] = field(default_factory=list)
    programs: set[str] = field(default_factory=set)
    text: str = ""  # e.g. "curl -fsSL URL" when checking "curl -fsSL URL | sudo bash"
    group: Group | None = None  # the compound stage just before: `(crontab -l; echo ...) | crontab -`

    @property
    def feeder(self) -> _Stage | None:
        return self.stages[-1] if self.stages else None


def _heredoc(stage: SimpleCommand) -> str | None:
    return next((r.body for r in stage.redirects if r.body is not None), None)


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _ansi_c(text: str) -> str:
    """`$'\\x72m'` as the shell reads it, rewritten as a plain single-quoted string."""
    return _ANSI_C.sub(lambda m: "'" + payloads.unescape(m.group(1)).replace("'", "'\\''") + "'", text)


def _literal_stages(stages: list[_Stage]) -> str | None:
    """The text a pipeline writes, when every stage is literal (echo, printf, decoders)."""
    literal: list[tuple[list[str], str | None]] = []
    for stage, unwrapped in stages:
        argv = unwrapped.argv
        if not argv or any(w.dynamic for w in argv):
            return None
        literal.append(([w.text for w in argv], _heredoc(stage)))
    return payloads.pipeline_output(literal)


def _fill_xargs(argv: tuple[Word, ...], literal: str) -> tuple[Word, ...]:
    """xargs fed literal text: its items go where `{}` is, or at the end."""
    items = [Word(t) for t in literal.split()[:64]]
    if any(w.text == "{}" for w in argv):
        return tuple(x for w in argv for x in (items[:1] if w.text == "{}" else [w]))
    return argv + tuple(items)


def _emptied(stage: SimpleCommand, unwrapped: Unwrapped | None) -> list[tuple[str, str]]:
    """The files a command empties by writing nothing into them: `> F`, `: > F`, `echo "" > F`,
    `tee F < /dev/null`."""
    argv = unwrapped.argv if unwrapped else ()
    texts = [w.text for w in argv]
    if not texts or texts in (["true"], [":"], ["cat", "/dev/null"]) or _prints_nothing(texts):
        return [(f"{r.op} {r.target}", r.target) for r in stage.redirects if r.op in {">", ">|", "&>"} and r.target]
    if program(argv[0]) == "tee" and any(r.op == "<" and r.target == "/dev/null" for r in stage.redirects):
        return [(f"tee {t} < /dev/null", t) for t in texts[1:] if not t.startswith("-")]
    return []


def _named_by_url(name: str, argv: tuple[Word, ...]) -> list[Word]:
    """The files a download names after its URL: `wget URL` and `curl -O URL` (`-J`, `--remote-name`)
    write the URL's last path segment into the working directory."""
    flags = [w.text for w in argv[1:] if w.text.startswith("-")]
    named = name == "wget" or any(
        f in {"--remote-name", "--remote-name-all", "-J", "--remote-header-name"} or re.fullmatch(r"-[a-zA-Z]*O[a-zA-Z]*", f) for f in flags
    )
    urls = [w for w in argv[1:] if not w.dynamic and re.match(r"(?:https?|ftp)://", w.text)]
    files = [posixpath.basename(re.sub(r"[?#].*", "", url.text.split("://", 1)[1])) for url in urls] if named else []
    return [Word(f) for f in files if f and "/" not in f]


def _prints_nothing(texts: list[str]) -> bool:
    """`echo ""`, `echo -n`, `printf ''`: a line break at most."""
    return texts[0] in {"echo", "printf"} and all(t in {"", "-n", "-e", "-ne", "-en"} for t in texts[1:])


def _lists_crontab(argv: tuple[Word, ...]) -> bool:
    return bool(argv) and program(argv[0]) == "crontab" and any(w.text == "-l" for w in argv[1:])


def _forms(words: tuple[Word, ...], argv: tuple[Word, ...], files: str = "", assignments: tuple[Word, ...] = ()) -> tuple[str, ...]:
    """A simple command as written, as unwrapped, and with the program named without its path
    (`sudo /sbin/shutdown -h now`: also `/sbin/shutdown -h now` and `shutdown -h now`); each
    with the files it redirects to or from (`_redirected_files`), which are part of what it does.
    The first form is the exact one, the only one allow rules see (policy.denial): with the
    variables it sets for itself (`PATH=/tmp/x date`) and an absolute program path resolved
    (`/opt/app/bin/../../../usr/bin/touch`), so no wrapper, variable or path slips past a rule."""
    head = [posixpath.normpath(words[0].text) if words[0].text.startswith("/") and not words[0].dynamic else words[0].text] if words else []
    forms = [" ".join([*(a.text for a in assignments), *head, *(w.text for w in words[1:])])]
    if assignments or head[:1] != [w.text for w in words[:1]]:
        forms.append(" ".join(w.text for w in words))  # as written, for deny rules
    if argv:
        forms.append(" ".join(w.text for w in argv))
        if "/" in argv[0].text and not argv[0].dynamic:
            forms.append(" ".join([program(argv[0]), *(w.text for w in argv[1:])]))
    return tuple(dict.fromkeys(f"{form} {files}" if files else form for form in forms))


def _redirected_files(redirects: tuple[Redirect, ...]) -> str:
    """The files a simple command's redirections write or read, as written (`> /etc/passwd`,
    `< /etc/shadow`): an allow rule for `systemctl restart app` is no rule for
    `systemctl restart app > /etc/passwd`. Not fd duplications (`2>&1`), heredocs and
    here-strings (data in the command itself), or /dev/null and the job's own streams."""
    return " ".join(f"{r.op} {r.target}" for r in redirects if r.target is not None and r.body is None and r.target not in _NO_FILE)


# Redirection targets that are no file of the machine's: the job's own streams.
_NO_FILE = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/stdin", "/dev/tty", "/dev/fd/0", "/dev/fd/1", "/dev/fd/2"})


def _written_in(word: Word, name: str, value: Word, ifs: str) -> tuple[Word, ...]:
    """`$NAME`, `${NAME}`, `${NAME[@]}` and `${NAME:-default}` with the value written in; outside
    quotes (`word.split`) the value is split into words on `ifs` as bash splits it, so
    `c="rm -rf /x"; $c` is `rm -rf /x`, three words, and `$c/y` with `c="a b"` is `a` and `b/y`."""
    pieces = _reference(name).split(word.text)
    if len(pieces) == 1:
        return (word,)
    fields = _fields(value.text, ifs) if word.split else [value.text]
    texts = [pieces[0]]
    for piece in pieces[1:]:
        if fields:
            texts[-1] += fields[0]
            texts += fields[1:]
        texts[-1] += piece
    if word.split:
        texts = [t for t in texts if t]  # an unquoted expansion to nothing is no word at all
    substituted = word.substituted | value.substituted
    return tuple(Word(t, bool(_EXPANSION.search(t)), substituted, word.split) for t in texts)


def _fields(text: str, ifs: str) -> list[str]:
    """A value split on the characters of IFS (empty fields dropped), keeping `$(...)`, `${...}`
    and backticks whole: a value the script computes is one unknown word, not its source's."""
    fields: list[str] = []
    current: list[str] = []
    depth = 0
    tick = False
    previous = ""
    for c in text:
        if c == "`":
            tick = not tick
        elif depth and c in "({":
            depth += 1
        elif depth and c in ")}":
            depth -= 1
        elif previous == "$" and c in "({":
            depth = 1
        previous = c
        if c in ifs and not depth and not tick:
            if current:
                fields.append("".join(current))
            current = []
        else:
            current.append(c)
    if current:
        fields.append("".join(current))
    return fields


def _listing(value: Word) -> Word:
    """`$(ls DIR)` as a value: any entry of DIR, written `*` (`for d in $(ls /); do rm -rf /$d`
    deletes what `rm -rf /*` does)."""
    return Word("*") if value.dynamic and _LISTING.fullmatch(value.text) else value


@functools.lru_cache(maxsize=256)
def _reference(name: str) -> re.Pattern[str]:
    return re.compile(r"\$(?:\{" + name + r"(?:\[[^]]*\]|:?[-=][^}]*)?\}|" + name + r"(?!\w))")


def _bound(word: Word, binding: dict[str, Word], ifs: str) -> tuple[Word, ...]:
    words: tuple[Word, ...] = (word,)
    for name, value in binding.items():
        words = tuple(x for w in words for x in (_written_in(w, name, value, ifs) if w.dynamic and name in w.text else (w,)))
    return words


def _computed_script(word: Word, runner: str) -> Risk:
    """A script read by a shell whose name is only known at run time: the output of a tool printing
    its shell setup (`source <(kubectl completion bash)`) is info; anything else fails closed."""
    inner = re.sub(r"^[<$]\((.*)\)$", r"\1", word.text.strip(), flags=re.S)
    if word.substituted and (word.substituted <= ENV_TOOLS or ENV_SETUP.search(inner)):
        tool = sorted(word.substituted)[0]
        return Risk("dynamic_command", "info", f"Command reads the output of '{tool}' in {runner} (environment setup)")
    what = f"Command runs a script in {runner} whose name is only known at run time ('{_clip(word.text)}')"
    return Risk("unresolved_command", "critical", f"{what}; it cannot be checked - requires approval", (_SPELL_OUT,))


def _computed_name(name: str) -> Risk:
    """A command name known only at run time: a named program below a variable directory is
    info; anything else (`$CMD`, `"$@"`, `$(get_cmd)`) fails closed."""
    if not _EXPANSION.search(name) or _NAMED_PROGRAM.fullmatch(name):
        return Risk("dynamic_command", "info", f"Command name '{name}' is computed at run time; the program is named, its path is not")
    return Risk(
        "unresolved_command",
        "critical",
        f"Command name '{_clip(name)}' is only known at run time (a variable or a command's output); "
        "what it runs cannot be checked - requires approval",
        (_SPELL_OUT,),
    )


def _split_name(name: str) -> Risk:
    """A command name made by splitting an unquoted expansion after the command changed IFS
    (`IFS=_; c=env_whoami; $c`): what it splits into is only known when it runs."""
    return Risk(
        "unresolved_command",
        "critical",
        f"Command name '{_clip(name)}' comes from an unquoted expansion split on an IFS the command changed; "
        "what it runs cannot be checked - requires approval",
        (_SPELL_OUT,),
    )


def _globbed_name(name: str, matches: list[str]) -> Risk:
    """A command name with a pattern in it (`/sbin/shutdow?`, `/usr/bin/r[m]`): bash runs whatever
    file matches when it runs. The known programs it can match are judged as well."""
    could = f" (it can match {', '.join(matches[:8])}{', ...' if len(matches) > 8 else ''})" if matches else ""
    return Risk(
        "unresolved_command",
        "critical",
        f"Command name '{_clip(name)}' is a pattern the shell expands when it runs{could}; "
        "what it runs cannot be checked - requires approval",
        (_SPELL_OUT,),
    )


def _matching_programs(name: str) -> list[str]:
    pattern = posixpath.basename(name).replace("[^", "[!")
    hidden = pattern.startswith(".")  # a pattern matches a leading dot only when it starts with one
    return [p for p in _KNOWN_PROGRAMS if fnmatchcase(p, pattern) and (hidden or not p.startswith("."))][:_MAX_VALUES]


def _history_risk(argv: tuple[Word, ...]) -> Risk | None:
    """`fc` runs commands again from the shell's history (`fc -s`, or after an editor), and
    `history -s TEXT` puts text there to be run: what runs is only known at run time. `fc -l`,
    `history` and `history -c` list or clear it."""
    texts = [w.text for w in argv[1:]]
    if program(argv[0]) == "fc":
        if any(t.startswith("-") and "l" in t and "s" not in t and "e" not in t for t in texts):
            return None
        what = "runs commands again from the shell's history"
    elif "-s" in texts:
        what = "adds text to the shell's history, to be run again by `fc`"
    else:
        return None
    return Risk(
        "unresolved_command",
        "critical",
        f"Command {what}; what runs is only known at run time and cannot be checked - requires approval",
        (_SPELL_OUT,),
    )


def _cd_target(argv: tuple[Word, ...], cwd: str | None) -> str | None:
    args = [w for w in argv[1:] if not w.text.startswith("-")]
    if not args:
        return "~"
    target = args[0]
    if target.dynamic and not target.text.startswith(("$HOME", "${HOME}")):
        return None
    text = re.sub(r"^(?:\$HOME|\$\{HOME\})", "~", target.text)
    if text.startswith(("/", "~")):
        return posixpath.normpath(text)
    return posixpath.normpath(posixpath.join(cwd, text)) if cwd else None


class Walk:
    """One call of `analyze`: its findings, suggestions, working directory and work budget."""

    def __init__(self, working_dir: str | None) -> None:
        self.findings: list[Hit] = []
        self.suggestions: list[str] = []
        self.commands_seen: list[tuple[str, ...]] = []  # each simple command in the forms it can be written
        self.complete = True  # False once a cap left commands unwalked
        self.variables: dict[str, list[Word]] = {}  # assigned in the command itself: `X=/; rm -rf $X`
        self.written: dict[str, str] = {}  # files the command writes with literal text: path -> text
        self.downloaded: dict[str, str] = {}  # files it downloads: path -> the downloader
        self.positional: tuple[Word, ...] | None = None  # set by `set -- ARGS`: what "$@" expands to
        self.parsed = True
        self.parse_budget = _MAX_TOTAL_PARSE
        self.commands = 0
        self.cwd = working_dir if working_dir and working_dir.startswith(("/", "~")) else None

    def start(self, command: str, tool: str) -> None:
        name = posixpath.basename(tool)
        if name in SQL_CLIENTS:
            for risk in sql_risks(command):
                self.add(risk, command)
            return
        unwrapped = unwrap((Word(tool),))
        if unwrapped.stdin == "code":
            self.code(unwrapped.language, command, 0, command)
        else:
            self.script(command, 0)

    def add(self, risk: Risk, command: str) -> None:
        hit = Hit(risk.type, risk.severity, risk.message, _clip(command))
        if hit not in self.findings:
            self.findings.append(hit)
        self.suggestions.extend(s for s in risk.suggestions if s not in self.suggestions)

    def script(self, text: str, depth: int, origin: str | None = None) -> None:
        if depth > _MAX_DEPTH:
            # Fail closed: what runs at the inner levels is unknown, so it holds like a destructive command.
            self.complete = False
            self.add(
                Risk(
                    "unparseable",
                    "critical",
                    f"Command nests code more than {_MAX_DEPTH} levels deep; the inner levels cannot be checked - requires approval",
                    (_SIMPLIFY,),
                ),
                origin or text,
            )
            return
        if not text.strip():
            return
        saved = self.cwd
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
        if depth:
            self.cwd = saved

    def parse(self, text: str) -> tuple[list[Pipeline], list[str], list[str]]:
        if not has_words(text):
            return [], [], []
        cost = len(text) + _PARSE_OVERHEAD
        reason = "too long to parse" if len(text) > _MAX_PARSE_CHARS else "analysis budget used up"
        if len(text) <= _MAX_PARSE_CHARS and cost <= self.parse_budget:
            self.parse_budget -= cost
            source = _ansi_c(text) if "$'" in text else text
            hidden: list[str] = []
            nodes = try_bashlex(source)
            if nodes is None:
                desugared, hidden = desugar(source)
                if desugared != source and cost <= self.parse_budget:
                    self.parse_budget -= cost
                    nodes = try_bashlex(desugared)
            if nodes is not None:
                collector = Collector(source)
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
        if reason == "nested too deeply":  # beyond the parser's depth: fail closed, as beyond ours
            risk = Risk(
                "unparseable",
                "critical",
                "Command nests code deeper than the parser can follow; it cannot be checked - requires approval",
                (_SIMPLIFY,),
            )
        else:
            risk = Risk(
                "unparseable", "warning", f"Could not parse the command ({reason}); checked it with a text-level fallback", (_SIMPLIFY,)
            )
        self.add(risk, text)
        bombs = [m.group(0) for m in FORK_BOMB_TEXT.finditer(text[:_MAX_TOTAL_PARSE])]
        pipelines = fallback_pipelines(text)
        # The tokenizer keeps `$(...)` inside its words: read them as the parser would have.
        words = [w for p in pipelines for c in p if isinstance(c, SimpleCommand) for w in c.words if w.dynamic]
        subs = [sub for w in words for sub in substitutions(w.text)]
        return pipelines, bombs, [": " + " ".join(subs)] if subs else []

    def pipeline(self, stages: Pipeline, depth: int) -> None:
        upstream = _Upstream()
        for stage in stages:
            if isinstance(stage, Group):
                upstream.group = stage
                upstream.text = f"{upstream.text} | {stage.text}" if upstream.text else stage.text
                continue
            variants = self.substitute(stage.words) if self.commands < MAX_COMMANDS else [stage.words]
            self.commands += len(variants)  # each value's command is walked, and counts
            if self.commands > MAX_COMMANDS:
                if self.commands - len(variants) <= MAX_COMMANDS:  # the first stage past the cap
                    # Fail closed: the commands past the cap are unknown, so they hold like a destructive one.
                    self.complete = False
                    self.add(
                        Risk(
                            "unparseable",
                            "critical",
                            f"Command has more than {MAX_COMMANDS} simple commands; the rest cannot be checked - requires approval",
                            (_SIMPLIFY,),
                        ),
                        stage.text,
                    )
                return
            before = self.assign(stage)
            for words in variants:  # one command per value of a variable: each is what may run
                stage = replace(stage, words=words)
                unwrapped = unwrap(stage.words) if stage.words else None
                self.simple(stage, unwrapped, upstream, depth)
            if before is not None:  # `X=/ cmd`: X is cmd's alone
                self.variables = before
            if unwrapped is not None and [w.text for w in unwrapped.argv[:2]] == ["set", "--"]:
                self.positional = unwrapped.argv[2:]
            if unwrapped is not None and any(_NAMES_IFS.fullmatch(w.text) for w in unwrapped.argv[1:]) and "IFS" not in self.variables:
                self.variables["IFS"] = [Word("$IFS", True)]  # changed some other way: word splitting is unknown from here
            if unwrapped is not None:
                if len(stages) == 1 and unwrapped.argv and program(unwrapped.argv[0]) in {"cd", "pushd"}:
                    self.cwd = _cd_target(unwrapped.argv, self.cwd)
                upstream.stages.append((stage, unwrapped))
                upstream.programs.update(program(w) for w in unwrapped.argv[:1])
            upstream.text = f"{upstream.text} | {stage.text}" if upstream.text else stage.text
            upstream.group = None

    def assign(self, stage: SimpleCommand) -> dict[str, list[Word]] | None:
        """Record the variables a stage sets; the variables to restore after it when they were
        only its own (`X=/ cmd`). `export`/`declare`/`local`/`readonly` set them too."""
        words = stage.words
        setters = words[1:] if words and words[0].text in _SETTERS else ()
        given = [*stage.assignments, *(w for w in setters if ASSIGNMENT.match(w.text))]
        if not given:
            return None
        before = dict(self.variables) if words and not setters else None
        new: dict[str, list[Word]] = {}
        for word in given:
            name, _, value = word.text.partition("=")
            # An assignment's value is not split (`c=$x` keeps x's spaces); where it is used may be.
            new.setdefault(name.rstrip("+"), []).append(replace(word, text=value, split=False))
        for name, values in new.items():
            self.variables[name] = [v for value in values for (v,) in self.substitute((_listing(value),))][:_MAX_VALUES]
        return before

    def substitute(self, words: tuple[Word, ...]) -> list[tuple[Word, ...]]:
        """The words with the variables the command assigned written in: the command once per
        value (`for h in a b; do ssh $h CMD`: `ssh a CMD` and `ssh b CMD`), never several values
        in one command, where a value would take another word's place (`ssh a b CMD`)."""
        ifs = self.ifs() or _IFS
        if self.positional is not None:
            words = tuple(x for w in words for x in (self.arguments(w, ifs) if w.dynamic and w.text in _ALL_POSITIONAL else (w,)))
        values = {n: self.variables[n] for w in words if w.dynamic for n in _VARIABLE.findall(w.text) if n in self.variables}
        # `${X:-/}` when X is not the command's own: the default is what runs when X is unset.
        defaults = [found for w in words if w.dynamic for found in _DEFAULT.findall(w.text)]
        values |= {n: [Word(d), Word(f"${{{n}}}", True)] for n, d in defaults if n not in values}
        if not values:
            return [words]
        bindings: list[dict[str, Word]] = [{}]
        for name, options in values.items():
            bindings = [{**b, name: value} for b in bindings for value in options][:_MAX_VALUES]
        return [tuple(x for word in words for x in _bound(word, binding, ifs)) for binding in bindings]

    def arguments(self, word: Word, ifs: str) -> tuple[Word, ...]:
        """What `"$@"` stands for after `set -- ARGS`: the arguments; unquoted (`$*`, `$@`), each
        split again on IFS (`IFS=,; set -- rm,-rf,/x; $*` runs `rm -rf /x`)."""
        given = self.positional or ()
        if not word.split:
            return given
        return tuple(Word(f, bool(_EXPANSION.search(f)), w.substituted, True) for w in given for f in _fields(w.text, ifs))

    def ifs(self) -> str | None:
        """The characters bash splits unquoted expansions on: its default unless the command set
        IFS itself, None when it set it to something not known before it runs."""
        values = self.variables.get("IFS")
        if values is None:
            return _IFS
        return values[0].text if len(values) == 1 and not values[0].dynamic else None

    def simple(self, stage: SimpleCommand, unwrapped: Unwrapped | None, upstream: _Upstream, depth: int) -> None:
        if stage.fed:  # a copy of a `while read` loop's command, as xargs would run it: its risks alone
            if unwrapped is not None and unwrapped.argv:
                self.invocation(stage, unwrapped, upstream, depth)
            return
        for redirect in stage.redirects:
            if redirect.target is not None:
                for risk in redirect_risks(redirect.op, redirect.target, self.cwd):
                    self.add(risk, stage.text)
            if redirect.expands and redirect.body:
                # `cat <<X` (delimiter unquoted): the command substitutions in the body run first.
                for found in substitutions(redirect.body):
                    self.script(found[2:-1] if found.startswith("$(") else found[1:-1], depth + 1, stage.text)
        for how, target in _emptied(stage, unwrapped):
            for risk in emptied_risks(how, Word(target), self.cwd):
                self.add(risk, stage.text)
        redirected = _redirected_files(stage.redirects)
        if unwrapped is None:
            if redirected:  # a redirection alone is a command too: `> /etc/passwd` empties the file
                self.commands_seen.append((redirected,))
            return
        self.remember_writes(stage, unwrapped, upstream)
        if stage.words:
            self.commands_seen.append(_forms(stage.words, unwrapped.argv, redirected, stage.assignments))
        head = unwrapped.argv[:1]
        files = [*unwrapped.code_files, *(head if head and self.file_key(head[0]) in self.written.keys() | self.downloaded.keys() else ())]
        for word in files:
            runner = f"'{program(unwrapped.argv[0]) if unwrapped.argv else 'source'}'"
            key = self.file_key(word)
            if key in self.downloaded:
                self.add(remote_risk(self.downloaded[key], runner), stage.text)
            elif key in self.written:
                self.script(self.written[key], depth + 1, stage.text)
            elif downloads := sorted(word.substituted & DOWNLOADERS):
                self.add(remote_risk(downloads[0], runner), stage.text)
            elif word.dynamic and _EXPANSION.search(word.text) and not _NAMED_PROGRAM.fullmatch(word.text):
                self.add(_computed_script(word, runner), stage.text)
        for script in unwrapped.scripts:
            self.nested(script, stage, depth, "a shell")
        for word in unwrapped.evals:
            self.nested(word, stage, depth, "eval")
        for language, source in unwrapped.code:
            if downloads := sorted(source.substituted & DOWNLOADERS):
                self.add(remote_risk(downloads[0], f"'{language}'"), stage.text)
                continue
            self.code(language, source.text, depth + 1, stage.text, source.dynamic)
        argv = unwrapped.argv
        if argv:
            self.invocation(stage, unwrapped, upstream, depth)
        self.stdin(stage, unwrapped, upstream, depth)

    def file_key(self, word: Word) -> str | None:
        if word.dynamic or not word.text:
            return None
        path = word.text if word.text.startswith("/") or self.cwd is None else posixpath.join(self.cwd, word.text)
        return posixpath.normpath(path)

    def remember_writes(self, stage: SimpleCommand, unwrapped: Unwrapped, upstream: _Upstream) -> None:
        """Files this command writes, so a later `bash FILE` is read as what was written:
        literal text from echo/printf, or a download (curl -o, wget -O, `curl URL > FILE`)."""
        argv = unwrapped.argv
        if not argv:
            return
        targets = [r.target for r in stage.redirects if r.op in {">", ">>", ">|", "&>"} and r.target]
        name = program(argv[0])
        if name in DOWNLOADERS:
            output = {"-O", "--output-document"} if name == "wget" else {"-o", "--output"}  # curl's -O names the file after the URL
            given = [argv[i + 1] for i, w in enumerate(argv[:-1]) if w.text in output]
            given += [Word(w.text.split("=", 1)[1]) for w in argv if w.text.startswith(("--output=", "--output-document="))]
            given += _named_by_url(name, argv) if not given and not targets else []
            for word in [*given, *(Word(t) for t in targets)]:
                if (key := self.file_key(word)) is not None:
                    self.downloaded[key] = name
            return
        if name == "tee":
            targets += [w.text for w in argv[1:] if not w.text.startswith("-")]
            text = _literal_stages(upstream.stages) if upstream.stages else None
        else:
            text = _literal_stages([(stage, unwrapped)])
        for target in targets:
            if (key := self.file_key(Word(target))) is not None:
                self.downloaded.pop(key, None)
                if text is None:
                    self.written.pop(key, None)
                elif key in self.written and any(r.op == ">>" and r.target == target for r in stage.redirects):
                    self.written[key] = f"{self.written[key]}\n{text}"
                else:
                    self.written[key] = text

    def nested(self, word: Word, stage: SimpleCommand, depth: int, runner: str) -> None:
        """Shell text handed to a shell or to eval: parse it, or report it as hidden when computed."""
        if downloads := sorted(word.substituted & DOWNLOADERS):
            self.add(remote_risk(downloads[0], runner), stage.text)
            return
        text = word.text.strip()
        if word.dynamic and re.fullmatch(r"\"?(?:\$\(.*\)|`.*`)\"?", text, re.S):
            inner = text.strip('"')[2:-1] if text.strip('"').startswith("$(") else text.strip('"')[1:-1]
            resolved = self.literal_output(inner)
            if resolved is not None:
                self.add(
                    Risk("encoded_payload", "info", f"Command runs a decoded payload in {runner}; checked what it decodes to"), stage.text
                )
                self.script(resolved, depth + 1, stage.text)
                return
            if word.substituted and (word.substituted <= ENV_TOOLS or ENV_SETUP.search(inner)):
                self.add(
                    Risk(
                        "dynamic_command",
                        "info",
                        f"Command runs the output of '{sorted(word.substituted)[0]}' in {runner} (environment setup)",
                    ),
                    stage.text,
                )
                return
            self.add(hidden_risk(runner), stage.text)
            return
        if word.dynamic and re.fullmatch(r"\"?\$\{?\w+(?:\[[^]]*\])?\}?\"?(?:\s+.*)?", text, re.S):
            self.add(hidden_risk(runner), stage.text)
            return
        self.script(word.text, depth + 1, stage.text)

    def literal_output(self, text: str) -> str | None:
        nodes = try_bashlex(text) if len(text) <= _MAX_PARSE_CHARS else None
        if nodes is None or len(nodes) != 1:
            return None
        collector = Collector(text)
        try:
            collector.visit(nodes[0])
        except RecursionError:
            return None
        if len(collector.pipelines) != 1 or any(isinstance(s, Group) for s in collector.pipelines[0]):
            return None
        stages = [(s, unwrap(s.words)) for s in collector.pipelines[0] if isinstance(s, SimpleCommand)]
        return _literal_stages(stages)

    def code(self, language: str, source: str, depth: int, origin: str, dynamic: bool = False) -> None:
        if depth > _MAX_DEPTH:
            self.script("", depth, origin)
            return
        reading = inline_code.shell_of(language, source)
        for line in reading.shell:
            self.script(line, depth + 1, origin)
        for what in reading.hidden[:1]:
            if reading.downloaded:
                self.add(remote_risk("the network", f"{language} exec"), origin)
            else:
                self.add(
                    Risk(
                        "hidden_code",
                        "warning",
                        f"Command runs {language} code computed at run time ({what}); it cannot be checked - review before running",
                        (HIDDEN_SUGGESTION,),
                    ),
                    origin,
                )

    def stdin(self, stage: SimpleCommand, unwrapped: Unwrapped, upstream: _Upstream, depth: int) -> None:
        argv = unwrapped.argv
        mode: str | None = unwrapped.stdin or ("sql" if argv and is_sql_client(Invocation(argv)) else None)
        if mode is None and argv and redis_reads_commands(Invocation(argv)):
            mode = "redis"
        if mode is None:
            return
        body = _heredoc(stage)
        if mode == "cron":
            self.crontab(stage, body, upstream, depth)
            return
        runner = f"'{program(argv[0])}'" if argv else "a remote shell"
        if mode == "shell" and body is not None and re.fullmatch(r"\s*(?:\$\(.*\)|`.*`)\s*", body, re.S):
            self.nested(Word(body.strip(), True), stage, depth, runner)  # `bash <<< "$(...)"`
            return
        if body is None and upstream.feeder is not None:
            piped = f"{upstream.text} | {stage.text}"
            if downloads := sorted(upstream.programs & DOWNLOADERS):
                self.add(remote_risk(downloads[0], runner), piped)
                return
            body = _literal_stages(upstream.stages)
            if body is None:
                if mode == "redis" and upstream.programs & REDIS_CLIENTS:
                    self.add(redis_listed_risk(), piped)
                elif mode not in ("sql", "redis") and upstream.programs & DECODERS:
                    self.add(hidden_risk(runner), piped)
                return
            if upstream.programs & DECODERS:
                self.add(
                    Risk("encoded_payload", "info", f"Command pipes an encoded payload into {runner}; checked what it decodes to"), piped
                )
        if body is None:
            return
        if mode == "shell":
            self.script(body, depth + 1, stage.text)
        elif mode == "code":
            self.code(unwrapped.language, body, depth + 1, stage.text)
        elif mode == "sql":
            for risk in sql_risks(body):
                self.add(risk, stage.text)
        elif mode == "redis":
            for risk in redis_text_risks(body):
                self.add(risk, stage.text)

    def crontab(self, stage: SimpleCommand, body: str | None, upstream: _Upstream, depth: int) -> None:
        """`crontab -` installs what it reads as the whole cron table: the commands of the lines
        written literally are checked; a table with none, unless the old one is listed back
        into it, deletes every job (`echo "" | crontab -`, as `crontab -r`); a table computed at
        run time (`crontab -l | grep -v backup | crontab -`) or read from a file replaces them unseen."""
        if body is None and any(r.op == "<" and r.target == "/dev/null" for r in stage.redirects):
            body = ""
        group = upstream.group
        lists = group.lists_crontab if group else any(_lists_crontab(u.argv) for _, u in upstream.stages)
        if body is None and group is not None:
            if not group.complete:
                self.cron_lines(group.output, depth, stage.text)
            body = group.output if group.complete else None
        elif body is None and upstream.stages:
            body = _literal_stages(upstream.stages)
        elif body is None and not any(r.op == "<" for r in stage.redirects):
            return
        piped = f"{upstream.text} | {stage.text}" if upstream.text else stage.text
        if downloads := sorted(upstream.programs & DOWNLOADERS):
            self.add(remote_risk(downloads[0], "'crontab'"), piped)
            return
        if body is None:
            self.add(
                Risk(
                    "account_change",
                    "warning",
                    "Command replaces the user's whole cron table with text not known before it runs - review before running",
                    (_CRON_BACKUP,),
                ),
                piped,
            )
            return
        if not self.cron_lines(body, depth, stage.text) and not lists:
            self.add(
                Risk(
                    "account_change",
                    "critical",
                    "Command replaces the user's cron table with an empty one: every cron job is deleted - requires approval",
                    (_CRON_BACKUP,),
                ),
                piped,
            )

    def cron_lines(self, table: str, depth: int, origin: str) -> bool:
        """Check the commands of a cron table's lines; whether it has any."""
        commands = [c for line in table.splitlines() if (c := _CRON_LINE.sub("", line)).strip()]
        self.script("\n".join(commands), depth + 1, origin)
        return bool(commands)

    def globbed(self, stage: SimpleCommand, head: Word, args: tuple[Word, ...], upstream: _Upstream, depth: int) -> None:
        """A command name that is a pattern fails closed; each known program it can match is
        walked as the command too (its risks, and forms the policy's rules see)."""
        matches = _matching_programs(head.text)
        self.add(_globbed_name(head.text, matches), stage.text)
        if depth >= _MAX_DEPTH:
            return
        for name in matches:
            words = (replace(head, text=posixpath.join(posixpath.dirname(head.text), name)), *args)
            self.simple(SimpleCommand(words, (), stage.text), unwrap(words), upstream, depth + 1)

    def invocation(self, stage: SimpleCommand, unwrapped: Unwrapped, upstream: _Upstream, depth: int) -> None:
        argv = unwrapped.argv
        head = argv[0]
        if downloads := sorted(head.substituted & DOWNLOADERS):
            self.add(remote_risk(downloads[0], "the shell"), stage.text)
        elif head.dynamic:
            self.add(_computed_name(head.text), stage.text)
        elif GLOB.search(program(head)):
            self.globbed(stage, head, unwrapped.argv[1:], upstream, depth)
        elif program(head) in {"fc", "history"} and (risk := _history_risk(argv)) is not None:
            self.add(risk, stage.text)
            added = argv[[w.text for w in argv].index("-s") + 1 :] if any(w.text == "-s" for w in argv) else ()
            if added:  # `history -s TEXT`: what a later `fc -s` runs, read as the shell text it is
                self.nested(Word(" ".join(w.text for w in added), any(w.dynamic for w in added)), stage, depth, "history")
        if head.split and self.ifs() != _IFS:
            self.add(_split_name(head.text), stage.text)
        feeder = upstream.feeder
        fed = feeder[1].argv if feeder else ()
        roots = tuple(find_parts(fed)[0]) if unwrapped.via_xargs and fed and program(fed[0]) == "find" else ()
        source = upstream.stages[0][1].argv if upstream.stages else ()
        if unwrapped.via_xargs and not roots and source and program(source[0]) == "ls":  # `ls /etc | ... | xargs rm`
            listed = tuple(w for w in source[1:] if not w.text.startswith("-"))
            roots = listed if listed and find_delete_severity(listed, self.cwd) == "critical" else ()
        stdin_fed = feeder is not None or any(r.body is not None or r.op == "<" for r in stage.redirects)
        via_xargs = unwrapped.via_xargs
        fed_text = _literal_stages(upstream.stages) if upstream.stages else _heredoc(stage)
        if via_xargs and fed_text is not None:
            argv, via_xargs = _fill_xargs(argv, fed_text), False
        for risk in command_risks(Invocation(argv, via_xargs, roots, self.cwd, stdin_fed)):
            self.add(risk, stage.text)
        if program(head) == "find" and depth < _MAX_DEPTH:
            find_roots, execs, _ = find_parts(argv)
            for cmd in execs:
                words = tuple(find_roots[0] if w.text == "{}" else w for w in cmd)
                if program(cmd[0]) not in FIND_DELETERS:
                    self.simple(SimpleCommand(words, (), stage.text), unwrap(words), _Upstream(), depth + 1)
                else:  # its risk is the find's (find_delete_severity); the policy's rules still see it
                    self.commands_seen.append(_forms(words, words))
