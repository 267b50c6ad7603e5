import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime.audio.formats import AudioFormat
from realtime.audio.ingest import AudioIngest
from realtime.audio.segmenter import SpeechStarted, SpeechStopped, VadSettings
from tests.audio.speech import run_pipeline, wire_bytes

FORMATS = [
    AudioFormat("audio/pcm", 24000),
    AudioFormat("audio/pcm", 16000),
    AudioFormat("audio/pcm", 44100),
    AudioFormat("audio/pcm", 48000),
    AudioFormat("audio/pcmu", 8000),
    AudioFormat("audio/pcma", 8000),
]


def _chunk_sizes(n_bytes: int, cuts: list[tuple[int, int]]) -> list[int]:
    # Each cut comes with a second one 0-3 bytes on, so 1-3 byte chunks (split samples) are common.
    positions = sorted({min(p + d, n_bytes) for p, step in cuts for d in (0, step)} | {0, n_bytes})
    return [b - a for a, b in zip(positions, positions[1:], strict=False) if b > a]


@pytest.fixture(scope="module")
def first_sentence(make_timeline):
    """The first sentence with its stop (about 3.7 s), as wire bytes of each format."""
    return {
        fmt: wire_bytes(make_timeline(fmt.rate_hz), fmt)[: fmt.rate_hz * fmt.n_bytes_per_sample * 4]
        for fmt in FORMATS
    }


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"{f.kind.removeprefix('audio/')}{f.rate_hz}")
def test_any_chunking_gives_the_same_samples_and_turns(first_sentence, fmt):
    data = first_sentence[fmt]
    vad_settings = VadSettings()
    whole_samples, whole_events = run_pipeline(data, fmt, [len(data)], vad_settings)
    assert [type(e) for e in whole_events] == [SpeechStarted, SpeechStopped]
    assert abs(len(whole_samples) - len(data) // fmt.n_bytes_per_sample * 16000 / fmt.rate_hz) <= 1

    cut = st.tuples(st.integers(0, len(data)), st.integers(0, 3))

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(cuts=st.lists(cut, max_size=150))
    def check(cuts):
        samples, events = run_pipeline(data, fmt, _chunk_sizes(len(data), cuts), vad_settings)
        assert events == whole_events
        assert np.array_equal(samples, whole_samples)

    check()


def test_pcm_at_16khz_is_only_decoded():
    samples = np.arange(-1000, 1000, 3, dtype=np.int16)
    ingest = AudioIngest(AudioFormat("audio/pcm", 16000))
    data = samples.astype("<i2").tobytes()
    assert np.array_equal(np.concatenate([ingest.push(data[:5]), ingest.push(data[5:])]), samples)
    assert len(ingest.flush()) == 0


def test_flush_completes_the_audio_sent_so_far():
    ingest = AudioIngest(AudioFormat("audio/pcm", 24000))
    tone = np.rint(np.sin(np.arange(4800) * 0.05) * 5000).astype("<i2")
    head = ingest.push(tone.tobytes())
    assert len(head) < 3200
    assert len(head) + len(ingest.flush()) == 3200
