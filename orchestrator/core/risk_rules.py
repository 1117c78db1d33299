"""Risk rules: what one unwrapped simple command can destroy, and how badly.

`command_risks` sends each command to the packs that know its program (`orchestrator.core.risk`,
one module per domain); `redirect_risks` rates a shell redirection. Parsing and unwrapping
(sudo, env, sh -c, interpreters, launchers, ...) live in `orchestrator.core.analysis` and the
modules it uses. The severity contract, held by the labelled corpus in tests/unit/corpus/:

  critical  the command can destroy data, history or access that cannot be brought back without
            a backup (or takes the node down); on production it is held for approval
  warning   destructive, but narrow, recoverable, or depending on what it is given
  info      worth knowing (a computed command name, a delete of scratch or build output)

Each pack's module docstring lists its critical, warning and safe forms; docs/policy.md has
them all. A program no pack knows gets no finding: the analysis is a guard against accidents
with known tools, not a sandbox.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.core.risk import (
    cloud,
    containers,
    databases,
    disks,
    filesystem,
    iac,
    kubernetes,
    network,
    packages,
    power,
    users,
    vcs,
    vms,
)
from orchestrator.core.risk.table import Handler, Pack, Rule, evaluate
from orchestrator.core.risk_types import Invocation, Risk

PACKS: tuple[Pack, ...] = (
    filesystem.PACK,
    disks.PACK,
    vcs.PACK,
    containers.PACK,
    kubernetes.PACK,
    cloud.PACK,
    iac.PACK,
    databases.PACK,
    vms.PACK,
    network.PACK,
    users.PACK,
    packages.PACK,
    power.PACK,
)


def _index(packs: Sequence[Pack]) -> tuple[dict[str, list[Handler]], dict[str, list[Rule]]]:
    handlers: dict[str, list[Handler]] = {}
    rules: dict[str, list[Rule]] = {}
    for pack in packs:
        for name, handler in pack.handlers.items():
            handlers.setdefault(name, []).append(handler)
        for rule in pack.rules:
            for name in rule.tool.names:
                rules.setdefault(name, []).append(rule)
    return handlers, rules


_HANDLERS, _RULES = _index(PACKS)


def known_programs() -> frozenset[str]:
    """Every program name a pack rates: what a pattern naming a program (`/usr/bin/r[m]`) is tried against."""
    return frozenset(_HANDLERS) | frozenset(_RULES)


def pack_of(name: str) -> str | None:
    """The pack that knows program `name`, for the benchmark's per-domain figures."""
    for pack in PACKS:
        if name in pack.handlers or any(name in r.tool.names for r in pack.rules):
            return pack.name
    return "disks" if disks.is_mkfs(name) else None


def command_risks(inv: Invocation) -> list[Risk]:
    """Every risk of one unwrapped command (its redirections are checked separately)."""
    if not inv.argv:
        return []
    name = inv.name
    if inv.argv[0].text.startswith("/etc/init.d/"):
        return power.service_risks(inv) or []
    if disks.is_mkfs(name):
        return disks.mkfs_risks(inv) or []
    found: list[Risk] = []
    decided = False
    for handler in _HANDLERS.get(name, ()):
        risks = handler(inv)
        if risks is not None:
            decided = True
            found.extend(risks)
    if not decided:
        found.extend(evaluate(_RULES.get(name, ()), inv))
    return found


def redirect_risks(op: str, target: str, cwd: str | None = None) -> list[Risk]:
    """Risks of a redirection: a block device, the kernel's sysrq trigger, or a vital file truncated."""
    return filesystem.redirect_risks(op, target, cwd)
