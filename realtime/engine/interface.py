"""The contract between the session core and a model backend: requests in, outputs out."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
from PIL import Image

ENGINE_SAMPLE_RATE_HZ = 16_000
# Gemma 4 hears at most 30 s per audio clip (750 tokens of 40 ms); longer turns are split into clips.
MAX_CLIP_N_SAMPLES = 30 * ENGINE_SAMPLE_RATE_HZ

Role = Literal["system", "user", "assistant"]
StopReason = Literal["end_of_turn", "max_tokens", "cancelled", "error"]


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True, eq=False)
class AudioPart:
    """Mono float32 samples in [-1, 1] at ENGINE_SAMPLE_RATE_HZ."""

    samples: np.ndarray
    # Stable identity of this clip (item id + content index); the prompt cache compares keys, not samples.
    key: str


@dataclass(frozen=True, eq=False)
class ImagePart:
    """An RGB image, already decoded and bounded."""

    image: Image.Image
    key: str


Part = TextPart | AudioPart | ImagePart


@dataclass(frozen=True)
class Turn:
    role: Role
    parts: tuple[Part, ...]
    # The conversation item id; an assistant turn the engine produced is replayed from its own tokens.
    item_id: str


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class GenerationRequest:
    session_id: str
    response_id: str
    # Item id the answer will be stored under, so the next turn can replay its exact tokens.
    output_item_id: str
    instructions: str
    turns: tuple[Turn, ...]
    max_output_tokens: int | None = None
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    # False for out-of-band responses (conversation "none"): the session's cache is left untouched.
    use_session_cache: bool = True


@dataclass(frozen=True)
class Usage:
    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    input_image_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0

    @property
    def input_tokens(self) -> int:
        return self.input_text_tokens + self.input_audio_tokens + self.input_image_tokens


@dataclass(frozen=True)
class TextDelta:
    response_id: str
    text: str


@dataclass(frozen=True)
class GenerationDone:
    response_id: str
    stop_reason: StopReason
    usage: Usage
    error_message: str | None = None


EngineOutput = TextDelta | GenerationDone


@dataclass(frozen=True)
class AudioTurnStart:
    """Speech has begun: the engine may prefill the conversation so far and this turn's opening, then
    its audio as it arrives, so that little is left to do when the user stops (streaming prefill)."""

    session_id: str
    instructions: str
    # The conversation before this turn, as the coming GenerationRequest will carry it.
    turns: tuple[Turn, ...]
    # The user item this turn becomes: `images`, then one AudioPart keyed `audio_key`.
    item_id: str
    images: tuple[ImagePart, ...]
    audio_key: str


class Backend(Protocol):
    """A model behind the engine thread. Every method is called on that one thread only."""

    def load(self) -> None:
        """Load weights and warm up every modality once."""

    def generate(
        self, request: GenerationRequest, should_stop: Callable[[], bool]
    ) -> Iterator[EngineOutput]:
        """Yield after each unit of work (a prefill chunk or one token), so the worker can interleave
        sessions. Yields zero or more TextDelta and ends with exactly one GenerationDone; checks
        should_stop() before every unit and then ends with stop_reason "cancelled"."""

    def drop_session(self, session_id: str) -> None:
        """Free the session's conversation cache."""

    def begin_audio_turn(self, start: AudioTurnStart) -> Iterator[None]:
        """Start a streamed turn; one yield per unit of work. A later generate() whose last turn is this
        one (same item id, images and audio key) reuses everything prefilled for it; any other request
        first rolls the cache back to where it stood before the turn."""

    def append_audio_turn(self, session_id: str, samples: np.ndarray) -> Iterator[None]:
        """More of the streamed turn's audio (16 kHz float32, following what came before)."""

    def abandon_audio_turn(self, session_id: str) -> None:
        """The streamed turn will not be committed: return the cache exactly to its state before it."""
