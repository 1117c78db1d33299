"""Unwrapping: peel wrappers and launchers off argv down to the program that really runs.

`unwrap` strips prefixes that run their arguments as a command (sudo, doas, env, nohup, nice,
timeout, time, command, exec, setsid, stdbuf, ionice, chrt, taskset, nsenter, unshare, cgexec,
systemd-run, strace, numactl, gosu, chroot, flock, watch, xargs, su/runuser, busybox,
kubectl/oc/docker/podman exec, ...) and collects what is handed elsewhere to run:

- shell text to parse again: `sh -c`/`bash -c`, `su -c`, `ssh host CMD`, `env -S`, `flock -c`,
  `watch CMD`, `script -c`, `git submodule foreach CMD`, `git -c core.pager=CMD` (and the other
  settings git runs), pdsh/clush/pssh commands, `parallel CMD ::: ARGS` (one script per
  argument, `{}` filled in), `vi -c ':!CMD'`, sed's `e CMD`, `tar --to-command`/`--checkpoint-action=exec=`,
  `salt TARGET cmd.run CMD`, and ansible ad-hoc modules (`-m shell -a CMD`, and `-m file/user/
  service/reboot` written as the shell command they amount to);
- `eval` words, kept apart: a computed `eval "$X"` is itself a finding;
- code in another language: `python -c`, `perl -e`, `ruby -e`, `node -e`, `php -r`, `lua -e`,
  `awk 'PROGRAM'`, and heredocs or pipes into an interpreter (`stdin`/`language`);
- files run as code (`source F`, `bash F`, `python F`);
- programs that run their stdin as shell text: `sudo -s`/`sudo -i`, `su` without `-c`,
  `at`/`batch`, and `crontab -` (each line's command after the schedule).
"""

from __future__ import annotations

import itertools
import re
import shlex
from typing import Literal

from orchestrator.core.launchers import (
    DONE,
    LANGUAGES,
    LAUNCHERS,
    VI,
    Step,
    Unwrapped,
    joined,
    option_value,
    read_code,
    read_vi,
    skip_options,
)
from orchestrator.core.risk_types import Word, program
from orchestrator.core.shell_parse import ASSIGNMENT

