"""Pipeline templates: YAML files compiled to a `PipelineSpec`, or refused with file and line.

Two forms compile to the same spec (docs/pipelines.md): an explicit `steps:`
list, and the product brief's `phases:` (analysis, coordination, execution,
test, deploy). Everything is checked before anything runs: YAML syntax, unknown
keys, missing fields, types, ids, `needs` references, cycles, duplicate ids.

Variables: `${name}` and `{{ name }}` in string values are replaced by
`--var name=value`, else by the template's own `vars:` defaults; an undefined
name is an error, and so is a `--var` the template neither declares nor uses.
`$${name}` stays as a literal `${name}` (a shell variable).

Bounded: a template is refused, naming the limit, when it is larger than
MAX_TEMPLATE_BYTES, nests deeper than MAX_TEMPLATE_DEPTH, has more than
MAX_TEMPLATE_NODES values once its aliases (`*name`) are expanded (so a
"billion laughs" alias bomb stops early), produces more than
MAX_TEMPLATE_TEXT_CHARS of text after substitution, or has more than
MAX_TEMPLATE_STEPS steps. Compiling is pure and holds no shared state: safe to
run in a thread (`asyncio.to_thread(compile_template, ...)`).

    NexusError
    +-- TemplateError(file, line, message)    line is 1-based; None when it has no place in the file
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import msgspec
import yaml

from orchestrator.app.errors import InvalidRequest, InvalidTest
from orchestrator.app.refusals import refuse_unrunnable_step
from orchestrator.bounded_yaml import YamlLimitError, compose_bounded
from schemas.errors import NexusError
from schemas.limits import MAX_PIPELINE_STEPS
from schemas.pipelines import PipelineSpec, StepSpec, spec_problems, with_resolved_needs
from schemas.values import JobTest, OutputContainsTest

MAX_TEMPLATE_BYTES = 1024 * 1024
"""Largest template, in bytes of UTF-8."""
MAX_TEMPLATE_DEPTH = 32
"""Deepest nesting of mappings and lists, aliases expanded (a template needs about 6)."""
MAX_TEMPLATE_NODES = 100_000
"""Most values (scalars, mappings, lists) once every alias is expanded."""
MAX_TEMPLATE_TEXT_CHARS = 8 * 1024 * 1024
"""Most characters of text all values make together, aliases and variables expanded."""
MAX_TEMPLATE_STEPS = MAX_PIPELINE_STEPS
"""Most steps in one pipeline."""


class TemplateError(NexusError):
    """A template that cannot run: where (`file`, `line`) and what is wrong (`message`)."""

    def __init__(self, file: str, line: int | None, message: str) -> None:
        self.file = file
        self.line = line
        self.message = message
        super().__init__(f"{file}:{line}: {message}" if line is not None else f"{file}: {message}")


def load_template(path: Path, variables: dict[str, str]) -> PipelineSpec:
    """Read and compile one template file; raises TemplateError."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_TEMPLATE_BYTES + 1)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(str(path), None, f"cannot read the template: {exc}") from None
    if len(data) > MAX_TEMPLATE_BYTES:
        raise TemplateError(str(path), None, _too_large())
    return compile_template(text, variables, file=str(path))


def compile_template(text: str, variables: Mapping[str, str], file: str = "<template>") -> PipelineSpec:
    """Compile template text (see `load_template`); bounded, and safe to call in a thread."""
    if len(text) > MAX_TEMPLATE_BYTES or len(text.encode("utf-8", errors="surrogatepass")) > MAX_TEMPLATE_BYTES:
        raise TemplateError(file, None, _too_large())
    try:
        docs = compose_bounded(text, max_depth=MAX_TEMPLATE_DEPTH, max_nodes=MAX_TEMPLATE_NODES)
    except YamlLimitError as exc:
        raise TemplateError(file, exc.line, exc.message) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        context = f"{exc.context} (line {exc.context_mark.line + 1}): " if exc.context and exc.context_mark else ""
        raise TemplateError(file, mark.line + 1 if mark else None, f"YAML syntax error: {context}{exc.problem}") from None
    except yaml.YAMLError as exc:
        raise TemplateError(file, None, f"YAML syntax error: {exc}") from None
    found = [d for d in docs if d is not None]
    if not found:
        raise TemplateError(file, None, "the template is empty")
    if len(found) > 1:
        raise TemplateError(file, _line(found[1]), "one pipeline per file: found a second YAML document")
    return _Compiler(file, variables).pipeline(found[0])


