"""Shared CLI plumbing: options, connecting, error translation, output helpers.

Start-up time is part of the interface (`nexus --help`, `nexus run -- true`): this module and
every verb module import only typer and light stdlib modules at the top; the bus, the
application layer, rich and DuckDB are imported inside the functions that use them.
tests/integration/test_cli_startup.py holds that line.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer

from bus.urls import DEFAULT_URL
from orchestrator.cli import process
from orchestrator.cli.terminal_text import printable

if TYPE_CHECKING:
    from rich.console import Console

    from orchestrator.client import NexusClient, Rows

P = ParamSpec("P")
T = TypeVar("T")

DATA_DIR = Path(".nexus")
UP_URL_FILE = "nats.url"
"""Where `nexus up` writes its embedded server's URL in its data directory while it runs (its port
may be any: `--port -1`); verbs run in the same directory connect there by default."""


def _embedded_url(ctx: typer.Context, param: typer.CallbackParam, value: str) -> str:
    """--nats when given (or NEXUS_NATS_URL); else the URL a `nexus up` running from this
    directory wrote (./.nexus/nats.url); else the default."""
    source = ctx.get_parameter_source(param.name) if param.name else None
    if source is None or source.name != "DEFAULT":
        return value
    try:
        written = (DATA_DIR / UP_URL_FILE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return value
    return written if written.startswith("nats://") and len(written) < 256 else value


NatsOpt = Annotated[
    str,
    typer.Option(
        "--nats",
        envvar="NEXUS_NATS_URL",
        help="NATS URL, or several comma separated (default: the embedded server of the `nexus up` running from this directory, "
        "which writes ./.nexus/nats.url; else the one shown).",
        callback=_embedded_url,
        show_default=True,
    ),
]
# Set by any verb's --creds (or NEXUS_NATS_CREDS) while it parses; read by `connect`.
_creds: dict[str, Path | None] = {}


def _remember_creds(value: Path | None) -> Path | None:
    _creds["cli"] = value
    return value


CredsOpt = Annotated[
    Path | None,
    typer.Option(
        "--creds",
        envvar="NEXUS_NATS_CREDS",
        # No word longer than a narrow help column: rich cuts one with "…" (at 80 columns the path was).
        help="NATS credentials file (user JWT + nkey seed; default: admin.creds in ./.nexus/creds/ when present).",
        callback=_remember_creds,
        show_default=False,
    ),
]
DEFAULT_CREDS = DATA_DIR / "creds" / "admin.creds"
# Every verb takes --creds (DESIGN §9); a verb that never connects to NATS (`nexus creds`, which
# signs with the keyring; `nexus schema`) takes it and says it is not used, rather than refuse it.
OfflineCredsOpt = Annotated[
    Path | None,
    typer.Option("--creds", help="Taken like every verb's, and not needed: this verb does not connect to NATS.", show_default=False),
]


def unused_creds(creds: Path | None, why: str) -> None:
    if creds is not None:
        err.print(f"note: --creds {creds} is not used: {why} and does not connect to NATS", highlight=False)


def creds_file(given: Path | None = None) -> Path | None:
    """--creds, else NEXUS_NATS_CREDS, else the embedded default's admin credentials if they exist."""
    chosen = given if given is not None else _creds.get("cli")
    if chosen is not None:
        if not chosen.is_file():
            fail(f"credentials file {str(chosen)!r} not found (see --creds, NEXUS_NATS_CREDS)")
        return chosen
    return DEFAULT_CREDS if DEFAULT_CREDS.is_file() else None


JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
DbOpt = Annotated[
    Path | None,
    typer.Option("--db", help="Read this DuckDB file directly (read-only) instead of asking the running orchestrator."),
]
DEFAULT_NATS = DEFAULT_URL


