"""Encoder output of recent audio clips, kept so that transcribing a turn does not encode its audio again."""

from __future__ import annotations

from collections import OrderedDict

import mlx.core as mx

# A clip is at most 750 rows; at E2B's 1536-wide bf16 rows that is ~2.3 MB, so 32 clips stay under 75 MB.
DEFAULT_MAX_CLIPS = 32


class AudioRowsCache:
    """Rows in the text model's space, one per audio soft token, by (session id, audio key); least
    recently used first out."""

    def __init__(self, max_clips: int = DEFAULT_MAX_CLIPS) -> None:
        self._max_clips = max_clips
        self._rows: OrderedDict[tuple[str, str], mx.array] = OrderedDict()

    def put(self, session_id: str, key: str, rows: mx.array) -> None:
        self._rows[(session_id, key)] = rows
        self._rows.move_to_end((session_id, key))
        while len(self._rows) > self._max_clips:
            self._rows.popitem(last=False)

    def get(self, session_id: str, key: str, n_rows: int) -> mx.array | None:
        rows = self._rows.get((session_id, key))
        if rows is None or rows.shape[0] != n_rows:
            return None
        self._rows.move_to_end((session_id, key))
        return rows

    def drop_session(self, session_id: str) -> None:
        for entry in [entry for entry in self._rows if entry[0] == session_id]:
            del self._rows[entry]
