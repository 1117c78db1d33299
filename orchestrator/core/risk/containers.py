"""Containers pack: Docker, Podman and nerdctl prunes and removals, Compose teardown.

Critical: `system prune` (any form: it removes stopped containers, unused networks and images,
and with `--volumes` data), `volume prune`, `volume rm`, `compose down -v/--volumes` and
`compose rm -v`, `system reset`. Warning: `image/container/network/builder prune`, `rm -f`, `rmi -f`,
`compose down --rmi all`, `swarm leave --force`, `stack rm`, `service rm`.
Safe: `system df`, `compose down` alone (containers are rebuilt from the file), `--help`.
Commands run inside a container (`docker exec`) are unwrapped and checked as themselves.
`run`/`create` with a host directory bind-mounted read-write: the host's `/` or a system
directory (/etc, /usr, /boot, /root, /var, ...) or the engines' state (/var/lib/docker,
/var/lib/containerd, /var/lib/kubelet, ...) critical (`docker run -v /:/host alpine rm -rf
/host` deletes the host's files); the Docker socket and `--privileged` warning. Read-only
mounts (`:ro`, `readonly`) and named volumes are safe.
"""

# ruff: noqa: E501 - a pack keeps one rule per line, so it reads as a table

from __future__ import annotations

import posixpath

from orchestrator.core.risk.table import Pack, Rule, tool
from orchestrator.core.risk_types import Invocation, Risk

_DOCKER = tool(
    "docker",
    "podman",
    "nerdctl",
    "finch",
    values="-H --host --context -c --config -l --log-level --tlscacert --tlscert --tlskey -f --filter --format --project-name -p --file --env-file --profile --project-directory --timeout -t",
)
_COMPOSE = tool(
    "docker-compose",
    "podman-compose",
    values="-f --file -p --project-name --profile --env-file --project-directory -t --timeout --rmi",
)
_DF = "See what would be removed first: docker system df -v"
_BACKUP_VOLUME = 'Back up the volume first, e.g. docker run --rm -v VOLUME:/data -v "$PWD":/backup alpine tar -czf /backup/volume.tgz /data'
_HELP = ("--help", "-h")

# fmt: off
RULES: tuple[Rule, ...] = (
    Rule("containers.system-reset", _DOCKER, ("system", "reset"), "critical", "deletes every container, image, volume and network of the engine", unless=_HELP),
    Rule("containers.system-prune", _DOCKER, ("system", "prune"), "critical", "deletes stopped containers, unused images and networks (and volumes with --volumes)", unless=_HELP, suggestion=_DF),
    Rule("containers.volume-prune", _DOCKER, ("volume", "prune"), "critical", "deletes every volume no container uses, with its data", unless=_HELP, suggestion="List them first: docker volume ls -f dangling=true"),
    Rule("containers.volume-rm", _DOCKER, ("volume", "rm|remove"), "critical", "deletes a volume and its data", unless=_HELP, suggestion=_BACKUP_VOLUME),
    Rule("containers.compose-down-v", _DOCKER, ("compose", "down|rm"), "critical", "removes the project's volumes with their data", flags=("-v", "--volumes"), unless=_HELP, suggestion="Run 'docker compose down' without -v to keep the volumes"),
    Rule("containers.compose-down-rmi", _DOCKER, ("compose", "down"), "warning", "removes the project's images", flags=("--rmi",), unless=_HELP),
    Rule("containers.compose-rm-f", _DOCKER, ("compose", "rm"), "warning", "removes the project's containers without asking", flags=("-f", "--force"), unless=_HELP),
    Rule("containers.prune", _DOCKER, ("image|container|network|builder|buildx|pod", "prune"), "warning", "deletes unused objects", unless=_HELP, suggestion=_DF),
    Rule("containers.rm-force", _DOCKER, ("rm|rmi|container|image|pod", "**"), "warning", "force-removes containers or images (running ones included)", flags=("-f", "--force"), unless=_HELP),
    Rule("containers.swarm-leave", _DOCKER, ("swarm", "leave"), "warning", "takes the node out of the swarm", flags=("-f", "--force")),
    Rule("containers.stack-rm", _DOCKER, ("stack|service|secret|config|network", "rm|remove"), "warning", "removes a running stack, service or secret", unless=_HELP),
    Rule("containers.down-v", _COMPOSE, ("down|rm",), "critical", "removes the project's volumes with their data", flags=("-v", "--volumes"), unless=_HELP, suggestion="Run 'docker-compose down' without -v to keep the volumes"),
    Rule("containers.down-rmi", _COMPOSE, ("down",), "warning", "removes the project's images", flags=("--rmi",)),
    Rule("containers.compose-rm", _COMPOSE, ("rm",), "warning", "removes the project's containers without asking", flags=("-f", "--force")),
)
# fmt: on

