"""The only place that touches JSON and base64: wire bytes to typed events and back."""

from __future__ import annotations

import base64
import binascii
import re

import msgspec
import numpy as np

from .client_events import EVENT_TYPES, ClientEvent
from .errors import ProtocolError, quote
from .server_events import ServerEvent

# GA renamed these; a session that asked for beta names (OpenAI-Beta: realtime=v1) gets the old ones.
BETA_EVENT_NAMES = {
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
}


class _Envelope(msgspec.Struct):
    type: str
    event_id: str | None = None


_envelope_decoder = msgspec.json.Decoder(_Envelope)
_event_decoders = {name: msgspec.json.Decoder(cls) for name, cls in EVENT_TYPES.items()}
_encoder = msgspec.json.Encoder()
_PATH = re.compile(r" - at `\$\.?(.*)`$")
_MISSING = re.compile(r"Object missing required field `([^`]*)`")
# The deepest real event (a tool's JSON schema inside session.update) nests a few dozen levels;
# the decoder itself recurses and fails past ~1,000.
MAX_NESTING_DEPTH = 64
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_EVENT_ID_MEMBER = re.compile(rb'"event_id"\s*:\s*("[^"\\]{0,256}(?:\\.[^"\\]{0,256}){0,64}")')
_OPENERS = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSERS = np.frombuffer(b"]}", dtype=np.uint8)


def decode_client_event(raw: str | bytes) -> ClientEvent:
    """Raises ProtocolError naming the offending field; the event_id is kept whenever it was readable."""
    _check_nesting(raw)
    try:
        envelope = _envelope_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        if _is_malformed_json(raw):
            raise ProtocolError(
                "invalid_json", f"The message is not valid JSON: {exc}", event_id=peek_event_id(raw)
            ) from None
        raise _validation_error(exc, "invalid_event", event_id=_peek_event_id(raw)) from None
    decoder = _event_decoders.get(envelope.type)
    if decoder is None:
        raise ProtocolError(
            "unknown_event_type",
            f"Unknown event type {quote(envelope.type)}.",
            param="type",
            event_id=envelope.event_id,
        )
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc, "invalid_value", event_id=envelope.event_id) from None


def encode_server_event(event: ServerEvent, *, beta_names: bool = False) -> str:
    data = _encoder.encode(event)
    if beta_names:
        renamed = BETA_EVENT_NAMES.get(type(event).__struct_config__.tag)  # type: ignore[attr-defined]
        if renamed is not None:
            obj = msgspec.json.decode(data)
            obj["type"] = renamed
            data = _encoder.encode(obj)
    return data.decode()


def decode_base64(value: str, *, param: str) -> bytes:
    try:
        # binascii reads an ASCII str in place; base64.b64decode would first copy all of it to bytes.
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("invalid_base64", f"`{param}` is not valid base64.", param=param) from None


def encode_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _is_malformed_json(raw: str | bytes) -> bool:
    try:
        msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return True
    return False


def _peek_event_id(raw: str | bytes) -> str | None:
    obj = msgspec.json.decode(raw)
    event_id = obj.get("event_id") if isinstance(obj, dict) else None
    return event_id if isinstance(event_id, str) else None


def peek_event_id(raw: str | bytes) -> str | None:
    """The top-level event_id of a message that will not be decoded (too deep, refused), if one is found
    cheaply: the first `"event_id"` member outside any string and at the top level of the object."""
    data = raw.encode() if isinstance(raw, str) else raw
    match = _EVENT_ID_MEMBER.search(data)
    if match is None or _nesting_depth(data[: match.start()], final=True) != 1:
        return None
    try:
        return msgspec.json.decode(match.group(1), type=str)
    except msgspec.DecodeError:
        return None


def _check_nesting(raw: str | bytes) -> None:
    # Fast path: base64 and most text hold no brackets at all.
    if isinstance(raw, str):
        if raw.count("[") + raw.count("{") <= MAX_NESTING_DEPTH:
            return
        data = raw.encode()
    else:
        if raw.count(b"[") + raw.count(b"{") <= MAX_NESTING_DEPTH:
            return
        data = raw
    if _nesting_depth(data) > MAX_NESTING_DEPTH:
        raise ProtocolError(
            "invalid_event",
            f"The message nests deeper than {MAX_NESTING_DEPTH} levels.",
            event_id=peek_event_id(data),
        )


def _nesting_depth(data: bytes, *, final: bool = False) -> int:
    """The deepest bracket nesting outside strings (or, with final, the depth at the end of data)."""
    structure = np.frombuffer(_JSON_STRING.sub(b"0", data), dtype=np.uint8)
    steps = np.isin(structure, _OPENERS).astype(np.int32) - np.isin(structure, _CLOSERS).astype(np.int32)
    depths = np.cumsum(steps)
    if final:
        return int(depths[-1]) if len(depths) else 0
    return int(depths.max(initial=0))


def _validation_error(exc: msgspec.DecodeError, code: str, *, event_id: str | None) -> ProtocolError:
    message = _quote_value_in(str(exc))
    match = _PATH.search(message)
    param = match.group(1)[:128] or None if match else None
    missing = _MISSING.match(message)
    if missing:
        code = "missing_required_parameter"
        param = f"{param}.{missing.group(1)}" if param else missing.group(1)
    elif message.startswith("Invalid base64"):
        code = "invalid_base64"
    elif message.startswith("Expected") and param is not None:
        code = "invalid_type"
    return ProtocolError(code, message[0].upper() + message[1:] + ".", param=param, event_id=event_id)


def _quote_value_in(message: str) -> str:
    """msgspec quotes a bad value in full (`Invalid enum value '…' - at `$.x``): cut it to a prefix."""
    head, _, path = message.partition(" - at `")
    first, last = head.find("'"), head.rfind("'")
    if first != -1 and last > first:
        head = head[:first] + quote(head[first + 1 : last]) + head[last + 1 :]
    return head + (f" - at `{path}" if path else "")
