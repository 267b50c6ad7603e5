"""The input audio buffer: chunks in any format in, 16 kHz samples kept only as long as a turn needs them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from ..audio.buffer import SampleBuffer
from ..audio.formats import AudioFormat
from ..audio.ingest import AudioIngest
from ..audio.segmenter import IdleTimeout, Segmenter, SpeechStarted, SpeechStopped, VadSettings
from ..audio.vad import SpeechDetector, WebRtcVadDetector, aggressiveness_for_threshold
from ..engine.port import ENGINE_SAMPLE_RATE_HZ
from ..protocol.errors import ProtocolError
from .settings import TurnDetection

SegmentEvent = SpeechStarted | SpeechStopped | IdleTimeout
DetectorFactory = Callable[[float], SpeechDetector]

SAMPLES_PER_MS = ENGINE_SAMPLE_RATE_HZ // 1000


def webrtc_detector(threshold: float) -> SpeechDetector:
    return WebRtcVadDetector(aggressiveness_for_threshold(threshold))


def samples_to_ms(n_samples: int) -> int:
    return n_samples // SAMPLES_PER_MS


class AudioInput:
    """Without VAD the buffer holds everything until commit or clear (bounded by max_buffer_ms);
    with VAD it holds the open turn, or only the prefix padding while nobody speaks."""

    def __init__(
        self,
        audio_format: AudioFormat,
        turn_detection: TurnDetection | None,
        *,
        max_buffer_ms: int,
        detector_factory: DetectorFactory = webrtc_detector,
    ) -> None:
        self._detector_factory = detector_factory
        self._max_buffer_n_samples = max_buffer_ms * SAMPLES_PER_MS
        self._buffer = SampleBuffer()
        self._format = audio_format
        self._ingest = AudioIngest(audio_format)
        self._vad_settings = _vad_settings(turn_detection)
        self._segmenter = self._new_segmenter()
        self.turn_start_sample: int | None = None

    def reconfigure(self, audio_format: AudioFormat, turn_detection: TurnDetection | None) -> bool:
        """Apply new settings; True when the VAD restarted, which ends any turn in progress."""
        if audio_format != self._format:
            # Samples are 16 kHz from here on either way: the buffer and a turn in progress carry on.
            self._append_unheard(self._ingest.flush())
            self._format = audio_format
            self._ingest = AudioIngest(audio_format)
        vad_settings = _vad_settings(turn_detection)
        if vad_settings == self._vad_settings:
            return False
        self._vad_settings = vad_settings
        self._segmenter = self._new_segmenter()
        self.turn_start_sample = None
        return True

    def _new_segmenter(self) -> Segmenter | None:
        # The segmenter counts from its own creation; remember where that was on the session's clock.
        self._n_samples_before_segmenter = self._buffer.end_sample
        if self._vad_settings is None:
            return None
        return Segmenter(self._vad_settings, self._detector_factory(self._vad_settings.threshold))

    @property
    def end_sample(self) -> int:
        return self._buffer.end_sample

    @property
    def n_buffered_samples(self) -> int:
        """Decoded so far; the resampler may still hold a few ms that a commit flushes out."""
        return len(self._buffer)

    def append(self, data: bytes) -> list[SegmentEvent]:
        # Checked before decoding, so a refused chunk leaves no trace in the resampler either.
        n_new_samples = (
            len(data) // self._format.n_bytes_per_sample * ENGINE_SAMPLE_RATE_HZ // self._format.rate_hz
        )
        if self._segmenter is None and len(self._buffer) + n_new_samples > self._max_buffer_n_samples:
            max_s = self._max_buffer_n_samples // ENGINE_SAMPLE_RATE_HZ
            raise ProtocolError(
                "input_audio_buffer_full",
                f"The input audio buffer holds at most {max_s} s "
                "without turn detection; commit or clear it. This chunk was not added.",
                param="audio",
            )
        samples = self._ingest.push(data)
        self._buffer.append(samples)
        if self._segmenter is None:
            return []
        events = [self._to_session_clock(e) for e in self._segmenter.push(samples)]
        for event in events:
            if isinstance(event, SpeechStarted):
                self.turn_start_sample = event.start_sample
        if self.turn_start_sample is None:
            earliest = self._segmenter.earliest_start_sample + self._n_samples_before_segmenter
            self._buffer.discard_before(max(self._buffer.start_sample, earliest))
        return events

    def _to_session_clock(self, event: SegmentEvent) -> SegmentEvent:
        offset = self._n_samples_before_segmenter
        shifted = {f.name: getattr(event, f.name) + offset for f in dataclasses.fields(event)}
        return dataclasses.replace(event, **shifted)

    def take_turn(self, end_sample: int) -> np.ndarray:
        """The audio of the turn that just ended; the buffer keeps what came after it."""
        audio = self.turn_audio_since(0, end_sample)
        self._buffer.discard_before(end_sample)
        self.turn_start_sample = None
        return audio

    def turn_audio_since(self, sample: int, end_sample: int | None = None) -> np.ndarray:
        """The open turn's audio from `sample` (or the turn's start, if later) to `end_sample` or the end."""
        start = max(self.turn_start_sample or 0, self._buffer.start_sample, sample)
        end = self._buffer.end_sample if end_sample is None else end_sample
        return self._buffer.slice(start, max(start, end))

    def take_all(self) -> np.ndarray:
        """Everything buffered (a manual commit); VAD starts afresh after it."""
        self._append_unheard(self._ingest.flush())
        audio = self._buffer.slice(self._buffer.start_sample, self._buffer.end_sample)
        self._buffer.discard_before(self._buffer.end_sample)
        self._restart_segmenter()
        return audio

    def clear(self) -> None:
        self._buffer.discard_before(self._buffer.end_sample)
        self._restart_segmenter()

    def _append_unheard(self, samples: np.ndarray) -> None:
        """Buffer samples the VAD does not hear (a resampler's tail), keeping both clocks in step."""
        self._buffer.append(samples)
        self._n_samples_before_segmenter += len(samples)

    def arm_idle_timeout(self) -> None:
        if self._segmenter is not None:
            self._segmenter.arm_idle_timeout()

    def disarm_idle_timeout(self) -> None:
        if self._segmenter is not None:
            self._segmenter.disarm_idle_timeout()

    def _restart_segmenter(self) -> None:
        if self._segmenter is not None:
            self._segmenter.reset()
        self.turn_start_sample = None


def _vad_settings(detection: TurnDetection | None) -> VadSettings | None:
    if detection is None:
        return None
    return VadSettings(
        threshold=detection.threshold,
        prefix_padding_ms=detection.prefix_padding_ms,
        silence_duration_ms=detection.effective_silence_ms,
        idle_timeout_ms=detection.idle_timeout_ms,
    )
