"""The Gemma 4 text model through mlx-vlm: prefill chunks and decode steps on a conversation cache."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx

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
        embeds = mx.concatenate([self._embed(p) for p in pieces], axis=0)[None]
        kwargs: dict[str, Any] = {}
        if self._text_model.hidden_size_per_layer_input:
            # Soft tokens read the per-layer table at id 0, as mlx-vlm's get_input_embeddings does.
            ids = [i for p in pieces for i in (p.ids if isinstance(p, TokenPiece) else [0] * len(p))]
            kwargs["per_layer_inputs"] = self._text_model.get_per_layer_inputs(mx.array([ids]))
        if image_blocks:
            types = [_token_type(p) for p in pieces for _ in range(len(p))]
            kwargs["mm_token_type_ids"] = mx.array([types])
        output = self._language_model(
            None, inputs_embeds=embeds, cache=cache.layers, logits_to_keep=1, **kwargs
        )
        # Only the cache is evaluated: a caller that drops the logits (every chunk but the prompt's last)
        # then never computes the KV-shared top layers or the output head for it, as in mlx-vlm.
        mx.eval([layer.state for layer in cache.layers])
        cache.keys.extend(k for p in pieces for k in p.keys)
        return output.logits[:, -1, :]

    def step(self, cache: ConversationCache, token: mx.array) -> mx.array:
        """One decode step for a sampled token, shape (1,), maybe not yet computed: lazy logits.

        The caller appends the token's id to cache.keys once it has read it.
        """
        output = self._language_model(token.reshape(1, 1), cache=cache.layers, logits_to_keep=1)
        return output.logits[:, -1, :]

    def _embed(self, piece: Piece) -> mx.array:
        if isinstance(piece, EmbeddingPiece):
            return piece.rows
        return self._text_model.embed_tokens(mx.array(piece.ids)) * self._text_model.embed_scale


def _token_type(piece: Piece) -> int:
    return _TOKEN_TYPES[piece.kind] if isinstance(piece, EmbeddingPiece) else 0
