"""Containers pack: Docker, Podman and nerdctl prunes and removals, Compose teardown.

Critical: `system prune` (any form: it removes stopped containers, unused networks and images,
and with `--volumes` data), `volume prune`, `volume rm`, `compose down -v/--volumes` and
`compose rm -v`, `system reset`. Warning: `image/container/network/builder prune`, `rm -f`, `rmi -f`,
`compose down --rmi all`, `swarm leave --force`, `stack rm`, `service rm`.
Safe: `system df`, `compose down` alone (containers are rebuilt from the file), `--help`.
Commands run inside a container (`docker exec`) are unwrapped and checked as themselves.
"""

# ruff: noqa: E501 - a pack keeps one rule per line, so it reads as a table

from __future__ import annotations

from orchestrator.core.risk.table import Pack, Rule, tool

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

PACK = Pack(
    name="containers",
    summary="docker/podman/nerdctl prune, volume rm, rm -f, compose down -v",
    rules=RULES,
)
