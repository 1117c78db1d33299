"""Literal payloads: what a pipeline of echo/printf and decoders writes, computed without running it.

`pipeline_output(stages)` evaluates `echo TEXT | base64 -d | ...` when every stage is literal:
the first writes known text (`echo`, `printf` with its escapes and `%s`/`%q` arguments, `cat` of a
heredoc, a decoder fed a here-string) and each later one is a known transform (`base64 -d`,
`base32 -d`, `xxd -r -p`, `rev`, rot13 through `tr`, `gunzip`/`zcat`, `openssl base64 -d`).
Anything else gives None: the analysis then reports the payload as hidden code, with
`hidden_risk` (critical: only known at run time) or `remote_risk` (critical: downloaded).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import gzip
import re
import shlex
import zlib
from collections.abc import Sequence

from orchestrator.core.risk_types import Risk

_MAX_OUTPUT = 64_000
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{1,2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|0?[0-7]{1,3}|[abefnrtv\\'\"?]|c)")
_SIMPLE = {
    "a": "\a",
    "b": "\b",
    "e": "\x1b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "?": "?",
}


def unescape(text: str) -> str:
    """Backslash escapes as printf, `echo -e` and `$'...'` read them."""

    def one(m: re.Match[str]) -> str:
        e = m.group(1)
        if e[0] == "x":
            return chr(int(e[1:], 16))
        if e[0] in "uU":
            code = int(e[1:], 16)
            return chr(code) if code < 0x110000 else ""
        if e[0].isdigit():
            return chr(int(e, 8) & 0xFF)
        return "" if e == "c" else _SIMPLE.get(e, e)

    return _ESCAPE.sub(one, text)


_CONVERSION = re.compile(r"%[-+ #0]*\d*(?:\.\d+)?([sdbcqQ%])")
_MAX_FORMAT_ROUNDS = 64


def printf_output(args: Sequence[str]) -> str:
    """What `printf FORMAT ARGS...` writes. `%q` quotes its argument for the shell (so
    `eval "$(printf '%q ' rm -rf /)"` is read as `rm -rf /`), and the format is used again
    while arguments are left, as printf does."""
    if not args:
        return ""
    fmt, values = unescape(args[0]), list(args[1:])
    if "%" not in fmt:
        return fmt
    taken = 0

    def one(m: re.Match[str]) -> str:
        nonlocal taken
        kind = m.group(1)
        if kind == "%":
            return "%"
        value = values[taken] if taken < len(values) else ""
        taken += 1
        if kind == "b":
            return unescape(value)
        return shlex.quote(value) if kind in "qQ" else value

    out = _CONVERSION.sub(one, fmt)
    for _ in range(_MAX_FORMAT_ROUNDS):
        before = taken
        if taken >= len(values):
            break
        out += _CONVERSION.sub(one, fmt)
        if taken == before or len(out) > _MAX_OUTPUT:
            break
    return out


def echo_output(args: Sequence[str]) -> str:
    interpret = False
    words = list(args)
    while words and re.fullmatch(r"-[neE]+", words[0]):
        interpret |= "e" in words[0]
        words = words[1:]
    text = " ".join(words)
    return unescape(text) if interpret else text


def produce(argv: Sequence[str], stdin: str | None) -> str | None:
    """The output of a pipeline's first stage when it is literal."""
    if not argv:
        return None
    name = argv[0].rsplit("/", 1)[-1]
    if name == "echo":
        return echo_output(argv[1:])
    if name == "printf":
        return printf_output(argv[1:])
    if name == "cat" and len(argv) == 1:
        return stdin
    if stdin is not None:
        return transform(argv, stdin)
    return None


