"""From sampled token ids to answer text: stop and banned ids, hidden reasoning, UTF-8-safe streaming."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from .gemma4.tools import TOOL_RESPONSE_START_ID

# Gemma 4 ids (public tokenizer files; see FACTS.md).
EOS_ID = 1
END_OF_TURN_ID = 106
CHANNEL_START_ID = 100
CHANNEL_END_ID = 101
# pad, bos, <|think|> (system-turn only), <|turn> (a model turn must end with <turn|> first), and the
# multimodal markers and placeholders: a model can emit the end markers by mistake, and none of these
# belongs in an answer.
NEVER_EMITTED_IDS = frozenset({0, 2, 98, 105, 255_999, 256_000, 258_880, 258_881, 258_882, 258_883})
# A UTF-8 character is at most four bytes, so at most four byte-fallback tokens can be incomplete.
_MAX_HELD_TOKENS = 4


class TextDecoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...


@dataclass(frozen=True)
class TokenRules:
    stop_ids: frozenset[int]
    suppressed_ids: frozenset[int]

    @classmethod
    def for_model(cls, config: Any, extra_suppressed: Iterable[int] = ()) -> TokenRules:
        eos = getattr(config, "eos_token_id", None) or []
        eos_ids = {eos} if isinstance(eos, int) else set(eos)
        media_ids = (
            getattr(config, name, None)
            for name in (
                "image_token_id",
                "audio_token_id",
                "video_token_id",
                "boi_token_id",
                "eoi_token_id",
                "boa_token_id",
                "eoa_token_id",
            )
        )
        suppressed = NEVER_EMITTED_IDS | {i for i in media_ids if i is not None} | set(extra_suppressed)
        # After its calls the model stops at <|tool_response>, where the results go.
        stop_ids = eos_ids | {EOS_ID, END_OF_TURN_ID, TOOL_RESPONSE_START_ID}
        return cls(frozenset(stop_ids), frozenset(suppressed))


class ThinkingFilter:
    """Drops `<|channel>…<channel|>` spans: Gemma 4's reasoning channel is not part of the spoken answer.

    The reasoning tokens still go into the KV cache and the replayed turn; only the text deltas lose them.
    """

    def __init__(self) -> None:
        self._inside = False

    def visible(self, token_id: int) -> bool:
        if token_id == CHANNEL_START_ID:
            self._inside = True
            return False
        if token_id == CHANNEL_END_ID:
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
