"""A rendered prompt: model input ids, the cache keys that identify them, and where media soft tokens sit."""

from __future__ import annotations

from dataclasses import dataclass

from .port import AudioPart, ImagePart

# What the KV cache compares: a token id, or (media key, index) for a media soft token, whose
# placeholder id says nothing about the content behind it.
Key = int | tuple[str, int]
MediaPart = AudioPart | ImagePart


@dataclass(frozen=True)
class MediaSpan:
    part: MediaPart
    # Index in Prompt.ids of the first soft token (after the begin marker).
    start: int
    n_tokens: int


@dataclass(frozen=True)
class Reply:
    """An answer the engine produced: its exact tokens, the text its deltas carried, the calls it made."""

    token_ids: tuple[int, ...]
    text: str
    call_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Prompt:
    # Model input ids; a media soft token holds its placeholder id.
    ids: tuple[int, ...]
    keys: tuple[Key, ...]
    media: tuple[MediaSpan, ...]

    def media_tokens(self, kind: type[MediaPart]) -> int:
        return sum(span.n_tokens for span in self.media if isinstance(span.part, kind))
