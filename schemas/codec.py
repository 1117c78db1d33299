"""The one place where bus payloads are encoded and decoded.

`decode(subject, data)` picks the Struct from the subject, so external
publishers may leave `type` out; when present it must agree with the subject.
"""

from __future__ import annotations

import functools
import itertools
import re
import typing

import msgspec

from schemas import subjects
from schemas.errors import DecodeError, InvalidSubject
from schemas.events import Event, NodeHeartbeat
from schemas.limits import MAX_DEPTH, MAX_EVENT_BYTES
from schemas.rpc import QueryRequest, QueryResult
from schemas.secrets import KEYS_BUCKET, OrchestratorKey


def _tag(cls: type[msgspec.Struct]) -> str:
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


EVENT_TYPES: dict[str, type[Event]] = {_tag(cls): cls for cls in typing.get_args(Event)}

# enc_hook=str: query results may hold values msgspec has no JSON form for.
_encoder = msgspec.json.Encoder(enc_hook=str)
T = typing.TypeVar("T")


@functools.cache
def _decoder(cls: type[T]) -> msgspec.json.Decoder[T]:
    """Each type's decoder, made when first needed: all of them up front cost every process
    ~4 ms at start, and a CLI process decodes a handful of the event kinds."""
    return msgspec.json.Decoder(cls)


def encode(value: msgspec.Struct) -> bytes:
    return _encoder.encode(value)


def event_type(event: Event) -> str:
    return _tag(type(event))


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def nesting_depth(data: bytes) -> int:
    """Deepest nesting of arrays and objects in JSON text (brackets inside strings do not count)."""
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return 0  # cannot be deeper than the limit; skip the scan
    steps = (_STEP[b[0]] for b in _BRACKETS.findall(_STRING.sub(b"", data)))
    return max(itertools.accumulate(steps, initial=0))


def check_bounds(subject: str, data: bytes, max_bytes: int = MAX_EVENT_BYTES) -> None:
    """Refuse, before decoding, a payload too large or too deeply nested to be ours."""
    if len(data) > max_bytes:
        raise DecodeError(subject, data, f"payload of {len(data)} bytes is over the limit of {max_bytes}")
    if (depth := nesting_depth(data)) > MAX_DEPTH:
        raise DecodeError(subject, data, f"payload nested {depth} deep, over the limit of {MAX_DEPTH}")


_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)  # one escape: \uXXXX, or \ and any byte


def lone_surrogate(data: bytes) -> tuple[int, str] | None:
    """The first `\\uD800`-`\\uDFFF` escape in JSON text that is not half of a pair (a high one
    followed at once by a low one), as (byte offset, escape); None if there is none. It
    stands for no character, so the text it is in cannot be UTF-8."""
    high: re.Match[bytes] | None = None  # a high surrogate waiting for its low half
    for m in _ESCAPE.finditer(data):
        unit = int(m[1], 16) if m[1] else -1
        if high is not None:
            if 0xDC00 <= unit <= 0xDFFF and m.start() == high.end():
                high = None
                continue
            break
        if 0xDC00 <= unit <= 0xDFFF:
            return m.start(), m.group().decode("ascii")
        if 0xD800 <= unit <= 0xDBFF:
            high = m
    return (high.start(), high.group().decode("ascii")) if high is not None else None


def json_error(data: bytes, message: str) -> str:
    """msgspec's reason why `data` is no JSON it takes, in words that name the fault: for a
    lone surrogate escape msgspec says "Input data was truncated", which misleads."""
    found = lone_surrogate(data)
    if found is None:
        return message
    at, escape = found
    return (
        f"JSON is malformed: a lone UTF-16 surrogate escape {escape} (byte {at}) stands for no character, "
        "so the text is not valid Unicode (UTF-8); a character outside the BMP is escaped as a surrogate pair"
    )


