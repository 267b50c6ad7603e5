"""Client audio chunks in the session's format to 16 kHz int16 samples: decode, then resample."""

from __future__ import annotations

import numpy as np

from realtime.audio.formats import AudioDecoder, AudioFormat
from realtime.audio.resample import StreamingResampler


class AudioIngest:
    def __init__(self, fmt: AudioFormat) -> None:
        self.format = fmt
        self._decoder = AudioDecoder(fmt)
        self._resampler = StreamingResampler(fmt.rate_hz)

    def push(self, data: bytes) -> np.ndarray:
        return self._resampler.process(self._decoder.decode(data))

    def flush(self) -> np.ndarray:
        """The resampler's held-back tail, for a commit that must include every sample sent so far."""
        return self._resampler.flush()
