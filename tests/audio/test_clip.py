import numpy as np
import pytest

from realtime.audio.clip import split_clip

MAX_N_SAMPLES = 480_000  # 30 s at 16 kHz, Gemma 4's audio limit


@pytest.mark.parametrize(
    ("n_samples", "expected_lengths"),
    [
        (0, []),
        (1, [1]),
        (MAX_N_SAMPLES, [MAX_N_SAMPLES]),
        (MAX_N_SAMPLES + 1, [MAX_N_SAMPLES, 1]),
        (2 * MAX_N_SAMPLES + 16000, [MAX_N_SAMPLES, MAX_N_SAMPLES, 16000]),
    ],
)
def test_pieces_are_full_length_except_the_last(n_samples, expected_lengths):
    samples = np.arange(n_samples, dtype=np.int64).astype(np.int16)
    pieces = split_clip(samples, MAX_N_SAMPLES)
    assert [len(p) for p in pieces] == expected_lengths
    joined = np.concatenate(pieces) if pieces else samples[:0]
    assert np.array_equal(joined, samples)


def test_a_non_positive_limit_is_refused():
    with pytest.raises(ValueError, match="positive"):
        split_clip(np.zeros(10, dtype=np.int16), 0)