SHELLS = frozenset(["sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "yash", "fish", "rbash", "tcsh", "csh"])

_VALUE_OPTIONS: dict[str, frozenset[str]] = {
    name: frozenset(opts.split())
    for name, opts in {
        "sudo": "-u -g -C -D -h -p -r -t -U -T --user --group --close-from --chdir --host --prompt --role --type",
        "doas": "-u -C",
        "pkexec": "--user",
        "nice": "-n --adjustment",
        "timeout": "-s --signal -k --kill-after",
        "time": "-f --format -o --output",
        "exec": "-a",
        "stdbuf": "-i -o -e",
        "ionice": "-c -n --class --classdata -t",
        "chrt": "-T -P -D --sched-runtime --sched-period --sched-deadline",
        "taskset": "",
        "nsenter": "-t --target -S --setuid -G --setgid -w --wd -r --root -W -Z",
        "unshare": "-S --setuid -G --setgid -R --root -w --wd --map-user --map-group --propagation",
        "cgexec": "-g",
        "systemd-run": "-u --unit -p --property -E --setenv --slice --description --uid --gid -M --machine -H --host "
        "--working-directory --on-calendar --on-active --on-boot --on-startup --on-unit-active --on-unit-inactive "
        "--timer-property --path-property --socket-property --nice",
        "strace": "-o -e -p -s -a -P -O -S -U -X -b",
        "ltrace": "-o -e -p -s -a -n -u",
        "numactl": "-N -m -C -i -p --cpunodebind --membind --physcpubind --interleave --preferred",
        "prlimit": "-p --pid -o --output",
        "proxychains": "-f",
        "proxychains4": "-f",
        "chroot": "--userspec --groups",
        "flock": "-w --timeout -E --conflict-exit-code",
        "watch": "-n --interval -q --equexit -d",
        "xargs": "-I -L -n -P -d -E -s -a --arg-file --delimiter --max-args --max-procs --max-lines --eof --replace -i",
        "ssh": "-b -c -D -E -e -F -I -i -J -L -l -m -O -o -p -Q -R -S -W -w -B",
        "env": "-u --unset -C --chdir",
        "su": "-s --shell -g --group -G --supp-group",
        "runuser": "-u --user -s --shell -g --group -G --supp-group",
        "docker": "-e --env -u --user -w --workdir --env-file --detach-keys",
        "script": "-E --echo -O --log-out -I --log-in -B --log-io -T --log-timing -m --logging-format",
    }.items()
}
# Prefixes whose first non-option argument (or more) is the command to run.
_PREFIXES = frozenset(
    [
        "nohup",
        "setsid",
        "builtin",
        "unbuffer",
        "nice",
        "timeout",
        "time",
        "exec",
        "stdbuf",
        "ionice",
        "sudo",
        "doas",
        "pkexec",
        "chrt",
        "taskset",
        "nsenter",
        "unshare",
        "cgexec",
        "systemd-run",
        "strace",
        "ltrace",
        "numactl",
        "prlimit",
        "proxychains",
        "proxychains4",
        "torsocks",
        "tsocks",
        "fakeroot",
        "catchsegv",
        "dbus-run-session",
        "caffeinate",
        "npx",
        "pnpx",
        "bunx",
        "uvx",
        "firejail",
        "runcon",
        "setpriv",
        "valgrind",
        "tini",
        "dumb-init",
        "nocache",
        "eatmydata",
        "trickle",
        "chpst",
        "gosu",
        "su-exec",
        "setuidgid",
        "s6-setuidgid",
    ]
)
_TAKES_ONE = frozenset(
    {"timeout", "gosu", "su-exec", "setuidgid", "s6-setuidgid", "runcon", "cgexec"}
)  # a duration/user before the command


def _prefix_rest(name: str, args: tuple[Word, ...]) -> tuple[Word, ...]:
    if name == "cgexec":
        return args[skip_options(args, _VALUE_OPTIONS["cgexec"]) :]
    rest = args[skip_options(args, _VALUE_OPTIONS.get(name, frozenset())) :]
    if name in _TAKES_ONE and rest:
        rest = rest[1:]
    elif name == "chrt" and rest and not any(a.text in {"-p", "--pid"} for a in args):
        rest = rest[1:]  # the priority
    elif name == "taskset":
        if any(a.text in {"-p", "--pid"} or (a.text.startswith("-p") and "p" in a.text[1:]) for a in args):
            return ()
        rest = rest[1:] if not any(a.text in {"-c", "--cpu-list"} for a in args) or rest else rest
    return rest


def unwrap(argv: tuple[Word, ...]) -> Unwrapped:
    """Peel wrappers off argv until the program that really runs; collect code run elsewhere."""
    out = Unwrapped()
    for _ in range(32):  # bounded: `sudo sudo sudo ...` must not loop forever
        if not argv:
            break
        name, args = program(argv[0]), argv[1:]
        if argv[0].text.startswith("/etc/init.d/"):
            break  # a service script (`/etc/init.d/ssh stop`), whatever its name
        if name in _PREFIXES:
            rest = _prefix_rest(name, args)
            if not rest and name in {"sudo", "doas"} and any(a.text in {"-s", "-i", "--shell", "--login"} for a in args):
                out.stdin, out.argv = "shell", argv  # a root shell that reads its commands from stdin
                return out
            argv = rest
        elif name == "command":
            argv = () if args[:1] and args[0].text in {"-v", "-V"} else args[skip_options(args, frozenset()) :]
        elif (step := _step(name, args, out)) is not None:
            if step is DONE:
                return out
            argv = step
        elif name in SHELLS:
            return _shell(argv, out)
        elif name in LANGUAGES:
            read_code(LANGUAGES[name], argv, out)
            break
        elif name in VI:
            read_vi(args, out)
            break
        else:
            break
    out.argv = argv
    if argv and (reads := _stdin_reader(program(argv[0]), argv[1:])) is not None:
        out.stdin = reads
    return out


def _stdin_reader(name: str, args: tuple[Word, ...]) -> Literal["shell", "cron"] | None:
    """`at now`, `batch` and `crontab -` run what they read on stdin (unless given a file, or asked to list)."""
    texts = [a.text for a in args]
    if name in {"at", "batch"} and not any(t.startswith(("-f", "-l", "-d", "-r", "-c", "-q")) for t in texts):
        return "shell"
    if name == "crontab" and texts[-1:] == ["-"]:
        return "cron"
    return None


def _step(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...] | None:
    """One wrapper peeled: the argv that runs next, `DONE` when the code went elsewhere, or None."""
    handler = _WRAPPERS.get(name)
    return handler(name, args, out) if handler else None


def _env(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    split = option_value(args, "-S", "--split-string")
    if split is not None:
        out.scripts.append(split)
        return DONE
    i = skip_options(args, _VALUE_OPTIONS["env"])
    while i < len(args) and ASSIGNMENT.match(args[i].text):
        i += 1
    return args[i:]


def _xargs(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    out.via_xargs = True
    return args[skip_options(args, _VALUE_OPTIONS["xargs"]) :]


def _chroot_flock(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    script = option_value(args, "-c", "--command") if name in {"flock", "script"} else None
    if script is None and name == "script":
        script = next((args[i + 1] for i, a in enumerate(args[:-1]) if re.fullmatch(r"-[a-zA-Z]*c", a.text)), None)
    if script is not None:
        out.scripts.append(script)
        return DONE
    if name == "script":
        return ()
    return args[skip_options(args, _VALUE_OPTIONS.get(name, frozenset())) + 1 :]


def _watch(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    rest = args[skip_options(args, _VALUE_OPTIONS["watch"]) :]
    if not any(a.text in {"-x", "--exec"} for a in args) and rest:
        out.scripts.append(joined(rest))
        return DONE
    return rest


def _su(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    script = option_value(args, "-c", "--command")
    if script is not None:
        out.scripts.append(script)
        return DONE
    # runuser -u USER CMD runs CMD; `su USER` and `runuser USER` open an interactive shell
    as_user = name == "runuser" and any(a.text in {"-u", "--user"} for a in args)
    if as_user:
        return args[skip_options(args, _VALUE_OPTIONS[name]) :]
    out.stdin, out.argv = "shell", (Word(name), *args)  # the shell it opens reads stdin: `su <<< CMD`
    return DONE


def _ssh(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    rest = args[skip_options(args, _VALUE_OPTIONS["ssh"]) :]
    if len(rest) > 1:
        out.scripts.append(joined(rest[1:]))
    else:
        out.stdin = "shell" if rest else None
    return DONE


def _exec_in(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...] | None:
    if name in {"kubectl", "oc"} and any(a.text == "exec" for a in args[:3]):
        dashes = next((i for i, a in enumerate(args) if a.text == "--"), -1)
        return args[dashes + 1 :] if dashes >= 0 else ()
    if args[:1] and args[0].text == "exec" and name in {"docker", "podman", "nerdctl"}:
        return args[1 + skip_options(args[1:], _VALUE_OPTIONS["docker"]) + 1 :]
    if args[:2] and [a.text for a in args[:2]] == ["compose", "exec"]:
        rest = args[2 + skip_options(args[2:], _VALUE_OPTIONS["docker"]) :]
        return rest[1:]
    return None


def _eval(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    if args:
        out.evals.append(joined(args))
    return DONE


def _trap(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    """`trap 'CMD' EXIT`: CMD runs when the signal comes (at the latest when the shell exits).
    `trap - SIG`, `trap -p`, `trap -l` run nothing."""
    rest = args[1:] if args[:1] and args[0].text == "--" else args
    if len(rest) > 1 and rest[0].text not in ("-", ""):
        out.evals.append(rest[0])
    return DONE


def _alias(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    """`alias zz='rm -rf /x'`: bash runs the value wherever `zz` starts a command later (in a
    script too, after `shopt -s expand_aliases`), so the value is read as shell text, as
    `eval`'s words are. `alias` alone and `alias -p` only list."""
    for arg in args:
        alias, sep, value = arg.text.partition("=")
        if sep and alias and not alias.startswith("-") and value.strip():
            out.scripts.append(Word(value, arg.dynamic, arg.substituted))
    return DONE


def _source(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    out.code_files.extend(args[:1])
    return DONE


# `git -c KEY=VALUE`: settings whose value git runs as shell text (an alias only when it starts with `!`).
_GIT_SHELL_SETTING = re.compile(
    r"core\.(?:pager|editor|sshcommand|fsmonitor|askpass)|pager\.[^=]+|sequence\.editor|diff\.external|gpg(?:\.\w+)?\.program"
    r"|(?:diff|merge|filter)\.[^=]+\.(?:command|textconv|driver|clean|smudge|process)|credential(?:\.[^=]+)?\.helper"
    r"|uploadpack\.packobjectshook|alias\.[^=]+",
    re.I,
)


def _git(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...] | None:
    """`git submodule foreach [--recursive] CMD` runs CMD as shell text in every submodule, and
    `git -c core.pager=CMD ...` (and the other settings git runs) runs CMD."""
    for option, setting in itertools.pairwise(args):
        key, eq, value = setting.text.partition("=")
        runs = not key.lower().startswith("alias.") or value.startswith("!")
        if option.text == "-c" and eq and runs and _GIT_SHELL_SETTING.fullmatch(key):
            out.scripts.append(Word(value.removeprefix("!"), setting.dynamic))
    texts = [a.text for a in args]
    if "submodule" not in texts[:3] or "foreach" not in texts:
        return None
    rest = args[texts.index("foreach") + 1 :]
    while rest and rest[0].text in {"--recursive", "-q", "--quiet"}:
        rest = rest[1:]
    if rest:
        out.scripts.append(joined(rest))
    return DONE


def _busybox(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...] | None:
    return args or None


_WRAPPERS: dict[str, Step] = {
    "env": _env,
    "xargs": _xargs,
    "chroot": _chroot_flock,
    "flock": _chroot_flock,
    "script": _chroot_flock,
    "watch": _watch,
    "su": _su,
    "runuser": _su,
    "ssh": _ssh,
    "kubectl": _exec_in,
    "oc": _exec_in,
    "docker": _exec_in,
    "podman": _exec_in,
    "nerdctl": _exec_in,
    "eval": _eval,
    "alias": _alias,
    "trap": _trap,
    "source": _source,
    ".": _source,
    "busybox": _busybox,
    "git": _git,
    **LAUNCHERS,
}

# Every program `unwrap` reads as running something else: what a pattern naming a program is tried against.
RUNNERS = frozenset({*_PREFIXES, *_WRAPPERS, *SHELLS, *LANGUAGES, *VI, "command"})

_POSITIONAL = re.compile(r"\$(?:\{([0-9@*])\}|([0-9@*]))")


def _positional_args(script: Word, given: tuple[Word, ...]) -> Word:
    """`sh -c 'rm -rf "$1"' _ /etc`: the script's $0, $1, $@ are the words after it."""
    if not given or (script.dynamic and "$" not in script.text):
        return script
    literal = [w.text for w in given if not w.dynamic]
    if len(literal) != len(given):
        return script

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name in "@*":
            return " ".join(literal[1:])
        n = int(name)
        return literal[n] if n < len(literal) else m.group(0)

    text = re.sub(r'"\$(?:@|\{@\})"', lambda _: " ".join(shlex.quote(w) for w in literal[1:]), script.text)
    text = _POSITIONAL.sub(value, text)
    return Word(text, "$" in text or "`" in text, script.substituted)


def _shell(argv: tuple[Word, ...], out: Unwrapped) -> Unwrapped:
    args = argv[1:]
    run_string = from_stdin = False
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
            from_stdin |= not t.startswith("--") and "s" in t
            i += 1
        else:
            break
    from_stdin |= i < len(args) and args[i].text == "-"
    if run_string and i < len(args):
        out.scripts.append(_positional_args(args[i], args[i + 1 :]))
    elif i < len(args) and not from_stdin:
        out.code_files.append(args[i])
        out.argv = argv
    elif not run_string:
        out.stdin = "shell"
        out.argv = argv
    return out
