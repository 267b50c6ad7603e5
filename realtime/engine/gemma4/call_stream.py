"""Splits an answer's token stream into text and complete tool calls, as the tokens arrive."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..decoding import StreamingDetokenizer, ThinkingFilter, TokenRules
from ..prompt import Reply
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


class Answer:
    """The answer's tokens, split into the text its deltas carry and the tool calls it makes."""

    def __init__(self, tokenizer: Any, rules: TokenRules) -> None:
        self.token_ids: list[int] = []
        self.text = ""
        self.call_ids: list[str] = []
        self._thinking = ThinkingFilter(rules.hidden_span)
        self._detokenizer = StreamingDetokenizer(tokenizer)
        self._calls = CallStream(lambda ids: tokenizer.decode(ids, skip_special_tokens=True))
        self._open_call_at = 0
        # A call whose last token came as the answer was cancelled: never shown, so never made.
        self._call_unmade = False

    def add(self, token_id: int) -> str | ParsedCall:
        self.token_ids.append(token_id)
        if not self._thinking.visible(token_id):
            return ""
        was_inside = self._calls.inside_call
        routed = self._calls.route(token_id)
        if routed is True:
            delta = self._detokenizer.add(token_id)
        elif routed is False:
            if was_inside:
                return ""
            # A call starts: the text before it goes out whole first.
            self._open_call_at = len(self.token_ids) - 1
            delta = self._detokenizer.flush()
        elif isinstance(routed, ParsedCall):
            return routed
        else:
            delta = routed
        self.text += delta
        return delta

    def flush(self) -> str:
        tail = self._detokenizer.flush()
        self.text += tail
        return tail

    def keep_unshown(self, token_id: int) -> None:
        """A token the cache holds that no output showed (the answer was cancelled as it came): its id is
        replayed, its text was never said, and a call it completes was never made."""
        said, was_inside = self.text, self._calls.inside_call
        self.add(token_id)
        # The call it closed, parsed or not, never went out: it is cut from the replay like an open one.
        self._call_unmade = was_inside and not self._calls.inside_call
        self.text = said

    def reply(self) -> Reply:
        # A call cut off (cancelled, out of tokens) was never made: it is not replayed either.
        cut = self._calls.inside_call or self._call_unmade
        token_ids = self.token_ids[: self._open_call_at] if cut else self.token_ids
        return Reply(tuple(token_ids), self.text, tuple(self.call_ids))
