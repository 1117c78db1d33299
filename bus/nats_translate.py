"""nats-py's errors mapped to bus.errors, and its messages to Nexus records: once, here.

Used by the NATS adapter's modules (nats_bus, nats_consumers, nats_nodes) only.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from bus.errors import BusError, NotSetUp, StaleDecision
from bus.port import OutputChunk, OutputStream
from schemas import codec, subjects
from schemas.errors import DecodeError
from schemas.records import Record
from schemas.trust import SIG_HEADER, SIGNER_HEADER

WRONG_LAST_SEQUENCE = 10071
# "duplicate message id is in process": another publisher's message with this id is being
# stored right now (two orchestrators making the same decision on a cluster).
DUPLICATE_IN_PROCESS = 10158
_LAST_SEQ = re.compile(r"wrong last sequence: (\d+)")
CHUNK_HEADER = "Nexus-Chunk"
# Present (value "stderr") only on a `tty: false` job's stderr chunks; absent means stdout.
STREAM_HEADER = "Nexus-Stream"
NODE_HEADER = "Nexus-Node"
"""The node whose agent published an output chunk: a claim, which its signature proves."""
NOT_A_NODE = "(not a node id)"


def output_stream(headers: dict[str, str] | None) -> OutputStream:
    return "stderr" if (headers or {}).get(STREAM_HEADER) == "stderr" else "stdout"


@contextlib.contextmanager
def map_read_errors(what: str) -> Iterator[None]:
    """nats-py's errors on reads and setup lookups as BusError (KeyNotFoundError passes: callers read it as "none")."""
    try:
        yield
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        raise
    except (nats.js.errors.NotFoundError, nats.js.errors.BucketNotFoundError):
        raise NotSetUp(what) from None
    except nats.js.errors.APIError as exc:
        retryable = exc.code is not None and exc.code >= 500
        raise BusError(f"{what}: {exc.description}", retryable=retryable) from None
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError, TimeoutError) as exc:
        raise BusError(f"{what}: no answer from JetStream ({type(exc).__name__})", retryable=True) from None
    except (nats.errors.Error, nats.js.errors.Error) as exc:
        raise BusError(f"{what}: {type(exc).__name__} {exc}".rstrip(), retryable=True) from None


@contextlib.contextmanager
def map_publish_errors(subject: str, expected_seq: int | None) -> Iterator[None]:
    """nats-py's publish errors as BusError; `retryable` says whether the same publish may succeed later."""
    try:
        yield
    except nats.js.errors.APIError as exc:
        wrong_last = exc.err_code == WRONG_LAST_SEQUENCE or (exc.description or "").startswith("wrong last sequence")
        if wrong_last and expected_seq is not None:  # a cluster's stream leader may say it without the number
            said = _LAST_SEQ.search(exc.description or "")
            raise StaleDecision(subject, expected_seq, int(said.group(1)) if said else None) from None
        if exc.err_code == DUPLICATE_IN_PROCESS or "duplicate message id is in process" in (exc.description or ""):
            # Not a refusal: the same decision (or fact) is being stored by someone else.
            # A decision re-reads (stale); anything else retries and gets the duplicate ack.
            if expected_seq is not None:
                raise StaleDecision(subject, expected_seq) from None
            raise BusError(f"publish to {subject}: {exc.description}", subject=subject, retryable=True) from None
        # 503 and friends: JetStream is (re)starting or has no leader yet.
        retryable = exc.code is not None and exc.code >= 500
        raise BusError(f"publish to {subject} refused: {exc.description}", subject=subject, retryable=retryable) from None
    except (nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError, nats.errors.NoRespondersError) as exc:
        raise BusError(f"no ack for {subject}: {type(exc).__name__}", subject=subject, retryable=True) from None
    except nats.errors.MaxPayloadError:
        raise BusError(f"publish to {subject} refused: over the server's max payload", subject=subject) from None
    except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError, nats.errors.OutboundBufferLimitError) as exc:
        raise BusError(f"publish to {subject} failed: {type(exc).__name__}", subject=subject, retryable=True) from None


def is_nats_error(exc: BaseException) -> bool:
    """An error of nats-py that escaped translation (callers map it to "unavailable")."""
    return isinstance(exc, nats.errors.Error | nats.js.errors.Error)


