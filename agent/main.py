"""`nexus-agent`: the node agent on its own (argparse; the same flags as `nexus agent`).

This is the agent's wiring: connect the NATS adapter, run `Agent` until SIGINT or
SIGTERM, stop cleanly. It needs only schemas/, bus/ and agent/ (no DuckDB, Litestar,
typer or the analysis), so a node can install the small `nexus-agent` distribution.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

from agent import logs
from agent.service import Agent
from bus.errors import BusError
from bus.logs import Logger
from bus.nats_bus import NatsBus
from bus.sealing import SealingKey
from bus.urls import DEFAULT_URL
from schemas import subjects
from schemas.errors import NexusError
from schemas.limits import JOB_OUTPUT_MAX_BYTES

log = Logger("nexus.agent")

SEALING_KEY_FILE = "sealing.key"
# glibc's malloc hands out every block of 128 KiB or more (after its own adjustment, of
# about the last size freed) as fresh pages from the kernel and returns them on free, or
# trims them off the heap. Bulk output moves ~1 MiB buffers (a read, a chunk, the publish
# nats-py builds around it): each one page-faulted in anew cost 2.3 ms of CPU per 1 MiB
# chunk here, more than everything else the agent does with it. Blocks up to 8 MiB come
# from the heap and 16 MiB of freed heap is kept for reuse.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MALLOC_MMAP_THRESHOLD = 8 * 1024 * 1024
MALLOC_TRIM_THRESHOLD = 16 * 1024 * 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class AgentOptions:
    node: str
    nats_url: str = DEFAULT_URL
    creds: str | None = None  # NATS .creds file: this node's agent identity
    labels: dict[str, str] = field(default_factory=dict)
    max_jobs: int = 4
    tools: tuple[str, ...] = ()
    heartbeat_s: float = 2.0
    kill_grace_s: float = 5.0
    state_dir: Path | None = None  # None: default_state_dir(node)
    pass_env: tuple[str, ...] = ()
    output_max: int | None = JOB_OUTPUT_MAX_BYTES  # bytes of each attempt's output kept (None: all)


def default_state_dir(node: str) -> Path:
    """Where an agent keeps its state (its sealing key): $NEXUS_AGENT_STATE_DIR, else ./.nexus/agents/<node>."""
    configured = os.environ.get("NEXUS_AGENT_STATE_DIR")
    return Path(configured) if configured else Path(".nexus") / "agents" / node


async def serve(opts: AgentOptions) -> None:
    """Connect and run the agent until SIGINT/SIGTERM (`nexus agent` and `nexus-agent` both call this)."""
    # The key first: a node whose key file is unusable says so before it takes any work.
    state_dir = opts.state_dir or default_state_dir(opts.node)
    _reuse_big_buffers()
    key = SealingKey.load_or_create(state_dir / SEALING_KEY_FILE)
    _check_node_of(opts.creds, opts.node)
    bus = await NatsBus.connect(opts.nats_url, name=f"nexus-agent-{opts.node}", daemon=True, creds=opts.creds)
    try:
        agent = Agent(
            bus, opts.node, labels=opts.labels, max_jobs=opts.max_jobs, extra_tools=opts.tools,
            heartbeat_s=opts.heartbeat_s, kill_grace_s=opts.kill_grace_s, sealing_key=key, pass_env=opts.pass_env,
            state_dir=state_dir, output_max=opts.output_max,
        )  # fmt: skip
        await _until_signal(asyncio.create_task(agent.run(), name="agent"), grace_s=opts.kill_grace_s + 10.0)
    finally:
        await bus.close()


def _reuse_big_buffers() -> None:
    """Keep glibc from mapping and unmapping every output-sized buffer (see MALLOC_MMAP_THRESHOLD);
    nothing to do with another C library."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)


