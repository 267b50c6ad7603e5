"""Gemma 4 audio-token embeddings computed while speech is still arriving, equal to a one-shot encode."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
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
_NO_SAMPLES = np.zeros(0, np.float32)


def expected_n_tokens(processor: Any, n_samples: int) -> int:
    # The processor's own float arithmetic, not ceil(n / 640): the two differ at 257,920 and 260,480 samples.
    duration_ms = n_samples / processor.feature_extractor.sampling_rate * 1000.0
    return min(math.ceil(duration_ms / processor.audio_ms_per_token), processor.audio_seq_length)


class AudioStreamEncoder(Protocol):
    n_tokens_emitted: int

    def push(self, samples_16k: np.ndarray) -> mx.array: ...

    def finish(self, last_samples: np.ndarray = ...) -> mx.array:
        """The clip's last samples, then every row still to come; the stream ends."""


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
        self._block_inputs = mx.zeros((len(self._tower.layers), 0, config.hidden_size))
        self._context_start_frame = 0
        self._first_row: mx.array | None = None

    def push(self, samples_16k: np.ndarray) -> mx.array:
        end_frame = self._buffer(samples_16k)
        return self._no_rows() if end_frame is None else self._emit(self._encode(end_frame))

    def finish(self, last_samples: np.ndarray = _NO_SAMPLES) -> mx.array:
        # The last samples are only stored: one pass then encodes every row still to come, where pushing
        # them first could cost a pass of its own (on an H200 at E2B shapes a pass at a turn's end took
        # 30-41 ms, nearly all of it dispatching operations, whose number does not grow with the frames).
        self._buffer(last_samples)
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

    def _buffer(self, samples_16k: np.ndarray) -> int | None:
        """Stores the samples; returns the frame an encoding step should end at, when one is due."""
        n_new = min(len(samples_16k), MAX_CLIP_N_SAMPLES - self._n_samples)
        self._samples[self._n_samples : self._n_samples + n_new] = samples_16k[:n_new]
        self._n_samples += n_new
        n_final = min((self._n_samples - 1) // self._samples_per_frame, self._processor.audio_seq_length)
        return n_final if n_final - self.n_tokens_emitted >= self._step_frames else None

    def _encode(self, end_frame: int) -> mx.array:
        window = self._window(end_frame)
        return self._no_rows() if window is None else _encode_windows([window])[0]

    def _window(self, end_frame: int) -> _Window | None:
        start_frame = self.n_tokens_emitted
        frames, invalid = self._subsample(start_frame, end_frame)
        # The mask's length is the true frame count: the convolutions return a frame even from no mel frame.
        if not invalid.shape[1]:
            return None
        context_start = self._context_start(start_frame)
        next_context_start = self._context_start(start_frame + frames.shape[1])
        return _Window(
            self,
            frames,
            invalid,
            context_start,
            start_frame - context_start,
            next_context_start - context_start,
        )

    def _context_inputs(self, window: _Window) -> mx.array:
        """Each block's cached input for the window's context frames: [blocks, n_context, width]."""
        start = window.first_frame - self._context_start_frame
        return self._block_inputs[:, start : start + window.n_context]

    def _keep_block_inputs(self, window_inputs: mx.array, window: _Window) -> None:
        """window_inputs: each block's input over the window, [blocks, n_frames, width]."""
        self._block_inputs = window_inputs[:, window.next_context_offset :]
        self._context_start_frame = window.first_frame + window.next_context_offset

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


@dataclass(frozen=True)
class _Window:
    """One encoder's part of a conformer pass: cached block inputs from a chunk boundary, then new frames."""

    encoder: IncrementalAudioEncoder
    frames: mx.array  # the new frames out of the subsampling convolutions, [1, n_new, width]
    invalid: mx.array  # [1, n_new]
    first_frame: int  # the encoder frame at the window's start: its first context frame
    n_context: int
    # Where the left context of the step after this one starts, from the window's first frame.
    next_context_offset: int

    @property
    def n_frames(self) -> int:
        return self.n_context + self.frames.shape[1]


def _encode_windows(windows: Sequence[_Window]) -> list[mx.array]:
    """Runs the conformer blocks once over all windows, right-padded to one length; each window's rows.

    Padding at the end cannot reach a real frame: nothing in a block looks forwards (chunked attention with
    no right context, causal convolutions) or across rows, and padded frames are masked invalid. Windows
    start on chunk boundaries, so every frame keeps its one-shot attention chunk. One window is not padded.
    """
    n_frames = max(window.n_frames for window in windows)
    frames = mx.concatenate([_pad_frames(w.frames, w.n_context, n_frames - w.n_frames) for w in windows])
    invalid = mx.concatenate([_window_invalid(w, n_frames) for w in windows])
    block_inputs, frames = _run_blocks(windows, frames, invalid)
    # Only the new frames go on, gathered into one list of rows in window order.
    new = np.concatenate([i * n_frames + np.arange(w.n_context, w.n_frames) for i, w in enumerate(windows)])
    frames = frames.reshape(-1, frames.shape[-1])[mx.array(new)]
    tower = windows[0].encoder._tower
    if tower.output_proj is not None:
        frames = tower.output_proj(frames)
    frames = mx.where(mx.concatenate([w.invalid[0] for w in windows])[:, None], 0.0, frames)
    rows = windows[0].encoder._embed_audio(frames)
    for i, window in enumerate(windows):
        window.encoder._keep_block_inputs(block_inputs[:, i, : window.n_frames], window)
    per_window = mx.split(rows, np.cumsum([w.frames.shape[1] for w in windows])[:-1].tolist())
    # Waited for here: starting the pass without waiting (mx.async_eval) measured no faster on an H200 at
    # a turn's end (1.5 s turn 51.7 against 50.0 ms to the first token, 25.5 s turn 74.7 against 59.0).
    mx.eval(per_window, [w.encoder._block_inputs for w in windows])
    return per_window


def _run_blocks(windows: Sequence[_Window], frames: mx.array, invalid: mx.array) -> tuple[mx.array, mx.array]:
    """Returns each block's input, [blocks, windows, frames, width], and the last block's output."""
    n_frames = frames.shape[1]
    contexts = [_pad_frames(w.encoder._context_inputs(w), 0, n_frames - w.n_context) for w in windows]
    context = mx.stack(contexts, axis=1)
    is_context = mx.arange(n_frames)[None, :, None] < mx.array([w.n_context for w in windows])[:, None, None]
    causal_valid_mask = windows[0].encoder._causal_valid_mask
    block_inputs = []
    for i, block in enumerate(windows[0].encoder._tower.layers):
        # Cached inputs are kept in one array, in the widest dtype: each block gets back its own.
        frames = mx.where(is_context, context[i].astype(frames.dtype), frames)
        block_inputs.append(frames)
        frames = block(frames, invalid, causal_valid_mask)
    return mx.stack(block_inputs), frames


def _pad_frames(frames: mx.array, n_before: int, n_after: int) -> mx.array:
    return mx.pad(frames, [(0, 0), (n_before, n_after), (0, 0)])


def _window_invalid(window: _Window, n_frames: int) -> mx.array:
    context = mx.zeros((1, window.n_context), mx.bool_)
    padding = mx.ones((1, n_frames - window.n_frames), mx.bool_)
    return mx.concatenate([context, window.invalid, padding], axis=1)


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
        return self._emit(self._take_whole_tokens(samples_16k))

    def _take_whole_tokens(self, samples_16k: np.ndarray) -> np.ndarray:
        """Stores the samples; returns those of every token now complete, one token a row."""
        n_new = min(len(samples_16k), MAX_CLIP_N_SAMPLES - self._n_samples)
        self._n_samples += n_new
        self._pending = np.concatenate([self._pending, np.asarray(samples_16k[:n_new], np.float32)])
        n_rows = len(self._pending) // self._samples_per_token
        rows = self._pending[: n_rows * self._samples_per_token]
        self._pending = self._pending[len(rows) :]
        return rows.reshape(n_rows, self._samples_per_token)

    def finish(self, last_samples: np.ndarray = _NO_SAMPLES) -> mx.array:
        rows = [self.push(last_samples)]
        n_tokens = expected_n_tokens(self._processor, self._n_samples)
        padded = np.pad(self._pending, (0, (-len(self._pending)) % self._samples_per_token))
        self._pending = padded[:0]
        rows.append(self._emit(padded.reshape(-1, self._samples_per_token)))
        n_missing = n_tokens - self.n_tokens_emitted
        if n_missing > 0 and self._first_row is not None:
            # As MediaEncoder mirrors mlx-vlm: a token the processor counts beyond the rows gets row 0 again.
            rows.append(mx.repeat(self._first_row, n_missing, axis=0))
            self.n_tokens_emitted += n_missing
        return mx.concatenate(rows)

    def _emit(self, samples: np.ndarray) -> mx.array:
        if not len(samples):
            return mx.zeros((0, self._embed_audio.embedding_projection.weight.shape[0]))
        return self._record(self._embed_audio(mx.array(samples)[None])[0])

    def _record(self, rows: mx.array) -> mx.array:
        mx.eval(rows)
        if self._first_row is None and rows.shape[0]:
            self._first_row = rows[:1]
        self.n_tokens_emitted += rows.shape[0]
        return rows


def push_together(
    encoders: Sequence[AudioStreamEncoder], samples_16k: Sequence[np.ndarray]
) -> list[mx.array]:
    """[i] is what encoders[i].push(samples_16k[i]) returns, and each encoder is left as that push leaves
    it, but one pass encodes them all: the conformer blocks run once over every encoder whose step is due
    (the others only store their samples), or gemma4_unified's projection once over every complete token.
    The encoders must be distinct streams of one model."""
    if len(encoders) != len(samples_16k):
        raise ValueError(f"{len(encoders)} encoders but {len(samples_16k)} sample arrays")
    if len({id(encoder) for encoder in encoders}) != len(encoders):
        raise ValueError("an encoder appears twice: its pushes would race over one stream")
    conformer = [encoder for encoder in encoders if isinstance(encoder, IncrementalAudioEncoder)]
    frame = [encoder for encoder in encoders if isinstance(encoder, FrameAudioEncoder)]
    if conformer and frame or len(conformer) + len(frame) != len(encoders):
        raise ValueError("a pass takes encoders of one kind: IncrementalAudioEncoder or FrameAudioEncoder")
    if len({id(encoder._embed_audio) for encoder in [*conformer, *frame]}) > 1:
        raise ValueError("encoders of different models cannot share a pass")
    if conformer:
        return _push_conformer_together(conformer, samples_16k)
    return _push_frames_together(frame, samples_16k)


def _push_conformer_together(
    encoders: Sequence[IncrementalAudioEncoder], samples_16k: Sequence[np.ndarray]
) -> list[mx.array]:
    ends = [encoder._buffer(samples) for encoder, samples in zip(encoders, samples_16k, strict=True)]
    windows = {}
    for i, end_frame in enumerate(ends):
        window = encoders[i]._window(end_frame) if end_frame is not None else None
        if window is not None:
            windows[i] = window
    encoded = dict(zip(windows, _encode_windows(list(windows.values())), strict=True)) if windows else {}
    return [
        encoder._emit(encoded[i]) if i in encoded else encoder._no_rows()
        for i, encoder in enumerate(encoders)
    ]


def _push_frames_together(
    encoders: Sequence[FrameAudioEncoder], samples_16k: Sequence[np.ndarray]
) -> list[mx.array]:
    tokens = [
        encoder._take_whole_tokens(samples) for encoder, samples in zip(encoders, samples_16k, strict=True)
    ]
    if not any(len(samples) for samples in tokens):
        return [encoder._emit(samples) for encoder, samples in zip(encoders, tokens, strict=True)]
    rows = encoders[0]._embed_audio(mx.array(np.concatenate(tokens))[None])[0]
    per_encoder = mx.split(rows, np.cumsum([len(samples) for samples in tokens])[:-1].tolist())
    pushed = zip(encoders, tokens, per_encoder, strict=True)
    return [
        encoder._record(rows) if len(samples) else encoder._emit(samples) for encoder, samples, rows in pushed
    ]


def stream_encoder(loaded: LoadedModel) -> AudioStreamEncoder:
    if loaded.model_type == "gemma4_unified":
        return FrameAudioEncoder(loaded.model, loaded.processor)
    return IncrementalAudioEncoder(loaded.model, loaded.processor)
