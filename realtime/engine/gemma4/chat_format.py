"""Renders instructions and conversation turns into Gemma 4 chat-format token ids, with media spans marked."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...audio.clip import split_clip
from ..port import AudioPart, ImagePart, Part, TextPart, ToolCallPart, ToolResultPart, ToolSpec, Turn
from ..prompt import Key, MediaPart, MediaSpan, Prompt, Reply
from .audio_encoder import MAX_CLIP_N_SAMPLES
from .tools import Piece, call_pieces, declaration_pieces, result_pieces

_ROLE_NAMES = {"system": "system", "user": "user", "assistant": "model"}


def clip_key(audio_key: str, clip_index: int) -> str:
    """The cache identity of one clip of an audio part: the part's key and the clip's place in it."""
    return f"{audio_key}/{clip_index}"


def audio_clips(part: AudioPart) -> list[AudioPart]:
    """Gemma 4 hears at most 30 s per clip: longer audio goes in as consecutive clips, longest first."""
    if not len(part.samples):
        return [AudioPart(part.samples, clip_key(part.key, 0))]
    clips = split_clip(np.asarray(part.samples), MAX_CLIP_N_SAMPLES)
    return [AudioPart(clip, clip_key(part.key, n)) for n, clip in enumerate(clips)]


@dataclass(frozen=True)
class ChatTokens:
    bos: int
    turn_start: int
    turn_end: int
    image: int
    image_start: int
    image_end: int
    audio: int
    audio_start: int
    audio_end: int

    @classmethod
    def from_processor(cls, processor: Any) -> ChatTokens:
        tokenizer = processor.tokenizer
        # The processor's own marker strings, so spans match what its placeholder expansion writes.
        names = {
            "turn_start": "<|turn>",
            "turn_end": "<turn|>",
            "image": processor.image_token,
            "image_start": processor.boi_token,
            "image_end": processor.eoi_token,
            "audio": processor.audio_token,
            "audio_start": processor.boa_token,
            "audio_end": processor.eoa_token,
        }
        ids = {field: tokenizer.convert_tokens_to_ids(token) for field, token in names.items()}
        missing = [names[f] for f, i in ids.items() if i is None or i == tokenizer.unk_token_id]
        if missing:
            raise ValueError(f"the tokenizer lacks Gemma 4 chat tokens: {missing}")
        return cls(bos=tokenizer.bos_token_id, **ids)


class _Builder:
    def __init__(self, tokenizer: Any, tokens: ChatTokens) -> None:
        self._tokenizer = tokenizer
        self._tokens = tokens
        self._pending_text: list[str] = []
        self.ids: list[int] = []
        self.keys: list[Key] = []
        self.media: list[MediaSpan] = []

    def text(self, text: str) -> None:
        self._pending_text.append(text)

    def token(self, token_id: int) -> None:
        self._flush()
        self.ids.append(token_id)
        self.keys.append(token_id)

    def pieces(self, pieces: Sequence[Piece]) -> None:
        for piece in pieces:
            if isinstance(piece, int):
                self.token(piece)
            else:
                self.text(piece)

    def replay(self, token_ids: Sequence[int]) -> None:
        self._flush()
        self.ids.extend(token_ids)
        self.keys.extend(token_ids)

    def media_part(self, part: MediaPart, n_tokens: int) -> None:
        t = self._tokens
        placeholder, begin, end = (
            (t.image, t.image_start, t.image_end)
            if isinstance(part, ImagePart)
            else (t.audio, t.audio_start, t.audio_end)
        )
        self.token(begin)
        self.media.append(MediaSpan(part, len(self.ids), n_tokens))
        self.ids.extend([placeholder] * n_tokens)
        self.keys.extend((part.key, i) for i in range(n_tokens))
        self.token(end)

    def build(self) -> Prompt:
        self._flush()
        return Prompt(tuple(self.ids), tuple(self.keys), tuple(self.media))

    def _flush(self) -> None:
        # Text runs between control tokens are tokenized whole, as the chat template's string would be;
        # split_special_tokens keeps a user's literal "<turn|>" from becoming a control token.
        text = "".join(self._pending_text)
        self._pending_text.clear()
        if text:
            ids = self._tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
            self.ids.extend(ids)
            self.keys.extend(ids)


class PromptRenderer:
    """Deterministic: a conversation always renders to the same ids and keys; the cache relies on it."""

    def __init__(
        self, tokenizer: Any, tokens: ChatTokens, count_media_tokens: Callable[[MediaPart], int]
    ) -> None:
        self._tokenizer = tokenizer
        self._tokens = tokens
        self._count_media_tokens = count_media_tokens

    def render(
        self,
        instructions: str,
        turns: Sequence[Turn],
        replies: Mapping[str, Reply],
        tools: Sequence[ToolSpec] = (),
    ) -> Prompt:
        builder = _Builder(self._tokenizer, self._tokens)
        builder.token(self._tokens.bos)
        if instructions.strip() or tools:
            builder.token(self._tokens.turn_start)
            builder.text("system\n" + instructions.strip())
            builder.pieces(declaration_pieces(tools))
            self._end_turn(builder)
        index = 0
        while index < len(turns):
            if turns[index].role in _MODEL_ROLES:
                index = self._model_turn(builder, turns, index, replies)
            else:
                self._turn(builder, turns[index].role, turns[index].parts)
                index += 1
        # After tool results the model's turn is still open: it goes on from there.
        if not turns or turns[-1].role != "tool":
            builder.token(self._tokens.turn_start)
            builder.text("model\n")
        return builder.build()

    def _turn(self, builder: _Builder, role: str, parts: Sequence[Part]) -> None:
        builder.token(self._tokens.turn_start)
        builder.text(f"{_ROLE_NAMES[role]}\n")
        self._parts(builder, parts)
        self._end_turn(builder)

    def _parts(self, builder: _Builder, parts: Sequence[Part]) -> None:
        for part in parts:
            if isinstance(part, TextPart):
                # The Gemma 4 template trims each text item.
                builder.text(part.text.strip())
            elif isinstance(part, AudioPart):
                for clip in audio_clips(part):
                    builder.media_part(clip, self._count_media_tokens(clip))
            elif isinstance(part, ToolCallPart):
                builder.pieces(call_pieces(part))
            elif isinstance(part, ToolResultPart):
                builder.pieces(result_pieces(part))
            else:
                builder.media_part(part, self._count_media_tokens(part))

    def _end_turn(self, builder: _Builder) -> None:
        builder.token(self._tokens.turn_end)
        builder.text("\n")

    def _model_turn(
        self, builder: _Builder, turns: Sequence[Turn], start: int, replies: Mapping[str, Reply]
    ) -> int:
        """One model turn from consecutive assistant and tool turns; returns the index after them."""
        builder.token(self._tokens.turn_start)
        builder.text("model\n")
        index = start
        while index < len(turns) and turns[index].role in _MODEL_ROLES:
            n_replayed = _replayed_turns(turns, index, replies)
            if n_replayed:
                # The engine's own tokens, not a re-tokenization: the cached prefix then extends as is.
                builder.replay(replies[turns[index].item_id].token_ids)
                index += n_replayed
            else:
                self._parts(builder, turns[index].parts)
                index += 1
        if index < len(turns) or turns[-1].role != "tool":
            self._end_turn(builder)
        return index


# A function_call is an assistant turn and its result a tool turn; Gemma 4 writes both in the model's turn.
_MODEL_ROLES = ("assistant", "tool")


def _replayed_turns(turns: Sequence[Turn], start: int, replies: Mapping[str, Reply]) -> int:
    """How many turns from `start` one stored reply covers (its text and its calls, in order), or 0."""
    reply = replies.get(turns[start].item_id) if turns[start].role == "assistant" else None
    if reply is None:
        return 0
    text, call_ids = "", []
    for index in range(start, len(turns)):
        if turns[index].role != "assistant":
            return 0
        for part in turns[index].parts:
            if isinstance(part, TextPart):
                text += part.text
            elif isinstance(part, ToolCallPart):
                call_ids.append(part.call_id)
        if tuple(call_ids) != reply.call_ids[: len(call_ids)]:
            return 0
        if text == reply.text and tuple(call_ids) == reply.call_ids:
            return index - start + 1
    return 0