def bucket_api(bucket: str) -> Callable[[str], bool]:
    """Whether a subject the server refused is a request on KV bucket `bucket`: its stream's API
    (`$JS.API.STREAM.INFO.KV_<bucket>`, a consumer with a filter after the name) or a direct get
    of a key (`$JS.API.DIRECT.GET.KV_<bucket>.$KV.<bucket>.<key>`). nats-py reports it in lower case."""
    stream = f".kv_{bucket.lower()}"
    return lambda s: s.lower().startswith("$js.api.") and (s.lower().endswith(stream) or f"{stream}." in s.lower())


def to_output_chunk(msg: Msg) -> OutputChunk:
    """A message of NEXUS_OUTPUT as a chunk, whatever its publisher put in its subject and headers
    (a chunk number that is not one reads as 0; orchestrator.output_gate judges the rest)."""
    headers = msg.headers or {}
    said = headers.get(CHUNK_HEADER, "0")
    number = int(said) if said.isascii() and said.isdigit() and len(said) <= 9 else 0
    seq, ts = _position(msg)
    return OutputChunk(
        seq=seq, attempt=subjects.output_attempt(msg.subject), number=number, data=msg.data, stream_ts=ts,
        stream=output_stream(headers),
        subject=msg.subject, signer=headers.get(SIGNER_HEADER), signature=headers.get(SIG_HEADER),
        claimed_node=_node_claim(headers.get(NODE_HEADER)),
    )  # fmt: skip


def _node_claim(said: str | None) -> str | None:
    """A chunk's `Nexus-Node` as a node id; anything else (any bytes may come) as a value that is
    no node's, so the chunk is refused for it without carrying it into logs and messages."""
    return said if said is None or subjects.is_valid_id(said) else NOT_A_NODE


def to_record(msg: Msg) -> Record:
    """A JetStream message of NEXUS_EVENTS as a reducer record; bad payloads keep their reason."""
    seq, ts = _position(msg)
    headers = msg.headers or {}
    signer, signature = headers.get(SIGNER_HEADER), headers.get(SIG_HEADER)
    try:
        event = codec.decode(msg.subject, msg.data)
    except DecodeError as exc:
        return Record(seq=seq, subject=msg.subject, stream_ts=ts, raw=msg.data, signer=signer, signature=signature, error=exc.reason)
    return Record(seq=seq, subject=msg.subject, stream_ts=ts, raw=msg.data, signer=signer, signature=signature, event=event)


SOURCE_HEADER = "Nats-Stream-Source"  # set by the server on what it copies into a sourcing stream


def to_delivered_record(msg: Msg) -> Record:
    """A message of NEXUS_DISPATCH as the NEXUS_EVENTS record it copies: the event's own subject
    and sequence, from the `Nats-Stream-Source` header the server wrote when it copied it
    (`<stream> <seq> <filters> <destinations> <subject> [<ident>]`; nobody can publish into
    NEXUS_DISPATCH, and the server replaces any such header on the way in). Its signature is
    over that subject, so it is verified as the event it is. Unreadable: an error record."""
    _, ts = _position(msg)
    headers = msg.headers or {}
    words = headers.get(SOURCE_HEADER, "").split(" ")
    if len(words) < 5 or words[0] != subjects.EVENTS_STREAM or not words[1].isdigit():
        return Record(seq=0, subject=msg.subject, stream_ts=ts, raw=msg.data, error=f"not a copy of a {subjects.EVENTS_STREAM} event")
    subject, seq = words[4], int(words[1])
    signer, signature = headers.get(SIGNER_HEADER), headers.get(SIG_HEADER)
    try:
        event = codec.decode(subject, msg.data)
    except DecodeError as exc:
        return Record(seq=seq, subject=subject, stream_ts=ts, raw=msg.data, signer=signer, signature=signature, error=exc.reason)
    return Record(seq=seq, subject=subject, stream_ts=ts, raw=msg.data, signer=signer, signature=signature, event=event)


def _position(msg: Msg) -> tuple[int, datetime]:
    """Stream sequence and server time of a JetStream message, from its reply subject.

    The same values as nats-py's `msg.metadata` (same fields, the same float arithmetic for
    the time), read without building its dataclasses: a replay does this for every record."""
    tokens = (msg.reply or "").split(".")
    # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time ns>.<pending>
    if len(tokens) == 9 and tokens[0] == "$JS" and tokens[1] == "ACK":
        return int(tokens[5]), datetime.fromtimestamp(int(tokens[7]) / 1_000_000_000.0, UTC)
    meta = msg.metadata  # the longer form (domain, account hash): nats-py's own parser
    ts = meta.timestamp if meta.timestamp.tzinfo else meta.timestamp.replace(tzinfo=UTC)
    return meta.sequence.stream, ts
