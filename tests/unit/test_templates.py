"""Pipeline templates: both YAML forms, variables, and every refusal with its line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestrator.templates import TemplateError, compile_template, load_template
from schemas.errors import NexusError
from schemas.pipelines import PipelineSpec, StepSpec
from schemas.values import ExitCodeTest, FileExistsTest, OutputContainsTest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def compile_(text: str, **variables: str) -> PipelineSpec:
    return compile_template(textwrap.dedent(text).lstrip("\n"), variables, file="t.yaml")


def refused(text: str, **variables: str) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        compile_(text, **variables)
    return info.value


# ---------------------------------------------------------------- forms


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_compiles(path: Path) -> None:
    spec = load_template(path, {})
    assert spec.steps and all(s.needs is not None for s in spec.steps)


def test_examples_cover_the_documented_patterns() -> None:
    names = {p.stem for p in EXAMPLES.glob("*.yaml")}
    assert {
        "build-test-deploy-verify",
        "parallel-fan-out",
        "conditional-branch",
        "rolling-deploy",
        "approval-gate",
        "web-deploy-phases",
    } <= names


BRIEF = """
    name: "Production Web Deployment"
    phases:
      - analysis:
          validate: true
          approvers: ["admin@example.com"]
      - coordination:
          nodes: ["build-server"]
      - execution:
          steps:
            - { tool: "bash", command: "git pull" }
            - { tool: "bash", command: "npm install" }
            - { tool: "bash", command: "npm run build" }
      - test:
          tests:
            - { type: "exit_code", expected: 0 }
            - { type: "file_exists", path: "dist/index.html" }
      - deploy:
          strategy: "rolling"
          nodes: ["prod-web-001", "prod-web-002", "prod-web-003"]
          healthCheck: "curl -f http://localhost/health"
"""

BRIEF_AS_STEPS = """
    name: "Production Web Deployment"
    approvers: ["admin@example.com"]
    steps:
      - { id: exec-1, nodes: [build-server], command: "git pull" }
      - { id: exec-2, nodes: [build-server], command: "npm install" }
      - id: exec-3
        nodes: [build-server]
        command: "npm run build"
        tests:
          - { type: "exit_code", expected: 0 }
          - { type: "file_exists", path: "dist/index.html" }
      - id: deploy
        strategy: rolling
        nodes: [prod-web-001, prod-web-002, prod-web-003]
        command: "git pull && npm install && npm run build"
        health_check: "curl -f http://localhost/health"
        approval: true
