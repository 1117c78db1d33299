"""Infrastructure rules: git push/clean, kubectl/oc, helm, and terraform/tofu/terragrunt/pulumi.

Severities follow the contract in `orchestrator.core.risk_rules`.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.core.risk_types import Invocation, Risk, Severity, approval_phrase, program

# --- git ------------------------------------------------------------------------------------

_PROTECTED_BRANCHES = frozenset({"main", "master", "production"})
_GIT_VALUE_OPTS = frozenset({"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--exec-path"})
_PUSH_VALUE_OPTS = frozenset({"-o", "--push-option", "--repo", "--receive-pack", "--exec"})


def git_risks(inv: Invocation) -> list[Risk]:
    args = [w.text for w in inv.argv[1:]]
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in _GIT_VALUE_OPTS else 1
    if i >= len(args):
        return []
    sub, rest = args[i], args[i + 1 :]
    if sub == "clean":
        flags = "".join(a.lstrip("-") for a in rest if a.startswith("-") and not a.startswith("--"))
        forced = "f" in flags or "--force" in rest
        if forced and ("d" in flags or "x" in flags) and "n" not in flags and "--dry-run" not in rest:
            return [
                Risk(
                    "destructive_command",
                    "warning",
                    f"Command 'git clean {' '.join(rest)}' deletes untracked files - review before running",
                    ("Run 'git clean -n' first to list what would be deleted",),
                )
            ]
        return []
    if sub != "push":
        return []
    force = lease = delete = mirror = False
    positional: list[str] = []
    j = 0
    while j < len(rest):
        a = rest[j]
        if a in _PUSH_VALUE_OPTS:
            j += 1
        elif a == "--force":
            force = True
        elif a.startswith("--force-with-lease") or a == "--force-if-includes":
            lease = True
        elif a in {"--delete", "-d"}:
            delete = True
        elif a == "--mirror":
            mirror = True
        elif a.startswith("-") and not a.startswith("--") and "f" in a:
            force = True
        elif not a.startswith("-"):
            positional.append(a)
        j += 1
    refspecs = positional[1:]
    force |= any(r.startswith("+") for r in refspecs)
    delete |= any(r.startswith(":") for r in refspecs)
    branches = {r.lstrip("+").split(":")[-1].removeprefix("refs/heads/") for r in refspecs}
    protected = sorted(branches & _PROTECTED_BRANCHES)
    onto = f" onto '{protected[0]}'" if protected else ""
    cmd = "git push " + " ".join(rest)
    if force or lease:
        if force:
            sev: Severity = "critical" if protected else "warning"
            tips = ["Use --force-with-lease instead of --force"]
        else:
            sev = "warning" if protected else "info"
            tips = []
        if protected:
            tips.append("Push to a feature branch and open a merge request instead of rewriting the shared branch")
        approval = f" - {approval_phrase(sev)}" if sev != "info" else ""
        return [Risk("force_push", sev, f"Command '{cmd}' rewrites remote history{onto}{approval}", tuple(tips))]
    if delete or mirror:
        sev = "critical" if protected else "warning"
        what = "mirrors (and may delete) remote refs" if mirror else "deletes a remote branch"
        named = f" ('{protected[0]}')" if protected else ""
        return [Risk("force_push", sev, f"Command '{cmd}' {what}{named} - {approval_phrase(sev)}")]
    return []


# --- infrastructure ------------------------------------------------------------------------

_KUBECTL_VALUE_OPTS = frozenset(
    ["-n", "--namespace", "--context", "--kubeconfig", "--cluster", "--user", "-s", "--server", "--as", "--token", "--request-timeout"]
)
_KUBE_BROAD = frozenset(
    [
        "ns",
        "namespace",
        "namespaces",
        "node",
        "nodes",
        "no",
        "pv",
        "persistentvolume",
        "persistentvolumes",
        "crd",
        "crds",
        "customresourcedefinition",
        "customresourcedefinitions",
        "all",
    ]
)


def _dry_run(args: Sequence[str]) -> bool:
    return any(a == "--dry-run" or (a.startswith("--dry-run=") and a != "--dry-run=none") for a in args)


def infra_risks(inv: Invocation) -> list[Risk]:
    name = program(inv.argv[0])
    args = [w.text for w in inv.argv[1:]]
    if name in {"kubectl", "oc"}:
        positional: list[str] = []
        i = 0
        while i < len(args):
            if args[i] in _KUBECTL_VALUE_OPTS:
                i += 1
            elif not args[i].startswith("-"):
                positional.append(args[i])
            i += 1
        if not positional or _dry_run(args):
            return []
        cmd = f"{name} {' '.join(args)}"
        if positional[0] == "drain":
            return [Risk("infra_destroy", "warning", f"Command '{cmd}' evicts every pod from a node - review before running")]
        if positional[0] != "delete":
            return []
        kinds = {k.split("/")[0].lower() for p in positional[1:2] for k in p.split(",")}
        broad = bool(kinds & _KUBE_BROAD) or bool({"--all", "-A", "--all-namespaces"} & set(args))
        sev: Severity = "critical" if broad else "warning"
        return [
            Risk(
                "infra_destroy",
                sev,
                f"Command '{cmd}' deletes cluster resources - {approval_phrase(sev)}",
                (f"Run '{cmd} --dry-run=client -o name' first to see what would be deleted",),
            )
        ]
    if name == "helm":
        if args[:1] and args[0] in {"uninstall", "delete", "del", "un"} and not _dry_run(args):
            return [
                Risk(
                    "infra_destroy",
                    "warning",
                    f"Command 'helm {' '.join(args)}' removes a release - review before running",
                    ("Run with --dry-run first",),
                )
            ]
        return []
    if name in {"terraform", "tofu", "terragrunt", "pulumi"}:
        positional = [a for a in args if not a.startswith("-")]
        destroy = positional[:1] == ["destroy"] or (positional[:1] == ["apply"] and "-destroy" in args)
        if not destroy or {"-help", "-h", "--help"} & set(args):
            return []
        targeted = any(a.startswith(("-target", "--target")) for a in args)
        sev = "warning" if targeted else "critical"
        return [
            Risk(
                "infra_destroy",
                sev,
                f"Command '{name} {' '.join(args)}' destroys managed infrastructure - {approval_phrase(sev)}",
                (f"Run '{name} plan -destroy' first and review it" if name != "pulumi" else "Run 'pulumi preview --destroy' first",),
            )
        ]
    return []
