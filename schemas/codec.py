"""The one place where bus payloads are encoded and decoded.

`decode(subject, data)` picks the Struct from the subject, so external
publishers may leave `type` out; when present it must agree with the subject.
"""

from __future__ import annotations

import typing

import msgspec

from schemas import subjects
from schemas.errors import DecodeError, InvalidSubject
from schemas.events import Event, NodeHeartbeat
from schemas.rpc import QueryRequest, QueryResult


def _tag(cls: type[msgspec.Struct]) -> str:
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


EVENT_TYPES: dict[str, type[Event]] = {_tag(cls): cls for cls in typing.get_args(Event)}

# enc_hook=str: query results may hold values msgspec has no JSON form for.
_encoder = msgspec.json.Encoder(enc_hook=str)
_decoders: dict[str, msgspec.json.Decoder[typing.Any]] = {
    tag: msgspec.json.Decoder(cls) for tag, cls in EVENT_TYPES.items()
}
_heartbeat_decoder = msgspec.json.Decoder(NodeHeartbeat)
_query_request_decoder = msgspec.json.Decoder(QueryRequest)
_query_result_decoder = msgspec.json.Decoder(QueryResult)


def encode(value: msgspec.Struct) -> bytes:
    return _encoder.encode(value)


def event_type(event: Event) -> str:
    return _tag(type(event))


def decode(subject: str, data: bytes) -> Event:
    """Decode an event published on `subject`; raises DecodeError with the reason."""
    try:
        ref = subjects.parse(subject)
    except InvalidSubject as exc:
        raise DecodeError(subject, data, exc.reason) from None
    decoder = _decoders.get(ref.type)
    if decoder is None:
        raise DecodeError(subject, data, f"unknown event type {ref.type!r}")
    try:
        event: Event = decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(subject, data, str(exc)) from None
    return event


def decode_heartbeat(data: bytes) -> NodeHeartbeat:
    try:
        return _heartbeat_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(subjects.NODES_BUCKET, data, str(exc)) from None


def decode_query_request(data: bytes) -> QueryRequest:
    try:
        return _query_request_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(subjects.RPC_QUERY, data, str(exc)) from None


def decode_query_result(data: bytes) -> QueryResult:
    try:
        return _query_result_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(subjects.RPC_QUERY, data, str(exc)) from None
