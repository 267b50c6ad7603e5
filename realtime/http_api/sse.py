"""Server-sent events: framing the events we stream, and splitting an upstream stream into its data."""

from __future__ import annotations

from collections.abc import Iterator


def sse_frame(data: bytes, event: str | None = None) -> bytes:
    """One event; `data` is one line of JSON (JSON never needs a raw newline)."""
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + data + b"\n\n"


class SseDecoder:
    """Feed raw lines as they arrive; yields each complete event's data (multi-line data joined by \\n).
    Comments, `event:`, `id:` and `retry:` lines carry nothing chat completions needs."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, raw_line: bytes) -> Iterator[str]:
        line = raw_line.decode("utf-8").rstrip("\r\n")
        if not line:
            if self._data:
                yield "\n".join(self._data)
                self._data = []
            return
        if line.startswith("data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(" ") else value)

    def close(self) -> Iterator[str]:
        """A stream may end without the blank line after its last event."""
        if self._data:
            yield "\n".join(self._data)
            self._data = []
