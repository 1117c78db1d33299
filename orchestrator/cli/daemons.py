"""Long-running verbs: up (everything, embedded), orchestrator, agent, api."""

import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer

from bus.urls import redact_url
from orchestrator.cli.common import (
    DATA_DIR,
    DEFAULT_NATS,
    UP_URL_FILE,
    CredsOpt,
    NatsOpt,
    creds_file,
    err,
    fail,
    parse_duration,
    parse_pairs,
    run_long,
)

if TYPE_CHECKING:  # the services (and the bus, the policy) are imported when a daemon starts: short CLI verbs stay fast
    import asyncio

    from agent.service import Agent
    from bus.port import StreamLimits
    from orchestrator.api.server import ApiListener
    from orchestrator.core.policy import Policy
    from orchestrator.embedded import EmbeddedNats
    from orchestrator.service import Orchestrator
    from schemas.secrets import Redaction


def _log() -> Any:
    import structlog

    return structlog.get_logger("nexus")


LogLevel = Literal["debug", "info", "warning", "error"]
LogOpt = Annotated[LogLevel, typer.Option("--log-level", help="How much to log.")]
LogJsonOpt = Annotated[bool, typer.Option("--log-json", help="Log JSON lines instead of console text.")]
PolicyOpt = Annotated[Path | None, typer.Option("--policy", help="Policy file (YAML): users, roles, deny/allow rules, production labels.")]
TtlOpt = Annotated[float, typer.Option("--node-ttl", help="Seconds without heartbeat before a node is lost.", min=1)]
GraceOpt = Annotated[
    str,
    typer.Option(
        "--offline-grace",
        help="How long jobs that need a node not heard from wait for it to come back (e.g. 5m, 1h), counted from its "
        "last heartbeat; then they are rejected (node_offline).",
    ),
]
AuthOpt = Annotated[
    Path | None,
    typer.Option("--auth", help="API token file (TOML [[token]]: user, role, sha256 or token). Without it: open, loopback only."),
]


# After a stop request, tasks get this long to end (the API's graceful shutdown is 5 s)
# before they are cancelled again, and this long in all before the process gives up on them.
STOP_GRACE_S = 6.0
STOP_DEADLINE_S = 20.0
EXIT_STUCK = 70


