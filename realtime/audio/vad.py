"""Frame-level speech detection: the interface the segmenter uses, and webrtcvad behind it."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import webrtcvad

from realtime.engine.port import ENGINE_SAMPLE_RATE_HZ


class SpeechDetector(Protocol):
    # Frames are int16 mono at ENGINE_SAMPLE_RATE_HZ, always exactly this long.
    frame_n_samples: int
    # How long the detector keeps reporting speech after speech has ended (its own hangover);
    # the segmenter takes it off turn ends and off runs it measures. 0 for a detector without one.
    hangover_n_samples: int

    def is_speech(self, frame: np.ndarray) -> bool: ...


def aggressiveness_for_threshold(threshold: float) -> int:
    """Maps OpenAI's server_vad threshold onto webrtcvad's aggressiveness.

    Both grow stricter about what counts as speech, so the 0..1 range is cut into four equal bands:
    [0, 0.25) -> 0, [0.25, 0.5) -> 1, [0.5, 0.75) -> 2, [0.75, 1] -> 3; OpenAI's default 0.5 gives 2.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"turn_detection threshold must be between 0 and 1, got {threshold!r}")
    return min(3, int(threshold * 4))


# webrtcvad's hangover after 6+ speech frames in a row (kOverHangMax2* in WebRTC's
# common_audio/vad/vad_core.c; shorter runs get the shorter kOverHangMax1*), in frames,
# by aggressiveness and then by frame length (10, 20, 30 ms).
_WEBRTC_HANGOVER_N_FRAMES = {
    0: {10: 14, 20: 7, 30: 5},
    1: {10: 14, 20: 7, 30: 5},
    2: {10: 9, 20: 5, 30: 3},
    3: {10: 9, 20: 5, 30: 3},
}


class WebRtcVadDetector:
    def __init__(self, aggressiveness: int, frame_ms: int = 20) -> None:
        if aggressiveness not in _WEBRTC_HANGOVER_N_FRAMES:
            raise ValueError(f"webrtcvad aggressiveness must be 0-3, got {aggressiveness!r}")
        if frame_ms not in (10, 20, 30):
            raise ValueError(f"webrtcvad frames must be 10, 20 or 30 ms, got {frame_ms!r}")
        self._vad = webrtcvad.Vad(aggressiveness)
        self.frame_n_samples = ENGINE_SAMPLE_RATE_HZ * frame_ms // 1000
        self.hangover_n_samples = _WEBRTC_HANGOVER_N_FRAMES[aggressiveness][frame_ms] * self.frame_n_samples

    def is_speech(self, frame: np.ndarray) -> bool:
        return self._vad.is_speech(frame.tobytes(), ENGINE_SAMPLE_RATE_HZ)
