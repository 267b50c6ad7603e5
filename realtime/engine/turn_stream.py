"""A user turn prefilled while it is spoken: where its audio starts, how to undo it, and what was heard."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import mlx.core as mx
import numpy as np

from .conversation_cache import CacheSnapshot
from .gemma4.audio_encoder import MAX_CLIP_N_SAMPLES, AudioStreamEncoder
from .gemma4.chat_format import PromptRenderer, clip_key
from .port import ENGINE_SAMPLE_RATE_HZ, AudioPart, AudioTurnStart, GenerationRequest, Turn
from .prefill import EmbeddingPiece
from .prompt import Key, Prompt, Reply

# Audio is encoded and prefilled at most this much per step, so a burst (the speech before the stream could
# begin, a client sending faster than real time) is still many small steps the worker can interleave.
_STEP_N_SAMPLES = ENGINE_SAMPLE_RATE_HZ


def render_opening(renderer: PromptRenderer, start: AudioTurnStart, replies: Mapping[str, Reply]) -> Prompt:
    """The prompt the turn's request will have, up to its first audio soft token.

    Rendered from the request's own turns with the audio still empty, so the two cannot disagree.
    """
    empty = AudioPart(np.zeros(0, np.float32), start.audio_key)
    turn = Turn("user", (*start.images, empty), start.item_id)
    prompt = renderer.render(start.instructions, (*start.turns, turn), replies, start.tools)
    first_clip = clip_key(start.audio_key, 0)
    audio_start = next(span.start for span in prompt.media if span.part.key == first_clip)
    media = tuple(span for span in prompt.media if span.start < audio_start)
    return Prompt(prompt.ids[:audio_start], prompt.keys[:audio_start], media)


class TurnStream:
    """Invariant: the cache holds the turn's opening, then its first `n_rows` audio soft tokens.

    Only the turn's first clip streams: the chat format splits longer audio into 30 s clips, and the
    later ones are encoded as usual when the request comes.
    """

    def __init__(
        self,
        start: AudioTurnStart,
        snapshot: CacheSnapshot,
        encoder: AudioStreamEncoder,
        audio_start: int,
        dtype: mx.Dtype,
    ) -> None:
        self.start = start
        # The cache before the turn: any request that does not continue it rolls back to this.
        self.snapshot = snapshot
        self.audio_start = audio_start
        self._encoder = encoder
        self._dtype = dtype
        self._clip_key = clip_key(start.audio_key, 0)
        self._heard = np.zeros(MAX_CLIP_N_SAMPLES, np.float32)
        self._n_heard = 0
        self._rows: list[mx.array] = []

    @property
    def n_rows(self) -> int:
        return self._encoder.n_tokens_emitted

    @property
    def encoder(self) -> AudioStreamEncoder:
        return self._encoder

    def slices(self, samples_16k: np.ndarray) -> Iterator[np.ndarray]:
        """The samples as encoder pushes of at most a second each, every one recorded as heard; the rows a
        push makes final go through `heard_rows`."""
        for offset in range(0, len(samples_16k), _STEP_N_SAMPLES):
            room = MAX_CLIP_N_SAMPLES - self._n_heard
            step = samples_16k[offset : offset + min(_STEP_N_SAMPLES, room)]
            if not len(step):
                return
            self._heard[self._n_heard : self._n_heard + len(step)] = step
            self._n_heard += len(step)
            yield step

    def continuation(
        self, request: GenerationRequest, prompt: Prompt, cached_keys: list[Key]
    ) -> AudioPart | None:
        """The request's clip that continues this turn: same item, prompt up to here and samples so far."""
        if not request.turns or request.turns[-1].item_id != self.start.item_id:
            return None
        span = next((s for s in prompt.media if s.part.key == self._clip_key), None)
        if span is None or not isinstance(span.part, AudioPart) or span.start != self.audio_start:
            return None
        n_cached = len(cached_keys)
        if n_cached != span.start + self.n_rows or prompt.keys[:n_cached] != tuple(cached_keys):
            return None
        samples, heard = span.part.samples, self._heard[: self._n_heard]
        if len(samples) < len(heard) or not np.array_equal(samples[: len(heard)], heard):
            return None
        return span.part

    def finish(self, part: AudioPart) -> None:
        """Encodes the clip's remaining rows (the samples not yet heard, then the encoder's tail); `rows()`
        then holds the whole clip's."""
        self.heard_rows(self._encoder.finish(np.asarray(part.samples[self._n_heard :], np.float32)))

    def rows(self) -> mx.array:
        """Every row streamed so far: once finished, the clip's whole encoding."""
        return mx.concatenate(self._rows) if self._rows else mx.zeros((0,), self._dtype)

    def heard_rows(self, rows: mx.array) -> EmbeddingPiece:
        """Rows the encoder made final, keyed by their place in the clip and kept for `rows()`."""
        rows = rows.astype(self._dtype)
        self._rows.append(rows)
        first = self.n_rows - rows.shape[0]
        keys = tuple((self._clip_key, i) for i in range(first, self.n_rows))
        return EmbeddingPiece(keys, rows, "audio")
