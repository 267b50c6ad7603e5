"""Spoken test audio from espeak-ng: sentences on a timeline with known gaps, in white noise."""

from __future__ import annotations

import io
import subprocess
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from realtime.audio.formats import AudioFormat, encode_samples
from realtime.audio.ingest import AudioIngest
from realtime.audio.segmenter import (
    Segmenter,
    SegmenterEvent,
    SpeechStarted,
    SpeechStopped,
    VadSettings,
)
from realtime.audio.vad import WebRtcVadDetector, aggressiveness_for_threshold

SENTENCES = (
    "Open the window before the rain comes in.",
    "My brother bought a new bicycle last week.",
    "Nobody knew where the old map was hidden.",
    "Can you remind me about the meeting tomorrow?",
)
# Silence before each sentence, then after the last one.
GAPS_MS = (1000, 1300, 1100, 1600, 1200)
WINDOW_MS = 10
# Truth counts a 10 ms window as speech when the clean speech in it is this far above the noise:
# quieter sounds (a final "k" after its closure, at 0-4 dB) are heard by no detector.
AUDIBLE_SNR_DB = 6.0
N_SAMPLES_PER_MS_16K = 16


@dataclass(frozen=True)
class SpeechClip:
    samples: np.ndarray  # float32
    rate_hz: int


@dataclass(frozen=True)
class Timeline:
    samples: np.ndarray  # int16 at rate_hz
    rate_hz: int
    # Where speech is audible above the noise, as [start, end) in 16 kHz samples.
    turns_16k: list[tuple[int, int]]


def synthesize(text: str) -> SpeechClip:
    wav = subprocess.run(["espeak-ng", "--stdout", text], capture_output=True, check=True).stdout
    samples, rate_hz = sf.read(io.BytesIO(wav), dtype="float32")
    return SpeechClip(_trim(samples, rate_hz), rate_hz)


def spoken_sentences(rate_hz: int, n_samples: int) -> np.ndarray:
    """All SENTENCES spoken in a row as float32 at rate_hz, repeated to exactly n_samples."""
    spoken = synthesize(" ".join(SENTENCES))
    samples = soxr.resample(spoken.samples, spoken.rate_hz, rate_hz).astype(np.float32)
    return np.tile(samples, -(-n_samples // len(samples)))[:n_samples]


def _window_power(samples: np.ndarray, rate_hz: int) -> np.ndarray:
    window_n_samples = rate_hz * WINDOW_MS // 1000
    n_windows = len(samples) // window_n_samples
    windows = samples[: n_windows * window_n_samples].reshape(n_windows, window_n_samples)
    return np.mean(windows.astype(np.float64) ** 2, axis=1)


def _trim(samples: np.ndarray, rate_hz: int) -> np.ndarray:
    # espeak-ng pads its output with near-silence; cut it where the clip is 40 dB below its peak.
    power = _window_power(samples, rate_hz)
    loud = np.nonzero(power > power.max() * 1e-4)[0]
    window_n_samples = rate_hz * WINDOW_MS // 1000
    return samples[loud[0] * window_n_samples : (loud[-1] + 1) * window_n_samples]


def _starts_ms(clips: list[SpeechClip]) -> tuple[list[int], int]:
    starts_ms, t_ms = [], 0
    for gap_ms, clip in zip(GAPS_MS, clips, strict=False):
        t_ms += gap_ms
        starts_ms.append(t_ms)
        t_ms += len(clip.samples) * 1000 // clip.rate_hz
    return starts_ms, t_ms + GAPS_MS[-1]


def _audible_span_16k(speech: np.ndarray, rate_hz: int, start_ms: int, noise_power: float):
    window_power = _window_power(speech, rate_hz)
    audible = np.nonzero(window_power > noise_power * 10 ** (AUDIBLE_SNR_DB / 10))[0]
    return (
        (start_ms + int(audible[0]) * WINDOW_MS) * N_SAMPLES_PER_MS_16K,
        (start_ms + (int(audible[-1]) + 1) * WINDOW_MS) * N_SAMPLES_PER_MS_16K,
    )


def render_timeline(clips: list[SpeechClip], rate_hz: int, snr_db: float, seed: int) -> Timeline:
    at_rate = [soxr.resample(clip.samples, clip.rate_hz, rate_hz) for clip in clips]
    speech_power = float(np.mean(np.concatenate(at_rate) ** 2))
    noise_power = speech_power / 10 ** (snr_db / 10)
    starts_ms, total_ms = _starts_ms(clips)
    clean = np.zeros(total_ms * rate_hz // 1000, dtype=np.float32)
    for start_ms, speech in zip(starts_ms, at_rate, strict=True):
        offset = start_ms * rate_hz // 1000
        clean[offset : offset + len(speech)] = speech
    turns_16k = [
        _audible_span_16k(speech, rate_hz, start_ms, noise_power)
        for start_ms, speech in zip(starts_ms, at_rate, strict=True)
    ]
    noise = np.random.default_rng(seed).standard_normal(len(clean)) * np.sqrt(noise_power)
    # Half scale leaves the noise peaks room below full scale.
    mixed = np.rint((clean + noise) * 0.5 * 32768)
    return Timeline(np.clip(mixed, -32768, 32767).astype(np.int16), rate_hz, turns_16k)


def wire_bytes(timeline: Timeline, fmt: AudioFormat) -> bytes:
    assert timeline.rate_hz == fmt.rate_hz
    return encode_samples(timeline.samples, fmt)


def run_pipeline(
    data: bytes, fmt: AudioFormat, chunk_n_bytes: list[int], settings: VadSettings
) -> tuple[np.ndarray, list[SegmenterEvent]]:
    """Feeds data in chunks of the given sizes (cycled) through decode, resample and segmenter."""
    ingest = AudioIngest(fmt)
    detector = WebRtcVadDetector(aggressiveness_for_threshold(settings.threshold))
    segmenter = Segmenter(settings, detector)
    pieces, events = [], []
    pos, i = 0, 0
    while pos < len(data):
        n_bytes = chunk_n_bytes[i % len(chunk_n_bytes)]
        samples = ingest.push(data[pos : pos + n_bytes])
        pieces.append(samples)
        events += segmenter.push(samples)
        pos += n_bytes
        i += 1
    tail = ingest.flush()
    pieces.append(tail)
    events += segmenter.push(tail)
    return np.concatenate(pieces), events


def paired_turns(events: list[SegmenterEvent], prefix_padding_ms: int) -> list[tuple[int, int]]:
    """(first speech sample, end sample) per turn; the events must alternate start, stop."""
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, SpeechStopped] * (len(events) // 2), kinds
    padding = prefix_padding_ms * N_SAMPLES_PER_MS_16K
    return [
        (started.start_sample + padding, stopped.end_sample)
        for started, stopped in zip(events[::2], events[1::2], strict=True)
    ]
