"""Issue 11: the nats-server configs shipped in ops/ hold up when run for real.

Each config is copied with only what a test must change: the TLS paths (a
throwaway CA made here with the openssl CLI), the store dir, loopback instead of
0.0.0.0, free ports instead of 4222/6222/8222 (the monitoring host is kept from
the file), and the advertised names. Every change must match the shipped text
the expected number of times, so a reshaped config fails here instead of being
tested by accident. The trust block is a fresh keyring's server.conf, the route
credentials come from ops/nexus-routes-conf.sh, as docs/operations.md says.

What it shows: `nats-server -t` accepts each file; the single server and the
3-node cluster run JetStream (replicas 3 on the cluster, also through Nexus's own
NatsBus); a client needs both TLS and a .creds file; a server without the route
password, or without a certificate from the CA, does not join the cluster; the
monitoring port listens on loopback only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from bus.nats_bus import NatsBus
from bus.port import StreamLimits
from orchestrator.trust import nats_jwt
from orchestrator.trust.keyring import Keyring
from schemas import subjects
from tests.conftest import wait_for
from tests.integration.ops_support import (
    CLUSTER,
    OPS,
    Fleet,
    Pki,
    Server,
    check_config,
    client_tls,
    cluster_conf,
    free_ports,
    make_pki,
    routes_conf,
    single_conf,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    f = Fleet()
    try:
        yield f
    finally:
        await f.stop_all()


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    ring = Keyring(tmp_path / "keyring")
    ring.ensure()
    ring.issue("admin", "orchestrator")
    return ring


# ------------------------------------------------------------ clients


async def _quiet(exc: Exception) -> None:
    pass


async def connect(server: Server, pki: Pki, creds: Path) -> Client:
    """nats-py, the way a deployment's client connects: TLS trusting the CA, a .creds file."""
    return await nats.connect(
        f"tls://127.0.0.1:{server.client_port}", tls=client_tls(pki), user_credentials=str(creds),
        allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5, error_cb=_quiet,
    )  # fmt: skip


async def raw_connect(server: Server, creds: Path | None, tls: ssl.SSLContext | None) -> tuple[dict[str, Any], bytes]:
    """Speak the NATS protocol by hand: INFO, then (over TLS when `tls`) a CONNECT, signed with
    `creds` when given, then PING. Returns the INFO and what the server said before closing or PONG."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.client_port)
    try:
        info = json.loads((await asyncio.wait_for(reader.readline(), 10)).removeprefix(b"INFO "))
        if tls is not None:
            await writer.start_tls(tls, server_hostname="127.0.0.1")
        connect_op: dict[str, Any] = {"verbose": False, "pedantic": False, "protocol": 1, "tls_required": tls is not None}
        if creds is not None:
            token, seed = nats_jwt.read_creds(creds.read_text())
            signed = nats_jwt.keypair(seed).sign(info["nonce"].encode())
            connect_op |= {"jwt": token, "sig": base64.urlsafe_b64encode(signed).rstrip(b"=").decode()}
        writer.write(f"CONNECT {json.dumps(connect_op)}\r\nPING\r\n".encode())
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        said = b""
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            async with asyncio.timeout(10):
                while b"PONG" not in said and (chunk := await reader.read(4096)):
                    said += chunk
        return info, said
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


async def assert_tls_and_creds_required(server: Server, pki: Pki, creds: Path) -> None:
    # Control: a CONNECT signed with the creds, over TLS, is answered.
    info, said = await raw_connect(server, creds, client_tls(pki))
    assert info["tls_required"] and info["auth_required"], info
    assert b"PONG" in said, said
    # The same valid CONNECT without TLS: the connection is closed, nothing answered.
    _info, said = await raw_connect(server, creds, None)
    assert b"PONG" not in said, said
    # TLS but no credentials: refused.
    _info, said = await raw_connect(server, None, client_tls(pki))
    assert b"Authorization Violation" in said and b"PONG" not in said, said


def _listening(port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The local addresses with a TCP socket listening on `port` (Linux /proc/net/tcp, tcp6)."""
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for table in ("tcp", "tcp6"):
        path = Path("/proc/net") / table
        if not path.exists():
            continue
        for row in path.read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            addr, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(addr)
            # The kernel prints each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(ipaddress.ip_address(words))
    return found


