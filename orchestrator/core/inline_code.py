"""Code in other languages, read for what it would run or delete.

`shell_of(language, source)` returns the shell commands a piece of inline code amounts to, so
the shell analysis rates them: `shutil.rmtree('/srv')` becomes `rm -rf /srv`, `os.remove(p)`
`rm p`, `os.system("...")`, `subprocess.run([...])`, Perl/Ruby/PHP `system`, backticks and
`qx{}`, Node `execSync`/`spawnSync`, `fs.rmSync(p, {recursive: true})`, Lua `os.execute`, awk
`system()` and pipes to a command, and `open(p, 'w')` of a file becomes `: > p`. Perl's and
Ruby's quote-like strings (`q{...}`, `qw(...)`, `%q(...)`) are read as the strings they are. A `fork` in a
loop that never ends (`perl -e 'fork while 1'`) becomes the shell's fork bomb.

Python is parsed with `ast`: names bound to string constants are followed, string
concatenation, `os.path.join` and f-strings are folded (their computed parts become `$PYVAR`, so
a path built at run time rates as dynamic), and `exec`/`eval` of a literal (also base64-encoded)
are read recursively. Code that does not parse, and the other languages, are read with
patterns over their string literals. `hidden` reports `exec`/`eval` of text computed at run
time, and whether that text is downloaded.
"""

from __future__ import annotations

import ast
import base64
import binascii
import re
import shlex
import warnings
from dataclasses import dataclass, field

_MAX_SOURCE = 20_000
_DYNAMIC = "$PYVAR"
_RMTREE = frozenset(
    {"rmtree", "rm_rf", "rm_r", "remove_tree", "remove_dir", "remove_entry_secure", "rmSync", "rimraf", "emptyDirSync", "removeSync"}
)
_REMOVE = frozenset({"remove", "unlink", "rmdir", "removedirs", "unlinkSync", "rmdirSync", "delete"})
_SHELL_CALLS = frozenset(
    {
        "system",
        "popen",
        "getoutput",
        "getstatusoutput",
        "check_output",
        "run",
        "call",
        "check_call",
        "Popen",
        "spawn",
        "execSync",
        "exec",
        "execv",
        "execvp",
        "execl",
        "execlp",
        "spawnSync",
        "execFileSync",
        "execFile",
        "shell_exec",
        "passthru",
        "proc_open",
        "execute",
    }
)
# `fork` in a loop that never ends (`perl -e 'fork while 1'`, `while True: os.fork()`, Ruby's
# `loop { fork }`): the same as the shell's fork bomb, which is what it is reported as.
_FORK_LOOP = re.compile(
    r"\bfork\b\s*(?:\(\s*\))?\s*(?:while|until)\s*\(?\s*(?:1|true|True|!0|0)\b"
    r"|(?:\bwhile\s*\(?\s*(?:1|true|True)\s*\)?\s*[:{]|\bfor\s*\(\s*;\s*;\s*\)\s*\{|\bloop\s*(?:do\b|\{))[^{}]{0,40}?\bfork\b"
)
FORK_BOMB_SHELL = ":(){ :|:& };:"
_DOWNLOAD_HINTS = ("urlopen", "requests", "urllib", "http", "fetch", "wget", "curl", "socket")


@dataclass(slots=True)
class Reading:
    shell: list[str] = field(default_factory=list)  # shell command lines the code runs
    hidden: list[str] = field(default_factory=list)  # exec/eval of computed text: what it is
    downloaded: bool = False  # computed code that comes from the network


def shell_of(language: str, source: str, depth: int = 0) -> Reading:
    """What the code runs, as shell command lines; never raises."""
    source = source[:_MAX_SOURCE]
    out = Reading()
    if _FORK_LOOP.search(source):
        out.shell.append(FORK_BOMB_SHELL)
    if language == "python":
        try:
            with warnings.catch_warnings():  # `1a` is a SyntaxWarning; pytest turns warnings into errors
                warnings.simplefilter("ignore")
                tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            _patterns(source, out)
        else:
            try:
                _Python(out, depth).visit(tree)
            except RecursionError:
                _patterns(source, out)
    elif language == "awk":
        _awk(source, out)
    else:
        _patterns(_quote_like(language, source) if language in _QUOTE_LIKE else source, out)
    return out


