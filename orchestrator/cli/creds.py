"""`nexus creds new | list | revoke`: the deployment's NATS identities (DESIGN §9), from its keyring."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli.common import DATA_DIR, JsonOpt, OfflineCredsOpt, err, fail, out, parse_duration, print_json, unused_creds

if TYPE_CHECKING:
    from orchestrator.trust.keyring import Keyring
    from orchestrator.trust.roles import Role

# orchestrator.trust.roles.ROLES, spelled out so that listing the verbs does not import the
# trust machinery (and the schemas); tests/unit/test_cli_choices.py keeps them equal.
ROLE_NAMES = ("admin", "submitter", "approver", "viewer", "agent")

app = typer.Typer(
    help="NATS identities: who may do what on the bus (see docs/security.md).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

KEYRING = DATA_DIR / "creds"


@app.command("new")
def new(
    role: Annotated[str, typer.Option("--role", help=f"One of: {', '.join(ROLE_NAMES)}.", show_default=False)],
    name: Annotated[str, typer.Option("--name", help="Who it is for: recorded as the identity's name.", show_default=False)],
    node: Annotated[str | None, typer.Option("--node", help="For --role agent: the node id it may act for.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write the .creds file (default: KEYRING/NAME.creds).")
    ] = None,
    keyring: Annotated[Path, typer.Option("--keyring", help="The keys that sign identities (the directory `nexus up` created).")] = KEYRING,
    service: Annotated[
        bool, typer.Option("--service", help="An admin service that records the users it authenticated (the API, the orchestrator).")
    ] = False,
    expires: Annotated[
        str | None, typer.Option("--expires", help="The server stops accepting it after this long (e.g. 90d, 12h); default: never.")
    ] = None,
    json: JsonOpt = False,
    creds: OfflineCredsOpt = None,
) -> None:
    """Issue a credentials file (user JWT + nkey seed, mode 0600) with ROLE's permissions.

    The server accepts it at once, without a restart: it trusts the account key that
    signs it. Roles: admin (everything), submitter (submit jobs and pipelines, cancel,
    read), approver (a submitter who may also approve and deny), viewer (read only),
    agent (one node: its dispatches, its facts, its output, its heartbeat).
    """
    unused_creds(creds, "`nexus creds` signs with the keyring (--keyring)")
    from orchestrator.trust.keyring import Keyring, KeyringError
    from orchestrator.trust.roles import ROLES

    if role not in ROLES:
        fail(f"unknown role {role!r}: one of {', '.join(ROLES)}", code=2)
    ring = Keyring(keyring)
    if not ring.exists():
        fail(f"no keyring in {keyring}: run `nexus up` once there (it creates the keys), or give --keyring", code=2)
    try:
        expires_s = int(parse_duration(expires, "--expires")) if expires is not None else None
        issued = ring.issue(_role(role), name, node, output, service=service, expires_s=expires_s)
    except KeyringError as exc:
        fail(str(exc), code=2)
    if json:
        print_json(
            {
                "path": str(issued.path),
                "name": issued.name,
                "role": issued.role,
                "node": issued.node,
                "public_key": issued.public_key,
                "account": ring.account_public_key,
            }
        )
        return
    out.print(f"{issued.path}", highlight=False)
    err.print(
        f"issued {issued.role} identity {issued.name!r}" + (f" for node {issued.node}" if issued.node else "") + f" ({issued.public_key})",
        highlight=False,
    )


@app.command("list")
def list_(
    keyring: Annotated[Path, typer.Option("--keyring", help="The keys that sign identities (the directory `nexus up` created).")] = KEYRING,
    json: JsonOpt = False,
    creds: OfflineCredsOpt = None,
) -> None:
    """The identities this keyring issued (since it kept a list), oldest first, and which are revoked."""
    unused_creds(creds, "`nexus creds` signs with the keyring (--keyring)")
    from datetime import UTC, datetime

    from orchestrator.cli.tables import fit_table
    from orchestrator.trust.keyring import KeyringError

    ring = _keyring(keyring)
    try:
        issued, revoked = ring.issued(), ring.revocations()
    except KeyringError as exc:
        fail(str(exc), code=2)
    if json:
        print_json([dict(i.as_json(), revoked_at=revoked.get(i.public_key)) for i in issued])
        return

    def when(ts: int | None) -> str:
        return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")

    rows = [
        [i.name, i.role, i.node or "", i.public_key, when(i.issued_at), when(i.expires_at), when(revoked.get(i.public_key))] for i in issued
    ]
    columns = ["name", "role", "node", "public key", "issued", "expires", "revoked"]
    # The whole key, always: `nexus creds revoke --key` takes it. Times fold at their space when narrow.
    whole = ("role", "node", "public key")
    out.print(fit_table(columns, rows, out.width, whole=whole.__contains__, drop=("expires", "issued", "node", "role")))


@app.command("revoke")
def revoke(
    names: Annotated[list[str] | None, typer.Argument(help="Identities by name: every key issued to each.", show_default=False)] = None,
    key: Annotated[
        list[str] | None, typer.Option("--key", help="A user public key (U...), e.g. of credentials issued elsewhere. Repeatable.")
    ] = None,
    keyring: Annotated[Path, typer.Option("--keyring", help="The keys that sign identities (the directory `nexus up` created).")] = KEYRING,
    json: JsonOpt = False,
    creds: OfflineCredsOpt = None,
) -> None:
    """Revoke identities now: the server refuses their credentials and drops their connections.

    The keys go into the account JWT's revocation list (KEYRING/revocations.json, written into
    KEYRING/server.conf). A `nexus up` server running beside the keyring (KEYRING/..) re-reads
    its config at once (SIGHUP); a server of your own needs the new server.conf and a reload
    (`nats-server --signal reload`). What a revoked identity signed before stays in the log and
    still verifies. Issue the person or node new credentials with `nexus creds new`; revoking
    `nexus up`'s own services stops them until its next start, which issues them anew.
    """
    unused_creds(creds, "`nexus creds` signs with the keyring (--keyring)")
    from orchestrator import embedded
    from orchestrator.trust.keyring import KeyringError

    ring = _keyring(keyring)
    try:
        issued = ring.issued()
        keys = list(key or [])
        for name in names or []:
            found = [i.public_key for i in issued if i.name == name]
            if not found:
                fail(f"no identity named {name!r} in {keyring}/issued.jsonl (`nexus creds list`); give its key with --key U...", code=2)
            keys += found
        if not keys:
            fail("name the identities to revoke (NAME ... or --key U...)", code=2)
        new = ring.revoke(keys)
    except KeyringError as exc:
        fail(str(exc), code=2)
    data = keyring.parent
    try:
        pid = embedded.reload(data, ring.server_config(), data / "nats-server.log") if new else embedded.running_pid(data)
    except embedded.EmbeddedNatsError as exc:
        fail(f"revoked in {keyring}/server.conf, but {exc}", code=1)
    if json:
        print_json({"revoked": keys, "newly_revoked": new, "reloaded_pid": pid, "server_conf": str(keyring / "server.conf")})
        return
    for k in keys:
        out.print(k, highlight=False)
    said = f"revoked {len(keys)} key(s)" + (f", {len(keys) - len(new)} of them already" if len(new) < len(keys) else "")
    if pid is not None:
        err.print(f"{said}; the running nats-server (pid {pid}) reloaded: they are refused from now on", highlight=False)
    else:
        err.print(
            f"{said} in {keyring}/server.conf; no `nexus up` server runs under {data}: give your server the new server.conf "
            "and reload it (`nats-server --signal reload`)",
            highlight=False,
        )


def _keyring(path: Path) -> "Keyring":
    from orchestrator.trust.keyring import Keyring

    ring = Keyring(path)
    if not ring.exists():
        fail(f"no keyring in {path}: run `nexus up` once there (it creates the keys), or give --keyring", code=2)
    return ring


def _role(value: str) -> "Role":
    from orchestrator.trust.roles import ROLES

    for role in ROLES:
        if role == value:
            return role
    raise AssertionError(value)
