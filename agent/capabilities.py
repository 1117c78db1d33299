"""What this node can run: tools found on PATH."""

from __future__ import annotations

import shutil
from collections.abc import Iterable

KNOWN_TOOLS = (
    "bash", "sh", "zsh", "dash", "python3", "python", "git", "docker", "podman", "kubectl", "helm",
    "terraform", "ansible", "node", "npm", "make", "curl", "wget", "rsync", "ssh", "systemctl",
    "psql", "mysql", "go", "cargo", "java",
)  # fmt: skip


def discover_tools(extra: Iterable[str] = ()) -> list[str]:
    """The known tools (plus `extra`) that resolve on this node's PATH, sorted."""
    return sorted({t for t in (*KNOWN_TOOLS, *extra) if shutil.which(t)})