# --- Python ------------------------------------------------------------------------------------


class _Python(ast.NodeVisitor):
    def __init__(self, out: Reading, depth: int) -> None:
        self.out = out
        self.depth = depth
        self.names: dict[str, str] = {}

    def visit_Assign(self, node: ast.Assign) -> None:
        value = self.text(node.value)
        for target in node.targets:
            if isinstance(target, ast.Name) and value is not None:
                self.names[target.id] = value
        self.generic_visit(node)

    def visit_For(self, node: ast.For) -> None:
        """`for d in ["/srv/a", "/srv/b"]: shutil.rmtree(d)` is checked once per value."""
        values = [self.text(e) for e in node.iter.elts] if isinstance(node.iter, (ast.List, ast.Tuple, ast.Set)) else []
        if isinstance(node.target, ast.Name) and values and all(v is not None for v in values):
            for value in values[:16]:
                self.names[node.target.id] = str(value)
                for stmt in node.body:
                    self.visit(stmt)
            self.names.pop(node.target.id, None)
            return
        self.generic_visit(node)

    def text(self, node: ast.AST | None) -> str | None:
        """The string an expression evaluates to, with computed parts as $PYVAR; None if not text-like."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
            return node.value.decode("utf-8", "replace")
        if isinstance(node, ast.Name):
            return self.names.get(node.id, _DYNAMIC)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Div)):
            left, right = self.text(node.left), self.text(node.right)
            if left is None or right is None:
                return None
            return f"{left.rstrip('/')}/{right.lstrip('/')}" if isinstance(node.op, ast.Div) else left + right
        if isinstance(node, ast.JoinedStr):
            return "".join(self.text(v) or _DYNAMIC if not isinstance(v, ast.FormattedValue) else _DYNAMIC for v in node.values)
        if isinstance(node, ast.Call):
            name = _call_name(node.func)
            if name == "join" and node.args:
                parts = [self.text(a) for a in node.args]
                if all(p is not None for p in parts):
                    return (
                        "/".join(str(p).rstrip("/") for p in parts if p)
                        if _call_name(getattr(node.func, "value", None)) == "path"
                        else None
                    )
            if name in {"Path", "PurePath", "PosixPath", "expanduser", "abspath", "realpath", "str"} and node.args:
                return self.text(node.args[0])
            if name in {"b64decode", "decodebytes", "standard_b64decode"} and node.args:
                return _b64(self.text(node.args[0]))
            if name == "decode" and isinstance(node.func, ast.Attribute):
                return self.text(node.func.value)
        if isinstance(node, ast.Attribute) and node.attr == "environ":
            return None
        return None

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        name = _call_name(node.func)
        first = node.args[0] if node.args else None
        if name in _RMTREE and first is not None:
            self._delete(self.text(first), recursive=True)
        elif name in _REMOVE and first is not None and name != "delete":
            self._delete(self.text(first), recursive=False)
        elif name in {"unlink", "rmdir"} and isinstance(node.func, ast.Attribute) and not node.args:
            self._delete(self.text(_path_of(node.func.value)), recursive=False)
        elif name in {"exec", "eval", "compile"} and isinstance(node.func, ast.Name) and first is not None:
            self._exec(first)
        elif name in _SHELL_CALLS and first is not None:
            self._run(first)
        elif name == "open" and first is not None and len(node.args) > 1:
            mode = self.text(node.args[1]) or ""
            path = self.text(first)
            if path and path != _DYNAMIC and ("w" in mode or "a" in mode):
                self.out.shell.append(f": {'>>' if 'a' in mode else '>'} {shlex.quote(path)}")
        elif name == "kill" and len(node.args) == 2 and isinstance(first, ast.Constant) and first.value in {1, -1}:
            self.out.shell.append(f"kill -9 {first.value}")

    def _delete(self, path: str | None, recursive: bool) -> None:
        if path:
            self.out.shell.append(f"rm {'-rf ' if recursive else '-f '}{_quote(path)}")

    def _run(self, arg: ast.AST) -> None:
        if isinstance(arg, (ast.List, ast.Tuple)):
            words = [self.text(e) for e in arg.elts]
            if words and all(w is not None for w in words):
                self.out.shell.append(" ".join(_quote(str(w)) for w in words))
            return
        text = self.text(arg)
        if text is not None:
            self.out.shell.append(text)

    def _exec(self, arg: ast.AST) -> None:
        text = self.text(arg)
        if text is not None and _DYNAMIC not in text and self.depth < 3:
            inner = shell_of("python", text, self.depth + 1)
            self.out.shell.extend(inner.shell)
            self.out.hidden.extend(inner.hidden)
            self.out.downloaded |= inner.downloaded
            return
        shown = ast.unparse(arg)[:80] if hasattr(ast, "unparse") else "code"
        self.out.hidden.append(shown)
        self.out.downloaded |= any(h in shown for h in _DOWNLOAD_HINTS)


def _call_name(func: ast.AST | None) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _path_of(node: ast.AST) -> ast.AST | None:
    if isinstance(node, ast.Call) and _call_name(node.func) in {"Path", "PurePath", "PosixPath"} and node.args:
        return node.args[0]
    return node


def _b64(text: str | None) -> str | None:
    if text is None or _DYNAMIC in text:
        return None
    try:
        return base64.b64decode(text, validate=False).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return None


def _quote(text: str) -> str:
    # keep $PYVAR unquoted so the shell analysis sees a computed path
    return text if _DYNAMIC in text else shlex.quote(text)


# --- other languages: string literals around known calls --------------------------------------

_STRING = r"""(?:'((?:\\.|[^'\\])*)'|"((?:\\.|[^"\\])*)")"""
_CALL = re.compile(
    r"\b(system|exec|execSync|spawnSync|shell_exec|passthru|popen|proc_open|execute|Popen|spawn|run|call|check_output|check_call|"
    r"rm_rf|rm_r|rmtree|remove_tree|rmSync|rmdirSync|unlink|unlinkSync|remove|rimraf|delete|removeSync)\s*\(?\s*\*?((?:"
    + _STRING
    + r"\s*,?\s*)+)",
)
_LITERAL = re.compile(_STRING)
_BACKTICK = re.compile(r"`([^`]+)`|\bqx\s*(?:\{([^}]*)\}|\(([^)]*)\)|/([^/]*)/)|%x\(([^)]*)\)")
_RECURSIVE_OPT = re.compile(r"recursive\s*:\s*true|\{\s*force\s*:\s*true\s*,\s*recursive")


