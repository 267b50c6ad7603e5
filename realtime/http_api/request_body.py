"""Request bodies to typed structs, with msgspec's own message and the failing field as the error's param."""

from __future__ import annotations

import re
from typing import TypeVar

import msgspec
from aiohttp import web

from ..protocol.errors import ProtocolError

T = TypeVar("T")
_AT_PATH = re.compile(r" - at `\$\.?(.*)`$")
TOO_LARGE = "request_too_large"


async def read_body(http: web.Request, body_type: type[T]) -> T:
    try:
        raw = await http.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise ProtocolError(TOO_LARGE, f"The request body is too large: {exc.text}") from None
    return decode_body(raw, body_type)


def error_status(exc: ProtocolError) -> int:
    return 413 if exc.code == TOO_LARGE else 400


def decode_body(raw: bytes, body_type: type[T]) -> T:
    try:
        return msgspec.json.decode(raw, type=body_type)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _AT_PATH.search(message)
        param = match.group(1) if match else None
        raise ProtocolError("invalid_request_body", message, param=param or None) from None
    except msgspec.DecodeError:
        raise ProtocolError("invalid_json", "The request body is not valid JSON.") from None
