"""What a process can be given at all: the rule the orchestrator's analysis applies to a request
(orchestrator.core.judge) and the agent to a dispatch before it spawns (agent.pty_runner).

exec(2) passes its arguments, the working directory and each `NAME=value` of the environment
as C strings, so none may hold a NUL byte; a name is what comes before the first `=`, so it
may not hold one and may not be empty. Anything else is a valid name (POSIX: "other characters
may be permitted by an implementation"): `BASH_FUNC_f%%`, the way bash exports a function, is
one. A request that breaks this rule can only fail on the node, so it is rejected up front.

Reasons name the entry, never a value: an env value may be a secret.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

NUL = "\x00"


def env_name_problem(name: str) -> str | None:
    """Why `name` cannot be an environment variable's name; None when it can."""
    if not name:
        return "an env entry has an empty name"
    if NUL in name:
        return f"env name {name!r} holds a NUL byte"
    if "=" in name:
        return f"env name {name!r} holds '=': the name of an environment variable ends at its first '='"
    return None


def holds_nul(what: str, text: str) -> str | None:
    """Why `text` (`what` it is, for the reason) cannot be given to a process; None when it can."""
    return f"{what} holds a NUL byte (\\x00), which no program can receive" if NUL in text else None


def env_problem(env: Mapping[str, str]) -> str | None:
    """Why `env` cannot be a process's environment; None when it can."""
    for name, value in env.items():
        if (problem := env_name_problem(name)) is not None:
            return problem
        if NUL in value:
            return holds_nul(f"the value of env {name!r}", value)
    return None


def unrunnable(argv: Sequence[str], working_dir: str | None, env: Mapping[str, str]) -> str | None:
    """Why no process could be started with this argv, working directory and environment; None when one could."""
    for i, arg in enumerate(argv):
        if (problem := holds_nul(f"argument {i} of the command line", arg)) is not None:
            return problem
    if working_dir is not None and (problem := holds_nul("the working directory", working_dir)) is not None:
        return problem
    return env_problem(env)
