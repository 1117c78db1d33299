"""`nexus creds new`: issue a NATS identity (DESIGN §9) from the deployment's keyring."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli.common import DATA_DIR, JsonOpt, err, fail, out, parse_duration, print_json

if TYPE_CHECKING:
    from orchestrator.trust.roles import Role

# orchestrator.trust.roles.ROLES, spelled out so that listing the verbs does not import the
# trust machinery (and the schemas); tests/unit/test_cli_choices.py keeps them equal.
ROLE_NAMES = ("admin", "submitter", "approver", "viewer", "agent")

app = typer.Typer(help="NATS identities: who may do what on the bus (see docs/security.md).", no_args_is_help=True)

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
) -> None:
    """Issue a credentials file (user JWT + nkey seed, mode 0600) with ROLE's permissions.

    The server accepts it at once, without a restart: it trusts the account key that
    signs it. Roles: admin (everything), submitter (submit jobs and pipelines, cancel,
    read), approver (a submitter who may also approve and deny), viewer (read only),
    agent (one node: its dispatches, its facts, its output, its heartbeat).
    """
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


def _role(value: str) -> "Role":
    from orchestrator.trust.roles import ROLES

    for role in ROLES:
        if role == value:
            return role
    raise AssertionError(value)