def _decode(decoder: msgspec.json.Decoder[typing.Any], subject: str, data: bytes) -> typing.Any:
    check_bounds(subject, data)
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(subject, data, json_error(data, str(exc))) from None
    except (RecursionError, MemoryError) as exc:  # defence in depth behind check_bounds
        raise DecodeError(subject, data, f"payload too complex to decode ({type(exc).__name__})") from None


def decode(subject: str, data: bytes) -> Event:
    """Decode an event published on `subject`; raises DecodeError with the reason.
    Never raises anything else, whatever the bytes."""
    try:
        ref = subjects.parse(subject)
    except InvalidSubject as exc:
        raise DecodeError(subject, data, exc.reason) from None
    cls = EVENT_TYPES.get(ref.type)
    if cls is None:
        raise DecodeError(subject, data, f"unknown event type {ref.type!r}")
    event: Event = _decode(_decoder(cls), subject, data)
    return event


def decode_heartbeat(data: bytes) -> NodeHeartbeat:
    hb: NodeHeartbeat = _decode(_decoder(NodeHeartbeat), subjects.NODES_BUCKET, data)
    return hb


def decode_orchestrator_key(data: bytes) -> OrchestratorKey:
    key: OrchestratorKey = _decode(_decoder(OrchestratorKey), KEYS_BUCKET, data)
    return key


def decode_query_request(data: bytes) -> QueryRequest:
    req: QueryRequest = _decode(_decoder(QueryRequest), subjects.RPC_QUERY, data)
    return req


def decode_query_result(data: bytes) -> QueryResult:
    result: QueryResult = _decode(_decoder(QueryResult), subjects.RPC_QUERY, data)
    return result


def encode_query_result(result: QueryResult, *, in_parts: bool, part_bytes: int = MAX_EVENT_BYTES) -> list[bytes]:
    """The answer as messages of at most `part_bytes` each (what every reader decodes): one
    when it fits, else its rows split in order over several (`in_parts`: the asker takes
    that), else an error saying what to do."""
    whole = _encoder.encode(result)
    if len(whole) <= part_bytes:
        return [whole]
    if not in_parts:
        too_big = f"the answer is {len(whole)} bytes, over the {part_bytes} of one message, and this client takes no more"
        too_big += ": add a LIMIT, or use a newer client"
        return [_encoder.encode(QueryResult(error=too_big, checkpoint=result.checkpoint))]
    room = part_bytes - len(_encoder.encode(msgspec.structs.replace(result, rows=[], part=2**31, parts=2**31)))
    groups: list[list[list[typing.Any]]] = [[]]
    size = 0
    for n, row in enumerate(result.rows, 1):
        cost = len(_encoder.encode(row)) + 1  # and its comma
        if cost > room:
            error = f"row {n} of the answer is {cost} bytes, over the {part_bytes} of one message: select fewer or shorter columns"
            return [_encoder.encode(QueryResult(error=error, checkpoint=result.checkpoint))]
        if size + cost > room:
            groups.append([])
            size = 0
        groups[-1].append(row)
        size += cost
    parts = len(groups)
    return [_encoder.encode(msgspec.structs.replace(result, rows=rows, part=i, parts=parts)) for i, rows in enumerate(groups, 1)]


def join_query_results(parts: typing.Sequence[QueryResult]) -> QueryResult:
    """One answer from its parts, in the order received; raises ValueError unless they are
    exactly parts 1 to n of one answer (an error in any part is the answer)."""
    for result in parts:
        if result.error:
            return result
    if not parts or [p.part for p in parts] != list(range(1, len(parts) + 1)) or any(p.parts != len(parts) for p in parts):
        raise ValueError(f"an answer in parts came incomplete or out of order: {[(p.part, p.parts) for p in parts]}")
    if len(parts) == 1:
        return parts[0]
    rows = [row for p in parts for row in p.rows]
    return QueryResult(columns=parts[0].columns, rows=rows, checkpoint=parts[0].checkpoint)