def _outward_address() -> str | None:
    """This machine's address on its default route, if it has one (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1
        except OSError:
            return None
        address: str = s.getsockname()[0]
    return None if ipaddress.ip_address(address).is_loopback else address


async def assert_monitoring_on_loopback_only(server: Server) -> None:
    assert server.http_host == "127.0.0.1", server.http_host
    listening = _listening(server.http_port)
    assert listening, f"nothing listens on monitoring port {server.http_port}"
    assert all(a.is_loopback for a in listening), listening
    assert (await server.monitor("/healthz"))["status"] == "ok"
    if (outward := _outward_address()) is not None:
        with pytest.raises(OSError):
            _r, w = await asyncio.wait_for(asyncio.open_connection(outward, server.http_port), 5)
            w.close()
            await w.wait_closed()


# ------------------------------------------------------------ tests


def test_each_shipped_config_passes_the_servers_check_and_needs_its_route_credentials(tmp_path: Path, keyring: Keyring) -> None:
    pki = make_pki(tmp_path / "tls")
    confs = [single_conf(tmp_path / "single", pki, keyring)]
    ports = free_ports(3)
    routes = routes_conf(*(f"127.0.0.1:{p}" for p in ports))
    assert routes.count("nats-route://nexus-route:") == 3 and "password:" in routes
    confs += [cluster_conf(tmp_path / f"node-{n}", n, pki, keyring, ports[n - 1], routes) for n in (1, 2, 3)]
    for conf in confs:
        checked = check_config(conf)
        assert checked.returncode == 0, f"{conf.name}: {checked.stdout}{checked.stderr}"
    # Fail closed: a cluster member without nexus-routes.conf does not start.
    (tmp_path / "node-1" / "nexus-routes.conf").unlink()
    checked = check_config(confs[1])
    assert checked.returncode != 0 and "nexus-routes.conf" in checked.stdout + checked.stderr
    # The generator refuses to run without members.
    done = subprocess.run([str(OPS / "nexus-routes-conf.sh")], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and "usage" in done.stderr


async def test_the_single_server_runs_jetstream_for_tls_clients_with_creds_only(tmp_path: Path, keyring: Keyring, fleet: Fleet) -> None:
    pki = make_pki(tmp_path / "tls")
    server = await fleet.start(single_conf(tmp_path / "single", pki, keyring))
    creds = keyring.dir / "orchestrator.creds"

    nc = await connect(server, pki, creds)
    try:
        js = nc.jetstream()
        await js.add_stream(name="OPS_CHECK", subjects=["ops.check.>"])
        ack = await js.publish("ops.check.one", b"hello")
        assert (ack.stream, ack.seq) == ("OPS_CHECK", 1)
    finally:
        await nc.close()
    varz = await server.monitor("/varz")
    assert varz["jetstream"]["config"]["sync_always"] is True
    assert varz["tls_required"] is True and varz["auth_required"] is True

    await assert_tls_and_creds_required(server, pki, creds)
    await assert_monitoring_on_loopback_only(server)


async def test_the_cluster_runs_replicated_jetstream_and_admits_only_authenticated_routes(
    tmp_path: Path, keyring: Keyring, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = make_pki(tmp_path / "tls")
    ports = free_ports(5)
    routes = routes_conf(*(f"127.0.0.1:{p}" for p in ports[:3]))
    confs = [cluster_conf(tmp_path / f"node-{n}", n, pki, keyring, ports[n - 1], routes) for n in (1, 2, 3)]
    members = list(await asyncio.gather(*(fleet.start(conf) for conf in confs)))

    async def cluster_formed() -> bool:
        for m, name in zip(members, CLUSTER, strict=True):
            meta = (await m.monitor("/jsz")).get("meta_cluster") or {}
            if not meta.get("leader") or meta.get("cluster_size") != 3 or await m.route_peers() != set(CLUSTER) - {name}:
                return False
            # Until every member is current with the meta leader, a stream request can go unanswered.
            if not await m.healthy():
                return False
        return True

    assert await wait_for(cluster_formed, 60, what="the three members to route to each other and be current with one meta leader")

    # JetStream with replicas 3, through a member, over TLS with a keyring identity.
    creds = keyring.dir / "orchestrator.creds"
    nc = await connect(members[0], pki, creds)
    try:
        js = nc.jetstream()
        info = await js.add_stream(name="OPS_CHECK", subjects=["ops.check.>"], num_replicas=3)
        assert info.cluster is not None
        assert {info.cluster.leader, *(p.name for p in info.cluster.replicas or [])} == set(CLUSTER)
        ack = await js.publish("ops.check.one", b"hello")
        assert (ack.stream, ack.seq) == ("OPS_CHECK", 1)
    finally:
        await nc.close()

    # Nexus itself (NatsBus, default SSL context: here SSL_CERT_FILE trusts the CA) creates its streams with --replicas 3.
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    bus = await NatsBus.connect(f"tls://127.0.0.1:{members[1].client_port}", name="ops-check", creds=creds)
    try:
        await bus.ensure_streams(StreamLimits(replicas=3))
        events = await bus.js.stream_info(subjects.EVENTS_STREAM)
        assert events.config.num_replicas == 3
    finally:
        await bus.close()

    for m in members:
        await assert_tls_and_creds_required(m, pki, creds)
        await assert_monitoring_on_loopback_only(m)

    async def still_three() -> None:
        """The members' view (the intruder's own /routez may list a route for the instant before it is refused)."""
        for m, name in zip(members, CLUSTER, strict=True):
            meta = (await m.monitor("/jsz"))["meta_cluster"]
            assert meta["cluster_size"] == 3, meta
            assert {r["name"] for r in meta["replicas"]} | {meta["leader"]} <= set(CLUSTER), meta
            assert await m.route_peers() == set(CLUSTER) - {name}

    # A 4th server with the CA's certificate but routes without the password: refused, not a peer.
    no_password = "routes: [\n" + "".join(f'  "nats-route://127.0.0.1:{p}"\n' for p in ports[:3]) + "]\n"
    intruder = await fleet.start(cluster_conf(tmp_path / "node-4", 1, pki, keyring, ports[3], no_password, name="nexus-4"))
    await intruder.said("Route Error 'Authorization Violation'")
    await still_three()
    await fleet.stop(intruder)

    # A 5th with the route password but a certificate from another CA: refused by mutual TLS.
    marks = [len(m.log) for m in members]
    stranger = make_pki(tmp_path / "stranger-tls", ca_name="Some other CA")
    shutil.copyfile(pki.ca, stranger.ca)  # it trusts the members; they do not trust it
    intruder = await fleet.start(cluster_conf(tmp_path / "node-5", 1, stranger, keyring, ports[4], routes, name="nexus-5"))
    await asyncio.gather(*(m.said("TLS route handshake error", after=mark) for m, mark in zip(members, marks, strict=True)))
    await still_three()
