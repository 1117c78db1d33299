"""The nats-server configs of ops/ on loopback, for real: a throwaway CA (the openssl CLI),
each shipped config copied with only what a test must change (see `cluster_conf`), and the
servers started as processes (`Fleet`). Used by test_ops_configs.py (the configs themselves)
and cluster_support.py (Nexus on the 3-node cluster, issue 15).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator.embedded import server_binary
from orchestrator.trust.keyring import Keyring
from tests.conftest import wait_for

OPS = Path(__file__).resolve().parents[2] / "ops"
CLUSTER = ("nexus-1", "nexus-2", "nexus-3")


# ------------------------------------------------------------ certificates


@dataclass(frozen=True)
class Pki:
    """A CA and one server certificate it signed, laid out as /etc/nats/tls/ is."""

    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"


def _openssl(cwd: Path, *args: str) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, f"openssl {' '.join(args)}: {done.stderr}"


def make_pki(directory: Path, ca_name: str = "Nexus test CA") -> Pki:
    """ca.pem, and server.pem / server-key.pem for localhost and 127.0.0.1, usable both ways (routes dial with it)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make test certificates")
    directory.mkdir(parents=True)
    (directory / "openssl.cnf").write_text(
        "[req]\ndistinguished_name = dn\nprompt = no\n"
        f"[dn]\nCN = {ca_name}\n"
        "[ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n"
        "[server]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n"
        "extendedKeyUsage = serverAuth,clientAuth\nsubjectAltName = DNS:localhost,IP:127.0.0.1\n"
        "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
    )
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl(directory, "req", "-x509", *ec, "-config", "openssl.cnf", "-extensions", "ca",
             "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "2")  # fmt: skip
    _openssl(directory, "req", "-new", *ec, "-config", "openssl.cnf", "-subj", "/CN=nexus-nats",
             "-keyout", "server-key.pem", "-out", "server.csr")  # fmt: skip
    _openssl(directory, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
             "-extfile", "openssl.cnf", "-extensions", "server", "-out", "server.pem", "-days", "2")  # fmt: skip
    return Pki(directory)


def client_tls(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca))


# ------------------------------------------------------------ configs


def rewrite(text: str, *changes: tuple[str, str, int], keeps: tuple[str, ...] = ()) -> str:
    """Replace each `old` with `new`, which must occur exactly `count` times in the shipped text;
    each of `keeps` must be there once, and is left as shipped."""
    for kept in keeps:
        assert text.count(kept) == 1, f"expected {kept!r} once in the shipped config, found {text.count(kept)}"
    for old, new, count in changes:
        assert text.count(old) == count, f"expected {old!r} {count} time(s) in the shipped config, found {text.count(old)}"
        text = text.replace(old, new)
    return text


