"""How many tokens a Gemma 4 checkpoint can attend over: its context length, from its config."""

from __future__ import annotations

from typing import Any


def context_tokens(config: Any) -> int:
    """The text model's positions: a prompt and its answer together must fit in them."""
    text_config = getattr(config, "text_config", config)
    return int(text_config.max_position_embeddings)
