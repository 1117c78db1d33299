"""The environment a job gets: a documented minimal set of the agent's own variables, then
Nexus's own (`NEXUS_JOB_ID`, ...), then the job's `env`. Never the agent's whole
environment: the agent's own credentials (its NATS URL or creds path, cloud keys of its
service account, ...) stay with the agent.

Inherited, when the agent has them: PATH (a standard one when the agent has none), HOME,
USER, LOGNAME, SHELL, LANG, LANGUAGE, every LC_* variable, TZ and TMPDIR; plus the names an
operator adds with `--pass-env NAME` (proxies, say). TERM is always `xterm` (a PTY).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR")
INHERITED_PREFIXES = ("LC_",)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TERM = "xterm"


def inherited(own: Mapping[str, str], pass_env: Iterable[str] = ()) -> dict[str, str]:
    """What a job inherits of the agent's environment `own`."""
    names = {*INHERITED, *pass_env}
    env = {k: v for k, v in own.items() if k in names or k.startswith(INHERITED_PREFIXES)}
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def job_environment(
    own: Mapping[str, str], nexus: Mapping[str, str], job: Mapping[str, str], pass_env: Iterable[str] = ()
) -> dict[str, str]:
    """The whole environment of a job: inherited, then Nexus's variables and TERM, then the job's own."""
    return {**inherited(own, pass_env), "TERM": TERM, **nexus, **job}