def _too_large() -> str:
    return f"the template is larger than {MAX_TEMPLATE_BYTES} bytes (MAX_TEMPLATE_BYTES); split it into several pipelines"


# ---------------------------------------------------------------- internals

Node = yaml.Node
_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
_VAR = re.compile(r"\$\$\{|\$\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}|\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")
_TESTS: dict[str, type[msgspec.Struct]] = {
    str(cls.__struct_config__.tag): cls for cls in typing.get_args(JobTest)
}
# Step fields whose scalars are taken as written: `PORT: 8080` is "8080", `version: 1.10` is "1.10".
_TEXT_FIELDS = frozenset({"id", "command", "tool", "rollback", "health_check", "working_dir", "nodes", "needs", "labels", "env"})
_STEP_FIELDS = tuple(StepSpec.__struct_fields__)
_TOP_KEYS = ("name", "description", "approvers", "vars", "steps", "phases")
_PHASES: dict[str, tuple[str, ...]] = {
    "analysis": ("validate", "approvers", "approvalTimeout"),
    "coordination": ("nodes", "labels", "maxParallel"),
    "execution": ("steps",),
    "test": ("tests",),
    "deploy": (
        "command", "strategy", "nodes", "labels", "healthCheck", "batchSize",
        "maxFailPercentage", "maxParallel", "rollback", "timeout", "approval",
    ),
}  # fmt: skip
_EXEC_STEP_KEYS = ("id", "tool", "command", "timeout", "rollback", "env", "workingDir")
# phases-form key -> StepSpec field
_CAMEL = {
    "healthCheck": "health_check",
    "batchSize": "batch_size",
    "maxFailPercentage": "max_fail_percentage",
    "maxParallel": "max_parallel",
    "timeout": "timeout_s",
    "workingDir": "working_dir",
    "approvalTimeout": "approval_timeout_s",
}


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


class _RawStep:
    """A step's fields before conversion, with the YAML node of each (for error lines)."""

    def __init__(self, where: Node) -> None:
        self.where = where
        self.fields: dict[str, Any] = {}
        self.nodes: dict[str, Node] = {}
        self.names: dict[str, str] = {}

    def set(self, field: str, value: Any, node: Node | None, name: str | None = None) -> None:
        self.fields[field] = value
        if node is not None:
            self.nodes[field] = node
        self.names[field] = name or field


