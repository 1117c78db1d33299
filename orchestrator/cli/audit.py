"""`nexus audit verify`: prove the log, or a DuckDB file made from it (DESIGN §9; docs/security.md)."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli.common import DEFAULT_NATS, CredsOpt, JsonOpt, NatsOpt, connect, creds_file, err, fail, out, print_json, run_long
from orchestrator.cli.terminal_text import printable

if TYPE_CHECKING:  # the audit machinery is imported when `verify` runs, not for `nexus --help`
    from orchestrator.core.audit import AuditReport

app = typer.Typer(
    help="Prove the record: the event log, or a DuckDB file made from it (see docs/security.md).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

SHOWN = 20  # rows of each list printed for people; --json has them all


@app.command("verify")
def verify(
    db: Annotated[
        Path | None,
        typer.Option("--db", help="Audit this DuckDB file offline (a replay or an export), read-only, instead of the log."),
    ] = None,
    account_key: Annotated[
        list[str] | None,
        typer.Option("--account-key", help="Trust identities issued by this account public key (A...); default: the account of --creds."),
    ] = None,
    as_json: JsonOpt = False,
    nats_url: NatsOpt = DEFAULT_NATS,
    creds: CredsOpt = None,
) -> None:
    """Check that every event that counted is authentic and that the sequence is complete and unaltered.

    Replays the log (or the file's `events` rows) through the reducer and the signature
    checks, recomputes the hash chain and matches every signed checkpoint. Rejected
    forgeries are listed, not an error. Exit 0 only when everything holds; 1 otherwise,
    naming each bad event by its seq.
    """
    from bus.identity import is_account_key

    for key in account_key or ():
        if not is_account_key(key):
            hint = "56 characters, A...: `nexus creds new --json` prints it as 'account'"
            fail(f"--account-key {key!r} is not an account's public key ({hint})", 2)
    _verify(db, list(account_key or ()), as_json, nats_url)


@run_long
async def _verify(db: Path | None, account_keys: list[str], as_json: bool, nats_url: str) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from orchestrator.audit import AuditError, count_file, trusted_account_of, verify_file, verify_log

    try:
        trusted = account_keys or [trusted_account_of(_creds_for_key(db))]
        columns = (TextColumn("verifying"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, console=err.get(), transient=True, disable=as_json) as bar:
            if db is not None:
                task = bar.add_task("verify", total=count_file(db) if db.is_file() else 0)
                report = verify_file(db, trusted, lambda seq: bar.update(task, completed=seq))
            else:
                async with connect(nats_url, name="nexus-audit") as client:
                    task = bar.add_task("verify", total=await client.bus.last_seq())
                    report = await verify_log(client.bus, trusted, lambda seq: bar.update(task, completed=seq))
    except AuditError as exc:
        fail(str(exc), 2)
    if as_json:
        print_json(report)
    else:
        _print(report)
    if not report.ok:
        raise typer.Exit(1)


def _creds_for_key(db: Path | None) -> Path:
    given = creds_file()
    if given is None:
        where = "the file's" if db is not None else "the log's"
        fail(f"which account's identities to trust? give --account-key A... (the account that signed {where} identities) or --creds", 2)
    return given


def _say(text: str) -> None:
    out.print(printable(text, one_line=True), highlight=False, markup=False)  # reasons quote the log


def _print(r: "AuditReport") -> None:
    span = f"seqs {r.first_seq}-{r.last_seq}" if r.events else "no events"
    _say(f"{r.source}: {r.events} events ({span})")
    _say(f"  trusted account:   {', '.join(r.trusted_accounts)} ({r.identities} identities announced)")
    _say(f"  counted:           {r.applied}: {r.authentic} authentic (signed, verified), {r.unsigned_allowed} unsigned where allowed")
    _say(f"  rejected:          {len(r.rejected)} (in the log, changed nothing; not an error)")
    _say(f"  checkpoints:       {r.checkpoints} signed, matching; covered up to seq {r.covered_upto}")
    if r.uncovered:
        _say(f"  not yet covered:   {r.uncovered} events after seq {r.covered_upto} (no checkpoint names them yet)")
    if r.copies:
        _say(f"  signed copies:     {len(r.copies)} rows keep their writer's signed copy, not the log's bytes (secrets masked)")
    if r.unverifiable:
        _say(f"  not provable here: {len(r.unverifiable)} events whose content this source cannot prove")
    for title, lines in (
        ("rejected", [f"seq {x.seq} {x.type}: {x.reason}" for x in r.rejected]),
        ("signed copies", [f"seq {x.seq} {x.type}: {x.reason}" for x in r.copies]),
        ("not provable here", [f"seq {x.seq} {x.type}: {x.reason}" for x in r.unverifiable]),
        ("PROBLEMS", [f"{'seq ' + str(p.seq) if p.seq is not None else 'source'}: {p.what}" for p in r.problems]),
    ):
        if lines:
            _say(f"{title}:")
            for line in lines[:SHOWN]:
                _say(f"  {line}")
            if len(lines) > SHOWN:
                _say(f"  ... and {len(lines) - SHOWN} more (--json lists all)")
    if r.ok:
        _say(f"OK: every event that counted is authentic; the sequence ({span}) is complete and unaltered")
        if r.source.startswith("file "):  # its end is signed; what the log got after it, only the log shows
            _say(f"  (the file ends at seq {r.last_seq}, as its writer signed it; `nexus audit verify` checks the log itself past it)")
    else:
        _say(f"FAILED: {len(r.problems)} problems")
