"""The Gemma 4 text model through mlx-vlm: prefill chunks and decode steps on a conversation cache."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx
from mlx_vlm.models.cache import BatchKVCache, BatchRotatingKVCache, RotatingKVCache

from ..conversation_cache import ConversationCache
from ..prefill import EmbeddingPiece, Piece, TokenPiece

# mlx-vlm's mm_token_type_ids values; with them gemma4_unified's image blocks attend bidirectionally.
_TOKEN_TYPES = {"image": 1, "audio": 3}


class Prefiller:
    """Runs the language model over pieces with a cache: text via the model's embedding, media as given."""

    def __init__(self, model: Any) -> None:
        self._language_model = model.language_model
        self._text_model = model.language_model.model

    def forward(
        self, cache: ConversationCache, pieces: Sequence[Piece], image_blocks: bool = False
    ) -> mx.array:
        """Prefills one chunk and returns the logits after its last token, shape (1, vocab), unevaluated.

        image_blocks passes token types, with which mlx-vlm 0.7.10 makes gemma4_unified image blocks
        bidirectional, but only in a forward that starts at an empty cache (its overlay needs a square mask).
        """
        logits = self.to_logits(cache, pieces, image_blocks)
        # Only the cache is evaluated: a caller that drops the logits (every chunk but the prompt's last)
        # then never computes the KV-shared top layers or the output head for it, as in mlx-vlm.
        mx.eval([layer.state for layer in cache.layers])
        return logits

    def to_logits(
        self, cache: ConversationCache, pieces: Sequence[Piece], image_blocks: bool = False
    ) -> mx.array:
        """As `forward`, with nothing evaluated: the caller waits once, for the logits and the cache."""
        kwargs = self._extra_inputs([pieces])
        if image_blocks:
            types = [_token_type(p) for p in pieces for _ in range(len(p))]
            kwargs["mm_token_type_ids"] = mx.array([types])
        output = self._language_model(
            None, inputs_embeds=self._embeddings([pieces]), cache=cache.layers, logits_to_keep=1, **kwargs
        )
        cache.keys.extend(k for p in pieces for k in p.keys)
        return output.logits[:, -1, :]

    def prefill(self, caches: Sequence[ConversationCache], chunks: Sequence[Sequence[Piece]]) -> None:
        """Prefills one chunk per conversation, all of the same length, in one forward; no logits.

        The caches are merged left-padded as for a decode step; a chunk of N tokens per row then needs no
        padding of its own, so each row's keys and values are those it gets alone.
        """
        if len(caches) == 1:
            self.forward(caches[0], chunks[0])
            return
        batch = _merged_layers(caches)
        self._language_model(
            None,
            inputs_embeds=self._embeddings(chunks),
            cache=batch,
            logits_to_keep=1,
            **self._extra_inputs(chunks),
        )
        mx.eval([layer.state for layer in batch])
        for cache, layers, pieces in zip(caches, _split(batch, len(caches)), chunks, strict=True):
            cache.layers = layers
            cache.keys.extend(k for p in pieces for k in p.keys)

    def step(self, cache: ConversationCache, token: mx.array) -> mx.array:
        """One decode step for a sampled token, shape (1,), maybe not yet computed: the last hidden state,
        shape (1, hidden), lazy; `logits` makes it logits.

        The caller appends the token's id to cache.keys once it has read it.
        """
        return _last_hidden(self._text_model, token.reshape(1, 1), cache.layers)

    def logits(self, hidden: mx.array) -> mx.array:
        """The output head over last hidden states (rows, hidden), as the model's own forward applies it."""
        return self._language_model.logits_from_hidden(hidden)

    def _embeddings(self, chunks: Sequence[Sequence[Piece]]) -> mx.array:
        """Shape (rows, tokens, hidden): text through the model's embedding, media rows as given."""
        return mx.stack([mx.concatenate([self._embed(p) for p in pieces], axis=0) for pieces in chunks])

    def _extra_inputs(self, chunks: Sequence[Sequence[Piece]]) -> dict[str, Any]:
        if not self._text_model.hidden_size_per_layer_input:
            return {}
        # Soft tokens read the per-layer table at id 0, as mlx-vlm's get_input_embeddings does.
        ids = [
            [i for p in pieces for i in (p.ids if isinstance(p, TokenPiece) else [0] * len(p))]
            for pieces in chunks
        ]
        return {"per_layer_inputs": self._text_model.get_per_layer_inputs(mx.array(ids))}

    def _embed(self, piece: Piece) -> mx.array:
        if isinstance(piece, EmbeddingPiece):
            return piece.rows
        return self._text_model.embed_tokens(mx.array(piece.ids)) * self._text_model.embed_scale


def _token_type(piece: Piece) -> int:
    return _TOKEN_TYPES[piece.kind] if isinstance(piece, EmbeddingPiece) else 0


class DecodeBatch:
    """Several conversations' caches as one batch, for one B×1 decode forward per step.

    mlx-vlm's batch caches do the bookkeeping Gemma 4's attention needs: each row left-padded to the
    longest, its own RoPE offset, padding masked out, sliding-window layers kept in temporal order.
    Rows attend only to their own keys, so a row's greedy tokens equal those it gets alone.
    """

    def __init__(self, model: Any, caches: Sequence[ConversationCache]) -> None:
        self._text_model = model.language_model.model
        self.layers = _merged_layers(caches)

    def step(self, tokens: mx.array) -> mx.array:
        """The last hidden states after one token per row, shape (B, hidden), lazy; tokens has shape (B,)."""
        return _last_hidden(self._text_model, tokens.reshape(-1, 1), self.layers)

    def split(self, n_rows: int) -> list[list[Any]]:
        """Each row's layers as single-conversation caches again, holding everything the batch added."""
        return _split(self.layers, n_rows)


def _last_hidden(text_model: Any, tokens: mx.array, layers: list[Any]) -> mx.array:
    # The language model's own forward without its output head (mlx-vlm 0.7.10's LanguageModel.__call__),
    # which the scheduler applies per group of rows.
    return text_model(tokens, cache=layers, logits_to_keep=1)[:, -1, :]


def _split(layers: list[Any], n_rows: int) -> list[list[Any]]:
    # mlx-vlm's extract reads each layer's row padding with its own device sync; one evaluation of every
    # layer's paddings first makes those reads free (a sync each costs ~0.1 ms on a GPU, B x layers of them).
    mx.eval([(layer.left_padding, layer.offset) for layer in layers])
    return [[layer.extract(row) for layer in layers] for row in range(n_rows)]


def _merged_layers(caches: Sequence[ConversationCache]) -> list[Any]:
    return [_merge_layer([cache.layers[i] for cache in caches]) for i in range(len(caches[0].layers))]


def _merge_layer(layers: list[Any]) -> Any:
    if isinstance(layers[0], RotatingKVCache):
        return BatchRotatingKVCache.merge(layers)
    return BatchKVCache.merge(layers)
