"""Containers pack: Docker, Podman and nerdctl prunes and removals, Compose teardown.

Critical: `system prune` (any form: it removes stopped containers, unused networks and images,
and with `--volumes` data), `volume prune`, `volume rm`, `compose down -v/--volumes` and
`compose rm -v`, `system reset`. Warning: `image/container/network/builder prune`, `rm -f`, `rmi -f`,
`compose down --rmi all`, `swarm leave --force`, `stack rm`, `service rm`, `kill $(docker ps -q)`.
Safe: `system df`, `compose down` alone (containers are rebuilt from the file), `--help`.
Commands run inside a container (`docker exec`) are unwrapped and checked as themselves.
`run`/`create` with a host directory bind-mounted read-write: the host's `/` or a system
directory (/etc, /usr, /boot, /root, /var, /etc/cron.d, ...) or the engines' state (/var/lib/docker,
/var/lib/containerd, /var/lib/kubelet, ...) critical
(`docker run -v /:/host alpine rm -rf /host` deletes the host's files), however the options are
spelled (global options first, `-itv`, `--mount Type=Bind,...`, `//`, `..`, `~`); the engine's
socket (read-only or not) and `--privileged` warning. Read-only mounts (`:ro`, `readonly`),
podman's overlays (`:O`), named volumes and application directories are safe.
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
    Rule("containers.kill-all", _DOCKER, ("kill", "**", "$(*"), "warning", "kills every container a listing names, without a clean stop", unless=_HELP, suggestion="Stop them cleanly instead: docker stop $(docker ps -q)"),
    Rule("containers.swarm-leave", _DOCKER, ("swarm", "leave"), "warning", "takes the node out of the swarm", flags=("-f", "--force")),
    Rule("containers.stack-rm", _DOCKER, ("stack|service|secret|config|network", "rm|remove"), "warning", "removes a running stack, service or secret", unless=_HELP),
    Rule("containers.down-v", _COMPOSE, ("down|rm",), "critical", "removes the project's volumes with their data", flags=("-v", "--volumes"), unless=_HELP, suggestion="Run 'docker-compose down' without -v to keep the volumes"),
    Rule("containers.down-rmi", _COMPOSE, ("down",), "warning", "removes the project's images", flags=("--rmi",)),
    Rule("containers.compose-rm", _COMPOSE, ("rm",), "warning", "removes the project's containers without asking", flags=("-f", "--force")),
)
# fmt: on

# Global options before the verb (`docker --context prod run ...`) that take a value.
_GLOBAL_VALUES = frozenset(
    ["-H", "--host", "-c", "--context", "--config", "-l", "--log-level", "--tlscacert", "--tlscert", "--tlskey", "--url", "--connection", "--identity", "--root", "--runroot", "--storage-driver", "--storage-opt", "--cgroup-manager", "--events-backend", "--network-cmd-path", "--runtime", "--tmpdir", "--volumepath", "--module", "--namespace", "-n", "--address", "-a", "--data-root", "--cni-path", "--snapshotter"]
)
# `run`/`create` options that take a value (docker's and podman's); the image is the first word after the options.
_RUN_VALUES = frozenset(
    ["-v", "--volume", "--mount", "-e", "--env", "--env-file", "-w", "--workdir", "-u", "--user", "--name", "--network", "--net", "-p", "--publish", "--entrypoint", "-l", "--label", "--label-file", "-h", "--hostname", "--add-host", "--annotation", "-a", "--attach", "--blkio-weight", "--blkio-weight-device", "--cap-add", "--cap-drop", "--cgroup-parent", "--cgroupns", "--cgroup-conf", "--cgroups", "--cidfile", "--cpu-count", "--cpu-percent", "--cpu-period", "--cpu-quota", "--cpu-rt-period", "--cpu-rt-runtime", "-c", "--cpu-shares", "--cpus", "--cpuset-cpus", "--cpuset-mems", "--device", "--device-cgroup-rule", "--device-read-bps", "--device-read-iops", "--device-write-bps", "--device-write-iops", "--dns", "--dns-option", "--dns-search", "--domainname", "--expose", "--gpus", "--group-add", "--health-cmd", "--health-interval", "--health-retries", "--health-start-interval", "--health-start-period", "--health-timeout", "--ip", "--ip6", "--ipc", "--isolation", "--kernel-memory", "--link", "--link-local-ip", "--log-driver", "--log-opt", "--mac-address", "-m", "--memory", "--memory-reservation", "--memory-swap", "--memory-swappiness", "--network-alias", "--oom-score-adj", "--pid", "--pids-limit", "--platform", "--pull", "--restart", "--runtime", "--security-opt", "--shm-size", "--stop-signal", "--stop-timeout", "--storage-opt", "--sysctl", "--tmpfs", "--ulimit", "--userns", "--uts", "--volume-driver", "--volumes-from", "--detach-keys", "--arch", "--authfile", "--chrootdirs", "--conmon-pidfile", "--decryption-key", "--env-merge", "--gidmap", "--hooks-dir", "--init-path", "--os", "--passwd-entry", "--personality", "--pod", "--pod-id-file", "--preserve-fds", "--requires", "--sdnotify", "--seccomp-policy", "--secret", "--subgidname", "--subuidname", "--systemd", "--timeout", "--tz", "--uidmap", "--umask", "--unsetenv", "--variant", "--rdt-class", "--pidfile", "--label-file"]
)
# Single-letter options that take a value (`-itv /:/h`: the last of a cluster takes it).
_SHORT_VALUES = frozenset("vewuplhmca")
# Host paths whose read-write mount hands the container the host itself (or its next boot), and the
# state of the container engines and the kubelet. A service's own data directory
# (`-v /var/lib/mysql:/var/lib/mysql`) is how databases run in containers: not here.
_HOST_SYSTEM = frozenset(
    ["/", "/etc", "/usr", "/boot", "/root", "/var", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/home", "/srv", "/opt", "/dev", "/sys", "/proc", "/var/lib", "/usr/local", "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib64", "/usr/libexec", "/usr/local/bin", "/usr/local/sbin", "/etc/cron.d", "/etc/sudoers.d", "/etc/systemd", "/etc/systemd/system", "/etc/ssh", "/etc/pam.d", "/etc/init.d", "/etc/profile.d", "/etc/ld.so.conf.d", "/etc/passwd", "/etc/shadow", "/etc/sudoers", "/etc/group", "/etc/crontab", "/etc/fstab", "/root/.ssh", "/var/spool/cron", "/var/lib/docker", "/var/lib/containerd", "/var/lib/containers", "/var/lib/kubelet", "/var/lib/etcd", "/etc/kubernetes"]
)
_SOCKET_DIRS = frozenset({"/run", "/var/run", "/run/containerd", "/run/podman"})
_SOCKETS = frozenset({"/var/run/docker.sock", "/run/docker.sock", "/run/podman/podman.sock", "/run/containerd/containerd.sock"})
_HOME = "/root"  # `~` and $HOME in a job's command: the agent runs as root on the machines that matter


def _host_path(source: str, cwd: str | None) -> str | None:
    """The host path a bind mount's source names, normalised (`//` and `..` resolved), or None
    for a named volume. A relative source is taken from the job's working directory when known,
    else from the deepest place it could climb out of (`../../..` may well be /)."""
    for home in ("~", "$HOME", "${HOME}"):
        if source == home or source.startswith(home + "/"):
            source = _HOME + source[len(home) :]
            break
    if not source.startswith(("/", ".")):
        return None
    if not source.startswith("/"):
        base = cwd if cwd and cwd.startswith("/") else "/"
        source = posixpath.join(base, source)
    return posixpath.normpath("/" + source.lstrip("/"))


def _options(args: list[str], values: frozenset[str]) -> tuple[list[tuple[str, str | None]], int]:
    """The leading options of `args` as (name, value) pairs, and where the first other word is."""
    found: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--" or not a.startswith("-") or a == "-":
            return found, i + (a == "--")
        if a.startswith("--") or len(a) == 2:
            name, eq, inline = a.partition("=")
            if eq:
                found.append((name, inline))
            elif name in values:
                found.append((name, args[i + 1] if i + 1 < len(args) else None))
                i += 1
            else:
                found.append((name, None))
        else:  # a cluster of single letters: `-itv /:/h`, `-tv/:/h`, `-v/:/h`
            for k, letter in enumerate(a[1:], start=2):
                if letter in _SHORT_VALUES:
                    rest = a[k:]
                    if rest:
                        found.append((f"-{letter}", rest.removeprefix("=")))
                    else:
                        found.append((f"-{letter}", args[i + 1] if i + 1 < len(args) else None))
                        i += 1
                    break
                found.append((f"-{letter}", None))
        i += 1
    return found, i


def _mounts(options: list[tuple[str, str | None]], cwd: str | None) -> list[tuple[str, str, bool]]:
    """(host path, as written, read-only) of each bind mount among `run`/`create` options."""
    found: list[tuple[str, str, bool]] = []
    for name, value in options:
        if value is None:
            continue
        if name in ("-v", "--volume"):
            source, _, rest = value.partition(":")
            flags = rest.partition(":")[2].split(",")
            host = _host_path(source, cwd)
            if host is not None and rest:
                # `ro`: read-only; podman's `O`: an overlay, writes never reach the host.
                found.append((host, source, "ro" in flags or "O" in flags))
        elif name == "--mount":
            fields = {k.strip().lower(): v.strip() for k, _, v in (f.partition("=") for f in value.split(","))}
            source = fields.get("source") or fields.get("src") or ""
            host = _host_path(source, cwd)
            read_only = any(k in fields and fields[k].lower() not in ("false", "0") for k in ("readonly", "ro"))
            if fields.get("type", "volume").lower() == "bind" and host is not None:
                found.append((host, source, read_only))
    return found


def mount_risks(inv: Invocation) -> list[Risk] | None:
    """`docker run/create` with the host's own directories mounted read-write (None: not such a command)."""
    _, at = _options(inv.args, _GLOBAL_VALUES)
    rest = inv.args[at:]
    verbs = rest[:2] if rest[:1] == ["container"] else rest[:1]
    if not verbs or verbs[-1] not in ("run", "create"):
        return None
    options, _ = _options(rest[len(verbs) :], _RUN_VALUES)
    what = f"Command '{inv.name} {verbs[-1]}'"
    risks: list[Risk] = []
    for host, source, read_only in _mounts(options, inv.cwd):
        if host in _SOCKETS or host in _SOCKET_DIRS:  # read-only or not: the API is the host's root
            risks.append(Risk("privileged_container", "warning", f"{what} gives the container the engine's socket ({source}): it can start containers with the host's root"))
        elif host in _HOST_SYSTEM and not read_only:
            where = "root filesystem" if host == "/" else host
            risks.append(
                Risk(
                    "destructive_command",
                    "critical",
                    f"{what} mounts the host's {where} read-write: what the container runs can change or delete the host's files - requires approval",
                    (f"Mount it read-only ('-v {source}:/host:ro') or mount only the directory the container needs",),
                )
            )
    if any(name == "--privileged" and value in (None, "true") for name, value in options):
        risks.append(Risk("privileged_container", "warning", f"Command '{inv.name} {verbs[-1]} --privileged' gives the container every capability and the host's devices"))
    return risks or None


PACK = Pack(
    name="containers",
    summary="docker/podman/nerdctl prune, volume rm, rm -f, compose down -v; run with the host's / or system directories mounted read-write",
    rules=RULES,
    handlers={name: mount_risks for name in ("docker", "podman", "nerdctl", "finch")},
)
