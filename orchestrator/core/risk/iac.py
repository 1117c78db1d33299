"""Infrastructure-as-code pack: destroys, state surgery, unreviewed applies, and ad-hoc fleet commands.

Critical: `terraform/tofu/terragrunt destroy` and `apply -destroy` (also with -target),
`terragrunt run-all destroy`, `pulumi destroy`, `pulumi stack rm`, `cdk destroy`, `cdktf
destroy`, `serverless remove`, `vagrant destroy`; ansible ad-hoc modules whose arguments delete
(`-m file -a "path=/etc state=absent"`) are rated by the path, and `-m shell/command/raw -a CMD`
is parsed as shell.
Warning: `apply -auto-approve` (changes nobody reviewed), `state rm`, `state mv`, `force-unlock`,
`workspace delete`, `taint`, `pulumi up --yes`, `pulumi state delete`, `pulumi cancel`.
Safe: `plan`, `plan -destroy` (it only shows), `validate`, `show`, `output`, `-help`.
"""

# ruff: noqa: E501 - a pack keeps one rule per line, so it reads as a table

from __future__ import annotations

from orchestrator.core.risk.table import Pack, Rule, positionals, tool
from orchestrator.core.risk_types import Invocation, Risk

_TF = tool(
    "terraform",
    "tofu",
    "terragrunt",
    "terraform-bin",
    values="-chdir -var -var-file -target -replace -lock-timeout -parallelism -state -out",
    clusters=False,
)
_PULUMI = tool("pulumi", values="-s --stack -C --cwd --target --config -c --message -m --exec-kind", clusters=False)
_CDK = tool("cdk", "cdktf", "sst", values="--app -a --profile --context -c --output -o")
_SLS = tool("sls", "serverless", values="--stage -s --region -r --config -c --aws-profile")


def terraform_risks(inv: Invocation) -> list[Risk] | None:
    args = inv.args
    words = positionals(args, _TF)
    if words[:1] == ["run-all"] or (words[:1] == ["run"] and words[1:2] == ["--all"]):
        words = words[1:]
    if {"-help", "-h", "--help"} & set(args) or not words:
        return None
    verb = words[0]
    if verb == "destroy" or (verb == "apply" and ("-destroy" in args or "--destroy" in args)):
        targeted = any(a.startswith(("-target", "--target")) for a in args)
        scope = "the targeted resources" if targeted else "every resource the configuration manages"
        return [
            Risk(
                "infra_destroy",
                "critical",
                f"Command '{inv.name} {' '.join(args)}' destroys {scope} - requires approval",
                (
                    f"Review the plan first: {inv.name} plan -destroy"
                    + (" " + " ".join(a for a in args if a.startswith("-target")) if targeted else ""),
                ),
            )
        ]
    return None


# fmt: off
RULES: tuple[Rule, ...] = (
    Rule("iac.tf-auto-approve", _TF, ("apply",), "warning", "applies changes nobody reviewed", flags=("-auto-approve", "--auto-approve"), suggestion="Save and review the plan first: terraform plan -out=tfplan && terraform apply tfplan", type="infra_destroy"),
    Rule("iac.tf-state-rm", _TF, ("state", "rm|mv|replace-provider|push"), "warning", "edits the state by hand", unless=("-dry-run",), suggestion="Back up the state first: terraform state pull > state.backup.json; preview with -dry-run", type="infra_destroy"),
    Rule("iac.tf-misc", _TF, ("force-unlock|taint|untaint",), "warning", "changes state locks or marks resources for re-creation", type="infra_destroy"),
    Rule("iac.tf-workspace-delete", _TF, ("workspace", "delete"), "warning", "deletes a workspace and, with -force, its state", type="infra_destroy"),
    Rule("iac.pulumi-destroy", _PULUMI, ("destroy|down",), "critical", "destroys every resource in the stack", unless=("--preview-only", "--help", "-h"), suggestion="Preview it first: pulumi preview --diff, or pulumi destroy --preview-only", type="infra_destroy"),
    Rule("iac.pulumi-stack-rm", _PULUMI, ("stack", "rm"), "critical", "deletes the stack and its state", unless=("--help",), suggestion="Export the state first: pulumi stack export --file stack.json", type="infra_destroy"),
    Rule("iac.pulumi-state-delete", _PULUMI, ("state", "delete|unprotect"), "warning", "edits the stack state by hand", type="infra_destroy"),
    Rule("iac.pulumi-up-yes", _PULUMI, ("up|update|refresh",), "warning", "applies changes nobody reviewed", flags=("--yes", "-y", "--skip-preview", "-f"), type="infra_destroy"),
    Rule("iac.pulumi-cancel", _PULUMI, ("cancel",), "warning", "cancels an update in progress, which can leave resources half-made", type="infra_destroy"),
    Rule("iac.cdk-destroy", _CDK, ("destroy|remove",), "critical", "destroys the stacks", unless=("--help",), suggestion="Check what the stack holds first: cdk diff / cdk list", type="infra_destroy"),
    Rule("iac.sls-remove", _SLS, ("remove",), "critical", "removes the deployed service and its resources", unless=("--help",), type="infra_destroy"),
)
# fmt: on

PACK = Pack(
    name="iac",
    summary="terraform/tofu/terragrunt, pulumi, cdk, serverless: destroy, state surgery, unreviewed apply",
    rules=RULES,
    handlers={"terraform": terraform_risks, "tofu": terraform_risks, "terragrunt": terraform_risks, "terraform-bin": terraform_risks},
)


def ansible_module(inv: Invocation) -> tuple[str, str] | None:
    """The module and its argument string of an ad-hoc `ansible HOSTS -m MODULE -a ARGS`."""
    args = inv.args
    module, margs = "command", ""
    for i, a in enumerate(args[:-1]):
        if a in {"-m", "--module-name"}:
            module = args[i + 1]
        elif a in {"-a", "--args"}:
            margs = args[i + 1]
    for a in args:
        if a.startswith("--module-name="):
            module = a.split("=", 1)[1]
        elif a.startswith("--args="):
            margs = a.split("=", 1)[1]
    return (module.rsplit(".", 1)[-1], margs) if margs or module != "command" else None


def key_values(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split():
        key, eq, value = part.partition("=")
        if eq:
            out[key] = value.strip("'\"")
    return out