# `run`/`create` options that take a value (the image is the first word after the options).
_RUN_VALUES = frozenset(
    ["-v", "--volume", "--mount", "-e", "--env", "--env-file", "-w", "--workdir", "-u", "--user", "--name", "--network", "--net", "-p", "--publish", "--entrypoint", "-l", "--label", "--label-file", "-h", "--hostname", "--add-host", "--dns", "--dns-search", "--dns-option", "--cpus", "-c", "--cpu-shares", "-m", "--memory", "--memory-swap", "--restart", "--log-driver", "--log-opt", "--pid", "--ipc", "--uts", "--userns", "--cap-add", "--cap-drop", "--device", "--security-opt", "--platform", "--pull", "--ulimit", "--tmpfs", "--shm-size", "--stop-signal", "--stop-timeout", "--runtime", "--cgroupns", "--cgroup-parent", "--health-cmd", "--health-interval", "--health-retries", "--health-timeout", "--expose", "--gpus", "--group-add", "--ip", "--ip6", "--link", "--mac-address", "--network-alias", "--volumes-from", "--cidfile", "--isolation", "--storage-opt", "--sysctl", "-a", "--attach"]
)
# Host directories whose read-write mount hands the container the host itself, and the state of
# the container engines and the kubelet (all their containers' and images' data). A service's own
# data directory (`-v /var/lib/mysql:/var/lib/mysql`) is how databases run in containers: not here.
_HOST_SYSTEM = frozenset(["/", "/etc", "/usr", "/boot", "/root", "/var", "/lib", "/lib64", "/bin", "/sbin", "/home", "/srv", "/opt", "/dev", "/sys", "/proc", "/var/lib", "/usr/local",
                          "/var/lib/docker", "/var/lib/containerd", "/var/lib/containers", "/var/lib/kubelet", "/var/lib/etcd"])
_DOCKER_SOCKETS = frozenset({"/var/run/docker.sock", "/run/docker.sock", "/run/podman/podman.sock"})


def _mounts(args: list[str]) -> tuple[list[tuple[str, bool]], bool]:
    """The host paths bind-mounted by `run`/`create` options (path, read-only), and `--privileged`;
    the options end at the image."""
    found: list[tuple[str, bool]] = []
    privileged = False
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("-") or a == "--":
            break
        name, eq, inline = a.partition("=")
        value = inline if eq else (args[i + 1] if name in _RUN_VALUES and i + 1 < len(args) else None)
        if name.startswith("-v") and name not in ("-v", "--volume") and not eq:  # `-v/src:/dst`
            name, value = "-v", a[2:]
        if name in ("-v", "--volume") and value:
            parts = value.split(":")
            if parts[0].startswith("/") and len(parts) >= 2:
                found.append((parts[0], len(parts) > 2 and "ro" in parts[2].split(",")))
        elif name == "--mount" and value:
            fields = dict(f.partition("=")[::2] for f in value.split(","))
            source = fields.get("source") or fields.get("src") or ""
            if fields.get("type", "volume") == "bind" and source.startswith("/"):
                found.append((source, "readonly" in fields or "ro" in fields or fields.get("readonly") == "true"))
        elif name == "--privileged" and inline in ("", "true"):
            privileged = True
        i += 2 if (name in _RUN_VALUES and not eq and not a.startswith("-v/")) else 1
    return found, privileged


def mount_risks(inv: Invocation) -> list[Risk] | None:
    """`docker run/create` with the host's own directories mounted read-write (None: not such a command)."""
    args = inv.args
    verbs = args[:2] if args[:1] == ["container"] else args[:1]
    if not verbs or verbs[-1] not in ("run", "create"):
        return None
    mounts, privileged = _mounts(args[len(verbs) :])
    risks: list[Risk] = []
    for source, read_only in mounts:
        host = posixpath.normpath(source)
        if read_only:
            continue
        if host in _HOST_SYSTEM:
            where = "root filesystem" if host == "/" else host
            risks.append(
                Risk(
                    "destructive_command",
                    "critical",
                    f"Command '{inv.name} {verbs[-1]}' mounts the host's {where} read-write: what the container runs can change or delete the host's files - requires approval",
                    (f"Mount it read-only ('-v {source}:/host:ro') or mount only the directory the container needs",),
                )
            )
        elif host in _DOCKER_SOCKETS:
            risks.append(Risk("privileged_container", "warning", f"Command '{inv.name} {verbs[-1]}' gives the container the engine's socket: it can start containers with the host's root"))
    if privileged:
        risks.append(Risk("privileged_container", "warning", f"Command '{inv.name} {verbs[-1]} --privileged' gives the container every capability and the host's devices"))
    return risks or None


PACK = Pack(
    name="containers",
    summary="docker/podman/nerdctl prune, volume rm, rm -f, compose down -v; run with the host's / mounted read-write",
    rules=RULES,
    handlers={name: mount_risks for name in ("docker", "podman", "nerdctl", "finch")},
)