def transform(argv: Sequence[str], data: str) -> str | None:
    """The output of a decoding stage fed `data`, or None when the stage is not a known decoder."""
    name, args = argv[0].rsplit("/", 1)[-1], list(argv[1:])
    decode = any(a in {"-d", "--decode", "-D", "-di", "-id"} for a in args)
    try:
        if name in {"base64", "gbase64"} and decode:
            return _text(base64.b64decode(_pad("".join(data.split())), validate=False))
        if name == "base32" and decode:
            return _text(base64.b32decode(_pad("".join(data.split()), 8)))
        if name == "openssl" and args[:1] in (["base64"], ["enc"]) and "-d" in args:
            return _text(base64.b64decode(_pad("".join(data.split()))))
        if name == "xxd" and "-r" in args:
            return _text(binascii.unhexlify(re.sub(r"[^0-9A-Fa-f]", "", data))) if "-p" in args or "-ps" in args else None
        if name == "rev":
            return "\n".join(line[::-1] for line in data.split("\n"))
        if name == "tr" and len(args) == 2 and {args[0], args[1]} in ({"A-Za-z", "N-ZA-Mn-za-m"}, {"a-zA-Z", "n-za-mN-ZA-M"}):
            return codecs.decode(data, "rot13")
        if name in {"gunzip", "zcat"} or (name == "gzip" and decode):
            return _text(gzip.decompress(data.encode("latin-1"))[:_MAX_OUTPUT])
        if name == "cat" and not args:
            return data
    except (binascii.Error, ValueError, OSError, EOFError, zlib.error, UnicodeError):
        return None
    return None


def _pad(text: str, block: int = 4) -> str:
    return text + "=" * (-len(text) % block)


def _text(raw: bytes) -> str:
    # latin-1 keeps binary (a gzip stream) byte-exact for the next stage; shell text is ASCII anyway
    return raw[:_MAX_OUTPUT].decode("latin-1")


def pipeline_output(stages: Sequence[tuple[Sequence[str], str | None]]) -> str | None:
    """What a pipeline writes when every stage is literal: (argv, stdin text) per stage."""
    if not stages:
        return None
    data = produce(*stages[0])
    for argv, _ in stages[1:]:
        if data is None or not argv:
            return None
        data = transform(argv, data)
    return data


# --- code that is not literal -------------------------------------------------------------

DOWNLOADERS = frozenset(["curl", "wget", "fetch", "http", "https", "aria2c", "lwp-request", "GET", "xh", "nc", "ncat", "socat"])
DECODERS = frozenset({"base64", "base32", "xxd", "uudecode", "openssl", "gunzip", "zcat", "rev", "tr", "printf", "gzip", "bzip2", "xz"})
# Tools whose output is meant to be eval'd: environment setup, not hidden code.
ENV_TOOLS = frozenset(
    [
        "ssh-agent",
        "gpg-agent",
        "keychain",
        "pyenv",
        "rbenv",
        "nodenv",
        "goenv",
        "jenv",
        "plenv",
        "direnv",
        "brew",
        "minikube",
        "docker-machine",
        "opam",
        "conda",
        "mamba",
        "micromamba",
        "starship",
        "zoxide",
        "thefuck",
        "dircolors",
        "luarocks",
        "fnm",
        "nvm",
        "rustup",
        "asdf",
        "mise",
        "rtx",
        "atuin",
        "fzf",
        "navi",
        "kubectl",
        "helm",
        "gh",
        "poetry",
        "pipenv",
        "register-python-argcomplete",
        "aws_completer",
        "hub",
        "lesspipe",
        "lesspipe.sh",
        "ssh-add",
        "rvm",
        "chruby",
        "scw",
        "tmuxinator",
        "podman-machine",
        "colima",
        "dbus-launch",
        "mcfly",
        "broot",
        "fasd",
        "tfenv",
    ]
)
# `eval "$(tool init bash)"` and the like: a tool printing its shell setup.
ENV_SETUP = re.compile(r"^\s*[\w./-]+(?:\s+[\w-]+)?\s+(?:init|shellenv|hook|env|completion|completions|activate|docker-env|shell-init)\b")
HIDDEN_SUGGESTION = "Write the command out literally so it can be reviewed, or decode the payload to a file and read it first"
_REMOTE_SUGGESTIONS = (
    "Download the script, inspect it, then run it: curl -fsSLo install.sh URL && less install.sh && sh install.sh",
    "Pin the downloaded script to a known checksum before running it",
)


def remote_risk(download: str, runner: str) -> Risk:
    return Risk(
        "remote_code",
        "critical",
        f"Command runs code downloaded with '{download}' in {runner} without inspecting it - requires approval",
        _REMOTE_SUGGESTIONS,
    )


def hidden_risk(runner: str) -> Risk:
    return Risk(
        "hidden_code",
        "critical",
        f"Command runs text in {runner} that is only known at run time (a variable, a substitution or an undecodable payload)"
        " - requires approval",
        (HIDDEN_SUGGESTION,),
    )
