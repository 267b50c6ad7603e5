import numpy as np
import pytest

from realtime.audio import g711
from realtime.audio.formats import (
    DEFAULT_AUDIO_FORMAT,
    AudioDecoder,
    AudioFormat,
    encode_for_format,
    pcm16_to_float32,
)
from realtime.audio.ingest import AudioIngest


@pytest.mark.parametrize(
    ("session_format", "expected"),
    [
        ({"type": "audio/pcm", "rate": 24000}, AudioFormat("audio/pcm", 24000)),
        ({"type": "audio/pcm"}, AudioFormat("audio/pcm", 24000)),
        ({"type": "audio/pcm", "rate": None}, AudioFormat("audio/pcm", 24000)),
        ({"type": "audio/pcm", "rate": 44100}, AudioFormat("audio/pcm", 44100)),
        ({"type": "audio/pcmu"}, AudioFormat("audio/pcmu", 8000)),
        ({"type": "audio/pcma", "rate": 8000}, AudioFormat("audio/pcma", 8000)),
    ],
)
def test_session_formats_parse_and_print_back(session_format, expected):
    fmt = AudioFormat.from_session(session_format)
    assert fmt == expected
    assert AudioFormat.from_session(fmt.to_session()) == fmt
    expected_session = {"type": fmt.kind}
    if fmt.kind == "audio/pcm":
        expected_session["rate"] = fmt.rate_hz
    assert fmt.to_session() == expected_session


def test_default_format_is_openais_pcm16_at_24khz():
    assert DEFAULT_AUDIO_FORMAT.to_session() == {"type": "audio/pcm", "rate": 24000}


@pytest.mark.parametrize(
    ("session_format", "message"),
    [
        ({"type": "audio/opus"}, "unsupported audio format type 'audio/opus'"),
        ({"type": "audio/pcm", "rate": 22050}, "unsupported audio/pcm rate 22050"),
        ({"type": "audio/pcm", "rate": "24000"}, "rate must be an integer"),
        ({"type": "audio/pcm", "rate": True}, "rate must be an integer"),
        ({"type": "audio/pcmu", "rate": 16000}, "audio/pcmu is 8000 Hz only"),
        ({"rate": 24000}, "with a 'type'"),
        ("audio/pcm", "with a 'type'"),
    ],
)
def test_unsupported_formats_are_refused_with_a_reason(session_format, message):
    with pytest.raises(ValueError, match=message):
        AudioFormat.from_session(session_format)


def test_pcm_decoder_keeps_an_odd_byte_for_the_next_chunk():
    samples = np.array([1, -2, 300, -32768, 32767], dtype=np.int16)
    data = samples.astype("<i2").tobytes()
    decoder = AudioDecoder(AudioFormat("audio/pcm", 16000))
    pieces = [decoder.decode(data[:3]), decoder.decode(data[3:4]), decoder.decode(data[4:9])]
    assert [len(p) for p in pieces] == [1, 1, 2]
    assert decoder.decode(b"").tolist() == []
    pieces.append(decoder.decode(data[9:]))
    assert np.concatenate(pieces).tolist() == samples.tolist()
    assert all(p.dtype == np.int16 for p in pieces)


def test_pcm_decoder_splits_samples_one_byte_at_a_time():
    samples = np.arange(-500, 500, 7, dtype=np.int16)
    data = samples.astype("<i2").tobytes()
    decoder = AudioDecoder(AudioFormat("audio/pcm", 24000))
    decoded = np.concatenate([decoder.decode(data[i : i + 1]) for i in range(len(data))])
    assert decoded.tolist() == samples.tolist()


@pytest.mark.parametrize(
    ("kind", "table"), [("audio/pcmu", g711.ULAW_DECODE), ("audio/pcma", g711.ALAW_DECODE)]
)
def test_g711_decoder_decodes_every_byte(kind, table):
    decoder = AudioDecoder(AudioFormat(kind, 8000))
    assert decoder.decode(bytes(range(256))).tolist() == table.tolist()
    assert decoder.decode(b"\x01").tolist() == [table[1]]


def test_pcm16_to_float32_covers_minus_one_to_just_below_one():
    converted = pcm16_to_float32(np.array([-32768, 0, 16384, 32767], dtype=np.int16))
    assert converted.dtype == np.float32
    assert converted.tolist() == [-1.0, 0.0, 0.5, 32767 / 32768]


def _tone_16k(frequency_hz: float, duration_s: float) -> np.ndarray:
    t = np.arange(int(16000 * duration_s)) / 16000
    return np.rint(np.sin(2 * np.pi * frequency_hz * t) * 8000).astype(np.int16)


def test_encode_for_16khz_pcm_is_the_samples_themselves():
    tone = _tone_16k(440, 0.1)
    assert encode_for_format(tone, AudioFormat("audio/pcm", 16000)) == tone.astype("<i2").tobytes()


@pytest.mark.parametrize(
    "fmt",
    [
        AudioFormat("audio/pcm", 24000),
        AudioFormat("audio/pcm", 44100),
        AudioFormat("audio/pcm", 48000),
        AudioFormat("audio/pcmu", 8000),
        AudioFormat("audio/pcma", 8000),
    ],
    ids=lambda f: f"{f.kind}-{f.rate_hz}",
)
def test_encode_for_format_round_trips_through_ingest(fmt):
    tone = _tone_16k(440, 1.0)
    data = encode_for_format(tone, fmt)
    assert len(data) == fmt.rate_hz * fmt.n_bytes_per_sample
    ingest = AudioIngest(fmt)
    back = np.concatenate([ingest.push(data), ingest.flush()])
    assert abs(len(back) - len(tone)) <= 1
    # Away from the edges the tone survives: to rounding for PCM, to G.711's step (256 at this
    # amplitude) for the others.
    middle = slice(1600, 14400)
    error = np.abs(back[middle].astype(int) - tone[middle].astype(int))
    assert error.max() <= (2 if fmt.kind == "audio/pcm" else 256)
