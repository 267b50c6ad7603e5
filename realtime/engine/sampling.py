"""Picks the next token: banned ids masked (suppressed, or a constraint forbids), greedy or sampled."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Protocol

import mlx.core as mx
import numpy as np
from mlx_vlm.sample_utils import apply_top_p

from .port import SamplingSettings


class Constraint(Protocol):
    """Which tokens may come next (a grammar, say); the decoder advances it with each sampled token."""

    def allowed(self) -> mx.array: ...

    def advance(self, token_id: int) -> None: ...


# mlx-vlm clamps small positive temperatures the same way.
_MIN_TEMPERATURE = 0.01


class Sampler:
    """One per request. Its random key is its own, so interleaved sessions never shift each other's draws."""

    def __init__(
        self, settings: SamplingSettings, suppressed: mx.array, constraint: Constraint | None = None
    ) -> None:
        self._suppressed = suppressed
        self._constraint = constraint
        self._temperature = settings.temperature
        self._top_p = settings.top_p
        seed = settings.seed if settings.seed is not None else secrets.randbits(32)
        self._key = mx.random.key(seed)

    def __call__(self, logits: mx.array) -> mx.array:
        """The token id, shape (1,), lazy: the caller decides when to wait for it."""
        # Log-probabilities first, then the mask: the same numbers mlx-vlm's greedy argmax sees.
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        banned = self._suppressed
        if self._constraint is not None:
            banned = banned | ~self._constraint.allowed()
        logprobs = mx.where(banned, -mx.inf, logprobs)
        if self._temperature <= 0:
            return mx.argmax(logprobs, axis=-1)
        if 0 < self._top_p < 1:
            logprobs = apply_top_p(logprobs, self._top_p)
        self._key, draw_key = mx.random.split(self._key)
        temperature = max(self._temperature, _MIN_TEMPERATURE)
        return mx.random.categorical(logprobs * (1 / temperature), key=draw_key)


def suppression_mask(suppressed_ids: Iterable[int], vocab_size: int) -> mx.array:
    mask = np.zeros(vocab_size, dtype=bool)
    mask[[i for i in suppressed_ids if i < vocab_size]] = True
    return mx.array(mask)
