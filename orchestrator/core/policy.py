"""Policy: who may submit and approve, what is denied or allowed, which nodes are production.

Loaded from a YAML file (`nexus orchestrator --policy FILE`; format in
docs/policy.md); every check here is pure. With no file, the default policy
lets everyone submit, denies nothing and holds critical commands aimed at
nodes labelled `env=prod` or `env=production` for approval by anyone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import msgspec

from orchestrator.core.analysis import normalised_commands
from orchestrator.core.text import PatternError, user_regex

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str | None, int] = {None: 0, "info": 1, "warning": 2, "critical": 3}


class Rule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A regex (RE2 syntax: no backreferences or lookaround) on the command line and on each
    simple command as it will run, for some tools and node labels (empty = all)."""

    pattern: str
    tools: list[str] = []
    labels: dict[str, str] = {}
    reason: str = ""

    def applies(self, tool: str, labels: Mapping[str, str] | None) -> bool:
        if self.tools and tool not in self.tools:
            return False
        if not self.labels:
            return True
        return labels is not None and all(labels.get(k) == v for k, v in self.labels.items())

    def matches(self, command: str) -> bool:
        # RE2 (linear time): a rule's pattern cannot stall the decision loop. Compiled
        # patterns are cached by the re2 module; the policy checked them all at load.
        return user_regex(self.pattern).search(command.encode("utf-8", errors="surrogatepass")) is not None


class Role(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    submit: bool = True
    approve: bool = False
    priority: int = 0


DEFAULT_ROLES = {
    "viewer": Role(submit=False),
    "operator": Role(submit=True, priority=0),
    "admin": Role(submit=True, approve=True, priority=10),
}


class Policy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    production_labels: dict[str, list[str]] = msgspec.field(default_factory=lambda: {"env": ["prod", "production"]})
    approval_severity: Severity = "critical"
    approvers: list[str] = []
    deny: list[Rule] = []
    allow: list[Rule] = []
    users: dict[str, list[str]] = {}
    roles: dict[str, Role] = msgspec.field(default_factory=lambda: dict(DEFAULT_ROLES))

    def __post_init__(self) -> None:
        for rule in (*self.deny, *self.allow):
            try:
                user_regex(rule.pattern)
            except PatternError as exc:
                raise ValueError(f"invalid pattern {rule.pattern!r}: {exc}") from None
        for user, roles in self.users.items():
            unknown = [r for r in roles if r not in self.roles]
            if unknown:
                raise ValueError(f"user {user!r} has unknown role(s) {unknown}")

    # -------------------------------------------------------------- people

    def roles_of(self, user: str | None) -> list[Role]:
        return [self.roles[r] for r in self.users.get(user or "", []) if r in self.roles]

    def may_submit(self, user: str | None) -> bool:
        """Without a user list everyone may submit; with one, only listed users whose role allows it."""
        if not self.users:
            return True
        return any(r.submit for r in self.roles_of(user))

    def may_approve(self, user: str | None) -> bool:
        if self.approvers:
            names = {user, *(n for n in self.users.get(user or "", []))}
            return bool(names & set(self.approvers))
        if not self.users:
            return True
        return any(r.approve for r in self.roles_of(user))

    def priority_of(self, user: str | None, requested: int) -> int:
        """An explicit priority wins; otherwise the user's highest role priority."""
        if requested:
            return requested
        return max((r.priority for r in self.roles_of(user)), default=0)

    # -------------------------------------------------------------- commands

    def is_production(self, labels: Mapping[str, str]) -> bool:
        return any(labels.get(k) in values for k, values in self.production_labels.items())

    def denial(self, command: str, tool: str, targets: Iterable[Mapping[str, str] | None]) -> str | None:
        """Why the command is refused on these target label sets, or None."""
        targets = list(targets) or [None]
        # Rules also see each simple command as it will run (quotes removed, wrappers peeled, nested
        # code included), so `shutdow""n` or `sudo sh -c 'shutdown'` cannot slip past `^shutdown`.
        runs = normalised_commands(command, tool)
        for rule in self.deny:
            if any(rule.applies(tool, t) for t in targets) and any(rule.matches(c) for c in (command, *runs)):
                return rule.reason or f"command matches deny rule {rule.pattern!r}"
        for labels in targets:
            relevant = [r for r in self.allow if r.applies(tool, labels)]
            allowed = any(r.matches(command) for r in relevant) or (runs and all(any(r.matches(c) for r in relevant) for c in runs))
            if relevant and not allowed:
                return "command matches no allow rule for this tool and node"
        return None

    def needs_approval(self, severity: str | None, production: bool) -> bool:
        return production and SEVERITY_RANK[severity] >= SEVERITY_RANK[self.approval_severity]
