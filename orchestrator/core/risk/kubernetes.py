"""Kubernetes pack: kubectl/oc deletes, drains and scale-downs, helm uninstall, kustomize deletes.

Critical: `kubectl delete` of anything but a single pod (namespaces, deployments, PVCs, `-f`,
`-k`, `--all`, `-A`, label selectors), `scale --replicas=0`, `helm uninstall`, `argocd app delete`
(it cascades by default), `flux uninstall`, `istioctl uninstall`, `velero`-free
deletes of CRDs, `kubectl delete pod ... --force --grace-period=0`.
Warning: deleting one pod (its controller replaces it), `drain` (also `oc adm drain`),
`argocd app delete --cascade=false`, `cordon` of all nodes,
`taint ...:NoExecute`, `replace --force`, `apply --prune`, `helm rollback`, `helm upgrade --force`.
Safe: every form with `--dry-run` (other than `--dry-run=none`), `get`, `describe`, `diff`.
"""

# ruff: noqa: E501 - a pack keeps one rule per line, so it reads as a table

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.core.risk.table import Pack, Rule, has_flag, positionals, tool
from orchestrator.core.risk_types import Invocation, Risk, Severity, approval_phrase

_KUBECTL = tool(
    "kubectl",
    "oc",
    "kubecolor",
    "k3s",
    "microk8s.kubectl",
    values="-n --namespace --context --kubeconfig --cluster --user -s --server --as --as-group --token --request-timeout -l --selector "
    "-o --output --field-selector --grace-period --timeout -c --container --cascade --replicas -f --filename -k --kustomize --for",
)
_HELM = tool("helm", values="-n --namespace --kube-context --kubeconfig --timeout --description --repo --version -f --values --set")


def dry_run(args: Sequence[str]) -> bool:
    return any(a == "--dry-run" or (a.startswith("--dry-run=") and a != "--dry-run=none") for a in args)


def kubectl_risks(inv: Invocation) -> list[Risk] | None:
    args = inv.args
    words = positionals(args, _KUBECTL)
    if inv.name in {"k3s", "microk8s.kubectl"} and words[:1] == ["kubectl"]:
        words = words[1:]
    if not words or dry_run(args) or has_flag(args, "--help") or has_flag(args, "-h"):
        return None
    if words[0] != "delete":
        return None
    cmd = f"{inv.name} {' '.join(args)}"
    kinds = {k.split("/")[0].split(".")[0].lower() for p in words[1:2] for k in p.split(",")}
    by_file = has_flag(args, "-f", _KUBECTL) or has_flag(args, "--filename") or has_flag(args, "-k") or has_flag(args, "--kustomize")
    broad = by_file or bool({"--all", "-A", "--all-namespaces"} & set(args)) or has_flag(args, "-l") or has_flag(args, "--selector")
    one = len(words) == 3 or (len(words) == 2 and "/" in words[1])
    single_pod = kinds <= {"pod", "pods", "po"} and one and not broad
    forced = has_flag(args, "--force") and any(a in {"--grace-period=0", "--now"} for a in args)
    sev: Severity = "warning" if single_pod and not forced else "critical"
    what = "deletes a pod (its controller starts a new one)" if sev == "warning" else "deletes cluster resources"
    return [
        Risk(
            "infra_destroy",
            sev,
            f"Command '{cmd}' {what} - {approval_phrase(sev)}",
            (f"See what would be deleted first: {cmd} --dry-run=client -o name",),
        )
    ]


_ARGOCD = tool("argocd", values="--server --auth-token --grpc-web-root-path -p --propagation-policy -l --selector --project --app-namespace -N")
_MESH = tool("flux", "istioctl", values="-n --namespace --context --kubeconfig --timeout -f --filename -r --revision")

# fmt: off
RULES: tuple[Rule, ...] = (
    Rule("kubernetes.scale-zero", _KUBECTL, ("scale",), "critical", "scales workloads to zero replicas, taking them offline", flags=("--replicas=0",), unless=("--dry-run=client", "--dry-run=server", "--dry-run"), suggestion="Scale down step by step, or check what runs first: kubectl get deploy", type="infra_destroy"),
    Rule("kubernetes.oc-adm-drain", _KUBECTL, ("adm", "drain"), "warning", "evicts every pod from a node", unless=("--dry-run=client", "--dry-run=server", "--dry-run"), type="infra_destroy"),
    Rule("kubernetes.drain", _KUBECTL, ("drain",), "warning", "evicts every pod from a node", unless=("--dry-run=client", "--dry-run=server", "--dry-run"), suggestion="Preview it first: {cmd} --dry-run=client", type="infra_destroy"),
    Rule("kubernetes.taint-noexecute", _KUBECTL, ("taint", "**", "*:noexecute"), "warning", "evicts pods that do not tolerate the taint", type="infra_destroy"),
    Rule("kubernetes.replace-force", _KUBECTL, ("replace|apply",), "warning", "deletes and re-creates or prunes resources", flags=("--force", "--prune"), unless=("--dry-run=client", "--dry-run=server"), suggestion="Preview it first: kubectl diff -f FILE", type="infra_destroy"),
    Rule("kubernetes.helm-uninstall", _HELM, ("uninstall|delete|del|un",), "critical", "removes a release and the resources it created", unless=("--dry-run", "--help", "-h"), suggestion="Preview it first: {cmd} --dry-run", type="infra_destroy"),
    Rule("kubernetes.argocd-delete-orphan", _ARGOCD, ("app", "delete|rm"), "warning", "deletes an application, leaving its resources running", flags=("--cascade=false",), type="infra_destroy"),
    Rule("kubernetes.argocd-delete", _ARGOCD, ("app|appset", "delete|rm"), "critical", "deletes an application and (cascading, the default) every resource it deployed", unless=("--help", "-h"), suggestion="Keep the resources: {cmd} --cascade=false", type="infra_destroy"),
    Rule("kubernetes.mesh-uninstall", _MESH, ("uninstall",), "critical", "removes the controller and its custom resources from the cluster", unless=("--dry-run", "-d", "--help", "-h"), type="infra_destroy"),
    Rule("kubernetes.helm-rollback", _HELM, ("rollback",), "warning", "rolls a release back", unless=("--dry-run",), type="infra_destroy"),
    Rule("kubernetes.helm-force", _HELM, ("upgrade",), "warning", "replaces resources by force", flags=("--force", "--reset-values"), unless=("--dry-run",), type="infra_destroy"),
)
# fmt: on

PACK = Pack(
    name="kubernetes",
    summary="kubectl/oc delete, drain, scale to zero; helm uninstall",
    rules=RULES,
    handlers={
        "kubectl": kubectl_risks,
        "oc": kubectl_risks,
        "kubecolor": kubectl_risks,
        "k3s": kubectl_risks,
        "microk8s.kubectl": kubectl_risks,
    },
)
