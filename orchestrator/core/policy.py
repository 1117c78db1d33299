"""Policy: who may submit and approve, what is denied or allowed, which nodes are production.

Loaded from a YAML file (`nexus orchestrator --policy FILE`; format in
docs/policy.md); every check here is pure. With no file, the default policy
lets everyone submit, denies nothing and holds every critical command for approval,
on any node (secure by default: a finding that says "requires approval" is held);
`approval_severity_anywhere: never` keeps that to nodes labelled `env=prod` or
`env=production`. Anyone may approve under the default policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import msgspec

from orchestrator.core.analysis import normalised
from orchestrator.core.text import PatternError, user_regex

Severity = Literal["info", "warning", "critical"]
Threshold = Literal["info", "warning", "critical", "never"]
SEVERITY_RANK: dict[str | None, int] = {None: 0, "info": 1, "warning": 2, "critical": 3}
_THRESHOLD_RANK: dict[str, int] = {"info": 1, "warning": 2, "critical": 3, "never": 4}


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
    """The lowest severity that holds a job aimed at a production node for approval."""
    approval_severity_anywhere: Threshold = "critical"
    """The lowest severity that holds a job for approval on any node; `never`: only production holds."""
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
        """Whether the policy names `user` (or one of their roles) as an approver. Job approvals and
        pipeline gates both ask this; a pipeline template's own list can only narrow it."""
        if self.approvers:
            names = {user, *(n for n in self.users.get(user or "", []))}
            return bool(names & set(self.approvers))
        if not self.users:
            return True
        return any(r.approve for r in self.roles_of(user))

    def deciders(self) -> list[str] | None:
        """Every name `may_approve` accepts, when they can be listed (JobApprovalRequired.deciders);
        None: anyone (no approvers and no users named)."""
        if not self.approvers and not self.users:
            return None
        named = set(self.approvers) if self.approvers else set()
        return sorted(named | {u for u in self.users if self.may_approve(u)})

    def priority_of(self, user: str | None, requested: int) -> int:
        """An explicit priority wins; otherwise the user's highest role priority."""
        if requested or not self.users:  # asked for every due job of every decision round: the common cases first
            return requested
        return max((r.priority for r in self.roles_of(user)), default=0)

    # -------------------------------------------------------------- commands

    def is_production(self, labels: Mapping[str, str]) -> bool:
        return any(labels.get(k) in values for k, values in self.production_labels.items())

    def denial(
        self,
        command: str,
        tool: str,
        targets: Iterable[Mapping[str, str] | None],
        *,
        interpreter: str | None = None,
        expanded: str | None = None,
        env_path: str | None = None,
    ) -> str | None:
        """Why the command is refused on these target label sets, or None. Rules apply by the
        job's `tool`; `interpreter` is the program that reads the command (default: the tool);
        `expanded` is the command with the job's env written out (what runs), when it differs;
        `env_path`: the PATH the job's env gives, if any."""
        targets = list(targets) or [None]
        # Rules also see each simple command as it will run (quotes removed, wrappers peeled, nested
        # code included, the program without its path), so `shutdow""n`, `/sbin/shutdown` or
        # `sudo sh -c 'shutdown'` cannot slip past `^shutdown`.
        seen = normalised(expanded or command, interpreter or tool)
        whole = (command, expanded) if expanded and expanded != command else (command,)
        lines = (*whole, *(form for forms in seen.commands for form in forms))
        # A rule for the program that reads the command applies too: a job of tool `git` runs its
        # command line under bash (decide.argv_for), so bash's rules cannot be stepped around by
        # naming another tool.
        reader = interpreter or tool
        readers = (tool,) if reader == tool else (tool, reader)

        def applies(rule: Rule, labels: Mapping[str, str] | None) -> bool:
            return any(rule.applies(t, labels) for t in readers)

        deny = [r for r in self.deny if any(applies(r, t) for t in targets)]
        for rule in deny:
            if any(rule.matches(c) for c in lines):
                return rule.reason or f"command matches deny rule {rule.pattern!r}"
        allow = [[r for r in self.allow if applies(r, labels)] for labels in targets]
        if env_path is not None and any(allow):
            # Every program of the command would be looked up there first: `date` may be any file
            # named date, and allow rules name programs (`PATH=/tmp/x date` is not `^date$`).
            return f"the job's env sets PATH ({env_path[:200]!r}): where allow rules apply, programs come from the node's own PATH"
        if not seen.complete and (deny or any(allow)):
            return "the command is too large or nested too deeply to check every command it runs against the policy's rules"
        for labels, relevant in zip(targets, allow, strict=True):
            # Every simple command must match an allow rule exactly as it runs (its first form: with
            # its wrappers, the variables it sets and its program's path; `flock F date`,
            # `PATH=/tmp date` or `/tmp/date` are not `^date$`); the line as a whole only counts
            # when it holds no command at all (`echo hi; id` must not pass as `^echo`).
            if seen.commands:
                allowed = all(any(r.matches(forms[0]) for r in relevant) for forms in seen.commands)
            else:
                allowed = any(r.matches(c) for r in relevant for c in whole)
            if relevant and not allowed:
                where = f" (a node labelled {', '.join(f'{k}={v}' for k, v in sorted(labels.items()))})" if labels else ""
                return f"command matches no allow rule for this tool and node{where}; aim it elsewhere with --node or --label"
        return None

    def needs_approval(self, severity: str | None, production: bool) -> bool:
        """Whether a finding of `severity` holds a job: anywhere from `approval_severity_anywhere`,
        on a production node from `approval_severity`."""
        rank = SEVERITY_RANK[severity]
        if rank and rank >= _THRESHOLD_RANK[self.approval_severity_anywhere]:
            return True
        return production and rank >= SEVERITY_RANK[self.approval_severity]
