"""Gemma 4 audio-token embeddings computed while speech is still arriving, equal to a one-shot encode."""

from __future__ import annotations

import math
from typing import Any, Protocol

import mlx.core as mx
import numpy as np

from ..port import ENGINE_SAMPLE_RATE_HZ
from .loading import LoadedModel

# Gemma 4 hears at most 30 s per audio clip (750 tokens of 40 ms); the processor's feature extractor cuts
# clips there too, and the chat format splits longer audio into clips of this length.
MAX_CLIP_N_SAMPLES = 30 * ENGINE_SAMPLE_RATE_HZ

# Two stride-2 subsampling convolutions: one encoder frame (one audio token) per four mel hops.
_MEL_HOPS_PER_FRAME = 4


def expected_n_tokens(processor: Any, n_samples: int) -> int:
    # The processor's own float arithmetic, not ceil(n / 640): the two differ at 257,920 and 260,480 samples.
    duration_ms = n_samples / processor.feature_extractor.sampling_rate * 1000.0
    return min(math.ceil(duration_ms / processor.audio_ms_per_token), processor.audio_seq_length)


class AudioStreamEncoder(Protocol):
    n_tokens_emitted: int

    def push(self, samples_16k: np.ndarray) -> mx.array: ...

    def finish(self) -> mx.array: ...


class IncrementalAudioEncoder:
    """One utterance: push samples as they arrive, then finish; all rows together equal a one-shot encode.

    Encoder frame t reads samples [640 t - 640, 640 t + 640) through the subsampling convolutions and
    counts as valid once a later sample exists, so it is final when sample 640 (t + 1) has arrived; the
    conformer above it looks only backwards (chunked attention with no right context, causal convolutions).
    Each conformer block therefore runs on the new frames plus a few of its own earlier inputs, cached, and
    that window starts on an attention-chunk boundary so every kept frame is computed exactly as in the
    whole-clip encode. Rows come in embed_audio's dtype; a one-shot prompt holds them cast to the text dtype.
    """

    def __init__(self, model: Any, processor: Any, step_ms: int = 320) -> None:
        self._tower = model.audio_tower
        self._embed_audio = model.embed_audio
        self._processor = processor
        self._extractor = processor.feature_extractor
        self._samples_per_frame = self._extractor.hop_length * _MEL_HOPS_PER_FRAME
        frame_ms = self._samples_per_frame * 1000 // self._extractor.sampling_rate
        # Encoding runs in steps: one frame at a time would pay the per-block context for every frame.
        self._step_frames = max(1, step_ms // frame_ms)
        config = self._tower.config
        self._chunk_frames = config.attention_chunk_size
        # How far back a block's output reads its input: attention's past horizon, then the causal conv.
        self._block_reach_frames = max(0, config.attention_context_left - 1) + config.conv_kernel_size - 1
        self._causal_valid_mask = self._tower._build_causal_valid_mask()
        self._samples = np.zeros(MAX_CLIP_N_SAMPLES, np.float32)
        self._n_samples = 0
        self.n_tokens_emitted = 0
        # Each block's input for frames [_context_start_frame, n_tokens_emitted): the next left context.
        self._block_inputs: list[mx.array] = []
        self._context_start_frame = 0
        self._first_row: mx.array | None = None

    def push(self, samples_16k: np.ndarray) -> mx.array:
        n_new = min(len(samples_16k), MAX_CLIP_N_SAMPLES - self._n_samples)
        self._samples[self._n_samples : self._n_samples + n_new] = samples_16k[:n_new]
        self._n_samples += n_new
        n_final = min((self._n_samples - 1) // self._samples_per_frame, self._processor.audio_seq_length)
        if n_final - self.n_tokens_emitted < self._step_frames:
            return self._no_rows()
        return self._emit(self._encode(n_final))

    def finish(self) -> mx.array:
        n_tokens = expected_n_tokens(self._processor, self._n_samples)
        rows = [self._emit(self._encode(n_tokens))] if n_tokens > self.n_tokens_emitted else []
        n_missing = n_tokens - self.n_tokens_emitted
        if n_missing > 0:
            # mlx-vlm 0.7.10 scatters encoder rows modulo their count: when the processor counts one token
            # more than the encoder has frames (clips 1-160 samples past a 640-sample boundary), that token
            # gets frame 0's row; mirrored so that a streamed prompt equals a one-shot one. Clips of at
            # most 128 samples have no frame (the one-shot encode fails): they get a padding frame's zeros.
            first = self._first_row if self._first_row is not None else self._no_rows(1)
            rows.append(self._emit(mx.repeat(first, n_missing, axis=0)))
        return mx.concatenate(rows) if rows else self._no_rows()

    def _encode(self, end_frame: int) -> mx.array:
        start_frame = self.n_tokens_emitted
        frames, invalid = self._subsample(start_frame, end_frame)
        # The mask's length is the true frame count: the convolutions return a frame even from no mel frame.
        if not invalid.shape[1]:
            return self._no_rows()
        context_start = self._context_start(start_frame)
        next_context_start = self._context_start(start_frame + frames.shape[1])
        n_context = start_frame - context_start
        window_invalid = mx.concatenate([mx.zeros((1, n_context), mx.bool_), invalid], axis=1)
        block_inputs = []
        for i, block in enumerate(self._tower.layers):
            if n_context:
                cached = self._block_inputs[i][:, context_start - self._context_start_frame :]
                frames = mx.concatenate([cached, frames], axis=1)
            block_inputs.append(frames[:, next_context_start - context_start :])
            frames = block(frames, window_invalid, self._causal_valid_mask)[:, n_context:]
        if self._tower.output_proj is not None:
            frames = self._tower.output_proj(frames)
        frames = mx.where(invalid[:, :, None], 0.0, frames)
        rows = self._embed_audio(frames)[0]
        self._block_inputs, self._context_start_frame = block_inputs, next_context_start
        mx.eval(rows, self._block_inputs)
        return rows

    def _subsample(self, start_frame: int, end_frame: int) -> tuple[mx.array, mx.array]:
        # A window's first frame reads the zero padding before it, so the window starts one frame early.
        window_start = max(start_frame - 1, 0)
        waveform = self._samples[window_start * self._samples_per_frame : self._n_samples]
        # Window starts are multiples of 640 samples: mel hops, the extractor's 128-sample padding and the
        # stride-2 convolutions all line up with the whole clip's, including its end.
        features = self._extractor([waveform])
        mel = mx.array(features["input_features"][0])[None]
        invalid = mx.array(~features["input_features_mask"][0])[None]
        frames, invalid = self._tower.subsample_conv_projection(mel, invalid)
        kept = slice(start_frame - window_start, end_frame - window_start)
        return frames[:, kept], invalid[:, kept]

    def _context_start(self, frame: int) -> int:
        # Chunk-aligned, so a kept frame sits where it does in its attention block in a one-shot encode.
        earliest = frame - self._block_reach_frames
        return max(0, earliest // self._chunk_frames * self._chunk_frames)

    def _emit(self, rows: mx.array) -> mx.array:
        if self._first_row is None and rows.shape[0]:
            self._first_row = rows[:1]
        self.n_tokens_emitted += rows.shape[0]
        return rows

    def _no_rows(self, n_rows: int = 0) -> mx.array:
        return mx.zeros((n_rows, self._embed_audio.embedding_projection.weight.shape[0]))


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
