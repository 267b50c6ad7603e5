import numpy as np
import pytest
import soxr

from realtime.audio.resample import StreamingResampler, resample_clip

RATES_HZ = [8000, 24000, 44100, 48000]


def _noise(n_samples: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n_samples) * 4000).astype(np.int16)


def _stream(resampler: StreamingResampler, samples: np.ndarray, chunk_n_samples: list[int]):
    pieces, pos, i = [], 0, 0
    while pos < len(samples):
        n = chunk_n_samples[i % len(chunk_n_samples)]
        pieces.append(resampler.process(samples[pos : pos + n]))
        pos, i = pos + n, i + 1
    pieces.append(resampler.flush())
    return np.concatenate(pieces)


@pytest.mark.parametrize("in_rate_hz", RATES_HZ)
def test_any_chunking_gives_bit_identical_output(in_rate_hz):
    samples = _noise(in_rate_hz // 4)
    whole = _stream(StreamingResampler(in_rate_hz), samples, [len(samples)])
    for chunks in ([1], [7], [160, 1, 333], [4801]):
        assert np.array_equal(_stream(StreamingResampler(in_rate_hz), samples, chunks), whole)


def test_soxr_int16_streams_are_not_chunking_exact():
    # Why StreamingResampler goes through float32: soxr's own int16 stream output moves with chunking.
    samples = _noise(24000)

    def run(chunk_n_samples):
        stream = soxr.ResampleStream(24000, 16000, 1, dtype="int16", quality="HQ")
        pieces = [
            stream.resample_chunk(samples[i : i + chunk_n_samples])
            for i in range(0, len(samples), chunk_n_samples)
        ]
        return np.concatenate(pieces + [stream.resample_chunk(samples[:0], last=True)])

    assert not np.array_equal(run(24000), run(160))


@pytest.mark.parametrize("in_rate_hz", RATES_HZ)
def test_streaming_matches_one_shot_length_and_content(in_rate_hz):
    samples = _noise(in_rate_hz, seed=1)
    streamed = _stream(StreamingResampler(in_rate_hz), samples, [480])
    one_shot = resample_clip(samples, in_rate_hz, 16000)
    assert len(streamed) == len(one_shot) == 16000
    assert np.abs(streamed.astype(int) - one_shot.astype(int)).max() <= 1


def test_equal_rates_pass_samples_through():
    samples = _noise(1000)
    resampler = StreamingResampler(16000)
    assert resampler.process(samples) is samples
    assert len(resampler.flush()) == 0
    assert resample_clip(samples, 16000, 16000) is samples


def test_flush_releases_the_held_tail_and_starts_afresh():
    resampler = StreamingResampler(24000)
    first = resampler.process(_noise(2400))
    tail = resampler.flush()
    assert len(first) < 1600 and len(first) + len(tail) == 1600
    # After a flush the stream starts over with a fresh filter, as a new resampler would.
    again = _stream(resampler, _noise(2400, seed=2), [2400])
    assert np.array_equal(again, _stream(StreamingResampler(24000), _noise(2400, seed=2), [2400]))


@pytest.mark.parametrize("in_rate_hz", RATES_HZ)
def test_a_tone_keeps_its_frequency_and_level(in_rate_hz):
    t = np.arange(in_rate_hz) / in_rate_hz
    tone = np.rint(np.sin(2 * np.pi * 1000 * t) * 10000).astype(np.int16)
    out = _stream(StreamingResampler(in_rate_hz), tone, [in_rate_hz // 50])
    spectrum = np.abs(np.fft.rfft(out[2000:14000] * np.hanning(12000)))
    peak_hz = np.argmax(spectrum) * 16000 / 12000
    assert abs(peak_hz - 1000) <= 2
    assert abs(np.sqrt(np.mean(out[2000:14000].astype(float) ** 2)) - 10000 / np.sqrt(2)) < 30