# Perl's `q{...}`, `qq(...)`, `qw[...]` and Ruby's `%q(...)`, `%Q{...}`, `%(...)`, `%w[...]`:
# strings without quote marks (`system(q{rm -rf /})`), read as the quoted strings they are.
_QUOTE_LIKE = {  # the delimiters people use; never a quote mark, so `"100%"` stays a string
    "perl": re.compile(r"(?<![\w$@&%])(q[qw]?)\s*([{(\[</|!#~,])"),
    "ruby": re.compile(r"(?<![\w$@&])(%[qQwW]?)([{(\[<|!])"),
}
_CLOSING = {"(": ")", "[": "]", "{": "}", "<": ">"}


def _quote_like(language: str, source: str) -> str:
    parts: list[str] = []
    pos = 0
    while m := _QUOTE_LIKE[language].search(source, pos):
        opening = m.group(2)
        closing = _CLOSING.get(opening, opening)
        depth, i = 1, m.end()
        while i < len(source) and depth:
            if source[i] == "\\":
                i += 1
            elif source[i] == closing:
                depth -= 1
            elif source[i] == opening and closing != opening:
                depth += 1
            i += 1
        if depth:  # not closed: not one of these
            parts.append(source[pos : m.end()])
            pos = m.end()
            continue
        body = source[m.end() : i - 1]
        words = body.split() if m.group(1).endswith(("w", "W")) else [body]
        parts.append(source[pos : m.start()] + ", ".join(f'"{_escape(w)}"' for w in words))
        pos = i
    parts.append(source[pos:])
    return "".join(parts)


