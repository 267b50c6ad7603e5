import mlx.core as mx
import pytest

from realtime.engine.prefill import EmbeddingPiece, TokenPiece, split_into_chunks


def rows(n: int) -> mx.array:
    return mx.arange(n * 2, dtype=mx.float32).reshape(n, 2)


def test_chunks_hold_at_most_the_limit_and_keep_every_key_in_order():
    pieces = [
        TokenPiece(tuple(range(5))),
        EmbeddingPiece(tuple(("clip", i) for i in range(7)), rows(7), "audio"),
        TokenPiece((90, 91)),
    ]
    chunks = split_into_chunks(pieces, max_tokens=4)
    assert [sum(len(p) for p in chunk) for chunk in chunks] == [4, 4, 4, 2]
    keys = [k for chunk in chunks for p in chunk for k in p.keys]
    assert keys == [*range(5), *(("clip", i) for i in range(7)), 90, 91]
    # A media piece split across chunks keeps its rows aligned with its keys.
    second_part = chunks[2][0]
    assert second_part.keys[0] == ("clip", 3)
    assert second_part.rows.tolist()[0] == [6.0, 7.0]


def test_an_embedding_piece_needs_one_row_per_key():
    with pytest.raises(ValueError):
        EmbeddingPiece((("clip", 0), ("clip", 1)), rows(3), "audio")


def test_nothing_to_prefill_gives_no_chunks():
    assert split_into_chunks([], max_tokens=8) == []
