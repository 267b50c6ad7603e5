"""A user turn prefilled while it is spoken: where its audio starts, how to undo it, and what was heard."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import mlx.core as mx
import numpy as np

from .audio_stream import IncrementalAudioEncoder, expected_n_tokens
from .conversation_cache import CacheSnapshot
from .loading import LoadedModel
from .port import (
    ENGINE_SAMPLE_RATE_HZ,
    MAX_CLIP_N_SAMPLES,
    AudioPart,
    AudioTurnStart,
    GenerationRequest,
    Turn,
)
from .prefill import EmbeddingPiece
from .prompt import Key, Prompt, PromptRenderer, Reply

# Audio is encoded and prefilled at most this much per step, so a burst (the speech before the stream could
# begin, a client sending faster than real time) is still many small steps the worker can interleave.
_STEP_N_SAMPLES = ENGINE_SAMPLE_RATE_HZ


class AudioStreamEncoder(Protocol):
    n_tokens_emitted: int

    def push(self, samples_16k: np.ndarray) -> mx.array: ...

    def finish(self) -> mx.array: ...


class FrameAudioEncoder:
    """gemma4_unified's audio input, incrementally: with no encoder, each 640 samples are projected into one
    token on their own, so a row is final as soon as its samples are in; the last one is zero-padded."""

    def __init__(self, model: Any, processor: Any) -> None:
        self._embed_audio = model.embed_audio
        self._processor = processor
        self._samples_per_token = processor.feature_extractor.audio_samples_per_token
        self._pending = np.zeros(0, np.float32)
        self._n_samples = 0
        self._first_row: mx.array | None = None
        self.n_tokens_emitted = 0

    def push(self, samples_16k: np.ndarray) -> mx.array:
        n_new = min(len(samples_16k), MAX_CLIP_N_SAMPLES - self._n_samples)
        self._n_samples += n_new
        self._pending = np.concatenate([self._pending, np.asarray(samples_16k[:n_new], np.float32)])
        n_rows = len(self._pending) // self._samples_per_token
        rows = self._pending[: n_rows * self._samples_per_token]
        self._pending = self._pending[len(rows) :]
        return self._emit(rows.reshape(n_rows, self._samples_per_token))

    def finish(self) -> mx.array:
        n_tokens = expected_n_tokens(self._processor, self._n_samples)
        padded = np.pad(self._pending, (0, (-len(self._pending)) % self._samples_per_token))
        self._pending = padded[:0]
        rows = [self._emit(padded.reshape(-1, self._samples_per_token))]
        n_missing = n_tokens - self.n_tokens_emitted
        if n_missing > 0 and self._first_row is not None:
            # As MediaEncoder mirrors mlx-vlm: a token the processor counts beyond the rows gets row 0 again.
            rows.append(mx.repeat(self._first_row, n_missing, axis=0))
            self.n_tokens_emitted += n_missing
        return mx.concatenate(rows)

    def _emit(self, samples: np.ndarray) -> mx.array:
        if not len(samples):
            return mx.zeros((0, self._embed_audio.embedding_projection.weight.shape[0]))
        rows = self._embed_audio(mx.array(samples)[None])[0]
        mx.eval(rows)
        if self._first_row is None and rows.shape[0]:
            self._first_row = rows[:1]
        self.n_tokens_emitted += rows.shape[0]
        return rows


def stream_encoder(loaded: LoadedModel) -> AudioStreamEncoder:
    if loaded.model_type == "gemma4_unified":
        return FrameAudioEncoder(loaded.model, loaded.processor)
    return IncrementalAudioEncoder(loaded.model, loaded.processor)


def render_opening(renderer: PromptRenderer, start: AudioTurnStart, replies: Mapping[str, Reply]) -> Prompt:
    """The prompt the turn's request will have, up to its first audio soft token.

    Rendered from the request's own turns with the audio still empty, so the two cannot disagree.
    """
    empty = AudioPart(np.zeros(0, np.float32), start.audio_key)
    turn = Turn("user", (*start.images, empty), start.item_id)
    prompt = renderer.render(start.instructions, (*start.turns, turn), replies, start.tools)
    audio_start = next(span.start for span in prompt.media if span.part is empty)
    media = tuple(span for span in prompt.media if span.start < audio_start)
    return Prompt(prompt.ids[:audio_start], prompt.keys[:audio_start], media)


class TurnStream:
    """Invariant: the cache holds the turn's opening, then its first `n_rows` audio soft tokens.

    Only the turn's first clip streams: the session splits longer audio into 30 s clips, which the request
    then carries as further parts, encoded as usual.
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
        self._heard = np.zeros(MAX_CLIP_N_SAMPLES, np.float32)
        self._n_heard = 0

    @property
    def n_rows(self) -> int:
        return self._encoder.n_tokens_emitted

    def hear(self, samples_16k: np.ndarray) -> Iterator[EmbeddingPiece]:
        """The rows these samples make final, one encoder step per item."""
        for offset in range(0, len(samples_16k), _STEP_N_SAMPLES):
            room = MAX_CLIP_N_SAMPLES - self._n_heard
            step = samples_16k[offset : offset + min(_STEP_N_SAMPLES, room)]
            if not len(step):
                return
            self._heard[self._n_heard : self._n_heard + len(step)] = step
            self._n_heard += len(step)
            yield self._keyed(self._encoder.push(step))

    def continuation(
        self, request: GenerationRequest, prompt: Prompt, cached_keys: list[Key]
    ) -> AudioPart | None:
        """The request's clip that continues this turn: same item, prompt up to here and samples so far."""
        if not request.turns or request.turns[-1].item_id != self.start.item_id:
            return None
        span = next((s for s in prompt.media if s.part.key == self.start.audio_key), None)
        if span is None or not isinstance(span.part, AudioPart) or span.start != self.audio_start:
            return None
        n_cached = len(cached_keys)
        if n_cached != span.start + self.n_rows or prompt.keys[:n_cached] != tuple(cached_keys):
            return None
        samples, heard = span.part.samples, self._heard[: self._n_heard]
        if len(samples) < len(heard) or not np.array_equal(samples[: len(heard)], heard):
            return None
        return span.part

    def finish(self, part: AudioPart) -> EmbeddingPiece:
        """The clip's remaining rows: the samples not yet heard, then the encoder's tail."""
        rest = self._encoder.push(np.asarray(part.samples[self._n_heard :], np.float32))
        return self._keyed(mx.concatenate([rest, self._encoder.finish()]))

    def _keyed(self, rows: mx.array) -> EmbeddingPiece:
        first = self.n_rows - rows.shape[0]
        keys = tuple((self.start.audio_key, i) for i in range(first, self.n_rows))
        return EmbeddingPiece(keys, rows.astype(self._dtype), "audio")
