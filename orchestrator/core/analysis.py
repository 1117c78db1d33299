"""Phase 1 risk analysis: parse a shell command and report what it could destroy.

`analyze(command)` parses the command (`orchestrator.core.shell_parse`) and walks every simple
command it contains. Each command is unwrapped (`orchestrator.core.unwrap`: sudo, env, xargs,
kubectl/docker exec, ...) and code handed to another shell is parsed again: `sh -c`/`bash -c`
strings, `eval`, `su -c`, `ssh host CMD`, `env -S`, heredocs and here-strings fed to a shell,
and `echo ... | sh`. Text that is only data (`echo "rm -rf /"`, `grep "DROP TABLE" f.sql`,
comments) is never treated as code. The rules and the severity contract are in
`orchestrator.core.risk_rules`.

Decisions worth knowing:
- `$(echo rm) -rf /` is folded: a substitution that only echoes literal words is replaced
  by them, so it is rated as `rm -rf /`. Any other computed command name (`$CMD -rf /`) is
  an info finding (`dynamic_command`): what it runs cannot be checked statically.
- A download piped into a shell or interpreter (`curl ... | sudo bash`, `bash <(curl ...)`,
  `sh -c "$(wget -O- ...)"`) is critical `remote_code`; decoded data piped into a shell
  (`base64 -d | sh`) is a warning.
- Function bodies are checked as if called. A function that runs itself in the background or
  piped into itself (`:(){ :|:& };:`) is a critical `fork_bomb`.
- Input bashlex cannot parse, even after the rewrites in `shell_parse`, gives an `unparseable`
  warning and is checked by a text-level tokenizer, so `rm -rf / '` is still critical; the
  fork-bomb shape is then matched on the raw text. `parsed` is False whenever any part needed
  that fallback.
- Work is capped so 100 KB of input takes well under a second: 8 KB per bashlex parse, 16 KB
  of bashlex parsing per call (each parse also costs 256 characters of that budget), 5 levels
  of nested shells and 4,000 simple commands. Past a cap the text-level fallback takes over
  and the result carries an `unparseable` warning.
- `tool` names the program that receives `command`: for a SQL client (`psql`, `mysql`, ...)
  the command is SQL; for anything else it is a shell command line.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

import msgspec

from orchestrator.core.filesystem_rules import FIND_DELETERS, find_parts
from orchestrator.core.host_rules import redirect_risks
from orchestrator.core.risk_rules import command_risks
from orchestrator.core.risk_types import SEVERITY_RANK, Invocation, Risk, Severity, program
from orchestrator.core.shell_parse import (
    FORK_BOMB_TEXT,
    MAX_COMMANDS,
    Collector,
    Pipeline,
    SimpleCommand,
    desugar,
    fallback_pipelines,
    has_words,
    try_bashlex,
)
from orchestrator.core.sql_rules import SQL_CLIENTS, is_sql_client, sql_risks
from orchestrator.core.unwrap import Unwrapped, unwrap

_MAX_DEPTH = 5
# bashlex costs 4 to 30 microseconds per character (backticks are the slowest), plus a fixed
# cost per call that _PARSE_OVERHEAD charges against the budget.
_MAX_PARSE_CHARS = 8_192
_MAX_TOTAL_PARSE = 16_384
_PARSE_OVERHEAD = 256
_MAX_SHOWN = 300

_DOWNLOADERS = frozenset(["curl", "wget", "fetch", "http", "https", "aria2c", "lwp-request", "GET"])
_DECODERS = frozenset({"base64", "base32", "xxd", "uudecode"})
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


# --- evaluation -------------------------------------------------------------------------

_Feeder = tuple[SimpleCommand, Unwrapped]


@dataclass(slots=True)
class _Upstream:
    """The earlier stages of a pipeline, as seen by the next one."""

    feeder: _Feeder | None = None  # the stage writing into this one
    programs: set[str] = field(default_factory=set)
    text: str = ""  # e.g. "curl -fsSL URL" when checking "curl -fsSL URL | sudo bash"


def _heredoc(stage: SimpleCommand) -> str | None:
    return next((r.body for r in stage.redirects if r.body is not None), None)


def _piped_text(stage: SimpleCommand, unwrapped: Unwrapped) -> str | None:
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

    def parse(self, text: str) -> tuple[list[Pipeline], list[str], list[str]]:
        if not has_words(text):
            return [], [], []
        cost = len(text) + _PARSE_OVERHEAD
        reason = "too long to parse" if len(text) > _MAX_PARSE_CHARS else "analysis budget used up"
        if len(text) <= _MAX_PARSE_CHARS and cost <= self.parse_budget:
            self.parse_budget -= cost
            # bashlex misreads ANSI-C strings ($'...'); as plain '...' they keep their words
            source = text.replace("$'", " '")
            hidden: list[str] = []
            nodes = try_bashlex(source)
            if nodes is None:
                desugared, hidden = desugar(source)
                if desugared != source and cost <= self.parse_budget:
                    self.parse_budget -= cost
                    nodes = try_bashlex(desugared)
            if nodes is not None:
                collector = Collector(text)
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
        bombs = [m.group(0) for m in FORK_BOMB_TEXT.finditer(text[:_MAX_TOTAL_PARSE])]
        return fallback_pipelines(text), bombs, []

    def pipeline(self, stages: Pipeline, depth: int) -> None:
        upstream = _Upstream()
        for stage in stages:
            if stage is None:
                continue
            self.commands += 1
            if self.commands > MAX_COMMANDS:
                if self.commands == MAX_COMMANDS + 1:
                    self.add(
                        Risk(
                            "unparseable",
                            "warning",
                            f"Command has more than {MAX_COMMANDS} simple commands; the rest was not analyzed",
                            (_SIMPLIFY,),
                        ),
                        stage.text,
                    )
                return
            unwrapped = unwrap(stage.words) if stage.words else None
            self.simple(stage, unwrapped, upstream, depth)
            upstream.text = f"{upstream.text} | {stage.text}" if upstream.text else stage.text
            if unwrapped is not None:
                upstream.feeder = (stage, unwrapped)
                upstream.programs.update(program(w) for w in unwrapped.argv[:1])

    def simple(self, stage: SimpleCommand, unwrapped: Unwrapped | None, upstream: _Upstream, depth: int) -> None:
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

    def invocation(self, stage: SimpleCommand, unwrapped: Unwrapped, feeder: _Feeder | None, depth: int) -> None:
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
                    self.simple(SimpleCommand(words, (), stage.text), unwrap(words), _Upstream(), depth + 1)

    @staticmethod
    def remote(download: str, runner: str) -> Risk:
        return Risk(
            "remote_code",
            "critical",
            f"Command runs code downloaded with '{download}' in {runner} without inspecting it - requires approval",
            _REMOTE_SUGGESTIONS,
        )
