"""Unwrapping: peel wrappers and launchers off argv down to the program that really runs.

`unwrap` strips prefixes that run their arguments as a command (sudo, doas, env, nohup, nice,
timeout, time, command, exec, setsid, stdbuf, ionice, chrt, taskset, nsenter, unshare, cgexec,
systemd-run, strace, numactl, gosu, chroot, flock, watch, xargs, su/runuser, busybox,
kubectl/oc/docker/podman exec, ...) and collects what is handed elsewhere to run:

- shell text to parse again: `sh -c`/`bash -c`, `su -c`, `ssh host CMD`, `env -S`, `flock -c`,
  `watch CMD`, `script -c`, pdsh/clush/pssh commands, `parallel CMD ::: ARGS` (one script per
  argument, `{}` filled in), `vi -c ':!CMD'`, `tar --to-command`/`--checkpoint-action=exec=`,
  `salt TARGET cmd.run CMD`, and ansible ad-hoc modules (`-m shell -a CMD`, and `-m file/user/
  service/reboot` written as the shell command they amount to);
- `eval` words, kept apart: a computed `eval "$X"` is itself a finding;
- code in another language: `python -c`, `perl -e`, `ruby -e`, `node -e`, `php -r`, `lua -e`,
  `awk 'PROGRAM'`, and heredocs or pipes into an interpreter (`stdin`/`language`);
- files run as code (`source F`, `bash F`, `python F`).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Literal

from orchestrator.core.risk_types import Word, program
from orchestrator.core.shell_parse import ASSIGNMENT

SHELLS = frozenset(["sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "yash", "fish", "rbash", "tcsh", "csh"])
_LANGUAGES = {
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
_VI = frozenset({"vi", "vim", "nvim", "ex", "view", "vimdiff", "rvim", "gvim"})


@dataclass(slots=True)
class Unwrapped:
    argv: tuple[Word, ...] = ()
    via_xargs: bool = False
    scripts: list[Word] = field(default_factory=list)  # shell code to parse again
    evals: list[Word] = field(default_factory=list)  # words given to `eval`
    code: list[tuple[str, Word]] = field(default_factory=list)  # (language, source) run in an interpreter
    code_files: list[Word] = field(default_factory=list)  # files run as code (`source F`, `bash F`)
    stdin: Literal["shell", "code"] | None = None  # the program runs its stdin
    language: str = ""  # for stdin == "code"


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
        "systemd-run": "-u --unit -p --property -E --setenv --slice --description --uid --gid -M --machine -H --host --working-directory "
        "--on-calendar --on-active --on-boot --on-startup --on-unit-active --on-unit-inactive --timer-property --path-property --socket-property --nice",
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
        "parallel": "-j --jobs -S --sshlogin --sshloginfile -a --arg-file --colsep -C -d --delimiter -I -N -n --max-args -L --timeout --joblog "
        "--results --tmpdir --workdir --wd --delay --retries --load --memfree --halt --env --tag --tagstring --basefile --transfer-file",
        "ssh": "-b -c -D -E -e -F -I -i -J -L -l -m -O -o -p -Q -R -S -W -w -B",
        "env": "-u --unset -C --chdir",
        "su": "-s --shell -g --group -G --supp-group",
        "runuser": "-u --user -s --shell -g --group -G --supp-group",
        "docker": "-e --env -u --user -w --workdir --env-file --detach-keys",
        "pdsh": "-w -x -g -X -l -t -u -f -R -N",
        "clush": "-w -x -g -X -l -t -u -f -R -o -b",
        "pssh": "-h -H -l -p -o -e -t -O -x -X",
        "parallel-ssh": "-h -H -l -p -o -e -t -O -x -X",
        "ansible": "-i --inventory -u --user -b -K -f --forks -e --extra-vars -l --limit -M --module-path --become-user --become-method -c --connection -T --timeout -B -P",
        "salt": "-t --timeout -G --grain -L -N -E -C --out -b --batch-size",
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


def _joined(words: tuple[Word, ...] | list[Word]) -> Word:
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


def _prefix_rest(name: str, args: tuple[Word, ...]) -> tuple[Word, ...]:
    if name == "cgexec":
        return args[_skip_options(args, _VALUE_OPTIONS["cgexec"]) :]
    rest = args[_skip_options(args, _VALUE_OPTIONS.get(name, frozenset())) :]
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
        if name in _PREFIXES:
            argv = _prefix_rest(name, args)
        elif name == "command":
            argv = () if args[:1] and args[0].text in {"-v", "-V"} else args[_skip_options(args, frozenset()) :]
        elif (step := _step(name, args, out)) is not None:
            if step is _DONE:
                return out
            argv = step
        elif name in SHELLS:
            return _shell(argv, out)
        elif name in _LANGUAGES:
            _interpreter(_LANGUAGES[name], argv, out)
            break
        elif name in _VI:
            _vi(args, out)
            break
        else:
            break
    out.argv = argv
    return out


_DONE: tuple[Word, ...] = (Word("\x00done"),)


def _step(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...] | None:
    """One wrapper peeled: the argv that runs next, `_DONE` when the code went elsewhere, or None."""
    handler = _WRAPPERS.get(name)
    return handler(name, args, out) if handler else None


def _env(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    split = _option_value(args, "-S", "--split-string")
    if split is not None:
        out.scripts.append(split)
        return _DONE
    i = _skip_options(args, _VALUE_OPTIONS["env"])
    while i < len(args) and ASSIGNMENT.match(args[i].text):
        i += 1
    return args[i:]


def _xargs(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    out.via_xargs = True
    return args[_skip_options(args, _VALUE_OPTIONS["xargs"]) :]


def _chroot_flock(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    script = _option_value(args, "-c", "--command") if name in {"flock", "script"} else None
    if script is None and name == "script":
        script = next((args[i + 1] for i, a in enumerate(args[:-1]) if re.fullmatch(r"-[a-zA-Z]*c", a.text)), None)
    if script is not None:
        out.scripts.append(script)
        return _DONE
    if name == "script":
        return ()
    return args[_skip_options(args, _VALUE_OPTIONS.get(name, frozenset())) + 1 :]


def _watch(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    rest = args[_skip_options(args, _VALUE_OPTIONS["watch"]) :]
    if not any(a.text in {"-x", "--exec"} for a in args) and rest:
        out.scripts.append(_joined(rest))
        return _DONE
    return rest


def _su(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    script = _option_value(args, "-c", "--command")
    if script is not None:
        out.scripts.append(script)
        return _DONE
    # runuser -u USER CMD runs CMD; `su USER` and `runuser USER` open an interactive shell
    as_user = name == "runuser" and any(a.text in {"-u", "--user"} for a in args)
    return args[_skip_options(args, _VALUE_OPTIONS[name]) :] if as_user else ()


def _ssh(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    rest = args[_skip_options(args, _VALUE_OPTIONS["ssh"]) :]
    if len(rest) > 1:
        out.scripts.append(_joined(rest[1:]))
    else:
        out.stdin = "shell" if rest else None
    return _DONE


def _fleet(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    """pdsh/clush/pssh: the rest of the line is a shell command run on every host."""
    rest = args[_skip_options(args, _VALUE_OPTIONS.get(name, frozenset())) :]
    if name in {"pssh", "parallel-ssh"} and rest:
        rest = rest[-1:]
    if rest:
        out.scripts.append(_joined(rest))
    return _DONE


def _exec_in(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...] | None:
    if name in {"kubectl", "oc"} and any(a.text == "exec" for a in args[:3]):
        dashes = next((i for i, a in enumerate(args) if a.text == "--"), -1)
        return args[dashes + 1 :] if dashes >= 0 else ()
    if args[:1] and args[0].text == "exec" and name in {"docker", "podman", "nerdctl"}:
        return args[1 + _skip_options(args[1:], _VALUE_OPTIONS["docker"]) + 1 :]
    if args[:2] and [a.text for a in args[:2]] == ["compose", "exec"]:
        rest = args[2 + _skip_options(args[2:], _VALUE_OPTIONS["docker"]) :]
        return rest[1:]
    return None


def _eval(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    if args:
        out.evals.append(_joined(args))
    return _DONE


def _source(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    out.code_files.extend(args[:1])
    return _DONE


def _parallel(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    if any(a.text in {"--dry-run", "--dryrun"} for a in args):
        return _DONE  # only prints the commands
    words = list(args[_skip_options(args, _VALUE_OPTIONS["parallel"]) :])
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
    return _DONE


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
    return _DONE


def _salt(name: str, args: tuple[Word, ...], out: Unwrapped) -> tuple[Word, ...]:
    rest = [w for w in args[_skip_options(args, _VALUE_OPTIONS["salt"]) :]]
    if len(rest) >= 3 and rest[1].text in {"cmd.run", "cmd.shell", "cmd.run_all", "cmd.script"}:
        out.scripts.append(_joined(rest[2:]))
    elif len(rest) >= 2 and rest[1].text in {"system.reboot", "system.shutdown", "system.poweroff", "system.halt"}:
        out.scripts.append(Word(rest[1].text.split(".")[1]))
    elif len(rest) >= 3 and rest[1].text in {"file.remove", "file.rmdir"}:
        out.scripts.append(Word(f"rm -rf {shlex.quote(rest[2].text)}"))
    return _DONE


_WRAPPERS = {
    "env": _env,
    "xargs": _xargs,
    "chroot": _chroot_flock,
    "flock": _chroot_flock,
    "script": _chroot_flock,
    "watch": _watch,
    "su": _su,
    "runuser": _su,
    "ssh": _ssh,
    "pdsh": _fleet,
    "clush": _fleet,
    "pssh": _fleet,
    "parallel-ssh": _fleet,
    "kubectl": _exec_in,
    "oc": _exec_in,
    "docker": _exec_in,
    "podman": _exec_in,
    "nerdctl": _exec_in,
    "eval": _eval,
    "source": _source,
    ".": _source,
    "parallel": _parallel,
    "tar": _tar,
    "ansible": _ansible,
    "salt": _salt,
    "busybox": lambda name, args, out: args or None,
}


def _interpreter(language: str, argv: tuple[Word, ...], out: Unwrapped) -> None:
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


def _vi(args: tuple[Word, ...], out: Unwrapped) -> None:
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
        out.scripts.append(args[i])
    elif i < len(args) and not from_stdin:
        out.code_files.append(args[i])
        out.argv = argv
    elif not run_string:
        out.stdin = "shell"
        out.argv = argv
    return out