async def _until_signal(*tasks: "asyncio.Task[None]") -> None:
    """Run tasks until SIGINT/SIGTERM or until one of them fails; then stop them all."""
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        stop.clear()  # from here on, another signal means: hurry
        try:
            await _stop_all([*tasks, waiter], hurry=stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


async def _stop_all(tasks: "list[asyncio.Task[Any]]", hurry: "asyncio.Event") -> None:
    """Cancel the tasks and wait for them, cancelling again those still running after a
    grace (at once after another signal): on Python 3.11 a cancellation can be swallowed
    (nats-py's `wait_for`), and a task that never saw it would keep the process waiting forever."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + STOP_DEADLINE_S
    grace = STOP_GRACE_S
    pending = {t for t in tasks if not t.done()}
    while pending:
        left = deadline - loop.time()
        if left <= 0:
            names = ", ".join(sorted(t.get_name() for t in pending))
            _log().error("nexus.stop_stuck", tasks=names, after_s=STOP_DEADLINE_S)
            err.print(f"nexus: error: could not stop within {STOP_DEADLINE_S:g}s ({names}); exiting anyway", highlight=False)
            os._exit(EXIT_STUCK)  # asyncio.run would wait for these tasks forever
        for task in pending:
            task.cancel()
        all_done = asyncio.ensure_future(asyncio.wait(pending))
        hurried = asyncio.ensure_future(hurry.wait())
        await asyncio.wait([all_done, hurried], timeout=min(grace, left), return_when=asyncio.FIRST_COMPLETED)
        for waiter in (all_done, hurried):
            waiter.cancel()
        hurry.clear()
        grace = 1.0
        pending = {t for t in pending if not t.done()}
    for task in tasks:  # the first failure was raised already; the others only logged
        if not task.cancelled() and (exc := task.exception()) is not None:
            _log().debug("nexus.task_failed", task=task.get_name(), error=repr(exc))


def _default_node() -> str:
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())[:64]
    return name or "local"


RedactedVarsOpt = Annotated[
    str | None,
    typer.Option(
        "--redacted-vars",
        envvar="NEXUS_REDACTED_VARS",
        help="More env names whose values are secret, comma-separated globs (besides *_PASSWORD, *_TOKEN, *_SECRET, ...).",
    ),
]


def _redaction(extra: str | None) -> "Redaction":
    from schemas.secrets import DEFAULT_REDACTED_VARS, Redaction, parse_patterns

    return Redaction(patterns=(*DEFAULT_REDACTED_VARS, *parse_patterns(extra or "")))


@dataclass(frozen=True)
class LocalAgent:
    node_id: str
    labels: dict[str, str]
    max_jobs: int


@dataclass(frozen=True)
class Liveness:
    """When a silent node is lost (its running jobs with it), and when jobs stop waiting for it."""

    node_ttl_s: float
    offline_grace_s: float


ApiSpec = tuple[str, int, Path | None]  # host, port, token file


def up(
    nats_url: Annotated[
        str | None,
        typer.Option("--nats", envvar="NEXUS_NATS_URL", help="Use this NATS server instead of starting the embedded one."),
    ] = None,
    creds: Annotated[
        Path | None,
        typer.Option("--creds", envvar="NEXUS_NATS_CREDS", help="With --nats: the credentials every local service connects with."),
    ] = None,
    data: Annotated[Path, typer.Option("--data", help="Where the embedded server, its keys (creds/) and the DuckDB file live.")] = DATA_DIR,
    port: Annotated[int, typer.Option("--port", help="Port of the embedded nats-server (-1: a free one).", min=-1, max=65535)] = 4222,
    node: Annotated[str | None, typer.Option("--node", help="Node id of the local agent (default: host name).")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="Label KEY=VALUE of the local agent; repeatable.")] = None,
    max_jobs: Annotated[int, typer.Option("--max-jobs", help="Concurrent jobs on the local agent.", min=1)] = 4,
    node_ttl: TtlOpt = 10.0,
    offline_grace: GraceOpt = "5m",
    policy: PolicyOpt = None,
    api_host: Annotated[str, typer.Option("--api-host", help="Address of the HTTP API (without --auth: loopback only).")] = "127.0.0.1",
    api_port: Annotated[int, typer.Option("--api-port", help="Port of the HTTP API (0: a free one).", min=0, max=65535)] = 8080,
    auth: AuthOpt = None,
    no_api: Annotated[bool, typer.Option("--no-api", help="Do not serve the HTTP API.")] = False,
    redacted_vars: RedactedVarsOpt = None,
    log_level: LogOpt = "info",
    log_json: LogJsonOpt = False,
) -> None:
    """Run everything locally: nats-server (JetStream, under ./.nexus/), orchestrator, HTTP API and one agent.

    The embedded server requires authentication: on first start Nexus creates its
    keys and credentials in ./.nexus/creds/ (admin.creds and submitter.creds for you;
    more with `nexus creds new`) and reuses them after.

    Ctrl-C or SIGTERM stops all. Exits 1 at once, starting nothing, when the API
    cannot listen (port taken, bad --auth file).
    """
    from agent import logs
    from orchestrator.config import load_policy
    from schemas import subjects

    logs.configure(log_level, json=log_json)
    local = LocalAgent(subjects.check_id(node or _default_node(), "node id"), parse_pairs(label, "--label"), max_jobs)
    api = None if no_api else (api_host, api_port, auth)
    liveness = Liveness(node_ttl, parse_duration(offline_grace, "--offline-grace"))
    _up(nats_url, creds, data, port, local, liveness, load_policy(policy), api, redaction=_redaction(redacted_vars))


@run_long
async def _up(
    nats_url: str | None,
    creds: Path | None,
    data: Path,
    port: int,
    local: LocalAgent,
    liveness: Liveness,
    policy: "Policy",
    api: ApiSpec | None,
    *,
    redaction: "Redaction",
) -> None:
    from orchestrator.embedded import EmbeddedNats

    # What can fail at once fails first, before any child process exists.
    data.mkdir(parents=True, exist_ok=True)
    # Its credentials, the JetStream store and the DuckDB file (every command, every finding):
    # for this user only, as `creds/` always was (a directory made by an older `nexus up` was 0755).
    data.chmod(0o700)
    held = _hold(data)  # noqa: F841 - the lock lasts as long as the file is open
    listener = _listen(api) if api is not None else None
    server: EmbeddedNats | None = None
    try:
        if nats_url is None:
            identities = _embedded_identities(data / "creds", local.node_id)
            server = EmbeddedNats(data / "jetstream", port=port, log_file=data / "nats-server.log", auth=identities.server_config)
            nats_url = await server.start()
            _log().info("nats.started", url=redact_url(nats_url), store=str(data / "jetstream"), creds=str(data / "creds"))
            (data / UP_URL_FILE).write_text(nats_url + "\n", encoding="utf-8")  # for the verbs run here (common.NatsOpt)
        else:
            given = creds_file(creds)
            identities = Identities(given, given, given, given, None, "")
        await _run_services(nats_url, identities, data, local, liveness, policy, listener, redaction=redaction, server=server)
    finally:
        if listener is not None:
            listener.close()
        if server is not None:
            (data / UP_URL_FILE).unlink(missing_ok=True)
            await server.stop()
        _log().info("nexus.stopped")


def _hold(data: Path) -> IO[str]:
    """Take the data directory for this `nexus up`, or stop here: a second one would start a
    second nats-server on the same JetStream store (the log) before anything else noticed."""
    import fcntl

    path = data / "up.lock"
    fh = open(path, "a+")  # noqa: SIM115 - held open (locked) for the process's life
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        pid = fh.read().strip() or "?"
        fh.close()
        fail(f"another `nexus up` runs on {data} (pid {pid}); stop it first, or give this one its own --data. Nothing was started")
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


@dataclass(frozen=True)
class Identities:
    """Which credentials each local service connects with (None: no credentials)."""

    orchestrator: Path | None
    api: Path | None
    agent: Path | None
    admin: Path | None
    submitter: Path | None
    server_config: str


def _embedded_identities(directory: Path, node_id: str) -> Identities:
    """The embedded server's keys and its services' credentials: created once, then reused."""
    from orchestrator.trust.keyring import Keyring

    keyring = Keyring(directory)
    keyring.ensure()
    return Identities(
        orchestrator=keyring.ensure_creds("admin", "orchestrator", service=True),
        api=keyring.ensure_creds("admin", "api", service=True),
        agent=keyring.ensure_creds("agent", f"agent-{node_id}", node_id),
        admin=keyring.ensure_creds("admin", "admin"),
        submitter=keyring.ensure_creds("submitter", "submitter"),
        server_config=keyring.server_config(),
    )


def _listen(api: ApiSpec) -> "ApiListener":
    from orchestrator.api.errors import ApiError
    from orchestrator.api.server import listen

    host, port, auth = api
    try:
        return listen(host, port, auth)
    except ApiError as exc:
        fail(f"the HTTP API cannot start: {exc}. Nothing was started (see --api-port, --api-host, --auth, --no-api)")


async def _run_services(
    nats_url: str,
    ids: Identities,
    data: Path,
    local: LocalAgent,
    liveness: Liveness,
    policy: "Policy",
    listener: "ApiListener | None",
    *,
    redaction: "Redaction",
    server: "EmbeddedNats | None" = None,
) -> None:
    import asyncio

    from agent.main import SEALING_KEY_FILE
    from agent.service import Agent
    from bus.nats_bus import NatsBus
    from bus.sealing import SealingKey
    from orchestrator.api.server import serve_on
    from orchestrator.client import NexusClient
    from orchestrator.service import Orchestrator
    from orchestrator.store import DuckDBStore

    store = DuckDBStore(data / "nexus.duckdb")
    buses: list[NatsBus] = []
    try:
        names = [("nexus-orchestrator", ids.orchestrator), (f"nexus-agent-{local.node_id}", ids.agent)]
        names += [("nexus-api", ids.api)] if listener is not None else []
        for name, creds in names:
            buses.append(await NatsBus.connect(nats_url, name=name, daemon=True, creds=creds))
        orch = Orchestrator(  # its key: <data>/sealing.key
            buses[0], store, node_ttl_s=liveness.node_ttl_s, offline_grace_s=liveness.offline_grace_s, policy=policy, redaction=redaction
        )
        agent_key = SealingKey.load_or_create(data / "agents" / local.node_id / SEALING_KEY_FILE)
        agent_dir = data / "agents" / local.node_id
        agent = Agent(buses[1], local.node_id, labels=local.labels, max_jobs=local.max_jobs, sealing_key=agent_key, state_dir=agent_dir)
        tasks = [asyncio.create_task(orch.run(), name="orchestrator"), asyncio.create_task(agent.run(), name="agent")]
        if server is not None:  # the embedded server started again if it dies; `nexus up` exits if it cannot
            tasks.append(asyncio.create_task(server.supervise(_server_event), name="nats-server"))
        banner = f"nexus is up: NATS {redact_url(nats_url)}, state {data / 'nexus.duckdb'}, agent {local.node_id!r}."
        if listener is not None:
            serving = serve_on(NexusClient(buses[2]), listener, policy=policy, node_ttl_s=liveness.node_ttl_s)
            tasks.append(asyncio.create_task(serving, name="api"))
            banner += f" API {listener.url}" + (" (open: no --auth file, so loopback only)." if listener.tokens is None else ".")
        if ids.admin is not None and ids.submitter is not None:
            banner += f" Credentials: {ids.admin} (admin; the CLI's default here), {ids.submitter} (submit and read)."
        ready = asyncio.create_task(_announce(orch, agent, banner), name="announce")
        await _until_signal(*tasks, ready)
    finally:
        for bus in reversed(buses):
            await bus.close()
        store.close()


def _server_event(name: str, fields: dict[str, object]) -> None:
    """What `EmbeddedNats.supervise` says: its server died (an error), or is back (a warning)."""
    if name == "nats.restarted":
        _log().warning(name, **fields)
    else:
        _log().error(name, **fields)


async def _announce(orch: "Orchestrator", agent: "Agent", message: str) -> None:
    """Say "up" once a job submitted now would be placed on the local agent."""
    import asyncio

    await orch.caught_up.wait()
    await orch.fleet_known.wait()
    await agent.ready.wait()
    while agent.node_id not in orch.nodes:
        await asyncio.sleep(0.05)
    err.print(f"{message} Ctrl-C stops.", highlight=False)
    await asyncio.Event().wait()


def orchestrator(
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
    db: Annotated[Path, typer.Option("--db", help="The orchestrator's DuckDB file (it is the only writer).")] = DATA_DIR / "nexus.duckdb",
    node_ttl: TtlOpt = 10.0,
    offline_grace: GraceOpt = "5m",
    policy: PolicyOpt = None,
    replicas: Annotated[
        int | None, typer.Option("--replicas", help="Stream replicas (3 in a 3-node cluster); default: keep what the streams have.", min=1)
    ] = None,
    output_max_age: Annotated[str, typer.Option("--output-max-age", help="Keep job output this long (e.g. 7d, 12h).")] = "7d",
    output_max_gb: Annotated[float, typer.Option("--output-max-gb", help="Keep at most this much job output (GiB).", min=0.001)] = 8.0,
    consumer_idle: Annotated[
        str,
        typer.Option(
            "--consumer-idle",
            help="Remove readers' consumers unused this long (e.g. 1h, 30m).",
        ),
    ] = "1h",
    redacted_vars: RedactedVarsOpt = None,
    log_level: LogOpt = "info",
    log_json: LogJsonOpt = False,
) -> None:
    """Run the orchestrator: reduce the log into DuckDB and make decisions."""
    from agent import logs
    from bus.port import StreamLimits
    from orchestrator.config import load_policy

    logs.configure(log_level, json=log_json)
    limits = StreamLimits(
        replicas=replicas,
        output_max_age_s=parse_duration(output_max_age, "--output-max-age"),
        output_max_bytes=int(output_max_gb * 1024**3),
        consumer_idle_s=parse_duration(consumer_idle, "--consumer-idle"),
    )
    liveness = Liveness(node_ttl, parse_duration(offline_grace, "--offline-grace"))
    _orchestrator(nats_url, creds_file(creds), db, liveness, load_policy(policy), limits, _redaction(redacted_vars))


@run_long
async def _orchestrator(
    nats_url: str, creds: Path | None, db: Path, liveness: Liveness, policy: "Policy", limits: "StreamLimits", redaction: "Redaction"
) -> None:
    import asyncio

    from bus.nats_bus import NatsBus
    from orchestrator.service import Orchestrator
    from orchestrator.store import DuckDBStore

    db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # made here: for this user only
    store = DuckDBStore(db)
    bus = await NatsBus.connect(nats_url, name="nexus-orchestrator", daemon=True, creds=creds)
    try:
        # Its sealing key is sealing.key beside the DuckDB file (created on first start).
        orch = Orchestrator(
            bus,
            store,
            node_ttl_s=liveness.node_ttl_s,
            offline_grace_s=liveness.offline_grace_s,
            policy=policy,
            limits=limits,
            redaction=redaction,
        )
        await _until_signal(asyncio.create_task(orch.run()))
    finally:
        await bus.close()
        store.close()


def agent(
    node: Annotated[str, typer.Option("--node", help="This node's id ([A-Za-z0-9_-], at most 64).", show_default=False)],
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="Label KEY=VALUE (e.g. env=prod); repeatable.")] = None,
    max_jobs: Annotated[int, typer.Option("--max-jobs", help="Jobs this node runs at once.", min=1)] = 4,
    tool: Annotated[list[str] | None, typer.Option("--tool", help="Extra tool name to look for on PATH; repeatable.")] = None,
    heartbeat: Annotated[float, typer.Option("--heartbeat", help="Seconds between heartbeats.", min=0.1)] = 2.0,
    kill_grace: Annotated[
        float, typer.Option("--kill-grace", help="Seconds between SIGTERM and SIGKILL on timeout or cancel.", min=0)
    ] = 5.0,
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir", envvar="NEXUS_AGENT_STATE_DIR", help="Where the agent keeps its sealing key (default: ./.nexus/agents/NODE)."
        ),
    ] = None,
    pass_env: Annotated[
        list[str] | None,
        typer.Option("--pass-env", help="Also give jobs this variable of the agent's environment (besides PATH, HOME, ...); repeatable."),
    ] = None,
    output_max_mb: Annotated[
        float,
        typer.Option(
            "--output-max-mb",
            help="Output kept of each job, in MiB (0: no limit). Past it the job runs on, its output is read and dropped, "
            "and its `exited` event says how much (output_dropped).",
            min=0,
        ),
    ] = 1024.0,  # schemas.limits.JOB_OUTPUT_MAX_BYTES, in MiB (not imported: `nexus --help` stays light)
    log_level: LogOpt = "info",
    log_json: LogJsonOpt = False,
) -> None:
    """Run a node agent: take this node's dispatches and run them in a PTY.

    Give it an agent identity for this node (`nexus creds new --role agent --node ID`)."""
    from schemas import subjects

    subjects.check_id(node, "node id")
    labels = parse_pairs(label, "--label")
    args = ["--node", node, "--max-jobs", str(max_jobs), "--heartbeat", repr(heartbeat), "--kill-grace", repr(kill_grace)]
    args += ["--output-max-mb", repr(output_max_mb), "--log-level", log_level]
    args += [a for key, value in labels.items() for a in ("--label", f"{key}={value}")]
    args += [a for name in tool or () for a in ("--tool", name)]
    args += [a for name in pass_env or () for a in ("--pass-env", name)]
    args += ["--state-dir", str(state_dir)] if state_dir is not None else []
    args += ["--log-json"] if log_json else []
    _become_agent_program(args, nats_url, creds_file(creds))


def _become_agent_program(args: list[str], nats_url: str, creds: Path | None) -> NoReturn:
    """Run the agent-only program (`nexus-agent`, agent/main.py: the same agent) in this process's
    place, with the same pid: without the CLI's own modules (typer, click), ~2 MiB less of each
    node's memory (docs/benchmarks.md). The URL and the credentials go in its environment, not on
    its command line, which `ps` shows to everyone."""
    import sys

    env = {**os.environ, "NEXUS_NATS_URL": nats_url}
    if creds is not None:
        env["NEXUS_NATS_CREDS"] = str(creds)
    else:
        env.pop("NEXUS_NATS_CREDS", None)
    sys.stdout.flush()
    sys.stderr.flush()
    program = Path(sys.executable).parent / "nexus-agent"  # the console script installed beside `nexus`
    if program.is_file():
        os.execve(program, [str(program), *args], env)
    os.execve(sys.executable, [sys.executable, "-m", "agent.main", *args], env)


def api(
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (without --auth: loopback only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.", min=0, max=65535)] = 8080,
    auth: AuthOpt = None,
    policy: PolicyOpt = None,
    node_ttl: TtlOpt = 10.0,
    log_level: LogOpt = "info",
    log_json: LogJsonOpt = False,
) -> None:
    """Serve the HTTP API (jobs, live SSE output, nodes, metrics) against a running orchestrator."""
    from agent import logs
    from orchestrator.config import load_policy

    logs.configure(log_level, json=log_json)
    _api(nats_url, creds_file(creds), host, port, auth, load_policy(policy), node_ttl)


@run_long
async def _api(nats_url: str, creds: Path | None, host: str, port: int, auth: Path | None, policy: "Policy", node_ttl: float) -> None:
    import asyncio

    from bus.nats_bus import NatsBus
    from orchestrator.api.server import serve
    from orchestrator.client import NexusClient

    bus = await NatsBus.connect(nats_url, name="nexus-api", daemon=True, creds=creds)
    me = bus.identity.author if bus.identity is not None else None
    if auth is not None and me is not None and not me.service:
        await bus.close()
        # Only an admin service identity may name the user it authenticated (docs/security.md).
        fail(
            f"--auth: the API connects as {me.name!r} ({me.role}), not an admin service identity, so the record would name "
            f"{me.name!r} for every token's user; give it credentials from `nexus creds new --role admin --service --name api`",
            2,
        )
    try:
        serving = serve(NexusClient(bus), host=host, port=port, auth_file=auth, policy=policy, node_ttl_s=node_ttl)
        await _until_signal(asyncio.create_task(serving))
    finally:
        await bus.close()