def free_ports(n: int) -> list[int]:
    """Ports free right now on loopback (routes must know each other's ports before any server starts)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def single_conf(directory: Path, pki: Pki, keyring: Keyring) -> Path:
    text = rewrite(
        (OPS / "nats-single.conf").read_text(),
        ('"/etc/nats/tls/', f'"{pki.dir}/', 3),
        ("listen: 127.0.0.1:4222", "listen: 127.0.0.1:-1", 1),
        ("http: 127.0.0.1:8222", "http: 127.0.0.1:-1", 1),
        ('store_dir: "/var/lib/nats"', f'store_dir: "{directory / "store"}"', 1),
        keeps=("sync_interval: always", 'include "nexus-auth.conf"'),
    )
    return _write_conf(directory, "nats-single.conf", text, keyring)


def cluster_conf(directory: Path, n: int, pki: Pki, keyring: Keyring, route_port: int, routes: str, name: str | None = None) -> Path:
    """ops/nats-cluster-N.conf on loopback, with `routes` as its nexus-routes.conf (and `name` as its server_name)."""
    text = rewrite(
        (OPS / f"nats-cluster-{n}.conf").read_text(),
        ('"/etc/nats/tls/', f'"{pki.dir}/', 6),
        ("listen: 0.0.0.0:4222", "listen: 127.0.0.1:-1", 1),
        # No port: the server advertises the one it listens on.
        (f'client_advertise: "nats-{n}:4222"', 'client_advertise: "127.0.0.1"', 1),
        ("http: 127.0.0.1:8222", "http: 127.0.0.1:-1", 1),
        ('store_dir: "/var/lib/nats"', f'store_dir: "{directory / "store"}"', 1),
        ("listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{route_port}", 1),
        (f'advertise: "nats-{n}:6222"', f'advertise: "127.0.0.1:{route_port}"', 1),
        *([(f"server_name: nexus-{n}", f"server_name: {name}", 1)] if name else []),
        keeps=("sync_interval: always", "\n    verify: true\n", 'include "nexus-routes.conf"', 'include "nexus-auth.conf"'),
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "nexus-routes.conf").write_text(routes)
    return _write_conf(directory, f"nats-cluster-{n}.conf", text, keyring)


def _write_conf(directory: Path, name: str, text: str, keyring: Keyring) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    # What an operator does: the keyring's server.conf, copied next to the config as nexus-auth.conf.
    shutil.copyfile(keyring.dir / "server.conf", directory / "nexus-auth.conf")
    path = directory / name
    path.write_text(text)
    return path


def routes_conf(*members: str) -> str:
    done = subprocess.run([str(OPS / "nexus-routes-conf.sh"), *members], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def check_config(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([server_binary(), "-c", str(conf), "-t"], capture_output=True, text=True, timeout=30, check=False)


# ------------------------------------------------------------ servers


@dataclass
class Server:
    conf: Path
    proc: asyncio.subprocess.Process
    log: list[str] = field(default_factory=list)
    client_port: int = 0
    http_host: str = ""
    http_port: int = 0
    reader: asyncio.Task[None] | None = None

    async def said(self, text: str, after: int = 0, timeout: float = 30.0) -> str:
        """The first log line from index `after` on that contains `text`."""

        def seen() -> str | None:
            return next((line for line in self.log[after:] if text in line), None)

        return await wait_for(seen, timeout, what=f"{self.conf.name} to log {text!r}")

    async def monitor(self, path: str) -> Any:
        # No proxy from the environment: this is loopback.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        def get() -> Any:
            with opener.open(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as reply:
                return json.load(reply)

        return await asyncio.to_thread(get)

    async def route_peers(self) -> set[str]:
        return {r["remote_name"] for r in (await self.monitor("/routez"))["routes"]}

    async def healthy(self) -> bool:
        """nats-server's own readiness probe: for a member, JetStream is current with the meta leader."""
        try:
            return bool((await self.monitor("/healthz"))["status"] == "ok")
        except urllib.error.HTTPError:  # 503 until then
            return False


class Fleet:
    """The nats-servers a test started; all killed at the end, whatever happened."""

    def __init__(self) -> None:
        self.servers: list[Server] = []

    async def start(self, conf: Path) -> Server:
        proc = await asyncio.create_subprocess_exec(
            server_binary(), "-c", str(conf), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        server = Server(conf, proc)
        self.servers.append(server)
        server.reader = asyncio.create_task(self._read(server))
        ready = await wait_for(lambda: _ready(server), 30, what=f"{conf.name} to be ready")
        assert ready == "ready", f"{conf.name} exited:\n" + "".join(server.log[-10:])
        for line in server.log:
            if "Listening for client connections on " in line:
                server.client_port = int(line.rsplit(":", 1)[1])
            if "Starting http monitor on " in line:
                server.http_host, port = line.split("Starting http monitor on ", 1)[1].strip().rsplit(":", 1)
                server.http_port = int(port)
        return server

    @staticmethod
    async def _read(server: Server) -> None:
        assert server.proc.stderr is not None
        while line := await server.proc.stderr.readline():
            server.log.append(line.decode(errors="replace"))

    async def stop(self, server: Server) -> None:
        if server.proc.returncode is None:
            server.proc.kill()
        await server.proc.wait()
        if server.reader is not None:
            await server.reader

    async def stop_all(self) -> None:
        for server in self.servers:
            await self.stop(server)


def _ready(server: Server) -> str | None:
    if any("Server is ready" in line for line in server.log):
        return "ready"
    return "exited" if server.proc.returncode is not None else None
