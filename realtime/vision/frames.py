"""Hold the latest frames of a live camera stream, pinning those current when speech began."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from realtime.vision.images import DecodedImage


@dataclass(frozen=True, eq=False)
class _Kept:
    at_ms: int
    frame: DecodedImage


class FrameBuffer:
    """The newest `max_frames` frames, plus the frames current at one marked moment.

    Times are whatever clock the caller uses (e.g. ms of input audio received); the buffer
    never reads a clock. Timestamps of kept frames never go backwards.

    The frames current at a moment are the latest `max_frames` kept frames with a timestamp
    at or before it; if no kept frame is that old, the earliest kept frame stands in as the
    nearest one. `mark(at_ms)` pins the frames current at `at_ms` (or, if none is held yet,
    the first frame to arrive) so that newer frames cannot evict them during a long
    utterance; `unmark()` lets them go. Frames already evicted when `mark` is called are gone,
    so mark as soon as the moment is known. At most one moment is marked, so at most
    2 * max_frames distinct frames are ever held.
    """

    def __init__(self, max_frames: int = 1, min_interval_ms: int = 0) -> None:
        self._recent: deque[_Kept] = deque()
        self._pinned: list[_Kept] = []
        self._mark_ms: int | None = None
        self.reconfigure(max_frames, min_interval_ms)

    @property
    def max_frames(self) -> int:
        return self._max_frames

    @property
    def min_interval_ms(self) -> int:
        return self._min_interval_ms

    @property
    def mark_ms(self) -> int | None:
        return self._mark_ms

    @property
    def n_frames_held(self) -> int:
        return len(self._held())

    def would_keep(self, at_ms: int) -> bool:
        # Callers check this before decoding, so frames that would be dropped cost nothing.
        if not self._recent:
            return True
        elapsed_ms = at_ms - self._recent[-1].at_ms
        return elapsed_ms >= 0 and elapsed_ms >= self._min_interval_ms

    def offer(self, frame: DecodedImage, at_ms: int) -> bool:
        if not self.would_keep(at_ms):
            return False
        kept = _Kept(at_ms, frame)
        self._recent.append(kept)
        if self._mark_ms is not None and (at_ms <= self._mark_ms or not self._pinned):
            self._pinned = _current_at(self._pinned + [kept], self._mark_ms, self._max_frames)
        return True

    def frames_at(self, at_ms: int) -> list[DecodedImage]:
        return [kept.frame for kept in _current_at(self._held(), at_ms, self._max_frames)]

    def latest(self) -> list[DecodedImage]:
        return [kept.frame for kept in self._recent]

    def mark(self, at_ms: int) -> None:
        """Pin the frames current at `at_ms`; replaces any earlier mark."""
        self._mark_ms = at_ms
        self._pinned = _current_at(list(self._recent), at_ms, self._max_frames)

    def unmark(self) -> None:
        self._mark_ms = None
        self._pinned = []

    def clear(self) -> None:
        """Forget every frame, the mark and the interval timing: as freshly built."""
        self._recent.clear()
        self.unmark()

    def reconfigure(self, max_frames: int, min_interval_ms: int) -> None:
        if max_frames < 1 or min_interval_ms < 0:
            raise ValueError(
                f"need max_frames >= 1 and min_interval_ms >= 0: {max_frames}, {min_interval_ms}"
            )
        self._max_frames = max_frames
        self._min_interval_ms = min_interval_ms
        self._recent = deque(self._recent, maxlen=max_frames)
        self._pinned = self._pinned[-max_frames:]

    def _held(self) -> list[_Kept]:
        # Pinned frames are older than or equal to the recent ones; an entry may be in both.
        recent_ids = {id(kept) for kept in self._recent}
        return [kept for kept in self._pinned if id(kept) not in recent_ids] + list(self._recent)


def _current_at(kept_in_order: list[_Kept], at_ms: int, max_frames: int) -> list[_Kept]:
    older = [kept for kept in kept_in_order if kept.at_ms <= at_ms]
    if older:
        return older[-max_frames:]
    return kept_in_order[:1]
