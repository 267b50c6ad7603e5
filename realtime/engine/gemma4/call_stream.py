"""Splits an answer's token stream into text tokens and complete tool calls, as the tokens arrive."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .tokens import QUOTE_ID, TOOL_CALL_END_ID, TOOL_CALL_START_ID
from .tools import ToolSyntaxError, parse_call


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: str


# What one token is: text to show, held (inside a call), a finished call, or the raw text of a call that
# did not parse (shown as text rather than lost).
Routed = bool | ParsedCall | str


class CallStream:
    """`decode` turns ids into text with special tokens skipped; the call's own tokens are never text."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._segments: list[list[int]] | None = None

    @property
    def inside_call(self) -> bool:
        return self._segments is not None

    def route(self, token_id: int) -> Routed:
        """True for a text token, False for a token held inside a call; the call itself at its end."""
        if self._segments is None:
            if token_id != TOOL_CALL_START_ID:
                return True
            self._segments = [[]]
            return False
        if token_id == QUOTE_ID:
            self._segments.append([])
            return False
        if token_id != TOOL_CALL_END_ID:
            self._segments[-1].append(token_id)
            return False
        texts = [self._decode(ids) for ids in self._segments]
        self._segments = None
        try:
            return ParsedCall(*parse_call(texts))
        except ToolSyntaxError:
            return '<|"|>'.join(texts)
