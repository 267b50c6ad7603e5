"""Turns from frame-level speech decisions: start and stop hysteresis and the idle timeout."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from realtime.audio.vad import SpeechDetector
from realtime.engine.port import ENGINE_SAMPLE_RATE_HZ

_N_SAMPLES_PER_MS = ENGINE_SAMPLE_RATE_HZ // 1000


@dataclass(frozen=True)
class VadSettings:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    idle_timeout_ms: int | None = None
    # A turn opens only after this much speech (the detector's hangover not counted), so clicks,
    # bumps and the detector's own start-up blip open none: with webrtcvad at 20 ms frames, a burst
    # voiced in up to 5 frames opens none and one voiced in 6 or more opens a turn, at every aggressiveness.
    min_speech_ms: int = 100

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold!r}")
        durations_ms = {
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            "min_speech_ms": self.min_speech_ms,
            "idle_timeout_ms": 0 if self.idle_timeout_ms is None else self.idle_timeout_ms,
        }
        for name, duration_ms in durations_ms.items():
            if duration_ms < 0:
                raise ValueError(f"{name} must not be negative, got {duration_ms!r}")


@dataclass(frozen=True)
class SpeechStarted:
    start_sample: int


@dataclass(frozen=True)
class SpeechStopped:
    end_sample: int
    # Where the silence wait ran out and the stop was decided: the turn's audio runs up to here.
    detected_sample: int = field(default=0, compare=False)


@dataclass(frozen=True)
class IdleTimeout:
    at_sample: int
    # Where the silent stretch began: the last stop, or the last arm_idle_timeout() call.
    since_sample: int


SegmenterEvent = SpeechStarted | SpeechStopped | IdleTimeout


class Segmenter:
    """Splits a 16 kHz stream into turns; every position is an absolute sample index since creation.

    Speech starts once a run of consecutive speech frames, less the detector's hangover, reaches
    min_speech_ms; the turn is dated back to the run's first frame minus prefix_padding_ms. It stops
    once silence_duration_ms have passed since the end of speech, which is the end of the last speech
    frame less the hangover. The idle timeout fires once idle_timeout_ms after the last stop, the
    creation, or the last arm_idle_timeout(), unless speech starts first or a run is pending.
    """

    def __init__(self, settings: VadSettings, detector: SpeechDetector) -> None:
        self.settings = settings
        self._detector = detector
        frame_n_samples = detector.frame_n_samples
        self._frame = np.zeros(frame_n_samples, dtype=np.int16)
        self._frame_fill = 0
        self._n_samples_seen = 0
        self._floor_sample = 0
        self._in_speech = False
        # The latest run of consecutive speech frames: [run_start, run_end).
        self._run_start = self._run_end = -1
        self._idle_since: int | None = None
        self._min_run_n_samples = settings.min_speech_ms * _N_SAMPLES_PER_MS + detector.hangover_n_samples
        self.arm_idle_timeout()

    @property
    def n_samples_seen(self) -> int:
        return self._n_samples_seen

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def earliest_start_sample(self) -> int:
        """No later SpeechStarted can point before this: audio older than it can be dropped."""
        n_framed = self._n_samples_seen - self._frame_fill
        first_speech = self._run_start if self._run_end == n_framed else n_framed
        return self._padded_start(first_speech)

    def push(self, samples: np.ndarray) -> list[SegmenterEvent]:
        events: list[SegmenterEvent] = []
        frame_n_samples = len(self._frame)
        pos = 0
        while pos < len(samples):
            if self._frame_fill == 0 and len(samples) - pos >= frame_n_samples:
                frame = samples[pos : pos + frame_n_samples]
                n_taken = frame_n_samples
            else:
                n_taken = min(frame_n_samples - self._frame_fill, len(samples) - pos)
                self._frame[self._frame_fill : self._frame_fill + n_taken] = samples[pos : pos + n_taken]
                self._frame_fill += n_taken
                frame = self._frame
            pos += n_taken
            self._n_samples_seen += n_taken
            if self._frame_fill in (0, frame_n_samples):
                self._frame_fill = 0
                self._on_frame(self._detector.is_speech(frame), events)
        return events

    def reset(self) -> None:
        """Forgets any turn in progress; later turns start no earlier than here. Idle state is kept."""
        self._in_speech = False
        self._run_start = self._run_end = -1
        self._floor_sample = self._n_samples_seen

    def arm_idle_timeout(self, since_sample: int | None = None) -> None:
        if self.settings.idle_timeout_ms is not None:
            self._idle_since = self._n_samples_seen if since_sample is None else since_sample

    def disarm_idle_timeout(self) -> None:
        self._idle_since = None

    def _on_frame(self, is_speech: bool, events: list[SegmenterEvent]) -> None:
        frame_end = self._n_samples_seen
        frame_start = frame_end - len(self._frame)
        if is_speech:
            if self._run_end != frame_start:
                self._run_start = frame_start
            self._run_end = frame_end
            if not self._in_speech and frame_end - self._run_start >= self._min_run_n_samples:
                self._in_speech = True
                self._idle_since = None
                events.append(SpeechStarted(self._padded_start(self._run_start)))
        elif self._in_speech:
            speech_end = max(
                self._run_start + len(self._frame),
                self._run_end - self._detector.hangover_n_samples,
            )
            if frame_end - speech_end >= self.settings.silence_duration_ms * _N_SAMPLES_PER_MS:
                self._in_speech = False
                events.append(SpeechStopped(speech_end, frame_end))
                self.arm_idle_timeout(speech_end)
        self._check_idle_timeout(frame_end, events)

    def _check_idle_timeout(self, frame_end: int, events: list[SegmenterEvent]) -> None:
        if self._idle_since is None or self._in_speech or self._run_end == frame_end:
            return
        at_sample = self._idle_since + self.settings.idle_timeout_ms * _N_SAMPLES_PER_MS
        if frame_end >= at_sample:
            events.append(IdleTimeout(at_sample, self._idle_since))
            self._idle_since = None

    def _padded_start(self, first_speech_sample: int) -> int:
        padded = first_speech_sample - self.settings.prefix_padding_ms * _N_SAMPLES_PER_MS
        return max(padded, self._floor_sample, 0)
