"""The one protocol error type: it carries everything the `error` event needs."""

from __future__ import annotations


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
