"""Hold the latest frames of a live camera stream; during speech, hold the ones current when it began."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from realtime.vision.images import DecodedImage


@dataclass(frozen=True, eq=False)
class _Kept:
    at_ms: int
    frame: DecodedImage


class FrameBuffer:
    """At most `max_frames` frames, ever.

    Times are whatever clock the caller uses; the buffer never reads one. Timestamps of kept frames
    never go backwards. The frames current at a moment are the latest `max_frames` kept frames with a
    timestamp at or before it; if no kept frame is that old, the earliest kept frame stands in.

    `mark(at_ms)` freezes the buffer on the frames current at `at_ms` (speech start): while marked,
    only frames up to that moment are taken (the first frame to arrive, if none is held yet), so a
    long utterance cannot evict the frame the user was looking at, and the frames it would have
    evicted are never decoded. `unmark()` (the turn was committed or dropped) lets newer frames in
    again; until the next one arrives, the latest frame is the one from speech start.
    """

    def __init__(self, max_frames: int = 1, min_interval_ms: int = 0) -> None:
        self._kept: deque[_Kept] = deque()
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
        return len(self._kept)

    def would_keep(self, at_ms: int) -> bool:
        # Callers check this before decoding, so frames that would be dropped cost nothing.
        if not self._kept:
            return True
        if self._mark_ms is not None and at_ms > self._mark_ms:
            return False
        elapsed_ms = at_ms - self._kept[-1].at_ms
        return elapsed_ms >= 0 and elapsed_ms >= self._min_interval_ms

    def offer(self, frame: DecodedImage, at_ms: int) -> bool:
        if not self.would_keep(at_ms):
            return False
        self._kept.append(_Kept(at_ms, frame))
        return True

    def frames_at(self, at_ms: int) -> list[DecodedImage]:
        older = [kept for kept in self._kept if kept.at_ms <= at_ms]
        chosen = older[-self._max_frames :] if older else list(self._kept)[:1]
        return [kept.frame for kept in chosen]

    def latest(self) -> list[DecodedImage]:
        return [kept.frame for kept in self._kept]

    def mark(self, at_ms: int) -> None:
        """Freeze on the frames current at `at_ms`; replaces any earlier mark."""
        self._mark_ms = at_ms
        current = set(map(id, self.frames_at(at_ms)))
        self._kept = deque((k for k in self._kept if id(k.frame) in current), maxlen=self._max_frames)

    def unmark(self) -> None:
        self._mark_ms = None

    def clear(self) -> None:
        """Forget every frame, the mark and the interval timing: as freshly built."""
        self._kept.clear()
        self.unmark()

    def reconfigure(self, max_frames: int, min_interval_ms: int) -> None:
        if max_frames < 1 or min_interval_ms < 0:
            raise ValueError(
                f"need max_frames >= 1 and min_interval_ms >= 0, got {max_frames}, {min_interval_ms}"
            )
        self._max_frames = max_frames
        self._min_interval_ms = min_interval_ms
        self._kept = deque(self._kept, maxlen=max_frames)