def _escape(text: str) -> str:
    return re.sub(r'(["\\])', r"\\\1", text)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


_HOME_EXPR = re.compile(r"\b(?:process\.env\.HOME|os\.homedir\(\)|ENV\[['\"]HOME['\"]\]|\$ENV\{HOME\}|getenv\(['\"]HOME['\"]\))")


# Perl's `unlink glob "/etc/*"` and `unlink </etc/*>`: every file the pattern matches.
_GLOB_UNLINK = re.compile(r"\bunlink\s*\(?\s*(?:glob\s*\(?\s*" + _STRING + r"|<([^<>\s]+)>)")
# `eval(file_get_contents("https://..."))`: code fetched from the network and run.
_EVAL_DOWNLOAD = re.compile(
    r"\b(?:eval|exec|assert|instance_eval)\s*\(?\s*(?:file_get_contents|URI\.open|open|urlopen|get|LWP::Simple::get)\s*\(?\s*['\"](?:https?|ftp)://"
)


def _patterns(source: str, out: Reading) -> None:
    source = _HOME_EXPR.sub("'~'", source)  # the home directory, however the language spells it
    if _EVAL_DOWNLOAD.search(source):
        out.hidden.append("code it downloads")
        out.downloaded = True
    for m in _GLOB_UNLINK.finditer(source):
        pattern = _unescape(next(g for g in m.groups() if g is not None))
        out.shell.append(f"rm -f {' '.join(shlex.quote(p) for p in pattern.split())}")
    for m in _CALL.finditer(source):
        name = m.group(1)
        literals = [_unescape(a or b) for a, b in _LITERAL.findall(m.group(2))]
        if not literals:
            continue
        tail = source[m.end() : m.end() + 80]
        if name in _RMTREE or (name in {"rmdirSync", "rmSync"} and _RECURSIVE_OPT.search(tail)):
            out.shell.append(f"rm -rf {shlex.quote(literals[0])}")
        elif name in {"unlink", "unlinkSync", "remove", "delete", "rmdirSync", "rmSync"}:
            if literals[0].startswith(("/", "~")):
                out.shell.append(f"rm -f {shlex.quote(literals[0])}")
        elif len(literals) > 1:
            out.shell.append(" ".join(shlex.quote(x) for x in literals))
        else:
            out.shell.append(literals[0])
    for m in _BACKTICK.finditer(source):
        text = next((g for g in m.groups() if g), "")
        if text.strip():
            out.shell.append(text)


_AWK_SYSTEM = re.compile(
    r"\bsystem\s*\(([^;{}]*)\)|print\s+([^|;{}]*)\|\s*\"(?:/bin/|/usr/bin/)?(?:ba|da|z)?sh\"|\|\s*(\"(?:\\.|[^\"\\])*\")|(\"(?:\\.|[^\"\\])*\")\s*\|\s*getline"
)
_AWK_PIECE = re.compile(r"\"((?:\\.|[^\"\\])*)\"|([A-Za-z_$][\w$\[\]]*)")


_AWK_ASSIGN = re.compile(r"\b([A-Za-z_]\w*)\s*=\s*(\"(?:\\.|[^\"\\])*\")")


def _awk(source: str, out: Reading) -> None:
    strings = dict(_AWK_ASSIGN.findall(source))
    source = re.sub(r"\bsystem\s*\(\s*([A-Za-z_]\w*)\s*\)", lambda m: f"system({strings.get(m.group(1), m.group(1))})", source)
    for m in _AWK_SYSTEM.finditer(source):
        expr = next(g for g in m.groups() if g is not None)
        pieces = []
        for lit, var in _AWK_PIECE.findall(expr):
            pieces.append(_unescape(lit) if not var else "$AWKVAR")
        if pieces:
            out.shell.append("".join(pieces))
