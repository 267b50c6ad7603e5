"""Renders instructions and conversation turns into Gemma 4 chat-format token ids, with media spans marked."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...audio.clip import split_clip
from ..port import AudioPart, ImagePart, Part, TextPart, Turn
from ..prompt import Key, MediaPart, MediaSpan, Prompt, Reply
from .audio_encoder import MAX_CLIP_N_SAMPLES

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

    def render(self, instructions: str, turns: Sequence[Turn], replies: Mapping[str, Reply]) -> Prompt:
        builder = _Builder(self._tokenizer, self._tokens)
        builder.token(self._tokens.bos)
        if instructions.strip():
            self._turn(builder, "system", (TextPart(instructions),))
        for turn in turns:
            reply = replies.get(turn.item_id) if turn.role == "assistant" else None
            if reply is not None and _turn_text(turn) == reply.text:
                self._replayed_turn(builder, reply)
            else:
                self._turn(builder, turn.role, turn.parts)
        builder.token(self._tokens.turn_start)
        builder.text("model\n")
        return builder.build()

    def _turn(self, builder: _Builder, role: str, parts: Sequence[Part]) -> None:
        builder.token(self._tokens.turn_start)
        builder.text(f"{_ROLE_NAMES[role]}\n")
        for part in parts:
            if isinstance(part, TextPart):
                # The Gemma 4 template trims each text item.
                builder.text(part.text.strip())
            elif isinstance(part, AudioPart):
                for clip in audio_clips(part):
                    builder.media_part(clip, self._count_media_tokens(clip))
            else:
                builder.media_part(part, self._count_media_tokens(part))
        builder.token(self._tokens.turn_end)
        builder.text("\n")

    def _replayed_turn(self, builder: _Builder, reply: Reply) -> None:
        # The engine's own tokens, not a re-tokenization of its text: the cached prefix then extends as is.
        builder.token(self._tokens.turn_start)
        builder.text("model\n")
        builder.replay(reply.token_ids)
        builder.token(self._tokens.turn_end)
        builder.text("\n")


def _turn_text(turn: Turn) -> str:
    return "".join(part.text for part in turn.parts if isinstance(part, TextPart))