"""


def test_the_briefs_phases_form_compiles_to_a_chain_and_a_gated_rolling_deploy() -> None:
    spec = compile_(BRIEF)
    assert [s.id for s in spec.steps] == ["exec-1", "exec-2", "exec-3", "deploy"]
    assert [s.needs for s in spec.steps] == [[], ["exec-1"], ["exec-2"], ["exec-3"]]
    assert all(s.nodes == ["build-server"] for s in spec.steps[:3])
    assert spec.steps[2].tests == [ExitCodeTest(expected=0), FileExistsTest(path="dist/index.html")]
    deploy = spec.steps[3]
    assert (deploy.strategy, deploy.batch_size, deploy.approval) == ("rolling", 1, True)
    assert deploy.health_check == "curl -f http://localhost/health"
    assert deploy.nodes == ["prod-web-001", "prod-web-002", "prod-web-003"]
    assert spec.approvers == ["admin@example.com"]


def test_both_forms_compile_to_the_same_spec() -> None:
    assert compile_(BRIEF) == compile_(BRIEF_AS_STEPS)


def test_phases_deploy_fields_in_camel_case() -> None:
    spec = compile_(
        """
        name: p
        phases:
          - analysis: { approvers: [bob], approvalTimeout: 600 }
          - deploy:
              command: ./deploy.sh
              labels: { role: web }
              batchSize: 2
              maxFailPercentage: 25
              maxParallel: 1
              rollback: ./undo.sh
              timeout: 60
        """
    )
    (deploy,) = spec.steps
    assert (deploy.batch_size, deploy.max_fail_percentage, deploy.max_parallel, deploy.timeout_s) == (2, 25, 1, 60)
    assert (deploy.labels, deploy.rollback, deploy.approval, deploy.approval_timeout_s) == ({"role": "web"}, "./undo.sh", True, 600)


def test_steps_without_needs_follow_the_previous_step_and_empty_needs_means_none() -> None:
    spec = compile_(
        """
        name: p
        steps:
          - { id: a, command: x }
          - { id: b, command: x }
          - { id: c, command: x, needs: [] }
          - { id: d, command: x, needs: [a, b] }
          - { id: e, command: x }
        """
    )
    assert [s.needs for s in spec.steps] == [[], ["a"], [], ["a", "b"], ["d"]]


def test_every_step_field() -> None:
    (s,) = compile_(
        """
        name: p
        description: all of it
        steps:
          - id: deploy
            command: ./deploy.sh
            tool: sh
            nodes: [w1, w2]
            max_parallel: 1
            needs: []
            when: always
            tests:
              - { type: output_contains, pattern: "ok", negate: false }
            timeout_s: 30
            rollback: ./undo.sh
            strategy: rolling
            batch_size: 2
            health_check: ./health.sh
            max_fail_percentage: 50
            approval: true
            approval_timeout_s: 60
            env: { PORT: 8080, DEBUG: true, VERSION: 1.10 }
            working_dir: /srv
        """
    ).steps
    assert s == StepSpec(
        id="deploy",
        command="./deploy.sh",
        tool="sh",
        nodes=["w1", "w2"],
        max_parallel=1,
        needs=[],
        when="always",
        tests=[OutputContainsTest(pattern="ok")],
        timeout_s=30,
        rollback="./undo.sh",
        strategy="rolling",
        batch_size=2,
        health_check="./health.sh",
        max_fail_percentage=50,
        approval=True,
        approval_timeout_s=60,
        env={"PORT": "8080", "DEBUG": "true", "VERSION": "1.10"},  # as written, not as YAML would type them
        working_dir="/srv",
    )


def test_anchors_and_merge_keys() -> None:
    spec = compile_(
        """
        name: p
        steps:
          - &web { id: a, command: x, nodes: [w1, w2], timeout_s: 10 }
          - { <<: *web, id: b, timeout_s: 20 }
        """
    )
    assert [(s.id, s.command, s.nodes, s.timeout_s) for s in spec.steps] == [("a", "x", ["w1", "w2"], 10), ("b", "x", ["w1", "w2"], 20)]


# ---------------------------------------------------------------- variables


def test_variables_in_both_syntaxes() -> None:
    spec = compile_(
        """
        name: deploy ${version}
        steps:
          - id: a
            command: "deploy {{ version }} to ${ env } --tag={{version}}"
            nodes: ["${node}"]
            env: { RELEASE: "${version}" }
        """,
        version="1.4.2",
        env="prod",
        node="web-1",
    )
    s = spec.steps[0]
    assert spec.name == "deploy 1.4.2"
    assert s.command == "deploy 1.4.2 to prod --tag=1.4.2"
    assert s.nodes == ["web-1"] and s.env == {"RELEASE": "1.4.2"}


def test_vars_defaults_are_overridden_by_the_command_line() -> None:
    text = """
        name: p
        vars: { version: main, env: staging }
        steps:
          - { id: a, command: "deploy ${version} to ${env}" }
    """
    assert compile_(text).steps[0].command == "deploy main to staging"
    assert compile_(text, env="prod").steps[0].command == "deploy main to prod"


def test_a_substituted_value_takes_the_type_of_its_field() -> None:
    spec = compile_(
        """
        name: p
        steps:
          - id: a
            command: x
            nodes: [w1, w2, w3]
            strategy: rolling
            batch_size: ${batch}
            approval: ${gate}
          - { id: b, command: "${batch}", timeout_s: "{{ batch }}", tests: [{ type: output_contains, pattern: "${batch}" }] }
        """,
        batch="2",
        gate="true",
    )
    a, b = spec.steps
    assert (a.batch_size, a.approval) == (2, True)
    assert (b.command, b.timeout_s, b.tests) == ("2", 2.0, [OutputContainsTest(pattern="2")])
    err = refused("name: p\nsteps:\n  - id: a\n    command: x\n    timeout_s: ${t}\n", t="soon")
    assert err.line == 5 and "timeout_s: Expected `float | null`, got `str`" in err.message


def test_undefined_variable_is_refused_with_its_line() -> None:
    err = refused(
        """
        name: p
        steps:
          - id: a
            command: echo ${missing}
        """
    )
    assert err.line == 4
    assert "undefined variable 'missing'" in err.message and "--var missing=" in err.message


def test_undefined_variable_inside_a_literal_block_points_at_its_line() -> None:
    err = refused(
        """
        name: p
        steps:
          - id: a
            command: |
              set -e
              echo one
              echo {{ nope }}
        """
    )
    assert err.line == 7


def test_shell_variables_escape_with_a_double_dollar() -> None:
    spec = compile_(
        """
        name: p
        steps:
          - { id: a, command: "echo $${HOME} $HOME $(date) {{.Names}}" }
        """
    )
    assert spec.steps[0].command == "echo ${HOME} $HOME $(date) {{.Names}}"


# ---------------------------------------------------------------- refusals


def test_yaml_syntax_error_has_the_line_of_the_mark() -> None:
    err = refused(
        """
        name: p
        steps:
          - id: a
            command: [unclosed
          - id: b
        """
    )
    assert err.line is not None and err.line >= 4
    assert err.message.startswith("YAML syntax error")
    assert str(err).startswith(f"t.yaml:{err.line}: YAML syntax error")


def test_tab_indentation_is_a_syntax_error_with_line() -> None:
    err = refused("name: p\nsteps:\n\t- id: a\n")
    assert err.line == 3


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("name: p\nstep: []\n", 2, "unknown key 'step' in the template; did you mean 'steps'?"),
        ("name: p\nsteps:\n  - id: a\n    command: x\n    helth_check: y\n", 5, "did you mean 'health_check'?"),
        ("name: p\nsteps:\n  - id: a\n    comand: x\n", 4, "unknown key 'comand'"),
        ("name: p\nsteps:\n  - id: a\n", 3, "step a: missing required field 'command'"),
        ("name: p\nsteps:\n  - command: x\n", 3, "missing required field 'id'"),
        ("steps:\n  - { id: a, command: x }\n", 1, "missing required field 'name'"),
        ("name: p\n", 1, "missing required field 'steps'"),
        ("name: p\nsteps: []\n", 1, "at least one step"),
        ("name: p\nsteps:\n  - { id: a, command: x }\n  - id: b\n    command: y\n    needs: [a, nope]\n", 6, "needs unknown step 'nope'"),
        ("name: p\nsteps:\n  - { id: a, command: x }\n  - { id: a, command: y }\n", 4, "duplicate step id 'a'"),
        ("name: p\nsteps:\n  - { id: a.b, command: x }\n", 3, "step a.b: id: not a valid id"),
        ("name: p\nsteps:\n  - id: a\n    command: x\n    nodes: [w1, 'bad node']\n", 5, "nodes: not a valid id"),
        ("name: p\nsteps:\n  - id: a\n    command: x\n    strategy: rolling\n    batch_size: 0\n", 6, "batch_size: Expected `int` >= 1"),
        ("name: p\nsteps:\n  - id: a\n    command: x\n    strategy: rolling\n    batch_size: two\n", 6, "Expected `int`, got `str`"),
        ("name: p\nsteps:\n  - id: a\n    command: x\n    max_fail_percentage: 150\n", 5, "max_fail_percentage: Expected `float` <= 100"),
        ("name: p\nsteps:\n  - id: a\n    command: x\n    max_fail_percentage: -1\n", 5, "Expected `float` >= 0"),
        ("name: p\nsteps:\n  - id: a\n    command: x\n    when: sometimes\n", 5, "when: Invalid enum value 'sometimes'"),
        ("name: p\nsteps:\n  - id: a\n    command: x\n    batch_size: 2\n", 5, "batch_size applies to strategy: rolling only"),
        ("name: p\nsteps:\n  - id: a\n    command: x\n    nodes: [w1]\n    labels: {r: w}\n", 6, "either nodes or labels"),
        ("name: p\nsteps:\n  - id: a\n    command: x\n    when: failure\n", 5, "when: failure needs at least one step"),
        ("name: p\nsteps:\n  - id: a\n    command: ''\n", 4, "command is empty"),
        ("name: p\nsteps:\n  - id: a\n    command: x\n    id: b\n", 5, "duplicate key 'id'"),
        ("name: p\nsteps:\n  id: a\n", 3, "steps must be a list"),
        ("name: p\nsteps:\n  - id: a\n    command: {{ x }}\n", 4, "quote the value"),
        ("name: p\nsteps:\n  - { id: a, command: x }\n---\nname: q\n", 5, "second YAML document"),
    ],
)
def test_refusals_name_the_line_and_the_problem(text: str, line: int, fragment: str) -> None:
    err = refused(text)
    assert fragment in err.message
    assert err.line == line, err


def test_dependency_cycle_is_refused() -> None:
    err = refused(
        """
        name: p
        steps:
          - { id: a, command: x, needs: [c] }
          - { id: b, command: x, needs: [a] }
          - { id: c, command: x, needs: [b] }
        """
    )
    assert err.line == 3
    assert "dependency cycle: a -> c -> b -> a" in err.message


def test_a_step_needing_itself_is_refused() -> None:
    err = refused("name: p\nsteps:\n  - id: a\n    command: x\n    needs: [a]\n")
    assert (err.line, err.message) == (5, "step a: needs: step 'a' needs itself")


@pytest.mark.parametrize(
    ("tests", "fragment"),
    [
        ("[{ type: exit_cod }]", "unknown test type 'exit_cod'; did you mean 'exit_code'?"),
        ("[{ type: exit_code, expect: 1 }]", "unknown key 'expect' in a exit_code test"),
        ("[{ pattern: x }]", "a test needs a type"),
        ("[{ type: output_contains }]", "missing required field `pattern`"),
    ],
)
def test_bad_tests_are_refused(tests: str, fragment: str) -> None:
    err = refused(f"name: p\nsteps:\n  - id: a\n    command: x\n    tests: {tests}\n")
    assert fragment in err.message and err.line == 5


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("name: p\nphases:\n  - analysys: {}\n", 3, "did you mean 'analysis'?"),
        ("name: p\nphases:\n  - analysis: { validate: false }\n  - execution: { steps: [{command: x}] }\n", 3, "validate must be true"),
        ("name: p\nphases:\n  - execution: { steps: [{command: x}] }\n  - execution: { steps: [] }\n", 4, "appears twice"),
        ("name: p\nphases:\n  - execution:\n      steps:\n        - { tool: bash }\n", 5, "missing required field 'command'"),
        ("name: p\nphases:\n  - deploy: { nodes: [w1] }\n", 3, "the deploy phase needs a command"),
        ("name: p\nphases:\n  - deploy: { command: x, batchSize: 0 }\n", 3, "batchSize: Expected `int` >= 1"),
        ("name: p\nphases:\n  - deploy: { command: x, healthcheck: y }\n", 3, "did you mean 'healthCheck'?"),
        ("name: p\nphases:\n  - test: { tests: [] }\n", 2, "execution or a deploy phase"),
        ("name: p\nsteps: []\nphases: []\n", 3, "not both"),
    ],
)
def test_phases_refusals(text: str, line: int, fragment: str) -> None:
    err = refused(text)
    assert fragment in err.message
    assert err.line == line, err


def test_load_template_reports_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as info:
        load_template(tmp_path / "missing.yaml", {})
    assert info.value.line is None and info.value.file.endswith("missing.yaml")
    assert isinstance(info.value, NexusError) and not info.value.retryable


def test_load_template_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: p\nsteps:\n  - id: a\n    command: x\n    needs: [ghost]\n")
    with pytest.raises(TemplateError) as info:
        load_template(path, {})
    assert str(info.value) == f"{path}:5: step a: needs: needs unknown step 'ghost'"


def test_empty_template() -> None:
    assert refused("# nothing\n").message == "the template is empty"


def test_a_variable_the_template_neither_declares_nor_uses_is_refused_with_a_guess() -> None:
    # Review: `--var verison=1.2.3` left the default `main` deployed, and the pipeline succeeded.
    template = """
        name: p
        vars: {version: main}
        steps:
          - id: a
            command: echo deploying ${version} to ${target}
        """
    err = refused(template, verison="1.2.3", target="eu")
    assert err.line is None and "variable 'verison' is not declared under vars: nor used" in err.message
    assert "did you mean 'version'?" in err.message
    assert "its variables: target, version" in refused(template, zzz="1", target="eu").message
    assert compile_(template, version="1.2.3", target="eu").steps[0].command == "echo deploying 1.2.3 to eu"  # used, not declared: fine


def test_an_output_pattern_re2_refuses_is_refused_at_its_line() -> None:
    err = refused(
        """
        name: p
        steps:
          - id: a
            command: echo a
            tests:
              - {type: exit_code}
              - {type: output_contains, pattern: "(a"}
        """
    )
    assert err.line == 7 and err.message.startswith("invalid pattern '(a': missing ): (a")
