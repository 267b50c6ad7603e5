"""Request bodies to typed structs, with msgspec's own message and the failing field as the error's param."""

from __future__ import annotations

import re
from typing import TypeVar

import msgspec

from ..protocol.errors import ProtocolError

T = TypeVar("T")
_AT_PATH = re.compile(r" - at `\$\.?(.*)`$")


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
