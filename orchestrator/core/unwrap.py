"""Unwrapping: peel wrappers off argv down to the program that really runs.

`unwrap` strips sudo, doas, env, nohup, nice, timeout, time, command, exec, setsid, stdbuf,
ionice, chroot, flock, watch, xargs, su/runuser, busybox and kubectl/oc/docker/podman exec, and collects
code handed elsewhere to run: `sh -c`/`bash -c` strings, `eval`, `su -c`, `ssh host CMD`,
`env -S`, `flock -c` and `watch` commands as scripts to parse again; `source F`, `bash F` and
`python F` as code files; and whether the program runs its stdin as shell code or as other code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from orchestrator.core.risk_types import Word, program
from orchestrator.core.shell_parse import ASSIGNMENT

_SHELLS = frozenset(["sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "yash", "fish"])
_INTERPRETERS = frozenset(["python", "python2", "python3", "perl", "ruby", "node", "php", "lua"])


@dataclass(slots=True)
class Unwrapped:
    argv: tuple[Word, ...] = ()
    via_xargs: bool = False
    scripts: list[Word] = field(default_factory=list)  # shell code to parse again
    code_files: list[Word] = field(default_factory=list)  # files run as code (`source F`, `bash F`)
    stdin: Literal["shell", "code"] | None = None  # the program runs its stdin


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


def unwrap(argv: tuple[Word, ...]) -> Unwrapped:
    """Peel wrappers off argv until the program that really runs; collect code run elsewhere."""
    out = Unwrapped()
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
            while i < len(args) and ASSIGNMENT.match(args[i].text):
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


def _shell(argv: tuple[Word, ...], out: Unwrapped) -> Unwrapped:
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
