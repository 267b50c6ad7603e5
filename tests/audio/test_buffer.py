import numpy as np
import pytest

from realtime.audio.buffer import SampleBuffer


def _ramp(start: int, n: int) -> np.ndarray:
    # Sample value = its absolute index (mod 2**15), so every slice can be checked against its place.
    return (np.arange(start, start + n) % 32768).astype(np.int16)


def test_slices_are_addressed_by_absolute_sample_index():
    buffer = SampleBuffer(start_sample=1000)
    for n in (5, 300, 1, 7000):
        buffer.append(_ramp(buffer.end_sample, n))
    assert (buffer.start_sample, buffer.end_sample, len(buffer)) == (1000, 8306, 7306)
    assert np.array_equal(buffer.slice(1200, 1500), _ramp(1200, 300))
    assert len(buffer.slice(8306, 8306)) == 0


def test_slices_are_copies():
    buffer = SampleBuffer()
    buffer.append(_ramp(0, 100))
    piece = buffer.slice(10, 20)
    piece[:] = 0
    assert np.array_equal(buffer.slice(10, 20), _ramp(10, 10))


@pytest.mark.parametrize(("start", "end"), [(99, 150), (150, 351), (200, 150)])
def test_slices_outside_what_is_held_are_refused(start, end):
    buffer = SampleBuffer(start_sample=100)
    buffer.append(_ramp(100, 250))
    with pytest.raises(ValueError, match=r"holds \[100, 350\)"):
        buffer.slice(start, end)


def test_discard_keeps_later_samples_at_their_indices():
    buffer = SampleBuffer()
    buffer.append(_ramp(0, 5000))
    buffer.discard_before(1234)
    assert (buffer.start_sample, buffer.end_sample) == (1234, 5000)
    buffer.append(_ramp(5000, 10))
    assert np.array_equal(buffer.slice(1234, 5010), _ramp(1234, 5010 - 1234))
    buffer.discard_before(100)  # already gone: nothing changes
    assert buffer.start_sample == 1234
    buffer.discard_before(10**9)  # past the end: everything goes, the end stays
    assert (buffer.start_sample, buffer.end_sample, len(buffer)) == (5010, 5010, 0)


def test_clear_drops_everything_but_keeps_counting():
    buffer = SampleBuffer()
    buffer.append(_ramp(0, 800))
    buffer.clear()
    assert (buffer.start_sample, buffer.end_sample, len(buffer)) == (800, 800, 0)
    buffer.append(_ramp(800, 10))
    assert np.array_equal(buffer.slice(800, 810), _ramp(800, 10))


def test_growth_doubles_and_a_drained_buffer_shrinks_back():
    buffer = SampleBuffer()
    initial = buffer.capacity_n_samples
    capacities = set()
    for _ in range(1000):  # 20 s of 20 ms chunks
        buffer.append(_ramp(buffer.end_sample, 320))
        capacities.add(buffer.capacity_n_samples)
    # Amortized doubling: a handful of reallocations, not one per chunk.
    assert sorted(capacities) == [initial * 2**k for k in range(len(capacities))]
    assert len(capacities) <= 6 and buffer.capacity_n_samples >= 320_000
    assert np.array_equal(buffer.slice(0, 320_000), _ramp(0, 320_000))
    buffer.discard_before(buffer.end_sample - 4800)
    assert buffer.capacity_n_samples == initial
    assert np.array_equal(buffer.slice(315_200, 320_000), _ramp(315_200, 4800))


def test_keeping_only_recent_audio_stays_small():
    # The session's pattern while nobody speaks: append a chunk, keep the last 300 ms.
    buffer = SampleBuffer()
    for _ in range(500):
        buffer.append(_ramp(buffer.end_sample, 320))
        buffer.discard_before(buffer.end_sample - 4800)
    assert len(buffer) == 4800 and buffer.capacity_n_samples == 16_000
    assert np.array_equal(buffer.slice(155_200, 160_000), _ramp(155_200, 4800))
