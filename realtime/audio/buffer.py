"""A growable int16 sample store addressed by absolute sample index, for the open turn's audio."""

from __future__ import annotations

import numpy as np

_MIN_CAPACITY_N_SAMPLES = 16_000


class SampleBuffer:
    """Holds samples [start_sample, end_sample); appends amortize by doubling, discards compact."""

    def __init__(self, start_sample: int = 0) -> None:
        self._data = np.empty(_MIN_CAPACITY_N_SAMPLES, dtype=np.int16)
        self._n_samples = 0
        self._start_sample = start_sample

    @property
    def start_sample(self) -> int:
        return self._start_sample

    @property
    def end_sample(self) -> int:
        return self._start_sample + self._n_samples

    @property
    def capacity_n_samples(self) -> int:
        return len(self._data)

    def __len__(self) -> int:
        return self._n_samples

    def append(self, samples: np.ndarray) -> None:
        n_needed = self._n_samples + len(samples)
        if n_needed > len(self._data):
            self._reallocate(max(n_needed, 2 * len(self._data)))
        self._data[self._n_samples : n_needed] = samples
        self._n_samples = n_needed

    def slice(self, start: int, end: int) -> np.ndarray:
        if not self.start_sample <= start <= end <= self.end_sample:
            raise ValueError(
                f"samples [{start}, {end}) are not all held; "
                f"the buffer holds [{self.start_sample}, {self.end_sample})"
            )
        return self._data[start - self._start_sample : end - self._start_sample].copy()

    def discard_before(self, sample: int) -> None:
        n_dropped = min(max(sample - self._start_sample, 0), self._n_samples)
        if n_dropped == 0:
            return
        n_kept = self._n_samples - n_dropped
        self._data[:n_kept] = self._data[n_dropped : self._n_samples]
        self._n_samples = n_kept
        self._start_sample += n_dropped
        # Give back what a long turn grew, once the buffer is mostly empty again.
        if len(self._data) > _MIN_CAPACITY_N_SAMPLES and 4 * n_kept <= len(self._data):
            self._reallocate(max(_MIN_CAPACITY_N_SAMPLES, 2 * n_kept))

    def clear(self) -> None:
        self.discard_before(self.end_sample)

    def _reallocate(self, capacity_n_samples: int) -> None:
        data = np.empty(capacity_n_samples, dtype=np.int16)
        data[: self._n_samples] = self._data[: self._n_samples]
        self._data = data
