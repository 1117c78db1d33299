"""Phase 1 risk analysis: parse a shell command and report what it could destroy.

`analyze(command)` parses the command (`orchestrator.core.shell_parse`) and walks every simple
command it contains. Each command is unwrapped (`orchestrator.core.unwrap`: sudo, env, xargs,
nsenter, parallel, kubectl/docker exec, ...) and code handed elsewhere is read too: shell text
(`sh -c`, `su -c`, `ssh host CMD`, `parallel CMD ::: ARGS`, `vi -c ':!CMD'`, ansible and salt
commands, heredocs and pipes into a shell) is parsed again; code in other languages (`python -c`,
heredocs into `python3`, `perl -e`, `node -e`, `awk 'BEGIN{system(...)}'`) is read by
`orchestrator.core.inline_code` for the shell commands and deletes it amounts to; literal encoded
payloads (`echo ... | base64 -d | sh`, `printf '\\x72...' | bash`) are decoded
(`orchestrator.core.payloads`) and checked as what they decode to. Each command goes to the rule
packs (`orchestrator.core.risk_rules`). Text that is only data (`echo "rm -rf /"`, `grep "DROP
TABLE" f.sql`, a heredoc to `cat`, comments) is never treated as code.

Decisions worth knowing:
- Code that cannot be known before it runs is a finding of its own: a download piped or
  substituted into a shell or interpreter (`curl ... | sh`) is critical `remote_code`; `eval
  "$X"`, `sh -c "$CMD"`, or a payload piped into a shell that does not decode statically is
  critical `hidden_code`. `eval "$(ssh-agent -s)"` and the other environment-setup tools are info.
- The working directory is followed through `cd`/`pushd` (and `working_dir`), so `cd / && rm -rf
  *` rates as deleting top-level directories; relative paths are judged by name otherwise.
- `$(echo rm) -rf /` is folded: a substitution that only echoes literal words is replaced by
  them (`printf '%q '` quotes as the shell reads it back). A command name or a sourced script
  known only at run time (`$CMD -rf /`, `"$@"`, `source "$F"`) fails closed: a critical
  `unresolved_command`. A program named below a variable directory (`$HOME/bin/tool`) or looked
  up by name (`$(command -v python3)`) is an info `dynamic_command`. Code nested deeper than
  the caps below is critical too (`unparseable`): what it runs cannot be known.
- Function bodies are checked as if called; a function that runs itself in the background or
  piped into itself (`:(){ :|:& };:`) is a critical `fork_bomb`.
- Input bashlex cannot parse, even after the rewrites in `shell_parse`, gives an `unparseable`
  warning and is checked by a text-level tokenizer, so `rm -rf / '` is still critical.
- Work is capped so 100 KB of input takes well under a second: 8 KB per bashlex parse, 16 KB
  of bashlex parsing per call (each parse also costs 256 characters of that budget), 5 levels
  of nested code and 4,000 simple commands (a command run once per value of a variable, as in
  a `for` loop, counts once per value, at most 16). Past the parse caps the text-level fallback takes
  over; past the nesting or command caps the command fails closed (critical `unparseable`),
  and policy rules refuse it (they cannot see every command).
- `tool` names the program that receives `command`: for a SQL client (`psql`, `mysql`, ...)
  the command is SQL, for an interpreter (`python3`, `node`, ...) code in that language; for
  anything else it is a shell command line.
"""

from __future__ import annotations

import functools

import msgspec

from orchestrator.core.risk_types import SEVERITY_RANK, Severity
from orchestrator.core.walker import Walk
from schemas.values import Finding


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


# A fan-out sends one command line to many nodes, a burst often repeats one: each job is
# judged, but a command is parsed and walked once (bench/fleet.py: 1,000 jobs of `echo hi`).
# The walk is pure, so the cached answer is the answer. Bounded: keys are at most
# MAX_COMMAND_CHARS (64 KiB) each.
CACHED_COMMANDS = 256


def analyze(command: str, tool: str = "bash", working_dir: str | None = None) -> Analysis:
    """Parse `command` and report its risks; never raises on malformed input."""
    found = _analyze(command, tool, working_dir)
    # Lists of their own: a caller that changed a cached answer's lists would change the next job's verdict.
    return msgspec.structs.replace(found, findings=list(found.findings), suggestions=list(found.suggestions))


@functools.lru_cache(maxsize=CACHED_COMMANDS)
def _analyze(command: str, tool: str, working_dir: str | None) -> Analysis:
    walk = Walk(working_dir)
    try:
        walk.start(command, tool)
    except Exception as exc:  # a bug here must not take the decider down: fail closed, held for approval
        return Analysis(
            findings=[
                Finding(
                    type="analysis_error",
                    severity="critical",
                    message=f"The analysis failed ({type(exc).__name__}); the command could not be checked - requires approval",
                    command=command[:300],
                )
            ],
            suggestions=["Split the command into simpler steps the analyzer can check"],
            parsed=False,
        )
    findings = [Finding(type=h.type, severity=h.severity, message=h.message, command=h.command) for h in walk.findings]
    return Analysis(findings=findings, suggestions=walk.suggestions, parsed=walk.parsed)


class Normalised(msgspec.Struct, frozen=True, kw_only=True):
    """Every simple command of a command line as it will run, for the policy's rules."""

    commands: tuple[tuple[str, ...], ...]
    """Each simple command in the forms it can be written: as submitted (quotes removed), unwrapped,
    and with the program named without its path."""
    complete: bool
    """False when a cap (commands, nesting) left some commands unread."""


def normalised_commands(command: str, tool: str = "bash") -> list[str]:
    """Every simple command as it will run: quotes removed, wrappers peeled, nested code included.

    `shutdow""n -h now` gives `shutdown -h now`; `sudo bash -c 'rm -rf /x'` gives both
    `sudo bash -c rm -rf /x` and `rm -rf /x`; `/sbin/shutdown` also gives `shutdown`.
    """
    return [form for forms in normalised(command, tool).commands for form in forms]


@functools.lru_cache(maxsize=CACHED_COMMANDS)
def normalised(command: str, tool: str = "bash") -> Normalised:
    """The simple commands policy deny and allow rules match (see `Normalised`)."""
    walk = Walk(None)
    try:
        walk.start(command, tool)
    except Exception:  # analyze() reports the failure; the rules see the commands read before it, as incomplete
        walk.complete = False
    return Normalised(commands=tuple(walk.commands_seen), complete=walk.complete)