class LazyConsole:
    """A rich Console made on first use (rich costs tens of milliseconds to import).
    Attribute access goes to the Console; `get()` gives it to rich's own widgets."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def get(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


# Piped output is for grep and files: don't squeeze tables into 80 columns.
out = LazyConsole(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = LazyConsole(stderr=True, soft_wrap=True)


class CliError(Exception):
    """A user-facing error with an exit code. Not a NexusError: that would import the schemas
    (msgspec and every event) for `nexus --help`; `main` and `run_async` catch both."""

    retryable = False

    def __init__(self, message: str, code: int = 1) -> None:
        self.code = code
        super().__init__(message)


def fail(message: str, code: int = 1) -> NoReturn:
    raise CliError(message, code)


def run_async(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """Run an async command; turn Nexus errors into one line on stderr and an exit code."""
    return _run(fn, long=False)


def run_long(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """`run_async` for a verb that runs long (a service, a replay): on libuv's event loop
    (uvloop), which spends less CPU per event than asyncio's (the agent a fifth less a job,
    docs/benchmarks.md); importing it (~4 ms) would only slow a short verb."""
    return _run(fn, long=True)


def _run(fn: Callable[P, Coroutine[Any, Any, T]], *, long: bool) -> Callable[P, T]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        import asyncio

        from orchestrator.app.errors import AppError
        from schemas.errors import InvalidId, NexusError

        async def started() -> T:
            # The verb's first wait for I/O ends start-up: it has imported what it runs with.
            asyncio.get_running_loop().call_soon(process.started)
            return await fn(*args, **kwargs)

        try:
            if long:
                import uvloop

                return uvloop.run(started())
            return asyncio.run(started())
        except CliError as exc:
            err.print(f"nexus: error: {exc}", markup=False, highlight=False)
            raise typer.Exit(exc.code) from None
        except AppError as exc:
            err.print(f"nexus: error: {exc}", markup=False, highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except NexusError as exc:
            err.print(f"nexus: error: {exc}", markup=False, highlight=False)
            raise typer.Exit(2 if isinstance(exc, InvalidId) else 1) from None  # an id nothing can have: usage
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper


@asynccontextmanager
async def connect(url: str, name: str = "nexus-cli", *, follows: bool = False) -> AsyncIterator[NexusClient]:
    """A client of the bus at `url`; one that `follows` a job reconnects after a lost connection."""
    from bus.nats_bus import NatsBus
    from orchestrator.client import NexusClient

    bus = await NatsBus.connect(url, name=name, creds=creds_file(), reconnect=follows)
    try:
        yield NexusClient(bus)
    finally:
        await bus.close()


async def query(url: str, db: Path | None, sql: str, params: Sequence[Any] = ()) -> Rows:
    """Ask the orchestrator, or read `db` directly when given."""
    if db is not None:
        return _query_file(db, sql, params)
    async with connect(url) as client:
        return await client.query(sql, params)


def _query_file(db: Path, sql: str, params: Sequence[Any]) -> Rows:
    from orchestrator.client import Rows
    from orchestrator.store import DuckDBStore

    if not db.exists():
        fail(f"no such DuckDB file: {db}")
    try:
        store = DuckDBStore(db, read_only=True)
    except Exception as exc:
        from schemas.errors import NexusError

        if not isinstance(exc, NexusError):
            raise
        raise CliError(f"{exc} (is the orchestrator running? then leave out --db)") from None
    try:
        columns, rows = store.query(sql, params)
    finally:
        store.close()
    return Rows(columns, [list(r) for r in rows])


def parse_pairs(values: Sequence[str] | None, what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{what} must look like KEY=VALUE, got {item!r}", 2)
        if what in _EXACT and (key != key.strip() or value != value.strip()):
            # Labels match exactly: `env=prod ` is not `env=prod`, and would quietly not count as production.
            fail(f"{what} {item!r} has spaces around its key or value; labels match exactly", 2)
        pairs[key] = value
    return pairs


_EXACT = ("--label", "--prefer")


def print_json(value: Any) -> None:
    """`--json` output. The CLI speaks the event log's vocabulary (snake_case, as on NATS and in
    DuckDB): Structs are written by attribute name, even those the HTTP API writes in camelCase."""
    import msgspec

    sys.stdout.write(msgspec.json.encode(plain(value), enc_hook=str).decode() + "\n")


def plain(value: Any) -> Any:
    """Structs as dicts keyed by attribute name, recursively; other values as they are
    (keys of plain dicts are data, such as labels, and are never renamed)."""
    import msgspec

    if isinstance(value, msgspec.Struct):
        return {name: plain(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def fmt(value: Any, *, one_line: bool = False) -> str:
    """A cell for people: times to the second (UTC), floats short, nothing for null, control
    characters shown as escapes (terminal_text.printable; `one_line`: newlines too)."""
    if value is None:
        return ""
    if isinstance(value, str) and _ISO.match(value):  # times arrive as RFC 3339 text over NATS
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:g}"
    return printable(str(value), one_line=one_line)


def print_table(rows: Rows, *, title: str | None = None, drop: Sequence[str] = (), headers: dict[str, str] | None = None) -> None:
    """`rows` as a table that fits the terminal (cli.tables.fit_table: ids and times whole;
    `drop`: the columns that may be left out when narrow, least important first)."""
    from orchestrator.cli.tables import fit_table

    cells = [[fmt(v) for v in row] for row in rows.rows]
    out.print(fit_table(rows.columns, cells, out.width, title=title, drop=drop, headers=headers))


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str, what: str) -> float:
    """Seconds in `30s`, `15m`, `2h`, `7d` (or a bare number of seconds)."""
    number, unit = (value[:-1], value[-1]) if value[-1:] in _UNITS else (value, "s")
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        fail(f"{what} takes a duration like 30s, 15m, 2h or 7d; got {value!r}", 2)
    if seconds <= 0:
        fail(f"{what} must be positive; got {value!r}", 2)
    return seconds


def default_user() -> str:
    from orchestrator.app.jobs import ANONYMOUS

    return os.environ.get("USER") or os.environ.get("LOGNAME") or ANONYMOUS
