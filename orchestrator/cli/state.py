"""State verbs: sql, replay, nodes, schema."""

import functools
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.cli.common import (
    DEFAULT_NATS,
    CredsOpt,
    DbOpt,
    JsonOpt,
    NatsOpt,
    OfflineCredsOpt,
    connect,
    err,
    fail,
    fmt,
    out,
    parse_pairs,
    print_json,
    print_table,
    query,
    run_async,
    run_long,
    unused_creds,
)


def sql(
    statement: Annotated[str, typer.Argument(help='One SELECT, e.g. "SELECT status, count(*) FROM jobs GROUP BY 1".', show_default=False)],
    as_json: JsonOpt = False,
    db: DbOpt = None,
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
) -> None:
    """Run read-only SQL against the state (asks the running orchestrator; --db reads a file)."""
    _sql(statement, as_json, db, nats_url)


@run_async
async def _sql(statement: str, as_json: bool, db: Path | None, nats_url: str) -> None:
    rows = await query(nats_url, db, statement)
    if as_json:
        print_json(rows.dicts())
    else:
        print_table(rows)


def _parse_until(value: str | None) -> tuple[int | None, datetime | None]:
    if value is None:
        return None, None
    if value.isdigit():
        return int(value), None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--until takes a sequence number or an ISO time, got {value!r}", 2)
    return None, when if when.tzinfo else when.replace(tzinfo=UTC)


def replay(
    db: Annotated[Path, typer.Option("--db", help="New DuckDB file to build (must not exist unless --force).")],
    until: Annotated[str | None, typer.Option("--until", help="Stop after this stream sequence, or at this ISO time.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    as_json: JsonOpt = False,
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
) -> None:
    """Rebuild the state from the event log into a new DuckDB file (audit replay)."""
    _replay(db, until, force, as_json, nats_url)


@run_long
async def _replay(db: Path, until: str | None, force: bool, as_json: bool, nats_url: str) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from bus.identity import Verifier
    from orchestrator.projection import Projection
    from orchestrator.replay import replay as replay_log
    from orchestrator.store import DuckDBStore
    from schemas.secrets import Redaction

    until_seq, until_ts = _parse_until(until)
    if db.exists():
        if not force:
            fail(f"{db} exists; replay builds a new file (use --force to overwrite)")
        db.unlink()
        Path(f"{db}.wal").unlink(missing_ok=True)
    async with connect(nats_url) as client:
        end = await client.bus.last_seq()
        if until_seq is not None:
            end = min(end, until_seq)
        store = DuckDBStore(db)
        # The same verdicts on authorship as the live orchestrator: trust the account that issued our
        # credentials; rows kept masked are signed by them (an audit of the file trusts an admin's).
        identity = client.bus.identity
        # The orchestrator's redaction patterns (its --redacted-vars too), so that a secret it
        # keeps masked in its own file is masked in this one as well.
        key = await client.sealing_key()
        redaction = Redaction(patterns=tuple(key.redacted_vars)) if key is not None else Redaction()
        projection = Projection(store, verifier=Verifier.trusting_issuer_of(identity), identity=identity, redaction=redaction)
        try:
            columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn())
            with Progress(*columns, console=err.get(), transient=True, disable=as_json) as bar:
                task = bar.add_task("replay", total=end)
                done = functools.partial(bar.update, task)
                await replay_log(client.bus, projection, until_seq=end, until_ts=until_ts, progress=lambda seq: done(completed=seq))
            counts = store.query("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM jobs), (SELECT count(*) FROM nodes)")[1][0]
        finally:
            store.close()
    summary: dict[str, Any] = {
        "db": str(db), "last_seq": projection.applied_seq, "events": counts[0], "jobs": counts[1], "nodes": counts[2]
    }  # fmt: skip
    # Only an admin's signature on the file's end (and on its masked copies) is trusted by an audit
    # of the file: anyone else could have signed a file with rows removed from its end.
    signer = identity.author if identity is not None else None
    auditable = signer is not None and signer.role == "admin"
    summary["auditable"] = auditable
    if as_json:
        print_json(summary)
    else:
        err.print(
            f"replayed {summary['events']} events up to seq {summary['last_seq']} into {db}: "
            f"{summary['jobs']} jobs, {summary['nodes']} nodes",
            highlight=False,
        )
        if not auditable:
            who = f"the {signer.role} identity '{signer.name}'" if signer is not None else "no credentials"
            err.print(
                f"note: made with {who}, so `nexus audit verify --db {db}` will not accept this file (only an "
                "admin's signature on its end proves nothing was cut from it); audit the log itself with "
                "`nexus audit verify`, or have an admin make the replay",
                highlight=False,
            )


def nodes(
    optimal: Annotated[bool, typer.Option("--optimal", help="Only the node a job would get now, and why.")] = False,
    tool: Annotated[str | None, typer.Option("--tool", help="With --optimal: the tool the job needs (default: bash).")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="With --optimal: node selector KEY=VALUE.")] = None,
    prefer: Annotated[list[str] | None, typer.Option("--prefer", help="With --optimal: preferred labels KEY=VALUE.")] = None,
    as_json: JsonOpt = False,
    ttl: Annotated[float, typer.Option("--ttl", help="Seconds without heartbeat after which a node counts as offline.")] = 10.0,
    drain: Annotated[
        str | None,
        typer.Option("--drain", metavar="NODE", help="Take NODE out of placement: no new job goes there (running ones go on). Admin only."),
    ] = None,
    undrain: Annotated[str | None, typer.Option("--undrain", metavar="NODE", help="Let NODE take jobs again. Admin only.")] = None,
    reason: Annotated[str, typer.Option("--reason", help="With --drain: why, for the record.")] = "",
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
) -> None:
    """Registered nodes: tools, labels, load and liveness (registration from the log, liveness and
    load from their heartbeats; a node whose agent stopped stays listed, not live), as GET /api/v1/nodes.

    `--drain NODE` takes a node out of placement for maintenance (`node.drained` in the log; it
    shows as `drained`): it gets no new job, what it runs goes on, jobs asked for on it wait.
    `--undrain NODE` puts it back. A restart of its agent does not undrain it."""
    if reason and drain is None:
        fail("--reason goes with --drain", code=2)
    given = [flag for flag, on in (("--tool", tool is not None), ("--label", bool(label)), ("--prefer", bool(prefer))) if on]
    if given and not optimal:
        fail(f"{', '.join(given)} go{'es' if len(given) == 1 else ''} with --optimal (the node a job would get)", code=2)
    if drain is not None or undrain is not None:
        if drain is not None and undrain is not None:
            fail("give --drain or --undrain, not both", code=2)
        if optimal:
            fail("give --optimal or --drain/--undrain, not both", code=2)
        _drain(drain or undrain or "", drain is not None, reason, as_json, nats_url)
        return
    _nodes(optimal, tool or "bash", parse_pairs(label, "--label"), parse_pairs(prefer, "--prefer"), as_json, ttl, nats_url)


