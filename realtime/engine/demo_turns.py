"""Weight surgery that makes the random-weight demo model end its turns after an input-dependent length.

Two residual channels are reserved; every other weight stays random. The token-kind channel is +1 in the
embedding of every filler word (what a random model mostly says) and -1 for everything else: control
tokens, bytes, the word pieces prompts are made of, and gemma4's audio soft tokens (through a constant
audio encoder output; gemma4_unified's audio and both models' image tokens count as neither). Head 0 of
layer 0, a sliding-window layer, attends uniformly (zero queries) and reads only that channel, so its
output is (said - heard) / tokens over the last window; layer 0 writes it to the counter channel, which no
other block writes to. `<turn|>` is the one token that reads the counter channel in the (tied) output
head, so it wins once the answer has outgrown what the window holds of the prompt: a few words after a
short turn, about as many tokens as the audio after a spoken one, at most half the window after a long
one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

COUNTER_DIM = 0
KIND_DIM = 1
END_OF_TURN_ID = 106
# Gains chosen on the seed-0 demo model so answers run ~5-60 tokens (tests/engine/test_demo_model.py).
_KIND_MAGNITUDE = 0.5
_VALUE_GAIN = 8.0
_OUTPUT_GAIN = 8.0
_END_OF_TURN_GAIN = 4.0
_AUDIO_KIND_BIAS = 1.0

_TEXT = "language_model.model."


def end_turns(weights: dict[str, np.ndarray], config: dict[str, Any], filler_ids: Iterable[int]) -> None:
    """Rewrites `weights` (float32 numpy arrays, mlx-vlm names) in place."""
    text = config["text_config"]
    n_layers = text["num_hidden_layers"]
    _mark_token_kinds(weights[_TEXT + "embed_tokens.weight"], filler_ids)
    _count_in_first_layer(weights, text["head_dim"])
    for layer in range(n_layers):
        prefix = f"{_TEXT}layers.{layer}."
        for norm in ("post_feedforward_layernorm", "post_per_layer_input_norm", "post_attention_layernorm"):
            if layer == 0 and norm == "post_attention_layernorm":
                continue
            if prefix + norm + ".weight" in weights:
                weights[prefix + norm + ".weight"][COUNTER_DIM] = 0.0
    final_norm = weights[_TEXT + "norm.weight"]
    # The kind channel is input only: it must not tilt any token's logit.
    final_norm[KIND_DIM] = 0.0
    _mark_media(weights)


def _mark_token_kinds(embedding: np.ndarray, filler_ids: Iterable[int]) -> None:
    embedding[:, COUNTER_DIM] = 0.0
    embedding[:, KIND_DIM] = -_KIND_MAGNITUDE
    embedding[np.fromiter(filler_ids, np.int64), KIND_DIM] = _KIND_MAGNITUDE
    end_of_turn = embedding[END_OF_TURN_ID]
    end_of_turn[:] = 0.0
    end_of_turn[COUNTER_DIM] = _END_OF_TURN_GAIN
    end_of_turn[KIND_DIM] = -_KIND_MAGNITUDE


def _count_in_first_layer(weights: dict[str, np.ndarray], head_dim: int) -> None:
    attention = f"{_TEXT}layers.0.self_attn."
    # Zero queries: equal scores, so head 0 averages the values over its window.
    weights[attention + "q_proj.weight"][:head_dim] = 0.0
    value = weights[attention + "v_proj.weight"]
    value[0] = 0.0
    value[0, KIND_DIM] = _VALUE_GAIN
    output = weights[attention + "o_proj.weight"]
    output[COUNTER_DIM] = 0.0
    output[:, 0] = 0.0
    output[COUNTER_DIM, 0] = _OUTPUT_GAIN


def _mark_media(weights: dict[str, np.ndarray]) -> None:
    # Audio frames come out of the encoder with a constant first feature, which reads as a heard token.
    if "audio_tower.output_proj.weight" in weights:
        weights["audio_tower.output_proj.weight"][0] = 0.0
        weights["audio_tower.output_proj.bias"][0] = _AUDIO_KIND_BIAS
        projection = weights["embed_audio.embedding_projection.weight"]
        projection[COUNTER_DIM] = 0.0
        projection[KIND_DIM] = 0.0
        projection[KIND_DIM, 0] = -_KIND_MAGNITUDE * 8.0
    if "embed_vision.embedding_projection.weight" in weights:
        projection = weights["embed_vision.embedding_projection.weight"]
        projection[COUNTER_DIM] = 0.0
        projection[KIND_DIM] = 0.0