async def _until_signal(task: asyncio.Task[None], *, grace_s: float) -> None:
    """Run until a signal or until the task ends; then cancel it and wait (a second signal: stop waiting)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raise what ended it
            return
        stop.clear()
        task.cancel()
        hurry = asyncio.create_task(stop.wait())
        await asyncio.wait([task, hurry], timeout=grace_s, return_when=asyncio.FIRST_COMPLETED)
        hurry.cancel()
        while not task.done():  # a cancellation swallowed inside a library: ask again
            task.cancel()
            await asyncio.wait([task], timeout=0.5)
        with contextlib.suppress(asyncio.CancelledError):
            task.result()
    finally:
        waiter.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _node_id(text: str) -> str:
    if not subjects.is_valid_id(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid node id ([A-Za-z0-9_-], at most 64)")
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nexus-agent", description="Run a Nexus node agent: take this node's dispatches and run them in a PTY."
    )
    p.add_argument("--node", required=True, type=_node_id, help="This node's id ([A-Za-z0-9_-], at most 64).")
    p.add_argument("--label", "-l", action="append", type=_pair, default=[], metavar="KEY=VALUE", help="Label (e.g. env=prod); repeatable.")
    p.add_argument("--max-jobs", type=int, default=4, help="Jobs this node runs at once (default 4).")
    p.add_argument("--tool", action="append", default=[], help="Extra tool name to look for on PATH; repeatable.")
    p.add_argument("--heartbeat", type=float, default=2.0, help="Seconds between heartbeats (default 2).")
    p.add_argument("--kill-grace", type=float, default=5.0, help="Seconds between SIGTERM and SIGKILL on timeout or cancel (default 5).")
    url = os.environ.get("NEXUS_NATS_URL", DEFAULT_URL)
    # Not %(default)s: help is printed, and the URL from the environment may carry a password.
    p.add_argument("--nats", default=url, help=f"NATS URL, or several comma separated (default: $NEXUS_NATS_URL, else {DEFAULT_URL}).")
    p.add_argument(
        "--creds",
        default=os.environ.get("NEXUS_NATS_CREDS"),
        help="NATS credentials file of this node's agent identity (`nexus creds new --role agent --node ID`; default: $NEXUS_NATS_CREDS).",
    )
    p.add_argument(
        "--state-dir", type=Path, default=None,
        help="Where the agent keeps its sealing key (default: $NEXUS_AGENT_STATE_DIR, else ./.nexus/agents/NODE).",
    )  # fmt: skip
    p.add_argument(
        "--pass-env", action="append", default=[], metavar="NAME",
        help="Also give jobs this variable of the agent's environment (besides PATH, HOME, LANG, ...); repeatable.",
    )  # fmt: skip
    p.add_argument(
        "--output-max-mb", type=float, default=JOB_OUTPUT_MAX_BYTES / MIB, metavar="MIB",
        help=f"Output kept of each job, in MiB (default {JOB_OUTPUT_MAX_BYTES // MIB}; 0: no limit). Past it the job runs on, "
        "its output is read and dropped, and its `exited` event says how much (output_dropped).",
    )  # fmt: skip
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"], help="Log level (default info).")
    p.add_argument("--log-json", action="store_true", help="Log as JSON lines.")
    return p


def options(argv: Sequence[str] | None = None) -> tuple[AgentOptions, argparse.Namespace]:
    p = parser()
    ns = p.parse_args(argv)
    if ns.max_jobs < 1 or ns.heartbeat < 0.1 or ns.kill_grace < 0:
        p.error("--max-jobs must be >= 1, --heartbeat >= 0.1 and --kill-grace >= 0")
    if not 0 <= ns.output_max_mb < 2**43:  # NaN included
        p.error(f"--output-max-mb takes a size in MiB, 0 for no limit; got {ns.output_max_mb}")
    opts = AgentOptions(
        node=ns.node, nats_url=ns.nats, creds=ns.creds, labels=dict(ns.label), max_jobs=ns.max_jobs, tools=tuple(ns.tool),
        heartbeat_s=ns.heartbeat, kill_grace_s=ns.kill_grace, state_dir=ns.state_dir, pass_env=tuple(ns.pass_env),
        output_max=max(int(ns.output_max_mb * MIB), 1) if ns.output_max_mb else None,
    )  # fmt: skip
    return opts, ns


class OtherNodesCredentials(NexusError):
    """Agent credentials issued for another node: the server would refuse every dispatch and fact."""


def _check_node_of(creds: str | None, node: str) -> None:
    """Stop at once when the credentials are another node's agent identity (the server would let
    this agent read and publish nothing of its own, and it would retry for ever)."""
    if creds is None:
        return
    from bus.identity import Identity, IdentityError

    try:
        author = Identity.from_creds(creds).author
    except IdentityError:
        return  # unreadable credentials are the connection's to report, with its own words
    if author.role == "agent" and author.node is not None and author.node != node:
        raise OtherNodesCredentials(
            f"{creds} is the agent identity of node {author.node!r}, not {node!r}: run this agent as --node {author.node}, "
            f"or issue this node its own: nexus creds new --role agent --node {node}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    opts, ns = options(argv)
    logs.configure(ns.log_level, json=ns.log_json)
    try:
        uvloop.run(serve(opts))  # libuv's event loop: a fifth less CPU a job than asyncio's (docs/benchmarks.md)
    except (BusError, NexusError) as exc:
        print(f"nexus-agent: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
