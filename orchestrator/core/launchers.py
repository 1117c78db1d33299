"""Launchers: programs that run code they are handed, and the result type of unwrapping.

`Unwrapped` is what `orchestrator.core.unwrap.unwrap` makes of one argv. The readers here
handle the launchers whose code goes somewhere other than the next argv words: `parallel CMD
::: ARGS` (one script per argument, `{}` filled in), `tar --to-command` and
`--checkpoint-action=exec=`, ansible ad-hoc modules (`-m shell -a CMD`, and `-m file/user/
service/reboot` written as the shell command they amount to), `salt`/`salt-ssh TARGET cmd.run
CMD` (and `salt-call cmd.run CMD`), pdsh/clush/pssh, interpreters given code (`python -c`, `perl -e`, `node -e`, `php -r`, `lua -e`,
`awk 'PROGRAM'`, or code on stdin), `vi -c ':!CMD'` and sed's `e COMMAND`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from orchestrator.core.risk_types import Word

LANGUAGES = {
    "python": "python", "python2": "python", "python3": "python", "pypy": "python", "pypy3": "python",
    "perl": "perl", "ruby": "ruby", "node": "node", "nodejs": "node", "deno": "node", "bun": "node",
    "php": "php", "lua": "lua", "luajit": "lua", "awk": "awk", "gawk": "awk", "mawk": "awk", "nawk": "awk",
}  # fmt: skip
_CODE_FLAGS = {
    "python": ("-c",),
    "perl": ("-e", "-E"),
    "ruby": ("-e",),
    "node": ("-e", "--eval", "-p", "--print"),
    "php": ("-r",),
    "lua": ("-e",),
}
VI = frozenset({"vi", "vim", "nvim", "ex", "view", "vimdiff", "rvim", "gvim"})


@dataclass(slots=True)
class Unwrapped:
    argv: tuple[Word, ...] = ()
    via_xargs: bool = False
    scripts: list[Word] = field(default_factory=list)  # shell code to parse again
    evals: list[Word] = field(default_factory=list)  # words given to `eval`
    code: list[tuple[str, Word]] = field(default_factory=list)  # (language, source) run in an interpreter
    code_files: list[Word] = field(default_factory=list)  # files run as code (`source F`, `bash F`)
    stdin: Literal["shell", "code", "cron"] | None = None  # the program runs its stdin (cron: lines of a crontab)
    language: str = ""  # for stdin == "code"


_VALUES: dict[str, frozenset[str]] = {
    name: frozenset(opts.split())
    for name, opts in {
        "parallel": "-j --jobs -S --sshlogin --sshloginfile -a --arg-file --colsep -C -d --delimiter -I -N -n --max-args -L "
        "--timeout --joblog --results --tmpdir --workdir --wd --delay --retries --load --memfree --halt --env --tag --tagstring "
        "--basefile --transfer-file",
        "pdsh": "-w -x -g -X -l -t -u -f -R -N",
        "clush": "-w -x -g -X -l -t -u -f -R -o -b",
        "pssh": "-h -H -l -p -o -e -t -O -x -X",
        "parallel-ssh": "-h -H -l -p -o -e -t -O -x -X",
        # -G/-L/-E/-C/-N/-I/-S/-R (--grain, --list, ...) only say how to read the target, the next word.
        "salt": "-t --timeout -b --batch-size --batch-wait --out --out-file --out-indent -l --log-level -c --config-dir "
        "-a --auth --return --return-config --subset -d --delimiter --roster --roster-file --priv --user --passwd "
        "--extra-filerefs --thin-extra-modules -W --rand-thin-dir",
    }.items()
}
DONE: tuple[Word, ...] = (Word("\x00done"),)  # the code went elsewhere: nothing runs next
Step = Callable[[str, tuple[Word, ...], "Unwrapped"], "tuple[Word, ...] | None"]


def skip_options(args: tuple[Word, ...], value_options: frozenset[str]) -> int:
    i = 0
    while i < len(args):
        t = args[i].text
        if t == "--":
            return i + 1
        if not t.startswith("-") or t == "-":
            return i
        i += 2 if t in value_options else 1
    return i


def joined(words: tuple[Word, ...] | list[Word]) -> Word:
    return Word(
        " ".join(w.text for w in words),
        any(w.dynamic for w in words),
        frozenset().union(*(w.substituted for w in words)),
    )


def option_value(args: tuple[Word, ...], short: str, long: str) -> Word | None:
    for i, w in enumerate(args):
        if w.text in {short, long} and i + 1 < len(args):
            return args[i + 1]
        if w.text.startswith(long + "="):
            return Word(w.text[len(long) + 1 :], w.dynamic, w.substituted)
    return None


def _fleet(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    """pdsh/clush/pssh: the rest of the line is a shell command run on every host."""
    rest = args[skip_options(args, _VALUES.get(name, frozenset())) :]
    if name in {"pssh", "parallel-ssh"} and rest:
        rest = rest[-1:]
    if rest:
        out.scripts.append(joined(rest))
    return DONE


def _parallel(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    if any(a.text in {"--dry-run", "--dryrun"} for a in args):
        return DONE  # only prints the commands
    words = list(args[skip_options(args, _VALUES["parallel"]) :])
    seps = [i for i, w in enumerate(words) if w.text in {":::", "::::", ":::+", "::::+"}]
    if not seps:
        out.via_xargs = True
        return tuple(words)
    template, values = words[: seps[0]], [w for w in words[seps[0] + 1 :] if w.text not in {":::", ":::+"}]
    text = " ".join(w.text for w in template)
    for value in values[:16]:
        quoted = shlex.quote(value.text) if not value.dynamic else value.text
        filled = text.replace("{}", quoted) if "{}" in text else f"{text} {quoted}"
        out.scripts.append(Word(filled, value.dynamic or any(w.dynamic for w in template)))
    return DONE


def _tar(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...] | None:
    for i, w in enumerate(args):
        for prefix in ("--to-command=", "--checkpoint-action=exec=", "--use-compress-program=", "--info-script=", "--new-volume-script="):
            if w.text.startswith(prefix):
                out.scripts.append(Word(w.text[len(prefix) :], w.dynamic))
        if w.text in {"-I", "-F", "--to-command"} and i + 1 < len(args):
            out.scripts.append(args[i + 1])
    return None


_FILE_STATES = {"absent": "rm -rf", "directory": None, "touch": None}


def _ansible(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    texts = [w.text for w in args]
    module, margs = "command", ""
    for i, t in enumerate(texts[:-1]):
        if t in {"-m", "--module-name"}:
            module = texts[i + 1].rsplit(".", 1)[-1]
        elif t in {"-a", "--args"}:
            margs = texts[i + 1]
    kv = {k: v.strip("'\"") for k, _, v in (p.partition("=") for p in margs.split()) if v}
    if module in {"shell", "command", "raw"} and margs:
        out.scripts.append(Word(" ".join(p for p in margs.split() if not p.startswith(("chdir=", "creates=", "removes=")))))
    elif module == "file" and kv.get("state") == "absent" and (path := kv.get("path") or kv.get("dest") or kv.get("name")):
        out.scripts.append(Word(f"rm -rf {shlex.quote(path)}"))
    elif module == "user" and kv.get("state") == "absent":
        out.scripts.append(
            Word(f"userdel {'-r ' if kv.get('remove') in {'yes', 'true', 'True'} else ''}{shlex.quote(kv.get('name', 'USER'))}")
        )
    elif module in {"service", "systemd", "systemd_service"} and kv.get("state") == "stopped":
        out.scripts.append(Word(f"systemctl stop {shlex.quote(kv.get('name', 'UNIT'))}"))
    elif module == "reboot":
        out.scripts.append(Word("reboot"))
    return DONE


def _salt(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    rest = list(args[skip_options(args, _VALUES["salt"]) :])
    if name == "salt-call":  # runs on this minion: no target
        rest[:0] = [Word("local")]
    if len(rest) >= 3 and rest[1].text in {"cmd.run", "cmd.shell", "cmd.run_all", "cmd.script"}:
        out.scripts.append(joined(rest[2:]))
    elif len(rest) >= 2 and rest[1].text in {"system.reboot", "system.shutdown", "system.poweroff", "system.halt"}:
        out.scripts.append(Word(rest[1].text.split(".")[1]))
    elif len(rest) >= 3 and rest[1].text in {"file.remove", "file.rmdir"}:
        out.scripts.append(Word(f"rm -rf {shlex.quote(rest[2].text)}"))
    return DONE


def read_code(language: str, argv: tuple[Word, ...], out: Unwrapped) -> None:
    args = argv[1:]
    if language == "awk":
        _awk(args, out)
        return
    flags = _CODE_FLAGS[language]
    for i, w in enumerate(args):
        t = w.text
        if (t in flags or (language in {"perl", "ruby"} and re.fullmatch(r"-[a-zA-Z]*[eE]", t))) and i + 1 < len(args):
            out.code.append((language, args[i + 1]))
            return
        short = next((f for f in flags if len(f) == 2 and t.startswith(f) and len(t) > 2), None)
        if short and not t.startswith("--"):
            out.code.append((language, Word(t[2:], w.dynamic, w.substituted)))
            return
        if language == "python" and t == "-m":
            return
        if t == "-" or not t.startswith("-"):
            if t != "-":
                out.code_files.append(w)
                return
            break
    out.stdin = "code"
    out.language = language


_AWK_VALUES = frozenset({"-F", "-v", "-f", "--field-separator", "--assign", "--file", "-i", "--include", "-l", "--load"})


def _awk(args: tuple[Word, ...], out: Unwrapped) -> None:
    i = 0
    while i < len(args):
        t = args[i].text
        if t in {"-f", "--file"}:
            if i + 1 < len(args):
                out.code_files.append(args[i + 1])
            return
        if t == "--":
            i += 1
            break
        if not t.startswith("-") or t == "-":
            break
        i += 2 if t in _AWK_VALUES else 1
    if i < len(args):
        out.code.append(("awk", args[i]))


_VI_SHELL = re.compile(r"^[:\s]*(?:silent!?\s*)?(?:[\d,.$%]*\s*(?:r(?:ead)?|w(?:rite)?)?\s*)?!(?!!)(.+)$", re.S)
_VI_SYSTEM = re.compile(r"""\bsystem\(\s*(['"])(.+?)\1""", re.S)


def read_vi(args: tuple[Word, ...], out: Unwrapped) -> None:
    commands: list[Word] = []
    for i, w in enumerate(args):
        if w.text in {"-c", "--cmd"} and i + 1 < len(args):
            commands.append(args[i + 1])
        elif w.text.startswith("+") and len(w.text) > 1:
            commands.append(Word(w.text[1:], w.dynamic))
    for cmd in commands:
        for part in cmd.text.split("|") if "!" not in cmd.text else [cmd.text]:
            if m := _VI_SHELL.match(part):
                out.scripts.append(Word(m.group(1), cmd.dynamic))
            for m2 in _VI_SYSTEM.finditer(part):
                out.scripts.append(Word(m2.group(2), cmd.dynamic))


_SED_VALUES = frozenset({"-e", "--expression", "-f", "--file", "-l", "--line-length"})
_SED_ADDRESS = r"(?:\d+(?:~\d+)?|\$|/(?:\\.|[^/\\\n])*/[IM]*)"
# GNU sed's `e COMMAND` (runs COMMAND, to the end of its line) after an optional address...
_SED_EXEC = re.compile(r"(?:^|[\n;{}])\s*(?:" + _SED_ADDRESS + r"(?:\s*,\s*" + _SED_ADDRESS + r")?)?\s*!?\s*e[ \t]+([^\n]+)")
# ...and `s/RE/REPLACEMENT/e`, which runs what the substitution made: the replacement, as written.
_SED_SUBST_EXEC = re.compile(r"\bs([^\w\s\\])((?:\\.|(?!\1)[^\\\n])*)\1((?:\\.|(?!\1)[^\\\n])*)\1[gpIiMm0-9]*e")


def _sed(name: str, args: tuple[Word, ...], out: Unwrapped) -> None:
    """sed runs shell commands its script names (GNU `e COMMAND`, the `e` flag of `s`)."""
    scripts = [args[i + 1] for i, w in enumerate(args[:-1]) if w.text in {"-e", "--expression"}]
    scripts += [Word(w.text.split("=", 1)[1], w.dynamic) for w in args if w.text.startswith("--expression=")]
    if not scripts and (i := skip_options(args, _SED_VALUES)) < len(args):
        scripts.append(args[i])
    for script in scripts:
        for m in _SED_EXEC.finditer(script.text):
            out.scripts.append(Word(m.group(1), script.dynamic))
        for m in _SED_SUBST_EXEC.finditer(script.text):
            out.scripts.append(Word(re.sub(r"\\(.)", r"\1", m.group(3)), script.dynamic))


LAUNCHERS: dict[str, Step] = {
    "sed": _sed,
    "pdsh": _fleet,
    "clush": _fleet,
    "pssh": _fleet,
    "parallel-ssh": _fleet,
    "parallel": _parallel,
    "tar": _tar,
    "ansible": _ansible,
    "salt": _salt,
    "salt-ssh": _salt,
    "salt-call": _salt,
}