class _Compiler:
    def __init__(self, file: str, variables: Mapping[str, str]) -> None:
        self.file = file
        self.vars: dict[str, str] = dict(variables)  # --var wins over the template's vars: defaults
        self.given = tuple(variables)
        self.used: set[str] = set()  # names the template's values refer to
        self.constructor = yaml.constructor.SafeConstructor()
        self.text_chars = 0  # characters of all values produced so far (MAX_TEMPLATE_TEXT_CHARS)

    def fail(self, where: Node | int | None, message: str) -> NoReturn:
        line = _line(where) if isinstance(where, Node) else where
        raise TemplateError(self.file, line, message)

    # ------------------------------------------------------------ YAML walking

    def mapping(self, node: Node, what: str, allowed: tuple[str, ...] | None = None) -> dict[str, tuple[Node, Node]]:
        """Keys -> (key node, value node); merge keys (`<<: *anchor`) applied."""
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"{what} must be a mapping, not {_kind(node)}")
        out: dict[str, tuple[Node, Node]] = {}
        merged: dict[str, tuple[Node, Node]] = {}
        for key, value in node.value:
            if key.tag == _MERGE:
                sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
                for src in sources:
                    for k, pair in self.mapping(src, "a merged mapping (<<)").items():
                        merged.setdefault(k, pair)
                continue
            if isinstance(key, yaml.MappingNode) and node.flow_style:
                self.fail(key, 'YAML reads an unquoted {{ ... }} as a mapping: quote the value, e.g. "{{ version }}"')
            if not isinstance(key, yaml.ScalarNode):
                self.fail(key, f"keys of {what} must be plain names")
            name = str(key.value)
            if name in out:
                self.fail(key, f"duplicate key {name!r} in {what} (first on line {_line(out[name][0])})")
            if allowed is not None and name not in allowed:
                close = difflib.get_close_matches(name, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of: {', '.join(allowed)}"
                self.fail(key, f"unknown key {name!r} in {what}{hint}")
            out[name] = (key, value)
        for k, pair in merged.items():
            if allowed is not None and k not in allowed:
                self.fail(pair[0], f"unknown key {k!r} in {what} (merged with <<)")
            out.setdefault(k, pair)
        return out

    def sequence(self, node: Node, what: str) -> list[Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, f"{what} must be a list, not {_kind(node)}")
        return list(node.value)

    def data(self, node: Node, text: bool = False) -> Any:
        """The plain value of a node, variables substituted. `text`: scalars as written."""
        if isinstance(node, yaml.SequenceNode):
            return [self.data(item, text) for item in node.value]
        if isinstance(node, yaml.MappingNode):
            return {k: self.data(v, text) for k, (_, v) in self.mapping(node, "a mapping").items()}
        assert isinstance(node, yaml.ScalarNode)
        if node.tag == _NULL:
            return None
        value = self.substitute(node)
        if text or node.tag == _STR:
            # A substituted number or boolean stays a string here; `convert` types it for its field.
            return value
        try:
            return self.constructor.construct_object(node)
        except yaml.MarkedYAMLError as exc:  # a tag SafeLoader does not construct (!!python/...)
            self.fail(node, f"not a value a template can hold: {exc.problem}")
        except (ValueError, TypeError, AttributeError):  # a 5,000-digit int, !!timestamp nonsense, ...
            self.fail(node, f"{str(node.value)[:40]!r} is not a valid {node.tag.rsplit(':', 1)[-1]}")

    def text(self, node: Node, what: str) -> str:
        value = self.data(node, text=True)
        if not isinstance(value, str):
            self.fail(node, f"{what} must be a string, not {_kind(node)}")
        return value

    def substitute(self, node: yaml.ScalarNode) -> str:
        raw = str(node.value)

        def replace(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            name = m.group(1) or m.group(2)
            self.used.add(name)
            if name not in self.vars:
                line = _line(node)
                if node.style == "|":  # a literal block: count its lines
                    line += 1 + raw[: m.start()].count("\n")
                hint = f"pass --var {name}=VALUE or set it under vars: (for a shell variable write $${{{name}}} or ${name})"
                self.fail(line, f"undefined variable {name!r}: {hint}")
            return self.vars[name]

        value = _VAR.sub(replace, raw)
        self.text_chars += len(value)
        if self.text_chars > MAX_TEMPLATE_TEXT_CHARS:
            self.fail(node, f"the template expands to more than {MAX_TEMPLATE_TEXT_CHARS} characters of text (MAX_TEMPLATE_TEXT_CHARS)")
        return value

    # ------------------------------------------------------------ the pipeline

    def pipeline(self, root: Node) -> PipelineSpec:
        top = self.mapping(root, "the template", _TOP_KEYS)
        declared: set[str] = set()
        if "vars" in top:
            for name, (_key, value) in self.mapping(top["vars"][1], "vars").items():
                if not isinstance(value, yaml.ScalarNode) or value.tag == _NULL:
                    self.fail(value, f"vars: {name} must be a plain value")
                declared.add(name)
                self.vars.setdefault(name, str(value.value))
        if "name" not in top:
            self.fail(root, "missing required field 'name'")
        name = self.text(top["name"][1], "name")
        description = self.text(top["description"][1], "description") if "description" in top else ""
        approvers = self.strings(top["approvers"][1], "approvers") if "approvers" in top else []
        if "steps" in top and "phases" in top:
            self.fail(top["phases"][0], "give either steps: or phases:, not both")
        if "steps" in top:
            raw = [self.explicit_step(n) for n in self.sequence(top["steps"][1], "steps")]
        elif "phases" in top:
            raw, approvers = self.phases(top["phases"][0], top["phases"][1], approvers)
        else:
            self.fail(root, "missing required field 'steps' (or 'phases')")
        if not raw:
            self.fail(root, "a pipeline needs at least one step")
        if len(raw) > MAX_TEMPLATE_STEPS:
            self.fail(raw[MAX_TEMPLATE_STEPS].where, f"more than {MAX_TEMPLATE_STEPS} steps in one pipeline (MAX_TEMPLATE_STEPS)")
        steps = [self.convert(r) for r in raw]
        self.check_given(declared)
        spec = PipelineSpec(name=name, description=description, approvers=approvers, steps=steps)
        for problem in spec_problems(spec):
            where: Node | None = root
            if problem.step is not None:
                r = raw[problem.step]
                where = r.nodes.get(problem.field or "", r.where)
                if problem.item is not None and isinstance(where, yaml.SequenceNode):
                    where = where.value[problem.item]
                label = r.fields.get("id", problem.step + 1)
                field = r.names.get(problem.field or "", problem.field)
                self.fail(where, f"step {label}: {field + ': ' if field else ''}{problem.message}")
            self.fail(where, problem.message)
        return with_resolved_needs(spec)

    def check_given(self, declared: set[str]) -> None:
        """Refuse a variable passed in (`--var`, the API's `variables`) that the template neither
        declares under vars: nor uses: a misspelt one would leave the default in place, unseen."""
        known = sorted({*declared, *self.used})
        for name in self.given:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"its variables: {', '.join(known)}" if known else "it has none"
                self.fail(None, f"variable {name!r} is not declared under vars: nor used by the template; {hint}")

    def strings(self, node: Node, what: str) -> list[str]:
        values = self.data(node, text=True)
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            self.fail(node, f"{what} must be a list of strings")
        return values

    def explicit_step(self, node: Node) -> _RawStep:
        raw = _RawStep(node)
        for field, (_key, value) in self.mapping(node, "a step", _STEP_FIELDS).items():
            if field == "tests":
                raw.set(field, self.tests(value), value)
            else:
                raw.set(field, self.data(value, text=field in _TEXT_FIELDS), value)
        for required in ("id", "command"):
            if required not in raw.fields:
                label = f"step {raw.fields['id']}" if "id" in raw.fields else "a step"
                self.fail(node, f"{label}: missing required field {required!r}")
        return raw

    def tests(self, node: Node) -> list[Any]:
        out = []
        for item in self.sequence(node, "tests"):
            fields = self.mapping(item, "a test")
            if "type" not in fields:
                self.fail(item, f"a test needs a type: one of {', '.join(_TESTS)}")
            kind = self.text(fields["type"][1], "type")
            cls = _TESTS.get(kind)
            if cls is None:
                close = difflib.get_close_matches(kind, list(_TESTS), n=1)
                self.fail(fields["type"][1], f"unknown test type {kind!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
            fields = self.mapping(item, f"a {kind} test", ("type", *cls.__struct_fields__))
            if cls is OutputContainsTest and "pattern" in fields:
                from orchestrator.core.assertions import pattern_problem  # RE2: only for a template with output tests

                pattern = self.data(fields["pattern"][1], text=True)
                if isinstance(pattern, str) and (why := pattern_problem(pattern)) is not None:
                    self.fail(fields["pattern"][1], why)
            out.append(self.data(item))
        return out

    def phases(self, key: Node, node: Node, approvers: list[str]) -> tuple[list[_RawStep], list[str]]:
        found: dict[str, tuple[Node, dict[str, tuple[Node, Node]]]] = {}
        for item in self.sequence(node, "phases"):
            entry = self.mapping(item, "a phase", tuple(_PHASES))
            if len(entry) != 1:
                self.fail(item, "each item of phases is one phase: - analysis: ..., - execution: ...")
            [(phase, (phase_key, body))] = entry.items()
            if phase in found:
                self.fail(phase_key, f"phase {phase!r} appears twice (first on line {_line(found[phase][0])})")
            empty = isinstance(body, yaml.ScalarNode) and body.tag == _NULL
            found[phase] = (phase_key, {} if empty else self.mapping(body, f"the {phase} phase", _PHASES[phase]))
        if "execution" not in found and "deploy" not in found:
            self.fail(key, "phases need an execution or a deploy phase (something to run)")

        analysis = found.get("analysis", (node, {}))[1]
        if "validate" in analysis and self.data(analysis["validate"][1]) is not True:
            self.fail(analysis["validate"][1], "validate must be true: every job goes through the analysis phase")
        if "approvers" in analysis:
            approvers = [*approvers, *self.strings(analysis["approvers"][1], "approvers")]
        coordination = found.get("coordination", (node, {}))[1]

        steps: list[_RawStep] = []
        if "execution" in found:
            execution = found["execution"][1]
            if "steps" not in execution:
                self.fail(found["execution"][0], "the execution phase needs steps:")
            for i, item in enumerate(self.sequence(execution["steps"][1], "execution steps")):
                raw = _RawStep(item)
                fields = self.mapping(item, "an execution step", _EXEC_STEP_KEYS)
                raw.set("id", f"exec-{i + 1}", None)
                for name, (_, value) in fields.items():
                    field = _CAMEL.get(name, name)
                    raw.set(field, self.data(value, text=field in _TEXT_FIELDS), value, name)
                if "command" not in raw.fields:
                    self.fail(item, f"execution step {i + 1}: missing required field 'command'")
                self.place(raw, coordination)
                steps.append(raw)
        if "test" in found:
            test = found["test"][1]
            if not steps:
                self.fail(found["test"][0], "the test phase checks the execution steps: add an execution phase")
            if "tests" in test:
                steps[-1].set("tests", self.tests(test["tests"][1]), test["tests"][1])
        if "deploy" in found:
            deploy_key, deploy = found["deploy"]
            raw = _RawStep(deploy_key)
            raw.set("id", "deploy", None)
            raw.set("strategy", "rolling", None)
            for name, (_, value) in deploy.items():
                field = _CAMEL.get(name, name)
                raw.set(field, self.data(value, text=field in _TEXT_FIELDS), value, name)
            if "command" not in raw.fields:
                tools = {r.fields.get("tool", "bash") for r in steps}
                if not steps or len(tools) > 1:
                    self.fail(deploy_key, "the deploy phase needs a command (the execution steps cannot stand in for it)")
                raw.set("command", " && ".join(str(r.fields["command"]) for r in steps), None)
                raw.set("tool", tools.pop(), None)
            if "nodes" not in raw.fields and "labels" not in raw.fields:
                self.place(raw, coordination)
            steps.append(raw)
        if approvers and steps:
            gated = steps[-1] if "deploy" in found else steps[0]
            gated.set("approval", True, None)
            if "approvalTimeout" in analysis:
                timeout = analysis["approvalTimeout"][1]
                gated.set("approval_timeout_s", self.data(timeout), timeout, "approvalTimeout")
        return steps, approvers

    def place(self, raw: _RawStep, coordination: Mapping[str, tuple[Node, Node]]) -> None:
        for key in ("nodes", "labels", "maxParallel"):
            if key in coordination:
                field = _CAMEL.get(key, key)
                raw.set(field, self.data(coordination[key][1], text=field in _TEXT_FIELDS), coordination[key][1], key)

    def convert(self, raw: _RawStep) -> StepSpec:
        try:
            # strict=False: "2" from a variable may fill an int field; types never get looser than that.
            step = msgspec.convert(raw.fields, StepSpec, strict=False)
        except msgspec.ValidationError as exc:
            message, _, path = str(exc).partition(" - at `$")
            tokens = re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+|\.\.\.)\]", path.rstrip("`"))
            where: Node = raw.where
            name = ""
            if tokens:
                field = tokens[0][0]
                name = raw.names.get(field, field)
                where = raw.nodes.get(field, raw.where)
                for key, index in tokens[1:]:
                    if index.isdigit() and isinstance(where, yaml.SequenceNode) and int(index) < len(where.value):
                        where = where.value[int(index)]
                    elif key and isinstance(where, yaml.MappingNode):
                        where = next((v for k, v in where.value if k.value == key), where)
                        name += f".{key}"
            if "matching regex" in message:
                message = "not a valid id: ids match [A-Za-z0-9_-]{1,64} (no dots, spaces or wildcards)"
            label = raw.fields.get("id", "?")
            self.fail(where, f"step {label}: {name + ': ' if name else ''}{message}")
        try:  # a step that could only fail (its command is not bash, a test pattern RE2 refuses...)
            refuse_unrunnable_step(step)
        except InvalidRequest as exc:
            self.fail(raw.nodes.get("tests" if isinstance(exc, InvalidTest) else "command", raw.where), str(exc))
        return step


def _kind(node: Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"{node.value!r}" if node.tag != _NULL else "empty"
