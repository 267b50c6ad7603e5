"""The one protocol error type: it carries everything the `error` event needs."""

from __future__ import annotations

# Client values are quoted in error messages only this far, so an error never echoes a payload back.
MAX_QUOTED_CHARS = 48


class ProtocolError(Exception):
    """A client mistake the session answers with an `error` event, then carries on."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        event_id: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.event_id = event_id
        self.error_type = error_type

    def for_event(self, event_id: str | None) -> ProtocolError:
        """The same error, attributed to the client event that caused it."""
        if self.event_id is None:
            self.event_id = event_id
        return self


def quote(value: object, max_chars: int = MAX_QUOTED_CHARS) -> str:
    """A client value for an error message: quoted, escaped, and cut to a short prefix."""
    try:
        text = value if isinstance(value, str) else str(value)
    except ValueError:  # an integer too long to print
        return "<a number too long to show>"
    shown = repr(text[:max_chars])
    if len(text) <= max_chars:
        return shown
    return f"{shown}… ({len(text)} characters)"
