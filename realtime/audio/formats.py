"""Session audio formats (PCM16 at a few rates, G.711 μ-law and A-law): parse, decode, encode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from realtime.audio import g711
from realtime.audio.resample import resample_clip
from realtime.engine.port import ENGINE_SAMPLE_RATE_HZ

AudioKind = Literal["audio/pcm", "audio/pcmu", "audio/pcma"]
PCM_RATES_HZ = (8000, 16000, 24000, 44100, 48000)
DEFAULT_PCM_RATE_HZ = 24000
G711_RATE_HZ = 8000


@dataclass(frozen=True)
class AudioFormat:
    kind: AudioKind
    rate_hz: int

    def __post_init__(self) -> None:
        if self.kind not in get_args(AudioKind):
            raise ValueError(
                f"unsupported audio format type {self.kind!r}; "
                f"expected one of {', '.join(get_args(AudioKind))}"
            )
        if self.kind == "audio/pcm" and self.rate_hz not in PCM_RATES_HZ:
            raise ValueError(
                f"unsupported audio/pcm rate {self.rate_hz!r}; "
                f"expected one of {', '.join(map(str, PCM_RATES_HZ))}"
            )
        if self.kind != "audio/pcm" and self.rate_hz != G711_RATE_HZ:
            raise ValueError(f"{self.kind} is {G711_RATE_HZ} Hz only, got rate {self.rate_hz!r}")

    @classmethod
    def from_session(cls, obj: dict) -> AudioFormat:
        if not isinstance(obj, dict) or "type" not in obj:
            raise ValueError("audio format must be an object with a 'type'")
        kind = obj["type"]
        default_rate_hz = DEFAULT_PCM_RATE_HZ if kind == "audio/pcm" else G711_RATE_HZ
        rate_hz = obj.get("rate")
        if rate_hz is None:
            rate_hz = default_rate_hz
        # bool is an int subclass, and 24000.0 would be silently truncated elsewhere.
        if type(rate_hz) is not int:
            raise ValueError(f"audio format rate must be an integer, got {rate_hz!r}")
        return cls(kind, rate_hz)

    def to_session(self) -> dict:
        if self.kind == "audio/pcm":
            return {"type": self.kind, "rate": self.rate_hz}
        return {"type": self.kind}

    @property
    def n_bytes_per_sample(self) -> int:
        return 2 if self.kind == "audio/pcm" else 1


DEFAULT_AUDIO_FORMAT = AudioFormat("audio/pcm", DEFAULT_PCM_RATE_HZ)


class AudioDecoder:
    """Wire bytes to int16 samples at the format's rate; a sample split across chunks is kept whole."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.format = fmt
        self._pending = b""

    def decode(self, data: bytes) -> np.ndarray:
        if self.format.kind == "audio/pcmu":
            return g711.decode_ulaw(np.frombuffer(data, dtype=np.uint8))
        if self.format.kind == "audio/pcma":
            return g711.decode_alaw(np.frombuffer(data, dtype=np.uint8))
        if self._pending:
            data = self._pending + data
        n_whole_bytes = len(data) & ~1
        self._pending = data[n_whole_bytes:]
        # A read-only view of the wire bytes, no copy: whoever keeps samples copies them into its buffer.
        return np.frombuffer(data, dtype="<i2", count=n_whole_bytes // 2).astype(np.int16, copy=False)


def pcm16_to_float32(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) * np.float32(1 / 32768)


def encode_for_format(samples_16k: np.ndarray, fmt: AudioFormat) -> bytes:
    return encode_samples(resample_clip(samples_16k, ENGINE_SAMPLE_RATE_HZ, fmt.rate_hz), fmt)


def encode_samples(samples: np.ndarray, fmt: AudioFormat) -> bytes:
    """int16 samples already at the format's rate to wire bytes."""
    if fmt.kind == "audio/pcmu":
        return g711.encode_ulaw(samples).tobytes()
    if fmt.kind == "audio/pcma":
        return g711.encode_alaw(samples).tobytes()
    return samples.astype("<i2").tobytes()
