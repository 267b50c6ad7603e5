"""What a prefill feeds the model: runs of token ids and of precomputed media rows, cut into chunks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import mlx.core as mx

from .prompt import Key


@dataclass(frozen=True)
class TokenPiece:
    ids: tuple[int, ...]

    @property
    def keys(self) -> tuple[Key, ...]:
        return self.ids

    def __len__(self) -> int:
        return len(self.ids)

    def slice(self, start: int, stop: int) -> TokenPiece:
        return TokenPiece(self.ids[start:stop])


@dataclass(frozen=True)
class EmbeddingPiece:
    """Media soft tokens: rows already projected into the text model's space, one per key."""

    keys: tuple[Key, ...]
    rows: mx.array
    kind: Literal["image", "audio"]

    def __post_init__(self) -> None:
        if self.rows.shape[0] != len(self.keys):
            raise ValueError(f"{self.rows.shape[0]} embedding rows for {len(self.keys)} keys")

    def __len__(self) -> int:
        return len(self.keys)

    def slice(self, start: int, stop: int) -> EmbeddingPiece:
        return EmbeddingPiece(self.keys[start:stop], self.rows[start:stop], self.kind)


Piece = TokenPiece | EmbeddingPiece


def split_into_chunks(pieces: Sequence[Piece], max_tokens: int) -> list[list[Piece]]:
    chunks: list[list[Piece]] = []
    room = 0
    for piece in pieces:
        start = 0
        while start < len(piece):
            if room == 0:
                chunks.append([])
                room = max_tokens
            stop = min(len(piece), start + room)
            chunks[-1].append(piece.slice(start, stop))
            room -= stop - start
            start = stop
    return chunks
