"""From sampled token ids to answer text: stop and banned ids, hidden reasoning, UTF-8-safe streaming."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# A UTF-8 character is at most four bytes, so at most four byte-fallback tokens can be incomplete.
_MAX_HELD_TOKENS = 4


class TextDecoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...


@dataclass(frozen=True)
class TokenRules:
    """What a model's answer may contain: the ids that end it, the ids never sampled, and the
    (start, end) ids of a span that is cached and replayed but not shown (a reasoning channel)."""

    stop_ids: frozenset[int]
    suppressed_ids: frozenset[int]
    hidden_span: tuple[int, int] | None = None


class ThinkingFilter:
    """Drops the rules' hidden spans (Gemma 4's `<|channel>…<channel|>`): reasoning is not spoken.

    The reasoning tokens still go into the KV cache and the replayed turn; only the text deltas lose them.
    """

    def __init__(self, hidden_span: tuple[int, int] | None) -> None:
        self._start, self._end = hidden_span or (None, None)
        self._inside = False

    def visible(self, token_id: int) -> bool:
        if token_id == self._start:
            self._inside = True
            return False
        if token_id == self._end:
            self._inside = False
            return False
        return not self._inside


class StreamingDetokenizer:
    """Emits text as tokens arrive, holding back a tail that ends in a partial UTF-8 character.

    Decodes a short window (from the last emitted boundary) rather than the whole answer, so each
    step costs O(window); the concatenated output equals decoding all tokens at once.
    """

    def __init__(self, tokenizer: TextDecoder) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        # _ids[_prefix:_read] were already emitted; decoding from _prefix keeps word-boundary spaces right.
        self._prefix = 0
        self._read = 0

    def add(self, token_id: int) -> str:
        self._ids.append(token_id)
        held = len(self._ids) - self._read
        text = self._decode(self._ids[self._prefix :])
        if text.endswith("\ufffd") and held < _MAX_HELD_TOKENS:
            return ""
        return self._advance(text)

    def flush(self) -> str:
        if self._read == len(self._ids):
            return ""
        return self._advance(self._decode(self._ids[self._prefix :]))

    def _advance(self, text: str) -> str:
        emitted = self._decode(self._ids[self._prefix : self._read])
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(emitted) :]

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)
