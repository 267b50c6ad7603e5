"""Media in HTTP API requests: base64 WAV/MP3 audio to 16 kHz clips, data-URI images to bounded pictures."""

from __future__ import annotations

from collections.abc import Callable

import miniaudio
import numpy as np

from ..audio.formats import pcm16_to_float32
from ..audio.resample import resample_clip
from ..engine.port import ENGINE_SAMPLE_RATE_HZ, AudioPart, ImagePart
from ..protocol.codec import decode_base64
from ..protocol.errors import ProtocolError
from ..session.content import decode_image_param, image_part
from ..vision.images import ImageLimits

# OpenAI names formats ("wav", "mp3"); Anthropic-style blocks carry MIME types.
_AUDIO_FORMATS = {"wav": "wav", "x-wav": "wav", "wave": "wav", "mp3": "mp3", "mpeg": "mp3"}
_INFO: dict[str, Callable[[bytes], miniaudio.SoundFileInfo]] = {
    "wav": miniaudio.wav_get_info,
    "mp3": miniaudio.mp3_get_info,
}
MAX_AUDIO_BYTES = 25 * 1024 * 1024


def audio_format_of(name: str, param: str) -> str:
    """ "wav" or "mp3" from an OpenAI format name or an audio/* MIME type."""
    key = name.lower().removeprefix("audio/")
    if key not in _AUDIO_FORMATS:
        raise ProtocolError(
            "unsupported_audio_format",
            f"Audio format {name!r} is not supported; send wav or mp3.",
            param=param,
        )
    return _AUDIO_FORMATS[key]


def decode_audio_part(data_b64: str, audio_format: str, key: str, param: str) -> AudioPart:
    """Mono float32 at the engine rate, any length (the engine cuts it into clips its model hears)."""
    if len(data_b64) > MAX_AUDIO_BYTES * 4 // 3 + 4:
        raise ProtocolError("audio_too_large", f"Audio over {MAX_AUDIO_BYTES} bytes.", param=param)
    data = decode_base64(data_b64, param=param)
    try:
        info = _INFO[audio_format](data)
        decoded = miniaudio.decode(
            data, output_format=miniaudio.SampleFormat.SIGNED16, nchannels=1, sample_rate=info.sample_rate
        )
    except miniaudio.MiniaudioError:
        raise ProtocolError(
            "invalid_audio", f"The audio is not readable {audio_format} data.", param=param
        ) from None
    pcm = np.frombuffer(decoded.samples, dtype=np.int16)
    if len(pcm) == 0:
        raise ProtocolError("invalid_audio", "The audio has no samples.", param=param)
    samples = pcm16_to_float32(resample_clip(pcm, decoded.sample_rate, ENGINE_SAMPLE_RATE_HZ))
    return AudioPart(samples, key)


def decode_image_part(value: str, limits: ImageLimits, param: str) -> ImagePart:
    return image_part(decode_image_param(value, limits, param))