@run_async
async def _drain(node_id: str, draining: bool, reason: str, as_json: bool, nats_url: str) -> None:
    from orchestrator.app import nodes as nodes_app

    async with connect(nats_url) as client:
        seq = await nodes_app.drain(client, nodes_app.DrainNode(node_id=node_id, drain=draining, reason=reason), now=datetime.now(UTC))
    if as_json:
        print_json({"node_id": node_id, "drained": draining, "seq": seq})
    elif draining:
        told = f"node {node_id} drained: no new job goes there; what it runs goes on (`nexus nodes --undrain {node_id}`)"
        out.print(told, highlight=False)
    else:
        out.print(f"node {node_id} undrained: it takes jobs again", highlight=False)


@run_async
async def _nodes(
    optimal: bool, tool: str, labels: dict[str, str], prefer: dict[str, str], as_json: bool, ttl: float, nats_url: str
) -> None:
    import msgspec
    from rich.markup import escape

    from orchestrator.app import nodes as nodes_app
    from orchestrator.app.nodes import FindOptimalNode
    from orchestrator.client import Rows
    from orchestrator.errors import OrchestratorUnavailable

    now = datetime.now(UTC)
    async with connect(nats_url) as client:
        if optimal:
            choice = await nodes_app.optimal_node(client, FindOptimalNode(tool=tool, labels=labels, prefer=prefer), ttl_s=ttl, now=now)
        else:
            try:
                fleet = await nodes_app.fleet(client, ttl_s=ttl, now=now)
            except OrchestratorUnavailable as exc:  # which agents still beat is what one wants to know then
                err.print(f"{exc}: the nodes as their heartbeats say (status `unknown`: registration not known)", highlight=False)
                fleet = await nodes_app.heard(client, ttl_s=ttl, now=now)
    if optimal:
        node, why = choice.node, choice.reason
        if as_json:
            print_json({"node_id": node, "tool": tool, "reason": why, "candidates": choice.candidates})
        elif node is None:
            fail(why)
        else:
            out.print(f"{node}  [dim]{escape(fmt(why, one_line=True))}[/dim]", highlight=False)  # why: labels as nodes sent them
        return
    if as_json:
        print_json([msgspec.to_builtins(n) for n in fleet.values()])  # the fields of GET /api/v1/nodes, snake_case
        return
    if not fleet:
        err.print("no nodes have registered or sent a heartbeat (start one with `nexus agent --node ID`)", highlight=False)
        return
    rows = Rows(["node", "live", "status", "load", "labels", "last seen", "tools"], [])
    for n in fleet.values():
        # A node's clock a little ahead of ours is not "-0.0s ago".
        seen = f"{max(0.0, (now - n.last_seen).total_seconds()):.1f}s ago" if n.last_seen else "never"
        load = f"{n.active_jobs}/{n.max_jobs}"
        pairs = ",".join(f"{k}={v}" for k, v in n.labels.items())
        rows.rows.append([n.node_id, "yes" if n.live else "NO", n.status, load, pairs, seen, " ".join(n.tools)])
    print_table(rows, drop=("tools", "labels"))


def schema(
    as_json: Annotated[bool, typer.Option("--json", help="Accepted for uniformity: the schema is JSON either way.")] = False,
    creds: OfflineCredsOpt = None,
) -> None:
    """Print the JSON Schema of every event."""
    from schemas import export

    unused_creds(creds, "`nexus schema` prints this program's own schema")

    export.main()
